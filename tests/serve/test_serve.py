"""`semdb serve`: a real server process over real HTTP on 127.0.0.1 (a free port), the tiny
random-init model and real photos. Every endpoint, bad requests (4xx with a one-line JSON
error, never a traceback), thumbnails of the right item, a vanished file, a concurrent ingest
seen by the running server, and `semdb query` answered by a running server."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from kit import cli_env, semdb_app, semdb_cli, write_photos
from PIL import Image
from serve_helpers import Server, multipart


def _ingest(store, folders, model, train_now=True):
    import semdb

    with semdb.open(store, model=model) as db:
        return db.ingest([str(f) for f in folders], train_now=train_now)


def _by_name(db):
    return {(os.path.basename(os.path.dirname(it.path)), os.path.basename(it.path)): it for it in db.store.iter_items()}


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model):
    """A coded store of real photos in folders a/, b/ and c/, and a server over it."""
    root = tmp_path_factory.mktemp("serve")
    photos = root / "photos"
    write_photos(photos / "a", seed=0)
    write_photos(photos / "b", n_generated=6, seed=1)
    (photos / "c").mkdir()
    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(photos / "c" / "gone.jpg")
    store = root / "store"
    summary = _ingest(store, [photos], tiny_model)
    assert summary["failed"] == 0 and summary["staged"] == 0
    import semdb

    with semdb.open(store, readonly=True) as db:
        items = _by_name(db)
    server = Server(store)
    yield server, store, photos, items
    assert server.stop() == 0, server.output()
    assert not (store / "serve.json").exists()
    assert "Traceback" not in server.output(), server.output()


def _hits(server, target):
    body = server.get_json(target)
    assert set(body) >= {"hits"}
    for h in body["hits"]:
        assert set(h) == {"id", "path", "score"} and isinstance(h["id"], int) and isinstance(h["score"], float)
    return body["hits"]


# --- endpoints --------------------------------------------------------------------------------


def test_text_search_is_the_stores_search(served, tiny_model):
    server, store, photos, items = served
    hits = _hits(server, "/api/search?q=" + urllib.parse.quote("a cat on a sofa") + "&k=5")
    assert len(hits) == 5
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    import semdb

    with semdb.open(store, readonly=True, model=tiny_model) as db:
        local = db.search("a cat on a sofa", k=5)
    assert [h["id"] for h in hits] == [h.id for h in local]
    assert [h["path"] for h in hits] == [h.path for h in local]
    assert np.allclose([h["score"] for h in hits], [h.score for h in local], atol=1e-5)


def _same(http_hits, local_hits):
    assert [(h["id"], h["path"]) for h in http_hits] == [(h.id, h.path) for h in local_hits]
    assert np.allclose([h["score"] for h in http_hits], [h.score for h in local_hits], atol=1e-5)


def test_steering_means_what_database_search_means(served, tiny_model):
    """Arithmetic, folder and date filters, within, like: the server answers as db.search does."""
    server, store, photos, items = served
    import datetime

    import semdb

    tomorrow = (datetime.date.today() + datetime.timedelta(days=1)).isoformat()
    astronaut = items["a", "astronaut.jpg"].id
    cases = [
        ({"q": "2:cat + dog - car"}, {"query": "2:cat + dog - car"}),
        ({"q": "0.5:a rocket - 3:sky"}, {"query": "0.5:a rocket - 3:sky"}),
        ({"q": "shapes", "under": str(photos / "b")}, {"query": "shapes", "under": str(photos / "b")}),
        ({"q": "shapes", "under": str(photos / "b") + "/"}, {"query": "shapes", "under": str(photos / "b")}),
        (
            {"q": "shapes", "after": "2001-01-01", "before": tomorrow},
            {"query": "shapes", "after": "2001-01-01", "before": tomorrow},
        ),
        ({"q": "shapes", "after": tomorrow}, {"query": "shapes", "after": tomorrow}),
        ({"q": "shapes", "before": "2001-01-01T00:00"}, {"query": "shapes", "before": "2001-01-01T00:00"}),
        ({"q": "shapes", "within": "0.01"}, {"query": "shapes", "within": 0.01}),
        ({"like": str(astronaut)}, {"like": astronaut}),
        (
            {"like": str(astronaut), "q": "a rocket", "under": str(photos / "a")},
            {"like": astronaut, "query": "a rocket", "under": str(photos / "a")},
        ),
    ]
    with semdb.open(store, readonly=True, model=tiny_model) as db:
        for params, kwargs in cases:
            http_hits = _hits(server, "/api/search?" + urllib.parse.urlencode({"k": 30, **params}))
            _same(http_hits, db.search(k=30, **kwargs))
        assert not _hits(server, "/api/search?q=shapes&after=" + tomorrow)
        under_b = _hits(
            server, "/api/search?" + urllib.parse.urlencode({"q": "x", "k": 100, "under": str(photos / "b")})
        )
        assert len(under_b) == 10 and all(h["path"].startswith(str(photos / "b") + "/") for h in under_b)
        # a term naming a file of the server is text: the server never opens a file named in a URL
        named = str(photos / "a" / "chelsea.jpg")
        as_text = db.embedder.encode_texts([named])  # the file's name, embedded as text
        _same(
            _hits(server, "/api/search?" + urllib.parse.urlencode({"q": named, "k": 5})), db.search(vector=as_text, k=5)
        )
        weighted = 2 * as_text - db.embedder.encode_texts(["cat"])
        _same(
            _hits(server, "/api/search?" + urllib.parse.urlencode({"q": f"2:{named} - cat", "k": 5})),
            db.search(vector=weighted / np.linalg.norm(weighted), k=5),
        )
        # similar: from the stored code, with filters, itself left out
        sim = _hits(server, f"/api/similar/{astronaut}?k=30&under=" + urllib.parse.quote(str(photos / "b")))
        _same(sim, db.search(like=astronaut, k=30, under=str(photos / "b")))
        assert astronaut not in [h["id"] for h in sim]


def test_default_k_and_min_score(served):
    server = served[0]
    assert len(_hits(server, "/api/search?q=dog")) == 10
    every = _hits(server, "/api/search?q=dog&k=1000")
    assert len(every) == len(served[3])  # k larger than the store: every item once
    floor = every[3]["score"]
    assert all(h["score"] >= floor for h in _hits(server, f"/api/search?q=dog&k=1000&min_score={floor}"))


def test_image_search_by_upload(served):
    server, _, photos, items = served
    data = (photos / "a" / "chelsea.jpg").read_bytes()
    body, headers = multipart("image", "chelsea.jpg", data, "image/jpeg")
    for payload, hdrs in ((body, headers), (data, {"Content-Type": "image/jpeg"})):
        status, _, raw = server.request("POST", "/api/search?k=3", body=payload, headers=hdrs)
        assert status == 200, raw
        hits = json.loads(raw)["hits"]
        assert len(hits) == 3
        assert os.path.basename(hits[0]["path"]) == "chelsea.jpg"  # a/ and b/ hold the same photo
        assert hits[0]["score"] > 0.99


def test_similar_from_the_stored_code(served):
    server, _, _, items = served
    astronaut = items["a", "astronaut.jpg"]
    hits = _hits(server, f"/api/similar/{astronaut.id}?k=4")
    assert len(hits) >= 2
    # the item itself or its copy in b/ (same content, same code) comes first
    assert os.path.basename(hits[0]["path"]) == "astronaut.jpg"


def test_item_and_info(served):
    server, store, _, items = served
    coffee = items["a", "coffee.jpg"]
    got = server.get_json(f"/api/item/{coffee.id}")
    assert got["id"] == coffee.id and got["path"] == coffee.path
    assert (got["width"], got["height"]) == (coffee.width, coffee.height)
    info = server.get_json("/api/info")
    assert info["items"] == len(items) and info["path"] == str(store) and info["compressed"] is True
    assert info["model"]["dim"] == 64 and isinstance(info["generation"], int)


def _small(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB").resize((24, 24), Image.Resampling.BILINEAR), np.float32)


def test_thumbnails_are_jpegs_of_the_right_item(served):
    server, _, photos, items = served
    sources = {name: Image.open(photos / "a" / name) for name in ("astronaut.jpg", "coffee.jpg", "rocket.jpg")}
    for name in sources:
        status, headers, body = server.get(f"/thumb/{items['a', name].id}?size=128")
        assert status == 200 and headers["content-type"] == "image/jpeg" and body[:3] == b"\xff\xd8\xff"
        thumb = Image.open(io.BytesIO(body))
        assert thumb.format == "JPEG" and max(thumb.size) == 128
        src = sources[name]
        assert abs(thumb.size[0] / thumb.size[1] - src.size[0] / src.size[1]) < 0.02
        # closest, pixel for pixel, to its own photo among the three
        errors = {other: float(np.abs(_small(thumb) - _small(img)).mean()) for other, img in sources.items()}
        assert min(errors, key=errors.get) == name, errors
    status, _, body = server.get(f"/thumb/{items['a', 'astronaut.jpg'].id}")  # default size
    assert status == 200 and max(Image.open(io.BytesIO(body)).size) == 256
    # a tile of the page's grid: the centre square, as wide as asked
    rocket = Image.open(photos / "a" / "rocket.jpg")
    status, _, body = server.get(f"/thumb/{items['a', 'rocket.jpg'].id}?size=96&square=1")
    tile = Image.open(io.BytesIO(body))
    assert status == 200 and tile.size == (96, 96)
    side = min(rocket.size)
    left, top = (rocket.width - side) // 2, (rocket.height - side) // 2
    centre = rocket.crop((left, top, left + side, top + side))
    assert float(np.abs(_small(tile) - _small(centre)).mean()) < float(np.abs(_small(tile) - _small(rocket)).mean())


def test_full_size_view(served):
    server, _, photos, items = served
    rocket = items["a", "rocket.jpg"]
    status, headers, body = server.get(f"/image/{rocket.id}")
    assert status == 200 and headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(body)).size == Image.open(photos / "a" / "rocket.jpg").size


def test_the_page_and_its_assets(served):
    server = served[0]
    status, headers, body = server.get("/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    page = body.decode()
    assert 'id="q"' in page and "/static/app.js" in page and "/static/style.css" in page
    assert "http://" not in page and "https://" not in page  # nothing from the network
    assert "script-src 'self'" in headers["content-security-policy"]
    for asset, kind in (("/static/app.js", "javascript"), ("/static/style.css", "text/css")):
        status, headers, body = server.get(asset)
        assert status == 200 and kind in headers["content-type"] and body


def test_the_page_outlives_a_reinstall_under_the_server(tmp_path, tiny_model):
    """The page's files are read at start: a server run from a copy of the package keeps its
    page when that copy's static/ folder is moved away (as a reinstall does)."""
    import semdb

    tree = tmp_path / "tree"
    shutil.copytree(Path(semdb.__file__).parent, tree / "semdb", ignore=shutil.ignore_patterns("__pycache__"))
    store = tmp_path / "store"
    _ingest(store, [write_photos(tmp_path / "photos", n_generated=1)], tiny_model, train_now=False)
    static = tree / "semdb" / "serve" / "static"
    (static / "index.html").write_text((static / "index.html").read_text() + "<!-- the copy -->\n")
    server = Server(store, env={"PYTHONPATH": str(tree)}, cwd=tree)
    try:
        before = {target: server.get(target) for target in ("/", "/static/app.js", "/static/style.css")}
        assert all(status == 200 for status, _, _ in before.values())
        assert before["/"][2].endswith(b"<!-- the copy -->\n")  # served from the copy
        static.rename(static.with_name("static-old"))
        for target, (_, headers, body) in before.items():
            status, again_headers, again = server.get(target)
            assert status == 200 and again == body, (target, status, again[:200])
            assert again_headers["content-type"] == headers["content-type"]
    finally:
        assert server.stop() == 0, server.output()
    assert "Traceback" not in server.output(), server.output()


# --- bad requests -----------------------------------------------------------------------------

BAD_GETS = [
    ("/api/search?q=", 400),
    ("/api/search?q=%ff%fe", 400),  # not UTF-8: refused, not searched for as U+FFFD
    ("/api/items?under=%c3%28", 400),
    ("/api/search?" + urllib.parse.urlencode({"q": " + ".join(["a"] * 17)}), 400),  # 17 passes through CLIP
    ("/api/search?q=%20%20", 400),
    ("/api/search", 400),
    ("/api/search?q=cat&k=100000", 400),
    ("/api/search?q=cat&k=0", 400),
    ("/api/search?q=cat&k=-3", 400),
    ("/api/search?q=cat&k=ten", 400),
    ("/api/search?q=cat&k=1e9", 400),
    ("/api/search?q=" + "x" * 5000, 400),
    ("/api/search?q=cat&after=yesterday", 400),
    ("/api/search?q=cat&before=2024-13-45", 400),
    ("/api/search?q=cat&after=2024-02-30", 400),
    ("/api/search?q=cat&within=nan", 400),
    ("/api/search?q=cat&within=abc", 400),
    ("/api/search?q=cat&min_score=inf", 400),
    ("/api/search?q=cat&under=photos/a", 400),
    ("/api/search?q=cat&under=..%2F..", 400),
    ("/api/search?q=cat&after=2024-05-01&before=2024-01-01", 400),
    ("/api/search?q=cat+%2B+", 400),
    ("/api/search?q=inf%3Acat", 400),
    ("/api/search?like=999999", 404),
    ("/api/search?like=..%2Fetc", 400),
    ("/api/search?q=cat&like=abc", 400),
    ("/api/search?q=cat+-+cat", 400),
    # a misspelt or unsupported parameter is refused, never ignored (the answer would be to
    # another question): under/k spelt wrong, like= on similar, anything on thumbnails but size
    ("/api/search?q=cat&undr=%2Fphotos", 400),
    ("/api/search?q=cat&limit=5", 400),
    ("/api/similar/1?like=2", 400),
    ("/thumb/1?width=64", 400),
    ("/api/similar/999999", 404),
    ("/api/similar/abc", 400),
    ("/api/similar/-1", 400),
    ("/api/similar/1.5", 400),
    ("/api/similar/1e3", 400),
    ("/api/similar/99999999999999999999999", 400),
    ("/api/item/999999", 404),
    ("/api/item/0x10", 400),
    ("/thumb/999999", 404),
    ("/thumb/abc", 400),
    ("/thumb/%2e%2e", 400),
    ("/thumb/..", 400),
    ("/thumb/..%2F..%2Fetc%2Fpasswd", 404),
    ("/thumb/../../etc/passwd", 404),
    ("/thumb/%2Fetc%2Fpasswd", 404),
    ("/thumb/1?size=100000", 400),
    ("/thumb/1?size=0", 400),
    ("/thumb/1?size=big", 400),
    ("/image/999999", 404),
    ("/image/..%2Fetc", 404),
    ("/image/etc%00", 400),
    ("/static/../../../etc/passwd", 404),
    ("/static/..%2F..%2F..%2Fetc%2Fpasswd", 404),
    ("/static/nothing.js", 404),
    ("/static/", 404),
    ("/thumb/1?size=1025", 400),
    ("/thumb/1?size=31", 400),
    ("/thumb/1?square=2", 400),
    ("/thumb/1?square=yes", 400),
    ("/etc/passwd", 404),
    ("/api/nothing", 404),
]


@pytest.mark.parametrize(
    "flags,params,kwargs",
    [
        (["-k", "0"], {"k": "0"}, {"k": 0}),
        (["--nprobe", "0"], {"nprobe": "0"}, {"nprobe": 0}),
        (["--within", "-1"], {"within": "-1"}, {"within": -1.0}),
        (["--after", "yesterday"], {"after": "yesterday"}, {"after": "yesterday"}),
    ],
)
def test_a_bad_search_is_refused_in_the_same_words_by_the_cli_http_and_python(
    served, tiny_model, flags, params, kwargs
):
    """One SearchRequest checks every front end's search: the same refusal, word for word."""
    import semdb
    from semdb.errors import InputError

    server, store = served[:2]
    with semdb.open(store, readonly=True, model=tiny_model) as db, pytest.raises(InputError) as api:
        db.search("cat", **kwargs)
    status, _, body = server.get("/api/search?" + urllib.parse.urlencode({"q": "cat", **params}))
    assert status == 400 and json.loads(body)["error"] == str(api.value)
    cli = semdb_app("query", "cat", *flags, "--store", store, check=2)
    assert cli.stderr.strip() == f"error: {api.value}"


def _assert_json_error(status, headers, body, want):
    assert status == want, (status, body[:300])
    assert headers["content-type"].startswith("application/json"), headers
    err = json.loads(body)
    assert set(err) == {"error"} and isinstance(err["error"], str) and err["error"]
    assert "\n" not in err["error"] and "Traceback" not in err["error"], err
    assert b"root:" not in body


@pytest.mark.parametrize("target,want", BAD_GETS)
def test_bad_requests_get_a_one_line_json_error(served, target, want):
    _assert_json_error(*served[0].get(target), want)


def test_bad_uploads(served, tmp_path):
    server, _, photos, _ = served
    cases = [
        (b"this is not an image", {"Content-Type": "image/jpeg"}, 415),
        (*multipart("image", "notes.txt", b"hello, not a picture"), 415),
        ((photos / "a" / "coffee.jpg").read_bytes()[:300], {"Content-Type": "image/jpeg"}, 415),  # truncated
        (b"", {"Content-Type": "image/jpeg"}, 400),
        (b"--x\r\nnot really multipart", {"Content-Type": "multipart/form-data; boundary=x"}, 400),
        (*multipart("comment", "", b""), 400),
    ]
    for body, headers, want in cases:
        _assert_json_error(*server.request("POST", "/api/search", body=body, headers=headers), want)
    _assert_json_error(*server.request("POST", "/api/search?k=5000", body=b"x", headers={}), 400)
    # a huge upload is refused from its Content-Length, before it is read
    import http.client

    conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
    conn.putrequest("POST", "/api/search")
    conn.putheader("Content-Type", "image/jpeg")
    conn.putheader("Content-Length", str(10**10))
    conn.endheaders()
    resp = conn.getresponse()
    _assert_json_error(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read(), 413)
    conn.close()


def test_other_hosts_are_refused(served):
    """DNS rebinding: a page elsewhere cannot reach the loopback server under its own name."""
    server = served[0]
    _assert_json_error(*server.get("/api/info", headers={"Host": "evil.example:8765"}), 421)
    for host in ("localhost", f"127.0.0.1:{server.port}", f"localhost:{server.port}"):
        assert server.get("/api/info", headers={"Host": host})[0] == 200


def test_a_vanished_file_is_404(served):
    server, _, photos, items = served
    gone = items["c", "gone.jpg"]
    assert server.get(f"/thumb/{gone.id}")[0] == 200
    os.unlink(photos / "c" / "gone.jpg")
    for target in (f"/thumb/{gone.id}", f"/thumb/{gone.id}?size=64", f"/image/{gone.id}"):
        _assert_json_error(*server.get(target), 404)
    assert server.get_json(f"/api/item/{gone.id}")["id"] == gone.id  # still an item of the store


# --- a concurrent ingest -------------------------------------------------------------------------


def test_a_concurrent_ingest_is_seen(tmp_path, tiny_model):
    """A store that starts with 4 staged photos (no codec); while the server runs, another
    process ingests more and trains the codec: the server answers from the new state."""
    first, second = tmp_path / "first", tmp_path / "second"
    write_photos(first, n_generated=0)
    write_photos(second, n_generated=6, seed=3)
    for p in second.glob("*.jpg"):  # the same photos as first/: keep second/ to new pictures
        p.unlink()
    store = tmp_path / "store"
    assert _ingest(store, [first], tiny_model, train_now=False)["staged"] == 4
    server = Server(store)
    try:
        assert server.get_json("/api/info")["items"] == 4
        assert len(_hits(server, "/api/search?q=shapes&k=50")) == 4
        semdb_app("ingest", second, "--store", store, "--train-now", "--json")
        info = None
        for _ in range(50):  # bounded: the next request after the commit must see it
            info = server.get_json("/api/info")
            if info["items"] == 10:
                break
            time.sleep(0.1)
        assert info["items"] == 10 and info["compressed"] is True
        hits = _hits(server, "/api/search?q=shapes&k=50")
        assert len(hits) == 10 and sum(os.path.dirname(h["path"]) == str(second) for h in hits) == 6
        new = (second / "shapes_2.png").read_bytes()
        status, _, raw = server.request("POST", "/api/search?k=1", body=new, headers={"Content-Type": "image/png"})
        assert status == 200 and json.loads(raw)["hits"][0]["path"] == str(second / "shapes_2.png")
        new_id = json.loads(raw)["hits"][0]["id"]
        assert server.get(f"/thumb/{new_id}")[0] == 200
        similar = _hits(server, f"/api/similar/{new_id}?k=3")
        assert len(similar) == 3 and new_id not in [h["id"] for h in similar]  # itself left out
    finally:
        assert server.stop() == 0, server.output()


# --- semdb query through a running server -------------------------------------------------------


def test_semdb_query_uses_the_running_server(tmp_path, tiny_model_dir):
    """The store's model folder is removed once the server has loaded it: a query can then
    only be answered by the server; --no-server (and no server) fail to load the model."""
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    photos = write_photos(tmp_path / "photos", n_generated=2)
    store = tmp_path / "store"
    _ingest(store, [photos], "local-dir:" + str(model_dir), train_now=False)
    server = Server(store, "--host", "0.0.0.0")
    try:
        assert "access key: open http://" in server.wait_output("access key: open")
        server.headers = {"Authorization": "Bearer " + (store / "serve.key").read_text().strip()}
        beacon = json.loads((store / "serve.json").read_text())
        assert beacon["pid"] == server.proc.pid and beacon["port"] == server.port
        expected = server.get_json("/api/search?q=a+rocket&k=3")["hits"]
        shutil.rmtree(model_dir)
        out = semdb_app("query", "a rocket", "--store", store, "-k", "3", "--json").stdout
        assert [(h["path"], h["id"]) for h in json.loads(out)] == [(h["path"], h["id"]) for h in expected]
        out = semdb_app("query", "--image", photos / "rocket.jpg", "--store", store, "-k", "1", "--paths-only").stdout
        assert out.splitlines() == [str(photos / "rocket.jpg")]
        assert "rank" in semdb_app("query", "a rocket", "--store", store).stdout
        # steering goes through the server too, with the local meaning (--under from this cwd)
        want = server.get_json(
            "/api/search?"
            + urllib.parse.urlencode(
                {"q": "2:shapes - cat", "under": str(photos), "after": "2001-01-01", "within": 0.5, "k": 4}
            )
        )["hits"]
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "semdb.cli",
                "query",
                "2:shapes - cat",
                "--under",
                photos.name,
                "--after",
                "2001-01-01",
                "--within",
                "0.5",
                "-k",
                "4",
                "--store",
                store,
                "--json",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=cli_env(),
            timeout=300,
        )
        assert out.returncode == 0, out.stderr
        assert [h["id"] for h in json.loads(out.stdout)] == [h["id"] for h in want]
        like = semdb_app("query", "--like", str(expected[0]["id"]), "--store", store, "--json").stdout
        assert [h["id"] for h in json.loads(like)] == [
            h["id"] for h in server.get_json(f"/api/similar/{expected[0]['id']}")["hits"]
        ]
        semdb_app("query", "--like", "999999", "--store", store, check=2)
        # what a URL cannot say is searched locally: a term naming a file (which fails here,
        # without the model), --like by path (from the stored code: no model needed)
        semdb_app("query", f"cat + {photos / 'rocket.jpg'}", "--store", store, check=3)
        every = server.get_json("/api/search?q=x&k=100")["hits"]
        rocket = next(h["id"] for h in every if h["path"] == str(photos / "rocket.jpg"))
        by_path = semdb_app("query", "--like", photos / "rocket.jpg", "--store", store, "--json").stdout
        assert [h["id"] for h in json.loads(by_path)] == [
            h["id"] for h in server.get_json(f"/api/similar/{rocket}")["hits"]
        ]
        # the server's refusals are the CLI's: one line, exit 2 (7 for an undecodable image)
        bad = semdb_app("query", "  ", "--store", store, check=2)
        assert bad.stderr.count("\n") == 1 and "empty query" in bad.stderr
        semdb_app("query", "a rocket", "--store", store, "-k", "5000", check=2)
        (tmp_path / "bad.jpg").write_bytes(b"not an image")
        semdb_app("query", "--image", tmp_path / "bad.jpg", "--store", store, check=7)
        semdb_app("query", "a rocket", "--store", store, "--no-server", check=3)
    finally:
        assert server.stop() == 0, server.output()
    assert not (store / "serve.json").exists()
    semdb_app("query", "a rocket", "--store", store, check=3)  # no server: the local path


def test_semdb_query_ignores_a_stale_beacon(tmp_path, tiny_model):
    photos = write_photos(tmp_path / "photos", n_generated=2)
    store = tmp_path / "store"
    _ingest(store, [photos], tiny_model, train_now=False)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    local = semdb_cli("query", "a rocket", "--store", store, "--json", "--no-server").stdout
    for facts in (
        {"host": "127.0.0.1", "port": free, "pid": dead.pid, "instance": "x"},  # dead process
        {"host": "127.0.0.1", "port": free, "pid": os.getpid(), "instance": "x"},  # nobody listening
        "not json",
    ):
        (store / "serve.json").write_text(json.dumps(facts) if isinstance(facts, dict) else facts)
        assert semdb_cli("query", "a rocket", "--store", store, "--json").stdout == local


def test_serve_refuses_what_it_cannot_serve(tmp_path, tiny_model):
    store = tmp_path / "store"
    _ingest(store, [write_photos(tmp_path / "p", n_generated=1)], tiny_model, train_now=False)
    proc = semdb_cli("serve", "--store", store, "--host", "0.0.0.0", "--port", "0", "--tls-cert", __file__, check=2)
    assert "--tls-key" in proc.stderr and proc.stderr.count("\n") == 1
    semdb_cli("serve", "--store", tmp_path / "nothing", "--port", "0", check=4)
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = semdb_cli("serve", "--store", store, "--port", s.getsockname()[1], check=2)
        assert "in use" in busy.stderr


def test_a_request_goes_over_http_unchanged():
    """What `semdb query` sends a running server (serve/params.query_params) is parsed back by
    the server (search_request) into an equal SearchRequest; what a URL cannot say is None."""
    import datetime

    from semdb.search.request import SearchRequest
    from semdb.serve.params import query_params, search_request

    request = SearchRequest.of(
        "2:cat - dog",
        files=False,
        like=3,
        k=7,
        under="/photos/2023",
        after="2023-06-01",
        before=datetime.datetime(2023, 9, 1, 12, 30, 15, 250),
        within=0.1,
        min_score=0.2,
        nprobe=5,
    )
    assert search_request(query_params(request)) == request
    assert query_params(SearchRequest.of(vector=[1.0, 0.0])) is None
    assert query_params(SearchRequest.of("cat", like="/photos/x.jpg")) is None
    assert query_params(SearchRequest.of(f"cat + {__file__}")) is None  # a term naming a file of this machine
