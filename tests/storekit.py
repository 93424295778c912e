"""Helpers shared by the store's test files (tests/test_store_*.py): real LMDB environments in
tmp dirs, real second processes. Their fixtures: store_fixtures.py."""

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from semdb.store import Item, Store

CB = 8  # code bytes used throughout
ROOT = Path(__file__).resolve().parents[1]


def code_for(i: int, salt: int = 0) -> bytes:
    return np.random.default_rng(i * 1000 + salt).integers(0, 256, CB, dtype=np.uint8).tobytes()


def emb_for(i: int, dim: int = 16) -> np.ndarray:
    x = np.random.default_rng(i).standard_normal(dim).astype(np.float32)
    return x / np.linalg.norm(x)


def new_item(path: str, h: str | None = None) -> Item:
    h = h or "sha256:" + hashlib.sha256(os.fsencode(path)).hexdigest()
    return Item.new(path, size=len(path), mtime_ns=1_700_000_000_000_000_000, hash=h, width=640, height=480)


def dataclass_item(path):
    return Item(1, path, 2, 3, "h", 4, 5, 6.0, 7.0)


def code_map(s: Store) -> dict[int, bytes]:
    ids, codes = s.load_codes()
    assert len(set(ids.tolist())) == len(ids)
    return {int(i): c.tobytes() for i, c in zip(ids, codes)}


def raw_segments(s: Store) -> dict[int, bytes]:
    """The stored code segments, by segment number, as bytes."""
    env, db = s.lmdb.env, s.lmdb.dbs["codes"]
    with env.begin() as txn:
        return {int.from_bytes(k, "big"): bytes(v) for k, v in txn.cursor(db=db)}


def snapshot(s: Store):
    return (
        [(it.id, it.path, it.hash) for it in s.iter_items()],
        code_map(s),
        s.meta(),
        raw_segments(s),
        s.staging_count(),
    )


def run_py(code: str, *args, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )
