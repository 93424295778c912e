"""The store's IVF upkeep: built past MIN_ITEMS codes, kept current by every write, rebuilt
when the store outgrows it or its codec changes (the index itself: semdb/search/ivf.py)."""

from __future__ import annotations

import hashlib

import numpy as np

from ..errors import CodecError
from ..progress import report
from ..search.ivf import Assigner, nlist_for, supported, train_centroids
from ..store import StoredIvf

MIN_ITEMS = 1_000_000  # below this many codes the exhaustive scan is fast enough (docs/BENCHMARKS.md)
REBUILD_GROWTH = 4  # rebuild (new centroids, every code reassigned) when the store has grown 4x


def _digest(C: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(C, np.float32).tobytes()).hexdigest()[:16]


def build(ctx, nlist: int | None = None, seed: int = 0, progress=None) -> dict:
    """Train the store's coarse centroids on its decoded codes, assign every code, and install
    both in one transaction (replacing any earlier IVF). Returns the IVF's meta record."""
    store, codec = ctx.store, ctx.codec
    if not supported(codec):
        raise ValueError("IVF needs an additive codec with 4-bit sub-codes")
    ids, codes = store.load_codes()
    nlist = int(nlist or nlist_for(len(ids)))
    report(progress, "ivf: coarse centroids", 0, 2)
    C = train_centroids(codec, codes, nlist, seed)
    report(progress, "ivf: assigning codes", 1, 2)
    lists = Assigner(codec, C)(codes)
    info = {"nlist": nlist, "dim": codec.dim, "codec_id": codec.id, "built_on": int(len(ids)), "id": _digest(C)}
    with store.write() as w:
        w.set_ivf(C, info, ids, lists)
    report(progress, "ivf: assigning codes", 2, 2)
    return info


def adopt(ctx, centroids: np.ndarray, info: dict) -> dict:
    """Install another store's IVF centroids (its meta record `info`, for this store's codec) as
    this store's, every code assigned to them, in one transaction. Shards searched as one
    (semdb.cluster) need the same centroids: then a query ranks the same lists in every shard.
    `built_on` is kept (the whole collection's size), so a shard's growth alone does not
    rebuild it with centroids of its own until it holds REBUILD_GROWTH x that."""
    store, codec = ctx.store, ctx.codec
    if not supported(codec) or info.get("codec_id") != codec.id:
        raise CodecError(
            f"{ctx.path}: these IVF centroids are for codec {info.get('codec_id')}, the store's "
            f"codec is {codec.id if codec else None}"
        )
    C = np.ascontiguousarray(centroids, np.float32)
    ids, codes = store.load_codes()
    lists = Assigner(codec, C)(codes)
    with store.write() as w:
        w.set_ivf(C, dict(info), ids, lists)
    return dict(info)


def rebuild(ctx, old: dict, progress=None) -> dict | None:
    """A new IVF for a store that had `old` (after retrain's switch): nlist for its size past
    MIN_ITEMS, else the old nlist."""
    if not supported(ctx.codec) or ctx.store.readonly:
        return None
    n = ctx.store.info()["coded"]
    return build(ctx, nlist=nlist_for(n) if n >= MIN_ITEMS else old["nlist"], progress=progress)


def maintain(ctx, progress=None) -> str | None:
    """After an ingest, import or retrain: build the IVF when the store first holds MIN_ITEMS
    codes, rebuild it when the store has grown REBUILD_GROWTH x since, or when its codec changed;
    else give codes whose segment has no list row theirs (normally none: commits assign new
    codes in their own transaction). Returns "built", "rebuilt", "filled" or None."""
    store, codec = ctx.store, ctx.codec
    if store.readonly or not supported(codec) or len(store.codec_ids()) > 1:
        return None  # one IVF lists one codec's codes: a store of several scans each codec's codes
    info = store.ivf_meta()
    n = store.info()["coded"]
    if info is None:
        if n < MIN_ITEMS:
            return None
        build(ctx, progress=progress)
        return "built"
    if info.get("codec_id") != codec.id or n >= REBUILD_GROWTH * max(info.get("built_on") or 1, 1):
        build(ctx, progress=progress)
        return "rebuilt"
    got = store.load_ivf()
    ids, codes = store.load_codes()
    if got is None or len(got[3]) != len(ids):
        return None
    missing = got[3] < 0
    if not missing.any():
        return None
    lists = ctx.assign_ivf_lists(codes[missing], StoredIvf(store.meta()["codec_id"], info, lambda: got[2]))
    if lists is None:
        return None
    with store.write() as w:
        w.fill_ivf(ids[missing], lists)
    return "filled"
