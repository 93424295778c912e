"""The web page of `semdb serve` in a real headless Chromium (Debian's chromium, driven by
playwright): type a query, see the thumbnails load, open the full-size view, "more like this",
apply a folder filter. Skips, saying why, where playwright or a Chromium cannot be had
(.ci/run installs both). SEMDB_SCREENSHOT=FILE.png keeps a screenshot of the results page."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import write_photos
from serve_helpers import Server

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
TIMEOUT_MS = 60_000


def _chromium() -> str | None:
    for candidate in (os.environ.get("SEMDB_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        found = candidate and shutil.which(candidate)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set SEMDB_CHROMIUM=/path/to/chrome)")
    with sync_playwright() as pw:
        try:
            # a fresh temporary profile: launch() makes one per browser
            chrome = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS)
        except Error as e:
            pytest.skip(f"Chromium at {exe} does not start: {str(e).splitlines()[0]}")
        yield chrome
        chrome.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory, tiny_model):
    import semdb

    root = tmp_path_factory.mktemp("web")
    photos = root / "photos"
    write_photos(photos / "trips", seed=0)
    write_photos(photos / "home", n_generated=5, seed=1)
    store = root / "store"
    with semdb.open(store, model=tiny_model) as db:
        db.ingest([str(photos)], train_now=True)
    server = Server(store)
    yield server, photos
    server.stop()


def _wait_for_results(page, status_contains: str):
    page.wait_for_function(
        "(s) => document.querySelector('#status').textContent.includes(s)", arg=status_contains, timeout=TIMEOUT_MS
    )
    page.wait_for_function(
        "() => { const imgs = [...document.querySelectorAll('#grid .hit img')];"
        " return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0); }",
        timeout=TIMEOUT_MS,
    )
    return page.eval_on_selector_all(
        "#grid .hit",
        "cards => cards.map(c => ({id: +c.dataset.id, path: c.querySelector('.path').textContent,"
        " score: +c.querySelector('.score').textContent, width: c.querySelector('img').naturalWidth}))",
    )


def test_search_view_more_like_this_and_folder_filter(browser, site, tmp_path):
    server, photos = site
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server.base + "/")
    page.wait_for_function("() => document.querySelector('#info').textContent.includes('items')")
    assert "21 items" in page.text_content("#info")

    # type a query: a grid of thumbnails that load, with scores and paths
    page.fill("#q", "a rocket on the launch pad")
    page.press("#q", "Enter")
    hits = _wait_for_results(page, "results for “a rocket on the launch pad”")
    assert len(hits) == 21  # the page asks for 24
    assert all(h["width"] > 0 for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert all(Path(h["path"]).is_relative_to(photos) for h in hits)
    shot = os.environ.get("SEMDB_SCREENSHOT") or str(tmp_path / "results.png")
    page.screenshot(path=shot)
    assert Path(shot).stat().st_size > 10_000

    # the full-size view
    page.click("#grid .hit:first-child img")
    page.wait_for_function(
        "() => !document.querySelector('#viewer').hidden"
        " && document.querySelector('#full').complete"
        " && document.querySelector('#full').naturalWidth > 0"
    )
    page.keyboard.press("Escape")
    page.wait_for_function("() => document.querySelector('#viewer').hidden")

    # more like this: the item itself (or its copy, same photo) comes first
    astronaut = next(h for h in hits if h["path"].endswith("trips/astronaut.jpg"))
    page.click(f"#grid .hit[data-id='{astronaut['id']}'] button.like")
    similar = _wait_for_results(page, f"more like item {astronaut['id']}")
    assert Path(similar[0]["path"]).name == "astronaut.jpg"
    assert f"like={astronaut['id']}" in page.url

    # a folder filter: every result under it
    home = str(photos / "home") + "/"
    page.fill("#under", home)
    page.press("#under", "Enter")
    page.wait_for_function(
        "(home) => { const p = [...document.querySelectorAll('#grid .hit .path')];"
        " return p.length > 0 && p.every(e => e.textContent.startsWith(home)); }",
        arg=home,
    )
    filtered = _wait_for_results(page, "more like item")
    assert all(h["path"].startswith(home) for h in filtered) and len(filtered) == 9

    # the same filter on a text query, and the "Folder" button of a result
    page.fill("#under", "")
    page.fill("#q", "shapes")
    page.press("#q", "Enter")
    hits = _wait_for_results(page, "results for “shapes”")
    trip = next(h for h in hits if "/trips/" in h["path"])
    page.click(f"#grid .hit[data-id='{trip['id']}'] button.folder")
    trips = str(photos / "trips") + "/"
    page.wait_for_function(
        "(d) => { const p = [...document.querySelectorAll('#grid .hit .path')];"
        " return p.length > 0 && p.every(e => e.textContent.startsWith(d)); }",
        arg=trips,
    )
    assert page.input_value("#under") == trips
    assert len(_wait_for_results(page, "results for “shapes”")) == 12
    assert not errors, errors
    page.close()
