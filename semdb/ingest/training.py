"""When a store trains a codec, and on what: the one place that decides it.

A store holds a set of codecs, one per kind of photo it was given. A photo that none of them
knows (semdb/codec/routing.py; every photo, before the first codec) waits staged (float16) and
is searched exactly. A codec trained on a handful of images is useless for the thousands that
follow (docs/notes/CODEC.md, "How many images a codec needs"), so a codec is trained on the staged
photos only once there are `min_train` of them (when an ingest ends), or `train_at` during a
long ingest (which then encodes the rest directly); `train_now` trains whatever is staged (at
least 2). Training, encoding the staged rows and adding the codec commit as one transaction.
The set holds at most `max_codecs`; past that, every photo goes to the codec that knows it best.

Later, `retrain_advice` says when the codec has become the wrong one: the store has grown
several-fold since it was trained, newly encoded items reconstruct markedly worse than its
training items did (drift), or they vary along directions its training photos did not (shift:
semdb/codec/shift.py). `semdb retrain` (ingest/retrain.py) then replaces it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..codec import Codec
from ..context import STATS_KEY, StoreContext
from ..errors import CodecError, InputError, StoreError, display_path
from ..faults import fault_point
from ..progress import Progress, report
from .encode import reconstruction_errors

DEFAULT_BITS = 256
MAX_CODECS = 8  # codecs in one store's set: each adds an ADC table to every query
MIN_TRAIN = 500  # images before a store trains its codec (measured: docs/notes/CODEC.md, "How many images")
TRAIN_AT = 50_000  # staged embeddings that trigger training during a long first ingest
RETRAIN_GROWTH = 4.0  # the store has grown this many times since training: retrain
DRIFT_RATIO = 1.5  # new items reconstruct this much worse than the training items: retrain
DRIFT_MIN_ITEMS = 100  # ...measured on at least this many new items (drift and shift)
# The latest items' mean share of energy outside the codec's training subspace, over the held-out
# baseline: about 0.8-0.9 for new photos of the training collection, 1.6-3.6 for photos half of
# whose spread lies elsewhere (docs/notes/CODEC.md, "Photos unlike the training photos").
SHIFT_RATIO = 1.3


@dataclass(frozen=True)
class CodecPolicy:
    bits: int = DEFAULT_BITS  # bits per item of a codec trained for a new store
    min_train: int = MIN_TRAIN
    train_at: int = TRAIN_AT
    train_now: bool = False  # train on what is staged when the ingest ends, however few
    max_codecs: int = MAX_CODECS

    def batches_to_stage(self, staged: int, batch_size: int) -> int:
        """Batches to embed before training is due, for a store without a codec."""
        return max(1, -(-(self.train_at - staged) // batch_size))

    def due(self, staged: int, ingest_ended: bool) -> bool:
        if ingest_ended:
            return staged >= (2 if self.train_now else self.min_train)
        return staged >= self.train_at


def codec_stats(codec: Codec, X: np.ndarray, codes: np.ndarray) -> dict:
    """The stats a store keeps beside a freshly trained codec (its training error: the baseline
    of drift)."""
    stats = {
        "trained_on": len(X),
        "trained_at": round(time.time(), 3),
        "train_error": float(reconstruction_errors(codec, X, codes).mean()),
        "encoded": 0,
        "error_sum": 0.0,
    }
    if codec.subspace is not None:
        stats.update(outside_baseline=codec.subspace.baseline, outside_recent=[0.0, 0.0])
    return stats


def train_if_due(ctx: StoreContext, policy: CodecPolicy, ingest_ended: bool, progress: Progress | None) -> bool:
    """Train a codec of the staged photos and add it to the store's set (its first codec, or one
    for photos none of its codecs knows) if the policy says it is time."""
    codecs = ctx.codecs
    if len(codecs) >= policy.max_codecs or not policy.due(ctx.store.staging_count(), ingest_ended):
        return False
    staged = list(ctx.store.iter_staging())
    ids = np.concatenate([i for i, _ in staged])
    X = np.concatenate([emb.astype(np.float32) for _, emb in staged])
    # Train on the images in content-hash order, not arrival order: a store grown over several
    # ingests gets the very codec of one built in one go from the same images.
    order = np.argsort([it.hash if it else "" for it in ctx.store.items(ids)], kind="stable")
    bits = ctx.codec.bits if codecs else policy.bits  # a store's codes are one width
    codec = train_codec(ctx, X[order], bits, progress)
    ctx.install_codec(codec, stats=lambda codes: codec_stats(codec, X, codes))
    return True


def record_captions(ctx: StoreContext, captions) -> int:
    """Embed `captions` (a text file, one per line, or a list of str) with the store's text tower
    and record them as the text queries the codec trains with (now, or at its next retrain).
    They need not describe the stored images one by one: a sample of how the store is searched."""
    if isinstance(captions, (str, os.PathLike)):
        try:
            captions = Path(captions).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(
                f"--captions {display_path(captions)}: cannot read ({getattr(e, 'strerror', None) or e})"
            ) from None
    texts = [t.strip() for t in captions if t.strip()]
    if len(texts) < 2:
        raise InputError(f"--captions: {len(texts)} non-empty lines; give at least 2 captions (one per line)")
    ctx.bind_model()
    Q = ctx.embedder.encode_texts(texts)
    with ctx.store.write() as w:
        w.set_training_queries(Q)
    return len(texts)


def train_codec(ctx: StoreContext, X: np.ndarray, bits: int, progress: Progress | None) -> Codec:
    """A codec for the store's images X, in the metric of the store's recorded text queries
    (`semdb ingest --captions`) when it has some, else the pair-free default."""
    queries = ctx.store.training_queries()
    report(progress, "training codec", 0, 1)
    fault_point("train")
    codec = Codec.train(
        X,
        bits=bits,
        seed=0,
        model_id=ctx.store.model_id(),
        progress=progress,
        queries=None if queries is None else queries.astype(np.float32),
    )
    report(progress, "training codec", 1, 1)
    return codec


def retrain_advice(meta: dict, items: int, max_codecs: int = MAX_CODECS) -> str | None:
    """Why the store's codecs should be retrained into one, or None."""
    if len([c for c in meta.get("codec_set") or () if c]) >= max_codecs:
        return (
            f"the store holds {max_codecs} codecs, the most it keeps: photos unlike all of them are encoded by "
            f"the nearest one"
        )
    stats = meta.get(STATS_KEY) or {}
    trained_on = stats.get("trained_on")
    if not meta.get("codec_id") or not trained_on:
        return None
    if items >= RETRAIN_GROWTH * trained_on and trained_on < TRAIN_AT:
        return f"the store has grown {items / trained_on:.1f}x since its codec was trained on {trained_on} images"
    if stats.get("encoded", 0) < DRIFT_MIN_ITEMS:
        return None
    ratio = shift_ratio(stats)
    if ratio is not None and ratio >= SHIFT_RATIO:
        return (
            f"the {stats['encoded']} images encoded since the codec was trained vary along directions its "
            f"training images did not ({ratio:.1f}x as much of their spread lies outside what it learned)"
        )
    ratio = drift_ratio(stats)
    if ratio is not None and ratio >= DRIFT_RATIO:
        return (
            f"the {stats['encoded']} images encoded since the codec was trained reconstruct {ratio:.1f}x worse "
            f"than its training images"
        )
    return None


def shift_ratio(stats: dict) -> float | None:
    """Mean share outside the codec's training subspace of the latest encoded items (about the
    last 256) / that of held-out training photos (None: nothing encoded since training, or a
    codec that keeps no subspace)."""
    total, weight = stats.get("outside_recent") or (0.0, 0.0)
    if not weight or not stats.get("outside_baseline"):
        return None
    return total / weight / stats["outside_baseline"]


def drift_ratio(stats: dict) -> float | None:
    """Mean reconstruction error of items encoded since training / that of the training items."""
    if not stats.get("encoded") or not stats.get("train_error"):
        return None
    return stats["error_sum"] / stats["encoded"] / stats["train_error"]


def adopt_codec(ctx: StoreContext, codec) -> None:
    """Use a codec trained elsewhere (a Codec or a codec file) for this store: it must fit the
    model; a store that has a codec must already use this one."""
    dim = ctx.embedder.dim
    if not isinstance(codec, Codec):
        codec = Codec.load(codec, dim=dim)
    if codec.dim != dim:
        raise CodecError(f"codec {codec.id} is for {codec.dim}-d embeddings, but the model gives {dim}-d")
    trained_for = codec.model_id or {}
    if trained_for.get("digest") and trained_for["digest"] != ctx.embedder.model_id["digest"]:
        raise CodecError(
            f"codec {codec.id} was trained for CLIP model {trained_for.get('name')}, not "
            f"{ctx.embedder.model_id['name']}; use a codec trained for this model"
        )
    current = ctx.store.meta().get("codec_id")
    if current and current != codec.id:
        raise StoreError(f"{ctx.path} already uses codec {current}; ingest without --codec, or use a new --store")
    if not current:
        ctx.install_codec(codec)
