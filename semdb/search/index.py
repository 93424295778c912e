"""The search structures over a store's codes: one codec's (FAISS's shape: the index owns its
quantizer), and a codec set's with its staged rows, searched as one."""

from __future__ import annotations

import numpy as np

from ..packing import unpack
from .adc import (
    AdcIndex,
    Candidates,
    CodecTables,
    FlatIndex,
    Prepared,
    StackedNorms,
    TableNorms,
    best_of,
    shortlist_size,
)
from .ivf import IvfIndex

TABLES_KEPT = 16  # codecs whose CodecTables are kept: a store's set is at most 8
_tables: dict[str, CodecTables] = {}  # codec id -> its CodecTables: indexes are rebuilt at every commit


def codec_index(codec, codes, ivf=None):
    """A reusable search structure over `codes` written by `codec` (build once, query many
    times). `ivf`: (centroids, lists) of an IVF over these codes: an IvfIndex, whose search scans
    the nearest `nprobe` lists; else every code is scanned. A codec whose decoder is not additive
    (the paper's) is searched by decoding its codes first."""
    codes = codec.check_codes(codes)  # (unpacking all codes just to validate them would cost M x 8 bytes/item)
    if not codec.quantizer.adc:
        return FlatIndex(codec.decode(codes))
    bias = codec.tensors["mean"]
    tables = _tables.get(codec.id)
    if tables is None:
        tables = _tables[codec.id] = CodecTables.of(codec.tables, bias, codec.nbits)
        while len(_tables) > TABLES_KEPT:
            _tables.pop(next(iter(_tables)))
    norms = (tables.norms or codec.norms) if codec.scoring == "cosine" else None
    if ivf is not None:
        plane = None if codec.n_coarse else codec.decoder
        return IvfIndex(codec.tables, bias, codes, codec.nbits, norms, ivf[0], ivf[1], span=plane, codec_tables=tables)
    return AdcIndex(codec.tables, bias, codes, codec.nbits, norms=norms, codec_tables=tables)


class CodecStack:
    """The fast-scan parts of a codec set whose codecs share one code shape, prepared and scored
    together: one projection of the queries into every codec's slots (the bases side by side)
    and one exact pass over all their shortlisted rows (the LUTs and norm tables stacked). Part
    by part, each codec would read its basis, and pay its rerank's fixed cost, on its own; each
    part keeps its own FAISS scan."""

    def __init__(self, parts: list[AdcIndex]):
        self.parts = parts
        self.basis = np.ascontiguousarray(np.concatenate([p.slots.basis for p in parts], axis=1))
        self.cuts = np.cumsum([0] + [p.slots.basis.shape[1] for p in parts])
        m, k, _ = parts[0].slots.shape
        self.m, self.nbits, self.entries = parts[0].m, parts[0].nbits, m * k
        self.slot_start = np.arange(m) * k
        self.norms = None if parts[0].norms is None else StackedNorms([p.norms for p in parts])

    @classmethod
    def of(cls, parts: list) -> CodecStack | None:
        """The stack of `parts`, or None unless there are several and they can share one: fast-scan
        indexes of one code shape, scored all by inner product or all by cosine with table norms."""
        if len(parts) < 2 or not all(type(p) is AdcIndex and p.fast_scan for p in parts):
            return None
        if len({(p.nbits, p.codes.shape[1], p.slots.shape[:2]) for p in parts}) > 1:
            return None
        if not (all(p.norms is None for p in parts) or all(isinstance(p.norms, TableNorms) for p in parts)):
            return None
        return cls(parts)

    def prepare(self, Q: np.ndarray) -> list[Prepared]:
        """Each part's Prepared queries (AdcIndex.prepare), from one projection."""
        projected = Q @ self.basis
        return [part.prepare(Q, projected[:, a:b]) for part, a, b in zip(self.parts, self.cuts[:-1], self.cuts[1:])]

    def exact(self, prepared: list[Prepared], i: int, part: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Query i's exact scores (AdcIndex's) of `rows` of parts `part`, each (n,), sorted by part."""
        codes = np.concatenate([p.codes[rows[part == j]] for j, p in enumerate(self.parts)])
        idx = unpack(codes, self.m, self.nbits)
        lut = np.concatenate([p.lut[i].reshape(-1) for p in prepared])
        offsets = np.array([p.offset[i] for p in prepared], np.float32)
        ip = lut[idx + self.slot_start + (part * self.entries)[:, None]].sum(1) + offsets[part]
        return ip.astype(np.float32) if self.norms is None else (ip / self.norms(idx, part)).astype(np.float32)


class SetIndex:
    """One index over the parts of a store that several indexes hold (a codec set's codes, one
    index per codec, and the staged embeddings of photos waiting for a codec): part j holds rows
    [starts[j], starts[j] + n_j) of the whole. A search asks every part for its candidates
    (each query's ADC table built per codec) and merges one top k by exact score: each part's
    exact score estimates the same <q, x>."""

    def __init__(self, parts: list):
        self.parts = parts
        self.starts = np.cumsum([0] + [p.n for p in parts])
        self.n = int(self.starts[-1])
        scanning = [j for j, p in enumerate(parts) if type(p) is AdcIndex and p.fast_scan]
        self.stack = CodecStack.of([parts[j] for j in scanning])
        self.stacked = scanning if self.stack else []  # the parts in the stack, in its order

    def search(
        self, Q: np.ndarray, k: int = 10, rows: np.ndarray | None = None, nprobe: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return best_of(self, Q, k, rows=rows, nprobe=nprobe)

    def candidates(
        self, Q: np.ndarray, k: int = 10, rows: np.ndarray | None = None, nprobe: int | None = None
    ) -> list[Candidates]:
        """Per query, the union of every part's candidates (rows of the whole); complete when
        every part's are. `nprobe`: for a part that is an IVF. Unfiltered, the fast-scan parts
        scan alone first and one shortlist is cut from all their scan scores, as one index cuts
        its own, so that only shortlist_size(k) rows are scored exactly in all."""
        Q = np.ascontiguousarray(Q, dtype=np.float32)
        found = [[] for _ in range(len(Q))]
        short, scans = shortlist_size(k), []
        prepared = dict(zip(self.stacked, self.stack.prepare(Q))) if rows is None and self.stack else {}
        for j, (part, start, end) in enumerate(zip(self.parts, self.starts[:-1], self.starts[1:])):
            part_rows = None if rows is None else rows[(rows >= start) & (rows < end)] - start
            if part_rows is not None and not len(part_rows):
                continue
            if part_rows is None and type(part) is AdcIndex and part.fast_scan and short < part.n:
                ready = prepared.get(j) or part.prepare(Q)
                scans.append((j, ready, *part.scan(ready, short)))
                continue
            probe = {"nprobe": nprobe} if nprobe is not None and isinstance(part, IvfIndex) else {}
            for i, c in enumerate(part.candidates(Q, k, rows=part_rows, **probe)):
                found[i].append(Candidates(c.rows + start, c.approx, c.exact, c.complete))
        for i in range(len(Q)) if scans else ():
            found[i].append(self._shortlist(scans, prepared, i, short))
        return [_union(f) for f in found]

    def _shortlist(self, scans: list, prepared: dict, i: int, short: int) -> Candidates:
        """Query i's best `short` rows by scan score over every scanned part, scored exactly:
        in one pass when the parts were prepared as a stack."""
        approx = np.concatenate([a[i] for *_, a, _ in scans])
        cand = np.concatenate([c[i] for *_, c in scans])
        of = np.concatenate([np.full(len(c[i]), j) for j, *_, c in scans])  # part numbers
        keep = np.flatnonzero(cand >= 0)
        keep = keep[np.argsort(-approx[keep], kind="stable")[:short]]
        keep = keep[np.argsort(of[keep], kind="stable")]  # grouped by part, as the exact scores come
        rows, parts, approx = cand[keep], of[keep], approx[keep]
        if prepared:  # then every scanned part is in the stack
            stacked = [prepared[j] for j in self.stacked]
            exact = self.stack.exact(stacked, i, np.searchsorted(self.stacked, parts), rows)
        else:
            exact = np.concatenate(
                [self.parts[j].reranked(p[i : i + 1], rows[parts == j], approx[parts == j]).exact for j, p, *_ in scans]
            )
        return Candidates(rows + self.starts[parts], approx, exact, False)


def _union(parts: list[Candidates]) -> Candidates:
    if not parts:
        none = np.empty(0, np.float32)
        return Candidates(np.empty(0, np.int64), none, none, True)
    return Candidates(
        np.concatenate([c.rows for c in parts]),
        np.concatenate([c.approx for c in parts]),
        np.concatenate([c.exact for c in parts]),
        all(c.complete for c in parts),
    )
