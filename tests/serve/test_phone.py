"""The page of `semdb serve` on a phone (390x844 CSS pixels, 3 device pixels each, touch) and
on a desktop (1440x900), in a real headless Chromium: a dense grid of square tiles with
thumbnails as sharp as the screen, the filters folded on the phone, a full view that fills
the screen and follows a swipe, new results that start at the top, video frames with a badge
and counted as such; screenshots of each, checked by their pixels. SEMDB_SCREENSHOTS=DIR keeps
the screenshots."""

from __future__ import annotations

import io
import os
import re
import urllib.parse
from pathlib import Path

import pytest
from kit import TIMEOUT_MS, write_photos
from serve_helpers import Server

np = pytest.importorskip("numpy")

SCREENS = {
    "phone": {
        "viewport": {"width": 390, "height": 844},
        "device_scale_factor": 3,
        "is_mobile": True,
        "has_touch": True,
    },
    "desktop": {"viewport": {"width": 1440, "height": 900}},
}


@pytest.fixture(scope="module")
def site(tmp_path_factory, tiny_model):
    """A served store of 98 photos (trips/, home/) and the frames of one video (clips/cuts.mp4)."""
    import semdb
    from semdb.video.synthetic import Scene, write_video

    root = tmp_path_factory.mktemp("phone")
    photos = root / "photos"
    write_photos(photos / "trips", n_generated=45, seed=0)
    write_photos(photos / "home", n_generated=45, seed=1)
    (photos / "clips").mkdir()
    scenes = [Scene(3, (255, 0, 0)), Scene(1.5, (0, 0, 255), "disc"), Scene(5, (0, 255, 0), "bars", pan=2)]
    write_video(photos / "clips" / "cuts.mp4", scenes)
    store = root / "store"
    with semdb.open(store, model=tiny_model) as db:
        db.ingest([str(photos)], train_now=True)
        frames = sorted(it.frame_ms for it in db.store.iter_items() if it.frame_ms is not None)
    server = Server(store)
    yield server, photos, frames
    server.stop()


@pytest.fixture(params=sorted(SCREENS))
def screen(request, browser, site):
    """A tab of the given screen on the site, with the thumbnail and listing requests it made."""
    context = browser.new_context(**SCREENS[request.param])
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.name = request.param
    page.errors, page.thumbs, page.listings = [], [], []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("request", lambda r: page.thumbs.append(r.url) if "/thumb/" in r.url else None)
    page.on("request", lambda r: page.listings.append(r.url) if "/api/items" in r.url else None)
    yield page
    assert not page.errors, page.errors
    context.close()


def _open(page, server, path="/") -> list[dict]:
    page.goto(server.base + path)
    return _settled(page, "newest first")


def _settled(page, status: str) -> list[dict]:
    """The tiles (their boxes), once the status says `status` and every picture is in."""
    page.wait_for_function("(s) => document.querySelector('#status').textContent.includes(s)", arg=status)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#grid .hit')].every(c => c.querySelector('.missing')"
        " || (c.querySelector('img').complete && c.querySelector('img').naturalWidth > 0))"
    )
    return page.eval_on_selector_all(
        "#grid .hit",
        "cards => cards.map(c => { const r = c.getBoundingClientRect(), i = c.querySelector('img');"
        " return {id: +c.dataset.id, x: r.x, y: r.y + scrollY, w: r.width, h: r.height,"
        " src: i ? i.getAttribute('src') : '', natural: i ? i.naturalWidth : 0}; })",
    )


def _columns(tiles) -> int:
    return len({round(t["x"]) for t in tiles})


def _shot(page, name):
    from PIL import Image

    data = page.screenshot()
    keep = os.environ.get("SEMDB_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        (Path(keep) / f"{page.name}-{name}.png").write_bytes(data)
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)


def _region(pixels, page, selector):
    """The screenshot's pixels under the element (in device pixels)."""
    box = page.query_selector(selector).bounding_box()
    assert box and box["width"] > 0 and box["height"] > 0, selector
    scale = pixels.shape[1] / page.viewport_size["width"]
    x, y, w, h = (round(box[k] * scale) for k in ("x", "y", "width", "height"))
    return pixels[max(0, y) : y + h, max(0, x) : x + w]


def _ink(pixels, light: bool) -> int:
    return int(((pixels > 170) if light else (pixels < 110)).all(axis=2).sum())


def _button_heights(page, selector) -> dict:
    """The height of each visible button under `selector`, and of one line of its text."""
    return page.eval_on_selector_all(
        selector,
        "bs => Object.fromEntries(bs.filter(b => b.offsetParent !== null || getComputedStyle(b).position === 'fixed')"
        ".map(b => [b.id || b.className || b.textContent, [b.getBoundingClientRect().height,"
        " parseFloat(getComputedStyle(b).lineHeight) || 1.4 * parseFloat(getComputedStyle(b).fontSize)]]))",
    )


def _one_line(page, selector):
    heights = _button_heights(page, selector)
    assert heights, selector
    for name, (height, line) in heights.items():
        assert height < 2 * line + 16, (name, height, line)  # one line of text and its padding: not wrapped


# --- the grid -----------------------------------------------------------------------------------


def test_a_dense_grid_of_square_tiles(screen, site):
    server = site[0]
    tiles = _open(screen, server)
    columns = _columns(tiles)
    if screen.name == "phone":
        assert 3 <= columns <= 4, columns
    else:
        assert columns >= 8, columns
    width = screen.viewport_size["width"]
    for t in tiles:
        assert abs(t["w"] - t["h"]) < 1, t  # square
    assert screen.evaluate("document.documentElement.scrollWidth") <= width  # nothing wider than the screen
    right = max(t["x"] + t["w"] for t in tiles)
    assert right > width - 20  # edge to edge, but for a margin
    assert min(t["w"] for t in tiles) < (140 if screen.name == "phone" else 200)


def test_thumbnails_are_requested_for_the_tile_and_the_pixel_density(screen, site):
    server = site[0]
    tiles = _open(screen, server)
    dpr = screen.evaluate("devicePixelRatio")
    assert dpr == (3 if screen.name == "phone" else 1)
    items = {it["id"]: it for it in server.get_json("/api/items?limit=1000")["items"]}
    for t in tiles:
        size = int(re.search(r"[?&]size=(\d+)", t["src"]).group(1))
        need = t["w"] * dpr
        assert need <= size < need + 32, (t, need)  # sharp on this screen, not more
        short = min(items[t["id"]]["width"], items[t["id"]]["height"])
        assert "square=1" in t["src"] and t["natural"] == min(size, short)  # the centre square, that wide
    assert len(screen.thumbs) >= len([t for t in tiles if t["y"] < 844])


# --- the header ---------------------------------------------------------------------------------


def test_the_header_is_small_and_the_filters_fold_on_a_phone(screen, site):
    server, photos, _ = site
    _open(screen, server)
    header = screen.query_selector("header").bounding_box()
    search = screen.query_selector("#q").bounding_box()
    assert search["width"] > 180 and screen.is_visible("#q")
    # the placeholder is not cut: its text fits the box
    fits = screen.eval_on_selector(
        "#q",
        "q => { const s = getComputedStyle(q), c = document.createElement('canvas').getContext('2d');"
        " c.font = `${s.fontSize} ${s.fontFamily}`;"
        " return c.measureText(q.placeholder).width <= q.clientWidth - parseFloat(s.paddingLeft)"
        " - parseFloat(s.paddingRight); }",
    )
    assert fits
    _one_line(screen, "header button, header .upload")
    assert screen.query_selector("#more-toggle") is not None  # one page for both: the fold shown where narrow
    if screen.name == "desktop":
        assert screen.is_visible("#under") and screen.is_hidden("#more-toggle")
        assert header["height"] < 110
        return
    assert header["height"] <= 56, header  # one row
    assert screen.is_hidden("#under") and screen.is_hidden("#clear") and screen.is_hidden(".upload")
    screen.click("#more-toggle")
    assert screen.is_visible("#under") and screen.is_visible(".upload")
    assert screen.get_attribute("#more-toggle", "aria-expanded") == "true"
    screen.fill("#under", str(photos / "clips"))
    screen.press("#under", "Enter")
    _settled(screen, "frames of 1 video in")
    assert screen.text_content("#more-toggle") == "Filters (1)"
    screen.click("#more-toggle")
    assert screen.is_hidden("#under")
    assert screen.query_selector("header").bounding_box()["height"] <= 56


# --- new results start at the top ---------------------------------------------------------------


def _scroll_down(page):
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    page.wait_for_function("() => scrollY > 200")


def _at_top(page):
    page.wait_for_timeout(100)
    assert page.evaluate("scrollY") == 0


def test_new_results_start_at_the_top(screen, site):
    server, photos, _ = site
    tiles = _open(screen, server, "/?k=48")
    assert max(t["y"] + t["h"] for t in tiles) > screen.viewport_size["height"] + 200  # the page scrolls
    _scroll_down(screen)
    screen.click("#older")
    tiles = _settled(screen, "49–96 shown")
    assert max(t["y"] + t["h"] for t in tiles) > screen.viewport_size["height"] + 200
    _at_top(screen)
    _scroll_down(screen)
    screen.click("#newer")
    _settled(screen, "1–48 shown")
    _at_top(screen)
    # "More like this" on a tile far down the page: its photo at the top, above its results
    _scroll_down(screen)
    far = screen.query_selector_all("#grid .hit")[40]
    far.scroll_into_view_if_needed()
    far.click()
    screen.wait_for_selector("#viewer", state="visible")
    screen.click("#full-like")
    _settled(screen, "results like")
    _at_top(screen)
    assert screen.query_selector("#reference").bounding_box()["y"] < 200
    # a search by an uploaded image
    _scroll_down(screen)
    screen.set_input_files("#upload", str(photos / "home" / "coffee.jpg"))
    _settled(screen, "results like coffee.jpg (uploaded)")
    _at_top(screen)


# --- the full view ------------------------------------------------------------------------------


def _swipe(page, x0, x1, y):
    """A finger (phone) or the mouse (desktop) drawn across the screen from x0 to x1."""
    if page.name == "phone":
        cdp = page.context.new_cdp_session(page)

        def touch(kind, *points):
            cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x, "y": y} for x in points]})

        touch("touchStart", x0)
        for k in range(1, 7):
            touch("touchMove", x0 + (x1 - x0) * k / 6)
        touch("touchEnd")
        cdp.detach()
    else:
        page.mouse.move(x0, y)
        page.mouse.down()
        page.mouse.move(x1, y, steps=6)
        page.mouse.up()


def _tap(page, x, y):
    if page.name == "phone":
        page.touchscreen.tap(x, y)
    else:
        page.mouse.click(x, y)


def _showing(page, count):
    page.wait_for_function("(c) => document.querySelector('#full-count').textContent === c", arg=count)
    page.wait_for_function(
        "() => { const f = document.querySelector('#full'), v = document.querySelector('#full-video');"
        " return f.hidden ? v.readyState >= 2 : f.complete && f.naturalWidth > 0; }"
    )


def test_the_full_view_fills_the_screen_and_follows_a_swipe(screen, site):
    server = site[0]
    tiles = _open(screen, server)
    width, height = screen.viewport_size["width"], screen.viewport_size["height"]
    tile = screen.query_selector(f"#grid .hit[data-id='{tiles[20]['id']}']")  # a photo (the frames are newer)
    tile.scroll_into_view_if_needed()
    at = tile.bounding_box()
    _tap(screen, at["x"] + at["width"] / 2, at["y"] + at["height"] / 2)  # a tap (a click on the desktop)
    _showing(screen, f"21 of {len(tiles)}")
    full = screen.query_selector("#full").bounding_box()
    assert (full["x"], full["y"], full["width"], full["height"]) == (0, 0, width, height)  # the whole screen
    for step in ("#full-prev", "#full-next"):
        box = screen.query_selector(step).bounding_box()
        assert screen.is_visible(step) and box["x"] >= 0 and box["x"] + box["width"] <= width
    _one_line(screen, "#viewer button")
    _swipe(screen, width * 0.8, width * 0.2, height / 2)  # to the left: the next
    _showing(screen, f"22 of {len(tiles)}")
    _swipe(screen, width * 0.2, width * 0.8, height / 2)  # to the right: the previous
    _swipe(screen, width * 0.2, width * 0.8, height / 2)
    _showing(screen, f"20 of {len(tiles)}")
    # a tap hides the bars and the arrows, another shows them
    _tap(screen, width / 2, height / 2)
    screen.wait_for_selector("#full-close", state="hidden")
    assert screen.is_hidden("#full-next")
    _tap(screen, width / 2, height / 2)
    screen.wait_for_selector("#full-close", state="visible")
    screen.click("#full-close")
    screen.wait_for_selector("#viewer", state="hidden")
    # Back (a phone's back gesture) closes the full view and leaves the results as they were
    url, scrolled = screen.url, screen.evaluate("scrollY")
    _tap(screen, at["x"] + at["width"] / 2, at["y"] + at["height"] / 2)
    _showing(screen, f"21 of {len(tiles)}")
    listed = len(screen.listings)
    screen.go_back()
    screen.wait_for_selector("#viewer", state="hidden")
    screen.wait_for_timeout(300)
    assert screen.url == url and screen.evaluate("scrollY") == scrolled and len(screen.listings) == listed


def test_a_video_frame_has_a_badge_and_plays_on_black(screen, site):
    server, photos, frames = site
    _open(screen, server)
    status = screen.text_content("#status")
    assert status.startswith(f"98 photos and {len(frames)} frames of 1 video, newest first"), status
    clips = str(photos / "clips")
    listing = server.get_json("/api/items?" + urllib.parse.urlencode({"under": clips}))
    counts = [listing[name] for name in ("total", "photos", "frames", "videos")]
    assert counts == [len(frames), 0, len(frames), 1]
    screen.goto(server.base + "/?under=" + clips)
    tiles = _settled(screen, f"{len(frames)} frames of 1 video in {clips}")
    badges = screen.eval_on_selector_all("#grid .hit .badge", "bs => bs.map(b => b.textContent)")
    assert sorted(badges) == sorted(f"00:{ms // 1000:02d}" for ms in frames)
    pixels = _shot(screen, "video-badges")
    assert _ink(_region(pixels, screen, "#grid .hit:first-child .badge"), light=True) > 10
    screen.click(f"#grid .hit[data-id='{tiles[0]['id']}']")
    _showing(screen, f"1 of {len(frames)}")
    viewer = screen.eval_on_selector("#viewer", "v => getComputedStyle(v).backgroundColor")
    assert viewer == "rgb(0, 0, 0)", viewer  # opaque: no page shows through
    box = screen.query_selector("#full-video").bounding_box()
    assert box["y"] >= 40 and box["y"] + box["height"] <= screen.viewport_size["height"] - 40  # between the bars
    pixels = _shot(screen, "video-view")
    # the video keeps its shape; above or beside it, black (no page, no arrow there)
    scale = pixels.shape[1] / screen.viewport_size["width"]
    ratio = screen.eval_on_selector("#full-video", "v => v.videoHeight / v.videoWidth")
    tall, wide = min(box["height"], box["width"] * ratio), min(box["width"], box["height"] / ratio)
    if box["height"] - tall > 20:  # bands above and below (the player's controls in the one below)
        rows = (box["y"] + 4, box["y"] + (box["height"] - tall) / 2 - 4)
        cols = (box["x"] + 60, box["x"] + box["width"] - 60)
    else:  # bands left and right
        rows = (box["y"] + 4, box["y"] + box["height"] / 4)
        cols = (box["x"] + 4, box["x"] + (box["width"] - wide) / 2 - 4)
    band = pixels[round(rows[0] * scale) : round(rows[1] * scale), round(cols[0] * scale) : round(cols[1] * scale)]
    assert band.size > 0 and float(band.max()) < 12, float(band.max())
    _one_line(screen, "#viewer button")


# --- screenshots --------------------------------------------------------------------------------


def test_screenshots_of_the_page(screen, site):
    server, photos, _ = site
    tiles = _open(screen, server)
    pixels = _shot(screen, "1-collection")
    for tile in screen.query_selector_all("#grid .hit")[:6]:
        region = _region(pixels, screen, f"#grid .hit[data-id='{tile.get_attribute('data-id')}'] img")
        assert float(region.std()) > 8  # a picture, not an empty tile
    assert _ink(_region(pixels, screen, "#status"), light=False) > 30
    if screen.name == "phone":
        screen.click("#more-toggle")
        pixels = _shot(screen, "2-filters")
        assert _ink(_region(pixels, screen, "#filters"), light=False) > 100
        screen.click("#more-toggle")
    screen.fill("#q", "a rocket on the launch pad")
    screen.press("#q", "Enter")
    _settled(screen, "results for")
    pixels = _shot(screen, "3-search")
    assert float(_region(pixels, screen, "#grid .hit:first-child img").std()) > 8
    screen.click("#grid .hit:nth-child(2)")
    _showing(screen, "2 of 24")
    pixels = _shot(screen, "4-full-view")
    h, w = pixels.shape[:2]
    assert float(pixels[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3].std()) > 8  # the photo
    for selector in ("#full-close", "#full-like", "#full-folder", "#full-count", "#full-next"):
        assert _ink(_region(pixels, screen, selector), light=True) > 20, selector
    assert float(pixels[:, :4].max()) < 90 or float(pixels[-4:].max()) < 90  # black around the photo
    _tap(screen, w / 2 / (w / screen.viewport_size["width"]), screen.viewport_size["height"] / 2)
    screen.wait_for_selector("#full-close", state="hidden")
    pixels = _shot(screen, "5-full-view-bare")
    assert _ink(pixels[: h // 12, : w // 3], light=True) < 20  # no bar over the photo
    # more like it: its picture and name above the results
    _tap(screen, w / 2 / (w / screen.viewport_size["width"]), screen.viewport_size["height"] / 2)
    screen.click("#full-like")
    _settled(screen, "results like")
    screen.wait_for_function("() => document.querySelector('#ref-box img').naturalWidth > 0")
    pixels = _shot(screen, "6-like")
    assert float(_region(pixels, screen, "#ref-box img").std()) > 8
    assert _ink(_region(pixels, screen, "#ref-caption"), light=False) > 30
    # the pager at the foot of the collection
    _open(screen, server, "/?page=2")
    screen.eval_on_selector("#pager", "p => p.scrollIntoView({block: 'end'})")
    pixels = _shot(screen, "7-pager")
    assert all(_ink(_region(pixels, screen, s), light=False) > 30 for s in ("#newer", "#page-info", "#older"))
    _one_line(screen, "#pager button")
    assert len(tiles) == 24
