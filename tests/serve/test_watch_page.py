"""`semdb serve --watch`: a real server watching a real folder, a real browser on its page:
photos copied in are said to be indexing, then appear in the collection without a reload."""

import shutil

from kit import TIMEOUT_MS, write_photos
from serve_helpers import Server

import semdb


def test_new_photos_appear_in_the_collection_without_a_reload(browser, tmp_path, tiny_model):
    photos, store = tmp_path / "photos", tmp_path / "store"
    write_photos(photos / "old", n_generated=0)
    with semdb.open(store, model=tiny_model) as db:
        db.ingest([photos])
    server = Server(store, "--watch", photos, "--settle", "3", "--rescan", "0")
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_default_timeout(TIMEOUT_MS)
    try:
        page.goto(server.base + "/")
        page.wait_for_function("() => document.querySelector('#status').textContent.includes('4 photos')")
        page.evaluate("() => { window.notReloaded = true; }")
        source = write_photos(tmp_path / "card", n_generated=5)
        shutil.copytree(source, photos / "card")  # 9 photos, held back 3 s each until they settle
        page.wait_for_function(
            "() => { const n = document.querySelector('#indexing');"
            " return !n.hidden && /Indexing \\d+ new photos/.test(n.textContent); }"
        )
        page.wait_for_function("() => document.querySelector('#status').textContent.includes('13 photos')")
        assert page.evaluate("() => window.notReloaded === true")  # the same page, not a reload
        assert len(page.query_selector_all("#grid .hit")) == 13
        page.wait_for_function("() => document.querySelector('#indexing').hidden")
        status = server.get_json("/api/status")
        assert status["watching"] and not status["indexing"] and status["added"] == 9 and status["items"] == 13
        hits = server.get_json("/api/search?q=a+photo&k=20")["hits"]  # the server's search sees them
        assert sum("/card/" in h["path"] for h in hits) == 9
        assert errors == []
    finally:
        page.close()
        code = server.stop()
    assert code == 0, server.output()
    with semdb.open(store, readonly=True) as db:
        assert db.count() == 13 and db.store.verify() == []
