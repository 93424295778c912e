"""The IVF's rows in a store: db `ivf` holds b"centroids" (float32 (nlist, dim), described by
meta `ivf` = {nlist, dim, codec_id, built_on, id}) and, per code segment, the IVF list of each
of its codes (a list row, checked against the segment by its length and body crc).

The store never runs the codec. A write batch is given the IVF assignment as a function
(`AssignLists`, e.g. `StoreContext.assign_ivf_lists`); `IvfRows` reacts to the code segments
the batch writes: a rewritten segment keeps the lists of its remaining rows, merged segments
concatenate theirs, new codes get theirs from the function, in the same transaction. Without a
function, or when it declines (another codec), a segment gets no row: its codes are assigned in
memory when the index is built, and filled by the next ingest (semdb.ingest.ivf_upkeep.maintain).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .code_segments import WrittenCodeSegment
from .format import (
    CorruptValue,
    code_segment_head,
    int_key,
    key_int,
    pack_list_row,
    unpack_code_segment,
    unpack_list_row,
)


@dataclass(frozen=True)
class StoredIvf:
    """The store's IVF as a write batch sees it: the codec its codes are of, its meta record
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
        self.fill = None  # (ids, lists, every segment?): list rows to write at commit

    def code_segment_written(self, written: WrittenCodeSegment) -> None:
        lists = self._lists_of(written) if self.meta.get("ivf") else None
        if lists is not None:
            self.view.txn.put(int_key(written.segment), pack_list_row(lists, written.crc), db=self.view.dbs["ivf"])
        else:
            self.view.txn.delete(int_key(written.segment), db=self.view.dbs["ivf"])

    def code_segment_deleted(self, segment: int) -> None:
        self.view.txn.delete(int_key(segment), db=self.view.dbs["ivf"])

    def _lists_of(self, written: WrittenCodeSegment) -> np.ndarray | None:
        if not written.sources:
            return self._assigned(written.codes)
        parts = []
        for src in written.sources:
            lists = unpack_list_row(self.view.txn.get(int_key(src.segment), db=self.view.dbs["ivf"]), src.n, src.crc)
            if lists is None:
                return None
            parts.append(lists[src.rows])
        return np.concatenate(parts)

    def _assigned(self, codes: np.ndarray) -> np.ndarray | None:
        info = self.meta.get("ivf")
        if not info or self.assign is None:
            return None

        def centroids():
            raw = self.view.get(b"centroids", "ivf")
            return np.frombuffer(raw, np.float32).reshape(info["nlist"], info["dim"])

        lists = self.assign(codes, StoredIvf(self.meta["codec_id"], info, centroids))
        return None if lists is None else np.asarray(lists, np.uint32)

    def set(self, centroids: bytes | None, info: dict | None, ids: bytes, lists: bytes, every: bool) -> None:
        """Install centroids (if given) and the lists of coded items, written at commit (to every
        segment if `every`, else only to those without a valid row)."""
        if centroids is not None:
            self.view.txn.put(b"centroids", centroids, db=self.view.dbs["ivf"])
            self.put_meta("ivf", info)
        self.fill = (np.frombuffer(ids, np.uint64), np.frombuffer(lists, np.uint32), every)

    def drop(self) -> None:
        self.view.txn.drop(self.view.dbs["ivf"], delete=False)
        self.put_meta("ivf", None)
        self.fill = None

    def finish(self) -> None:
        """At commit, after the code segments are written: the rows set() asked for, and none
        for segments that no longer exist."""
        if self.fill is None:
            return
        txn, dbs = self.view.txn, self.view.dbs
        ids_in, lists_in, every = self.fill
        order = np.argsort(ids_in, kind="stable")
        sorted_ids, sorted_lists = ids_in[order], lists_in[order]
        rows = []
        for k, raw in txn.cursor(db=dbs["codes"]):
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


def load_lists(view):
    """(generation, ivf meta, centroids float32 (nlist, dim), lists int64 aligned with
    load_codes() of that generation, -1 where a segment has no valid list row), or None
    when the store has no IVF."""
    meta = view.read_meta()
    info = meta.get("ivf")
    if not info or view.dbs["ivf"] is None:
        return None
    raw = view.get(b"centroids", "ivf")
    if raw is None:
        raise CorruptValue("the IVF's meta record has no centroids")
    C = np.frombuffer(raw, np.float32).reshape(info["nlist"], info["dim"])
    parts = []
    for k, seg in view.txn.cursor(db=view.dbs["codes"]):
        n, _, crc = code_segment_head(seg)
        lists = unpack_list_row(view.txn.get(bytes(k), db=view.dbs["ivf"]), n, crc)
        parts.append(np.full(n, -1, np.int64) if lists is None else lists.astype(np.int64))
    lists = np.concatenate(parts) if parts else np.empty(0, np.int64)
    return meta.get("generation"), info, C, lists


def verify_rows(view, meta: dict) -> list[str]:
    """IVF rows: centroids match the meta record; every list row belongs to an existing segment,
    has its length and checksum, and names lists below nlist. (A segment without a row is fine:
    its codes are assigned when the index is built.)"""
    txn, dbs = view.txn, view.dbs
    info, problems = meta.get("ivf"), []
    rows = {bytes(k): bytes(raw) for k, raw in txn.cursor(db=dbs["ivf"])}
    centroids = rows.pop(b"centroids", None)
    if not info:
        return ["IVF rows exist but meta has no ivf record"] if rows or centroids else []
    if centroids is None or len(centroids) != 4 * info["nlist"] * info["dim"]:
        problems.append(f"IVF centroids missing or not ({info['nlist']}, {info['dim']}) float32")
    for k, raw in rows.items():
        seg = txn.get(k, db=dbs["codes"])
        if seg is None:
            problems.append(f"IVF list row for missing segment {key_int(k)}")
            continue
        n, _, crc = code_segment_head(seg)
        lists = unpack_list_row(raw, n, crc)
        if lists is None:
            problems.append(f"IVF list row of segment {key_int(k)} does not match the segment")
        elif len(lists) and int(lists.max()) >= info["nlist"]:
            problems.append(f"IVF list row of segment {key_int(k)} names list {int(lists.max())}")
    return problems
