"""The IVF rows of a store: one IVF per codec that has one. Db `ivf` holds each IVF's coarse
centroids (float32 (nlist, dim): b"centroids" for the first codec's, b"centroids/s" for the codec
in slot s; described by meta `ivf` / `ivf/s` = {nlist, dim, codec_id, built_on, id}) and, per
code segment, the IVF list of each of its codes (a list row, keyed as its segment, so by its
codec's slot too; checked against the segment by its length and body crc).

The store never runs the codec. A write batch is given the IVF assignment as a function
(`AssignLists`, e.g. `StoreContext.assign_ivf_lists`); `IvfRows` reacts to the code segments
the batch writes: a rewritten segment keeps the lists of its remaining rows, merged segments
(always of one codec) concatenate theirs, new codes get theirs from their own codec's IVF through
the function, in the same transaction. Without a function, or when it declines (a codec it has
not loaded), a segment gets no row: its codes are assigned in memory when the index is built,
and filled by the next ingest (semdb.ingest.ivf_upkeep.maintain).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .code_segments import WrittenCodeSegment
from .format import (
    CorruptValue,
    centroids_key,
    code_segment_head,
    codec_slots,
    int_key,
    ivf_meta_key,
    ivf_slots,
    key_int,
    pack_list_row,
    segment_key,
    segment_slot,
    unpack_code_segment,
    unpack_list_row,
)


@dataclass(frozen=True)
class StoredIvf:
    """One codec's IVF as a write batch sees it: the codec its codes are of, its meta record
    `info`, and its centroids (read when called)."""

    codec_id: str
    info: dict
    centroids: Callable[[], np.ndarray]


# codes (uint8 (n, code_bytes)) -> their IVF lists (uint32 (n,)), or None to leave them unassigned
AssignLists = Callable[[np.ndarray, StoredIvf], "np.ndarray | None"]


class IvfRows:
    """One write batch's IVF rows (a CodeSegmentListener). `view` is the batch's transaction,
    `meta` its meta and `put_meta` records a change of it."""

    def __init__(self, view, meta: dict, put_meta, assign: AssignLists | None):
        self.view, self.meta, self.put_meta, self.assign = view, meta, put_meta, assign
        self.fill: dict[int, tuple] = {}  # codec slot -> (ids, lists, every segment?): list rows to write at commit

    def code_segment_written(self, written: WrittenCodeSegment) -> None:
        slot = segment_slot(written.segment)
        lists = self._lists_of(written, slot) if self.meta.get(ivf_meta_key(slot)) else None
        if lists is not None:
            self.view.txn.put(int_key(written.segment), pack_list_row(lists, written.crc), db=self.view.dbs["ivf"])
        else:
            self.view.txn.delete(int_key(written.segment), db=self.view.dbs["ivf"])

    def code_segment_deleted(self, segment: int) -> None:
        self.view.txn.delete(int_key(segment), db=self.view.dbs["ivf"])

    def _lists_of(self, written: WrittenCodeSegment, slot: int) -> np.ndarray | None:
        if not written.sources:
            return self._assigned(written.codes, slot)
        parts = []
        for src in written.sources:
            lists = unpack_list_row(self.view.txn.get(int_key(src.segment), db=self.view.dbs["ivf"]), src.n, src.crc)
            if lists is None:
                return None
            parts.append(lists[src.rows])
        return np.concatenate(parts)

    def _assigned(self, codes: np.ndarray, slot: int) -> np.ndarray | None:
        info = self.meta.get(ivf_meta_key(slot))
        if not info or self.assign is None:
            return None

        def centroids():
            raw = self.view.get(centroids_key(slot), "ivf")
            return np.frombuffer(raw, np.float32).reshape(info["nlist"], info["dim"])

        lists = self.assign(codes, StoredIvf(codec_slots(self.meta)[slot], info, centroids))
        return None if lists is None else np.asarray(lists, np.uint32)

    def set(self, slot: int, centroids: bytes | None, info: dict | None, ids: bytes, lists: bytes, every: bool) -> None:
        """Install the IVF of the codec in `slot`: its centroids (if given) and the lists of its
        coded items, written at commit (to every segment of that codec if `every`, else only
        to those without a valid row)."""
        if centroids is not None:
            self.view.txn.put(centroids_key(slot), centroids, db=self.view.dbs["ivf"])
            self.put_meta(ivf_meta_key(slot), info)
        self.fill[slot] = (np.frombuffer(ids, np.uint64), np.frombuffer(lists, np.uint32), every)

    def drop(self, slot: int | None = None) -> None:
        """Drop the IVF of the codec in `slot`, or (None) every IVF."""
        txn, db = self.view.txn, self.view.dbs["ivf"]
        if slot is None:
            txn.drop(db, delete=False)
            for key in {ivf_meta_key(s) for s in ivf_slots(self.meta)} | {"ivf"}:
                self.put_meta(key, None)
            self.fill = {}
            return
        rows = [bytes(k) for k in txn.cursor(db=db).iternext(values=False) if _list_row_of(k, slot)]
        for k in [centroids_key(slot), *rows]:
            txn.delete(k, db=db)
        if self.meta.get(ivf_meta_key(slot)):
            self.put_meta(ivf_meta_key(slot), None)
        self.fill.pop(slot, None)

    def finish(self) -> None:
        """At commit, after the code segments are written: the rows set() asked for, and none
        for segments that no longer exist."""
        if not self.fill:
            return
        txn, dbs = self.view.txn, self.view.dbs
        fills = {}
        for slot, (ids_in, lists_in, every) in self.fill.items():
            order = np.argsort(ids_in, kind="stable")
            fills[slot] = (ids_in[order], lists_in[order], every)
        rows = []
        for k, raw in txn.cursor(db=dbs["codes"]):
            if segment_slot(key_int(k)) not in fills:
                continue
            sorted_ids, sorted_lists, every = fills[segment_slot(key_int(k))]
            n, _, crc = code_segment_head(raw)
            if not every and unpack_list_row(txn.get(bytes(k), db=dbs["ivf"]), n, crc) is not None:
                continue
            ids, _ = unpack_code_segment(raw)
            pos = np.minimum(np.searchsorted(sorted_ids, ids), max(len(sorted_ids) - 1, 0))
            if len(sorted_ids) and (sorted_ids[pos] == ids).all():
                rows.append((bytes(k), pack_list_row(sorted_lists[pos], crc)))
            elif every:
                rows.append((bytes(k), None))
        for k in txn.cursor(db=dbs["ivf"]).iternext(values=False):
            if len(k) == 8 and txn.get(bytes(k), db=dbs["codes"]) is None:
                rows.append((bytes(k), None))  # e.g. left by a writer that knew no IVF
        for k, row in rows:  # written after the cursor walks
            if row is None:
                txn.delete(k, db=dbs["ivf"])
            else:
                txn.put(k, row, db=dbs["ivf"])


def _list_row_of(key, slot: int) -> bool:
    """Whether db `ivf` key `key` is the list row of a code segment of the codec in `slot`."""
    return len(key) == 8 and segment_slot(key_int(key)) == slot


def load_lists(view, slot: int = 0):
    """(generation, ivf meta, centroids float32 (nlist, dim), lists int64 aligned with the codes
    of the codec in `slot` in load_codes() of that generation (code_slices), -1 where a segment
    has no valid list row), or None when that codec has no IVF."""
    meta = view.read_meta()
    info = meta.get(ivf_meta_key(slot))
    if not info or view.dbs["ivf"] is None:
        return None
    raw = view.get(centroids_key(slot), "ivf")
    if raw is None:
        raise CorruptValue("the IVF's meta record has no centroids")
    C = np.frombuffer(raw, np.float32).reshape(info["nlist"], info["dim"])
    parts = []
    cur = view.txn.cursor(db=view.dbs["codes"])
    if cur.set_range(int_key(segment_key(slot, 0))):
        for k, seg in cur:
            if segment_slot(key_int(k)) != slot:
                break
            n, _, crc = code_segment_head(seg)
            lists = unpack_list_row(view.txn.get(bytes(k), db=view.dbs["ivf"]), n, crc)
            parts.append(np.full(n, -1, np.int64) if lists is None else lists.astype(np.int64))
    lists = np.concatenate(parts) if parts else np.empty(0, np.int64)
    return meta.get("generation"), info, C, lists


def verify_rows(view, meta: dict) -> list[str]:
    """IVF rows: each IVF's centroids match its meta record and its codec is in the set; every
    list row belongs to an existing segment whose codec has an IVF, has its length and checksum,
    and names lists below that IVF's nlist. (A segment without a row is fine: its codes are
    assigned when the index is built.)"""
    txn, dbs = view.txn, view.dbs
    infos, problems = ivf_slots(meta), []
    rows = {bytes(k): bytes(raw) for k, raw in txn.cursor(db=dbs["ivf"])}
    centroids = {k: rows.pop(k) for k in list(rows) if k.startswith(b"centroids")}
    if not infos:
        return ["IVF rows exist but meta has no ivf record"] if rows or centroids else []
    slots = codec_slots(meta)
    for slot, info in infos.items():
        of = "" if slot == 0 else f" of codec slot {slot}"
        raw = centroids.pop(centroids_key(slot), None)
        if raw is None or len(raw) != 4 * info["nlist"] * info["dim"]:
            problems.append(f"IVF centroids{of} missing or not ({info['nlist']}, {info['dim']}) float32")
        if slot and (slot >= len(slots) or slots[slot] is None):
            problems.append(f"an IVF{of}, which the store's codec set does not hold")
    problems += [f"IVF centroids {k.decode(errors='replace')} of no IVF" for k in centroids]
    for k, raw in rows.items():
        seg = txn.get(k, db=dbs["codes"])
        if seg is None:
            problems.append(f"IVF list row for missing segment {key_int(k)}")
            continue
        info = infos.get(segment_slot(key_int(k)))
        if info is None:
            problems.append(f"IVF list row of segment {key_int(k)}, whose codec has no IVF")
            continue
        n, _, crc = code_segment_head(seg)
        lists = unpack_list_row(raw, n, crc)
        if lists is None:
            problems.append(f"IVF list row of segment {key_int(k)} does not match the segment")
        elif len(lists) and int(lists.max()) >= info["nlist"]:
            problems.append(f"IVF list row of segment {key_int(k)} names list {int(lists.max())}")
    return problems
