"""The PCA-slot quantizer: `additive.py`'s water-filled slots behind an optional coarse word, in
an optional query metric, with optional score-aware re-encoding along each item's text direction.

    x ──(coarse word c: the best of COARSE_CANDIDATES, optional)──> r = x - c - b
      ──E──> z (n_cols, d) ──encode_columns (beam search per column)──> slot indices
      ──(text_map A: u = normalize(x A), refine_anisotropic along u, optional)──> indices
    indices ──decode_coords──> z_hat ──P──> x_hat = b + c + P z_hat

E = P = B (orthonormal PCA blocks) without queries; E = S^(1/2) B, P = S^(-1/2) B in the
queries' metric S. docs/notes/CODEC.md has the method and its measurements.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from ..errors import CodecError
from .additive import (
    Layout,
    column_combos,
    decode_coords,
    encode_columns,
    kmeans,
    query_metric_sqrt,
    refine_anisotropic,
    ridge_map,
    text_mixture,
    train_additive,
)
from .quantizer import MAX_FIT, LinearAdditiveQuantizer, TrainRequest

COARSE_CANDIDATES = 4  # coarse words tried per item (each with its residual encoded)
# Queries (docs/notes/CODEC.md): the query metric's shrinkage towards I, the anisotropic weight eta,
# coordinate-descent sweeps, the ridge lambda of the image -> text map, the softmax temperature
# of an unpaired bag of texts, and at most this many texts in the bag's mixture.
METRIC_SHRINK = 0.5
ETA = 10.0
SWEEPS = 2
RIDGE_LAMBDA = 0.1
TAU = 0.03
MAX_BAG = 8192


class PcaSlotQuantizer(LinearAdditiveQuantizer):
    """Slots of d PCA directions sharing one codebook (tensors col, stage, scale, codebook;
    optionally coarse, decoder and text_map)."""

    name = "pca-slots"

    def __init__(self, config: dict, tensors: dict[str, np.ndarray]):
        super().__init__(config, tensors)
        self.layout = Layout(int(config["d"]), tensors["col"].astype(np.int64), tensors["stage"].astype(np.int64))
        self.n_coarse = int(config.get("coarse", 0))

    def coords(self, idx: np.ndarray) -> np.ndarray:
        t = self.tensors
        return decode_coords(idx[:, self.n_coarse :], self.layout, t["scale"], t["codebook"]).reshape(len(idx), -1)

    def column_coords(self, R: np.ndarray) -> np.ndarray:
        """(n, D) residuals r = x - b (- c) -> (n, n_cols, d) coordinates z = r E."""
        return (R @ self.tensors["basis"]).reshape(len(R), self.layout.n_cols, self.layout.d)

    def encode_columns(self, Z: np.ndarray) -> np.ndarray:
        t = self.tensors
        return encode_columns(Z, self.layout, t["scale"], t["codebook"], int(self.config["beam"]))

    def encode_batch(self, X: np.ndarray) -> np.ndarray:
        t = self.tensors
        if self.n_coarse:
            word, idx = self.encode_coarse(X)
            R = X - t["coarse"][word] - t["mean"]
            Z = self.column_coords(R)
        else:
            R = X - t["mean"]
            Z = self.column_coords(R)
            idx = self.encode_columns(Z)
        if "text_map" in t:
            idx = self.refine_toward_text(X, R, Z, idx)
        return np.concatenate([word[:, None], idx], axis=1) if self.n_coarse else idx

    def encode_coarse(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The coarse word and the slots chosen together: the best few coarse words by distance,
        each with its residual encoded, keep the one of least total error. Returns the coarse
        words (n,) and the slots' indices (n, M - 1)."""
        t = self.tensors
        C0 = t["coarse"]
        near = X @ C0.T - 0.5 * (C0 * C0).sum(1)
        n_cand = min(COARSE_CANDIDATES, len(C0))
        cand = (
            np.argpartition(-near, n_cand - 1, axis=1)[:, :n_cand]
            if n_cand < len(C0)
            else np.tile(np.arange(len(C0)), (len(X), 1))
        )
        best_err = np.full(len(X), np.inf)
        word = np.zeros(len(X), np.int64)
        idx = np.zeros((len(X), self.layout.m), np.int64)
        for j in range(cand.shape[1]):
            aj = cand[:, j]
            Rc = X - C0[aj] - t["mean"]
            ij = self.encode_columns(self.column_coords(Rc))
            Zh = decode_coords(ij, self.layout, t["scale"], t["codebook"]).reshape(len(X), -1)
            err = ((Rc - Zh @ self.decoder.T) ** 2).sum(1)
            better = err < best_err
            best_err[better], word[better], idx[better] = err[better], aj[better], ij[better]
        return word, idx

    @cached_property
    def combos(self):
        """Every refinable column's joint choices (additive.column_combos), built once."""
        t = self.tensors
        return column_combos(self.layout, t["scale"], t["codebook"])

    def refine_toward_text(self, X: np.ndarray, R: np.ndarray, Z: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Score-aware re-encoding of the slots along each item's predicted text direction u."""
        t = self.tensors
        U = X @ t["text_map"]
        U /= np.maximum(np.linalg.norm(U, axis=1, keepdims=True), 1e-12)
        W = (U @ self.decoder).reshape(Z.shape)
        r = (R * U).sum(1) - (W * Z).sum((1, 2))  # u . (the part of x the slots cannot reach)
        eta, sweeps = float(self.config["eta"]), int(self.config["sweeps"])
        return refine_anisotropic(Z, W, r, idx, self.layout, t["scale"], t["codebook"], eta, sweeps, self.combos)

    @cached_property
    def tables(self) -> np.ndarray:
        """T (M, K, D): slot m's contribution to x_hat when it holds index k."""
        t, lay = self.tensors, self.layout
        blocks = self.decoder.reshape(self.dim, lay.n_cols, lay.d)[:, lay.col, :]  # (D, M', d)
        T = np.einsum("dmj,kj->mkd", blocks, t["codebook"]) * t["scale"][:, None, None]
        if self.n_coarse:
            T = np.concatenate([t["coarse"][None], T])
        return np.ascontiguousarray(T, dtype=np.float32)

    def check_consistent(self) -> None:
        t, lay = self.tensors, self.layout
        width = lay.n_cols * lay.d
        ok = (
            t["mean"].shape == (self.dim,)
            and t["codebook"].shape == (self.k, lay.d)
            and t["basis"].shape == (self.dim, width)
            and self.decoder.shape == (self.dim, width)
            and len(t["scale"]) == self.m - self.n_coarse
            and len(lay.col) == self.m - self.n_coarse
            and (not self.n_coarse or t.get("coarse", np.zeros(0)).shape == (self.k, self.dim))
            and ("text_map" not in t or t["text_map"].shape == (self.dim, self.dim))
            and np.isfinite(t["basis"]).all()
            and np.isfinite(t["codebook"]).all()
        )
        if not ok:
            raise CodecError("codec tensors do not match its config (corrupt codec)")

    @staticmethod
    def train(request: TrainRequest) -> tuple[dict, dict]:
        """Tensors and config of a PCA-slot codec (docs/notes/CODEC.md).

        1. coarse slot (optional): k-means of the images in full dimension; the rest codes x - c.
        2. metric (with queries): the slots are trained on y = r S^(1/2), S the shrunk query second
           moment, and decode through P = S^(-1/2) B: still one linear map, ADC exact.
        3. text map (with queries): A predicts each item's text direction u = normalize(x A): a ridge
           regression to the paired texts, or to each image's softmax mixture of an unpaired bag.
           Encoding then re-encodes score-aware along u (refine_anisotropic).
        """
        X, Q, paired, m, k, d = request.X, request.queries, request.paired, request.m, request.k, request.d
        n_coarse, seed, beam = request.n_coarse, request.seed, request.beam
        rng = np.random.default_rng(seed)
        tensors: dict[str, np.ndarray] = {}
        R = X
        if n_coarse:
            C0 = kmeans(X, k, seed)
            R = X - C0[np.argmax(X @ C0.T - 0.5 * (C0 * C0).sum(1), axis=1)]
            tensors["coarse"] = np.ascontiguousarray(C0, dtype=np.float32)
        Sh = None
        if Q is not None:
            Sh = query_metric_sqrt(Q, METRIC_SHRINK)
        Y = R if Sh is None else (R @ Sh).astype(np.float32)
        p = train_additive(Y, m - n_coarse, k, d, seed=seed, beam=beam, max_fit=MAX_FIT, progress=request.progress)
        basis = p["basis"]
        if Sh is None:
            tensors["mean"], tensors["basis"] = p["mean"], basis
        else:
            w, V = np.linalg.eigh(Sh.astype(np.float64))
            Shi = (V / w) @ V.T
            tensors["mean"] = (p["mean"] @ Shi).astype(np.float32)
            tensors["basis"] = (Sh @ basis).astype(np.float32)  # encoder E: z = (r - b) E
            tensors["decoder"] = (Shi @ basis).astype(np.float32)  # decoder P: r_hat = b + P z
        tensors.update(
            col=p["col"].astype(np.int32), stage=p["stage"].astype(np.int32), scale=p["scale"], codebook=p["codebook"]
        )
        config = dict(
            arch="additive",
            m=m,
            k=k,
            d=d,
            beam=beam,
            iters=p["iters"],
            dead_restarts=p["dead_restarts"],
            scoring="cosine",
            coarse=n_coarse,
            query_source="none",
            n_queries=0,
        )
        if Q is not None:
            if paired:
                target = Q
            else:
                bag = Q if len(Q) <= MAX_BAG else Q[rng.choice(len(Q), MAX_BAG, replace=False)]
                target = text_mixture(X, bag, TAU)
            tensors["text_map"] = ridge_map(X, target, RIDGE_LAMBDA)
            config.update(
                query_source="paired" if paired else "unpaired",
                n_queries=int(len(Q)),
                metric_shrink=METRIC_SHRINK,
                eta=ETA,
                sweeps=SWEEPS,
                ridge_lambda=RIDGE_LAMBDA,
                tau=None if paired else TAU,
            )
        return {name: np.ascontiguousarray(v) for name, v in tensors.items()}, config
