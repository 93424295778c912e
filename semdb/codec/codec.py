"""`Codec`: the public face of semdb's learned codec (numpy arrays in, numpy arrays out).

Two architectures share this API:
- "additive" (default): the shared-codebook quantiser of `additive.py`; ADC search on codes.
- "paper": the paper-faithful PQ-VAE (`paper.py`), conv encoder/decoder, scored by
  decode-then-inner-product; kept as the baseline the additive design must beat.

A codec file is one safetensors file: the weights as tensors and the config JSON (shape,
architecture, CLIP model identity, training facts) in its metadata.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from pathlib import Path

import numpy as np

from ..errors import CodecError
from . import entropy
from .additive import Layout, decode_coords, encode_columns, train_additive
from ..packing import code_bytes as _code_bytes
from ..packing import pack, unpack

FORMAT = "semdb-codec"
VERSION = 1
DEFAULT_K = 16  # 4-bit sub-codes: the shape FAISS's fast-scan kernel scans fastest
DEFAULT_D = 2
MAX_FIT = 16384  # Lloyd iterations run on at most this many embeddings (PCA uses all)


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


def _nbits(k: int) -> int:
    nbits = int(k).bit_length() - 1
    if k < 2 or 1 << nbits != k or nbits > 8:
        raise CodecError(f"k={k}: the codebook size must be a power of two between 2 and 256")
    return nbits


class Codec:
    """A trained codec. Build with `Codec.train`, `Codec.load` or `Codec.from_bytes`."""

    def __init__(self, config: dict, tensors: dict[str, np.ndarray]):
        self.config = config
        self.tensors = tensors
        self.arch = config["arch"]
        self.dim = int(config["dim"])
        self.m = int(config["m"])
        self.k = int(config["k"])
        self.nbits = _nbits(self.k)
        if self.arch == "paper":
            from .paper import PREFIX, PaperCodec

            self._paper = PaperCodec.from_parts(config["paper"], {k: v for k, v in tensors.items()
                                                                  if k.startswith(PREFIX)})
        else:
            self.layout = Layout(int(config["d"]), tensors["col"].astype(np.int64), tensors["stage"].astype(np.int64))
            self._tables = None
        self._id = None

    # --- identity and shape -------------------------------------------------------------
    @property
    def bits(self) -> int:
        """Fixed-length bits per item: what is stored and scanned."""
        return self.m * self.nbits

    @property
    def code_bytes(self) -> int:
        return _code_bytes(self.m, self.nbits)

    @property
    def model_id(self) -> dict | None:
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

    # --- training -------------------------------------------------------------------------
    @classmethod
    def train(cls, X, bits: int | None = 256, *, m: int | None = None, k: int | None = None, d: int | None = None,
              arch: str = "additive", seed: int = 0, model_id: dict | None = None, beam: int | None = None,
              progress=None) -> "Codec":
        """Learn a codec from (n, D) unit CLIP embeddings.

        Give a budget `bits` (then K = 16 and M = bits / 4) or an explicit shape m, k (and d,
        the sub-vector dimension). arch="paper" trains the paper-faithful baseline instead.
        `progress(step, total, validation_distortion)` is called after each iteration.
        """
        X = check_embeddings(X, name="training embeddings")
        n, dim = X.shape
        start = time.perf_counter()
        if arch == "paper":
            from .paper import PaperCodec, paper_shape, train_paper

            if bits is None or paper_shape(bits, dim) is None:
                raise CodecError(f"bits={bits}: the paper architecture has no latent shape for this budget (try 400)")
            codec_p = PaperCodec(train_paper(X, bits, seed=seed, progress=progress))
            pconf, tensors = codec_p.to_parts()
            m, k = codec_p.m, codec_p.k
            config = dict(arch="paper", paper=pconf, d=int(pconf["e_dim"]))
        elif arch == "additive":
            k = int(k or DEFAULT_K)
            nbits = _nbits(k)
            if m is None:
                if bits is None or bits <= 0 or bits % nbits:
                    raise CodecError(f"bits={bits}: must be a positive multiple of log2(k)={nbits}")
                m = bits // nbits
            elif bits is not None and m * nbits != bits:
                raise CodecError(f"m={m} slots of {nbits} bits make {m * nbits} bits, not bits={bits}")
            d = int(d or DEFAULT_D)
            # Beam width of the encoder's search: ~256 candidates per slot whatever K is.
            beam = int(beam or max(4, 256 // k))
            if d > dim:
                raise CodecError(f"d={d}: the sub-vector dimension cannot exceed the embedding dimension {dim}")
            if n < 2:
                raise CodecError(f"training embeddings: need at least 2 rows, got {n}")
            p = train_additive(X, m, k, d, seed=seed, beam=beam, max_fit=MAX_FIT, progress=progress)
            tensors = {name: np.ascontiguousarray(p[name]) for name in ("mean", "basis", "col", "stage", "scale", "codebook")}
            tensors["col"] = tensors["col"].astype(np.int32)
            tensors["stage"] = tensors["stage"].astype(np.int32)
            config = dict(arch="additive", d=d, beam=beam, iters=p["iters"], dead_restarts=p["dead_restarts"])
        else:
            raise CodecError(f"arch={arch!r}: choose 'additive' or 'paper'")
        config.update(format=FORMAT, version=VERSION, dim=dim, m=int(m), k=int(k), seed=seed, model_id=model_id,
                      n_train=n)
        codec = cls(config, tensors)
        indices = codec._encode_indices(X)
        codec.tensors["entropy_probs"] = entropy.fit_model(indices, codec.k).astype(np.float32)
        codec.config["utilisation"] = float(len(np.unique(indices)) / codec.k)
        codec.config["train_seconds"] = round(time.perf_counter() - start, 3)
        codec._id = None
        return codec

    # --- encode / decode ------------------------------------------------------------------
    def _coords(self, X: np.ndarray) -> np.ndarray:
        t = self.tensors
        return ((X - t["mean"]) @ t["basis"]).reshape(len(X), self.layout.n_cols, self.layout.d)

    def _encode_indices(self, X: np.ndarray, batch: int = 8192) -> np.ndarray:
        if self.arch == "paper":
            return self._paper.encode(X)
        t = self.tensors
        out = [encode_columns(self._coords(X[i:i + batch]), self.layout, t["scale"], t["codebook"],
                              int(self.config["beam"])) for i in range(0, len(X), batch)]
        return np.concatenate(out) if out else np.zeros((0, self.m), np.int64)

    def encode(self, X) -> np.ndarray:
        """(n, D) embeddings -> (n, code_bytes) uint8 packed codes."""
        X = check_embeddings(X, self.dim)
        return pack(self._encode_indices(X), self.nbits)

    def indices(self, codes) -> np.ndarray:
        """(n, code_bytes) packed codes -> (n, M) int64 codebook indices."""
        return unpack(self._check_codes(codes), self.m, self.nbits)

    def _check_codes(self, codes) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != self.code_bytes or codes.dtype != np.uint8:
            raise CodecError(f"codes: expected a uint8 array of shape (n, {self.code_bytes}), got {codes.dtype} {codes.shape}")
        return codes

    def decode_additive(self, codes) -> np.ndarray:
        """x_hat = b + sum_m T[m, k_m], not normalised: the vector ADC scores are inner products with."""
        if self.arch == "paper":
            return self.decode(codes)
        idx = self.indices(codes)
        t = self.tensors
        Z = decode_coords(idx, self.layout, t["scale"], t["codebook"])
        return t["mean"] + Z.reshape(len(idx), -1) @ t["basis"].T

    def decode(self, codes) -> np.ndarray:
        """(n, code_bytes) codes -> (n, D) float32 unit-norm reconstructions."""
        if self.arch == "paper":
            return self._paper.decode(self.indices(codes)).astype(np.float32)
        X = self.decode_additive(codes)
        return (X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    @property
    def tables(self) -> np.ndarray:
        """T (M, K, D): slot m's contribution to x_hat when it holds index k (additive only)."""
        if self.arch == "paper":
            raise CodecError("the paper architecture has no additive tables; it scores by decoding")
        if self._tables is None:
            t, lay = self.tensors, self.layout
            blocks = t["basis"].reshape(self.dim, lay.n_cols, lay.d)[:, lay.col, :]  # (D, M, d)
            self._tables = np.einsum("dmj,kj->mkd", blocks, t["codebook"]) * t["scale"][:, None, None]
            self._tables = np.ascontiguousarray(self._tables, dtype=np.float32)
        return self._tables

    # --- search ---------------------------------------------------------------------------
    def index(self, codes):
        """A reusable search structure over `codes` (build once, query many times)."""
        codes = self._check_codes(codes)  # (unpacking all codes just to validate them would cost M x 8 bytes/item)
        from ..search import AdcIndex, FlatIndex

        if self.arch == "paper":
            return FlatIndex(self.decode(codes))

        return AdcIndex(self.tables, self.tensors["mean"], codes, self.nbits)

    def scores(self, Q, codes) -> np.ndarray:
        """(nq, n) scores of float queries against codes: exact ADC <q, x_hat> (paper: decode then score)."""
        Q = check_embeddings(np.atleast_2d(Q), self.dim, name="queries")
        if self.arch == "paper":
            return Q @ self.decode(codes).T
        from ..search import adc_lut, adc_scores

        lut, offset = adc_lut(Q, self.tables, self.tensors["mean"])
        return adc_scores(lut, offset, self.indices(codes))

    def search(self, Q, codes, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-k row ids (nq, k) int64 (-1 past the end) and scores (nq, k): ADC shortlist, exact rerank."""
        Q = check_embeddings(np.atleast_2d(Q), self.dim, name="queries")
        return self.index(codes).search(Q, k)

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
        from safetensors.numpy import save

        return save({k: np.ascontiguousarray(v) for k, v in self.tensors.items()},
                    metadata={"semdb_codec": json.dumps(self.config, sort_keys=True)})

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "codec") -> "Codec":
        from safetensors.numpy import load

        try:
            (header_len,) = struct.unpack("<Q", data[:8])
            header = json.loads(data[8:8 + header_len])
            config = json.loads(header["__metadata__"]["semdb_codec"])
            tensors = load(bytes(data))
        except Exception as err:  # any parse failure means the bytes are not a codec
            raise CodecError(f"{source}: not a semdb codec file or corrupt ({type(err).__name__})") from None
        if config.get("format") != FORMAT:
            raise CodecError(f"{source}: not a semdb codec file")
        if config.get("version", 0) > VERSION:
            raise CodecError(f"{source}: made by a newer semdb (codec version {config['version']}); upgrade semdb")
        try:
            codec = cls(config, tensors)
            codec._check_consistent()
        except CodecError:
            raise
        except Exception as err:
            raise CodecError(f"{source}: corrupt codec ({type(err).__name__}: {err})") from None
        return codec

    def _check_consistent(self):
        if self.arch != "additive":
            return
        t, lay = self.tensors, self.layout
        ok = (t["mean"].shape == (self.dim,) and t["codebook"].shape == (self.k, lay.d)
              and t["basis"].shape == (self.dim, lay.n_cols * lay.d) and len(t["scale"]) == self.m
              and len(lay.col) == self.m and np.isfinite(t["basis"]).all() and np.isfinite(t["codebook"]).all())
        if not ok:
            raise CodecError("codec tensors do not match its config (corrupt codec)")

    def save(self, path) -> None:
        Path(path).write_bytes(self.to_bytes())

    @classmethod
    def load(cls, path, dim: int | None = None) -> "Codec":
        """Read a codec file; with `dim`, also check it serves embeddings of that dimension."""
        try:
            data = Path(path).read_bytes()
        except OSError as err:
            raise CodecError(f"{path}: cannot read codec file ({err.strerror})") from None
        codec = cls.from_bytes(data, source=str(path))
        if dim is not None and codec.dim != dim:
            raise CodecError(f"{path}: codec is for {codec.dim}-d embeddings, but the model gives {dim}-d")
        return codec
