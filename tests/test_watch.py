"""The folder watcher (semdb/watch.py) on real folders: inotify events through watchfiles, the
ingest pipeline, the store; `semdb watch` as a process, killed with SIGKILL and restarted."""

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from kit import SEMDB, cli_env, write_photos

import semdb
from semdb.watch import Watcher, WatchOptions

FAST = WatchOptions(rescan=0, settle=0.3, debounce_ms=100)
WAIT = 90  # seconds: bounded waits on a busy 2-core machine


def eventually(check, what: str, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.2)


def stored(store) -> dict:
    """{path: item} of the store as another process sees it (read-only, fresh each time)."""
    with semdb.open(store, readonly=True) as db:
        return {it.path: it for it in db.store.iter_items()}


@pytest.fixture()
def watching(tmp_path, tiny_model):
    """A Watcher on tmp/photos (empty) into tmp/store, running in a thread; stopped at the end."""
    folder = tmp_path / "photos"
    folder.mkdir()
    watcher = Watcher(tmp_path / "store", [folder], FAST, model=tiny_model)
    watcher.open()
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    thread.start()
    yield watcher, folder, tmp_path / "store"
    stop.set()
    thread.join(60)
    watcher.close()
    assert not thread.is_alive()
    assert watcher.status.state == "stopped"


def test_copied_photos_become_searchable_and_deleted_or_moved_ones_follow(watching, tmp_path):
    watcher, folder, store = watching
    source = write_photos(tmp_path / "card", n_generated=4)
    shutil.copytree(source, folder / "card")  # a camera card copied in: a new folder and its files
    want = {str(folder / "card" / p.name) for p in source.iterdir()}
    eventually(lambda: set(stored(store)) == want, "the 8 copied photos stored")
    with semdb.open(store, readonly=True) as db:
        hits = db.search("a photo", k=20)
        assert {h.path for h in hits} == want  # searchable, each of them
    assert watcher.status.added == 8 and watcher.status.failed == 0

    before = stored(store)
    (folder / "card" / "coffee.jpg").unlink()
    (folder / "card" / "chelsea.jpg").rename(folder / "cat.jpg")
    after = eventually(
        lambda: (
            (s := stored(store)) and str(folder / "cat.jpg") in s and str(folder / "card" / "coffee.jpg") not in s and s
        ),
        "the deleted photo pruned, the moved one under its new path",
    )
    assert after[str(folder / "cat.jpg")].id == before[str(folder / "card" / "chelsea.jpg")].id  # moved: same item
    assert str(folder / "card" / "chelsea.jpg") not in after and len(after) == 7
    shutil.rmtree(folder / "card")  # a whole folder deleted
    eventually(lambda: set(stored(store)) == {str(folder / "cat.jpg")}, "the deleted folder's items removed")
    with semdb.open(store, readonly=True) as db:
        assert db.store.verify() == []


def test_a_file_still_being_written_is_read_once_complete(tmp_path, tiny_model):
    folder = tmp_path / "photos"
    folder.mkdir()
    data = (write_photos(tmp_path / "src", n_generated=0) / "astronaut.jpg").read_bytes()
    watcher = Watcher(
        tmp_path / "store", [folder], WatchOptions(rescan=0, settle=3.0, debounce_ms=100), model=tiny_model
    )
    watcher.open()
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    thread.start()
    try:
        eventually(lambda: watcher.status.rescans == 1, "the start's rescan")
        with open(folder / "slow.jpg", "wb") as f:  # half, a pause (a slow copy), the rest
            f.write(data[: len(data) // 2])
            f.flush()
            time.sleep(1.6)  # longer than the watcher's tick, shorter than settle
            f.write(data[len(data) // 2 :])
        items = eventually(lambda: stored(tmp_path / "store"), "the photo stored")
        assert items[str(folder / "slow.jpg")].size == len(data)
        assert watcher.status.failed == 0  # never read half written
    finally:
        stop.set()
        thread.join(60)
        watcher.close()


def _created(store) -> bool:
    from semdb.errors import StoreError

    try:  # (a store being created is not one yet)
        return (store / "data.mdb").exists() and stored(store) == {}
    except StoreError:
        return False


def _watch_process(folder, store, model, *extra):
    return subprocess.Popen(
        [SEMDB, "watch", str(folder), "--store", str(store), "--model", model, "--settle", "0.2", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=cli_env(),
    )


def test_killed_mid_batch_it_catches_up_at_the_next_start(tmp_path, tiny_model):
    folder, store = tmp_path / "photos", tmp_path / "store"
    folder.mkdir()
    source = write_photos(tmp_path / "src", n_generated=120)
    proc = _watch_process(folder, store, tiny_model, "--batch-size", "1")  # a commit per photo
    try:
        eventually(lambda: _created(store), "the store created")
        time.sleep(2)  # (watching by then: the start's rescan runs within a second of it)
        for f in sorted(source.iterdir()):
            shutil.copy(f, folder / f.name)
        eventually(lambda: len(stored(store)) >= 3, "some photos committed", timeout=WAIT)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert len(stored(store)) < 124, "every photo was committed before the kill: no mid-batch kill tested"

    proc = _watch_process(folder, store, tiny_model)  # no event for what it missed: the start's rescan
    try:
        eventually(lambda: len(stored(store)) == 124, "the restart caught up")
    finally:
        proc.send_signal(signal.SIGTERM)  # stops cleanly, saying so
        out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, out
    assert "stopped:" in out
    assert set(stored(store)) == {str(folder / f.name) for f in source.iterdir()}
    with semdb.open(store, readonly=True) as db:
        assert db.store.verify() == []


def test_a_missing_or_empty_folder_keeps_its_items(tmp_path, tiny_model):
    """An unmounted disk looks like an empty folder: the rescan keeps its items."""
    folder, store = tmp_path / "photos", tmp_path / "store"
    write_photos(folder, n_generated=0)
    with semdb.open(store, model=tiny_model) as db:
        db.ingest([folder])
    for f in list(folder.iterdir()):
        f.unlink()  # (no watcher ran: no events)
    said = []
    watcher = Watcher(store, [folder], FAST, model=tiny_model, say=said.append)
    watcher.open()
    try:
        watcher.rescan(threading.Event())
    finally:
        watcher.close()
    assert len(stored(store)) == 4
    assert any("missing or empty" in line for line in said), said


def test_refuses_what_it_cannot_watch(tmp_path):
    from semdb.errors import InputError

    (tmp_path / "a.jpg").write_bytes(b"x")
    with pytest.raises(InputError, match="not a folder"):
        Watcher(tmp_path / "store", [tmp_path / "a.jpg"])
    with pytest.raises(InputError, match="not a folder"):
        Watcher(tmp_path / "store", [tmp_path / "nowhere"])
    assert not (tmp_path / "store").exists()
    assert os.path.exists(Path(tmp_path / "a.jpg"))


def test_waits_while_another_process_writes_the_store(tmp_path, tiny_model):
    folder, store = tmp_path / "photos", tmp_path / "store"
    source = write_photos(tmp_path / "src", n_generated=0)
    with semdb.open(store, model=tiny_model) as db:
        db.ingest([source])
    folder.mkdir()
    watcher = Watcher(store, [folder], FAST, model=tiny_model)
    watcher.open()
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    writer = semdb.open(store, model=tiny_model)  # an ingest elsewhere holds the writer lock
    try:
        thread.start()
        shutil.copy(source / "rocket.jpg", folder / "rocket.jpg")
        eventually(lambda: watcher.status.state == "waiting", "the watcher waiting for the writer")
        time.sleep(1)
        assert str(folder / "rocket.jpg") not in stored(store)
    finally:
        writer.close()
    eventually(lambda: str(folder / "rocket.jpg") in stored(store), "the photo stored once the writer is done")
    stop.set()
    thread.join(60)
    watcher.close()
