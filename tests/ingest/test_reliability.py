"""Reliability under faults: kill -9 at every ingest stage, a full LMDB map, readers during
writes, two writers at once. docs/notes/RELIABILITY.md maps each fault to the test that proves it.

Kill points are deterministic: semdb calls ``semdb.faults.fault_point(NAME)`` at its stage
boundaries, and SEMDB_FAULT_POINT=NAME:N makes the N-th call SIGKILL its own process.

Importing torch and open_clip costs several seconds per process (more on a loaded machine), so
the kill sweep runs in ONE driver subprocess that imports them once and then forks a child per
attempt: the child ingests with the fault point armed and is killed by it, a second child re-runs
the ingest to completion, and the driver checks the store between them. The driver loads the
model but never runs it (forking after OpenMP has started is not safe; children run CLIP with
one thread), and holds no LMDB environment across a fork.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))  # kit, also when run as the fork-server script
from kit import SEMDB, cli_env, semdb_cli, sigint_not_ignored  # noqa: E402


def cli(*args, **kw):
    return semdb_cli(*args, text=False, **kw)


ROOT = TESTS.parent


# ----------------------------------------------------------------------------------------------
# the fork-server driver (runs in a subprocess: `python test_reliability.py driver PLAN.json`)


def _store_state(store_path) -> dict:
    """{path: id} of the committed items, and the store's own consistency check (no CLIP)."""
    from semdb.store import Store

    with Store(store_path) as s:  # writable: verify() also walks the LMDB pages
        return {
            "ids": {it.path: it.id for it in s.iter_items()},
            "verify": s.verify(),
            "staging": s.staging_count(),
            "coded": len(s.load_codes()[0]),
            "count": s.count(),
            "codec": s.meta().get("codec_id"),
        }


def _fork(fn) -> tuple[str, object]:
    """Run fn() in a forked child; ('exit', code) or ('signal', signum) and fn's JSON result."""
    return _wait(*_spawn(fn))


def _spawn(fn) -> tuple[int, str]:
    import tempfile

    fd, out = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            result = fn()
            Path(out).write_text(json.dumps(result))
        except BaseException as e:  # noqa: BLE001 - report everything to the parent
            import traceback

            Path(out).write_text(json.dumps({"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}))
            code = 1
        os._exit(code)
    return pid, out


def _wait(pid: int, out: str) -> tuple[str, object]:
    _, status = os.waitpid(pid, 0)
    text = Path(out).read_text()
    os.unlink(out)
    how = ("signal", os.WTERMSIG(status)) if os.WIFSIGNALED(status) else ("exit", os.WEXITSTATUS(status))
    return how, (json.loads(text) if text else None)


def _ingest_child(store, photos, model, fault, batch_size, prune, train_at):
    def run():
        import semdb
        from semdb import faults
        from semdb.ingest import CodecPolicy

        if fault:
            os.environ[faults.ENV] = fault
        else:
            os.environ.pop(faults.ENV, None)
        faults.reset()
        policy = CodecPolicy(train_at=train_at or CodecPolicy.train_at, train_now=True)
        with semdb.open(store, embedder=_PRELOADED) as db:
            summary = db.ingest([photos], batch_size=batch_size, prune=prune, workers=2, policy=policy)
            if fault:
                return {"summary": summary}
            hits = db.search("a photo of something", k=5)
            img = sorted(Path(photos).glob("*.jpg"))[0]
            ihits = db.search(image=img, k=3)
            return {"summary": summary, "hits": [h.path for h in hits + ihits]}

    return run


def _restore(pristine: Path, photos: Path) -> None:
    shutil.rmtree(photos, ignore_errors=True)
    shutil.copytree(pristine, photos)  # copy2: sizes and mtimes as the base store saw them


def _modify_incremental(photos: Path) -> dict:
    """A re-run's worth of changes: new, duplicate, moved, changed and deleted files."""
    from PIL import Image

    for i in range(6):
        Image.new("RGB", (50 + i, 40), (20 * i, 255 - 30 * i, 7 * i)).save(photos / f"new_{i}.png")
    shutil.copy(photos / "coffee.jpg", photos / "coffee copy.jpg")
    os.rename(photos / "rocket.jpg", photos / "rocket moved.jpg")
    Image.new("RGB", (40, 40), (255, 0, 0)).save(photos / "shapes_1.png")
    (photos / "shapes_0.png").unlink()
    return {"moved": [str(photos / "rocket.jpg"), str(photos / "rocket moved.jpg")]}


_PRELOADED = None  # the fork server's Embedder, handed to every child's Database


def _preload(model: str) -> None:
    """Import what every child imports (torch, open_clip, faiss, the ingest and search code) and
    load the model once, in the fork server itself: each child then starts at its ingest, not
    at a second of imports (a child's imports are no part of what the faults test). Every
    child's Database gets this same Embedder (semdb.open(..., embedder=)). Nothing here runs a
    parallel region, so no OpenMP team exists in this process and forking stays safe (children
    run CLIP with one thread)."""
    import open_clip  # noqa: F401
    import torch

    import semdb.api  # noqa: F401
    import semdb.ingest.run  # noqa: F401
    import semdb.search.searcher  # noqa: F401
    from semdb import lazy
    from semdb.clip import embedder as embed

    lazy.faiss()
    global _PRELOADED
    torch.set_num_threads(1)
    _PRELOADED = embed.Embedder(model)


def driver(plan_file: str) -> None:
    """Execute the kill plan in PLAN.json; print one JSON line per attempt."""
    from kit import write_photos

    from semdb.images import discover

    plan = json.loads(Path(plan_file).read_text())
    model, work = plan["model"], Path(plan["work"])
    _preload(model)
    for sc in plan["scenarios"]:
        pristine, photos = work / f"pristine_{sc['name']}", work / f"photos_{sc['name']}"
        write_photos(pristine, sc["generated"])
        base = work / f"base_{sc['name']}"
        if sc["base"]:  # a store that already holds the pristine folder
            _restore(pristine, photos)
            how, result = _fork(_ingest_child(base, photos, model, None, sc["batch"], False, None))
            assert how == ("exit", 0), result
        for fault in sc["faults"]:
            _restore(pristine, photos)
            extra = _modify_incremental(photos) if sc["modify"] else {}
            store = work / "store"
            shutil.rmtree(store, ignore_errors=True)
            if sc["base"]:
                shutil.copytree(base, store)
            files = {os.fsdecode(p) for p in discover([photos])}
            before = _store_state(store) if store.exists() else {"ids": {}}
            t = time.perf_counter()
            killed, _ = _fork(_ingest_child(store, photos, model, fault, sc["batch"], sc["prune"], sc.get("train_at")))
            after_kill = _store_state(store) if store.exists() else None
            rerun, result = _fork(
                _ingest_child(store, photos, model, None, sc["batch"], sc["prune"], sc.get("train_at"))
            )
            final = _store_state(store)
            print(
                json.dumps(
                    {
                        "scenario": sc["name"],
                        "fault": fault,
                        "killed": killed,
                        "before": before["ids"],
                        "after_kill": after_kill,
                        "rerun": rerun,
                        "result": result,
                        "final": final,
                        "files": sorted(files),
                        "extra": extra,
                        "seconds": round(time.perf_counter() - t, 2),
                    }
                ),
                flush=True,
            )


def _reader_loop(store: str, stop: str, k: int = 5) -> dict:
    """One reader process: open the store read-only (fresh, as each `semdb query` does), read
    the item count, query, check every hit, until the file `stop` exists."""
    import semdb
    from semdb.errors import StoreError

    log, errors = [], []
    while not os.path.exists(stop):
        try:
            with semdb.open(store, readonly=True, embedder=_PRELOADED) as db:
                n = db.store.count()
                hits = db.search("a photo of something", k=k)
                items = db.store.items([h.id for h in hits])
                for h, it in zip(hits, items):
                    if it is None or it.path != h.path or not os.path.exists(h.path):
                        errors.append(f"hit {h} is not a committed item with an existing file: {it}")
                log.append([n, len(hits)])
        except StoreError as e:  # before the writer's first commit there is no store yet
            if log or "no semdb store" not in str(e):
                errors.append(f"{type(e).__name__}: {e}")
            time.sleep(0.05)
    return {"log": log, "errors": errors}


def readers(plan_file: str) -> None:
    """Fork N reader processes and one writer: the writer ingests `folders` one after the other
    (the first ingest stages embeddings and trains the codec, later ones write codes), with
    delays that hold write transactions and the codec switch open; readers loop meanwhile."""
    plan = json.loads(Path(plan_file).read_text())
    _preload(plan["model"])
    stop = plan["stop"]

    def writer():
        import semdb
        from semdb import faults

        time.sleep(plan["writer_start"])
        os.environ[faults.ENV] = plan["delays"]
        out = []
        for folders in plan["ingests"]:
            with semdb.open(plan["store"], embedder=_PRELOADED) as db:
                out.append(db.ingest(folders, batch_size=plan["batch"], train_now=True))
        Path(stop).touch()
        return out

    children = {f"reader{i}": _spawn(lambda: _reader_loop(plan["store"], stop)) for i in range(plan["readers"])}
    children["writer"] = _spawn(writer)
    print(json.dumps({name: _wait(*child) for name, child in children.items()}), flush=True)


if __name__ == "__main__" and sys.argv[1:2] in (["driver"], ["readers"]):
    sys.path.insert(0, str(TESTS))
    {"driver": driver, "readers": readers}[sys.argv[1]](sys.argv[2])


# ----------------------------------------------------------------------------------------------
# kill -9 at every stage, then resume

BATCH = 4
SCENARIOS = [
    # a new store: 12 files in 3 batches, staged as embeddings, codec trained when ingest ends
    {
        "name": "first",
        "generated": 8,
        "base": False,
        "modify": False,
        "batch": BATCH,
        "prune": False,
        "faults": [
            "decode:1",
            "decode:5",
            "decode:12",
            "embedded:1",
            "embedded:3",
            "batch_txn:1",
            "batch_txn:2",
            "batch_txn:3",
            "batch_committed:1",
            "batch_committed:2",
            "batch_committed:3",
            "train:1",
            "trained:1",
            "finish_staging_txn:1",
        ],
    },
    # a long first ingest: the codec is trained mid-way (TRAIN_AT lowered to 6), later batches
    # are encoded straight to codes
    {
        "name": "midway",
        "generated": 12,
        "base": False,
        "modify": False,
        "batch": BATCH,
        "prune": False,
        "train_at": 6,
        "faults": [
            "train:1",
            "trained:1",
            "finish_staging_txn:1",
            "embedded:4",
            "batch_txn:3",
            "batch_txn:4",
            "batch_committed:2",
            "batch_committed:3",
        ],
    },
    # an incremental re-run with --prune on a coded store: 6 new files, a duplicate, a moved,
    # a changed and a deleted file
    {
        "name": "incremental",
        "generated": 8,
        "base": True,
        "modify": True,
        "batch": BATCH,
        "prune": True,
        "faults": [
            "classify_txn:1",
            "decode:1",
            "decode:4",
            "embedded:1",
            "embedded:2",
            "batch_txn:1",
            "batch_txn:2",
            "batch_committed:1",
            "batch_committed:2",
            "prune_txn:1",
        ],
    },
]
KILL_POINTS = sum(len(sc["faults"]) for sc in SCENARIOS)


def _check_attempt(r: dict) -> list[str]:
    """Every property a killed-then-resumed ingest must have; the broken ones, as text."""
    bad = []
    files, final, after = set(r["files"]), r["final"], r["after_kill"]
    if r["killed"] != ["signal", signal.SIGKILL]:
        bad.append(f"the fault point was not reached: child ended {r['killed']}")
    if after is not None and after["verify"]:
        bad.append(f"store inconsistent right after the kill: {after['verify'][:3]}")
    if after is not None and after["codec"] and after["staging"]:
        bad.append(f"the kill left a codec with {after['staging']} items still staged")
    if r["rerun"] != ["exit", 0] or "error" in (r["result"] or {}):
        bad.append(f"re-run failed: {r['rerun']} {(r['result'] or {}).get('traceback')}")
        return bad
    if final["verify"]:
        bad.append(f"store inconsistent after the re-run: {final['verify'][:3]}")
    if set(final["ids"]) != files:  # {path: id}: each path once; == files: none lost, none extra
        bad.append(
            f"paths in store != files: missing {sorted(files - set(final['ids']))[:3]}, "
            f"extra {sorted(set(final['ids']) - files)[:3]}"
        )
    if final["count"] != len(files) or final["staging"] != 0 or final["coded"] != final["count"]:
        bad.append(f"items {final['count']}, staging {final['staging']}, coded {final['coded']} for {len(files)} files")
    for when, ids in (("before the ingest", r["before"]), ("before the kill", (after or {}).get("ids", {}))):
        for path, id_ in ids.items():
            if path in files and final["ids"].get(path) != id_:
                bad.append(f"{path} was item {id_} {when}, is {final['ids'].get(path)} after the re-run")
    moved = r["extra"].get("moved")
    if moved and final["ids"].get(moved[1]) != r["before"][moved[0]]:
        bad.append(f"moved file lost its item id {r['before'][moved[0]]}")
    summary = r["result"]["summary"]
    if summary["failed"] or summary["items"] != len(files):
        bad.append(f"re-run summary: {summary}")
    hits = r["result"]["hits"]
    if len(hits) != 8 or not set(hits) <= files:
        bad.append(f"queries after the re-run returned {hits}")
    return bad


@pytest.mark.slow
def test_kill_9_at_every_ingest_stage_then_resume(tmp_path, tiny_model):
    """SIGKILL at KILL_POINTS deterministic points (see SCENARIOS); after each kill the store is
    consistent, a re-run completes, every file is stored exactly once, nothing committed before
    the kill changes id, no staging row remains, every item has a code, queries work."""
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"model": tiny_model, "work": str(tmp_path), "scenarios": SCENARIOS}))
    proc = subprocess.run(
        [sys.executable, __file__, "driver", str(plan)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(results) == KILL_POINTS == 32
    problems = [f"{r['scenario']} {r['fault']}: {p}" for r in results for p in _check_attempt(r)]
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------------------------------
# the codec switch, a full map: in this process


def _staged_store(path, photos, tiny_model):
    """A store whose items are all still staged, as a first ingest leaves it before training."""
    import semdb
    from semdb.ingest import CodecPolicy

    with semdb.open(path, model=tiny_model) as db:
        db.ingest([photos], policy=CodecPolicy(min_train=10**9))
        assert db.store.staging_count() == 12 and db.store.codec_bytes() is None


def test_readers_never_see_the_codec_without_its_codes(photos, tmp_path, tiny_model, monkeypatch):
    """The codec and the codes of every staged item are committed in one transaction, and a
    reader that read 'no codec yet' before the switch and staging after it searches again."""
    import semdb
    from semdb.ingest import CodecPolicy

    path = tmp_path / "s"
    _staged_store(path, photos, tiny_model)
    reader = semdb.open(path, readonly=True)
    writer = semdb.open(path, model=tiny_model)
    try:
        read_staging = reader.store.iter_staging

        def switch_then_read(*a, **kw):  # the writer commits the codec just before this read
            writer.ingest([photos], policy=CodecPolicy(bits=64, train_now=True))  # nothing new: trains, installs
            return read_staging(*a, **kw)

        monkeypatch.setattr(reader.store, "iter_staging", switch_then_read)
        hits = reader.search("a photo", k=5)
        assert len(hits) == 5 and {h.path for h in hits} <= {it.path for it in reader.store.iter_items()}
        assert writer.store.staging_count() == 0 and len(writer.store.load_codes()[0]) == 12
        assert writer.store.verify() == []
    finally:
        reader.close()
        writer.close()


def test_a_reader_racing_the_first_staged_batch_does_not_call_the_store_corrupt(tmp_path):
    """Found by the readers test below: a reader read `dim` (None: nothing staged yet), the
    writer committed the first staged batch, the reader then read staged rows and reported
    'store is corrupt (staging row width differs from dim None)'. Each chunk's rows and dim are
    now one snapshot: a reader that opened before the first staged commit reads it whole."""
    import numpy as np

    from semdb.store import Item, Store

    path = tmp_path / "s"
    Store(path, create=True).close()
    reader, writer = Store(path, readonly=True), Store(path)
    try:
        assert reader.meta()["dim"] is None and list(reader.iter_staging()) == []
        with writer.write() as w:
            w.add_item(Item.new("/a.jpg", 1, 1, "h", 1, 1), embedding=np.ones(8, np.float32))
        [(ids, embs)] = list(reader.iter_staging())
        assert ids.tolist() == [1] and embs.shape == (1, 8)
    finally:
        reader.close()
        writer.close()


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs of our own (skips where this process may not mount one)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root); the full-disk test runs in CI as root")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_full_disk_is_one_line_exit_4_and_a_rerun_after_freeing_space_finishes(
    photos, tmp_path, tiny_model, small_disk
):
    from kit import write_photos

    from semdb.store import Store

    store = small_disk / "store"
    first = json.loads(cli("ingest", "--train-now", photos, "--store", store, "--model", tiny_model, "--json").stdout)
    more = write_photos(tmp_path / "more", n_generated=300, seed=5)
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    (small_disk / "filler").write_bytes(bytes(free - 16384))  # leave 16 KiB
    proc = cli("ingest", "--train-now", more, "--store", store, "--model", tiny_model, "--json", check=4)
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "storage error" in lines[0] and str(store) in lines[0], proc.stderr
    with Store(store) as s:
        assert s.verify() == [] and s.count() >= first["items"]
    (small_disk / "filler").unlink()
    again = json.loads(cli("ingest", "--train-now", more, "--store", store, "--model", tiny_model, "--json").stdout)
    assert again["items"] == first["items"] + len(list(more.iterdir())) and again["failed"] == 0
    with Store(store) as s:
        assert s.verify() == [] and s.staging_count() == 0


def test_an_ingest_that_fills_the_map_stops_whole_and_a_larger_map_finishes(photos, tmp_path, tiny_model):
    """A store made with a 128 KiB map (the default, 1 TiB, does not fill): the ingest that fills
    it stops with one StoreError, keeping the batches committed before, and the same ingest with
    the default map finishes, every photo once."""
    from kit import write_photos

    import semdb
    from semdb.errors import StoreError

    more = write_photos(tmp_path / "more", n_generated=300, seed=5)
    store = tmp_path / "s"
    with semdb.open(store, model=tiny_model, map_size=1 << 17) as db:
        first = db.ingest([photos], batch_size=8, train_now=True)["items"]
        with pytest.raises(StoreError, match="is full: .*larger map_size"):
            db.ingest([more], batch_size=8, train_now=True)
        assert db.store.verify() == [] and first < db.store.count() < first + 304
    with semdb.open(store, model=tiny_model) as db:
        s = db.ingest([more], batch_size=8, train_now=True)
        assert (s["items"], s["failed"], db.store.info()["staging"]) == (first + 304, 0, 0)
        assert db.store.verify() == [] and len(db.search("a cat", k=400)) == first + 304


def test_an_exception_in_the_decoding_threads_reaches_the_caller_instead_of_hanging():
    """An exception raised while decoding ahead (not a bad file: decode_image turns those into
    listed failures) reaches the consumer after the batches decoded before it (it used to leave
    the ingest waiting forever for the next batch)."""
    import threading

    from semdb.ingest.decode import decode_ahead

    def decode(x):
        if x == 5:
            raise RuntimeError("decoder bug")
        return x * 10

    got, outcome = [], []

    def consume():
        try:
            for _batch, decoded in decode_ahead([[1, 2], [3, 4], [5, 6], [7, 8]], decode, workers=1):
                got.append(decoded)
        except BaseException as e:  # noqa: BLE001
            outcome.append(e)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    thread.join(120)
    assert not thread.is_alive(), "decode_ahead hangs after a decoding thread raised"
    assert got == [[10, 20], [30, 40]] and len(outcome) == 1 and str(outcome[0]) == "decoder bug"


# ----------------------------------------------------------------------------------------------
# readers during writes, two writers: separate processes


@pytest.mark.slow
def test_queries_in_other_processes_while_an_ingest_writes(tmp_path, tiny_model):
    """Two reader processes query in a loop (a fresh read-only open each time, like `semdb query`)
    and `semdb info --json` runs in a loop, while a writer process runs a first ingest (staging,
    codec switch) and then an incremental one, with its write transactions and the codec switch
    held open by delays. No reader errs, counts never go backwards, a query returns
    min(k, items) hits, every hit is a committed item whose file exists."""
    from kit import write_photos

    a = write_photos(tmp_path / "a", n_generated=8)
    b = write_photos(tmp_path / "b", n_generated=16, seed=3)  # + 4 duplicates of a's photos
    store, stop = tmp_path / "store", tmp_path / "stop"
    plan = tmp_path / "plan.json"
    plan.write_text(
        json.dumps(
            {
                "model": tiny_model,
                "store": str(store),
                "stop": str(stop),
                "readers": 2,
                "batch": 2,
                "writer_start": 0.5,
                "ingests": [[str(a)], [str(a), str(b)]],
                "delays": "batch_txn:delay=0.15,train:delay=0.5,finish_staging_txn:delay=1.0",
            }
        )
    )
    proc = subprocess.Popen(
        [sys.executable, __file__, "readers", str(plan)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    info_counts = []
    while proc.poll() is None:  # the console script as a reader too
        r = cli("info", "--store", store, "--json", check=False, timeout=60)
        if r.returncode == 0:
            info_counts.append(json.loads(r.stdout)["items"])
        else:
            assert r.returncode == 4 and b"no semdb store" in r.stderr and not info_counts, r.stderr
            time.sleep(0.2)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    results = json.loads(out.splitlines()[-1])
    assert results["writer"][0] == ["exit", 0], results["writer"]
    first, second = results["writer"][1]
    assert (first["new"], first["codec_trained"], second["new"], second["duplicate"], second["items"]) == (
        12,
        True,
        16,
        4,
        32,
    )
    seen = set()
    for name in ("reader0", "reader1"):
        how, res = results[name]
        assert how == ["exit", 0] and res["errors"] == [], (name, how, res)
        counts = [n for n, _ in res["log"]]
        assert counts == sorted(counts), f"{name}: item count went backwards: {counts}"
        short = [(n, h) for n, h in res["log"] if h < min(5, n)]
        assert not short, f"{name}: queries returned fewer hits than committed items: {short}"
        seen |= set(counts)
    assert len(seen) >= 3 and min(seen) < 32, f"the readers did not overlap the writes: {sorted(seen)}"
    print(
        f"readers: {sum(len(results[r][1]['log']) for r in ('reader0', 'reader1'))} queries, item counts "
        f"seen {sorted(seen)}; semdb info: {len(info_counts)} runs, counts {sorted(set(info_counts))}"
    )
    assert info_counts == sorted(info_counts)
    from semdb.store import Store

    with Store(store) as s:
        assert s.verify() == [] and s.count() == 32 and s.staging_count() == 0


@pytest.mark.slow
def test_two_ingests_at_once_refuse_or_wait_and_a_killed_writer_releases_the_lock(tmp_path, tiny_model):
    """While `semdb ingest` writes (slowed by delays): a second `semdb ingest` exits 5 with one
    clear line naming the writer's pid, `semdb info` still reads, and `semdb ingest --wait`
    queues. The first writer is then killed -9 after its 3rd batch commit: the waiting ingest
    takes over (the kernel drops a dead process's flock) and completes the job."""
    from kit import write_photos

    photos = write_photos(tmp_path / "photos", n_generated=8)
    store = tmp_path / "store"
    args = [
        SEMDB,
        "ingest",
        "--train-now",
        str(photos),
        "--store",
        str(store),
        "--model",
        tiny_model,
        "--batch-size",
        "2",
        "--json",
    ]
    first = subprocess.Popen(
        args,
        env=cli_env(SEMDB_FAULT_POINT="batch_txn:delay=0.3,batch_committed:3"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    lock = store / "writer.lock"
    for _ in range(2400):  # wait for the first writer to take the lock (at most ~2 minutes)
        if lock.exists() and lock.read_text().strip() == str(first.pid):
            break
        assert first.poll() is None, first.communicate()
        time.sleep(0.05)
    else:
        pytest.fail(f"the first ingest never took the writer lock: {first.communicate()}")
    # Held still while it holds the lock: a second command that starts slowly on a busy machine
    # must still find the first one writing (else it would outlive the first and take the lock).
    os.kill(first.pid, signal.SIGSTOP)
    try:
        second = cli(*args[1:], check=False)
        lines = second.stderr.decode().strip().splitlines()
        assert second.returncode == 5 and len(lines) == 1, second.stderr
        assert f"is being written by another semdb process (pid {first.pid}); wait for it or stop it" in lines[0]
        waiting = subprocess.Popen(args + ["--wait"], env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        info = cli("info", "--store", store, "--json", check=False)  # readers are never locked out
        assert info.returncode in (0, 4), info.stderr  # 4: the writer has not committed the store yet
    finally:
        os.kill(first.pid, signal.SIGCONT)
    first.communicate(timeout=300)
    assert first.returncode == -signal.SIGKILL
    out, err = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, err
    summary = json.loads(out)
    assert (summary["unchanged"], summary["new"], summary["items"], summary["failed"]) == (6, 6, 12, 0)
    from semdb.store import Store

    with Store(store) as s:
        assert s.verify() == [] and s.count() == 12 and s.staging_count() == 0
        assert sorted(it.path for it in s.iter_items()) == sorted(str(p) for p in photos.iterdir())


@pytest.mark.slow
def test_ctrl_c_keeps_committed_batches_and_exits_130(tmp_path, tiny_model):
    """SIGINT (Ctrl-C) during `semdb ingest`: exit 130 with one line saying how to resume; the
    batches committed so far are kept and the store is consistent."""
    from kit import write_photos

    from semdb.store import Store

    photos = write_photos(tmp_path / "photos", n_generated=8)
    store = tmp_path / "store"
    proc = subprocess.Popen(
        [
            SEMDB,
            "ingest",
            "--train-now",
            str(photos),
            "--store",
            str(store),
            "--model",
            tiny_model,
            "--batch-size",
            "2",
            "--json",
        ],
        env=cli_env(SEMDB_FAULT_POINT="batch_txn:delay=0.5"),
        preexec_fn=sigint_not_ignored,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for attempt in range(2400):  # until two batches are committed (at most ~2 minutes)
        assert proc.poll() is None and attempt < 2399, proc.communicate()
        if (store / "data.mdb").exists():
            try:
                with Store(store, readonly=True) as s:
                    if s.count() >= 4:
                        break
            except Exception:  # noqa: BLE001 - not initialised yet
                pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert (
        err.strip().splitlines()[-1]
        == ("interrupted: committed batches are kept; run the same command again to resume")
        and "Traceback" not in err
    )
    with Store(store) as s:
        assert s.verify() == [] and 4 <= s.count() < 12 and s.staging_count() == s.count()
