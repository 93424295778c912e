"""Asymmetric distance computation (ADC) on packed codes: the query stays float, the database
stays codes.

An additive codec decodes x_hat = b + sum_m T[m, k_m] with tables T (M, K, D). For a query q
the lookup table LUT[m, k] = <q, T[m, k]> turns scoring into M table look-ups per item:
<q, x_hat> = <q, b> + sum_m LUT[m, k_m]. The scan runs in FAISS's kernels, as a product
quantizer over each slot's own coordinates (SlotSpace): 4-bit sub-codes (K = 16, or K = 4 with
two slots per nibble) use the fast-scan kernel, whose LUT is quantised to 8 bits, so its best
`shortlist` candidates are re-scored exactly in float; other shapes use FAISS's exact LUT scan.
Everything here takes and returns numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import lazy
from ..codec.lut import adc_scores
from ..packing import unpack

FAST_SCAN_BLOCK = 32  # FAISS fast-scan block size (bbs)
ALL_NORMS_FROM = 4096  # rows of a filter from which every row's norm is decoded once and kept
ALL_NORMS_CHUNK = 65536  # rows decoded at a time for them


def shortlist_size(k: int) -> int:
    """Candidates the approximate scan keeps for the exact rerank of a top k (one rule for one
    store and for the merge of a sharded search, semdb/cluster.py)."""
    return max(4 * k, k + 64)


@dataclass(frozen=True)
class Candidates:
    """One query's candidates, the two stages of a search side by side: index `rows`, their
    `approx` scan scores (inner product; the fast-scan kernel's 8-bit-LUT estimate) and their
    `exact` scores (float ADC, cosine for cosine codecs). `complete`: no shortlist was cut by
    scan score (every allowed row was scored exactly, or the scan itself was exact), so the top
    k by `exact` is final.
    Otherwise the rows are the best shortlist_size(k) by `approx`; a sharded search cuts the
    union of its shards' candidates the same way before it ranks by `exact`."""

    rows: np.ndarray  # int64
    approx: np.ndarray  # float32
    exact: np.ndarray  # float32
    complete: bool

    def top(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, scores), each (k,): the best k by exact score, -1 / -inf past the end."""
        ids, scores = _in_rows(top_k(self.exact[None, :], k), self.rows)
        return ids[0], scores[0]


@dataclass(frozen=True)
class Prepared:
    """Queries prepared for one index, once per search: in its scan's slot coordinates (what
    FAISS reads) and their exact ADC tables and constant <q, b> (what the rerank reads)."""

    scan: np.ndarray  # (nq, M_scan d_scan)
    lut: np.ndarray  # (nq, M, K)
    offset: np.ndarray  # (nq,)

    def __getitem__(self, i: slice) -> Prepared:
        return Prepared(self.scan[i], self.lut[i], self.offset[i])


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best k per row, sorted by descending score; rows shorter than k padded with id -1."""
    nq, n = scores.shape
    ids = np.full((nq, k), -1, dtype=np.int64)
    vals = np.full((nq, k), -np.inf, dtype=np.float32)
    kk = min(k, n)
    if kk == 0:
        return ids, vals
    part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk] if kk < n else np.tile(np.arange(n), (nq, 1))
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    ids[:, :kk] = np.take_along_axis(part, order, axis=1)
    vals[:, :kk] = np.take_along_axis(part_scores, order, axis=1)
    return ids, vals


def best_of(index, Q: np.ndarray, k: int, **options) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (ids, scores) per query, each (nq, k), from `index.candidates(Q, k, **options)`:
    row numbers best first, -1 / -inf past the end."""
    Q = np.ascontiguousarray(Q, dtype=np.float32)
    ids = np.full((len(Q), max(k, 0)), -1, dtype=np.int64)
    scores = np.full((len(Q), max(k, 0)), -np.inf, dtype=np.float32)
    if index.n == 0 or k <= 0:
        return ids, scores
    for i, found in enumerate(index.candidates(Q, k, **options)):
        ids[i], scores[i] = found.top(k)
    return ids, scores


class FlatIndex:
    """Exact inner-product search over float vectors (FAISS's IndexFlatIP, without FAISS):
    a store's staged embeddings before it has a codec, or the paper codec's decoded vectors."""

    def __init__(self, vectors: np.ndarray):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.n = len(self.vectors)

    def search(
        self, Q: np.ndarray, k: int = 10, shortlist: int | None = None, rows: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (row ids, scores); `rows`: search only these rows (a filter)."""
        Q = np.asarray(Q, np.float32)
        if rows is None:
            return top_k(Q @ self.vectors.T, k)
        return _in_rows(top_k(Q @ self.vectors[rows].T, k), rows)

    def candidates(
        self, Q: np.ndarray, k: int = 10, shortlist: int | None = None, rows: np.ndarray | None = None
    ) -> list[Candidates]:
        """Every row (or every one of `rows`) scored exactly: nothing is cut (AdcIndex.candidates)."""
        rows = np.arange(len(self.vectors)) if rows is None else np.asarray(rows, np.int64)
        scores = np.asarray(Q, np.float32) @ self.vectors[rows].T
        return [Candidates(rows, s, s, True) for s in scores]


def _in_rows(found: tuple[np.ndarray, np.ndarray], rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map top_k positions within `rows` back to row ids (keeping -1 padding)."""
    ids, scores = found
    return np.where(ids >= 0, np.asarray(rows)[np.maximum(ids, 0)], -1), scores


@dataclass(frozen=True)
class SlotSpace:
    """Each slot's own coordinates. Slot m's K table rows span d_m <= K dimensions, with an
    orthonormal basis W_m (D, d_m): T[m, k] = W_m C[m, k], so <q, T[m, k]> = <W_m^T q, C[m, k]>.
    A query is read in every slot's coordinates at once (q W, D x M d) and its LUT then costs
    M K d instead of M K D: a PCA-slot codec's slots hold 2 of its 512 dimensions each. FAISS
    scans the codes as a product quantizer over these coordinates (its LUT costs M K d too)."""

    basis: np.ndarray  # W's columns that are not padding (D, sum_m d_m)
    columns: np.ndarray | None  # where they go in q W (nq, M d), d = max d_m; None: nowhere padded
    tables: np.ndarray  # C (M, K, d), zero-padded like W

    @classmethod
    def of(cls, tables: np.ndarray) -> SlotSpace:
        tables = np.asarray(tables, np.float64)
        m, k, dim = tables.shape
        power, mixes = np.linalg.eigh(tables @ tables.transpose(0, 2, 1))  # per slot, K x K: ascending
        power, mixes = power[:, ::-1], mixes[:, :, ::-1]
        kept = power > max(power.max(), 1e-30) * 1e-12  # singular values above 1e-6 of the largest: a prefix
        d = max(int(kept.sum(1).max()), 1)
        used = kept[:, :d]
        vectors = mixes[:, :, :d].transpose(0, 2, 1) @ tables / np.sqrt(np.where(used, power[:, :d], 1.0))[..., None]
        basis = np.where(used[..., None], vectors, 0.0)  # (M, d, D): slot m's orthonormal rows
        in_slots = np.einsum("mkD,mdD->mkd", tables, basis)
        columns = np.flatnonzero(used.reshape(-1))
        return cls(
            np.ascontiguousarray(basis.reshape(m * d, dim)[columns].T, np.float32),
            None if len(columns) == m * d else columns,
            np.ascontiguousarray(in_slots, np.float32),
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.tables.shape

    def read(self, Q: np.ndarray) -> np.ndarray:
        """(nq, D) queries -> (nq, M d) in the slots' coordinates."""
        return self.expand(Q @ self.basis)

    def expand(self, projected: np.ndarray) -> np.ndarray:
        """Queries projected on `basis` -> their (nq, M d) slot coordinates, padding put back."""
        if self.columns is None:
            return np.ascontiguousarray(projected)
        m, _, d = self.tables.shape
        read = np.zeros((len(projected), m * d), np.float32)
        read[:, self.columns] = projected
        return read

    def overlap(self) -> np.ndarray:
        """W_m^T W_m' for every pair of slots, (M, d, M, d)."""
        m, _, d = self.tables.shape
        full = np.zeros((self.basis.shape[0], m * d))
        full[:, self.columns if self.columns is not None else slice(None)] = self.basis
        return (full.T @ full).reshape(m, d, m, d)

    def lut(self, read: np.ndarray) -> np.ndarray:
        """Queries read in the slots' coordinates -> their LUT (nq, M, K) float32."""
        m, _, d = self.tables.shape
        return np.ascontiguousarray(np.einsum("qmd,mkd->qmk", read.reshape(len(read), m, d), self.tables))


class TableNorms:
    """||x_hat|| of codes by table look-ups, the way ADC scores them. With x_hat = b + sum_m T[m, k_m],

        ||x_hat||^2 = ||b||^2 + sum_m (2 <b, T[m, k_m]> + ||T[m, k_m]||^2)
                      + 2 sum_{m < m'} <T[m, k_m], T[m', k_m']>,

    where only slot pairs whose tables are not orthogonal add a term: a PCA-slot codec's slots
    decode into disjoint blocks of directions, but for the few stages that share a block (and a
    coarse slot). `usable` is False when so many pairs cross (a residual codec) that decoding
    the codes is cheaper."""

    def __init__(self, tables: np.ndarray, slots: SlotSpace, bias: np.ndarray):
        m, k, d = slots.shape
        in_slots = slots.tables.astype(np.float64)
        overlap = slots.overlap()  # W_m^T W_m': zero but for slots that share directions
        crossing = np.abs(overlap).max(axis=(1, 3)) > 1e-4  # orthogonal slots meet at ~1e-8, sharing ones at ~1
        self.first, self.second = np.nonzero(np.triu(crossing, 1))
        self.usable = len(self.first) <= 2 * m
        b = np.asarray(bias, np.float64)
        self.constant = float(b @ b)
        squares = (in_slots * in_slots).sum(2).reshape(-1)  # ||T[m, k]||^2: W_m is orthonormal
        self.single = 2 * tables.reshape(m * k, -1).astype(np.float64) @ b + squares  # (M K,)
        meets = overlap[self.first, :, self.second, :]  # (P, d, d)
        gram = np.einsum("pkd,pde,ple->pkl", in_slots[self.first], meets, in_slots[self.second])  # <T[m, k], T[m', l]>
        self.pair = (2 * gram).reshape(-1)  # (P K K,)
        self.k = k
        self.slot_start = np.arange(m) * k  # where slot m's entries start in `single`
        self.pair_start = np.arange(len(self.first)) * k * k  # where pair p's start in `pair`

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        """(n, M) indices -> (n,) float32 ||x_hat||."""
        sq = self.constant + self.single[idx + self.slot_start].sum(1)
        if len(self.first):
            sq += self.pair[idx[:, self.first] * self.k + idx[:, self.second] + self.pair_start].sum(1)
        return np.sqrt(np.maximum(sq, 1e-24)).astype(np.float32)


class StackedNorms:
    """The TableNorms of several codecs of one shape as one look-up, where each row's codec picks
    its tables: a codec set's shortlist gets its norms in one pass, not one pass per codec. (One
    codec keeps TableNorms' own call: the per-row pair columns here cost it about 30 us more.)"""

    def __init__(self, norms: list[TableNorms]):
        self.k, self.entries = norms[0].k, len(norms[0].single)
        self.constant = np.array([n.constant for n in norms])
        self.single = np.concatenate([n.single for n in norms])  # codec c's at c M K
        self.slot_start = norms[0].slot_start
        padding = sum(len(n.pair) for n in norms)  # a K x K block of zeros: pairs a codec does not have
        self.pair = np.concatenate([n.pair for n in norms] + [np.zeros(self.k * self.k)])
        most = max(len(n.first) for n in norms)
        self.first, self.second = np.zeros((2, len(norms), most), np.int64)
        self.pair_start = np.full((len(norms), most), padding)
        at = 0
        for c, n in enumerate(norms):
            p = len(n.first)
            self.first[c, :p], self.second[c, :p], self.pair_start[c, :p] = n.first, n.second, n.pair_start + at
            at += len(n.pair)

    def __call__(self, idx: np.ndarray, codec: np.ndarray) -> np.ndarray:
        """(n, M) indices of rows of codecs `codec` (n,) -> (n,) float32 ||x_hat||."""
        sq = self.constant[codec] + self.single[idx + self.slot_start + (codec * self.entries)[:, None]].sum(1)
        if self.first.shape[1]:
            first = np.take_along_axis(idx, self.first[codec], axis=1)
            second = np.take_along_axis(idx, self.second[codec], axis=1)
            sq += self.pair[first * self.k + second + self.pair_start[codec]].sum(1)
        return np.sqrt(np.maximum(sq, 1e-24)).astype(np.float32)


@dataclass(frozen=True)
class CodecTables:
    """What search takes from an additive codec's tables alone, worked out once per codec (in
    milliseconds: K x K eigendecompositions and the crossing slots' Gram blocks), not at every
    index build: the slots' own coordinates of the rerank's tables and of the scan's, and the
    norms' look-up tables."""

    slots: SlotSpace  # the codec's slots: the rerank's exact LUT
    scan: SlotSpace  # FAISS's sub-quantizers: the slots, or pairs of 2-bit slots that share a nibble
    scan_nbits: int
    norms: TableNorms | None  # ||x_hat|| by look-ups, None when decoding is cheaper

    @classmethod
    def of(cls, tables: np.ndarray, bias: np.ndarray, nbits: int) -> CodecTables:
        tables = np.ascontiguousarray(tables, dtype=np.float32)
        slots = scan = SlotSpace.of(tables)
        m, _, dim = tables.shape
        scan_nbits = nbits
        if nbits == 2 and m % 2 == 0:
            # Two 2-bit slots share one nibble of the packed code (low slot in the low bits),
            # so the pair's table T2[p, a + 4 b] = T[2p, a] + T[2p + 1, b] makes the same bytes
            # a valid 4-bit code for the fast-scan kernel.
            t = tables.reshape(m // 2, 2, 4, dim)
            scan, scan_nbits = SlotSpace.of((t[:, 0, None, :, :] + t[:, 1, :, None, :]).reshape(m // 2, 16, dim)), 4
        norms = TableNorms(tables, slots, np.asarray(bias, np.float32))
        return cls(slots, scan, scan_nbits, norms if norms.usable else None)


class AdcIndex:
    """Packed codes of one additive codec, ready for batched top-k search.

    Build once per code set (the store caches it); `search` then costs one LUT, one FAISS scan
    and an exact float rerank of the shortlist.
    """

    _all_norms = None  # ||x_hat|| of every row (of self.codes), computed by the first long filter

    def __init__(
        self,
        tables: np.ndarray,
        bias: np.ndarray,
        codes: np.ndarray,
        nbits: int,
        norms=None,
        codec_tables: CodecTables | None = None,
    ):
        """`norms`: None (score <q, x_hat>) or a function (n, M) indices -> ||x_hat|| (the
        codec's, or its CodecTables' look-ups): the shortlist is then re-scored by cosine,
        <q, x_hat> / ||x_hat||. `codec_tables`: CodecTables.of(tables, bias, nbits), when the
        caller keeps it per codec."""
        faiss = lazy.faiss()

        self.tables = np.ascontiguousarray(tables, dtype=np.float32)
        self.bias = np.asarray(bias, dtype=np.float32)
        self.codes = np.ascontiguousarray(codes, dtype=np.uint8)
        self.m = self.tables.shape[0]
        self.nbits = nbits
        self.norms = norms
        self.n = len(self.codes)
        tables = codec_tables or CodecTables.of(self.tables, self.bias, nbits)
        self.slots, self.scan_slots = tables.slots, tables.scan
        m_scan, _, d_scan = self.scan_slots.shape
        index = faiss.IndexPQ(m_scan * d_scan, m_scan, tables.scan_nbits, faiss.METRIC_INNER_PRODUCT)
        faiss.copy_array_to_vector(self.scan_slots.tables.reshape(-1), index.pq.centroids)
        index.is_trained = True
        if index.code_size != self.codes.shape[1]:
            raise ValueError(f"codes have {self.codes.shape[1]} bytes per item, expected {index.code_size}")
        faiss.copy_array_to_vector(self.codes.reshape(-1), index.codes)
        index.ntotal = self.n
        self.fast_scan = tables.scan_nbits == 4
        self.index = faiss.IndexPQFastScan(index, FAST_SCAN_BLOCK) if self.fast_scan else index

    def search(
        self, Q: np.ndarray, k: int = 10, shortlist: int | None = None, rows: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (ids, scores) per query, each (nq, k); ids are row numbers, -1 past the end.
        `rows`: search only these rows (a filter): scored exactly, without the fast-scan pass."""
        return best_of(self, Q, k, shortlist=shortlist, rows=rows)

    def candidates(
        self, Q: np.ndarray, k: int = 10, shortlist: int | None = None, rows: np.ndarray | None = None
    ) -> list[Candidates]:
        """Per query: the scan's shortlist (one FAISS call for every query) and its exact rerank."""
        Q = np.ascontiguousarray(Q, dtype=np.float32)
        if rows is not None:
            return self._exactly(Q, np.asarray(rows, np.int64))
        if not self.fast_scan and self.norms is None:
            approx, cand = self.scan(self.prepare(Q), min(k, self.n))  # FAISS's exact-LUT scan: exact already
            return [Candidates(c[c >= 0], a[c >= 0], a[c >= 0], True) for a, c in zip(approx, cand)]
        short = shortlist or shortlist_size(k)
        if short >= self.n:  # the shortlist is everything: score it all exactly (fast-scan
            return self.candidates(Q, k, rows=np.arange(self.n))  # may drop ties at k = n)
        prepared = self.prepare(Q)
        approx, cand = self.scan(prepared, short)
        # Exact float rerank of the candidates (fast-scan's LUT is 8-bit quantised; a cosine
        # score divides by ||x_hat||, which the inner-product scan does not know).
        return [self.reranked(prepared[i : i + 1], cand[i], approx[i]) for i in range(len(Q))]

    def prepare(self, Q: np.ndarray, projected: np.ndarray | None = None) -> Prepared:
        """The queries in the slots' coordinates and their ADC tables, once per search.
        `projected`: Q @ self.slots.basis when the caller has it (a CodecStack)."""
        Q = np.ascontiguousarray(Q, dtype=np.float32)
        read = self.slots.expand(Q @ self.slots.basis if projected is None else projected)
        scan = read if self.scan_slots is self.slots else self.scan_slots.read(Q)
        return Prepared(scan, self.slots.lut(read), Q @ self.bias)

    def scan(self, prepared: Prepared, short: int) -> tuple[np.ndarray, np.ndarray]:
        """The approximate scan alone: (scan scores, rows), each (nq, short), -1 past the end.
        A scan score estimates <q, x_hat>, the constant <q, b> included, so that the scores of
        codecs with different means rank together (a codec set cuts one shortlist from them)."""
        scores, rows = self.index.search(prepared.scan, short)
        return scores + prepared.offset[:, None], rows

    def reranked(self, prepared: Prepared, cand: np.ndarray, approx: np.ndarray) -> Candidates:
        """One query's scanned rows `cand` (and their scan scores) scored exactly."""
        keep = cand >= 0
        rows = cand[keep]
        return Candidates(rows, approx[keep], self._scores(prepared, rows)[1][0], False)

    def _exactly(self, Q: np.ndarray, rows: np.ndarray) -> list[Candidates]:
        """Every row scored exactly, for every query at once (a filter, or a shortlist as long
        as the index)."""
        ip, exact = self._scores(self.prepare(Q), rows)
        return [Candidates(rows, ip[i], exact[i], True) for i in range(len(Q))]

    def exact_scores(self, Q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Exact scores (nq, len(rows)) of the chosen rows: float ADC, divided by ||x_hat|| for
        cosine codecs."""
        return self._scores(self.prepare(Q), rows)[1]

    def _scores(self, prepared: Prepared, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(inner product, exact score) of the chosen rows, each (nq, len(rows))."""
        idx = unpack(self.codes[rows], self.m, self.nbits)
        ip = adc_scores(prepared.lut, prepared.offset, idx)
        return ip, (ip / self._row_norms(rows, idx)[None, :] if self.norms is not None else ip)

    def _row_norms(self, rows: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """||x_hat|| of the rows (their indices `idx`). A filter scores every row it keeps, which
        may be most of the index (`like` keeps all but one): those norms are every row's,
        decoded once per index, in chunks; a shortlist's few are decoded as they come."""
        if self._all_norms is None and len(rows) < ALL_NORMS_FROM:
            return self.norms(idx)
        if self._all_norms is None:
            chunks = range(0, self.n, ALL_NORMS_CHUNK)
            self._all_norms = np.concatenate(
                [self.norms(unpack(self.codes[i : i + ALL_NORMS_CHUNK], self.m, self.nbits)) for i in chunks]
            )
        return self._all_norms[rows]
