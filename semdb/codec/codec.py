"""`Codec`: the public face of semdb's learned codec (numpy arrays in, numpy arrays out).

Two architectures share this API:
- "additive" (default): the shared-codebook quantiser of `additive.py`; ADC search on codes,
  scored by cosine to the additive reconstruction (||x_hat|| comes from the code); optionally
  a coarse full-dimension first slot, and trained with a sample of text `queries` (their
  metric, score-aware re-encoding). docs/CODEC.md has the method and its measurements.
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
from ..packing import code_bytes as _code_bytes
from ..packing import pack, unpack
from ..progress import report
from ..threads import single_threaded
from . import entropy
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

FORMAT = "semdb-codec"
VERSION = 2  # 2: cosine scoring, coarse slot, query metric and text map (version 1 files still load)
DEFAULT_K = 16  # 4-bit sub-codes: the shape FAISS's fast-scan kernel scans fastest
DEFAULT_D = 2
MAX_FIT = 16384  # Lloyd iterations run on at most this many embeddings (PCA uses all)
COARSE_MAX_BITS = 128  # default: a full-dimension k-means first slot at this budget and below
COARSE_CANDIDATES = 4  # coarse words tried per item (each with its residual encoded)
# Pair-free default at this budget and below (docs/CODEC.md): every slot is a full-dimension
# residual stage (K = 16, still a 4-bit fast-scan slot) of the PCA-rotated, centred embeddings,
# trained by FAISS's residual quantiser with beam RESIDUAL_TRAIN_BEAM and encoded with beam
# RESIDUAL_BEAM; needs at least RESIDUAL_MIN_TRAIN training embeddings (else the PCA slots).
RESIDUAL_MAX_BITS = 64
RESIDUAL_BEAM = 16
RESIDUAL_TRAIN_BEAM = 8
RESIDUAL_MIN_TRAIN = 64
RESIDUAL_DIMS = None  # principal directions the stages live in (None: min(D, n - 1))
# The stages are trained and encoded in the image-query metric y = (x - b) S^(1/2), S the
# training images' second moment E[x x^T] shrunk this far towards I (as METRIC_SHRINK does for
# text queries): the error an image query's score sees is e^T E[q q^T] e. More of the metric
# (a smaller shrinkage) helps image queries and costs text queries; 0.95 is the balance measured
# over training seeds (bench/codec_seeds.py, docs/CODEC.md).
RESIDUAL_METRIC_SHRINK = 0.95
# Queries (docs/CODEC.md): the query metric's shrinkage towards I, the anisotropic weight eta,
# coordinate-descent sweeps, the ridge lambda of the image -> text map, the softmax temperature
# of an unpaired bag of texts, and at most this many texts in the bag's mixture.
METRIC_SHRINK = 0.5
ETA = 10.0
SWEEPS = 2
RIDGE_LAMBDA = 0.1
TAU = 0.03
MAX_BAG = 8192


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

            self._paper = PaperCodec.from_parts(
                config["paper"], {k: v for k, v in tensors.items() if k.startswith(PREFIX)}
            )
        elif int(config.get("residual", 0)):
            self.layout = None  # every slot a full-dimension residual stage (tensor "stages")
            self.n_coarse = 0
            self._tables = None
            self._rq = None
            self._norm_parts = None
        else:
            self.layout = Layout(int(config["d"]), tensors["col"].astype(np.int64), tensors["stage"].astype(np.int64))
            self.n_coarse = int(config.get("coarse", 0))
            self._tables = None
            self._combos = None
            self._norm_parts = None
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
        """Learn a codec from (n, D) unit CLIP embeddings.

        Give a budget `bits` (then K = 16 and M = bits / 4) or an explicit shape m, k (and d,
        the sub-vector dimension). arch="paper" trains the paper-faithful baseline instead.

        `queries`: optional (n_q, D) sample of the text query embeddings the store will be
        searched with (captions, a prompt vocabulary, past queries). They need not describe the
        training images; with `paired=True` and n_q == n, row i describes X[i]. With them the
        codec measures its error in the queries' metric and re-encodes every item score-aware
        along its predicted text direction (docs/CODEC.md); without them it uses the pair-free
        default. Either way ADC stays exact and the codes are scanned by FAISS fast-scan.
        `coarse`: spend the first slot on a full-dimension k-means codeword (default: at 128
        bits and below). `residual`: make every slot a full-dimension residual stage, beam-encoded
        (default: without queries, at 64 bits and below, from RESIDUAL_MIN_TRAIN embeddings, when
        neither `coarse` nor `d` is given). `progress(stage, done, total)`: the semdb.progress
        protocol.
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
            from .paper import PaperCodec, paper_shape, train_paper

            if Q is not None:
                raise CodecError("queries: only the additive architecture uses query embeddings")
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
                tensors, config = _train_residual_parts(X, int(m), k, seed, progress)
            else:
                n_coarse = int(coarse if coarse is not None else (m * nbits <= COARSE_MAX_BITS and m >= 2))
                if n_coarse and m < 2:
                    raise CodecError("coarse=True needs at least 2 slots")
                tensors, config = _train_additive_parts(X, Q, paired, int(m), k, d, n_coarse, seed, beam, progress)
        else:
            raise CodecError(f"arch={arch!r}: choose 'additive' or 'paper'")
        config.update(
            format=FORMAT, version=VERSION, dim=dim, m=int(m), k=int(k), seed=seed, model_id=model_id, n_train=n
        )
        codec = cls(config, tensors)
        indices = codec._encode_indices(X)
        codec.tensors["entropy_probs"] = entropy.fit_model(indices, codec.k).astype(np.float32)
        codec.config["utilisation"] = float(len(np.unique(indices)) / codec.k)
        codec.config["train_seconds"] = round(time.perf_counter() - start, 3)
        codec._id = None
        return codec

    # --- encode / decode ------------------------------------------------------------------
    @property
    def query_source(self) -> str:
        """What the codec was trained with: "none" (pair-free), "unpaired" or "paired" queries."""
        return self.config.get("query_source", "none")

    @property
    def scoring(self) -> str:
        """ "cosine" (q.x_hat / ||x_hat||, the default since codec version 2) or "ip" (<q, x_hat>)."""
        return self.config.get("scoring", "ip")

    def _encode_indices(self, X: np.ndarray, batch: int = 4096) -> np.ndarray:
        if self.arch == "paper":
            return self._paper.encode(X)
        out = [self._encode_batch(X[i : i + batch]) for i in range(0, len(X), batch)]
        return np.concatenate(out) if out else np.zeros((0, self.m), np.int64)

    @property
    def residual(self) -> bool:
        """Every slot a full-dimension residual stage (the pair-free default at 64 bits)."""
        return self.arch == "additive" and self.layout is None

    def _residual_quantizer(self):
        """FAISS's residual quantiser over the stored stages (beam search with its LUT), built once."""
        if self._rq is None:
            import faiss

            S = self.tensors["stages"]
            rq = faiss.ResidualQuantizer(S.shape[2], self.m, self.nbits)
            faiss.copy_array_to_vector(np.ascontiguousarray(S, np.float32).ravel(), rq.codebooks)
            rq.is_trained = True
            rq.max_beam_size = int(self.config["beam"])
            rq.use_beam_LUT = 1
            rq.compute_codebook_tables()
            self._rq = rq
        return self._rq

    def _encode_batch(self, X: np.ndarray) -> np.ndarray:
        t, lay = self.tensors, self.layout
        if lay is None:
            Y = np.ascontiguousarray((X - t["mean"]) @ t["basis"], dtype=np.float32)
            return unpack(self._residual_quantizer().compute_codes(Y), self.m, self.nbits).astype(np.int64)
        beam = int(self.config["beam"])
        parts = []
        if self.n_coarse:
            # The coarse word and the slots are chosen together: the best few coarse words by
            # distance, each with its residual encoded, keep the one of least total error.
            C0 = t["coarse"]
            near = X @ C0.T - 0.5 * (C0 * C0).sum(1)
            n_cand = min(COARSE_CANDIDATES, len(C0))
            cand = (
                np.argpartition(-near, n_cand - 1, axis=1)[:, :n_cand]
                if n_cand < len(C0)
                else np.tile(np.arange(len(C0)), (len(X), 1))
            )
            best_err = np.full(len(X), np.inf)
            a0 = np.zeros(len(X), np.int64)
            idx = np.zeros((len(X), lay.m), np.int64)
            for j in range(cand.shape[1]):
                aj = cand[:, j]
                Rc = X - C0[aj] - t["mean"]
                Z = (Rc @ t["basis"]).reshape(len(X), lay.n_cols, lay.d)
                ij = encode_columns(Z, lay, t["scale"], t["codebook"], beam)
                Zh = decode_coords(ij, lay, t["scale"], t["codebook"]).reshape(len(X), -1)
                err = ((Rc - Zh @ self._decoder.T) ** 2).sum(1)
                better = err < best_err
                best_err[better], a0[better], idx[better] = err[better], aj[better], ij[better]
            Rc = X - C0[a0] - t["mean"]
            Z = (Rc @ t["basis"]).reshape(len(X), lay.n_cols, lay.d)
            parts.append(a0[:, None])
        else:
            Rc = X - t["mean"]
            Z = (Rc @ t["basis"]).reshape(len(X), lay.n_cols, lay.d)
            idx = encode_columns(Z, lay, t["scale"], t["codebook"], beam)
        if "text_map" in t:
            U = X @ t["text_map"]
            U /= np.maximum(np.linalg.norm(U, axis=1, keepdims=True), 1e-12)
            W = (U @ self._decoder).reshape(Z.shape)
            r = (Rc * U).sum(1) - (W * Z).sum((1, 2))  # u . (the part of x the slots cannot reach)
            if self._combos is None:
                self._combos = column_combos(lay, t["scale"], t["codebook"])
            idx = refine_anisotropic(
                Z,
                W,
                r,
                idx,
                lay,
                t["scale"],
                t["codebook"],
                float(self.config["eta"]),
                int(self.config["sweeps"]),
                self._combos,
            )
        parts.append(idx)
        return np.concatenate(parts, axis=1) if len(parts) > 1 else idx

    @property
    def _decoder(self) -> np.ndarray:
        """P (D, n_cols * d): x_hat = b (+ coarse word) + P z_hat. The encoding basis itself unless
        the codec was trained in a query metric (then P = S^(-1/2) B, E = S^(1/2) B)."""
        return self.tensors.get("decoder", self.tensors["basis"])

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
            raise CodecError(
                f"codes: expected a uint8 array of shape (n, {self.code_bytes}), got {codes.dtype} {codes.shape}"
            )
        return codes

    def _stage_coords(self, idx: np.ndarray) -> np.ndarray:
        """(n, M) indices -> (n, p) coordinates y_hat of a residual-stage codec (x_hat = mean + basis y_hat)."""
        S = self.tensors["stages"]
        Y = np.zeros((len(idx), S.shape[2]), np.float32)
        for m in range(self.m):
            Y += S[m][idx[:, m]]
        return Y

    def _decode_indices(self, idx: np.ndarray) -> np.ndarray:
        t = self.tensors
        if self.layout is None:
            return t["mean"] + self._stage_coords(idx) @ self._decoder.T
        Z = decode_coords(idx[:, self.n_coarse :], self.layout, t["scale"], t["codebook"])
        X = t["mean"] + Z.reshape(len(idx), -1) @ self._decoder.T
        if self.n_coarse:
            X += t["coarse"][idx[:, 0]]
        return X

    def slot_coords(self, codes) -> np.ndarray:
        """The PCA slots' coordinates z of codes (x_hat = mean + coarse + basis z), float32
        (n, n_cols * d): where the IVF clusters the codes (semdb.ivf)."""
        t = self.tensors
        if self.layout is None:
            return self._stage_coords(self.indices(codes))
        idx = self.indices(codes)[:, self.n_coarse :]
        return decode_coords(idx, self.layout, t["scale"], t["codebook"]).reshape(len(idx), -1).astype(np.float32)

    def decode_additive(self, codes) -> np.ndarray:
        """x_hat = b + sum_m T[m, k_m], not normalised: the vector ADC scores are inner products with."""
        if self.arch == "paper":
            return self.decode(codes)
        return self._decode_indices(self.indices(codes))

    def decode(self, codes) -> np.ndarray:
        """(n, code_bytes) codes -> (n, D) float32 unit-norm reconstructions."""
        if self.arch == "paper":
            return self._paper.decode(self.indices(codes)).astype(np.float32)
        X = self.decode_additive(codes)
        return (X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def norms(self, idx: np.ndarray) -> np.ndarray:
        """||x_hat|| of (n, M) indices, from the code alone (no stored bits): with a = b + coarse
        word, ||x_hat||^2 = ||a||^2 + 2 (P^T a).z + z^T P^T P z, z the slots' coordinates."""
        t = self.tensors
        if self._norm_parts is None:
            P = self._decoder
            A = t["mean"][None, :] + (t["coarse"] if self.n_coarse else 0.0)  # (K or 1, D)
            orthonormal = "decoder" not in t  # B has orthonormal columns: P^T P = I
            self._norm_parts = ((A * A).sum(1), A @ P, None if orthonormal else P.T @ P)
        a_sq, AP, G = self._norm_parts
        j = idx[:, 0] if self.n_coarse else np.zeros(len(idx), np.int64)
        if self.layout is None:
            Z = self._stage_coords(idx)
        else:
            Z = decode_coords(idx[:, self.n_coarse :], self.layout, t["scale"], t["codebook"]).reshape(len(idx), -1)
        zz = (Z * Z).sum(1) if G is None else ((Z @ G) * Z).sum(1)
        sq = a_sq[j] + 2.0 * (AP[j] * Z).sum(1) + zz
        return np.sqrt(np.maximum(sq, 1e-24)).astype(np.float32)

    @property
    def tables(self) -> np.ndarray:
        """T (M, K, D): slot m's contribution to x_hat when it holds index k (additive only)."""
        if self.arch == "paper":
            raise CodecError("the paper architecture has no additive tables; it scores by decoding")
        if self._tables is None and self.layout is None:
            T = np.einsum("mkp,dp->mkd", self.tensors["stages"], self._decoder)
            self._tables = np.ascontiguousarray(T, dtype=np.float32)
        if self._tables is None:
            t, lay = self.tensors, self.layout
            blocks = self._decoder.reshape(self.dim, lay.n_cols, lay.d)[:, lay.col, :]  # (D, M', d)
            T = np.einsum("dmj,kj->mkd", blocks, t["codebook"]) * t["scale"][:, None, None]
            if self.n_coarse:
                T = np.concatenate([t["coarse"][None], T])
            self._tables = np.ascontiguousarray(T, dtype=np.float32)
        return self._tables

    # --- search ---------------------------------------------------------------------------
    def index(self, codes, ivf=None):
        """A reusable search structure over `codes` (build once, query many times). `ivf`:
        (centroids, lists) of an IVF over these codes (semdb.ivf): an IvfIndex, whose search
        scans the nearest `nprobe` lists; else every code is scanned."""
        codes = self._check_codes(codes)  # (unpacking all codes just to validate them would cost M x 8 bytes/item)
        from ..search import AdcIndex, FlatIndex

        if self.arch == "paper":
            return FlatIndex(self.decode(codes))
        if ivf is not None:
            from ..ivf import IvfIndex

            return IvfIndex(
                self.tables,
                self.tensors["mean"],
                codes,
                self.nbits,
                self.norms if self.scoring == "cosine" else None,
                ivf[0],
                ivf[1],
                span=None if self.n_coarse else self._decoder,
            )
        return AdcIndex(
            self.tables, self.tensors["mean"], codes, self.nbits, norms=self.norms if self.scoring == "cosine" else None
        )

    def scores(self, Q, codes) -> np.ndarray:
        """(nq, n) scores of float queries against codes: exact ADC <q, x_hat>, divided by
        ||x_hat|| for a cosine-scored codec (paper: decode then score)."""
        Q = check_embeddings(np.atleast_2d(Q), self.dim, name="queries")
        if self.arch == "paper":
            return Q @ self.decode(codes).T
        from ..search import adc_lut, adc_scores

        idx = self.indices(codes)
        lut, offset = adc_lut(Q, self.tables, self.tensors["mean"])
        S = adc_scores(lut, offset, idx)
        if self.scoring == "cosine":
            S /= self.norms(idx)[None, :]
        return S

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

        return save(
            {k: np.ascontiguousarray(v) for k, v in self.tensors.items()},
            metadata={"semdb_codec": json.dumps(self.config, sort_keys=True)},
        )

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "codec") -> Codec:
        from safetensors.numpy import load

        try:
            (header_len,) = struct.unpack("<Q", data[:8])
            header = json.loads(data[8 : 8 + header_len])
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
        if lay is None:
            S, B = t.get("stages"), t["basis"]
            ok = (
                S is not None
                and S.ndim == 3
                and S.shape[:2] == (self.m, self.k)
                and t["mean"].shape == (self.dim,)
                and B.shape == (self.dim, S.shape[2])
                and self._decoder.shape == B.shape
                and np.isfinite(S).all()
                and np.isfinite(B).all()
            )
            if not ok:
                raise CodecError("codec tensors do not match its config (corrupt codec)")
            return
        width = lay.n_cols * lay.d
        ok = (
            t["mean"].shape == (self.dim,)
            and t["codebook"].shape == (self.k, lay.d)
            and t["basis"].shape == (self.dim, width)
            and self._decoder.shape == (self.dim, width)
            and len(t["scale"]) == self.m - self.n_coarse
            and len(lay.col) == self.m - self.n_coarse
            and (not self.n_coarse or t.get("coarse", np.zeros(0)).shape == (self.k, self.dim))
            and ("text_map" not in t or t["text_map"].shape == (self.dim, self.dim))
            and np.isfinite(t["basis"]).all()
            and np.isfinite(t["codebook"]).all()
        )
        if not ok:
            raise CodecError("codec tensors do not match its config (corrupt codec)")

    def save(self, path) -> None:
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


def _train_additive_parts(
    X, Q, paired: bool, m: int, k: int, d: int, n_coarse: int, seed: int, beam: int, progress
) -> tuple[dict, dict]:
    """Tensors and config of an additive codec (see Codec.train and docs/CODEC.md).

    1. coarse slot (optional): k-means of the images in full dimension; the rest codes x - c.
    2. metric (with queries): the slots are trained on y = r S^(1/2), S the shrunk query second
       moment, and decode through P = S^(-1/2) B: still one linear map, ADC exact.
    3. text map (with queries): A predicts each item's text direction u = normalize(x A): a ridge
       regression to the paired texts, or to each image's softmax mixture of an unpaired bag.
       Encoding then re-encodes score-aware along u (refine_anisotropic).
    """
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
    p = train_additive(Y, m - n_coarse, k, d, seed=seed, beam=beam, max_fit=MAX_FIT, progress=progress)
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


def _train_residual_parts(X, m: int, k: int, seed: int, progress) -> tuple[dict, dict]:
    """Tensors and config of a residual-stage codec (the pair-free default at 64 bits).

    Centre on the mean, map into the image-query metric (S^(1/2), S the shrunk second moment
    of the training images), rotate onto its principal directions (p = min(D, n - 1) of them):
    encoder E = S^(1/2) R, decoder P = S^(-1/2) R. Train M full-dimension residual stages of K
    words on y = (x - b) E with FAISS's residual quantiser (beam RESIDUAL_TRAIN_BEAM,
    progressive-dimension k-means). x_hat = b + P sum_m S[m, k_m] is additive (tables
    T[m] = S[m] P^T): ADC exact, fast-scan unchanged. Encoding is the same quantiser's beam
    search (RESIDUAL_BEAM) with its codebook-product LUT.
    """
    import faiss

    from .additive import pca

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
    rq = faiss.ResidualQuantizer(p, m, _nbits(k))
    rq.max_beam_size = RESIDUAL_TRAIN_BEAM
    rq.cp.seed = int(seed) % (1 << 31)
    rq.cp.min_points_per_centroid = 1  # few points per word is expected for small stores: no warning
    rq.cp.verbose = False
    rq.verbose = False
    rq.train(Y)
    stages = faiss.vector_to_array(rq.codebooks).reshape(m, k, p).astype(np.float32)
    report(progress, "training codec", 1, 1)
    tensors = dict(mean=mean, basis=encoder, decoder=decoder, stages=stages)
    config = dict(
        arch="additive",
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
