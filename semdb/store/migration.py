"""Schema versions: the check every open makes, and the conversion of a schema-1 store.

Schema 1 kept one LMDB record per item plus three per-item indexes (items id -> record, paths
path -> id, hashes hash -> ids, code_loc id -> segment). The first writable open converts it
to item segments in ONE write transaction (fault point migrate_txn; a kill -9 leaves schema 1,
converted again by the next open), then gives the freed pages back: LMDB never shrinks its
file, so data.mdb is rewritten by a compacting copy renamed over it (meta `reclaim` marks a
rewrite still to do, fault point reclaim_copied).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import lmdb

from ..errors import StoreError
from ..faults import fault_point
from . import segments
from .format import DBS, LATER_DBS, MAX_DBS, SCHEMA_VERSION, V1_DBS, CorruptValue, Item, int_key, item_segment_row


def check_schema(raw, path: Path) -> int:
    """The stored schema version; StoreError for a store of a newer semdb."""
    try:
        schema = json.loads(raw)
    except (TypeError, ValueError):
        schema = None
    if not isinstance(schema, int) or schema < 1:
        raise CorruptValue(f"bad schema version {raw!r}")
    if schema > SCHEMA_VERSION:
        raise StoreError(f"{path} was made by a newer semdb (schema {schema} > {SCHEMA_VERSION}); upgrade semdb")
    return schema


def migrate(env, path: Path):
    """Open the databases of a writable store, converting a schema-1 store to schema 2 first;
    returns (env, dbs) (env is another one after a reclaim). The caller holds writer.lock: no
    other writer can interleave."""
    with env.begin(write=True) as txn:
        meta_db = env.open_db(b"meta", txn=txn, create=False)
        schema = check_schema(txn.get(b"schema", db=meta_db), path)
        dbs = {n: env.open_db(n.encode(), txn=txn, create=n in LATER_DBS or n == "itemsegs") for n in DBS}
        if schema == 1:
            _convert_v1(env, txn, dbs)
            fault_point("migrate_txn")
        reclaim = txn.get(b"reclaim", db=meta_db) is not None
    if reclaim:
        env = reclaim_space(env, path)
        dbs = {n: env.open_db(n.encode(), create=False) for n in DBS}
    return env, dbs


def _convert_v1(env, txn, dbs) -> None:
    old = {n: env.open_db(n.encode(), txn=txn, create=False, dupsort=n == "hashes") for n in V1_DBS}
    chunk: list[segments.Row] = []

    def put():
        txn.put(int_key(chunk[0].id), segments.encode(chunk), db=dbs["itemsegs"], append=True)
        chunk.clear()

    for _, raw in txn.cursor(db=old["items"]):  # id order: segments' ranges ascend
        chunk.append(item_segment_row(Item.from_bytes(raw)))
        if len(chunk) == segments.ITEMSEG_MAX:
            put()
    if chunk:
        put()
    for db in old.values():
        txn.drop(db, delete=True)
    meta = dbs["meta"]
    generation = json.loads(txn.get(b"generation", db=meta))
    txn.put(b"generation", json.dumps(generation + 1).encode(), db=meta)
    txn.put(b"schema", json.dumps(SCHEMA_VERSION).encode(), db=meta)
    txn.put(b"reclaim", b"true", db=meta)


def reclaim_space(env, path: Path):
    """Rewrite data.mdb without its free pages: a compacting copy into a temporary folder,
    fsync, then an atomic rename over data.mdb while no environment is open on it. A crash
    at any point leaves the old or the new file whole; meta `reclaim` stays set until the
    new file is in place, so an interrupted reclaim is redone by the next open. (A process
    that had the store open before this keeps reading the file it opened: reopen it.)
    Returns the environment reopened on the new file."""
    tmp = path / ".reclaim.tmp"
    if tmp.exists():
        for f in tmp.iterdir():
            f.unlink()
    else:
        tmp.mkdir()
    map_size = env.info()["map_size"]
    env.copy(str(tmp), compact=True)
    _fsync(tmp / "data.mdb")
    env.close()
    fault_point("reclaim_copied")
    os.replace(tmp / "data.mdb", path / "data.mdb")
    _fsync(path)
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    env = lmdb.open(str(path), map_size=map_size, subdir=True, max_dbs=MAX_DBS)
    with env.begin(write=True) as txn:
        txn.delete(b"reclaim", db=env.open_db(b"meta", txn=txn, create=False))
    return env


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
