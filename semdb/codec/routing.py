"""Which codec of a set knows a photo: the choice behind a store that learns every source.

A codec spends its bits where its training photos vary, so each photo should be encoded by the
codec whose training photos it resembles, and a photo that none resembles should wait (staged,
searched exactly) until enough such photos exist to train a codec of their own. Each codec keeps
its training photos' principal subspace (shift.py); a photo's ratio under a codec is its share
of energy outside that subspace over the share held-out photos of the codec's collection had:

    x --every codec c: ratio_c(x) = outside_c(x) / baseline_c--> the lowest ratio: codec c*
      --ratio over c*'s 99th held-out percentile, or the batch as a whole unlike c* (its median
        ratio over c*'s 90th percentile) and this photo over c*'s median--> staged (-1)
      --else--> c*

One photo alone cannot tell a new source from an unusual home photo (their ratios overlap);
a batch of them can, so a batch that is unlike every codec stages every photo of it that is not
plainly typical of one.
"""

from __future__ import annotations

import numpy as np

STAGED = -1


def route(codecs, X: np.ndarray, stage: bool = True) -> np.ndarray:
    """(n,) index into `codecs` of the codec each row of X goes to, STAGED for rows none
    knows (`stage` False: every row goes to its best codec, e.g. when the set is full).
    Codecs without a subspace (files from before it existed, the paper baseline) know
    every photo equally well."""
    n = len(X)
    if not codecs:
        return np.full(n, STAGED, np.int64)
    spaces = [c.subspace for c in codecs]
    if not any(spaces):
        return np.zeros(n, np.int64)
    ratios = np.stack([s.ratio(X) if s is not None else np.ones(n) for s in spaces])  # (codecs, n)
    best = ratios.argmin(0)
    if not stage or not n:
        return best
    ratio = ratios[best, np.arange(n)]
    q50, q90, q99 = np.array([s.quantiles if s is not None else (np.inf,) * 3 for s in spaces]).T[:, best]
    unknown = ratio > q99
    unlike_batch = np.median(ratio / q90) > 1.0
    if unlike_batch:
        unknown |= ratio > q50
    return np.where(unknown, STAGED, best)
