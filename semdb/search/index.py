"""The search structures over a store's codes: one codec's (FAISS's shape: the index owns its
quantizer), and a codec set's with its staged rows, searched as one."""

from __future__ import annotations

import numpy as np

from .adc import AdcIndex, Candidates, CodecTables, FlatIndex, best_of, shortlist_size
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
        for part, start, end in zip(self.parts, self.starts[:-1], self.starts[1:]):
            part_rows = None if rows is None else rows[(rows >= start) & (rows < end)] - start
            if part_rows is not None and not len(part_rows):
                continue
            if part_rows is None and type(part) is AdcIndex and part.fast_scan and short < part.n:
                prepared = part.prepare(Q)
                scans.append((part, start, prepared, *part.scan(prepared, short)))
                continue
            probe = {"nprobe": nprobe} if nprobe is not None and isinstance(part, IvfIndex) else {}
            for i, c in enumerate(part.candidates(Q, k, rows=part_rows, **probe)):
                found[i].append(Candidates(c.rows + start, c.approx, c.exact, c.complete))
        if scans:
            for i in range(len(Q)):
                approx = np.concatenate([a[i] for *_, a, _ in scans])
                cand = np.concatenate([c[i] for *_, c in scans])
                of = np.concatenate([np.full(len(c[i]), j) for j, (*_, c) in enumerate(scans)])
                keep = np.flatnonzero(cand >= 0)
                keep = keep[np.argsort(-approx[keep], kind="stable")[:short]]
                for j, (part, start, prepared, _, _) in enumerate(scans):
                    mine = keep[of[keep] == j]
                    if len(mine):
                        c = part.reranked(prepared[i : i + 1], cand[mine], approx[mine])
                        found[i].append(Candidates(c.rows + start, c.approx, c.exact, False))
        return [_union(f) for f in found]


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
