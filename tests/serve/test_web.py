"""The web page of `semdb serve` in a real headless Chromium (Debian's chromium, driven by
playwright), one test per state of the page: the collection it opens on (newest first, paged),
the URL that holds the whole state (reload, back), a search, "more like this" and an upload
with their reference image, a folder, a refused request (sent once), a photo whose file was
deleted, the full view stepping through the results, counts in words; and screenshots of
each state, checked by their pixels. Skips, saying why, where playwright or a Chromium cannot
be had (.ci/run installs both). SEMDB_SCREENSHOTS=DIR keeps the screenshots."""

from __future__ import annotations

import datetime
import json
import os
import urllib.parse
from pathlib import Path

import pytest
from kit import TIMEOUT_MS, write_photos
from serve_helpers import Server

DAY = 86_400
FIRST_DAY = datetime.datetime(2021, 3, 1, 12, 0).timestamp()  # local noon: one file a day from here


@pytest.fixture(scope="module")
def site(tmp_path_factory, tiny_model):
    """A served store of 22 photos (trips/ 12, home/ 9, gone/ 1), each taken a day after the
    one before it (file times: no EXIF), gone/lost.jpg the newest, its file deleted after ingest."""
    import semdb

    root = tmp_path_factory.mktemp("web")
    photos = root / "photos"
    write_photos(photos / "trips", seed=0)
    write_photos(photos / "home", n_generated=5, seed=1)
    write_photos(photos / "gone", n_generated=0)
    for name in ("astronaut", "chelsea", "coffee"):
        (photos / "gone" / f"{name}.jpg").unlink()
    (photos / "gone" / "rocket.jpg").rename(photos / "gone" / "lost.jpg")
    files = sorted(p for p in photos.rglob("*") if p.is_file() and p.parent.name != "gone")
    files.append(photos / "gone" / "lost.jpg")
    for i, f in enumerate(files):
        os.utime(f, (FIRST_DAY + i * DAY, FIRST_DAY + i * DAY))
    store = root / "store"
    with semdb.open(store, model=tiny_model) as db:
        db.ingest([str(photos)], train_now=True)
        ids = {str(it.path): it.id for it in db.store.iter_items()}
    (photos / "gone" / "lost.jpg").unlink()
    newest_first = [ids[str(f)] for f in reversed(files)]
    server = Server(store)
    yield server, photos, newest_first, ids
    server.stop()


class Page:
    """A fresh tab on the server with what it did: page errors, console errors, requests."""

    def __init__(self, browser, server, path="/"):
        self.server = server
        self.page = browser.new_page(viewport={"width": 1200, "height": 900})
        self.errors, self.requests = [], []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.set_default_timeout(TIMEOUT_MS)
        self.page.goto(server.base + path)

    def __getattr__(self, name):
        return getattr(self.page, name)

    def settled(self, status_contains: str) -> list[dict]:
        """The cards, once the status says `status_contains` and every picture has loaded (or
        become a "file missing" box)."""
        self.page.wait_for_function(
            "(s) => document.querySelector('#status').textContent.includes(s)", arg=status_contains
        )
        self.page.wait_for_function(
            "() => [...document.querySelectorAll('#grid .hit')].every(c => c.querySelector('.missing')"
            " || (c.querySelector('img').complete && c.querySelector('img').naturalWidth > 0))"
        )
        return self.page.eval_on_selector_all(
            "#grid .hit",
            "cards => cards.map(c => ({id: +c.dataset.id, path: c.querySelector('.path').textContent,"
            " note: c.querySelector('.note').textContent, missing: !!c.querySelector('.missing'),"
            " width: c.querySelector('img') ? c.querySelector('img').naturalWidth : 0}))",
        )

    def status(self) -> str:
        return self.page.text_content("#status")

    def params(self) -> dict:
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.page.url).query))

    def api_requests(self, prefix: str) -> list[str]:
        return [u for u in self.requests if urllib.parse.urlsplit(u).path.startswith(prefix)]

    def reference(self) -> dict:
        self.page.wait_for_function(
            "() => { const r = document.querySelector('#reference'); const i = r.querySelector('img');"
            " return !r.hidden && i && i.complete && i.naturalWidth > 0; }"
        )
        return self.page.eval_on_selector(
            "#reference",
            "r => ({caption: r.querySelector('#ref-caption').textContent, src: r.querySelector('img').src,"
            " width: r.querySelector('img').getBoundingClientRect().width})",
        )

    def done(self, *expected: int):
        """Close the tab; no error on the way but the failed loads of `expected` statuses (and the
        404 of the deleted file's thumbnail)."""
        answers = [f"status of {code} " for code in (404, *expected)]
        assert not [e for e in self.errors if not any(a in e for a in answers)], self.errors
        self.page.close()


def _search(page: Page, text: str) -> list[dict]:
    page.fill("#q", text)
    page.press("#q", "Enter")
    return page.settled(f"for “{text}”")


def test_opens_on_the_collection_newest_first_and_paged(browser, site):
    server, photos, newest_first, _ = site
    page = Page(browser, server)
    cards = page.settled("22 photos, newest first")
    assert [c["id"] for c in cards] == newest_first
    assert cards[1]["note"] == datetime.date.fromtimestamp(FIRST_DAY + 20 * DAY).isoformat()  # the date taken
    assert page.is_hidden("#pager")
    assert page.params() == {}

    page.goto(server.base + "/?k=10")
    assert [c["id"] for c in page.settled("1–10 shown")] == newest_first[:10]
    assert page.text_content("#page-info") == "Page 1 of 3" and page.is_disabled("#newer")
    page.click("#older")
    assert [c["id"] for c in page.settled("11–20 shown")] == newest_first[10:20]
    assert page.params() == {"k": "10", "page": "2"}
    page.click("#older")
    assert [c["id"] for c in page.settled("21–22 shown")] == newest_first[20:]
    assert page.is_disabled("#older")
    page.go_back()
    assert [c["id"] for c in page.settled("11–20 shown")] == newest_first[10:20]
    assert page.input_value("#k") == "10"
    listing = page.api_requests("/api/items")[-1]
    assert "offset=10" in listing and "limit=10" in listing
    page.done()


def test_the_url_holds_the_whole_state(browser, site):
    server, photos, _, _ = site
    page = Page(browser, server)
    page.settled("newest first")
    page.select_option("#k", "48")
    page.fill("#under", str(photos / "trips"))
    page.press("#under", "Enter")
    page.settled("12 photos in")
    hits = _search(page, "shapes")
    assert page.params() == {"q": "shapes", "under": str(photos / "trips"), "k": "48"}
    page.fill("#after", "2021-03-15")
    page.dispatch_event("#after", "change")
    later = page.settled("taken from 2021-03-15")
    assert len(later) < len(hits)

    page.reload()
    assert page.settled("taken from 2021-03-15") == later
    assert page.input_value("#q") == "shapes" and page.input_value("#k") == "48"
    assert page.input_value("#under") == str(photos / "trips") and page.input_value("#after") == "2021-03-15"
    page.go_back()  # the search before the date filter
    assert page.settled("for “shapes”") == hits and page.input_value("#after") == ""
    page.go_back()  # the folder before the search
    page.settled("12 photos in")
    assert page.input_value("#q") == "" and page.params() == {"under": str(photos / "trips"), "k": "48"}
    page.done()


def test_more_like_this_shows_the_photo_and_puts_it_in_the_url(browser, site):
    server, photos, _, ids = site
    astronaut = ids[str(photos / "trips" / "astronaut.jpg")]
    page = Page(browser, server)
    page.settled("newest first")
    _search(page, "a rocket on the launch pad")
    page.click(f"#grid .hit[data-id='{astronaut}'] button.like")
    similar = page.settled("21 results like astronaut.jpg")
    assert Path(similar[0]["path"]).name == "astronaut.jpg"  # its copy in home/
    assert page.input_value("#q") == ""  # not the old text
    assert page.params() == {"like": str(astronaut)}
    ref = page.reference()
    assert ref["caption"] == "More like astronaut.jpg" and ref["src"].endswith(f"/thumb/{astronaut}?size=96&square=1")
    assert ref["width"] > 50
    assert f"like {astronaut}" not in page.status()  # the photo by its name, not its id

    page.reload()
    assert page.settled("21 results like astronaut.jpg") == similar
    assert page.reference()["caption"] == "More like astronaut.jpg"
    page.done()


def test_an_uploaded_image_is_shown_above_its_results(browser, site):
    server, photos, _, _ = site
    page = Page(browser, server)
    _search(page, "a cat")
    page.set_input_files("#upload", str(photos / "home" / "chelsea.jpg"))
    results = page.settled("results like chelsea.jpg (uploaded)")
    assert Path(results[0]["path"]).name == "chelsea.jpg"
    ref = page.reference()
    assert ref["src"].startswith("blob:") and ref["width"] > 50
    assert ref["caption"] == "More like chelsea.jpg (uploaded)"
    assert page.input_value("#q") == "" and "q" not in page.params()
    page.go_back()
    page.settled("for “a cat”")
    assert page.is_hidden("#reference")
    page.go_forward()  # the upload again, while the page keeps it
    page.settled("results like chelsea.jpg (uploaded)")
    assert page.reference()["src"] == ref["src"]
    page.done()


def test_folder_shows_that_folders_photos(browser, site):
    server, photos, newest_first, ids = site
    page = Page(browser, server)
    page.settled("newest first")
    hits = _search(page, "shapes")
    trip = next(h for h in hits if "/trips/" in h["path"])
    page.click(f"#grid .hit[data-id='{trip['id']}'] button.folder")
    trips = str(photos / "trips") + "/"
    cards = page.settled(f"12 photos in {trips}, newest first")
    in_trips = [i for i in newest_first if any(p.startswith(trips) and v == i for p, v in ids.items())]
    assert [c["id"] for c in cards] == in_trips  # all of the folder, not the search narrowed to it
    assert page.input_value("#q") == "" and page.input_value("#under") == trips
    assert page.params() == {"under": trips}
    page.done()


def test_a_refused_request_is_sent_once(browser, site):
    server, photos, _, _ = site
    page = Page(browser, server)
    page.settled("newest first")
    before = len(page.api_requests("/api/"))
    page.fill("#under", "photos/trips")  # relative: the server refuses it
    page.press("#under", "Enter")
    page.wait_for_function("() => document.querySelector('#status').classList.contains('error')")
    assert "give an absolute folder" in page.status()
    page.click("#status")  # the input loses focus: a change event after the Enter
    page.press("#under", "Enter")  # and Enter again on the same value
    page.wait_for_timeout(500)
    sent = page.api_requests("/api/")[before:]
    assert len(sent) == 1 and "under=photos%2Ftrips" in sent[0], sent
    assert page.query_selector_all("#grid .hit") == []
    page.done(400)


def test_a_deleted_file_is_a_placeholder(browser, site):
    server, photos, newest_first, _ = site
    lost = newest_first[0]
    status, headers, body = server.get(f"/thumb/{lost}")
    assert status == 404 and headers["content-type"].startswith("application/json")
    assert "lost.jpg is gone" in json.loads(body)["error"]
    page = Page(browser, server)
    cards = page.settled("22 photos")
    assert [c["id"] for c in cards if c["missing"]] == [lost]
    card = page.query_selector(f"#grid .hit[data-id='{lost}']")
    assert card.query_selector("img") is None and card.query_selector(".missing").text_content() == "file missing"
    box = card.query_selector(".missing").bounding_box()
    assert box["width"] > 150 and abs(box["width"] - box["height"]) < 2  # the square of a thumbnail
    card.query_selector(".missing").click()
    page.wait_for_selector("#full-missing", state="visible")
    assert page.is_hidden("#full")
    page.keyboard.press("ArrowRight")  # the next photo is there
    page.wait_for_function(
        "() => document.querySelector('#full').complete && document.querySelector('#full').naturalWidth > 0"
    )
    assert page.is_hidden("#full-missing")
    page.done()


def test_full_view_steps_through_the_results(browser, site):
    server, photos, newest_first, _ = site
    page = Page(browser, server)
    page.settled("22 photos")

    def shown():
        page.wait_for_function(
            "() => !document.querySelector('#viewer').hidden && document.querySelector('#full').complete"
            " && document.querySelector('#full').naturalWidth > 0"
        )
        src = page.get_attribute("#full", "src")
        return int(src.rsplit("/", 1)[1]), page.text_content("#full-count")

    page.click(f"#grid .hit[data-id='{newest_first[1]}'] img")
    assert shown() == (newest_first[1], "2 of 22")
    page.keyboard.press("ArrowRight")
    assert shown() == (newest_first[2], "3 of 22")
    page.click("#full-next")
    assert shown() == (newest_first[3], "4 of 22")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    assert shown() == (newest_first[1], "2 of 22")
    page.keyboard.press("Escape")
    page.wait_for_function("() => document.querySelector('#viewer').hidden")
    page.click(f"#grid .hit[data-id='{newest_first[-1]}'] img")
    assert shown() == (newest_first[-1], "22 of 22") and page.is_disabled("#full-next")
    page.keyboard.press("ArrowRight")  # the last: stays
    assert shown() == (newest_first[-1], "22 of 22")
    page.click("#full-close")
    page.wait_for_function("() => document.querySelector('#viewer').hidden")
    page.done()


def test_counts_are_said_in_words(browser, site):
    server, photos, _, _ = site
    gone = str(photos / "gone")
    page = Page(browser, server, "/?" + urllib.parse.urlencode({"under": gone}))
    page.settled(f"1 photo in {gone}, newest first")
    page.goto(server.base + "/?" + urllib.parse.urlencode({"q": "a dog", "k": 1}))
    page.settled("1 result for “a dog”")
    page.goto(server.base + "/?" + urllib.parse.urlencode({"q": "a dog", "k": 2}))
    page.settled("2 results for “a dog”")
    page.goto(server.base + "/?" + urllib.parse.urlencode({"under": str(photos / "nowhere")}))
    page.settled(f"No photos in {photos / 'nowhere'}.")
    page.wait_for_function("() => document.querySelector('#info').textContent.includes('22 items')")
    page.done()


def test_items_endpoint_pages_the_collection_and_refuses_bad_parameters(site):
    server, photos, newest_first, _ = site
    page = server.get_json("/api/items?offset=20&limit=5")
    assert page["total"] == 22 and [it["id"] for it in page["items"]] == newest_first[20:]
    assert set(page["items"][0]) == {"id", "path", "width", "height", "size", "taken"}
    home = server.get_json("/api/items?" + urllib.parse.urlencode({"under": str(photos / "home"), "limit": 100}))
    assert home["total"] == 9 and all(it["path"].startswith(str(photos / "home") + "/") for it in home["items"])
    assert server.get_json("/api/items?after=2021-03-15&before=2021-03-17")["total"] == 2
    for query, words in (
        ("limit=0", "limit=0: must be between 1 and 1000"),
        ("offset=-1", "offset=-1: must be between"),
        ("limit=ten", "expected an integer"),
        ("under=photos", "give an absolute folder"),
        ("after=yesterday", "not a date"),
        ("after=2021-03-17&before=2021-03-15", "is not earlier than before"),
        ("q=cat", "unknown parameter 'q'"),
    ):
        assert words in server.get_json("/api/items?" + query, status=400)["error"], query


def _region(shot, page: Page, selector: str):
    """The pixels of the screenshot under the element (device scale 1), as an array."""
    import numpy as np

    box = page.query_selector(selector).bounding_box()
    assert box and box["width"] > 0 and box["height"] > 0, selector
    x, y, w, h = (round(box[k]) for k in ("x", "y", "width", "height"))
    return np.asarray(shot.crop((x, y, x + w, y + h)).convert("RGB"), dtype=np.float32)


def _not_blank(pixels, background=(246, 246, 244)) -> bool:
    """Something drawn: the pixels vary, and are not the page's background."""
    far = abs(pixels - np.asarray(background, dtype=np.float32)).sum(axis=2) > 30
    return float(pixels.std()) > 8 and float(far.mean()) > 0.2


def _has_text(pixels, dark=True) -> bool:
    """Letters drawn: enough dark pixels (light ones on a dark backdrop)."""
    ink = (pixels < 110).all(axis=2) if dark else (pixels > 150).all(axis=2)
    return int(ink.sum()) > 30


np = pytest.importorskip("numpy")


def test_screenshots_of_each_state(browser, site, tmp_path):
    from PIL import Image

    server, photos, newest_first, ids = site
    out = Path(os.environ.get("SEMDB_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    page = Page(browser, server)

    def shot(name):
        path = out / f"{name}.png"
        page.screenshot(path=str(path))
        return Image.open(path)

    # the collection: real thumbnails, and the deleted file's box (the newest photo: first)
    page.settled("22 photos, newest first")
    img = shot("1-collection")
    for card in page.query_selector_all("#grid .hit")[:5]:
        selector = f"#grid .hit[data-id='{card.get_attribute('data-id')}'] :is(img, .missing)"
        if page.query_selector(selector).bounding_box()["y"] < 800:
            assert _not_blank(_region(img, page, selector)), selector
    box = _region(img, page, f"#grid .hit[data-id='{newest_first[0]}'] .missing")
    assert _not_blank(box)  # the striped box with its words, not a broken-image icon
    assert box.shape[0] > 150 and box.shape[1] > 150

    # a search
    _search(page, "a rocket on the launch pad")
    img = shot("2-search")
    assert _not_blank(_region(img, page, "#grid .hit:nth-child(2) img"))

    # more like this: the photo above its results
    astronaut = ids[str(photos / "trips" / "astronaut.jpg")]
    page.click(f"#grid .hit[data-id='{astronaut}'] button.like")
    page.settled("results like astronaut.jpg")
    page.reference()
    img = shot("3-like")
    ref = _region(img, page, "#reference img")
    assert ref.shape[:2] == (96, 96) and _not_blank(ref)
    assert _has_text(_region(img, page, "#ref-caption"))

    # an upload: its preview above its results
    page.set_input_files("#upload", str(photos / "home" / "coffee.jpg"))
    page.settled("results like coffee.jpg (uploaded)")
    page.reference()
    img = shot("4-upload")
    assert _not_blank(_region(img, page, "#reference img"))

    # a folder
    page.click(f"#grid .hit[data-id='{ids[str(photos / 'home' / 'chelsea.jpg')]}'] button.folder")
    page.settled("9 photos in")
    img = shot("5-folder")
    assert page.is_hidden("#reference")
    assert _not_blank(_region(img, page, "#grid .hit:first-child img"))

    # paged, and the full view
    page.goto(server.base + "/?k=10&page=2")
    page.settled("11–20 shown")
    page.eval_on_selector("#pager", "p => p.scrollIntoView({block: 'end'})")
    img = shot("6-page-2")
    assert all(_has_text(_region(img, page, s)) for s in ("#newer", "#page-info", "#older"))
    page.click("#grid .hit:nth-child(3) img")
    page.wait_for_function("() => document.querySelector('#full').naturalWidth > 0")
    img = shot("7-full-view")
    full = _region(img, page, "#full")
    h, w = full.shape[:2]
    assert float(full[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3].std()) > 8  # the photo, not the dark backdrop
    assert _has_text(_region(img, page, "#full-next"), dark=False)
    assert _has_text(_region(img, page, "#full-count"), dark=False)

    # the deleted file in the full view
    page.goto(server.base + "/")
    page.settled("22 photos")
    page.click(f"#grid .hit[data-id='{newest_first[0]}'] .missing")
    page.wait_for_selector("#full-missing", state="visible")
    img = shot("8-full-view-missing")
    missing = _region(img, page, "#full-missing")
    assert _not_blank(missing, background=(16, 16, 16)) and _has_text(missing)
    page.keyboard.press("Escape")

    # a refused request: the message in red
    page.fill("#under", "photos")
    page.press("#under", "Enter")
    page.wait_for_function("() => document.querySelector('#status').classList.contains('error')")
    img = shot("9-error")
    status = _region(img, page, "#status")
    red = (status[..., 0] > 120) & (status[..., 1] < 80) & (status[..., 2] < 80)
    assert red.sum() > 50
    page.done(400)
