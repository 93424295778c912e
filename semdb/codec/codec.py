"""`Codec`: the public face of semdb's learned codec (numpy arrays in, numpy arrays out).

A codec is one quantizer (`quantizer.Quantizer`) between embeddings and packed codes, chosen
once from its config by `QUANTIZERS`:

    X (n, D) ──check_embeddings──> unit rows ──quantizer.encode_indices──> (n, M) indices ──pack──> codes
    codes ──unpack──> indices ──quantizer.decode_indices──> x_hat
    Q, codes ──ADC: <q, b> + sum_m (quantizer.tables q)[m, k_m], / quantizer.norms──> cosine scores
    Q, codes ──quantizer.decode_unit──> Q x_hat^T          (variants without tables: "paper")

The variants (docs/notes/CODEC.md has the method and its measurements):
- "pca-slots" (arch "additive", `pca_slots.py`): `additive.py`'s shared-codebook PCA slots,
  optionally behind a coarse full-dimension first slot, and trained with a sample of text
  `queries` (their metric, score-aware re-encoding).
- "residual" (arch "additive", config residual=1, `residual.py`): every slot a full-dimension
  residual stage, FAISS's beam search; the pair-free default at 64 bits.
- "paper" (`paper.py`): the paper-faithful PQ-VAE, conv encoder/decoder, scored by
  decode-then-inner-product; kept as the baseline the additive design must beat.

`Codec.train` validates its arguments into a `TrainRequest`, picks the variant, lets it train
(tensors, config), then fits the entropy model on the training codes and keeps the training
photos' principal subspace (`shift.py`), against which `Codec.outside` measures how unlike
them new photos are. A codec file is one
safetensors file: the weights as tensors and the config JSON (shape, architecture, CLIP model
identity, training facts) in its metadata.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from pathlib import Path

import numpy as np
import safetensors.numpy

from ..errors import CodecError
from ..packing import code_bytes as packed_code_bytes
from ..packing import pack, unpack
from ..threads import single_threaded
from . import entropy
from .lut import adc_lut, adc_scores
from .paper import PaperQuantizer, paper_shape
from .pca_slots import PcaSlotQuantizer
from .quantizer import TrainRequest, code_nbits
from .residual import RESIDUAL_MAX_BITS, RESIDUAL_MIN_TRAIN, ResidualStageQuantizer
from .shift import DEFAULT_RATIO_QUANTILES, Subspace, fit_subspace

FORMAT = "semdb-codec"
VERSION = 2  # 2: cosine scoring, coarse slot, query metric and text map (version 1 files still load)
DEFAULT_K = 16  # 4-bit sub-codes: the shape FAISS's fast-scan kernel scans fastest
DEFAULT_D = 2
COARSE_MAX_BITS = 128  # default: a full-dimension k-means first slot at this budget and below

QUANTIZERS = {q.name: q for q in (PcaSlotQuantizer, ResidualStageQuantizer, PaperQuantizer)}


def variant_of(config: dict) -> str:
    """The quantizer variant a codec config describes: its key in QUANTIZERS."""
    if config["arch"] == "paper":
        return PaperQuantizer.name
    if config["arch"] != "additive":
        raise CodecError(f"arch={config['arch']!r}: not a codec architecture this semdb knows")
    return ResidualStageQuantizer.name if int(config.get("residual", 0)) else PcaSlotQuantizer.name


def check_embeddings(X, dim: int | None = None, name: str = "embeddings") -> np.ndarray:
    """Validate an (n, D) float array; returns float32 rows scaled to unit norm.

    Rows that are not unit-norm are normalised (CLIP's cosine geometry only needs the
    direction); NaN/inf rows, zero rows and a wrong D are errors naming the first bad row.
    """
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise CodecError(f"{name}: expected a non-empty (n, D) array, got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.floating):
        raise CodecError(f"{name}: expected float values, got dtype {X.dtype}")
    if dim is not None and X.shape[1] != dim:
        raise CodecError(f"{name}: has dimension {X.shape[1]}, but this codec is for dimension {dim}")
    X = np.asarray(X, dtype=np.float32)
    sq = np.einsum("ij,ij->i", X, X)  # NaN/inf in a row make its squared norm NaN/inf
    if not np.isfinite(sq).all():
        bad = ~np.isfinite(X).all(axis=1)
        raise CodecError(f"{name}: row {int(np.flatnonzero(bad)[0])} contains NaN or inf ({int(bad.sum())} rows)")
    if (sq < 1e-24).any():
        raise CodecError(f"{name}: row {int(np.flatnonzero(sq < 1e-24)[0])} is all zeros")
    if np.abs(sq - 1).max() < 1e-5:  # already unit (the usual case): no copy
        return X
    return X / np.sqrt(sq)[:, None]


class Codec:
    """A trained codec: (n, D) CLIP embeddings in, (n, code_bytes) uint8 codes out, and float
    queries scored against codes without decoding them. Build one with `Codec.train`,
    `Codec.load` or `Codec.from_bytes`. `dim` is D; `config` holds its shape, architecture,
    CLIP model identity and training facts.

        codec = Codec.train(X, bits=256)          # X: (n, 512) CLIP image embeddings
        codes = codec.encode(X)                   # (n, 32) uint8
        scores = codec.scores(Q, codes)           # (nq, n) cosine to each reconstruction
        best = scores.argsort(axis=1)[:, ::-1][:, :10]
    """

    def __init__(self, config: dict, tensors: dict[str, np.ndarray]):
        self.config = config
        self.tensors = tensors
        self.arch = config["arch"]
        self.dim = int(config["dim"])
        self.m = int(config["m"])
        self.k = int(config["k"])
        self.nbits = code_nbits(self.k)
        self.quantizer = QUANTIZERS[variant_of(config)](config, tensors)
        self._id = None

    # --- identity and shape -------------------------------------------------------------
    @property
    def bits(self) -> int:
        """Fixed-length bits per item: what is stored and scanned."""
        return self.m * self.nbits

    @property
    def code_bytes(self) -> int:
        """Bytes per packed code: `bits` / 8, rounded up."""
        return packed_code_bytes(self.m, self.nbits)

    @property
    def model_id(self) -> dict | None:
        """The CLIP model the codec was trained for ({"name", "pretrained", "digest", "dim"}), or None."""
        return self.config.get("model_id")

    @property
    def id(self) -> str:
        """Short digest of config and weights: two codecs with the same id encode identically."""
        if self._id is None:
            # Training facts that vary run to run (wall time) are not part of the identity.
            stable = {k: v for k, v in self.config.items() if k != "train_seconds"}
            digest = hashlib.sha256(json.dumps(stable, sort_keys=True).encode())
            for name in sorted(self.tensors):
                digest.update(name.encode() + np.ascontiguousarray(self.tensors[name]).tobytes())
            self._id = digest.hexdigest()[:16]
        return self._id

    def __repr__(self) -> str:
        return f"Codec({self.arch}, D={self.dim}, M={self.m}, K={self.k}, bits={self.bits}, id={self.id})"

    @property
    def variant(self) -> str:
        """The quantizer variant: "pca-slots", "residual" or "paper" (see the module docstring)."""
        return self.quantizer.name

    @property
    def residual(self) -> bool:
        """Every slot a full-dimension residual stage (the pair-free default at 64 bits)."""
        return self.variant == ResidualStageQuantizer.name

    @property
    def layout(self):
        """The PCA slots' `additive.Layout` (None for the other variants)."""
        return self.quantizer.layout

    @property
    def n_coarse(self) -> int:
        """1 when slot 0 is a full-dimension coarse word, else 0."""
        return self.quantizer.n_coarse

    @property
    def decoder(self) -> np.ndarray:
        """P (D, p) of an additive codec: x_hat = b (+ coarse word) + P z (`slot_coords`)."""
        return self.quantizer.decoder

    @property
    def query_source(self) -> str:
        """What the codec was trained with: "none" (pair-free), "unpaired" or "paired" queries."""
        return self.config.get("query_source", "none")

    @property
    def scoring(self) -> str:
        """ "cosine" (q.x_hat / ||x_hat||, the default since codec version 2) or "ip" (<q, x_hat>)."""
        return self.config.get("scoring", "ip")

    # --- training -------------------------------------------------------------------------
    @classmethod
    @single_threaded  # a codec must not depend on the trainer's core count (semdb/threads.py)
    def train(
        cls,
        X,
        bits: int | None = 256,
        *,
        m: int | None = None,
        k: int | None = None,
        d: int | None = None,
        arch: str = "additive",
        seed: int = 0,
        model_id: dict | None = None,
        beam: int | None = None,
        queries=None,
        paired: bool = False,
        coarse: bool | None = None,
        residual: bool | None = None,
        progress=None,
    ) -> Codec:
        """Learn a codec from `X`, (n, D) CLIP image embeddings (rows are normalised).

        `bits`: the budget per item (then K = 16 and M = bits / 4), or an explicit shape `m`,
        `k` (and `d`, the sub-vector dimension). `queries`: optional (n_q, D) text embeddings
        like the store's queries (captions, past queries; `paired=True` when row i describes
        X[i]): the codec then spends its bits where such queries look (docs/notes/CODEC.md).
        `coarse` (a full-dimension first slot; default at 128 bits and below) and `residual`
        (every slot a residual stage, searched with `beam`; default without queries at 64 bits
        and below) override the choice of variant; `arch="paper"` trains the paper's PQ-VAE
        instead. `seed`: the same codec for the same seed on any machine. `model_id`: the CLIP
        model's identity, kept in the codec. `progress(stage, done, total)`: called as training
        advances. Bad arguments raise `CodecError`.
        """
        X = check_embeddings(X, name="training embeddings")
        n, dim = X.shape
        start = time.perf_counter()
        Q = None
        if queries is not None:
            Q = check_embeddings(queries, dim, name="queries")
            if len(Q) < 2:
                raise CodecError(f"queries: need at least 2 rows, got {len(Q)}")
            if paired and len(Q) != n:
                raise CodecError(f"queries: paired=True needs one query per training embedding ({n}), got {len(Q)}")
        elif paired:
            raise CodecError("paired=True needs queries")
        if arch == "paper":
            variant, request = paper_request(X, Q, bits, seed, progress)
        elif arch == "additive":
            variant, request = additive_request(X, Q, paired, bits, m, k, d, beam, coarse, residual, seed, progress)
        else:
            raise CodecError(f"arch={arch!r}: choose 'additive' or 'paper'")
        tensors, config = QUANTIZERS[variant].train(request)
        config.update(format=FORMAT, version=VERSION, dim=dim, seed=seed, model_id=model_id, n_train=n)
        codec = cls(config, tensors)
        indices = codec.quantizer.encode_indices(X)
        codec.tensors["entropy_probs"] = entropy.fit_model(indices, codec.k).astype(np.float32)
        codec.config["utilisation"] = float(len(np.unique(indices)) / codec.k)
        subspace = fit_subspace(X, seed)
        codec.tensors.update(subspace_mean=subspace.mean, subspace_basis=subspace.basis)
        codec.config["subspace_baseline"] = subspace.baseline
        codec.config["subspace_quantiles"] = list(subspace.quantiles)
        codec.config["train_seconds"] = round(time.perf_counter() - start, 3)
        return codec

    @property
    def subspace(self) -> Subspace | None:
        """The training photos' principal subspace and held-out baseline (None: a codec file
        from before semdb kept it)."""
        t = self.tensors
        if "subspace_basis" not in t:
            return None
        quantiles = tuple(self.config.get("subspace_quantiles") or DEFAULT_RATIO_QUANTILES)
        return Subspace(t["subspace_mean"], t["subspace_basis"], float(self.config["subspace_baseline"]), quantiles)

    def outside(self, X) -> np.ndarray | None:
        """(n,) share of each embedding's energy around the training mean that lies outside the
        training photos' principal subspace (semdb/codec/shift.py), or None without a subspace."""
        subspace = self.subspace
        return None if subspace is None else subspace.outside(check_embeddings(X, self.dim))

    # --- encode / decode ------------------------------------------------------------------
    def encode(self, X) -> np.ndarray:
        """(n, D) embeddings -> (n, code_bytes) uint8 packed codes."""
        X = check_embeddings(X, self.dim)
        return pack(self.quantizer.encode_indices(X), self.nbits)

    def indices(self, codes) -> np.ndarray:
        """(n, code_bytes) packed codes -> (n, M) int64 codebook indices."""
        return unpack(self.check_codes(codes), self.m, self.nbits)

    def check_codes(self, codes) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != self.code_bytes or codes.dtype != np.uint8:
            raise CodecError(
                f"codes: expected a uint8 array of shape (n, {self.code_bytes}), got {codes.dtype} {codes.shape}"
            )
        return codes

    def slot_coords(self, codes) -> np.ndarray:
        """The slots' coordinates z of codes (x_hat = mean + coarse + decoder z), float32
        (n, p): where the IVF clusters the codes (semdb.search.ivf)."""
        return self.quantizer.slot_coords(self.indices(codes))

    def decode_additive(self, codes) -> np.ndarray:
        """x_hat = b + sum_m T[m, k_m], not normalised: the vector ADC scores are inner products with."""
        return self.quantizer.decode_indices(self.indices(codes))

    def decode(self, codes) -> np.ndarray:
        """(n, code_bytes) codes -> (n, D) float32 unit-norm reconstructions."""
        return self.quantizer.decode_unit(self.indices(codes))

    def norms(self, idx: np.ndarray) -> np.ndarray:
        """||x_hat|| of (n, M) indices, from the code alone (no stored bits): with a = b + coarse
        word, ||x_hat||^2 = ||a||^2 + 2 (P^T a).z + z^T P^T P z, z the slots' coordinates."""
        return self.quantizer.norms(idx)

    @property
    def tables(self) -> np.ndarray:
        """T (M, K, D): slot m's contribution to x_hat when it holds index k (additive only)."""
        return self.quantizer.tables

    # --- scoring -----------------------------------------------------------------------------
    def scores(self, Q, codes) -> np.ndarray:
        """(nq, n) scores of float queries against codes: exact ADC <q, x_hat>, divided by
        ||x_hat|| for a cosine-scored codec (paper: decode then score)."""
        Q = check_embeddings(np.atleast_2d(Q), self.dim, name="queries")
        if not self.quantizer.adc:
            return Q @ self.decode(codes).T
        idx = self.indices(codes)
        lut, offset = adc_lut(Q, self.tables, self.tensors["mean"])
        S = adc_scores(lut, offset, idx)
        if self.scoring == "cosine":
            S /= self.norms(idx)[None, :]
        return S

    # --- rate -----------------------------------------------------------------------------
    def entropy_bits(self, codes) -> float:
        """Mean bits per item when these codes are range coded under the codec's static model."""
        return entropy.entropy_bits(self.indices(codes), self.tensors["entropy_probs"].astype(np.float64))

    def compress(self, codes) -> bytes:
        return entropy.compress(self.indices(codes), self.tensors["entropy_probs"].astype(np.float64))

    def decompress(self, data: bytes, n: int) -> np.ndarray:
        return pack(entropy.decompress(data, n, self.tensors["entropy_probs"].astype(np.float64)), self.nbits)

    # --- persistence ----------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The codec file's bytes (safetensors: the weights, and the config in its metadata)."""
        return safetensors.numpy.save(
            {k: np.ascontiguousarray(v) for k, v in self.tensors.items()},
            metadata={"semdb_codec": json.dumps(self.config, sort_keys=True)},
        )

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "codec") -> Codec:
        """The codec `to_bytes` wrote; `CodecError` naming `source` when the bytes are not one."""
        try:
            (header_len,) = struct.unpack("<Q", data[:8])
            header = json.loads(data[8 : 8 + header_len])
            config = json.loads(header["__metadata__"]["semdb_codec"])
            tensors = safetensors.numpy.load(bytes(data))
        except Exception as err:  # any parse failure means the bytes are not a codec
            raise CodecError(f"{source}: not a semdb codec file or corrupt ({type(err).__name__})") from None
        if config.get("format") != FORMAT:
            raise CodecError(f"{source}: not a semdb codec file")
        if config.get("version", 0) > VERSION:
            raise CodecError(f"{source}: made by a newer semdb (codec version {config['version']}); upgrade semdb")
        try:
            codec = cls(config, tensors)
            codec.quantizer.check_consistent()
            subspace = codec.subspace
            if subspace is not None and (
                subspace.mean.shape != (codec.dim,)
                or subspace.basis.ndim != 2
                or subspace.basis.shape[0] != codec.dim
                or not np.isfinite(subspace.basis).all()
            ):
                raise CodecError("codec tensors do not match its config (corrupt codec)")
        except CodecError:
            raise
        except Exception as err:
            raise CodecError(f"{source}: corrupt codec ({type(err).__name__}: {err})") from None
        return codec

    def save(self, path) -> None:
        """Write the codec file (`to_bytes`) to `path`; `Codec.load` reads it back."""
        Path(path).write_bytes(self.to_bytes())

    @classmethod
    def load(cls, path, dim: int | None = None) -> Codec:
        """Read a codec file; with `dim`, also check it serves embeddings of that dimension."""
        try:
            data = Path(path).read_bytes()
        except OSError as err:
            raise CodecError(f"{path}: cannot read codec file ({err.strerror})") from None
        codec = cls.from_bytes(data, source=str(path))
        if dim is not None and codec.dim != dim:
            raise CodecError(f"{path}: codec is for {codec.dim}-d embeddings, but the model gives {dim}-d")
        return codec


def paper_request(X, Q, bits, seed: int, progress) -> tuple[str, TrainRequest]:
    """`Codec.train`'s arguments for arch="paper", validated."""
    if Q is not None:
        raise CodecError("queries: only the additive architecture uses query embeddings")
    if bits is None or paper_shape(bits, X.shape[1]) is None:
        raise CodecError(f"bits={bits}: the paper architecture has no latent shape for this budget (try 400)")
    return PaperQuantizer.name, TrainRequest(X=X, bits=bits, seed=seed, progress=progress)


def additive_request(
    X, Q, paired: bool, bits, m, k, d, beam, coarse, residual, seed: int, progress
) -> tuple[str, TrainRequest]:
    """`Codec.train`'s arguments for arch="additive", validated: the variant to train
    ("residual" or "pca-slots") and its request."""
    n, dim = X.shape
    k = int(k or DEFAULT_K)
    nbits = code_nbits(k)
    if m is None:
        if bits is None or bits <= 0 or bits % nbits:
            raise CodecError(f"bits={bits}: must be a positive multiple of log2(k)={nbits}")
        m = bits // nbits
    elif bits is not None and m * nbits != bits:
        raise CodecError(f"m={m} slots of {nbits} bits make {m * nbits} bits, not bits={bits}")
    d_given = d
    d = int(d or DEFAULT_D)
    # Beam width of the encoder's search: ~256 candidates per slot whatever K is.
    beam = int(beam or max(4, 256 // k))
    if d > dim:
        raise CodecError(f"d={d}: the sub-vector dimension cannot exceed the embedding dimension {dim}")
    if n < 2:
        raise CodecError(f"training embeddings: need at least 2 rows, got {n}")
    if residual is None:
        residual = (
            Q is None
            and coarse is None
            and d_given is None
            and m * nbits <= RESIDUAL_MAX_BITS
            and n >= RESIDUAL_MIN_TRAIN
        )
    if residual:
        if Q is not None:
            raise CodecError("residual=True: the residual stages are the pair-free design; not with queries")
        if coarse:
            raise CodecError("residual=True and coarse=True: choose one")
        variant, n_coarse = ResidualStageQuantizer.name, 0
    else:
        variant = PcaSlotQuantizer.name
        n_coarse = int(coarse if coarse is not None else (m * nbits <= COARSE_MAX_BITS and m >= 2))
        if n_coarse and m < 2:
            raise CodecError("coarse=True needs at least 2 slots")
    shape = dict(m=int(m), k=k, d=d, n_coarse=n_coarse, beam=beam)
    return variant, TrainRequest(X=X, bits=bits, seed=seed, progress=progress, queries=Q, paired=paired, **shape)
