"""Hostile inputs end to end: malformed files in the collection, odd file names, damaged or
foreign stores, bad queries, through the installed `semdb` command (and the API). Each gives a
clear one-line error with a documented exit code or a listed 'failed' file, and leaves the
store as it was. The per-module unit tests (test_images.py, test_store.py, test_embed.py) prove
the same cases one function at a time; docs/notes/RELIABILITY.md maps each case to its tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from kit import SEMDB, cli_env, semdb_app, semdb_cli
from PIL import Image

from semdb.images import display_path

# The tests run as root, for whom chmod 000 does not stop reads: this prefix runs a command
# without the capabilities that override file permissions (CAP_DAC_*), so it does.
DROP_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]


def cmd(*args, prefix=()):
    return [*prefix, SEMDB, *map(os.fsencode, map(str, args))]


def run(*args, prefix=(), check=None, timeout=300):
    return semdb_cli(*args, prefix=prefix, check=check, text=False, timeout=timeout)


def run_here(*args):
    """`run` in this process (kit.semdb_app): bad arguments and folders that are not stores. Damaged
    stores are opened by `run`, in a real process, which a crash in LMDB would not take pytest with."""
    return semdb_app(*args, check=None, text=False)


def reasons(failures) -> dict[str, str]:
    """{path: reason} of an ingest summary's failures, each reason as `plain_reason` puts it."""
    return {f["path"]: plain_reason(f["reason"]) for f in failures}


def plain_reason(reason: str) -> str:
    """A bomb's size reads "W x H (N MP)" or "N MP" depending on whether Pillow's own guard
    (process-global, lowered or lifted by earlier calls in this process) or semdb's header check
    refused it first: keep "N MP". A truncated file's reason quotes Pillow, whose byte count is
    its own: "(N bytes not processed)" left out."""
    return re.sub(r" \(\d+ bytes not processed\)", "", re.sub(r"\d+x\d+ \((\d+ MP)\)", r"\1", reason))


def one_line_error(proc, code: int, *fragments: str) -> str:
    """The command exited `code` with exactly one stderr line holding every fragment."""
    text = proc.stderr.decode("utf-8")  # must be valid UTF-8 even for non-UTF-8 file names
    assert proc.returncode == code, (proc.returncode, text)
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    assert "Traceback" not in text
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# ----------------------------------------------------------------------------------------------
# a collection with every kind of hostile file


def jpeg_bomb(path: Path, size: int = 60_000) -> None:
    """A real 16x16 JPEG whose frame header (SOF0) claims size x size pixels."""
    Image.new("RGB", (16, 16), (9, 9, 9)).save(path, quality=80)
    data = bytearray(path.read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = size.to_bytes(2, "big") * 2  # height, width
    path.write_bytes(bytes(data))


def hostile_folder(folder: Path, unreadable: bool) -> tuple[set[str], dict[str, str]]:
    """Write the collection; returns (paths that must be stored, {display path: reason}).
    (Pillow itself refuses both bombs from the header, above twice our limit; test_images.py
    shows an image between our limit and Pillow's refused by our own header check.)"""
    from kit import png_bytes, write_photos

    write_photos(folder, n_generated=0)  # 4 real photos
    good = {str(folder / n) for n in ("astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg")}
    fail = {}

    def ok(name, img: Image.Image, **save):
        path = folder / name if isinstance(name, str) else Path(os.fsdecode(os.fsencode(folder) + b"/" + name))
        path.parent.mkdir(exist_ok=True)
        img.save(path, **save)
        good.add(os.fsdecode(path))

    def bad(name, data: bytes, reason: str):
        path = folder / name if isinstance(name, str) else Path(os.fsdecode(os.fsencode(folder) + b"/" + name))
        path.write_bytes(data)
        fail[display_path(path)] = reason

    frames = [Image.new("RGB", (24, 24), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    ok("animated.gif", frames[0], save_all=True, append_images=frames[1:], duration=50, loop=0)
    ok("cmyk.jpg", Image.new("CMYK", (40, 30), (0, 120, 255, 10)))
    ok("gray16.png", Image.fromarray((np.arange(48 * 32, dtype=np.uint16) * 40).reshape(32, 48)))
    ok("one pixel.png", Image.new("RGB", (1, 1), (200, 10, 10)))
    ok(b"caf\xe9 \xff latin-1.png", Image.new("RGB", (20, 20), (1, 2, 3)))  # not UTF-8
    ok("two\nlines.jpg", Image.new("RGB", (20, 20), (40, 50, 60)))
    ok("[red]tag.png", Image.new("RGB", (20, 20), (70, 80, 90)))  # rich markup in a name
    ok("[/x] close.png", Image.new("RGB", (20, 20), (100, 110, 120)))  # a folder "[", a file "x] ..."

    chelsea = (folder / "chelsea.jpg").read_bytes()
    bad("truncated.jpg", chelsea[: len(chelsea) // 3], "truncated or corrupt image: image file is truncated")
    bad("empty.jpg", b"", "empty file")
    bad("empty copy.jpg", b"", "empty file")  # byte-identical to a failing file
    bad("notes.jpg", b"shopping list\n", "not an image or unsupported format")
    bad("notes copy.jpg", b"shopping list\n", "not an image or unsupported format")
    bad(b"junk \xfe.jpg", b"junk", "not an image or unsupported format")
    bad("bad\nline.jpg", b"junk\n", "not an image or unsupported format")
    # markup in a failure line
    bad("[/x] broken.jpg", chelsea[: len(chelsea) // 2], "truncated or corrupt image: image file is truncated")
    bad("bomb.png", png_bytes(40_000, 40_000), "image is 1600 MP, over the 100 MP limit (--max-megapixels)")
    jpeg_bomb(folder / "bomb.jpg")
    fail[display_path(folder / "bomb.jpg")] = "image is 3600 MP, over the 100 MP limit (--max-megapixels)"

    locked = folder / "locked.jpg"
    Image.new("RGB", (20, 20), (5, 5, 5)).save(locked)
    locked.chmod(0)
    if unreadable:
        fail[display_path(locked)] = "permission denied"
    else:
        good.add(str(locked))

    os.symlink(".", folder / "loop")  # a directory symlink loop
    os.symlink("self.jpg", folder / "self.jpg")  # a file symlink loop: skipped, as broken links are
    os.symlink("nowhere.jpg", folder / "dangling.jpg")
    return good, fail


def unreadable_prefix(tmp_path) -> tuple[tuple, bool]:
    """(command prefix, whether chmod 000 then stops semdb reading a file)."""
    probe = tmp_path / "probe"
    probe.write_bytes(b"x")
    probe.chmod(0)
    if not os.access(probe, os.R_OK):  # not root
        return (), True
    try:
        if subprocess.run([*DROP_DAC, "test", "-r", str(probe)], capture_output=True).returncode == 1:
            return tuple(DROP_DAC), True
    except OSError:  # no setpriv: the chmod 000 file is then simply stored
        pass
    return (), False


def stored_paths(store) -> dict[str, int]:
    from semdb.store import Store

    with Store(store) as s:
        assert s.verify() == []
        return {it.path: it.id for it in s.iter_items()}


def test_hostile_collection_through_the_api(tmp_path, tiny_model):
    """The fast version: every hostile file is stored or listed as failed with its reason."""
    import semdb

    good, fail = hostile_folder(tmp_path / "photos", unreadable=os.geteuid() != 0)  # root reads chmod 000
    with semdb.open(tmp_path / "s", model=tiny_model) as db:
        s = db.ingest([tmp_path / "photos"], train_now=True)
        assert reasons(s["failures"]) == fail
        assert (s["failed"], s["items"]) == (len(fail), len(good))
        assert {it.path for it in db.store.iter_items()} == good and db.store.verify() == []
        assert len(db.search("x" * 10_000, k=50)) == len(good)
        again = db.ingest([tmp_path / "photos"], train_now=True)
        unopened = {p: r for p, r in fail.items() if r == "permission denied"}  # not decoded: not remembered
        assert (again["unchanged"], again["items"], again["failed_before"]) == (
            len(good),
            len(good),
            len(fail) - len(unopened),
        )
        assert reasons(again["failures"]) == unopened
        again = db.ingest([tmp_path / "photos"], train_now=True, retry_failed=True)
        assert reasons(again["failures"]) == fail and again["failed_before"] == 0


@pytest.mark.slow
def test_hostile_collection_through_the_console_script(tmp_path, tiny_model):
    """`semdb ingest` (run without the root capabilities that ignore chmod 000) lists every bad
    file on its own line and stores the rest; then, concurrently: `ingest --json` lists the same
    failures, `query --json` / `--paths-only` / the table show every odd name without crashing,
    a 10,000-character query works, an undecodable query image exits 7, another model exits 4.
    The store is unchanged by all of it."""
    from semdb.testing import write_tiny_model

    prefix, unreadable = unreadable_prefix(tmp_path)
    photos, store = tmp_path / "photos", tmp_path / "store"
    good, fail = hostile_folder(photos, unreadable=unreadable)

    first = run("ingest", "--train-now", photos, "--store", store, "--model", tiny_model, prefix=prefix, check=0)
    err = first.stderr.decode("utf-8")
    assert "Traceback" not in err
    listed = {plain_reason(line[len("failed: ") :]) for line in err.splitlines() if line.startswith("failed: ")}
    assert listed == {f"{path}: {reason}" for path, reason in fail.items()}
    assert re.search(rf"│ failed +│ {len(fail)} ", first.stdout.decode())
    before = stored_paths(store)
    assert set(before) == good

    other = "local-dir:" + write_tiny_model(tmp_path / "other_model", seed=1)
    jobs = {
        "json": cmd(
            "ingest", "--train-now", photos, "--store", store, "--json", "--wait", "--retry-failed", prefix=prefix
        ),
        "query_json": cmd("query", "a photo", "-k", 50, "--store", store, "--json"),
        "paths_only": cmd("query", "a photo", "-k", 50, "--store", store, "--paths-only"),
        "table": cmd("query", "x" * 10_000, "-k", 50, "--store", store),
        "bad_image": cmd("query", "--image", photos / "notes.jpg", "--store", store),
        "other_model": cmd(
            "ingest", "--train-now", photos, "--store", store, "--model", other, "--wait"
        ),  # the 2 writers queue
    }
    procs = {
        k: subprocess.Popen(c, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE) for k, c in jobs.items()
    }
    out = {}
    for k, p in procs.items():
        stdout, stderr = p.communicate(timeout=600)
        out[k] = subprocess.CompletedProcess(jobs[k], p.returncode, stdout, stderr)

    assert out["json"].returncode == 0, out["json"].stderr
    summary = json.loads(out["json"].stdout)
    assert reasons(summary["failures"]) == fail
    assert (summary["unchanged"], summary["failed"], summary["new"]) == (len(good), len(fail), 0)

    assert out["query_json"].returncode == 0, out["query_json"].stderr
    hits = json.loads(out["query_json"].stdout)  # non-UTF-8 names come back as Python's fsdecode form
    assert {h["path"] for h in hits} == good and {h["id"] for h in hits} == set(before.values())

    assert out["paths_only"].returncode == 0, out["paths_only"].stderr
    lines = out["paths_only"].stdout.splitlines()  # one line per hit: the name's bytes (escaped if it holds a newline)
    assert sorted(lines) == sorted(display_path(p).encode() if "\n" in p else os.fsencode(p) for p in good)

    table = out["table"].stdout.decode("utf-8")
    assert out["table"].returncode == 0, out["table"].stderr
    for name in ("[red]tag.png", "[/x] close.png", "two\\nlines.jpg", "caf\\xe9 \\xff latin-1.png"):
        assert name in table

    one_line_error(out["bad_image"], 7, "notes.jpg: not an image or unsupported format")
    one_line_error(out["other_model"], 4, "was built with CLIP model", "--model")

    assert stored_paths(store) == before


def test_files_that_vanish_or_turn_unreadable_during_an_ingest_are_listed(photos, tmp_path, tiny_model, monkeypatch):
    """A file deleted after discovery (before hashing, or between hashing and decoding) and a
    file that cannot be read are listed as failed; the rest of the ingest goes on."""
    import semdb
    import semdb.ingest.decode
    import semdb.ingest.local
    from semdb.errors import ImageError

    real_hash, real_load = semdb.ingest.local.content_hash, semdb.ingest.decode.load_image

    def content_hash(path):
        if os.path.basename(path) == "rocket.jpg":
            os.unlink(path)
        if os.path.basename(path) == "coffee.jpg":  # what content_hash raises on EACCES (root is never denied)
            raise ImageError(path, "permission denied")
        return real_hash(path)

    def load_image(path, **kw):
        if os.path.basename(path) == "shapes_2.png":
            os.unlink(path)
        return real_load(path, **kw)

    monkeypatch.setattr(semdb.ingest.local, "content_hash", content_hash)
    monkeypatch.setattr(semdb.ingest.decode, "load_image", load_image)
    with semdb.open(tmp_path / "s", model=tiny_model) as db:
        s = db.ingest([photos], train_now=True)
        assert {(Path(f["path"]).name, f["reason"]) for f in s["failures"]} == {
            ("rocket.jpg", "file not found"),
            ("coffee.jpg", "permission denied"),
            ("shapes_2.png", "file not found"),
        }
        assert s["items"] == 9 and db.store.verify() == []


def test_bad_queries_exit_2_with_one_line(tmp_path, tiny_model, photos):
    """Argument errors are caught before the model loads (each of these takes well under 2s)."""
    import semdb

    with semdb.open(tmp_path / "s", model=tiny_model) as db:
        db.ingest([photos / "chelsea.jpg", photos / "coffee.jpg"], train_now=True)
    store = tmp_path / "s"
    before = stored_paths(store)
    one_line_error(run_here("query", "", "--store", store), 2, "empty query text")
    one_line_error(run_here("query", " \t ", "--store", store), 2, "empty query text")
    one_line_error(
        run_here("query", "--image", tmp_path / "no\nsuch.jpg", "--store", store),
        2,
        "no\\nsuch.jpg: query image not found",
    )
    one_line_error(
        run_here("query", "--image", tmp_path / "[/x].jpg", "--store", store), 2, "[/x].jpg: query image not found"
    )
    one_line_error(
        run_here("query", "a", "--image", photos / "chelsea.jpg", "--store", store), 2, "exactly one of TEXT or --image"
    )
    one_line_error(
        run_here("ingest", "--train-now", tmp_path / "missing", "--store", store),
        2,
        "missing: no such file or directory",
    )
    proc = run_here("query", "a cat", "-k", 0, "--store", store)
    assert proc.returncode == 2 and b"Traceback" not in proc.stderr  # click's own usage error
    assert stored_paths(store) == before


# ----------------------------------------------------------------------------------------------
# stores that are not stores, damaged stores, foreign stores


@pytest.fixture(scope="module")
def good_store(tmp_path_factory, tiny_model):
    from kit import write_photos

    import semdb

    root = tmp_path_factory.mktemp("good")
    photos = write_photos(root / "photos")
    with semdb.open(root / "store", model=tiny_model) as db:
        db.ingest([photos], train_now=True)
    return root / "store", photos


def damaged(good_store, tmp_path, how) -> Path:
    store, photos = good_store
    bad = tmp_path / "bad"
    shutil.copytree(store, bad)
    data = bad / "data.mdb"
    raw = bytearray(data.read_bytes())
    if how == "meta pages":
        raw[:8192] = random.Random(0).randbytes(8192)
    elif how == "truncated":
        raw = raw[:5000]
    elif how == "item pages":  # the first page of every item segment (compressed: found by its bytes)
        import lmdb

        env = lmdb.open(str(bad), readonly=True, lock=False, max_dbs=10)
        with env.begin() as txn:
            segs = [bytes(v) for _, v in txn.cursor(db=env.open_db(b"itemsegs", txn=txn, create=False))]
        env.close()
        pages = {bytes(raw).index(seg[:64]) // 4096 for seg in segs}
        assert pages
        for p in pages:
            raw[p * 4096 : (p + 1) * 4096] = random.Random(p).randbytes(4096)
    elif how == "codec bytes":  # a stretch inside the codec's weights
        import lmdb

        env = lmdb.open(str(bad), readonly=True, lock=False, max_dbs=10)
        with env.begin() as txn:
            codec = bytes(txn.get(b"codec", db=env.open_db(b"codec", txn=txn, create=False)))
        env.close()
        at = bytes(raw).index(codec[-256:])
        raw[at : at + 64] = bytes(b ^ 0x5A for b in raw[at : at + 64])
    elif how == "newer schema":
        import lmdb

        env = lmdb.open(str(bad), max_dbs=10)
        with env.begin(write=True) as txn:
            txn.put(b"schema", b"99", db=env.open_db(b"meta", txn=txn, create=False))
        env.close()
        return bad
    data.write_bytes(bytes(raw))
    return bad


def digest(store: Path) -> str:
    return hashlib.sha256((store / "data.mdb").read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "how,fragments",
    [
        ("meta pages", ["is corrupt", "restore it from a backup"]),
        ("truncated", ["is corrupt", "restore it from a backup"]),
        ("item pages", ["is corrupt", "restore it from a backup"]),
        ("codec bytes", ["is corrupt (its codec", "restore it from a backup"]),
        ("newer schema", ["was made by a newer semdb (schema 99 > 2); upgrade semdb"]),
    ],
)
def test_damaged_or_newer_store_exits_4_and_is_left_as_it_was(good_store, tmp_path, how, fragments):
    """`semdb ingest` (no --model: the store's own model, loaded only if a file needs it) and
    `semdb info` on a damaged store: one line, exit 4, and not a byte of data.mdb changed."""
    bad = damaged(good_store, tmp_path, how)
    photos = good_store[1]
    before = digest(bad)
    one_line_error(run("ingest", "--train-now", photos, "--store", bad), 4, *fragments)
    if how != "item pages":  # info reads meta, codec and codes, not item records
        one_line_error(run("info", "--store", bad), 4, *fragments)
    assert digest(bad) == before


def test_not_a_store_exits_4_and_creates_nothing(good_store, tmp_path):
    import lmdb

    photos = good_store[1]
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    afile = tmp_path / "afile"
    afile.write_text("x")
    foreign = tmp_path / "foreign"
    env = lmdb.open(str(foreign))
    with env.begin(write=True) as txn:
        txn.put(b"k", b"v")
    env.close()
    for store, fragment in (
        (folder, "is not a semdb store (no data.mdb)"),
        (afile, "is a file, not a semdb store"),
        (foreign, "is not a semdb store (an LMDB environment without semdb meta)"),
    ):
        one_line_error(run_here("ingest", "--train-now", photos, "--store", store), 4, fragment)
        for args in (("info",), ("query", "a cat")):  # read-only commands say the same, not "run ingest"
            one_line_error(run_here(*args, "--store", store), 4, fragment)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    assert afile.read_text() == "x"
