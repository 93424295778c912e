"""When a store trains its codec, and on what: the one place that decides it.

A store without a codec stages its new embeddings (float16). The codec is trained from every
staged embedding when `train_at` are staged (a long first ingest then encodes the rest
directly), or when an ingest ends with at least `min_train` staged; training, encoding the
staged rows and installing the codec commit as one transaction (StoreContext.install_codec).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..codec import Codec
from ..context import StoreContext
from ..errors import CodecError, StoreError
from ..faults import fault_point
from ..progress import Progress, report

DEFAULT_BITS = 256
TRAIN_AT = 50_000  # staged embeddings that trigger codec training during a long first ingest
MIN_TRAIN = 2  # the codec needs at least this many embeddings to learn from


@dataclass(frozen=True)
class CodecPolicy:
    bits: int = DEFAULT_BITS  # bits per item of a codec trained for a new store
    min_train: int = MIN_TRAIN
    train_at: int = TRAIN_AT

    def batches_to_stage(self, staged: int, batch_size: int) -> int:
        """Batches to embed before training is due, for a store without a codec."""
        return max(1, -(-(self.train_at - staged) // batch_size))

    def due(self, staged: int, ingest_ended: bool) -> bool:
        return staged >= (self.min_train if ingest_ended else self.train_at)


def train_if_due(ctx: StoreContext, policy: CodecPolicy, ingest_ended: bool, progress: Progress | None) -> bool:
    """Train and install the codec if the store has none and the policy says it is time."""
    if ctx.codec is not None or not policy.due(ctx.store.staging_count(), ingest_ended):
        return False
    X = np.concatenate([emb.astype(np.float32) for _, emb in ctx.store.iter_staging()])
    report(progress, "training codec", 0, 1)
    fault_point("train")
    codec = Codec.train(X, bits=policy.bits, seed=0, model_id=ctx.store.model_id())
    report(progress, "training codec", 1, 1)
    ctx.install_codec(codec)
    return True


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
        raise CodecError(f"codec {codec.id} was trained for CLIP model {trained_for.get('name')}, not "
                         f"{ctx.embedder.model_id['name']}; use a codec trained for this model")
    current = ctx.store.meta().get("codec_id")
    if current and current != codec.id:
        raise StoreError(f"{ctx.path} already uses codec {current}; ingest without --codec, or use a new --store")
    if not current:
        ctx.install_codec(codec)
