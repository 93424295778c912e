"""ADC look-up tables of an additive codec: LUT[m, k] = <q, T[m, k]>, so that
<q, x_hat> = <q, b> + sum_m LUT[m, k_m] (the codec owns its tables; semdb.search scans with them)."""

from __future__ import annotations

import numpy as np


def adc_lut(Q: np.ndarray, tables: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nq, D) queries -> LUT (nq, M, K) float32 and the constant <q, b> per query."""
    Q = np.asarray(Q, np.float32)
    if len(Q) <= 8:
        # einsum's own single-threaded loop: a multi-threaded BLAS call this small costs more
        # in thread wake-ups than in arithmetic on a busy machine.
        lut = np.einsum("qd,mkd->qmk", Q, tables)
        offset = np.einsum("qd,d->q", Q, bias)
    else:
        m, k, dim = tables.shape
        lut = (tables.reshape(m * k, dim) @ Q.T).T.reshape(len(Q), m, k)
        offset = Q @ bias
    return np.ascontiguousarray(lut, dtype=np.float32), offset.astype(np.float32)


def adc_scores(lut: np.ndarray, offset: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Exact ADC: (nq, M, K) LUT and (n, M) indices -> (nq, n) float32 scores."""
    nq, m, k = lut.shape
    # Flatten (m, k) so one gather per query picks every slot's entry, then sum over slots.
    flat = indices + np.arange(m) * k  # (n, M) positions in the flattened LUT
    out = np.empty((nq, len(indices)), dtype=np.float32)
    for i in range(nq):
        out[i] = lut[i].reshape(-1)[flat].sum(axis=1) + offset[i]
    return out
