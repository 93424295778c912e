"""How unlike its training photos new photos are: the signal behind "retrain, your collection moved".

A codec spends its bits on the directions its training photos varied along. Photos from another
source (screenshots, scans, another camera, a new hobby) vary along other directions, and what a
codes-only store drops there is gone for good. Reconstruction error shows this only faintly (the
codec still reconstructs the shared part well), so the codec also keeps its training set's
principal subspace and, for every photo it encodes, measures the share of the photo's centred
energy that falls outside it:

    outside(x) = 1 - ||U^T (x - mu)||^2 / ||x - mu||^2      U: the top SUBSPACE_DIMS directions

Its baseline is what held-out photos of the training collection score: a codec's own training
photos score too low (PCA fits them), so the baseline is cross-validated (PCA of one half,
scored on the other). New photos scoring SHIFT_RATIO times the baseline on average are photos
the codec was not made for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SUBSPACE_DIMS = 128  # at most; a quarter of D for small models (room to measure outside it)
RATIO_QUANTILES = (0.5, 0.9, 0.99)  # of held-out photos' outside share / baseline: what routing compares to
# For codecs saved without their own quantiles: Flickr8k's held-out photos under a ViT-B/32 codec.
DEFAULT_RATIO_QUANTILES = (1.0, 1.32, 1.62)


@dataclass(frozen=True)
class Subspace:
    """The training photos' mean and top principal directions, and the held-out baseline."""

    mean: np.ndarray  # (D,) float32
    basis: np.ndarray  # (D, r) float32, orthonormal columns
    baseline: float  # mean outside share of held-out photos of the training collection
    quantiles: tuple = DEFAULT_RATIO_QUANTILES  # held-out photos' outside / baseline at RATIO_QUANTILES

    def outside(self, X: np.ndarray) -> np.ndarray:
        """(n,) share of each row's energy around the training mean outside the subspace."""
        return outside_share(X, self.mean, self.basis)

    def ratio(self, X: np.ndarray) -> np.ndarray:
        """(n,) outside share over the held-out baseline: about 1 for photos like the training ones."""
        return self.outside(X) / self.baseline


def subspace_dims(dim: int) -> int:
    return max(1, min(SUBSPACE_DIMS, dim // 4))


def principal(X: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, top-r principal directions) of the rows of X."""
    X = np.asarray(X, np.float64)
    mean = X.mean(0)
    C = X - mean
    evals, evecs = np.linalg.eigh(C.T @ C)
    return mean, evecs[:, np.argsort(-evals)[:r]]


def outside_share(X: np.ndarray, mean: np.ndarray, basis: np.ndarray) -> np.ndarray:
    C = np.asarray(X, np.float64) - mean
    total = np.einsum("ij,ij->i", C, C)
    inside = ((C @ basis) ** 2).sum(1)
    return np.clip(1.0 - inside / np.maximum(total, 1e-30), 0.0, 1.0)


def fit_subspace(X: np.ndarray, seed: int = 0) -> Subspace:
    """The subspace of training embeddings X (n, D) and its cross-validated baseline."""
    X = np.asarray(X, np.float64)
    r = subspace_dims(X.shape[1])
    mean, basis = principal(X, r)
    halves = np.array_split(np.random.default_rng(seed).permutation(len(X)), 2)
    if min(len(h) for h in halves) < 2:  # too few photos to cross-validate: the in-sample share
        scores = outside_share(X, mean, basis)
    else:
        parts = []
        for fit, held in (halves, halves[::-1]):
            m, b = principal(X[fit], r)
            parts.append(outside_share(X[held], m, b))
        scores = np.concatenate(parts)
    baseline = max(float(scores.mean()), 1e-6)
    quantiles = tuple(round(float(q), 4) for q in np.quantile(scores / baseline, RATIO_QUANTILES))
    return Subspace(mean.astype(np.float32), basis.astype(np.float32), baseline, quantiles)
