"""A retrain's training sample, re-embedded from the files, kept in STORE/retrain-sample.npz from
while it is gathered until the pending codec trained on it is committed: a retrain interrupted
before then (Ctrl-C or a kill while it trains, or while it re-embeds) starts again from the
embeddings it had, instead of embedding every sampled file again. An embedding is reused for
the same item with the same content hash, embedded by the same model.

The file is written whole to a temporary name and renamed over the old one (a kill leaves the
old file or the new one), every SAVE_SECONDS while re-embedding, when interrupted, and before
training; it is deleted once the pending codec is committed (ingest/retrain.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..context import StoreContext

FILE = "retrain-sample.npz"
SAVE_SECONDS = 30.0


def _path(ctx: StoreContext) -> Path:
    return Path(ctx.path) / FILE


def _model(ctx: StoreContext) -> str:
    return str((ctx.store.model_id() or {}).get("digest") or "")


def load(ctx: StoreContext) -> dict[int, tuple[str, np.ndarray]]:
    """{item id: (content hash, float32 embedding)} of an interrupted retrain's sample ({}: none,
    or embedded by another model)."""
    try:
        with np.load(_path(ctx), allow_pickle=False) as f:
            if str(f["model"]) != _model(ctx):
                return {}
            return {int(i): (str(h), x) for i, h, x in zip(f["ids"], f["hashes"], f["embeddings"])}
    except (OSError, ValueError, KeyError):  # none yet, or not one this version can read
        return {}


def save(ctx: StoreContext, embedded: dict[int, tuple[str, np.ndarray]]) -> None:
    """Keep `embedded` ({item id: (content hash, embedding)}) for a retrain that is interrupted."""
    if not embedded:
        return
    path = _path(ctx)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(
            fh,
            model=np.array(_model(ctx)),
            ids=np.fromiter(embedded, np.int64, len(embedded)),
            hashes=np.array([h for h, _ in embedded.values()]),
            embeddings=np.stack([x for _, x in embedded.values()]).astype(np.float32),
        )
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def discard(ctx: StoreContext) -> None:
    for path in (_path(ctx), _path(ctx).with_name(FILE + ".tmp")):
        path.unlink(missing_ok=True)
