"""Stage 4, embed and encode: CLIP on a batch of decoded images, then the codec when there
is one. The one function both engines run (the local engine on this thread, Ray actors on
the cluster)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..codec import Codec
from ..faults import fault_point
from ..rows import unit_rows
from .records import DecodedImage, Vectors


def embed_and_encode(embedder, images: Sequence[DecodedImage], codec: Codec | None) -> Vectors | None:
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
    if codec is None:
        return Vectors(embeddings=embeddings.astype(np.float16))
    return encode(codec, embeddings)


def encode(codec: Codec, embeddings: np.ndarray) -> Vectors:
    """Codes of `embeddings`, with what drift and shift are measured in (semdb/codec/shift.py)."""
    X = np.asarray(embeddings, np.float32)
    codes = codec.encode(X)
    return Vectors(
        codes=codes, codec_id=codec.id, errors=reconstruction_errors(codec, X, codes), outside=codec.outside(X)
    )


def reconstruction_errors(codec: Codec, X: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Squared distance of each unit embedding to its decoded code: what drift is measured in."""
    X = unit_rows(X)
    return ((X - codec.decode(codes)) ** 2).sum(1)
