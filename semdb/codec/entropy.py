"""Entropy coding of code indices under a static per-slot categorical model (constriction).

The stored and scanned codes are fixed-length; this measures (and can produce) the rate those
same indices need when entropy coded, the paper's "Huffman coding of indices" figure, with a
range coder instead of Huffman. The model is a table of per-slot index probabilities learned
from the training codes and saved with the codec, so the rate is that of a real static coder.
"""

from __future__ import annotations

import numpy as np


def fit_model(indices: np.ndarray, k: int, prior: float = 0.5) -> np.ndarray:
    """(n, M) indices -> (M, k) float64 probabilities, add-`prior` smoothed so no index is impossible."""
    m = indices.shape[1]
    counts = np.full((m, k), prior, dtype=np.float64)
    for slot in range(m):
        counts[slot] += np.bincount(indices[:, slot], minlength=k)
    return counts / counts.sum(axis=1, keepdims=True)


def _models(probs: np.ndarray):
    import constriction  # noqa: PLC0415 - only entropy coding needs it

    return [constriction.stream.model.Categorical(p, perfect=False) for p in probs]


def compress(indices: np.ndarray, probs: np.ndarray) -> bytes:
    """Range-code (n, M) indices slot by slot; returns the compressed bytes."""
    import constriction  # noqa: PLC0415 - only entropy coding needs it

    encoder = constriction.stream.queue.RangeEncoder()
    for slot, model in enumerate(_models(probs)):
        encoder.encode(np.ascontiguousarray(indices[:, slot], dtype=np.int32), model)
    return encoder.get_compressed().tobytes()


def decompress(data: bytes, n: int, probs: np.ndarray) -> np.ndarray:
    import constriction  # noqa: PLC0415 - only entropy coding needs it

    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(data, dtype=np.uint32).copy())
    cols = [decoder.decode(model, n) for model in _models(probs)]
    return np.stack(cols, axis=1).astype(np.int64)


def entropy_bits(indices: np.ndarray, probs: np.ndarray) -> float:
    """Mean entropy-coded bits per item (the real coder's output length, not an estimate)."""
    if len(indices) == 0:
        return 0.0
    return len(compress(indices, probs)) * 8 / len(indices)
