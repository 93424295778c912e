"""Opening a store (semdb/store/opening.py): errors, damaged files, the writer lock, readers
beside a writer, map growth seen by readers."""

import json
import os
import random
import re
import shutil
from pathlib import Path

import lmdb
import pytest
from storekit import CB, code_for, new_item, run_py

from semdb.errors import StoreError, StoreLockedError
from semdb.store import SCHEMA_VERSION, Store, default_store_path


def test_open_errors(tmp_path):
    with pytest.raises(StoreError, match="run `semdb ingest` first"):
        Store(tmp_path / "missing", readonly=True)
    with pytest.raises(StoreError, match="run `semdb ingest` first"):
        Store(tmp_path / "missing")
    other = tmp_path / "photos"
    other.mkdir()
    (other / "a.jpg").write_bytes(b"x")
    for kw in ({"create": True}, {"readonly": True}):
        with pytest.raises(StoreError, match="is not a semdb store \\(no data.mdb\\); pass a new"):
            Store(other, **kw)
    assert sorted(p.name for p in other.iterdir()) == ["a.jpg"]  # nothing created there
    env = lmdb.open(str(tmp_path / "foreign"))
    with env.begin(write=True) as txn:
        txn.put(b"k", b"v")
    env.close()
    with pytest.raises(StoreError, match="not a semdb store"):
        Store(tmp_path / "foreign")
    (tmp_path / "empty").mkdir()
    with Store(tmp_path / "empty", create=True) as s:
        assert s.count() == 0 and s.meta()["schema"] == SCHEMA_VERSION
    with Store(tmp_path / "empty", readonly=True) as s:
        with pytest.raises(StoreError, match="read-only"):
            s.write()


def test_newer_schema_is_refused(path, store):
    with store.write() as w:
        w.add_item(new_item("/a.jpg"), code=code_for(1))
    env, db = store.lmdb.env, store.lmdb.dbs["meta"]
    with env.begin(write=True) as txn:
        txn.put(b"schema", json.dumps(SCHEMA_VERSION + 1).encode(), db=db)
    store.close()
    for kw in ({}, {"readonly": True}):
        with pytest.raises(
            StoreError,
            match=f"made by a newer semdb \\(schema {SCHEMA_VERSION + 1} > {SCHEMA_VERSION}\\); upgrade semdb",
        ):
            Store(path, **kw)


def _filled_store(path, batches=4, per=200):
    with Store(path, create=True) as s:
        with s.write() as w:
            w.set_codec(b"codec", "c", CB)
        for b in range(batches):
            with s.write() as w:
                for i in range(per):
                    w.add_item(new_item(f"/dir{b}/img{i:04d}.jpg"), code=code_for(b * per + i))
    return (path / "data.mdb").read_bytes()


def _corrupt_copy(src: Path, dst: Path, offset: int, patch: bytes) -> Path:
    shutil.copytree(src, dst)
    with open(dst / "data.mdb", "r+b") as f:
        f.seek(offset)
        f.write(patch)
    return dst


def test_corrupt_header_is_a_store_error(tmp_path):
    _filled_store(tmp_path / "good")
    for i, offset in enumerate((0, 4096)):  # both meta pages
        bad = _corrupt_copy(tmp_path / "good", tmp_path / f"bad{i}", offset, os.urandom(4096))
        for kw in ({}, {"readonly": True}):
            with pytest.raises(StoreError, match="corrupt") as e:
                Store(bad, **kw)
            assert "\n" not in str(e.value)


def test_corrupt_code_bytes_are_caught_by_the_segment_checksum(tmp_path):
    data = _filled_store(tmp_path / "good")
    # copy-on-write leaves stale copies of the segment's page in free pages: damage them all
    offsets = [m.start() for m in re.finditer(re.escape(code_for(123)), data)]
    assert offsets
    bad = _corrupt_copy(tmp_path / "good", tmp_path / "bad", offsets[0], bytes(CB))
    for offset in offsets[1:]:
        with open(bad / "data.mdb", "r+b") as f:
            f.seek(offset)
            f.write(bytes(CB))
    with Store(bad, readonly=True) as s:
        assert s.count() == 800  # metadata still reads
        with pytest.raises(StoreError, match="corrupt .*checksum"):
            s.load_codes()
    with Store(bad) as s:
        assert any("checksum" in p for p in s.verify())


PROBE = """
    import sys
    from semdb.store import Store
    from semdb.errors import StoreError
    try:
        with Store(sys.argv[1], readonly=sys.argv[2] == "ro") as s:
            if sys.argv[2] == "ro":
                s.load_codes(); list(s.iter_items()); [s.item_by_path(f"/dir1/img{i:04d}.jpg") for i in range(200)]
                print("read ok")
            else:
                print("problems", len(s.verify()))
    except StoreError as e:
        print("StoreError", e)
"""


@pytest.mark.parametrize("fill", [b"\xff", b"\x00", None])
def test_corrupt_pages_in_the_middle_are_reported_not_crashed_on(tmp_path, fill):
    data = _filled_store(tmp_path / "good")
    # the first page of the live item segment (compressed: found by its stored bytes; older
    # copies of it left in free pages hold fewer items, so another header)
    with Store(tmp_path / "good", readonly=True) as s, s.lmdb.env.begin() as txn:
        live = bytes(next(iter(txn.cursor(db=s.lmdb.dbs["itemsegs"])))[1])
    page = data.find(live[:64]) // 4096 * 4096
    assert page >= 2 * 4096
    patch = fill * 4096 if fill else random.Random(1).randbytes(4096)
    bad = _corrupt_copy(tmp_path / "good", tmp_path / "bad", page, patch)
    # A writable open verifies the pages first (LMDB may abort() on some damaged pages, so
    # the probe runs in its own process): damage is reported as problems.
    out = run_py(PROBE, bad, "rw").communicate(timeout=60)
    assert out[0].startswith(("problems", "StoreError")), out
    assert not out[0].startswith("problems 0"), out
    if fill != b"\x00":  # a page of zeros trips an assertion inside LMDB when read through it
        out = run_py(PROBE, bad, "ro").communicate(timeout=60)
        assert out[0].startswith("StoreError") and "corrupt" in out[0], out


def test_default_store_path(monkeypatch, tmp_path):
    monkeypatch.setenv("SEMDB_STORE", str(tmp_path / "x"))
    assert default_store_path() == tmp_path / "x"
    monkeypatch.delenv("SEMDB_STORE")
    p = default_store_path()
    assert p.name == "store" and "semdb" in str(p.parent)


HOLDER = """
    import sys
    from semdb.store import Store
    s = Store(sys.argv[1], create=True)
    print("locked", flush=True)
    sys.stdin.read() if sys.argv[2] == "stdin" else __import__("time").sleep(float(sys.argv[2]))
    s.close()
"""


def test_second_writer_process_is_refused_while_readers_proceed(path, store):
    with store.write() as w:
        w.add_item(new_item("/a.jpg"), code=code_for(1))
    store.close()
    holder = run_py(HOLDER, path, "stdin")
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(
            StoreLockedError,
            match=f"being written by another semdb process \\(pid {holder.pid}\\); wait for it or stop it",
        ):
            Store(path)
        with Store(path, readonly=True) as r:  # readers take no writer lock
            assert r.count() == 1
    finally:
        holder.communicate("", timeout=30)
    with Store(path) as s:
        assert s.count() == 1


def test_wait_true_blocks_until_the_writer_leaves(path, store):
    import threading

    store.close()
    holder = run_py(HOLDER, path, "stdin")
    assert holder.stdout.readline().strip() == "locked"
    opened = []
    waiter = threading.Thread(target=lambda: opened.append(Store(path, wait=True)), daemon=True)
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive() and not opened  # still waiting: the holder has the lock
    holder.communicate("", timeout=30)  # the holder closes its store and exits
    waiter.join(30)
    assert len(opened) == 1 and opened[0].count() == 0
    opened[0].close()


def test_same_process_second_writer_is_refused(path, store):
    with pytest.raises(StoreLockedError, match=f"pid {os.getpid()}"):
        Store(path)


READER = """
    import sys
    from semdb.store import Store
    s = Store(sys.argv[1], readonly=True, map_size=1 << 18)  # a map the file outgrows
    print("open", flush=True)
    for line in sys.stdin:
        print(s.count(), len(s.load_codes()[0]), flush=True)
"""


def test_readers_see_last_commit_while_a_write_is_open(path):
    store = Store(path, create=True)
    with store.write() as w:
        w.set_codec(b"codec", "c", CB)
        for i in range(10):
            w.add_item(new_item(f"/{i}.jpg"), code=code_for(i))
    reader = run_py(READER, path)
    local = Store(path, readonly=True)  # shares this process's environment
    try:
        assert reader.stdout.readline().strip() == "open"
        with store.write() as w:
            for i in range(10, 20):
                w.add_item(new_item(f"/{i}.jpg"), code=code_for(i))
            # write txn still open: both readers see the last committed state, without blocking
            reader.stdin.write("?\n")
            reader.stdin.flush()
            assert reader.stdout.readline().split() == ["10", "10"]
            assert local.count() == 10 and len(local.load_codes()[0]) == 10
        assert local.count() == 20 and len(local.load_codes()[0]) == 20
        reader.stdin.write("?\n")
        reader.stdin.flush()
        assert reader.stdout.readline().split() == ["20", "20"]
        # grow the file far beyond the reader's map: it adopts the writer's map and goes on
        with store.write() as w:
            for i in range(20, 20_000):
                w.add_item(new_item(f"/{i}.jpg"), code=code_for(i))
        assert (path / "data.mdb").stat().st_size > 1 << 18
        reader.stdin.write("?\n")
        reader.stdin.flush()
        assert reader.stdout.readline().split() == ["20000", "20000"]
    finally:
        local.close()
        store.close()
        out = reader.communicate("", timeout=60)
        assert reader.returncode == 0, out


def test_readonly_store_opened_first_is_upgraded_for_a_writer(path, store):
    store.close()
    r = Store(path, readonly=True)
    with Store(path) as w_store:
        with w_store.write() as w:
            w.add_item(new_item("/a.jpg"), code=code_for(1))
        assert r.count() == 1
    assert r.count() == 1
    r.close()
