"""Quantizer methods compared by the benchmark, each behind one small interface.

A :class:`Method` is created for one bits budget, then::

    m.fit(X_train)                 # train (no-op for references)
    codes = m.encode(X)            # (n, ...) array of codes
    X_hat = m.decode(codes)        # (n, D) float32 unit rows, or None if the method cannot decode
    S = m.scores(Q, codes)         # (nq, n) float32; default: cosine to the decoded vectors
    m.bits                         # fixed-length bits per item
    m.entropy_bits(codes)          # mean entropy-coded bits per item (constriction)
    m.size_bytes                   # codec parameters (codebooks, rotations...) in bytes

Scoring convention for the quantizers that reconstruct (PQ, OPQ, RQ, LSQ, RaBitQ, sign bits,
SQ8, fp16): the score of an item is the cosine between the float query and the item's
reconstruction, i.e. ``Q @ normalise(decode(codes)).T``. For additive quantizers the
reconstruction norm is a function of the code (no stored bits), so this is exact ADC followed by
a per-item rescale. semdb's own codec is scored with its own ADC ``Codec.scores``.

Method names follow FAISS index_factory strings (``PQ32x8``, ``OPQ32,PQ32x8``, ``RQ32x8``,
``LSQ32x8``, ``PQ64x4fs``, ``SQ8``, ``RaBitQ``); sign bits are ``PCA{b},sign``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np

from ..codec import entropy
from ..packing import unpack
from ..rows import unit_rows

#: Method family keys accepted by ``run_bench(methods=...)``, in report order.
FAMILIES = (
    "semdb",
    "semdb-paired",
    "semdb-unpaired",
    "pqvae-paper",
    "pq",
    "pqfs",
    "opq",
    "rq",
    "lsq",
    "rabitq",
    "sign",
    "int8",
    "fp16",
    "float32",
)
#: semdb trained with the training split's text embeddings as `queries` (need text_emb).
QUERY_FAMILIES = {"semdb-paired": True, "semdb-unpaired": False}  # family -> paired
#: Families that are reported once, regardless of the budgets (references).
REFERENCE_FAMILIES = ("int8", "fp16", "float32")

#: Plot / table label of each family.
FAMILY_LABELS = {
    "semdb": "semdb (pair-free)",
    "semdb-paired": "semdb + paired texts",
    "semdb-unpaired": "semdb + unpaired texts",
    "pqvae-paper": "PQ-VAE paper",
    "pq": "PQ Mx8",
    "pqfs": "PQ Mx4 fast-scan",
    "opq": "OPQ + PQ Mx8",
    "rq": "RQ Mx8",
    "lsq": "LSQ Mx8",
    "rabitq": "RaBitQ",
    "sign": "PCA sign bits",
    "int8": "int8 (SQ8)",
    "fp16": "fp16",
    "float32": "float32",
    "codec": "given codec",
}


class MethodSkipped(Exception):
    """The method cannot run here (too few training points, missing library...). The message
    says why; the runner records a 'skipped' row."""


def unpack_subcodes(codes: np.ndarray, m: int, nbits: int) -> np.ndarray:
    """Packed codes (n, code_bytes) -> (n, m) sub-code indices; FAISS's bit order is semdb's."""
    return unpack(codes, m, nbits)


def categorical_entropy_bits(symbols: np.ndarray, alphabet: int) -> float:
    """Mean range-coded bits per row of ``symbols`` (n, m) under a static per-column categorical
    model fitted on the symbols themselves (the model is not charged)."""
    symbols = np.asarray(symbols, dtype=np.int64)
    if len(symbols) == 0:
        return 0.0
    return entropy.entropy_bits(symbols, entropy.fit_model(symbols, alphabet, prior=0.0))


class Method:
    """Base class: see the module docstring."""

    family: str = ""
    name: str = ""
    budget: int | None = None  # the bits budget this instance was made for (None: reference)
    bits: float = 0.0  # fixed-length bits per item
    decodes: bool = True  # has a decoder (mean cosine is reported)
    scoring: str = "cosine(decoded)"
    note: str | None = None
    #: seconds-per-fit growth exponent in the method's size parameter (the runner uses it to
    #: predict and skip fits that would exceed its time limit)
    cost_exponent: float = 1.0
    size_param: int = 1

    def fit(self, X: np.ndarray) -> None:  # pragma: no cover - trivial default
        pass

    def encode(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def decode(self, codes: np.ndarray) -> np.ndarray | None:
        return None

    def scores(self, Q: np.ndarray, codes: np.ndarray) -> np.ndarray:
        return self.scorer(codes)(Q)

    def scorer(self, codes: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """A function Q -> scores(Q, codes) that reuses work across query batches (here: the
        decoded gallery)."""
        xh = self.decode(codes)
        return lambda Q: np.asarray(Q, dtype=np.float32) @ xh.T

    def subcodes(self, codes: np.ndarray) -> tuple[np.ndarray, int] | None:
        """(n, m) discrete sub-code symbols and alphabet size, or None (no discrete codes)."""
        return None

    def entropy_bits(self, codes: np.ndarray) -> float:
        sub = self.subcodes(codes)
        if sub is None:
            return float(self.bits)
        symbols, alphabet = sub
        return categorical_entropy_bits(symbols, alphabet)

    @property
    def size_bytes(self) -> int:
        return 0


# --------------------------------------------------------------------------------------------
# FAISS-backed methods


def _quiet_clustering(cp) -> None:
    # FAISS prints "WARNING clustering N points to K centroids: please provide at least ..."
    # whenever N < 39 K; that is expected here (a few hundred training points for 256
    # centroids) and changes nothing in the result, so lower the threshold it checks.
    cp.min_points_per_centroid = 1
    cp.verbose = False


class FaissMethod(Method):
    """A FAISS index built from an index_factory string, used as an encoder/decoder
    (``sa_encode`` / ``sa_decode``); its parameters' size is ``len(serialize_index)``."""

    min_train: int = 1

    def __init__(self, factory: str, dim: int, budget: int | None, m: int, nbits: int, family: str):
        self.factory = factory
        self.name = factory
        self.dim = dim
        self.budget = budget
        self.m = m
        self.nbits = nbits
        self.family = family
        self.bits = float(m * nbits)
        self.size_param = m
        self.index = None

    def _make(self):
        index = faiss.index_factory(self.dim, self.factory, faiss.METRIC_INNER_PRODUCT)
        self._configure(index)
        return index

    def _configure(self, index) -> None:  # noqa: D401 - hook
        """Tune the fresh index (quiet k-means, fewer iterations...)."""

    #: FAISS fails on fewer training vectors than dimensions: OPQMatrix.train corrupts the heap
    #: (the process aborts; faiss 1.15) and RQ's progressive-dimension PCA raises.
    needs_n_ge_dim = False

    def fit(self, X: np.ndarray) -> None:
        if X.shape[0] < self.min_train:
            raise MethodSkipped(
                f"needs >= {self.min_train} training vectors ({2**self.nbits} centroids per codebook), has {X.shape[0]}"
            )
        if self.needs_n_ge_dim and X.shape[0] < self.dim:
            # Whole copies of the training set leave the k-means / Procrustes / PCA objectives
            # unchanged up to a constant factor, and give FAISS the n >= D it needs.
            reps = -(-self.dim // X.shape[0])
            X = np.tile(X, (reps, 1))
            extra = f"training set repeated x{reps} (FAISS {self.family.upper()} needs n >= D)"
            self.note = f"{self.note}; {extra}" if self.note else extra
        self.index = self._make()
        self.index.train(np.ascontiguousarray(X, dtype=np.float32))

    def encode(self, X: np.ndarray) -> np.ndarray:
        return self.index.sa_encode(np.ascontiguousarray(X, dtype=np.float32))

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return unit_rows(self.index.sa_decode(np.ascontiguousarray(codes, dtype=np.uint8)))

    def subcodes(self, codes):
        return unpack_subcodes(codes, self.m, self.nbits), 2**self.nbits

    @property
    def size_bytes(self) -> int:
        return int(faiss.serialize_index(self.index).size) if self.index is not None else 0


class PQMethod(FaissMethod):
    """``PQ{M}x{nbits}`` (IndexPQ) or ``PQ{M}x4fs`` (IndexPQFastScan: same 4-bit codes, scanned
    with SIMD in-register tables; here decoded and scored exactly)."""

    def __init__(self, dim: int, budget: int | None, m: int, nbits: int, fast_scan: bool = False):
        factory = f"PQ{m}x{nbits}" + ("fs" if fast_scan else "")
        super().__init__(factory, dim, budget, m, nbits, "pqfs" if fast_scan else "pq")
        self.min_train = 2**nbits

    def _configure(self, index) -> None:
        index = faiss.downcast_index(index)
        # index_factory turns on polysemous training for PQ x8: it only permutes centroids
        # (for Hamming filtering, unused here) and costs minutes.
        if hasattr(index, "do_polysemous_training"):
            index.do_polysemous_training = False
        _quiet_clustering(index.pq.cp)


class OPQMethod(FaissMethod):
    """``OPQ{M},PQ{M}x8``: a learned rotation (OPQMatrix) followed by PQ."""

    def __init__(self, dim: int, budget: int | None, m: int, niter: int = 20):
        super().__init__(f"OPQ{m},PQ{m}x8", dim, budget, m, 8, "opq")
        self.needs_n_ge_dim = True
        self.min_train = 256
        self.niter = niter
        self.note = f"OPQ niter={niter}"

    def _configure(self, index) -> None:
        opq = faiss.downcast_VectorTransform(index.chain.at(0))
        opq.niter = self.niter
        opq.verbose = False
        # the PQ that OPQ alternates with (same as FAISS's internal default), made here only to
        # quiet its k-means; keep a reference, OPQMatrix does not own it
        self._opq_pq = faiss.ProductQuantizer(self.dim, self.m, 8)
        _quiet_clustering(self._opq_pq.cp)
        opq.pq = self._opq_pq
        pq_index = faiss.downcast_index(index.index)
        pq_index.do_polysemous_training = False
        _quiet_clustering(pq_index.pq.cp)


class RQMethod(FaissMethod):
    """``RQ{M}x8``: residual quantizer, beam search encoding (FAISS defaults, beam 5)."""

    def __init__(self, dim: int, budget: int | None, m: int):
        super().__init__(f"RQ{m}x8", dim, budget, m, 8, "rq")
        self.needs_n_ge_dim = True
        self.min_train = 256

    def _configure(self, index) -> None:
        index.rq.use_beam_LUT = 1  # same codes, faster encoding
        _quiet_clustering(index.rq.cp)


class LSQMethod(FaissMethod):
    """``LSQ{M}x8``: local search quantization, with capped iterations (it is slow to train)."""

    # Training time is dominated by the codebook least-squares update, a (M K) x (M K) solve:
    # ~ M^3 at fixed K (measured M=8 -> 16: x7).
    cost_exponent = 3.0

    def __init__(self, dim: int, budget: int | None, m: int, train_iters: int = 2):
        super().__init__(f"LSQ{m}x8", dim, budget, m, 8, "lsq")
        self.min_train = 256
        self.train_iters = train_iters
        self.note = f"LSQ train_iters={train_iters} (FAISS default 25)"

    def _configure(self, index) -> None:
        lsq = index.lsq
        lsq.train_iters = self.train_iters
        lsq.verbose = False


class RaBitQMethod(FaissMethod):
    """``RaBitQ`` (IndexRaBitQ): 1 bit per dimension plus two float32 factors per item."""

    def __init__(self, dim: int, budget: int | None):
        super().__init__("RaBitQ", dim, budget, dim, 1, "rabitq")

        code_size = faiss.IndexRaBitQ(dim, faiss.METRIC_INNER_PRODUCT).code_size
        self.bits = float(code_size * 8)
        self.note = f"{dim} sign bits + {code_size * 8 - dim} bits of per-item float factors"

    def subcodes(self, codes):
        return None  # sign bits mixed with float factors: report fixed bits

    def entropy_bits(self, codes) -> float:
        sign_bytes = (self.dim + 7) // 8
        signs = unpack_subcodes(np.ascontiguousarray(codes[:, :sign_bytes]), self.dim, 1)
        return categorical_entropy_bits(signs, 2) + (self.bits - sign_bytes * 8)


class SQ8Method(FaissMethod):
    """``SQ8``: per-dimension 8-bit scalar quantizer (trained min/max), 8 D bits."""

    def __init__(self, dim: int):
        super().__init__("SQ8", dim, None, dim, 8, "int8")


# --------------------------------------------------------------------------------------------
# numpy methods


class SignBitsMethod(Method):
    """``PCA{b},sign``: sign of the top-b PCA coordinates of the centred vector (no ITQ).
    Decoded as mean + sum_j s_j a_j p_j with a_j = mean |coordinate j| on the training set."""

    family = "sign"

    def __init__(self, dim: int, budget: int, b: int):
        self.dim = dim
        self.budget = budget
        self.b = b
        self.bits = float(b)
        self.name = f"PCA{b},sign"
        self.size_param = b

    def fit(self, X: np.ndarray) -> None:
        X = np.asarray(X, dtype=np.float64)
        self.mean = X.mean(axis=0)
        Xc = X - self.mean
        # principal axes: eigenvectors of the D x D scatter matrix, largest eigenvalue first
        # (all D of them exist even when n < D)
        _, vecs = np.linalg.eigh(Xc.T @ Xc)
        axes = vecs[:, ::-1][:, : self.b].T  # (b, D)
        self.P = axes.astype(np.float32)
        z = Xc @ axes.T
        self.scale = np.maximum(np.abs(z).mean(axis=0), 1e-8).astype(np.float32)
        self.mean = self.mean.astype(np.float32)

    def encode(self, X: np.ndarray) -> np.ndarray:
        z = (np.asarray(X, dtype=np.float32) - self.mean) @ self.P.T
        return np.packbits(z >= 0, axis=1, bitorder="little")

    def _signs(self, codes: np.ndarray) -> np.ndarray:
        return np.unpackbits(codes, axis=1, bitorder="little", count=self.b).astype(np.float32) * 2 - 1

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return unit_rows(self.mean + (self._signs(codes) * self.scale) @ self.P)

    def subcodes(self, codes):
        return np.unpackbits(codes, axis=1, bitorder="little", count=self.b).astype(np.int32), 2

    @property
    def size_bytes(self) -> int:
        return int(self.P.nbytes + self.mean.nbytes + self.scale.nbytes)


class FloatMethod(Method):
    """float32 / fp16 references: the embedding itself (no training, no parameters)."""

    def __init__(self, dim: int, dtype: str):
        self.dim = dim
        self.dtype = np.dtype(dtype)
        self.family = "float32" if self.dtype == np.float32 else "fp16"
        self.name = self.family
        self.bits = float(self.dtype.itemsize * 8 * dim)
        self.budget = None

    def encode(self, X):
        return np.asarray(X).astype(self.dtype)

    def decode(self, codes):
        return unit_rows(codes.astype(np.float32))


class CodecMethod(Method):
    """semdb's own codec (semdb.codec.Codec), trained by the runner or given ready-made.

    Scored with its ADC (``Codec.scores``: cosine to the additive decode); mean cosine from
    ``Codec.decode``. ``paired`` None: trained without queries (pair-free); True/False: trained
    with ``queries`` (set by the runner to the training split's text embeddings)."""

    scoring = "adc"
    cost_exponent = 0.0

    def __init__(
        self,
        family: str,
        dim: int,
        budget: int | None,
        arch: str | None = None,
        seed: int = 0,
        codec=None,
        paired: bool | None = None,
    ):
        self.family = family
        self.paired = paired
        self.queries = None
        self.name = family
        self.dim = dim
        self.budget = budget
        self.arch = arch
        self.seed = seed
        self.codec = codec
        self.bits = float(codec.bits) if codec is not None else float(budget or 0)
        if family == "pqvae-paper":
            self.scoring = "Codec.scores (decode, then cosine)"
        else:
            self.scoring = "Codec.scores (ADC, cosine to x_hat)"

    def fit(self, X: np.ndarray) -> None:
        if self.codec is not None:
            return
        from ..codec import Codec  # noqa: PLC0415 - optional at import time

        kw = {}
        if self.paired is not None:
            if self.queries is None:
                raise MethodSkipped("needs text_emb (the training split's texts are its queries)")
            kw = dict(queries=self.queries, paired=self.paired)
        self.codec = Codec.train(
            np.ascontiguousarray(X, dtype=np.float32), bits=self.budget, seed=self.seed, arch=self.arch, **kw
        )
        self.bits = float(self.codec.bits)
        if self.paired is not None:
            self.note = f"queries: the {len(self.queries)} training texts, " + (
                "paired with their images" if self.paired else "as an unpaired bag"
            )
        if self.budget is not None and self.codec.bits != self.budget:
            self.note = f"codec chose {self.codec.bits} bits for budget {self.budget}"

    def encode(self, X):
        return self.codec.encode(np.ascontiguousarray(X, dtype=np.float32))

    def decode(self, codes):
        return unit_rows(self.codec.decode(codes))

    def scores(self, Q, codes):
        return np.asarray(self.codec.scores(np.ascontiguousarray(Q, dtype=np.float32), codes), dtype=np.float32)

    def scorer(self, codes):
        return lambda Q: self.scores(Q, codes)

    def entropy_bits(self, codes) -> float:
        return float(self.codec.entropy_bits(codes))

    @property
    def size_bytes(self) -> int:
        return len(self.codec.to_bytes()) if self.codec is not None else 0


class VariantMethod(Method):
    """A pre-computed image-codec variant (e.g. JPEG q10): 'encoding' a row selects the
    embedding of its re-encoded image; bits are the real mean file size."""

    needs_rows = True
    cost_exponent = 0.0

    def __init__(self, variant):
        self.variant = variant
        self.family = variant.family
        self.name = variant.name
        self.budget = None
        self.note = variant.note
        self.scoring = "cosine(embedding of decoded image)"

    def encode_rows(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(rows, dtype=np.int64)

    def decode(self, codes):
        return unit_rows(self.variant.emb[codes])

    def mean_bits(self, rows) -> float:
        return float(self.variant.bits[rows].mean())

    def bpp(self, rows) -> float:
        return float((self.variant.bits[rows] / self.variant.pixels[rows]).mean())

    def entropy_bits(self, codes) -> float:
        return self.mean_bits(codes)  # a file size is already entropy-coded


# --------------------------------------------------------------------------------------------
# which methods fit a budget


def rabitq_available() -> bool:
    return hasattr(faiss, "IndexRaBitQ")  # FAISS >= 1.11


@dataclass
class Planned:
    """A method to run at a budget, or the reason it cannot run (skip)."""

    family: str
    budget: int | None
    name: str
    make: Callable[[], Method] | None
    skip: str | None = None


def plan_budget(family: str, budget: int, dim: int, seed: int = 0) -> Planned | None:
    """The instance of ``family`` for ``budget`` bits per item at dimension ``dim``, or None
    when the family has no configuration of exactly that size."""
    b = budget
    if family in ("pq", "opq"):
        if b % 8 or dim % (b // 8) or b // 8 == 0:
            return None
        m = b // 8
        if family == "pq":
            return Planned(family, b, f"PQ{m}x8", lambda: PQMethod(dim, b, m, 8))
        return Planned(family, b, f"OPQ{m},PQ{m}x8", lambda: OPQMethod(dim, b, m))
    if family == "pqfs":
        if b % 4 or b // 4 == 0 or dim % (b // 4):
            return None
        m = b // 4
        return Planned(family, b, f"PQ{m}x4fs", lambda: PQMethod(dim, b, m, 4, fast_scan=True))
    if family in ("rq", "lsq"):
        if b % 8 or not (1 <= b // 8 <= dim):
            return None
        m = b // 8
        if family == "rq":
            return Planned(family, b, f"RQ{m}x8", lambda: RQMethod(dim, b, m))
        return Planned(family, b, f"LSQ{m}x8", lambda: LSQMethod(dim, b, m))
    if family == "rabitq":
        if b != dim:
            return None
        if not rabitq_available():
            return Planned(family, b, "RaBitQ", None, "faiss.IndexRaBitQ is not in the installed faiss")
        return Planned(family, b, "RaBitQ", lambda: RaBitQMethod(dim, b))
    if family == "sign":
        if not (1 <= b <= dim):
            return None
        return Planned(family, b, f"PCA{b},sign", lambda: SignBitsMethod(dim, b, b))
    if family in ("semdb", "pqvae-paper") or family in QUERY_FAMILIES:
        arch = "paper" if family == "pqvae-paper" else "additive"
        paired = QUERY_FAMILIES.get(family)
        return Planned(family, b, family, lambda: CodecMethod(family, dim, b, arch=arch, seed=seed, paired=paired))
    return None


def plan_reference(family: str, dim: int) -> Planned:
    if family == "int8":
        return Planned(family, None, "SQ8", lambda: SQ8Method(dim))
    if family == "fp16":
        return Planned(family, None, "fp16", lambda: FloatMethod(dim, "float16"))
    if family == "float32":
        return Planned(family, None, "float32", lambda: FloatMethod(dim, "float32"))
    raise ValueError(family)


def fits_anything(budget: int, dim: int, families) -> bool:
    """Whether any non-reference family of ``families`` has a configuration of ``budget`` bits
    (whether semdb's codec accepts the budget is known only when it trains)."""
    for f in families:
        if f in REFERENCE_FAMILIES:
            continue
        p = plan_budget(f, budget, dim)
        if p is not None and p.skip is None:
            return True
    return False
