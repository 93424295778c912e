"""IVF over the stored codes: search a few coarse lists instead of every code.

    decoded sample --spherical k-means--> nlist coarse centroids (unit, CLIP space)
    every code --argmax_j <c_j, x_hat>--> its list (persisted by the store, per code segment)
    query q --<q, c_j>, best nprobe lists--> FAISS fast-scan of those lists' codes
        --best max(4k, k + 64)--> exact float ADC rerank (cosine via the codec's norms)

The fine codes are the store's packed codes bit for bit: FAISS
`IndexIVFAdditiveQuantizerFastScan` with the codec's tables as its codebooks, `by_residual =
False` (a code means the same vector in every list), inner product and `ST_LUT_nonorm`, so the
score of an item in a list is the flat fast-scan score of the same code (tests/search/test_ivf.py).
The store keeps no floats: the centroids are trained on decoded codes. An item's list depends
only on its code and the centroids, so it is computed once (when the code is written) and
stored: a write batch given `StoreContext.assign_ivf_lists` (`ctx.write()`) assigns its new codes
with `Assigner` in the same transaction (semdb/store/ivf_rows.py).

Only 4-bit codecs (K = 16, the default) use IVF; other shapes keep the exhaustive scan.
"""

from __future__ import annotations

import time

import numpy as np

from .. import lazy
from ..rows import unit_rows
from .adc import FAST_SCAN_BLOCK, AdcIndex, Candidates, CodecTables, best_of, shortlist_size

# default nprobe = nlist / 4: keeps nearly all of the exhaustive scan's top 10 (docs/SCALE.md#ivf)
DEFAULT_NPROBE_FRACTION = 1 / 4
KMEANS_ITER = 10
KMEANS_POINTS_PER_LIST = 64  # decoded codes per centroid for k-means (a sample)...
KMEANS_MAX_POINTS = 131_072  # ...and at most this many in all (k-means time grows as points x nlist)
FILTER_EXACT_MAX = 50_000  # a filter keeping at most this many rows: score them exactly


def nlist_for(n: int) -> int:
    """Coarse lists for n items: a power of two near 2 sqrt(n), between 64 and 8192."""
    target = 2.0 * np.sqrt(max(n, 1))
    return int(min(8192, max(64, 2 ** round(np.log2(target)))))


def default_nprobe(nlist: int) -> int:
    return max(1, int(round(nlist * DEFAULT_NPROBE_FRACTION)))


def supported(codec) -> bool:
    """Whether IVF can scan this codec's codes (additive, 4-bit sub-codes)."""
    return codec is not None and codec.arch == "additive" and codec.nbits == 4


def train_centroids(codec, codes: np.ndarray, nlist: int, seed: int = 0) -> np.ndarray:
    """(nlist, D) centroids: k-means of a seeded sample of decoded codes (at most
    KMEANS_POINTS_PER_LIST per list and KMEANS_MAX_POINTS in all). For a codec whose decoder
    is orthonormal and has no coarse slot (the pair-free default above 128 bits), x_hat =
    mean + P z is an isometry of z, so k-means runs on z (n_cols * d < D coordinates) and the
    centroids are mapped back; otherwise spherical k-means on the decoded unit vectors."""
    faiss = lazy.faiss()

    n = len(codes)
    rng = np.random.default_rng(seed)
    take = min(n, nlist * KMEANS_POINTS_PER_LIST, max(KMEANS_MAX_POINTS, nlist))
    sample = np.sort(rng.choice(n, take, replace=False)) if take < n else np.arange(n)
    in_z = codec.n_coarse == 0 and "decoder" not in codec.tensors
    part = codec.slot_coords if in_z else codec.decode
    X = np.concatenate([part(codes[sample[i : i + 65536]]) for i in range(0, len(sample), 65536)])
    km = faiss.Kmeans(
        X.shape[1],
        nlist,
        niter=KMEANS_ITER,
        spherical=not in_z,
        seed=seed,
        max_points_per_centroid=KMEANS_POINTS_PER_LIST,
        min_points_per_centroid=1,
        verbose=False,
    )
    km.train(np.ascontiguousarray(X, np.float32))
    C = km.centroids.astype(np.float32)
    if in_z:  # the lists' mean decoded vectors (not normalised: codes go to the nearest in L2)
        return (codec.tensors["mean"][None, :] + C @ codec.decoder.T).astype(np.float32)
    return unit_rows(C)


class Assigner:
    """codes -> list numbers (uint32): the nearest centroid, argmax_j <c_j, x_hat> - |c_j|^2 / 2
    (the k-means rule), computed in the codec's own coordinates. x_hat = a + P z (a: the mean,
    plus the coarse word if any; z: the slots' coordinates, n_cols * d of them, fewer than D),
    so <c_j, x_hat> = <c_j, a> + <P^T c_j, z>.
    Past EXACT_NLIST lists the search is two-level: the centroids are grouped (k-means of the
    centroids), an item is compared with the centroids of its GROUPS_PROBED best groups only
    (the list it gets is then nearly always, not always, its nearest; searching stays exact
    in the sense that matters: every code is in exactly one list)."""

    EXACT_NLIST = 1024
    GROUPS_PROBED = 4

    def __init__(self, codec, centroids: np.ndarray):
        self.codec = codec
        t = codec.tensors
        C = np.asarray(centroids, np.float32)
        self.nlist = len(C)
        A = t["mean"][None, :] + (t["coarse"] if codec.n_coarse else 0.0)  # (K or 1, D)
        self.CA = (A @ C.T - 0.5 * (C * C).sum(1)[None, :]).astype(np.float32)  # (K or 1, nlist)
        self.CP = np.ascontiguousarray((C @ codec.decoder).T, np.float32)  # (n_cols * d, nlist)
        self.groups = None
        if self.nlist > self.EXACT_NLIST:
            faiss = lazy.faiss()

            n_groups = int(np.sqrt(self.nlist))
            km = faiss.Kmeans(C.shape[1], n_groups, niter=10, seed=0, min_points_per_centroid=1, verbose=False)
            km.train(C)
            G = km.centroids.astype(np.float32)
            member = np.argmax(C @ G.T - 0.5 * (G * G).sum(1)[None, :], axis=1)
            self.groups = [np.flatnonzero(member == g) for g in range(n_groups)]
            self.GA = (A @ G.T - 0.5 * (G * G).sum(1)[None, :]).astype(np.float32)
            self.GP = np.ascontiguousarray((G @ codec.decoder).T, np.float32)

    def __call__(self, codes: np.ndarray, chunk: int = 32768) -> np.ndarray:
        codec = self.codec
        out = np.empty(len(codes), np.uint32)
        for i in range(0, len(codes), chunk):
            part = np.asarray(codes[i : i + chunk])
            idx = codec.indices(part)
            Z = codec.slot_coords(part)
            a = idx[:, 0] if codec.n_coarse else np.zeros(len(idx), np.int64)
            if self.groups is None:
                S = Z @ self.CP
                S += self.CA[a]
                out[i : i + chunk] = np.argmax(S, axis=1)
                continue
            SG = Z @ self.GP + self.GA[a]
            near = np.argpartition(-SG, min(self.GROUPS_PROBED, len(self.groups)) - 1, axis=1)[:, : self.GROUPS_PROBED]
            best = np.full(len(Z), -np.inf, np.float32)
            arg = np.zeros(len(Z), np.int64)
            for g, members in enumerate(self.groups):
                rows = np.flatnonzero((near == g).any(axis=1))
                if not len(rows) or not len(members):
                    continue
                S = Z[rows] @ self.CP[:, members] + self.CA[:, members][a[rows]]
                j = np.argmax(S, axis=1)
                s = S[np.arange(len(rows)), j]
                better = s > best[rows]
                best[rows[better]], arg[rows[better]] = s[better], members[j[better]]
            out[i : i + chunk] = arg
        return out


class IvfIndex(AdcIndex):
    """An AdcIndex whose fast-scan pass visits the `nprobe` lists nearest the query instead of
    every code. Row ids, `rows=` filters and the exact rerank are those of AdcIndex."""

    def __init__(
        self,
        tables,
        bias,
        codes,
        nbits,
        norms,
        centroids: np.ndarray,
        lists: np.ndarray,
        nprobe: int | None = None,
        span: np.ndarray | None = None,
        codec_tables: CodecTables | None = None,
    ):
        """`span`: the codec's decoder P (D, r): when every centroid lies in the plane
        spanned by P and the mean (the k-means of train_centroids on z), the lists are ranked
        in those r < D coordinates (reading nlist x r floats per query instead of nlist x D)."""
        faiss = lazy.faiss()

        if nbits != 4:
            raise ValueError("IVF scans 4-bit codes only")
        self.tables = np.ascontiguousarray(tables, dtype=np.float32)
        self.bias = np.asarray(bias, dtype=np.float32)
        self.codes = np.ascontiguousarray(codes, dtype=np.uint8)
        self.m, k, dim = self.tables.shape
        self.slots = self.scan_slots = (codec_tables or CodecTables.of(self.tables, self.bias, nbits)).slots
        self.nbits, self.norms, self.n, self.fast_scan = nbits, norms, len(self.codes), True
        self.centroids = np.ascontiguousarray(centroids, np.float32)
        self.nlist = len(self.centroids)
        lists = np.asarray(lists, np.int64)
        if len(lists) != self.n or (self.n and (lists.min() < 0 or lists.max() >= self.nlist)):
            raise ValueError(f"{len(lists)} list numbers for {self.n} codes and {self.nlist} lists")
        self.nprobe = nprobe or default_nprobe(self.nlist)
        t0 = time.perf_counter()
        self.quantizer = faiss.IndexFlatIP(dim)
        self.quantizer.add(self.centroids)
        self._plane = self._in_plane(span) if span is not None else None
        st = faiss.AdditiveQuantizer.ST_LUT_nonorm
        flat = faiss.IndexIVFLocalSearchQuantizer(
            self.quantizer, dim, self.nlist, self.m, nbits, faiss.METRIC_INNER_PRODUCT, st
        )
        flat.by_residual = False
        faiss.copy_array_to_vector(self.tables.reshape(-1), flat.lsq.codebooks)
        flat.lsq.is_trained = flat.is_trained = True
        if flat.code_size != self.codes.shape[1]:
            raise ValueError(f"codes have {self.codes.shape[1]} bytes per item, expected {flat.code_size}")
        order = np.argsort(lists, kind="stable")
        # Held in variables until add_entries has copied them: swig_ptr does not keep them alive.
        ids_sorted = np.ascontiguousarray(order, np.int64)
        codes_sorted = np.ascontiguousarray(self.codes[order])
        bounds = np.searchsorted(lists[order], np.arange(self.nlist + 1))
        for j in np.flatnonzero(np.diff(bounds)):
            a, e = int(bounds[j]), int(bounds[j + 1])
            flat.invlists.add_entries(int(j), e - a, faiss.swig_ptr(ids_sorted[a:e]), faiss.swig_ptr(codes_sorted[a:e]))
        flat.ntotal = self.n
        del ids_sorted, codes_sorted
        self.index = faiss.IndexIVFAdditiveQuantizerFastScan(flat, FAST_SCAN_BLOCK)  # packs every list
        self.index.by_residual = False  # the converting constructor sets it back to True
        # The fast-scan index points at `flat`'s quantizer (its codebooks) without owning it:
        # keep `flat` alive, but drop its copy of the codes (and the fast-scan's pointer to it).
        self.index.orig_invlists = None
        self._empty = faiss.ArrayInvertedLists(self.nlist, flat.code_size)  # owned here, not by `flat`
        flat.replace_invlists(self._empty, False)  # frees the old lists
        self._flat = flat
        self.list_sizes = np.diff(bounds)
        self.build_seconds = time.perf_counter() - t0

    @property
    def ranks_in_plane(self) -> bool:
        """Whether queries rank the lists in the decoder's r < D coordinates (see __init__'s `span`)."""
        return self._plane is not None

    def _in_plane(self, span):
        """(U, W, m_perp, s) with <q, c_j> = <U^T q, W_j> + <q, m_perp> s_j, or None."""
        U, _ = np.linalg.qr(np.asarray(span, np.float64))
        C = self.centroids.astype(np.float64)
        m_perp = self.bias - U @ (U.T @ self.bias)
        mm = float(m_perp @ m_perp)
        if mm < 1e-12:
            return None
        W = C @ U
        C_perp = C - W @ U.T
        s = C_perp @ m_perp / mm
        if np.abs(C_perp - s[:, None] * m_perp[None, :]).max() > 1e-4:
            return None  # e.g. a coarse slot: centroids leave the plane
        f = lambda a: np.ascontiguousarray(a, np.float32)  # noqa: E731
        return f(U), f(W), f(m_perp), f(s)

    def rank_lists(self, Q: np.ndarray, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, lists) (nq, nprobe): the lists whose centroid is nearest each query, best first."""
        if self._plane is None:
            return self.quantizer.search(Q, nprobe)
        U, W, m_perp, s = self._plane
        S = (Q @ U) @ W.T + (Q @ m_perp)[:, None] * s[None, :]
        if nprobe < self.nlist:
            part = np.argpartition(-S, nprobe - 1, axis=1)[:, :nprobe]
        else:
            part = np.tile(np.arange(self.nlist), (len(Q), 1))
        ps = np.take_along_axis(S, part, axis=1)
        order = np.argsort(-ps, axis=1, kind="stable")
        return (
            np.ascontiguousarray(np.take_along_axis(ps, order, axis=1), np.float32),
            np.ascontiguousarray(np.take_along_axis(part, order, axis=1), np.int64),
        )

    def memory_bytes(self) -> int:
        """Bytes the IVF structure holds besides the codes array: packed codes (lists padded
        to 32-item blocks), 8-byte ids, centroids."""
        padded = int((-(-self.list_sizes // FAST_SCAN_BLOCK) * FAST_SCAN_BLOCK).sum())
        return padded * self.index.M2 // 2 + self.n * 8 + self.centroids.nbytes

    def search(
        self,
        Q: np.ndarray,
        k: int = 10,
        shortlist: int | None = None,
        rows: np.ndarray | None = None,
        nprobe: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (ids, scores) per query: the nprobe nearest lists (default self.nprobe;
        nprobe >= nlist scans every list), shortlist reranked exactly. `rows`: a filter; at most
        FILTER_EXACT_MAX rows are scored exactly, more go through FAISS's IDSelector."""
        return best_of(self, Q, k, shortlist=shortlist, rows=rows, nprobe=nprobe)

    def candidates(
        self,
        Q: np.ndarray,
        k: int = 10,
        shortlist: int | None = None,
        rows: np.ndarray | None = None,
        nprobe: int | None = None,
    ) -> list[Candidates]:
        """Per query: the shortlist of the nprobe nearest lists and its exact rerank (see search)."""
        faiss = lazy.faiss()

        Q = np.ascontiguousarray(Q, dtype=np.float32)
        if rows is not None:
            rows = np.asarray(rows, np.int64)
            if len(rows) <= FILTER_EXACT_MAX:
                return self._exactly(Q, rows)
        short = shortlist or shortlist_size(k)
        if short >= (self.n if rows is None else len(rows)):
            return super().candidates(Q, k, rows=np.arange(self.n) if rows is None else rows)
        nprobe = min(int(nprobe or self.nprobe), self.nlist)
        Dq, Iq = self.rank_lists(Q, nprobe)  # contiguous, and named while FAISS reads them
        params = faiss.SearchParametersIVF()
        params.nprobe = nprobe
        self.index.nprobe = nprobe  # FAISS sizes buffers by the index's nprobe, not the params'
        if rows is not None:
            keep = np.zeros(self.n, bool)
            keep[rows] = True
            bitmap = np.packbits(keep, bitorder="little")  # a named array: swig_ptr does not keep it alive
            sel = faiss.IDSelectorBitmap(self.n, faiss.swig_ptr(bitmap))
            params.sel = sel
        prepared, found = self.prepare(Q), []
        for i in range(len(Q)):
            D = np.empty((1, short), np.float32)
            cand = np.empty((1, short), np.int64)
            # One query per FAISS call: batched calls of the IVF fast-scan with by_residual=False
            # return lists that differ from the flat scan's (faiss 1.15, tests/search/test_ivf.py), single
            # queries match it exactly.
            q, iq, dq = Q[i : i + 1], np.ascontiguousarray(Iq[i : i + 1]), np.ascontiguousarray(Dq[i : i + 1])
            self.index.search_preassigned_c(
                1,
                faiss.swig_ptr(q),
                short,
                faiss.swig_ptr(iq),
                faiss.swig_ptr(dq),
                faiss.swig_ptr(D),
                faiss.swig_ptr(cand),
                False,
                params,
            )
            # FAISS's scan scores leave out <q, b>: added, as AdcIndex.scan does, so they compare across codecs
            found.append(self.reranked(prepared[i : i + 1], cand[0], D[0] + prepared.offset[i]))
        return found
