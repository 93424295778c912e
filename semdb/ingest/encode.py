"""Stage 4, embed and encode: CLIP on a batch of decoded images, then the store's codecs: each
image goes to the codec of the store's set that knows it (semdb/codec/routing.py), or waits
staged when none does. The one function both engines run (the local engine on this thread, Ray
actors on the cluster)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..codec import Codec
from ..codec.routing import STAGED, route
from ..faults import fault_point
from ..rows import unit_rows
from .records import DecodedImage, Vectors


@dataclass(frozen=True)
class CodecSet:
    """The store's codecs (its first codec first) as a batch finds them, and whether an image
    that none of them knows may wait staged for a codec of its own (not once the set is full)."""

    codecs: tuple[Codec, ...] = ()
    stage: bool = True

    def __bool__(self) -> bool:
        return bool(self.codecs)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.codecs)

    def encode(self, embeddings: np.ndarray) -> Vectors:
        """Each embedding's code under the codec that knows it, with what drift and shift are
        measured in (semdb/codec/shift.py); float16 embeddings for the rows no codec takes."""
        X = np.asarray(embeddings, np.float32)
        chosen = route(self.codecs, X, self.stage)
        staged = chosen == STAGED
        if staged.all():
            return Vectors(embeddings=X.astype(np.float16))
        n, width = len(X), self.codecs[0].code_bytes
        codes, errors, outside = np.zeros((n, width), np.uint8), np.full(n, np.nan), np.full(n, np.nan)
        for j, codec in enumerate(self.codecs):
            rows = np.flatnonzero(chosen == j)
            if len(rows):
                codes[rows] = codec.encode(X[rows])
                errors[rows] = reconstruction_errors(codec, X[rows], codes[rows])
                shares = codec.outside(X[rows])
                outside[rows] = np.nan if shares is None else shares
        ids = tuple(None if j == STAGED else self.codecs[j].id for j in chosen.tolist())
        return Vectors(codes, X.astype(np.float16) if staged.any() else None, ids, errors, outside)

    def decode(self, vectors: Vectors) -> np.ndarray:
        """(n, D) float32: each row's decoded code, or its embedding where it is staged."""
        if vectors.codec_ids is None:
            return np.asarray(vectors.embeddings, np.float32)
        out = np.zeros((len(vectors), self.codecs[0].dim), np.float32)
        for codec in self.codecs:
            rows = np.flatnonzero([c == codec.id for c in vectors.codec_ids])
            if len(rows):
                out[rows] = codec.decode(vectors.codes[rows])
        staged = np.flatnonzero([c is None for c in vectors.codec_ids])
        if len(staged):
            out[staged] = vectors.embeddings[staged]
        return out


def codec_set(ctx, policy) -> CodecSet:
    """The store's set as an ingest batch encodes with it: a photo no codec knows waits staged
    while the set has room for a codec of its own. A codec trained on fewer photos than a codec
    is trained on (`ingest --train-now` on a small store) cannot tell what it does not know:
    while the set holds one, every photo goes to a codec."""
    codecs = tuple(ctx.codecs.values())
    trained_on = min((c.config.get("n_train") or 0 for c in codecs), default=0)
    return CodecSet(codecs, stage=not codecs or (len(codecs) < policy.max_codecs and trained_on >= policy.min_train))


def embed_and_encode(embedder, images: Sequence[DecodedImage], codecs: CodecSet) -> Vectors | None:
    """Vectors of the images that decoded (in order), or None if none did."""
    good = [img.pixels for img in images if img.error is None]
    if not good:
        return None
    if isinstance(good[0], np.ndarray):  # preprocessed for the ONNX image tower
        embeddings = embedder.encode_images(np.stack(good))
    else:
        import torch  # noqa: PLC0415 - the ONNX path runs without torch

        embeddings = embedder.encode_images(torch.stack(good))
    fault_point("embedded")
    return codecs.encode(embeddings)


def reconstruction_errors(codec: Codec, X: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Squared distance of each unit embedding to its decoded code: what drift is measured in."""
    X = unit_rows(X)
    return ((X - codec.decode(codes)) ** 2).sum(1)
