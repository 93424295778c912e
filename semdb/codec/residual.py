"""The residual-stage quantizer: every slot a full-dimension residual stage of K words (the
pair-free default at 64 bits and below, docs/notes/CODEC.md).

    x ──E──> y = (x - b) E ──FAISS ResidualQuantizer beam search (beam RESIDUAL_BEAM)──> indices
    indices ──sum_m stages[m, k_m]──> y_hat ──P──> x_hat = b + P y_hat

E = S^(1/2) R, P = S^(-1/2) R: S the training images' second moment shrunk towards I (the
image-query metric), R its principal directions. x_hat is additive (tables T[m] = stages[m]
P^T): ADC exact, every slot still a 4-bit fast-scan slot.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from ..errors import CodecError
from ..packing import unpack
from ..progress import report
from .additive import pca, query_metric_sqrt
from .quantizer import MAX_FIT, LinearAdditiveQuantizer, TrainRequest, code_nbits

# The default at this budget and below, with at least RESIDUAL_MIN_TRAIN training embeddings;
# trained by FAISS's residual quantiser with beam RESIDUAL_TRAIN_BEAM, encoded with beam
# RESIDUAL_BEAM.
RESIDUAL_MAX_BITS = 64
RESIDUAL_BEAM = 16
RESIDUAL_TRAIN_BEAM = 8
RESIDUAL_MIN_TRAIN = 64
RESIDUAL_DIMS = None  # principal directions the stages live in (None: min(D, n - 1))
# The stages are trained and encoded in the image-query metric y = (x - b) S^(1/2), S the
# training images' second moment E[x x^T] shrunk this far towards I (as pca_slots.METRIC_SHRINK
# does for text queries): the error an image query's score sees is e^T E[q q^T] e. More of the
# metric (a smaller shrinkage) helps image queries and costs text queries; 0.95 is the balance
# measured over training seeds (bench/codec_seeds.py, docs/notes/CODEC.md).
RESIDUAL_METRIC_SHRINK = 0.95


class ResidualStageQuantizer(LinearAdditiveQuantizer):
    """M full-dimension residual stages (tensor stages (M, K, p); mean, basis E, decoder P)."""

    name = "residual"

    @cached_property
    def faiss_quantizer(self):
        """FAISS's residual quantiser over the stored stages (beam search with its LUT), built once."""
        import faiss  # noqa: PLC0415 - 0.2 s to import; `import semdb` must not load faiss

        S = self.tensors["stages"]
        rq = faiss.ResidualQuantizer(S.shape[2], self.m, self.nbits)
        faiss.copy_array_to_vector(np.ascontiguousarray(S, np.float32).ravel(), rq.codebooks)
        rq.is_trained = True
        rq.max_beam_size = int(self.config["beam"])
        rq.use_beam_LUT = 1
        rq.compute_codebook_tables()
        return rq

    def encode_batch(self, X: np.ndarray) -> np.ndarray:
        t = self.tensors
        Y = np.ascontiguousarray((X - t["mean"]) @ t["basis"], dtype=np.float32)
        return unpack(self.faiss_quantizer.compute_codes(Y), self.m, self.nbits).astype(np.int64)

    def coords(self, idx: np.ndarray) -> np.ndarray:
        """y_hat = sum_m stages[m, k_m], (n, p) float32."""
        S = self.tensors["stages"]
        Y = np.zeros((len(idx), S.shape[2]), np.float32)
        for m in range(self.m):
            Y += S[m][idx[:, m]]
        return Y

    @cached_property
    def tables(self) -> np.ndarray:
        """T (M, K, D): slot m's contribution to x_hat when it holds index k."""
        T = np.einsum("mkp,dp->mkd", self.tensors["stages"], self.decoder)
        return np.ascontiguousarray(T, dtype=np.float32)

    def check_consistent(self) -> None:
        t = self.tensors
        S, B = t.get("stages"), t["basis"]
        ok = (
            S is not None
            and S.ndim == 3
            and S.shape[:2] == (self.m, self.k)
            and t["mean"].shape == (self.dim,)
            and B.shape == (self.dim, S.shape[2])
            and self.decoder.shape == B.shape
            and np.isfinite(S).all()
            and np.isfinite(B).all()
        )
        if not ok:
            raise CodecError("codec tensors do not match its config (corrupt codec)")

    @staticmethod
    def train(request: TrainRequest) -> tuple[dict, dict]:
        """Tensors and config of a residual-stage codec.

        Centre on the mean, map into the image-query metric (S^(1/2), S the shrunk second moment
        of the training images), rotate onto its principal directions (p = min(D, n - 1) of them):
        encoder E = S^(1/2) R, decoder P = S^(-1/2) R. Train M full-dimension residual stages of K
        words on y = (x - b) E with FAISS's residual quantiser (beam RESIDUAL_TRAIN_BEAM,
        progressive-dimension k-means). Encoding is the same quantiser's beam search
        (RESIDUAL_BEAM) with its codebook-product LUT.
        """
        import faiss  # noqa: PLC0415 - 0.2 s to import; `import semdb` must not load faiss

        X, m, k, seed = request.X, request.m, request.k, request.seed
        rng = np.random.default_rng(seed)
        mean = X.mean(0).astype(np.float32)
        p = int(min(X.shape[1], len(X) - 1, RESIDUAL_DIMS or X.shape[1]))
        Sh = query_metric_sqrt(X, RESIDUAL_METRIC_SHRINK).astype(np.float64)  # images as their own queries
        w, V = np.linalg.eigh(Sh)
        Shi = (V / w) @ V.T
        M_ = (X - mean) @ Sh
        _, evecs = pca(M_, M_.mean(0))
        rot = evecs[:, :p]
        encoder = np.ascontiguousarray(Sh @ rot, dtype=np.float32)  # y = (x - b) E
        decoder = np.ascontiguousarray(Shi @ rot, dtype=np.float32)  # x_hat = b + P y_hat
        fit = X if len(X) <= MAX_FIT else X[np.sort(rng.choice(len(X), MAX_FIT, replace=False))]
        Y = np.ascontiguousarray((fit - mean) @ encoder, dtype=np.float32)
        rq = faiss.ResidualQuantizer(p, m, code_nbits(k))
        rq.max_beam_size = RESIDUAL_TRAIN_BEAM
        rq.cp.seed = int(seed) % (1 << 31)
        rq.cp.min_points_per_centroid = 1  # few points per word is expected for small stores: no warning
        rq.cp.verbose = False
        rq.verbose = False
        rq.train(Y)
        stages = faiss.vector_to_array(rq.codebooks).reshape(m, k, p).astype(np.float32)
        report(request.progress, "training codec", 1, 1)
        tensors = dict(mean=mean, basis=encoder, decoder=decoder, stages=stages)
        config = dict(
            arch="additive",
            m=m,
            k=k,
            residual=1,
            d=p,
            beam=RESIDUAL_BEAM,
            train_beam=RESIDUAL_TRAIN_BEAM,
            p=p,
            residual_metric_shrink=RESIDUAL_METRIC_SHRINK,
            scoring="cosine",
            coarse=0,
            query_source="none",
            n_queries=0,
        )
        return {name: np.ascontiguousarray(v) for name, v in tensors.items()}, config
