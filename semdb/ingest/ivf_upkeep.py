"""The store's IVF upkeep, one IVF per codec: built when a codec holds MIN_ITEMS codes, kept
current by every write, rebuilt when that codec's codes outgrow it or the codec changed (the
index itself: semdb/search/ivf.py). A codec below MIN_ITEMS is scanned whole."""

from __future__ import annotations

import hashlib

import numpy as np

from ..errors import CodecError
from ..progress import report
from ..search.ivf import Assigner, nlist_for, supported, train_centroids
from ..store import StoredIvf
from ..store.format import ivf_slots

MIN_ITEMS = 1_000_000  # below this many codes the exhaustive scan is fast enough (docs/BENCHMARKS.md)
REBUILD_GROWTH = 4  # rebuild (new centroids, every code reassigned) when the codec's codes have grown 4x


def _digest(C: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(C, np.float32).tobytes()).hexdigest()[:16]


def _codes_of(ctx, codec_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids, codes) of the items codec `codec_id` coded."""
    none = (np.empty(0, np.uint64), np.empty((0, ctx.store.meta().get("code_bytes") or 0), np.uint8))
    return ctx.store.load_code_groups().get(codec_id, none)


def build(ctx, nlist: int | None = None, seed: int = 0, progress=None, codec_id: str | None = None) -> dict:
    """Train coarse centroids on the decoded codes of codec `codec_id` (None: the store's first),
    assign each of its codes, and install both in one transaction (replacing any earlier IVF of
    that codec). Returns the IVF's meta record."""
    store = ctx.store
    codec = ctx.codec if codec_id is None else ctx.codecs[codec_id]
    if not supported(codec):
        raise ValueError("IVF needs an additive codec with 4-bit sub-codes")
    ids, codes = _codes_of(ctx, codec.id)
    nlist = int(nlist or nlist_for(len(ids)))
    report(progress, "ivf: coarse centroids", 0, 2)
    C = train_centroids(codec, codes, nlist, seed)
    report(progress, "ivf: assigning codes", 1, 2)
    lists = Assigner(codec, C)(codes)
    info = {"nlist": nlist, "dim": codec.dim, "codec_id": codec.id, "built_on": int(len(ids)), "id": _digest(C)}
    with store.write() as w:
        w.set_ivf(C, info, ids, lists, codec=codec.id)
    report(progress, "ivf: assigning codes", 2, 2)
    return info


def adopt(ctx, centroids: np.ndarray, info: dict) -> dict:
    """Install another store's IVF centroids (its meta record `info`, for a codec of this
    store's set) as this store's IVF of that codec, each of its codes assigned to them, in one
    transaction. Shards searched as one (semdb.cluster) need the same centroids: then a query
    ranks the same lists in every shard. `built_on` is kept (the whole collection's size), so a
    shard's growth alone does not rebuild it with centroids of its own until it holds
    REBUILD_GROWTH x that."""
    codec = ctx.codecs.get(info.get("codec_id"))
    if not supported(codec):
        raise CodecError(
            f"{ctx.path}: these IVF centroids are for codec {info.get('codec_id')}, the store's "
            f"codecs are {list(ctx.codecs) or None}"
        )
    C = np.ascontiguousarray(centroids, np.float32)
    ids, codes = _codes_of(ctx, codec.id)
    lists = Assigner(codec, C)(codes)
    with ctx.store.write() as w:
        w.set_ivf(C, dict(info), ids, lists, codec=codec.id)
    return dict(info)


def rebuild(ctx, old: dict, progress=None) -> dict | None:
    """A new IVF for a store that had `old` (after retrain's switch, one codec again): nlist for
    its size past MIN_ITEMS, else the old nlist."""
    if not supported(ctx.codec) or ctx.store.readonly:
        return None
    n = ctx.store.info()["coded"]
    return build(ctx, nlist=nlist_for(n) if n >= MIN_ITEMS else old["nlist"], progress=progress)


def maintain(ctx, progress=None) -> dict[str, str]:
    """After an ingest, import or retrain, for each codec of the store: build its IVF when it
    first holds MIN_ITEMS codes, rebuild it when its codes have grown REBUILD_GROWTH x since, or
    when the codec changed; else give its codes whose segment has no list row theirs (normally
    none: commits assign new codes in their own transaction). Returns {codec id: "built",
    "rebuilt" or "filled"} of the codecs whose IVF it changed."""
    store = ctx.store
    if store.readonly or (store.info()["coded"] < MIN_ITEMS and not ivf_slots(store.meta())):
        return {}  # no codec can need an IVF yet: its codes are not read
    groups, done = store.load_code_groups(), {}
    for codec_id, codec in ctx.codecs.items():
        action = _maintain_one(ctx, codec, *groups.get(codec_id, ((), ())), progress) if supported(codec) else None
        if action:
            done[codec_id] = action
    return done


def _maintain_one(ctx, codec, ids, codes, progress) -> str | None:
    store = ctx.store
    info = store.ivf_meta(codec.id)
    if info is None:
        if len(ids) < MIN_ITEMS:
            return None
        build(ctx, progress=progress, codec_id=codec.id)
        return "built"
    if info.get("codec_id") != codec.id or len(ids) >= REBUILD_GROWTH * max(info.get("built_on") or 1, 1):
        build(ctx, progress=progress, codec_id=codec.id)
        return "rebuilt"
    got = store.load_ivf(codec.id)
    if got is None or len(got[3]) != len(ids):
        return None
    missing = got[3] < 0
    if not missing.any():
        return None
    lists = ctx.assign_ivf_lists(codes[missing], StoredIvf(codec.id, info, lambda: got[2]))
    if lists is None:
        return None
    with store.write() as w:
        w.fill_ivf(ids[missing], lists, codec=codec.id)
    return "filled"
