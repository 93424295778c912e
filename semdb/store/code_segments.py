"""Code segments: the packed codes of many items in one LMDB value (db `codes`, keyed by
segment number), so a query reads every code with one cursor pass over a few big values.

`CodeSegmentWrites` is one write batch's side of them: the batch's new codes become new
segments at commit, a changed or deleted item's code is removed from its segment (one read,
one rewrite per segment), and small segments are merged (a codec's with its own: each
segment's key names the codec that wrote it, format.segment_key). It reports every segment it writes
or deletes to its listener (the IVF list rows react: ivf_rows.py), naming where each written
segment's rows came from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from . import segments
from .format import (
    CorruptValue,
    code_segment_head,
    int_key,
    key_int,
    pack_code_segment,
    segment_key,
    segment_slot,
    unpack_code_segment,
)

CODE_SEGMENT_MAX = 1 << 20  # items per code segment when compacting
COMPACT_AFTER = 64  # more small code segments than this -> merge them at the next commit


@dataclass(frozen=True)
class SourceRows:
    """Rows `rows` (indices) of code segment `segment` as it was when read (n rows, body crc)."""

    segment: int
    n: int
    crc: int
    rows: np.ndarray


@dataclass(frozen=True)
class WrittenCodeSegment:
    """A code segment a batch wrote: `segment` now holds `ids` and `codes` (body crc `crc`).
    `sources`: where its rows came from, in order (a rewrite: the kept rows of the segment it
    replaces; a merge: the small segments'); empty for new codes."""

    segment: int
    ids: np.ndarray
    codes: np.ndarray
    crc: int
    sources: tuple[SourceRows, ...]


class CodeSegmentListener(Protocol):
    def code_segment_written(self, written: WrittenCodeSegment) -> None: ...

    def code_segment_deleted(self, segment: int) -> None: ...


class CodeSegmentWrites:
    """One write batch's code segment changes, applied by flush() at commit. `meta` is the
    batch's meta (next_segment, code_bytes), `put_meta` records a change of it, `code_loc` gives
    the process's id -> segment lookup."""

    def __init__(
        self,
        view,
        meta: dict,
        put_meta: Callable[[str, object], None],
        code_loc: Callable[[], segments.KeyMultimap],
        listener: CodeSegmentListener,
    ):
        self.view, self.meta, self.put_meta, self.listener = view, meta, put_meta, listener
        self._cached_code_loc = code_loc
        self.new: dict[int, dict[int, bytes]] = {}  # codec slot -> {id: code}: one new segment each at commit
        self.dirty: dict[int, list] = {}  # segment -> [ids, codes, keep mask, crc]
        self.loc: segments.KeyMultimap | None = None  # id -> segment: the process's + this batch's
        self.touched = False  # a code segment was written or deleted

    def code_loc(self) -> segments.KeyMultimap:
        if self.loc is None:
            self.loc = self._cached_code_loc().overlay()
        return self.loc

    def add(self, id_: int, code: bytes, slot: int = 0) -> None:
        self.new.setdefault(slot, {})[id_] = code

    def discard_new(self, id_: int) -> bool:
        """Forget a code this batch added; False if it added none for `id_`."""
        return any(codes.pop(id_, None) is not None for codes in self.new.values())

    def holds_new(self) -> bool:
        return any(self.new.values())

    def remove(self, ids) -> set[int]:
        """Take the stored codes of `ids` out of their segments (each rewritten at commit);
        returns the ids whose code a segment held (the others have none)."""
        loc = self.code_loc()
        by_segment: dict[int, list[int]] = {}
        for id_ in ids:
            segs = loc.get(id_)
            if segs:
                loc.remove(id_, segs[0])
                by_segment.setdefault(segs[0], []).append(id_)
        for seg, seg_ids in by_segment.items():
            entry = self.dirty.get(seg)
            if entry is None:  # first touch of this segment in the batch: one read, one rewrite at commit
                raw = self.view.get(int_key(seg), "codes")
                if raw is None:
                    raise CorruptValue(f"code_loc points item {seg_ids[0]} to missing segment {seg}")
                held, codes = unpack_code_segment(raw)
                entry = self.dirty[seg] = [held, codes, np.ones(len(held), bool), code_segment_head(raw)[2]]
            hit = np.isin(entry[0], np.array(seg_ids, np.uint64)) & entry[2]
            if int(hit.sum()) != len(seg_ids):
                raise CorruptValue(f"segment {seg} does not hold items {seg_ids[:5]}")
            entry[2][hit] = False
        return {id_ for seg_ids in by_segment.values() for id_ in seg_ids}

    def replace_all(self, ids: np.ndarray, codes: np.ndarray) -> None:
        """Every stored code replaced by these (a codec switch), the batch's own forgotten."""
        self.view.txn.drop(self.view.dbs["codes"], delete=False)
        self.touched = True
        if self.loc is not None:
            self.loc = segments.KeyMultimap()  # every code is rewritten below
        self.new.clear()
        self.dirty.clear()
        if len(ids):
            self._append(ids, codes)

    def flush(self, compact: bool) -> None:
        """Write the batch's changes: rewritten and new segments, then merge small ones (when
        asked, or when there are more than COMPACT_AFTER)."""
        for seg, (ids, codes, keep, crc) in self.dirty.items():
            if keep.all():
                continue
            if keep.any():
                self._put(seg, ids[keep], codes[keep], (SourceRows(seg, len(ids), crc, np.flatnonzero(keep)),))
            else:
                self._delete(seg)
        for slot, new in sorted(self.new.items()):
            if new:
                ids = np.fromiter(new, np.uint64, len(new))
                codes = np.frombuffer(b"".join(new.values()), np.uint8).reshape(len(ids), -1)
                self._append(ids, codes, slot=slot)
        if compact or self.view.txn.stat(self.view.dbs["codes"])["entries"] > COMPACT_AFTER:
            self._compact(force=compact)

    def _put(self, seg: int, ids: np.ndarray, codes: np.ndarray, sources: tuple[SourceRows, ...]) -> None:
        self.touched = True
        packed = pack_code_segment(ids, codes)
        self.view.txn.put(int_key(seg), packed, db=self.view.dbs["codes"])
        self.listener.code_segment_written(WrittenCodeSegment(seg, ids, codes, code_segment_head(packed)[2], sources))

    def _delete(self, seg: int) -> None:
        self.touched = True
        self.view.txn.delete(int_key(seg), db=self.view.dbs["codes"])
        self.listener.code_segment_deleted(seg)

    def _append(
        self, ids: np.ndarray, codes: np.ndarray, sources: list[SourceRows] | None = None, slot: int = 0
    ) -> None:
        """New segments of the codec in `slot`, of at most CODE_SEGMENT_MAX rows; `sources`:
        where the rows come from, in order."""
        starts = np.cumsum([0] + [len(s.rows) for s in sources]) if sources else None
        for start in range(0, len(ids), CODE_SEGMENT_MAX):
            number = self.meta["next_segment"]
            seg = segment_key(slot, number)
            end = min(start + CODE_SEGMENT_MAX, len(ids))
            self._put(seg, ids[start:end], codes[start:end], _slice_sources(sources, starts, start, end))
            if self.loc is not None:  # else the process's code_loc is dropped at commit
                for id_ in ids[start:end].tolist():
                    self.loc.add(id_, seg)
            self.put_meta("next_segment", number + 1)

    def _compact(self, force: bool) -> None:
        width = self.meta["code_bytes"]
        small: dict[int, list[int]] = {}  # codec slot -> its small segments
        for k, raw in self.view.txn.cursor(db=self.view.dbs["codes"]):
            n, seg_width, _ = code_segment_head(raw)  # header only: no copy of the body
            if n < CODE_SEGMENT_MAX // 2 and seg_width == width:
                small.setdefault(segment_slot(key_int(k)), []).append(key_int(k))
        if not force and sum(map(len, small.values())) <= COMPACT_AFTER:
            return
        for slot, segs in small.items():
            if len(segs) >= 2:
                self._merge(segs, slot)

    def _merge(self, small: list[int], slot: int) -> None:
        raws = [self.view.get(int_key(seg), "codes") for seg in small]  # copies, read before writes
        parts = [unpack_code_segment(raw) for raw in raws]
        sources = [
            SourceRows(seg, len(ids), code_segment_head(raw)[2], np.arange(len(ids)))
            for seg, raw, (ids, _) in zip(small, raws, parts)
        ]
        for seg, (ids, _) in zip(small, parts):
            self.view.txn.delete(int_key(seg), db=self.view.dbs["codes"])
            if self.loc is not None:
                for id_ in ids.tolist():
                    self.loc.remove(id_, seg)
        self._append(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), sources, slot)
        for seg in small:  # after the merged segments: their list rows are read first
            self.listener.code_segment_deleted(seg)


def _slice_sources(sources, starts, start: int, end: int) -> tuple[SourceRows, ...]:
    """The parts of `sources` (rows concatenated, source i from starts[i]) in rows [start, end)."""
    if not sources:
        return ()
    out = []
    for s, first in zip(sources, starts):
        lo, hi = max(start - first, 0), min(end - first, len(s.rows))
        if lo < hi:
            out.append(SourceRows(s.segment, s.n, s.crc, s.rows[lo:hi]))
    return tuple(out)
