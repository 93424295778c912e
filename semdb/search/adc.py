"""Asymmetric distance computation (ADC) on packed codes: the query stays float, the database
stays codes.

An additive codec decodes x_hat = b + sum_m T[m, k_m] with tables T (M, K, D). For a query q
the lookup table LUT[m, k] = <q, T[m, k]> turns scoring into M table look-ups per item:
<q, x_hat> = <q, b> + sum_m LUT[m, k_m]. The scan runs in FAISS's kernels: 4-bit sub-codes
(K = 16, or K = 4 with two slots per nibble) use the fast-scan kernel, whose LUT is quantised
to 8 bits, so its best `shortlist` candidates are re-scored exactly in float; other shapes use
FAISS's exact LUT scan. Everything here takes and returns numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import lazy
from ..codec.lut import adc_lut, adc_scores
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
    """Queries prepared for one index, once per search: in its tables' coordinates (what the
    scan reads) and their exact ADC tables and constant <q, b> (what the rerank reads)."""

    span: np.ndarray  # (nq, r)
    lut: np.ndarray  # (nq, M, K)
    offset: np.ndarray  # (nq,)

    def __getitem__(self, i: slice) -> Prepared:
        return Prepared(self.span[i], self.lut[i], self.offset[i])


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


def row_span(tables: np.ndarray) -> np.ndarray | None:
    """An orthonormal basis V (D, r) of the space the tables' rows span, or None when r is not
    well below D (then the tables are used as they are)."""
    rows = tables.reshape(-1, tables.shape[-1]).astype(np.float64)
    power, vectors = np.linalg.eigh(rows.T @ rows)  # D x D: a fifth of an SVD of the M K rows' time
    kept = power > max(power[-1], 0.0) * 1e-12  # singular values above 1e-6 of the largest
    r = int(kept.sum())
    return np.ascontiguousarray(vectors[:, kept], np.float32) if r <= 0.75 * tables.shape[-1] else None


class TableNorms:
    """||x_hat|| of codes by table look-ups, the way ADC scores them. With x_hat = b + sum_m T[m, k_m],

        ||x_hat||^2 = ||b||^2 + sum_m (2 <b, T[m, k_m]> + ||T[m, k_m]||^2)
                      + 2 sum_{m < m'} <T[m, k_m], T[m', k_m']>,

    where only slot pairs whose tables are not orthogonal add a term: a PCA-slot codec's slots
    decode into disjoint blocks of directions, but for the few stages that share a block (and a
    coarse slot). `usable` is False when so many pairs cross (a residual codec) that decoding
    the codes is cheaper."""

    def __init__(self, tables: np.ndarray, span_tables: np.ndarray, bias: np.ndarray):
        m, k, _ = tables.shape
        flat = span_tables.reshape(m * k, -1).astype(np.float64)  # the same inner products as in D
        gram = (flat @ flat.T).reshape(m, k, m, k).transpose(0, 2, 1, 3)  # (M, M, K, K)
        crossing = np.abs(gram).max(axis=(2, 3)) > 1e-6 * max(np.abs(gram).max(), 1e-30)
        self.first, self.second = np.nonzero(np.triu(crossing, 1))
        self.usable = len(self.first) <= 2 * m
        b = np.asarray(bias, np.float64)
        self.constant = float(b @ b)
        self.single = 2 * tables.reshape(m * k, -1).astype(np.float64) @ b + (flat * flat).sum(1)  # (M K,)
        self.pair = (2 * gram[self.first, self.second]).reshape(-1)  # (P K K,)
        self.k = k
        self.slot_start = np.arange(m) * k  # where slot m's entries start in `single`
        self.pair_start = np.arange(len(self.first)) * k * k  # where pair p's start in `pair`

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        """(n, M) indices -> (n,) float32 ||x_hat||."""
        sq = self.constant + self.single[idx + self.slot_start].sum(1)
        if len(self.first):
            sq += self.pair[idx[:, self.first] * self.k + idx[:, self.second] + self.pair_start].sum(1)
        return np.sqrt(np.maximum(sq, 1e-24)).astype(np.float32)


@dataclass(frozen=True)
class TableSpan:
    """What search can take from an additive codec's tables alone, worked out once per codec (an
    SVD and a Gram matrix of the tables: a quarter second at 512 bits), not at every index build.

    Each query's LUT costs M K (its dimension): when the tables span r < D dimensions (a PCA-slot
    codec decodes into its p principal directions), the scan and the rerank work in that span,
    <q, T[m, k]> = <V^T q, V^T T[m, k]>, which cuts each query's fixed cost by about D / r."""

    basis: np.ndarray | None  # V (D, r), None when r is not well below D
    tables: np.ndarray  # the tables in V's coordinates (M, K, r), or themselves
    norms: TableNorms | None  # ||x_hat|| by look-ups, None when decoding is cheaper

    @classmethod
    def of(cls, tables: np.ndarray, bias: np.ndarray) -> TableSpan:
        tables = np.ascontiguousarray(tables, dtype=np.float32)
        basis = row_span(tables)
        in_span = tables if basis is None else np.ascontiguousarray(tables @ basis)
        norms = TableNorms(tables, in_span, np.asarray(bias, np.float32))
        return cls(basis, in_span, norms if norms.usable else None)


class AdcIndex:
    """Packed codes of one additive codec, ready for batched top-k search.

    Build once per code set (the store caches it); `search` then costs one LUT, one FAISS scan
    and an exact float rerank of the shortlist.
    """

    _all_norms = None  # ||x_hat|| of every row (of self.codes), computed by the first long filter

    def __init__(
        self, tables: np.ndarray, bias: np.ndarray, codes: np.ndarray, nbits: int, norms=None, span: TableSpan = None
    ):
        """`norms`: None (score <q, x_hat>) or a function (n, M) indices -> ||x_hat|| (the
        codec's, or its TableSpan's look-ups): the shortlist is then re-scored by cosine,
        <q, x_hat> / ||x_hat||. `span`: TableSpan.of(tables, bias), when the caller keeps it
        per codec."""
        faiss = lazy.faiss()

        self.tables = np.ascontiguousarray(tables, dtype=np.float32)
        self.bias = np.asarray(bias, dtype=np.float32)
        self.codes = np.ascontiguousarray(codes, dtype=np.uint8)
        self.m, k, dim = self.tables.shape
        self.nbits = nbits
        self.norms = norms
        self.n = len(self.codes)
        span = span or TableSpan.of(self.tables, self.bias)
        self.basis, self.span_tables = span.basis, span.tables
        scan_tables, scan_nbits = self.span_tables, nbits
        dim = scan_tables.shape[2]
        if nbits == 2 and self.m % 2 == 0:
            # Two 2-bit slots share one nibble of the packed code (low slot in the low bits),
            # so the pair's table T2[p, a + 4 b] = T[2p, a] + T[2p + 1, b] makes the same bytes
            # a valid 4-bit code for the fast-scan kernel.
            t = scan_tables.reshape(self.m // 2, 2, 4, dim)
            scan_tables = (t[:, 0, None, :, :] + t[:, 1, :, None, :]).reshape(self.m // 2, 16, dim)
            scan_nbits = 4
        m_scan = scan_tables.shape[0]
        st = faiss.AdditiveQuantizer.ST_LUT_nonorm  # inner product: no norm term in the code
        index = faiss.IndexLocalSearchQuantizer(dim, m_scan, scan_nbits, faiss.METRIC_INNER_PRODUCT, st)
        faiss.copy_array_to_vector(scan_tables.reshape(-1), index.lsq.codebooks)
        index.lsq.is_trained = index.is_trained = True
        if index.code_size != self.codes.shape[1]:
            raise ValueError(f"codes have {self.codes.shape[1]} bytes per item, expected {index.code_size}")
        faiss.copy_array_to_vector(self.codes.reshape(-1), index.codes)
        index.ntotal = self.n
        self.fast_scan = scan_nbits == 4
        # The fast-scan index points at `index`'s quantizer without owning it: keep it alive.
        self._lut_index = index
        self.index = faiss.IndexAdditiveQuantizerFastScan(index, FAST_SCAN_BLOCK) if self.fast_scan else index

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

    def prepare(self, Q: np.ndarray) -> Prepared:
        """The queries in the tables' coordinates and their ADC tables, once per search."""
        Q = np.ascontiguousarray(Q, dtype=np.float32)
        span = Q if self.basis is None else np.ascontiguousarray(Q @ self.basis)
        lut, _ = adc_lut(span, self.span_tables, np.zeros(span.shape[1], np.float32))
        return Prepared(span, lut, Q @ self.bias)

    def scan(self, prepared: Prepared, short: int) -> tuple[np.ndarray, np.ndarray]:
        """The approximate scan alone: (scan scores, rows), each (nq, short), -1 past the end.
        A scan score estimates <q, x_hat>, the constant <q, b> included, so that the scores of
        codecs with different means rank together (a codec set cuts one shortlist from them)."""
        scores, rows = self.index.search(prepared.span, short)
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
