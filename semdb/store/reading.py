"""Reading a store through one LMDB transaction: a read snapshot (ReadView) or a Writer's own
transaction (which sees its writes).

No path, content-hash or code-location index is stored (each would cost an LMDB entry, ~25+
bytes, per item): they are built in memory from the item and code segments when first
needed, cached per process by the meta generation, and carried forward by this process's own
commits (a Writer records its changes in an overlay and merges them when it commits). A query
needs none of them: load_codes, and get_item of its hits (one cursor step, one decompression,
only that row decoded).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass

import lmdb
import numpy as np

from . import segments
from .format import (
    CorruptValue,
    Item,
    code_segment_head,
    decode_item_segment,
    decode_item_segment_row,
    fs_bytes,
    hash_bytes,
    int_key,
    item_of,
    item_segment_head,
    item_segment_row_at,
    key_int,
    segment_slot,
    unpack_code_segment,
)
from .opening import Environment

ITEM_SEGMENT_CACHE = 16  # decoded item segments kept per process (get_item of a query's hits)


@dataclass
class ItemIndex:
    """The in-memory lookups that replace schema 1's paths and hashes databases, built from the
    item segments: path_key(path bytes) -> ids and hash_key(content hash) -> ids (candidates:
    a hit is checked against the stored item)."""

    paths: segments.KeyMultimap
    hashes: segments.KeyMultimap

    def overlay(self) -> ItemIndex:
        return ItemIndex(self.paths.overlay(), self.hashes.overlay())

    def merged(self) -> ItemIndex:
        return ItemIndex(self.paths.merged(), self.hashes.merged())


class View:
    """Reads through one transaction `txn` on the named databases `dbs` of `environment`."""

    txn: lmdb.Transaction
    dbs: dict
    environment: Environment

    def get(self, key: bytes, db: str) -> bytes | None:
        value = self.txn.get(key, db=self.dbs[db])
        return None if value is None else bytes(value)  # buffers die with the next write

    def meta_get(self, key: str):
        raw = self.get(key.encode(), "meta")
        try:
            return None if raw is None else json.loads(raw)
        except ValueError as e:
            raise CorruptValue(f"bad meta value {key}: {e}") from None

    def read_meta(self) -> dict:
        try:
            return {bytes(k).decode(): json.loads(bytes(v)) for k, v in self.txn.cursor(db=self.dbs["meta"])}
        except ValueError as e:
            raise CorruptValue(f"bad meta value: {e}") from None

    # -- item segments -----------------------------------------------------------------------

    def item_segment_key(self, id: int) -> bytes | None:
        """Key of the item segment whose id range holds `id`: the largest key <= id."""
        cur = self.txn.cursor(db=self.dbs["itemsegs"])
        key = int_key(id)
        if cur.set_range(key):
            if bytes(cur.key()) == key:
                return key
            return bytes(cur.key()) if cur.prev() else None
        return bytes(cur.key()) if cur.last() else None

    def _item_segment_raw(self, key: bytes):
        raw = self.txn.get(key, db=self.dbs["itemsegs"])
        if raw is None:
            raise CorruptValue(f"item segment {key_int(key)} vanished")
        head = item_segment_head(raw)
        # crc32 of the stored body + zlib's adler32 of the plain one (its last 4 bytes): a
        # rewritten segment (this process's or another's) never reuses a stale decoding
        return raw, (key, head.crc, bytes(raw[-4:]), head.n, len(raw))

    def item_segment(self, key: bytes) -> segments.Columns:
        """The item segment at `key`, decoded (a few are cached per process)."""
        raw, tag = self._item_segment_raw(key)
        cache = self.environment.item_segment_cache
        cols = cache.get(tag)
        if cols is None:
            cols = decode_item_segment(raw)
            if len(cache) >= ITEM_SEGMENT_CACHE:
                # A server's request threads and its folder watcher share the cache: another
                # thread may evict the same oldest entry (or change the dict) at the same time.
                with contextlib.suppress(KeyError, RuntimeError, StopIteration):
                    del cache[next(iter(cache))]
            cache[tag] = cols
        return cols

    def stored_item(self, id: int) -> Item | None:
        """The item as committed (a Writer's get_item adds its batch's changes)."""
        key = self.item_segment_key(id)
        if key is None:
            return None
        raw, tag = self._item_segment_raw(key)
        cols = self.environment.item_segment_cache.get(tag)
        if cols is None:  # one row of a segment not decoded yet: build only that row
            row = decode_item_segment_row(raw, id)
            return None if row is None else item_of(row)
        i = cols.row(id)
        return None if i is None else item_of(item_segment_row_at(cols, i))

    def get_item(self, id: int) -> Item | None:
        return self.stored_item(int(id))

    def items(self, ids: list[int]) -> list[Item | None]:
        """Many items at once: an item segment that holds several of them is decoded once (a
        filtered query reads every item: one decompression per id would cost minutes at 1M);
        one that holds a few gives just their rows (a query's candidates are spread thinly)."""
        out: list[Item | None] = [None] * len(ids)
        order = np.argsort(np.array(ids, np.uint64), kind="stable")
        sorted_ids = np.array(ids, np.uint64)[order]
        cur = self.txn.cursor(db=self.dbs["itemsegs"])
        i = 0
        while i < len(ids):
            key = self.item_segment_key(int(sorted_ids[i]))
            if key is None:  # below the first segment
                i += 1
                continue
            cur.set_key(key)
            end = key_int(cur.key()) if cur.next() else None  # the next segment's first id
            j = len(ids) if end is None else int(np.searchsorted(sorted_ids, np.uint64(end)))
            if j - i >= 8:
                cols = self.item_segment(key)
                for p in order[i:j]:
                    row = cols.row(ids[p])
                    out[p] = None if row is None else item_of(item_segment_row_at(cols, row))
            else:
                for p in order[i:j]:
                    out[p] = self.stored_item(ids[p])
            i = j
        return out

    def changed_item_segments(self, known: dict) -> tuple[dict, dict]:
        """({key: tag} of every item segment, {key: its Columns} of those whose tag is not
        `known[key]`): what a reader that keeps something per segment reads after a commit. A
        commit rewrites only the segments its batch touched (new items fill the last segment,
        then new ones), so the others cost a header each. The segment cache is left alone."""
        tags, fresh = {}, {}
        for key, raw in self.txn.cursor(db=self.dbs["itemsegs"]):
            key, head = bytes(key), item_segment_head(raw)
            # crc32 of the stored body + zlib's adler32 of the plain one, as the segment cache's
            tag = tags[key] = (head.crc, bytes(raw[-4:]), head.n, len(raw))
            if known.get(key) != tag:
                fresh[key] = decode_item_segment(raw)
        return tags, fresh

    def item_count(self) -> int:
        """Items in the committed item segments of this transaction (headers only)."""
        return sum(item_segment_head(raw).n for _, raw in self.txn.cursor(db=self.dbs["itemsegs"]))

    def holds_frames(self) -> bool:
        """Whether any item is a video frame: only segments holding one are of format 2 (headers only)."""
        cursor = self.txn.cursor(db=self.dbs["itemsegs"])
        return any(item_segment_head(raw).version == segments.VIDEO_FORMAT for _, raw in cursor)

    def coded_count(self) -> int:
        return sum(code_segment_head(raw)[0] for _, raw in self.txn.cursor(db=self.dbs["codes"]))

    # -- lookups -----------------------------------------------------------------------------

    def index(self) -> ItemIndex:
        """path and hash lookups: a read snapshot's are the process's; a Writer's add its batch."""
        raise NotImplementedError

    def item_by_path(self, path: str) -> Item | None:
        """The item of this file (of a video: its first stored frame)."""
        raw = fs_bytes(os.fspath(path))
        return next(self.find_path(raw, segments.path_key(raw)), None)

    def item_at(self, path: str, frame_ms: int | None = None) -> Item | None:
        """The item of this photo (frame_ms None), or of this video's frame at frame_ms."""
        raw = fs_bytes(os.fspath(path))
        return next(self.find_path(raw, segments.path_key(raw), frame_ms), None)

    def items_by_path(self, path: str) -> list[Item]:
        """Every item of this file: one for a photo, a video's frames in time order."""
        raw = fs_bytes(os.fspath(path))
        return sorted(self.find_path(raw, segments.path_key(raw)), key=lambda it: it.frame_ms or 0)

    def find_path(self, raw: bytes, key: int, frame_ms: int | None | bool = False):
        """The items at path `raw` (path_key `key`), lowest id first; with `frame_ms` (an int
        or None) only the one at that time in its video."""
        for id_ in sorted(self.index().paths.get(key)):
            item = self.get_item(id_)
            if item is not None and os.fsencode(item.path) == raw and (frame_ms is False or item.frame_ms == frame_ms):
                yield item

    def items_by_hash(self, h: str) -> list[Item]:
        hash_bytes(h)
        found = (self.get_item(i) for i in sorted(self.index().hashes.get(segments.hash_key(h))))
        return [it for it in found if it is not None and it.hash == h]

    def _build_item_index(self) -> ItemIndex:
        pk, hk, ids = [], [], []
        for _, raw in self.txn.cursor(db=self.dbs["itemsegs"]):
            cols = decode_item_segment(raw)
            pk.append(segments.path_keys(cols))
            hk.append(segments.hash_keys(cols))
            ids.append(cols.ids)
        if not ids:
            return ItemIndex(segments.KeyMultimap(), segments.KeyMultimap())
        ids = np.concatenate(ids)
        return ItemIndex(
            segments.KeyMultimap.build(np.concatenate(pk), ids), segments.KeyMultimap.build(np.concatenate(hk), ids)
        )

    def _build_code_loc(self) -> segments.KeyMultimap:
        ks, vs = [], []
        for k, raw in self.txn.cursor(db=self.dbs["codes"]):
            ids, _ = unpack_code_segment(raw)
            ks.append(ids.astype(np.uint64))
            vs.append(np.full(len(ids), key_int(k), np.uint64))
        if not ks:
            return segments.KeyMultimap()
        return segments.KeyMultimap.build(np.concatenate(ks), np.concatenate(vs))

    def cached_item_index(self) -> ItemIndex:
        generation = self.meta_get("generation")
        cached = self.environment.item_index
        if cached is None or cached[0] != generation:
            cached = self.environment.item_index = (generation, self._build_item_index())
        return cached[1]

    def cached_code_loc(self) -> segments.KeyMultimap:
        """id -> code segment number of every coded item (the process's, by generation)."""
        generation = self.meta_get("generation")
        cached = self.environment.code_loc
        if cached is None or cached[0] != generation:
            cached = self.environment.code_loc = (generation, self._build_code_loc())
        return cached[1]

    # -- codes -------------------------------------------------------------------------------

    def load_codes(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids uint64 (n,), codes uint8 (n, code_bytes)) of every coded item, read-only arrays
        cached per process by the meta generation; each codec's codes are one run of rows, in
        slot order (code_slices)."""
        return self._load_codes()[:2]

    def code_slices(self) -> dict[int, slice]:
        """{codec slot: its rows of load_codes()} for every slot that holds codes."""
        return self._load_codes()[2]

    def _load_codes(self):
        generation = self.meta_get("generation")
        cached = self.environment.codes_cache
        if cached is not None and cached[0] == generation:
            return cached[1:]
        width = self.meta_get("code_bytes") or 0
        keys, parts = [], []
        for k, raw in self.txn.cursor(db=self.dbs["codes"]):
            keys.append(key_int(k))
            parts.append(unpack_code_segment(raw))
        if any(codes.shape[1] != width for _, codes in parts):
            raise CorruptValue(f"a code segment's width differs from code_bytes {width}")
        # concatenate copies out of the LMDB map before the transaction ends
        ids = np.concatenate([p[0] for p in parts]).astype(np.uint64, copy=False) if parts else np.empty(0, np.uint64)
        codes = np.concatenate([p[1] for p in parts]) if parts else np.empty((0, width), np.uint8)
        ids.setflags(write=False)
        codes.setflags(write=False)
        slices, start = {}, 0
        for key, (seg_ids, _) in zip(keys, parts):  # keys ascend, so a slot's segments are adjacent
            slot = segment_slot(key)
            first = slices[slot].start if slot in slices else start
            start += len(seg_ids)
            slices[slot] = slice(first, start)
        self.environment.codes_cache = (generation, ids, codes, slices)
        return ids, codes, slices


class ReadView(View):
    def __init__(self, txn, environment: Environment):
        self.txn, self.dbs, self.environment = txn, environment.dbs, environment

    def index(self) -> ItemIndex:
        return self.cached_item_index()
