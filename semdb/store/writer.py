"""`Writer`: one write batch, ONE LMDB write transaction: committed when the `with` block
ends, aborted if it raises, so a batch lands entirely or not at all (also under kill -9).

Every item has exactly one of a code or a staging row (float16 embedding, db `staging`,
while no codec of the store's set takes it). The batch's item changes go to item segments at commit
(item_writes.py), its codes to code segments (code_segments.py), whose IVF list rows follow
(ivf_rows.py); a retrain's pending codec and recode rows: recoding.py.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from ..errors import InputError
from . import codec_set, recoding, segments
from .batch import WriteBatch
from .code_segments import CodeSegmentWrites
from .format import MANAGED_META, Item, codec_slots, fs_bytes, int_key, item_of, item_segment_row, ivf_meta_key
from .item_writes import merge_item_segments, write_items
from .ivf_rows import AssignLists, IvfRows
from .opening import Environment
from .reading import ItemIndex

MAX_ID = 1 << 63  # item ids fit an int64 (numpy sorts and compares them as such)


class Writer(WriteBatch):
    """A write batch of item, code, codec and IVF changes. `assign_ivf`: gives new codes their IVF
    lists in this transaction (none: their list rows are left out)."""

    def __init__(self, environment: Environment, path, assign_ivf: AssignLists | None = None, on_close=None):
        self._assign_ivf = assign_ivf
        self._compact_requested = False
        super().__init__(environment, path, on_close)

    def _reset(self) -> None:
        self._start_generation = self._meta["generation"]
        self._first_new = self._meta["next_id"]  # ids from here on are this batch's new items
        self._rows: dict[int, segments.Row | None] = {}  # changed items (None: deleted), written at commit
        self._ix: ItemIndex | None = None  # the process's lookups + this batch's changes
        self._ivf = IvfRows(self, self._meta, self._put_meta, self._assign_ivf)
        self._codes = CodeSegmentWrites(self, self._meta, self._put_meta, self.cached_code_loc, self._ivf)

    def _wants_commit(self) -> bool:
        return super()._wants_commit() or self._compact_requested

    def index(self) -> ItemIndex:
        if self._ix is None:
            self._ix = self.cached_item_index().overlay()
        return self._ix

    def get_item(self, id: int) -> Item | None:
        id = int(id)
        if id in self._rows:
            row = self._rows[id]
            return None if row is None else item_of(row)
        return self.stored_item(id)

    # -- commit -------------------------------------------------------------------------------------

    def _flush(self) -> None:
        self._codes.flush(compact=self._compact_requested)
        write_items(self, self._rows, self._first_new)
        if self._compact_requested:
            merge_item_segments(self)
        self._ivf.finish()
        self._put_meta("generation", self._meta["generation"] + 1)
        for key in self._meta_dirty:
            self.txn.put(key.encode(), json.dumps(self._meta[key]).encode(), db=self.dbs["meta"])

    def _publish(self) -> None:
        """After a commit: hand this batch's lookups to the process (so the next batch, and
        this process's readers, need not rebuild them), keyed by the new generation."""
        env = self.environment
        env.item_index = self._carried(env.item_index, self._ix, untouched=not self._rows)
        env.code_loc = self._carried(env.code_loc, self._codes.loc, untouched=not self._codes.touched)

    def _carried(self, cached, mine, untouched: bool):
        """One lookup at the new generation: this batch's own (merged), else the process's one
        when it was current at the batch's start and the batch did not change what it maps,
        else None (rebuilt at the next need)."""
        generation = self._meta["generation"]
        if mine is not None:
            return (generation, mine.merged())
        if cached is not None and cached[0] == self._start_generation and untouched:
            return (generation, cached[1])
        return None

    # -- items and codes ---------------------------------------------------------------------------

    def add_item(self, item: Item, code=None, embedding=None, keep_id: bool = False, codec: str | None = None) -> int:
        """Store a new item with exactly one of a code (of the codec `codec`, an id of the
        store's codec set; None: its first codec) or a (staging) embedding; returns its id.
        `keep_id`: the item keeps its id when that is larger than every id the store has used
        (what an import of an export does, so links to ids survive), else it gets a new one."""
        if item.id not in (0, None) and not keep_id:
            raise InputError(f"{item.path}: add_item takes an item without id (got {item.id})")
        if keep_id and not (isinstance(item.id, int) and 0 <= item.id < MAX_ID):
            raise InputError(f"{item.path}: item id {item.id!r} is not a whole number in [0, 2^63)")
        if (code is None) == (embedding is None):
            raise InputError(f"{item.path}: add_item needs exactly one of code= or embedding=")
        vec = self._code_bytes(code) if code is not None else self._embedding_bytes(embedding)
        slot = self._slot(codec) if code is not None else None
        return self._run(self._add, dataclasses.replace(item, id=item.id if keep_id else 0), slot, vec)

    def update_item(self, item: Item) -> None:
        """Replace an item's metadata (e.g. a moved file's new path), keeping its code."""
        self._run(self._update, dataclasses.replace(item))

    def set_code(self, id: int, code, codec: str | None = None) -> None:
        """Give an item a new code of the codec `codec` (None: the store's first), replacing its
        old code or staging row."""
        self._run(self._set_vectors, (int(id),), self._slot(codec), self._code_bytes(code))

    def set_codes(self, ids, codes, codec: str | None = None) -> None:
        """set_code for many items: codes uint8 (n, code_bytes)."""
        codes = np.asarray(codes)
        if codes.ndim != 2 or len(codes) != len(ids):
            raise InputError(f"set_codes: codes shape {codes.shape} does not match {len(ids)} ids")
        rows = tuple(self._code_bytes(c) for c in codes)
        self._run(self._set_vectors, tuple(int(i) for i in ids), self._slot(codec), rows, True)

    def set_embedding(self, id: int, embedding) -> None:
        """Stage a new embedding for an item (replacing its code or staging row)."""
        self._run(self._set_vectors, (int(id),), None, self._embedding_bytes(embedding))

    def delete_item(self, id: int) -> None:
        """Remove an item: its metadata, lookups, code or staging row."""
        self.delete_items((id,))

    def delete_items(self, ids) -> None:
        """Remove items (delete_item of each, with one read and one rewrite per segment they
        share); InputError, before anything changes, if one is not stored."""
        self._run(self._delete, tuple(dict.fromkeys(int(i) for i in ids)))

    def set_document(self, id: int, record: bytes) -> None:
        """Keep a document record (documents.pack) beside item `id`, replacing its earlier one;
        it goes when the item does."""
        self._run(self._set_document, int(id), bytes(record))

    def set_meta(self, key: str, value) -> None:
        if key in MANAGED_META:
            raise InputError(f"meta key {key!r} is managed by the store")
        try:
            text = json.dumps(value)
        except (TypeError, ValueError) as e:
            raise InputError(f"meta {key!r}: value is not JSON ({e})") from None
        self._run(self._put_meta, key, json.loads(text))

    def set_codec(self, codec_bytes: bytes, codec_id: str, code_bytes: int) -> None:
        """Embed the codec; codes written afterwards must be code_bytes long."""
        if self._codes.holds_new() and code_bytes != self._meta["code_bytes"]:
            raise InputError("set_codec: this batch already holds codes of another width")
        if len([s for s in codec_slots(self._meta) if s]) > 1:
            raise InputError(f"{self.path} holds a set of codecs: add_codec, or retrain into one")
        self._run(self._set_codec, bytes(codec_bytes), str(codec_id), int(code_bytes))

    def add_codec(self, codec_bytes: bytes, codec_id: str, code_bytes: int) -> None:
        """Add a codec to the store's set (the first one: as set_codec): items may then be given
        codes of it (add_item / set_code(s) with codec=codec_id). Every codec of a store writes
        codes of the same width. Each codec of a set may have an IVF of its own (set_ivf)."""
        if not codec_slots(self._meta):
            return self.set_codec(codec_bytes, codec_id, code_bytes)
        slot = codec_set.free_slot(self._meta, str(codec_id), code_bytes, self.path)
        self._run(self._add_codec, bytes(codec_bytes), str(codec_id), slot)

    def drop_codec(self, codec_id: str) -> None:
        """Remove a codec that no item uses any more from the set (not the store's first)."""
        slot = self._slot(codec_id)
        if slot == 0:
            raise InputError(f"codec {codec_id} is the store's first codec; it stays")
        self._run(self._drop_codec, slot)

    def set_training_queries(self, queries) -> None:
        """Record text query embeddings (n, dim) that codec training (and retraining) will use."""
        Q = np.asarray(queries, np.float32)
        if Q.ndim != 2 or not len(Q) or not np.isfinite(Q).all():
            raise InputError(f"training queries: expected a finite (n, dim) array, got {Q.shape}")
        self._run(self._set_queries, Q.astype(np.float16).tobytes(), list(Q.shape))

    def compact(self) -> None:
        """Merge small segments when this batch commits."""
        self._compact_requested = True

    # -- a retrain's pending codec (recoding.py) ----------------------------------------------------

    def set_pending_codec(self, codec_bytes: bytes, codec_id: str, code_bytes: int) -> None:
        """Begin moving the store to another codec (a retrain): queries keep the current codec
        and codes until switch_codec(); any earlier pending codec and its recodes are dropped."""
        if not self._meta["codec_id"]:
            raise InputError(f"{self.path} has no codec yet: set_codec instead")
        self._run(recoding.set_pending, self, self._put_meta, bytes(codec_bytes), str(codec_id), int(code_bytes))

    def set_recodes(self, ids, codes) -> None:
        """Codes of items under the pending codec: uint8 (n, pending code_bytes)."""
        pending = self._meta.get("pending_codec")
        if not pending:
            raise InputError(f"{self.path} has no pending codec: set_pending_codec first")
        codes = np.asarray(codes)
        if codes.dtype != np.uint8 or codes.shape != (len(ids), pending["code_bytes"]):
            raise InputError(
                f"set_recodes: codes {codes.dtype} {codes.shape}, expected uint8 ({len(ids)}, {pending['code_bytes']})"
            )
        self._run(self._set_recodes, tuple(int(i) for i in ids), tuple(c.tobytes() for c in codes))

    def switch_codec(self) -> None:
        """Install the pending codec with every item's recode as its code, in this batch."""
        if not self._meta.get("pending_codec"):
            raise InputError(f"{self.path} has no pending codec to switch to")
        self._run(self._switch)

    # -- the IVF (ivf_rows.py) -----------------------------------------------------------------------

    def set_ivf(self, centroids, info: dict, ids, lists, codec: str | None = None) -> None:
        """Install (replace) the IVF of codec `codec` (None: the store's first): coarse centroids
        (nlist, dim) float32, its meta record `info` ({nlist, dim, codec_id, built_on, id}) and
        the list of every item it coded (ids, lists), written to its segments at commit."""
        slot = self._slot(codec)
        C = np.ascontiguousarray(centroids, np.float32)
        ids, lists = np.asarray(ids, np.uint64), np.asarray(lists, np.uint32)
        if C.ndim != 2 or C.shape != (info.get("nlist"), info.get("dim")) or len(ids) != len(lists):
            raise InputError(f"set_ivf: centroids {C.shape}, info {info}, {len(ids)} ids, {len(lists)} lists")
        if len(lists) and int(lists.max()) >= len(C):
            raise InputError(f"set_ivf: list {int(lists.max())} >= nlist {len(C)}")
        info = json.loads(json.dumps(info))
        self._run(self._ivf.set, slot, C.tobytes(), info, ids.tobytes(), lists.tobytes(), True)

    def fill_ivf(self, ids, lists, codec: str | None = None) -> None:
        """List numbers, in the IVF of codec `codec` (None: the first), of items it coded whose
        segment has no valid list row (written at commit)."""
        slot = self._slot(codec)
        if not self._meta.get(ivf_meta_key(slot)):
            raise InputError(f"{self.path} has no IVF of codec {codec or self._meta['codec_id']} to fill")
        ids, lists = np.asarray(ids, np.uint64).tobytes(), np.asarray(lists, np.uint32).tobytes()
        self._run(self._ivf.set, slot, None, None, ids, lists, False)

    # -- validation (before anything changes) -------------------------------------------------------

    def _code_bytes(self, code) -> bytes:
        width = self._meta["code_bytes"]
        if not width:
            raise InputError(f"{self.path} has no codec yet: set_codec first or stage embeddings instead")
        if isinstance(code, np.ndarray) and code.dtype != np.uint8:
            raise InputError(f"code must be uint8, not {code.dtype}")
        raw = code.tobytes() if isinstance(code, np.ndarray) else bytes(code)
        if len(raw) != width:
            raise InputError(f"code is {len(raw)} bytes; this store's codec uses {width}")
        return raw

    def _embedding_bytes(self, embedding) -> bytes:
        x = np.asarray(embedding, dtype=np.float32)
        dim = self._meta["dim"]
        if x.ndim != 1 or x.size == 0 or (dim and x.shape[0] != dim):
            raise InputError(f"embedding shape {x.shape} does not fit this store (dim {self._meta['dim']})")
        x16 = x.astype(np.float16)
        if not np.isfinite(x16).all():
            raise InputError("embedding has NaN or infinite values")
        return x16.tobytes()

    def _slot(self, codec: str | None) -> int:
        return codec_set.slot_of(self._meta, codec, self.path)

    def _require(self, id: int) -> Item:
        item = self.get_item(id)
        if item is None:
            raise InputError(f"{self.path} has no item {id}")
        return item

    # -- operations (validate, then mutate) ------------------------------------------------------------

    def _add(self, item: Item, slot: int | None, vec: bytes) -> int:
        id_ = max(self._meta["next_id"], item.id)  # ids only grow: a new item's id is above every stored one
        row = item_segment_row(item, id_)
        pkey = segments.path_key(row.path)
        other = next(self.find_path(row.path, pkey, item.frame_ms), None)
        if other is not None:
            raise InputError(f"{item.path} is already in the store (item {other.id}); use update_item")
        ix = self.index()
        self._rows[id_] = row
        ix.paths.add(pkey, id_)
        ix.hashes.add(segments.hash_key(item.hash), id_)
        self._put_meta("next_id", id_ + 1)
        self._attach_vector(id_, slot, vec)
        return id_

    def _update(self, item: Item) -> None:
        old = self._require(item.id)
        row = item_segment_row(item)
        raw, old_raw = row.path, fs_bytes(old.path)
        ix = self.index()
        if raw != old_raw:
            other = next(self.find_path(raw, segments.path_key(raw), item.frame_ms), None)
            if other is not None:
                raise InputError(f"{item.path} is already in the store (item {other.id})")
            ix.paths.remove(segments.path_key(old_raw), item.id)
            ix.paths.add(segments.path_key(raw), item.id)
        if item.hash != old.hash:
            ix.hashes.remove(segments.hash_key(old.hash), item.id)
            ix.hashes.add(segments.hash_key(item.hash), item.id)
        self._rows[item.id] = row

    def _set_vectors(self, ids: tuple, slot: int | None, vecs, many: bool = False) -> None:
        for id_ in ids:
            self._require(id_)
        self._detach_vectors(ids)
        for i, id_ in enumerate(ids):
            self._attach_vector(id_, slot, vecs[i] if many else vecs)

    def _delete(self, ids: tuple) -> None:
        stored = [i for i in ids if i not in self._rows]  # the rest this batch changed or added
        found = dict(zip(stored, self.items(stored)))
        items = [found[i] if i in found else self.get_item(i) for i in ids]
        for id_, item in zip(ids, items):
            if item is None:
                raise InputError(f"{self.path} has no item {id_}")
        ix = self.index()
        for item in items:
            ix.paths.remove(segments.path_key(fs_bytes(item.path)), item.id)
            ix.hashes.remove(segments.hash_key(item.hash), item.id)
            self._rows[item.id] = None
            self.txn.delete(int_key(item.id), db=self.dbs["docs"])  # its document, if it has one
        self._detach_vectors(ids)

    def _set_document(self, id_: int, record: bytes) -> None:
        self._require(id_)
        self.txn.put(int_key(id_), record, db=self.dbs["docs"])

    def _set_codec(self, codec: bytes, codec_id: str, code_bytes: int) -> None:
        self.txn.put(b"codec", codec, db=self.dbs["codec"])
        self._put_meta("codec_id", codec_id)
        self._put_meta("code_bytes", code_bytes)

    def _add_codec(self, codec: bytes, codec_id: str, slot: int) -> None:
        self._ivf.drop(slot)  # none of a codec that held this slot before
        codec_set.add(self, self._meta, self._put_meta, codec, codec_id, slot)

    def _drop_codec(self, slot: int) -> None:
        self._ivf.drop(slot)
        codec_set.drop(self, self._meta, self._put_meta, slot)

    def _set_queries(self, raw: bytes, shape: list) -> None:
        self.txn.put(b"queries", raw, db=self.dbs["codec"])
        self._put_meta("training_queries", shape)

    def _set_recodes(self, ids: tuple, codes: tuple) -> None:
        for id_ in ids:
            self._require(id_)
        recoding.put_recodes(self, ids, codes)

    def _switch(self) -> None:
        n_items = self.item_count() + sum(
            (r is not None) if id_ >= self._first_new else -(r is None) for id_, r in self._rows.items()
        )
        ids, codes = recoding.take_for_switch(self, self._meta, self._put_meta, n_items, self.path)
        self._ivf.drop()  # every IVF's lists belong to the old codes (retrain builds a new IVF)
        codec_set.drop_all_but_first(self, self._meta, self._put_meta)
        self._codes.replace_all(ids, codes)

    def _attach_vector(self, id_: int, slot: int | None, vec: bytes) -> None:
        """A code of the codec in `slot`, or (slot None) a staging row."""
        if slot is not None:
            self._codes.add(id_, vec, slot)
        else:
            if not self._meta["dim"]:
                self._put_meta("dim", len(vec) // 2)
            self.txn.put(int_key(id_), vec, db=self.dbs["staging"])

    def _detach_vectors(self, ids) -> None:
        for id_ in ids:
            recoding.drop_recode(self, id_)  # its new content needs a new recode
        kept = [id_ for id_ in ids if not self._codes.discard_new(id_)]
        # added in this batch (its code would be in _codes.new), or in no code segment: staged
        coded = self._codes.remove([id_ for id_ in kept if id_ < self._first_new])
        for id_ in kept:
            if id_ not in coded:
                self.txn.delete(int_key(id_), db=self.dbs["staging"])
