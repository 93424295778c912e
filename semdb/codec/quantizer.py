"""What the codec's quantizer variants share: the training request, the stage interface, and the
linear additive decoder of the two ADC-scored variants.

A quantizer turns (n, D) unit embeddings into (n, M) codebook indices and back. `Codec` holds
one, chosen from its config by `codec.QUANTIZERS`; each variant is one class in its own module
(`pca_slots.PcaSlotQuantizer`, `residual.ResidualStageQuantizer`, `paper.PaperQuantizer`) with
the members of `Quantizer` and a `train(TrainRequest) -> (tensors, config)` static method.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import numpy as np

from ..errors import CodecError
from ..rows import unit_rows

MAX_FIT = 16384  # training fits its codebooks on at most this many embeddings (PCA uses all)
ENCODE_BATCH = 4096  # embeddings encoded at once (bounds the beam searches' memory)


def code_nbits(k: int) -> int:
    """Bits of one index into a codebook of `k` words (a power of two from 2 to 256)."""
    nbits = int(k).bit_length() - 1
    if k < 2 or 1 << nbits != k or nbits > 8:
        raise CodecError(f"k={k}: the codebook size must be a power of two between 2 and 256")
    return nbits


@dataclass(frozen=True)
class TrainRequest:
    """`Codec.train`'s validated arguments, as a variant's training reads them."""

    X: np.ndarray  # (n, D) unit training embeddings
    bits: int | None
    seed: int
    progress: object = None  # progress(stage, done, total), the semdb.progress protocol
    queries: np.ndarray | None = None  # (n_q, D) unit text query embeddings
    paired: bool = False  # queries[i] describes X[i]
    m: int | None = None  # slots (None: the variant picks its shape from `bits`)
    k: int | None = None  # codebook words per slot
    d: int | None = None  # sub-vector dimension of the PCA slots
    n_coarse: int = 0  # 1: slot 0 is a full-dimension coarse word
    beam: int | None = None  # encoder beam width of the PCA slots


class Quantizer(Protocol):
    """One codec variant's stages between embeddings and indices (built from config and tensors)."""

    name: str  # the variant's key in codec.QUANTIZERS
    adc: bool  # scored by ADC over `tables`; else by decoding (decode-then-score)
    n_coarse: int  # 1 when index 0 of a code is a full-dimension coarse word

    def encode_indices(self, X: np.ndarray) -> np.ndarray:
        """(n, D) unit embeddings -> (n, M) int64 indices."""

    def decode_indices(self, idx: np.ndarray) -> np.ndarray:
        """(n, M) indices -> (n, D) reconstructions x_hat, the vectors ADC scores are inner products with."""

    def decode_unit(self, idx: np.ndarray) -> np.ndarray:
        """(n, M) indices -> (n, D) float32 unit-norm reconstructions."""

    @property
    def tables(self) -> np.ndarray:
        """T (M, K, D): slot m's contribution to x_hat when it holds index k (CodecError without ADC)."""

    def norms(self, idx: np.ndarray) -> np.ndarray:
        """||x_hat|| of (n, M) indices, float32."""

    def slot_coords(self, idx: np.ndarray) -> np.ndarray:
        """(n, M) indices -> float32 coordinates z with x_hat = mean (+ coarse word) + decoder z."""

    def check_consistent(self) -> None:
        """Raise CodecError when the tensors do not match the config (a corrupt codec file)."""


class LinearAdditiveQuantizer:
    """Base of the ADC-scored variants: x_hat = b (+ coarse word) + P z, z = `coords(idx)` a sum
    of one codeword per slot, so <q, x_hat> is a sum of per-slot table lookups (`tables`).

    Tensors: mean b (D,), basis E (D, p) (the encoder: z = (x - b) E), optionally decoder P
    (D, p) (else P = E, orthonormal) and coarse (K, D). A subclass gives `name`, `coords`,
    `encode_batch`, `tables`, `check_consistent` and `train`.
    """

    name = ""
    adc = True
    n_coarse = 0
    layout = None  # the PCA slots' Layout; None for the other variants

    def __init__(self, config: dict, tensors: dict[str, np.ndarray]):
        self.config = config
        self.tensors = tensors
        self.dim = int(config["dim"])
        self.m = int(config["m"])
        self.k = int(config["k"])
        self.nbits = code_nbits(self.k)

    @property
    def decoder(self) -> np.ndarray:
        """P (D, p): x_hat = b (+ coarse word) + P z. The encoding basis itself unless the codec
        was trained in a query metric (then P = S^(-1/2) B, E = S^(1/2) B)."""
        return self.tensors.get("decoder", self.tensors["basis"])

    def coords(self, idx: np.ndarray) -> np.ndarray:
        """(n, M) indices -> (n, p) coordinates z of the slots (without the coarse word)."""
        raise NotImplementedError

    def encode_batch(self, X: np.ndarray) -> np.ndarray:
        """(n, D) unit embeddings -> (n, M) int64 indices, n <= ENCODE_BATCH."""
        raise NotImplementedError

    def encode_indices(self, X: np.ndarray) -> np.ndarray:
        out = [self.encode_batch(X[i : i + ENCODE_BATCH]) for i in range(0, len(X), ENCODE_BATCH)]
        return np.concatenate(out) if out else np.zeros((0, self.m), np.int64)

    def decode_indices(self, idx: np.ndarray) -> np.ndarray:
        X = self.tensors["mean"] + self.coords(idx) @ self.decoder.T
        if self.n_coarse:
            X += self.tensors["coarse"][idx[:, 0]]
        return X

    def decode_unit(self, idx: np.ndarray) -> np.ndarray:
        X = self.decode_indices(idx)
        return unit_rows(X)

    def slot_coords(self, idx: np.ndarray) -> np.ndarray:
        return self.coords(idx).astype(np.float32)

    @cached_property
    def norm_parts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """With a = b + coarse word (one row per coarse word, or just b): ||a||^2, P^T a, and
        P^T P (None when P has orthonormal columns)."""
        t, P = self.tensors, self.decoder
        A = t["mean"][None, :] + (t["coarse"] if self.n_coarse else 0.0)  # (K or 1, D)
        orthonormal = "decoder" not in t  # B has orthonormal columns: P^T P = I
        return (A * A).sum(1), A @ P, None if orthonormal else P.T @ P

    def norms(self, idx: np.ndarray) -> np.ndarray:
        """||x_hat|| from the code alone (no stored bits): ||x_hat||^2 = ||a||^2 + 2 (P^T a).z + z^T P^T P z."""
        a_sq, AP, G = self.norm_parts
        j = idx[:, 0] if self.n_coarse else np.zeros(len(idx), np.int64)
        Z = self.coords(idx)
        zz = (Z * Z).sum(1) if G is None else ((Z @ G) * Z).sum(1)
        sq = a_sq[j] + 2.0 * (AP[j] * Z).sum(1) + zz
        return np.sqrt(np.maximum(sq, 1e-24)).astype(np.float32)
