"""Rows of vectors scaled to unit length: what CLIP embeddings, codebooks and centroids are
compared as (cosine = dot product)."""

from __future__ import annotations

import numpy as np


def unit_rows(X) -> np.ndarray:
    """X (n, D) with every row scaled to unit L2 norm, as float32; a zero row stays zero (as
    torch's F.normalize leaves it)."""
    X = np.asarray(X, np.float32)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
