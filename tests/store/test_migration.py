"""Schema 1 -> 2: a store written by the semdb before the compact store (commit V1, checked
out with `git archive`) opens in this semdb with the same items, codes and query results,
and a kill -9 at any point of the migration leaves a store the next open migrates."""

import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

from semdb.api import Database
from semdb.errors import StoreError
from semdb.store import SCHEMA_VERSION, Store

ROOT = Path(__file__).resolve().parents[2]
V1 = "995d13f"  # the last commit whose store writes schema 1

# Built by the schema-1 semdb: 300 items through Database.add_embeddings (codec trained), plus
# items the import path cannot make: a non-UTF-8 path, a 600-byte path (schema 1 keys it by
# its sha256), a hex content hash, no date taken; one deleted, one re-pathed, one staged.
BUILD = r"""
import json, os, sys
import numpy as np
from semdb.api import Database
from semdb.store import Item, Store
store = sys.argv[1]
rng = np.random.default_rng(0)
X = rng.standard_normal((300, 32)).astype(np.float32)
paths = [f"/home/user/Pictures/2019/{i // 50:02d}-Holiday/IMG_{i:05d}.jpg" for i in range(300)]
with Database(store) as db:
    db.add_embeddings(paths, X, model="ViT-B-32", bits=64, train_now=True)
    s = db.store
    code = s.load_codes()[1][0]
    with s.write() as w:
        w.add_item(Item.new(os.fsdecode(b"/photos/caf\xe9-\xff.jpg"), 10, 20, "0123456789abcdef0123456789abcdef",
                            64, 48, now=1.5e9, taken=1.4e9), code=code)
        w.add_item(Item.new("/deep/" + "x" * 600 + ".jpg", 11, 21, "sha256:not-hex", 1, 2, now=1.5e9), code=code)
        w.add_item(Item.new("/staged.jpg", 12, 22, "0123456789abcdef0123456789abcdef", 3, 4, now=1.5e9),
                   embedding=np.ones(32, np.float32))
        gone = w.add_item(Item.new("/gone.jpg", 1, 2, "h", 3, 4), code=code)
    with s.write() as w:
        w.delete_item(gone)
        moved = s.item_by_path(paths[7])
        moved.path = "/moved/IMG_00007.jpg"
        w.update_item(moved)
    Q = rng.standard_normal((5, 32)).astype(np.float32)
    hits = [[(h.id, round(h.score, 5)) for h in row] for row in db.query_vectors(Q, k=10)]  # its name in that semdb
print(json.dumps({"hits": hits, "Q": Q.tolist()}))
"""


def _items(s: Store) -> list:
    return [
        (
            it.id,
            os.fsencode(it.path),
            it.size,
            it.mtime_ns,
            it.hash,
            it.width,
            it.height,
            it.added,
            it.updated,
            it.taken,
        )
        for it in s.iter_items()
    ]


@pytest.fixture(scope="module")
def v1_semdb(tmp_path_factory) -> Path:
    """The schema-1 semdb package, extracted from git."""
    out = tmp_path_factory.mktemp("semdb_v1")
    archive = subprocess.run(["git", "archive", V1, "semdb"], cwd=ROOT, capture_output=True)
    if archive.returncode:
        pytest.skip(f"no git history with commit {V1}: {archive.stderr.decode().strip()}")
    tar = out / "v1.tar"
    tar.write_bytes(archive.stdout)
    with tarfile.open(tar) as t:
        t.extractall(out, filter="data")
    return out


@pytest.fixture(scope="module")
def v1_store(v1_semdb, tmp_path_factory):
    """(a schema-1 store folder, what the old semdb answered, its items, its codes, staging count)."""
    store = tmp_path_factory.mktemp("v1") / "store"
    env = {**os.environ, "PYTHONPATH": str(v1_semdb), "SEMDB_STORE": ""}
    r = subprocess.run(
        [sys.executable, "-c", BUILD, str(store)], env=env, capture_output=True, text=True, cwd=v1_semdb, timeout=300
    )
    assert r.returncode == 0, r.stderr
    answered = json.loads(r.stdout.strip().splitlines()[-1])
    # what the old store holds, read by the old code (a subprocess: its own LMDB environment)
    dump = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(r"""
        import json, os, sys
        from semdb.store import Store
        with Store(sys.argv[1], readonly=True) as s:
            items = [(it.id, os.fsencode(it.path).hex(), it.size, it.mtime_ns, it.hash, it.width, it.height,
                      it.added, it.updated, it.taken) for it in s.iter_items()]
            ids, codes = s.load_codes()
            print(json.dumps({"schema": s.meta()["schema"], "items": items, "staging": s.staging_count(),
                              "codes": {int(i): c.tobytes().hex() for i, c in zip(ids, codes)}}))
        """),
            str(store),
        ],
        env=env,
        capture_output=True,
        text=True,
        cwd=v1_semdb,
        timeout=120,
    )
    assert dump.returncode == 0, dump.stderr
    old = json.loads(dump.stdout)
    assert old["schema"] == 1
    items = [(i, bytes.fromhex(p), *rest) for i, p, *rest in old["items"]]
    return store, answered, items, {int(k): bytes.fromhex(v) for k, v in old["codes"].items()}, old["staging"]


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for name in ("data.mdb",):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def _check_migrated(path: Path, v1_store) -> None:
    _, answered, items, codes, staging = v1_store
    with Database(path) as db:
        s = db.store
        assert s.meta()["schema"] == SCHEMA_VERSION and "reclaim" not in s.meta()
        assert s.verify() == []
        assert _items(s) == items
        ids, got = s.load_codes()
        assert {int(i): c.tobytes() for i, c in zip(ids, got)} == codes
        assert s.staging_count() == staging
        # the staged item is searched too now (exactly): the coded items rank as they did
        staged = {int(i) for ids_, _ in s.iter_staging() for i in ids_}
        hits = [
            [[h.id, round(h.score, 5)] for h in row if h.id not in staged]
            for row in db.search_vectors(np.array(answered["Q"], np.float32), k=10)
        ]
        for got_row, old_row in zip(hits, answered["hits"]):  # equal scores: any order; float sums: to 1e-4
            old_row = old_row[: len(got_row)]
            assert sorted(i for i, _ in got_row) == sorted(i for i, _ in old_row)
            np.testing.assert_allclose([x for _, x in got_row], [x for _, x in old_row], atol=1e-4)
        # the lookups schema 1 kept as databases, now built in memory
        for it in s.iter_items():
            assert s.item_by_path(it.path).id == it.id
            assert it.id in [x.id for x in s.items_by_hash(it.hash)]
        assert (
            s.item_by_path("/gone.jpg") is None
            and s.item_by_path("/home/user/Pictures/2019/00-Holiday/IMG_00007.jpg") is None
        )
    assert not (path / ".reclaim.tmp").exists()


def test_schema1_store_is_migrated_in_place(v1_store, tmp_path):
    path = _copy(v1_store[0], tmp_path / "s")
    before = (path / "data.mdb").stat().st_size
    _check_migrated(path, v1_store)
    assert (path / "data.mdb").stat().st_size < before  # the old databases' pages given back
    _check_migrated(path, v1_store)  # a second open changes nothing


def test_read_only_open_migrates_when_it_can(v1_store, tmp_path):
    path = _copy(v1_store[0], tmp_path / "s")
    with Store(path, readonly=True) as s:
        assert s.meta()["schema"] == SCHEMA_VERSION and s.count() == len(v1_store[2])
    _check_migrated(path, v1_store)


def test_read_only_open_says_why_it_cannot_migrate(v1_store, tmp_path):
    path = _copy(v1_store[0], tmp_path / "s")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], "
            "os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); "
            "time.sleep(60)",
            str(path / "writer.lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreError, match="uses store schema 1; .*being written by another") as e:
            Store(path, readonly=True)
        assert "\n" not in str(e.value)
    finally:
        holder.kill()
        holder.wait()
    _check_migrated(path, v1_store)


@pytest.mark.parametrize("fault", ["migrate_txn:1", "reclaim_copied:1"])
def test_kill_9_during_migration_then_reopen(v1_store, tmp_path, fault):
    path = _copy(v1_store[0], tmp_path / "s")
    r = subprocess.run(
        [sys.executable, "-c", "import sys; from semdb.store import Store; Store(sys.argv[1]).close()", str(path)],
        env={**os.environ, "PYTHONPATH": str(ROOT), "SEMDB_FAULT_POINT": fault},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == -signal.SIGKILL, r.stderr
    with Store(path, readonly=True) if fault == "reclaim_copied:1" else Store(path) as s:
        # killed inside the transaction: still schema 1 (migrated by this open); killed after
        # the copy: schema 2, its space given back by the next writable open
        assert s.count() == len(v1_store[2])
    _check_migrated(path, v1_store)


def test_the_schema1_semdb_refuses_a_schema2_store(v1_semdb, v1_store, tmp_path):
    path = _copy(v1_store[0], tmp_path / "s")
    Store(path).close()  # migrated
    for ro in (True, False):
        r = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from semdb.store import Store; Store(sys.argv[1], readonly=sys.argv[2] == 'ro')",
                str(path),
                "ro" if ro else "rw",
            ],
            env={**os.environ, "PYTHONPATH": str(v1_semdb)},
            cwd=v1_semdb,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 1 and "was made by a newer semdb (schema 2 > 1); upgrade semdb" in r.stderr, r.stderr
    _check_migrated(path, v1_store)  # and it was left as it was
