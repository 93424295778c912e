"""The LMDB store: per-item metadata and fixed-length packed codes, nothing else.

A store is one directory holding an LMDB environment (data.mdb, lock.mdb) and writer.lock.

Schema 2 (the compact store). Named databases (ids are 8-byte big-endian keys, so cursors
walk them in id order):
  meta      utf-8 key -> JSON value: schema, created, generation, next_id, next_segment,
            code_bytes, codec_id, dim (staging width), model_id, plus any caller keys
  codec     b"codec" -> the codec bytes (Codec.to_bytes()); b"pending" -> a retrain's new codec;
            b"queries" -> float16 text query embeddings the codec trains with (meta
            training_queries = their shape), e.g. from `semdb ingest --captions`
  itemsegs  first id -> item segment (semdb/segments.py): the metadata of up to ITEMSEG_MAX
            items with ascending, disjoint id ranges, columnar and zlib-compressed, with a
            crc32. get_item(id) = one cursor step to the largest key <= id + one decompression,
            only that row decoded (segments decoded whole, for iter_items and writers, are
            cached per process, a few). A batch's new items (new ids are always
            larger) fill the last segment, then new ones; a changed or deleted item rewrites its
            segment in the batch's transaction; Writer.compact merges adjacent small segments.
  codes     segment number -> segment = header <QII (n, code_bytes, crc32 of the body),
            n little-endian uint64 ids, n*code_bytes codes.  A query reads every code with
            one cursor pass over a handful of big values instead of one read per item.
  staging   id -> float16 embedding (items waiting for a codec; empty after an ingest ends)
  recode    id -> code under the PENDING codec of an unfinished retrain (codec db key b"pending",
            meta pending_codec = {id, code_bytes}); queries never read it. The switch moves
            every row into codes and installs the pending codec in one transaction. (Created
            on the first writable open, so stores written before it need no migration.)
  ivf       b"centroids" -> float32 (nlist, dim) coarse centroids of the IVF (meta ivf = {nlist,
            dim, codec_id, built_on, id}); segment number -> list row = header <QI (n, crc32 of
            that segment's body), n little-endian uint32 list numbers aligned with the
            segment's ids. Written with the segment it describes: a rewritten segment keeps the
            lists of its remaining rows, merged segments concatenate theirs, new codes get
            theirs from `Store.ivf_assigner` (semdb/ivf.py; none registered: no row). A missing
            or stale row (n or crc differs, e.g. written by an older semdb) only means those
            codes are assigned when the index is built. (Created on the first writable open.)

No path, content-hash or code-location index is stored (each would cost an LMDB entry, ~25+
bytes, per item): they are built in memory when first needed (path -> id and content hash ->
ids as sorted 64-bit keys, id -> code segment from the segments' id columns), cached per
process by the meta generation and carried forward by this process's own commits (a Writer
records its changes in an overlay and merges them when it commits), so a long ingest of small
batches builds them once. A query needs none of them (load_codes + get_item of the hits).
About 50 bytes per item plus its code on disk, its path included (docs/SCALE.md, "A compact
store").

Schema 1 (items id -> record, paths path -> id, hashes hash -> ids, code_loc id -> segment)
is converted by the first writable open, in ONE write transaction (fault point migrate_txn),
then data.mdb is rewritten without the freed pages (a compacting copy renamed over it; meta
`reclaim` marks a rewrite still to do, fault point reclaim_copied). A read-only open of a
schema-1 store migrates it the same way first when it can take writer.lock, else fails with
one line saying so. An older semdb refuses a schema-2 store (its schema check).

Invariant (checked by Store.verify): every item has exactly one of a code or a staging row;
item segments decode, their ids lie in [key, next key) and below next_id, no path is stored
twice; segments/staging/recode hold nothing for ids that are not items; recode rows exist
only while a pending codec does. Changing an item's code or staging row, or deleting it,
drops its recode row (a resumed retrain encodes it again).

Writes: ``with store.write() as w: ...`` is ONE LMDB write transaction: committed when the
block ends, aborted if it raises, so a batch lands entirely or not at all (also under
kill -9).  Codes added in one batch become one new segment.  When the map fills up, the
batch is aborted, the map doubled and the recorded operations replayed, transparently.
Only one process writes: a writable Store holds an exclusive flock on writer.lock for its
lifetime.  Readers never block: each read uses its own short LMDB read transaction and sees
the last committed state.  One LMDB environment is shared by all Stores on the same
directory in one process (LMDB forbids opening it twice); a Store is not thread-safe.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import lmdb
import numpy as np

from semdb import segments
from semdb.errors import InputError, StoreError, StoreLockedError
from semdb.faults import fault_point

SCHEMA_VERSION = 2  # 2: columnar item segments; 1: items/paths/hashes/code_loc (migrated on open)
DEFAULT_MAP_SIZE = 64 << 20  # grows by doubling when full
SEGMENT_MAX = 1 << 20  # items per segment when compacting
COMPACT_AFTER = 64  # more small segments than this -> merge them at the next commit
_DBS = ("meta", "codec", "itemsegs", "codes", "staging", "recode", "ivf")
_V1_DBS = ("items", "paths", "hashes", "code_loc")  # schema 1's item databases: dropped by the migration
_LATER_DBS = {"recode", "ivf"}  # added after schema 1 was released: created on the first writable open
_MANAGED_META = {
    "schema",
    "created",
    "generation",
    "next_id",
    "next_segment",
    "code_bytes",
    "codec_id",
    "dim",
    "pending_codec",
    "training_queries",
    "ivf",
    "reclaim",
}  # only the store itself changes these
_SEG_HEAD = struct.Struct("<QII")
_IVF_HEAD = struct.Struct("<QI")
_ITEM_HEADS = {
    1: struct.Struct("<BQQqIIddH"),  # records written before the date taken existed
    2: struct.Struct("<BQQqIIdddH"),
}  # + taken (NaN: not known)
_ITEM_VERSION = 2
_MAX_HASH_BYTES = 400  # schema 1 kept hashes as LMDB keys (511-byte limit); kept for old readers
_SEG_CACHE = 16  # decoded item segments kept per process (get_item of a query's hits)


def default_store_path() -> Path:
    """$SEMDB_STORE, else <user data dir>/semdb/store."""
    if os.environ.get("SEMDB_STORE"):
        return Path(os.environ["SEMDB_STORE"]).expanduser()
    try:
        import platformdirs

        return Path(platformdirs.user_data_dir("semdb")) / "store"
    except ImportError:
        return Path.home() / ".local" / "share" / "semdb" / "store"


class _Corrupt(Exception):
    """A stored value that cannot be decoded; Store turns it into a StoreError naming the store."""


class _OldSchema(Exception):
    """A read-only open met a store of an older schema (Store.__init__ migrates it first)."""


def _k(n: int) -> bytes:
    return int(n).to_bytes(8, "big")


def _fs_bytes(path: str) -> bytes:
    # The file system's own bytes (surrogateescape), so non-UTF-8 names round-trip exactly.
    # A str that does not survive fsencode->fsdecode cannot name a file distinctly: refuse it.
    try:
        raw = os.fsencode(path)
    except (UnicodeEncodeError, TypeError):
        raw = b""
    if not raw or b"\0" in raw or os.fsdecode(raw) != path:
        raise InputError(f"{path!r} is not a valid file system path")
    return raw


def _hash_key(h: str) -> bytes:
    try:
        raw = h.encode("utf-8") if isinstance(h, str) else b""
    except UnicodeEncodeError:
        raw = b""
    if not raw or len(raw) > _MAX_HASH_BYTES:
        raise InputError(f"content hash {h!r} must be a non-empty UTF-8 string of at most {_MAX_HASH_BYTES} bytes")
    return raw


@dataclass
class Item:
    """One file's metadata. id 0 means "not stored yet" (Writer.add_item assigns one).
    `taken`: when the photo was taken (EXIF DateTimeOriginal, else the file's mtime), POSIX
    seconds; None in records written before semdb kept it (the next ingest fills it)."""

    id: int
    path: str
    size: int
    mtime_ns: int
    hash: str
    width: int
    height: int
    added: float
    updated: float
    taken: float | None = None

    def __post_init__(self):
        if isinstance(self.path, os.PathLike):
            self.path = os.fspath(self.path)

    @classmethod
    def new(
        cls, path, size, mtime_ns, hash, width, height, now: float | None = None, taken: float | None = None
    ) -> Item:
        now = time.time() if now is None else now
        return cls(0, path, size, mtime_ns, hash, width, height, now, now, taken)

    def to_bytes(self) -> bytes:
        """Deterministic record: <BQQqIIdddH header, utf-8 hash, fs path bytes (the rest)."""
        path_raw, hash_raw = _fs_bytes(self.path), _hash_key(self.hash)
        taken = float("nan") if self.taken is None else self.taken
        try:
            head = _ITEM_HEADS[_ITEM_VERSION].pack(
                _ITEM_VERSION,
                self.id,
                self.size,
                self.mtime_ns,
                self.width,
                self.height,
                self.added,
                self.updated,
                taken,
                len(hash_raw),
            )
        except struct.error as e:
            raise InputError(f"{self.path}: item field out of range ({e})") from None
        return head + hash_raw + path_raw

    @classmethod
    def from_bytes(cls, raw) -> Item:
        raw = bytes(raw)
        try:
            head = _ITEM_HEADS.get(raw[0] if raw else 0)
            if head is None:
                raise ValueError(f"record version {raw[0] if raw else None}")
            version, id_, size, mtime_ns, w, h, added, updated, *taken, hlen = head.unpack_from(raw)
            if len(raw) <= head.size + hlen:
                raise ValueError(f"record version {version}, length {len(raw)}")
            start = head.size
            hash_ = raw[start : start + hlen].decode("utf-8")
        except (struct.error, ValueError) as e:
            raise _Corrupt(f"bad item record: {e}") from None
        taken = taken[0] if taken and taken[0] == taken[0] else None  # NaN: not known
        return cls(id_, os.fsdecode(raw[start + hlen :]), size, mtime_ns, hash_, w, h, added, updated, taken)


def _pack_segment(ids: np.ndarray, codes: np.ndarray) -> bytes:
    body = np.ascontiguousarray(ids, "<u8").tobytes() + np.ascontiguousarray(codes, np.uint8).tobytes()
    return _SEG_HEAD.pack(len(ids), codes.shape[1], zlib.crc32(body)) + body


def _unpack_segment(raw) -> tuple[np.ndarray, np.ndarray]:
    """Views onto raw (copy them if raw is an LMDB buffer that outlives its transaction)."""
    try:
        n, width, crc = _SEG_HEAD.unpack_from(raw)
    except struct.error:
        raise _Corrupt("truncated code segment") from None
    if len(raw) != _SEG_HEAD.size + n * (8 + width) or zlib.crc32(memoryview(raw)[_SEG_HEAD.size :]) != crc:
        raise _Corrupt("code segment fails its length or checksum test")
    ids = np.frombuffer(raw, "<u8", n, _SEG_HEAD.size)
    codes = np.frombuffer(raw, np.uint8, n * width, _SEG_HEAD.size + 8 * n).reshape(n, width)
    return ids, codes


def _pack_lists(lists: np.ndarray, seg_crc: int) -> bytes:
    return _IVF_HEAD.pack(len(lists), seg_crc) + np.ascontiguousarray(lists, "<u4").tobytes()


def _unpack_lists(raw, n: int, seg_crc: int) -> np.ndarray | None:
    """A segment's list numbers (a copy), or None if the row is missing or not this segment's."""
    if raw is None or len(raw) < _IVF_HEAD.size:
        return None
    rn, rcrc = _IVF_HEAD.unpack_from(raw)
    if rn != n or rcrc != seg_crc or len(raw) != _IVF_HEAD.size + 4 * n:
        return None
    return np.frombuffer(raw, "<u4", n, _IVF_HEAD.size).copy()


def _verify_ivf(txn, db, meta) -> list[str]:
    """IVF rows: centroids match the meta record; every list row belongs to an existing segment,
    has its length and checksum, and names lists below nlist. (A segment without a row is fine:
    its codes are assigned when the index is built.)"""
    info, problems = meta.get("ivf"), []
    rows = {bytes(k): bytes(raw) for k, raw in txn.cursor(db=db["ivf"])}
    centroids = rows.pop(b"centroids", None)
    if not info:
        return ["IVF rows exist but meta has no ivf record"] if rows or centroids else []
    if centroids is None or len(centroids) != 4 * info["nlist"] * info["dim"]:
        problems.append(f"IVF centroids missing or not ({info['nlist']}, {info['dim']}) float32")
    for k, raw in rows.items():
        seg = txn.get(k, db=db["codes"])
        if seg is None:
            problems.append(f"IVF list row for missing segment {int.from_bytes(k, 'big')}")
            continue
        n, _, crc = _SEG_HEAD.unpack_from(seg)
        lists = _unpack_lists(raw, n, crc)
        if lists is None:
            problems.append(f"IVF list row of segment {int.from_bytes(k, 'big')} does not match the segment")
        elif len(lists) and int(lists.max()) >= info["nlist"]:
            problems.append(f"IVF list row of segment {int.from_bytes(k, 'big')} names list {int(lists.max())}")
    return problems


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _row(item: Item, id_: int | None = None) -> segments.Row:
    """An item (with id `id_` if given) as an item segment row (see semdb/segments.py),
    validated: InputError if a field cannot be stored, before anything changes."""
    raw = _fs_bytes(item.path)
    _hash_key(item.hash)
    try:
        ints = [int(item.size), int(item.mtime_ns), int(item.width), int(item.height)]
        floats = [float(item.added), float(item.updated), None if item.taken is None else float(item.taken)]
    except (TypeError, ValueError, OverflowError) as e:
        raise InputError(f"{item.path}: item field is not a number ({e})") from None
    size, mtime_ns, width, height = ints
    if not (
        0 <= size < 1 << 64 and -(1 << 63) <= mtime_ns < 1 << 63 and 0 <= width < 1 << 32 and 0 <= height < 1 << 32
    ):
        raise InputError(
            f"{item.path}: item field out of range (size {ints[0]}, mtime_ns {ints[1]}, {ints[2]}x{ints[3]})"
        )
    return segments.Row(int(item.id if id_ is None else id_), raw, item.hash, *ints, *floats)


def _rows_of(cols: segments.Columns) -> list[segments.Row]:
    taken = [None if t != t else t for t in cols.taken.tolist()]  # NaN: not known
    return list(
        map(
            segments.Row._make,
            zip(
                cols.ids.tolist(),
                cols.paths,
                cols.hashes,
                cols.size.tolist(),
                cols.mtime_ns.tolist(),
                cols.width.tolist(),
                cols.height.tolist(),
                cols.added.tolist(),
                cols.updated.tolist(),
                taken,
            ),
        )
    )


def _row_at(cols: segments.Columns, i: int) -> segments.Row:
    taken = float(cols.taken[i])
    return segments.Row(
        int(cols.ids[i]),
        cols.paths[i],
        cols.hashes[i],
        int(cols.size[i]),
        int(cols.mtime_ns[i]),
        int(cols.width[i]),
        int(cols.height[i]),
        float(cols.added[i]),
        float(cols.updated[i]),
        None if taken != taken else taken,
    )


def _item_of(r: segments.Row) -> Item:
    return Item(r.id, os.fsdecode(r.path), r.size, r.mtime_ns, r.hash, r.width, r.height, r.added, r.updated, r.taken)


def _items_of(cols: segments.Columns) -> list[Item]:
    return [_item_of(r) for r in _rows_of(cols)]


@dataclass
class _ItemIndex:
    """The in-memory lookups that replace schema 1's paths and hashes databases, built from the
    item segments: path_key(path bytes) -> ids and hash_key(content hash) -> ids (candidates:
    a hit is checked against the stored item)."""

    paths: segments.KeyMultimap
    hashes: segments.KeyMultimap

    def overlay(self) -> _ItemIndex:
        return _ItemIndex(self.paths.overlay(), self.hashes.overlay())

    def merged(self) -> _ItemIndex:
        return _ItemIndex(self.paths.merged(), self.hashes.merged())


def _seg_header(raw) -> segments.Header:
    try:
        return segments.header(raw)
    except segments.SegmentError as e:
        raise _Corrupt(str(e)) from None


def _decode_segment(raw) -> segments.Columns:
    try:
        return segments.decode(raw)
    except segments.SegmentError as e:
        raise _Corrupt(str(e)) from None


# LMDB forbids opening one environment twice in a process; Stores on one directory share it.
_ENVS: dict[str, _Shared] = {}
_ENVS_LOCK = threading.Lock()


class _Shared:
    def __init__(self, env, dbs, readonly):
        self.env, self.dbs, self.readonly, self.users, self.key = env, dbs, readonly, 0, None
        self.codes_cache = None  # (generation, ids, codes): load_codes skips unchanged stores
        # (generation, _ItemIndex) and (generation, KeyMultimap id -> code segment): built when
        # first needed, carried forward by this process's own commits, rebuilt after others'
        self.item_index = None
        self.code_loc = None
        self.seg_cache: dict = {}  # (key, crc) -> decoded item segment; insertion order = age

    def reset(self) -> None:
        self.codes_cache = self.item_index = self.code_loc = None
        self.seg_cache = {}


class _View:
    """Reads through one transaction: a read snapshot, or a Writer's own (sees its writes)."""

    txn: lmdb.Transaction
    _db: dict
    _shared: _Shared

    def _get(self, key: bytes, db: str) -> bytes | None:
        value = self.txn.get(key, db=self._db[db])
        return None if value is None else bytes(value)  # buffers die with the next write

    def _segment_key(self, id: int) -> bytes | None:
        """Key of the item segment whose id range holds `id`: the largest key <= id."""
        cur = self.txn.cursor(db=self._db["itemsegs"])
        key = _k(id)
        if cur.set_range(key):
            if bytes(cur.key()) == key:
                return key
            return bytes(cur.key()) if cur.prev() else None
        return bytes(cur.key()) if cur.last() else None

    def _segment_raw(self, key: bytes):
        raw = self.txn.get(key, db=self._db["itemsegs"])
        if raw is None:
            raise _Corrupt(f"item segment {int.from_bytes(key, 'big')} vanished")
        head = _seg_header(raw)
        # crc32 of the stored body + zlib's adler32 of the plain one (its last 4 bytes): a
        # rewritten segment (this process's or another's) never reuses a stale decoding
        return raw, (key, head.crc, bytes(raw[-4:]), head.n, len(raw))

    def _segment(self, key: bytes) -> segments.Columns:
        raw, tag = self._segment_raw(key)
        cache = self._shared.seg_cache
        cols = cache.get(tag)
        if cols is None:
            cols = _decode_segment(raw)
            if len(cache) >= _SEG_CACHE:
                del cache[next(iter(cache))]
            cache[tag] = cols
        return cols

    def _stored_item(self, id: int) -> Item | None:
        key = self._segment_key(id)
        if key is None:
            return None
        raw, tag = self._segment_raw(key)
        cols = self._shared.seg_cache.get(tag)
        if cols is None:  # one row of a segment not decoded yet: build only that row
            try:
                row = segments.decode_row(raw, id)
            except segments.SegmentError as e:
                raise _Corrupt(str(e)) from None
            return None if row is None else _item_of(row)
        i = cols.row(id)
        return None if i is None else _item_of(_row_at(cols, i))

    def get_item(self, id: int) -> Item | None:
        return self._stored_item(int(id))

    def _stored_items(self, ids: list[int]) -> list[Item | None]:
        """Many items at once: an item segment that holds several of them is decoded once (a
        filtered query reads every item: one decompression per id would cost minutes at 1M);
        one that holds a few gives just their rows (a query's candidates are spread thinly)."""
        out: list[Item | None] = [None] * len(ids)
        order = np.argsort(np.array(ids, np.uint64), kind="stable")
        sorted_ids = np.array(ids, np.uint64)[order]
        cur = self.txn.cursor(db=self._db["itemsegs"])
        i = 0
        while i < len(ids):
            key = self._segment_key(int(sorted_ids[i]))
            if key is None:  # below the first segment
                i += 1
                continue
            cur.set_key(key)
            end = int.from_bytes(cur.key(), "big") if cur.next() else None  # the next segment's first id
            j = len(ids) if end is None else int(np.searchsorted(sorted_ids, np.uint64(end)))
            if j - i >= 8:
                cols = self._segment(key)
                for p in order[i:j]:
                    row = cols.row(ids[p])
                    out[p] = None if row is None else _item_of(_row_at(cols, row))
            else:
                for p in order[i:j]:
                    out[p] = self._stored_item(ids[p])
            i = j
        return out

    def _index(self) -> _ItemIndex:  # a read snapshot's: the process's; a Writer's: + its batch
        raise NotImplementedError

    def item_by_path(self, path: str) -> Item | None:
        raw = _fs_bytes(os.fspath(path))
        return self._find_path(raw, segments.path_key(raw))

    def _find_path(self, raw: bytes, key: int) -> Item | None:
        for id_ in self._index().paths.get(key):
            item = self.get_item(id_)
            if item is not None and os.fsencode(item.path) == raw:
                return item
        return None

    def items_by_hash(self, h: str) -> list[Item]:
        _hash_key(h)
        found = (self.get_item(i) for i in sorted(self._index().hashes.get(segments.hash_key(h))))
        return [it for it in found if it is not None and it.hash == h]

    def _item_count(self) -> int:
        """Items in the committed item segments of this transaction (headers only)."""
        return sum(_seg_header(raw).n for _, raw in self.txn.cursor(db=self._db["itemsegs"]))

    def _coded_count(self) -> int:
        return sum(_SEG_HEAD.unpack_from(raw)[0] for _, raw in self.txn.cursor(db=self._db["codes"]))

    def _build_item_index(self) -> _ItemIndex:
        pk, hk, ids = [], [], []
        for _, raw in self.txn.cursor(db=self._db["itemsegs"]):
            cols = _decode_segment(raw)
            pk.append(segments.path_keys(cols))
            hk.append(segments.hash_keys(cols))
            ids.append(cols.ids)
        if not ids:
            return _ItemIndex(segments.KeyMultimap(), segments.KeyMultimap())
        ids = np.concatenate(ids)
        return _ItemIndex(
            segments.KeyMultimap.build(np.concatenate(pk), ids), segments.KeyMultimap.build(np.concatenate(hk), ids)
        )

    def _build_code_loc(self) -> segments.KeyMultimap:
        ks, vs = [], []
        for k, raw in self.txn.cursor(db=self._db["codes"]):
            ids, _ = _unpack_segment(raw)
            ks.append(ids.astype(np.uint64))
            vs.append(np.full(len(ids), int.from_bytes(k, "big"), np.uint64))
        if not ks:
            return segments.KeyMultimap()
        return segments.KeyMultimap.build(np.concatenate(ks), np.concatenate(vs))

    def _cached_item_index(self) -> _ItemIndex:
        generation = self._meta_get("generation")
        cached = self._shared.item_index
        if cached is None or cached[0] != generation:
            cached = self._shared.item_index = (generation, self._build_item_index())
        return cached[1]

    def _cached_code_loc(self) -> segments.KeyMultimap:
        generation = self._meta_get("generation")
        cached = self._shared.code_loc
        if cached is None or cached[0] != generation:
            cached = self._shared.code_loc = (generation, self._build_code_loc())
        return cached[1]

    def _meta_get(self, key: str):
        raw = self._get(key.encode(), "meta")
        try:
            return None if raw is None else json.loads(raw)
        except ValueError as e:
            raise _Corrupt(f"bad meta value {key}: {e}") from None

    def _read_meta(self) -> dict:
        try:
            return {bytes(k).decode(): json.loads(bytes(v)) for k, v in self.txn.cursor(db=self._db["meta"])}
        except ValueError as e:
            raise _Corrupt(f"bad meta value: {e}") from None


class _ReadView(_View):
    def __init__(self, txn, dbs, shared):
        self.txn, self._db, self._shared = txn, dbs, shared

    def _index(self) -> _ItemIndex:
        return self._cached_item_index()


class Store:
    """Open (or create) the store in directory `path` (default: default_store_path())."""

    def __init__(
        self,
        path=None,
        create: bool = False,
        readonly: bool = False,
        wait: bool = False,
        map_size: int = DEFAULT_MAP_SIZE,
    ):
        self.path = Path(path).expanduser() if path is not None else default_store_path()
        self.readonly = readonly
        self._lock_fd = None
        self._shared = None
        self._writer = None
        # ivf_assigner(codec_id, ivf meta, centroids()) -> (codes -> uint32 lists) or None: how
        # the Writer gives new codes their IVF list (set by StoreContext; None: rows left out)
        self.ivf_assigner = None
        data = self.path / "data.mdb"
        if not data.exists():
            if self.path.is_dir() and any(p.name not in ("writer.lock", "lock.mdb") for p in self.path.iterdir()):
                raise StoreError(
                    f"{self.path} is not a semdb store (no data.mdb); pass a new or empty directory to create one"
                )
            if self.path.exists() and not self.path.is_dir():
                raise StoreError(f"{self.path} is a file, not a semdb store directory")
            if readonly or not create:
                raise StoreError(f"no semdb store at {self.path}; run `semdb ingest` first")
            self.path.mkdir(parents=True, exist_ok=True)
        try:
            if not readonly:
                self._lock(wait)
            try:
                self._attach(map_size)
            except _OldSchema as old:
                self._migrate_then_attach(old.args[0], map_size)
        except BaseException:
            self.close()
            raise

    def _migrate_then_attach(self, schema: int, map_size: int) -> None:
        """A read-only open of an older store: migrate it through a short writable open (as any
        writing command would), then open it read-only. If that cannot be done now (another
        process is writing it, or no write access) say so in one line."""
        try:
            Store(self.path, map_size=map_size).close()
        except (StoreError, OSError) as e:
            raise StoreError(
                f"{self.path} uses store schema {schema}; semdb converts it to schema "
                f"{SCHEMA_VERSION} the first time it opens it for writing, and that failed "
                f"now ({_one_line(e)}): run `semdb import` or `semdb ingest` on it when "
                f"nothing else is writing it, with write access to {self.path}"
            ) from None
        self._attach(map_size)

    # -- opening ------------------------------------------------------------------------

    def _lock(self, wait: bool) -> None:
        fd = os.open(self.path / "writer.lock", os.O_RDWR | os.O_CREAT, 0o644)
        self._lock_fd = fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise StoreLockedError(
                f"{self.path} is being written by another semdb process (pid {pid}); wait for it or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)

    def _attach(self, map_size: int) -> None:
        key = os.path.realpath(self.path)
        with _ENVS_LOCK, self._guard():
            shared = _ENVS.get(key)
            if shared is None:
                shared = _ENVS[key] = _Shared(*self._open_env(map_size), self.readonly)
                shared.key = key
            elif shared.readonly and not self.readonly:
                # Readonly Stores of this process share a read-only environment: reopen it
                # read-write in place (they reach it through `shared`, and hold no txn now).
                shared.env.close()
                shared.env, shared.dbs = self._open_env(map_size)
                shared.readonly = False
                shared.reset()
            shared.users += 1
            self._shared = shared

    def _open_env(self, map_size: int) -> tuple:
        # Readonly Stores open LMDB read-only: then opening the named databases takes a read
        # transaction, never the LMDB writer mutex that a writing process may be holding.
        ro = self.readonly
        try:
            env = lmdb.open(
                str(self.path),
                map_size=map_size,
                subdir=True,
                max_dbs=len(_DBS) + len(_V1_DBS) + 2,
                readonly=ro,
                create=not ro,
                lock=not ro or os.access(self.path / "lock.mdb", os.W_OK),
            )
        except lmdb.Error as e:
            raise StoreError(
                f"{self.path} is corrupt or not a semdb store ({_one_line(e)}); "
                f"restore it from a backup or pass a new --store"
            ) from None
        try:
            # LMDB maps the file and trusts its header: reading a page past the end of a
            # truncated file kills the process with SIGBUS. Writers extend the file before
            # they commit a header naming the new pages, so a shorter file is damage.
            size = (self.path / "data.mdb").stat().st_size
            need = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
            if size < need:
                raise StoreError(
                    f"{self.path} is corrupt (data.mdb is truncated: {size} bytes, its "
                    f"header needs {need}); restore it from a backup or rebuild it "
                    f"with `semdb ingest` into a new --store"
                )
            if not ro:
                env.set_mapsize(0)  # adopt the size the file was last grown to...
                if env.info()["map_size"] < map_size:
                    env.set_mapsize(map_size)  # ...or the requested one if larger
            with env.begin() as txn:
                names = {bytes(k) for k, _ in txn.cursor()}
            if not names and not ro:
                return env, self._initialise(env)
            if not names:
                raise StoreError(f"no semdb store at {self.path} (empty); run `semdb ingest` first")
            if b"meta" not in names:
                raise StoreError(
                    f"{self.path} is not a semdb store (an LMDB environment without "
                    f"semdb meta); pass a new or empty directory to create one"
                )
            if ro:
                meta_db = env.open_db(b"meta", create=False)
                with env.begin() as txn:
                    schema = self._check_schema(txn.get(b"schema", db=meta_db))
                if schema < SCHEMA_VERSION:
                    raise _OldSchema(schema)
                return env, {
                    n: env.open_db(n.encode(), create=False) if n not in _LATER_DBS or n.encode() in names else None
                    for n in _DBS
                }
            env, dbs = self._migrate(env)
            return env, dbs
        except BaseException:
            env.close()
            raise

    def _check_schema(self, raw) -> int:
        try:
            schema = json.loads(raw)
        except (TypeError, ValueError):
            schema = None
        if not isinstance(schema, int) or schema < 1:
            raise _Corrupt(f"bad schema version {raw!r}")
        if schema > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was made by a newer semdb (schema {schema} > {SCHEMA_VERSION}); upgrade semdb"
            )
        return schema

    def _migrate(self, env):
        """Open the databases of a writable store, converting a schema-1 store to schema 2 first.

        The conversion is ONE write transaction (a kill -9 leaves schema 1, converted again by
        the next open); it sets meta `reclaim`, and the space the old databases held is then
        given back by _reclaim (LMDB never shrinks its file). We hold writer.lock: no other
        writer can interleave."""
        while True:
            try:
                with env.begin(write=True) as txn:
                    meta_db = env.open_db(b"meta", txn=txn, create=False)
                    schema = self._check_schema(txn.get(b"schema", db=meta_db))
                    dbs = {n: env.open_db(n.encode(), txn=txn, create=n in _LATER_DBS or n == "itemsegs") for n in _DBS}
                    if schema == 1:
                        self._convert_v1(env, txn, dbs)
                        fault_point("migrate_txn")
                    reclaim = txn.get(b"reclaim", db=meta_db) is not None
                break
            except lmdb.MapFullError:  # old and new item records side by side: grow and redo
                env.set_mapsize(env.info()["map_size"] * 2)
        if reclaim:
            env = self._reclaim(env)
            dbs = {n: env.open_db(n.encode(), create=False) for n in _DBS}
        return env, dbs

    def _convert_v1(self, env, txn, dbs) -> None:
        old = {n: env.open_db(n.encode(), txn=txn, create=False, dupsort=n == "hashes") for n in _V1_DBS}
        chunk: list[segments.Row] = []

        def put():
            txn.put(_k(chunk[0].id), segments.encode(chunk), db=dbs["itemsegs"], append=True)
            chunk.clear()

        with self._guard():
            for _, raw in txn.cursor(db=old["items"]):  # id order: segments' ranges ascend
                chunk.append(_row(Item.from_bytes(raw)))
                if len(chunk) == segments.ITEMSEG_MAX:
                    put()
            if chunk:
                put()
        for db in old.values():
            txn.drop(db, delete=True)
        meta = dbs["meta"]
        generation = json.loads(txn.get(b"generation", db=meta))
        txn.put(b"generation", json.dumps(generation + 1).encode(), db=meta)
        txn.put(b"schema", json.dumps(SCHEMA_VERSION).encode(), db=meta)
        txn.put(b"reclaim", b"true", db=meta)

    def _reclaim(self, env):
        """Rewrite data.mdb without its free pages: a compacting copy into a temporary folder,
        fsync, then an atomic rename over data.mdb while no environment is open on it. A crash
        at any point leaves the old or the new file whole; meta `reclaim` stays set until the
        new file is in place, so an interrupted reclaim is redone by the next open. (A process
        that had the store open before this keeps reading the file it opened: reopen it.)"""
        tmp = self.path / ".reclaim.tmp"
        if tmp.exists():
            for f in tmp.iterdir():
                f.unlink()
        else:
            tmp.mkdir()
        map_size = env.info()["map_size"]
        env.copy(str(tmp), compact=True)
        fd = os.open(tmp / "data.mdb", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        env.close()
        fault_point("reclaim_copied")
        os.replace(tmp / "data.mdb", self.path / "data.mdb")
        dfd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
        env = lmdb.open(str(self.path), map_size=map_size, subdir=True, max_dbs=len(_DBS) + len(_V1_DBS) + 2)
        with env.begin(write=True) as txn:
            txn.delete(b"reclaim", db=env.open_db(b"meta", txn=txn, create=False))
        return env

    @staticmethod
    def _initialise(env) -> dict:
        while True:
            try:
                with env.begin(write=True) as txn:  # all databases and meta appear in one commit
                    dbs = {n: env.open_db(n.encode(), txn=txn) for n in _DBS}
                    meta = {
                        "schema": SCHEMA_VERSION,
                        "created": time.time(),
                        "generation": 0,
                        "next_id": 1,
                        "next_segment": 0,
                        "code_bytes": None,
                        "codec_id": None,
                        "dim": None,
                        "model_id": None,
                    }
                    for k, v in meta.items():
                        txn.put(k.encode(), json.dumps(v).encode(), db=dbs["meta"])
                return dbs
            except lmdb.MapFullError:  # a map_size too small for even an empty store: grow it
                env.set_mapsize(env.info()["map_size"] * 2)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.abort()
        if self._shared is not None:
            with _ENVS_LOCK:
                self._shared.users -= 1
                if self._shared.users == 0:
                    _ENVS.pop(self._shared.key, None)
                    self._shared.env.close()
            self._shared = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- plumbing -----------------------------------------------------------------------

    @property
    def _env(self):
        if self._shared is None:
            raise StoreError(f"{self.path}: store is closed")
        return self._shared.env

    @contextlib.contextmanager
    def _guard(self):
        """Turn LMDB failures and undecodable values into one-line StoreErrors."""
        try:
            yield
        except _Corrupt as e:
            raise StoreError(
                f"{self.path} is corrupt ({e}); restore it from a backup or "
                f"rebuild it with `semdb ingest` into a new --store"
            ) from None
        except (
            lmdb.CorruptedError,
            lmdb.InvalidError,
            lmdb.PageNotFoundError,
            lmdb.BadValsizeError,
            lmdb.IncompatibleError,
            lmdb.VersionMismatchError,
            lmdb.BadTxnError,
        ) as e:  # BAD_TXN: LMDB met a damaged page earlier in this txn
            raise StoreError(
                f"{self.path} is corrupt ({_one_line(e)}); restore it from a backup "
                f"or rebuild it with `semdb ingest` into a new --store"
            ) from None
        except (lmdb.MapFullError, lmdb.MapResizedError):
            raise
        except lmdb.Error as e:
            raise StoreError(f"{self.path}: storage error ({_one_line(e)})") from None

    def _begin(self, write: bool = False):
        try:
            return self._env.begin(write=write, buffers=True)
        except lmdb.MapResizedError:  # another process grew the file: adopt its size
            self._env.set_mapsize(0)
            return self._env.begin(write=write, buffers=True)

    @contextlib.contextmanager
    def _read(self):
        with self._guard():
            txn = self._begin()
            try:
                yield _ReadView(txn, self._shared.dbs, self._shared)
            finally:
                txn.abort()

    # -- reads --------------------------------------------------------------------------

    def get_item(self, id: int) -> Item | None:
        with self._read() as v:
            return v.get_item(id)

    def item_by_path(self, path) -> Item | None:
        with self._read() as v:
            return v.item_by_path(path)

    def items_by_hash(self, h: str) -> list[Item]:
        with self._read() as v:
            return v.items_by_hash(h)

    def items(self, ids: Iterable[int]) -> list[Item | None]:
        ids = [int(i) for i in ids]
        with self._read() as v:
            return v._stored_items(ids) if len(ids) > 16 else [v.get_item(i) for i in ids]

    def iter_items(self, batch: int = 1024) -> Iterator[Item]:
        """Every item in id order. Short read transactions of about `batch` items (whole
        segments): a long-lived one would stop the map from growing if the caller writes while
        iterating."""
        start = b""
        while True:
            got: list[Item] = []
            with self._read() as v:
                cur = v.txn.cursor(db=v._db["itemsegs"])
                more = cur.set_range(start)
                while more and len(got) < batch:
                    key = bytes(cur.key())
                    got += _items_of(v._segment(key))
                    start = _k(int.from_bytes(key, "big") + 1)
                    more = cur.next()
            yield from got
            if not more:
                return

    def _chunks(self, db: str, batch: int) -> Iterator[tuple[list, dict]]:
        """(up to `batch` (key, value) rows, the meta) per short read transaction, in key order:
        the rows and the meta of one chunk are one snapshot."""
        start = b""
        while True:
            with self._read() as v:
                cur = v.txn.cursor(db=v._db[db])
                rows = []
                if cur.set_range(start):
                    for k, val in cur:
                        rows.append((bytes(k), bytes(val)))
                        if len(rows) == batch:
                            break
                meta = v._read_meta()
            if rows:
                yield rows, meta
            if len(rows) < batch:
                return
            start = rows[-1][0] + b"\0"  # smallest key after the last one

    def meta(self) -> dict:
        with self._read() as v:
            return v._read_meta()

    def model_id(self) -> dict | None:
        return self.meta().get("model_id")

    def check_model(self, model_id: dict | None) -> None:
        """StoreError unless the store is unbound or bound to this CLIP model."""
        stored = self.model_id()
        if not stored or not model_id:
            return
        d1, d2 = stored.get("digest"), model_id.get("digest")
        same = stored.get("dim") == model_id.get("dim") and (
            d1 == d2
            if d1 and d2
            else (stored.get("name"), stored.get("pretrained")) == (model_id.get("name"), model_id.get("pretrained"))
        )
        if not same:
            name, tag = stored.get("name"), stored.get("pretrained")
            raise StoreError(
                f"{self.path} was built with CLIP model {name}{'/' + tag if tag else ''} (digest "
                f"{(d1 or '?')[:16]}, dim {stored.get('dim')}); open it with --model {name}"
                f"{' --pretrained ' + tag if tag else ''} or use a new --store"
            )

    def codec_bytes(self) -> bytes | None:
        with self._read() as v:
            return v._get(b"codec", "codec")

    def training_queries(self) -> np.ndarray | None:
        """Text query embeddings (float16 (n, dim)) recorded for training the codec, or None."""
        with self._read() as v:
            raw, shape = v._get(b"queries", "codec"), v._meta_get("training_queries")
        return None if raw is None or not shape else np.frombuffer(raw, np.float16).reshape(shape)

    def pending_codec_bytes(self) -> bytes | None:
        """The codec an unfinished retrain is moving the store to (None: no retrain pending)."""
        with self._read() as v:
            return v._get(b"pending", "codec")

    def recoded_ids(self) -> np.ndarray:
        """Ids (uint64, ascending) that already have a code under the pending codec."""
        with self._read() as v:
            if v._db["recode"] is None:  # a read-only open of a store from before the recode db
                return np.empty(0, np.uint64)
            return np.array(
                [int.from_bytes(k, "big") for k in v.txn.cursor(db=v._db["recode"]).iternext(values=False)], np.uint64
            )

    def count(self) -> int:
        with self._read() as v:
            return v._item_count()

    def staging_count(self) -> int:
        with self._read() as v:
            return v.txn.stat(v._db["staging"])["entries"]

    def iter_staging(self, batch: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Chunks of (ids uint64 (n,), float16 embeddings (n, dim))."""
        # dim is set by the commit that stages the first row: each chunk's rows and dim are read
        # in one transaction (a writer may commit between two reads).
        for rows, meta in self._chunks("staging", batch):
            yield self._staged(rows, meta.get("dim"))

    def _staged(self, rows, dim) -> tuple[np.ndarray, np.ndarray]:
        if not dim or any(len(v) != 2 * dim for _, v in rows):
            with self._guard():
                raise _Corrupt(f"staging row width differs from dim {dim}")
        ids = np.array([int.from_bytes(k, "big") for k, _ in rows], np.uint64)
        return ids, np.frombuffer(b"".join(v for _, v in rows), np.float16).reshape(len(rows), dim)

    def load_codes(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids uint64 (n,), codes uint8 (n, code_bytes)) of every coded item, one snapshot.

        Cached per process until the next commit (keyed by the meta generation counter);
        the arrays are read-only because they are shared between calls."""
        with self._read() as v:
            generation = v._meta_get("generation")
            cached = self._shared.codes_cache
            if cached is not None and cached[0] == generation:
                return cached[1], cached[2]
            width = v._meta_get("code_bytes") or 0
            parts = [_unpack_segment(raw) for _, raw in v.txn.cursor(db=v._db["codes"])]
            if any(codes.shape[1] != width for _, codes in parts):
                raise _Corrupt(f"a code segment's width differs from code_bytes {width}")
            # concatenate copies out of the LMDB map before the transaction ends
            ids = (
                np.concatenate([p[0] for p in parts]).astype(np.uint64, copy=False) if parts else np.empty(0, np.uint64)
            )
            codes = np.concatenate([p[1] for p in parts]) if parts else np.empty((0, width), np.uint8)
        ids.setflags(write=False)
        codes.setflags(write=False)
        self._shared.codes_cache = (generation, ids, codes)
        return ids, codes

    def ivf_meta(self) -> dict | None:
        return self.meta().get("ivf")

    def load_ivf(self):
        """(generation, ivf meta, centroids float32 (nlist, dim), lists int64 aligned with
        load_codes() of that generation, -1 where a segment has no valid list row), or None
        when the store has no IVF."""
        with self._read() as v:
            meta = v._read_meta()
            info = meta.get("ivf")
            if not info or v._db["ivf"] is None:
                return None
            raw = v._get(b"centroids", "ivf")
            if raw is None:
                raise _Corrupt("the IVF's meta record has no centroids")
            C = np.frombuffer(raw, np.float32).reshape(info["nlist"], info["dim"])
            parts = []
            for k, seg in v.txn.cursor(db=v._db["codes"]):
                n, _, crc = _SEG_HEAD.unpack_from(seg)
                row = v.txn.get(bytes(k), db=v._db["ivf"])
                lists = _unpack_lists(row, n, crc)
                parts.append(np.full(n, -1, np.int64) if lists is None else lists.astype(np.int64))
        lists = np.concatenate(parts) if parts else np.empty(0, np.int64)
        return meta.get("generation"), info, C, lists

    def codes_by_id(self) -> dict:
        """{item id: packed code (a row of load_codes)} of every coded item, one snapshot."""
        ids, codes = self.load_codes()
        return dict(zip(ids.tolist(), codes))

    def info(self) -> dict:
        with self._read() as v:
            meta = v._read_meta()
            counts = {
                "items": v._item_count(),
                "staging": v.txn.stat(v._db["staging"])["entries"],
                "coded": v._coded_count(),
                "segments": v.txn.stat(v._db["codes"])["entries"],
                "item_segments": v.txn.stat(v._db["itemsegs"])["entries"],
            }
        files = [self.path / "data.mdb", self.path / "lock.mdb"]
        data = files[0].stat().st_size if files[0].exists() else 0
        return {
            "path": str(self.path),
            **counts,
            "schema": meta.get("schema"),
            "code_bytes": meta.get("code_bytes"),
            "codec_id": meta.get("codec_id"),
            "model_id": meta.get("model_id"),
            "generation": meta.get("generation"),
            "created": meta.get("created"),
            "bytes_on_disk": sum(f.stat().st_size for f in files if f.exists()),
            "bytes_per_item": round(data / counts["items"], 1) if counts["items"] else None,
            "map_size": self._env.info()["map_size"],
        }

    def verify(self, structure: bool = True) -> list[str]:
        """Every problem found, one line each; [] means the store is sound.

        With structure=True and a writable Store (which holds writer.lock, so the file is at
        rest) the LMDB file's pages are first checked by py-lmdb's pure-Python walker: LMDB
        itself trusts its pages and may abort the process on some damaged ones, so a store
        whose pages are damaged is reported without being read through LMDB. Then the
        databases are checked against each other (see the module docstring's invariant)."""
        if structure and not self.readonly:
            try:
                from lmdb import verify as lmdb_verify  # py-lmdb >= 3.0
            except ImportError:
                lmdb_verify = None
            if lmdb_verify is not None:
                try:
                    found = lmdb_verify.verify(str(self.path))
                except (lmdb_verify.VerifyError, OSError) as e:
                    found = [str(e)]
                if found:
                    return [f"data.mdb: {_one_line(p)}" for p in found]
        problems: list[str] = []
        with self._read() as v:
            txn, db = v.txn, v._db
            meta = v._read_meta()
            items: set[int] = set()
            paths: dict[bytes, int] = {}
            keys = [bytes(k) for k in txn.cursor(db=db["itemsegs"]).iternext(values=False)]
            for n_seg, key in enumerate(keys):
                first = int.from_bytes(key, "big")
                limit = int.from_bytes(keys[n_seg + 1], "big") if n_seg + 1 < len(keys) else meta.get("next_id", 0)
                try:
                    cols = _decode_segment(txn.get(key, db=db["itemsegs"]))
                except _Corrupt as e:
                    problems.append(f"item segment {first}: {e}")
                    continue
                ids = cols.ids.tolist()
                if not ids or ids[0] < first or ids[-1] >= limit:
                    problems.append(f"item segment {first}: ids {ids[:1]}..{ids[-1:]} outside [{first}, {limit})")
                for id_, raw, h in zip(ids, cols.paths, cols.hashes):
                    items.add(id_)
                    if not segments.fs_bytes_ok(raw):
                        problems.append(f"item {id_}: stored path {raw!r} is not a valid file system path")
                    elif raw in paths:
                        problems.append(f"item {id_}: path {os.fsdecode(raw)!r} is also item {paths[raw]}")
                    else:
                        paths[raw] = id_
                    if not h or len(h.encode("utf-8", "surrogatepass")) > _MAX_HASH_BYTES:
                        problems.append(f"item {id_}: bad content hash {h!r}")
            coded: dict[int, int] = {}
            for k, raw in txn.cursor(db=db["codes"]):
                seg = int.from_bytes(k, "big")
                try:
                    ids, codes = _unpack_segment(raw)
                except _Corrupt as e:
                    problems.append(f"segment {seg}: {e}")
                    continue
                if codes.shape[1] != meta.get("code_bytes"):
                    problems.append(
                        f"segment {seg}: code width {codes.shape[1]} != code_bytes {meta.get('code_bytes')}"
                    )
                if seg >= meta.get("next_segment", 0):
                    problems.append(f"segment {seg} >= next_segment {meta.get('next_segment')}")
                for i in ids.tolist():
                    if i in coded:
                        problems.append(f"item {i} has codes in segments {coded[i]} and {seg}")
                    coded[i] = seg
            staged = set()
            for k, raw in txn.cursor(db=db["staging"]):
                staged.add(int.from_bytes(k, "big"))
                if len(raw) != 2 * (meta.get("dim") or 0):
                    problems.append(
                        f"staging row {int.from_bytes(k, 'big')}: {len(raw)} bytes for dim {meta.get('dim')}"
                    )
            for id_ in items:
                if (id_ in coded) + (id_ in staged) != 1:
                    problems.append(
                        f"item {id_}: {'both a code and' if id_ in coded else 'neither a code nor'} a staging row"
                    )
            problems += [f"code for missing item {i}" for i in sorted(set(coded) - set(items))]
            problems += [f"staging row for missing item {i}" for i in sorted(staged - set(items))]
            if db["recode"] is not None:
                pending = meta.get("pending_codec")
                recoded = set()
                for k, raw in txn.cursor(db=db["recode"]):
                    recoded.add(int.from_bytes(k, "big"))
                    if not pending or len(raw) != pending["code_bytes"]:
                        problems.append(
                            f"recode row {int.from_bytes(k, 'big')}: {len(raw)} bytes, pending codec {pending}"
                        )
                problems += [f"recode row for missing item {i}" for i in sorted(recoded - set(items))]
            if db["ivf"] is not None:
                problems += _verify_ivf(txn, db, meta)
            if bool(meta.get("pending_codec")) != (v._get(b"pending", "codec") is not None):
                problems.append("the pending codec's bytes and its meta record disagree")
            if coded and v._get(b"codec", "codec") is None:
                problems.append("codes exist but the store has no codec")
        return problems

    # -- writes -------------------------------------------------------------------------

    def write(self) -> Writer:
        """One atomic write batch; use as ``with store.write() as w:``."""
        if self.readonly:
            raise StoreError(f"{self.path} is open read-only")
        if self._writer is not None:
            raise StoreError(f"{self.path}: a write batch is already open on this store")
        self._writer = Writer(self)
        return self._writer

    def compact(self) -> None:
        """Merge all small segments into segments of up to SEGMENT_MAX items (one transaction)."""
        with self.write() as w:
            w.compact()


class Writer(_View):
    """One LMDB write transaction. Every operation is recorded (with immutable copies of its
    arguments) so that, when the map fills up, the transaction can be aborted, the map
    doubled and the batch replayed. Operations validate before they change anything, so an
    InputError leaves the batch usable; any other failure dooms the batch to abort."""

    def __init__(self, store: Store):
        self._store, self._env = store, store._env
        self._ops: list = []
        self._failed = self._closed = self._compact_requested = False
        with store._guard():
            self._begin()

    def _begin(self) -> None:
        self.txn = self._store._begin(write=True)
        self._db = self._store._shared.dbs
        self._meta = self._read_meta()
        self._meta_dirty: set[str] = set()
        self._new_codes: dict[int, bytes] = {}  # become one new segment at commit
        self._dirty_segments: dict[int, list] = {}  # segment -> [ids, codes, keep mask, crc]
        self._ivf_fill = None  # (ids, lists, every segment?): list rows to write at commit
        self._shared = self._store._shared
        self._start_generation = self._meta["generation"]
        self._first_new = self._meta["next_id"]  # ids from here on are this batch's new items
        self._rows: dict[int, segments.Row | None] = {}  # changed items (None: deleted), written at commit
        self._ix: _ItemIndex | None = None  # the process's lookups + this batch's changes
        self._loc: segments.KeyMultimap | None = None  # id -> code segment, + this batch's changes
        self._codes_touched = False  # a code segment was written or deleted

    def _index(self) -> _ItemIndex:
        if self._ix is None:
            self._ix = self._cached_item_index().overlay()
        return self._ix

    def _code_loc(self) -> segments.KeyMultimap:
        if self._loc is None:
            self._loc = self._cached_code_loc().overlay()
        return self._loc

    def get_item(self, id: int) -> Item | None:
        id = int(id)
        if id in self._rows:
            row = self._rows[id]
            return None if row is None else _item_of(row)
        return self._stored_item(id)

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    # -- replay machinery -----------------------------------------------------------------

    def _run(self, op, *args):
        if self._closed or self._failed:
            raise StoreError(
                f"{self._store.path}: this write batch is {'closed' if self._closed else 'failed and must be aborted'}"
            )
        try:
            with self._store._guard():
                while True:
                    try:
                        result = op(*args)
                        break
                    except lmdb.MapFullError:
                        self._grow_and_replay()
        except InputError:
            raise
        except BaseException:
            self._failed = True
            raise
        self._ops.append((op, args))
        return result

    def _grow_and_replay(self) -> None:
        while True:
            self.txn.abort()
            self._env.set_mapsize(self._env.info()["map_size"] * 2)
            fault_point("map_grown")
            self._begin()
            try:
                for op, args in self._ops:
                    op(*args)
                return
            except lmdb.MapFullError:
                continue

    def commit(self) -> None:
        if self._closed:
            return
        if self._failed:
            self.abort()
            raise StoreError(f"{self._store.path}: write batch failed; nothing was written")
        try:
            with self._store._guard():
                while True:
                    try:
                        if not self._ops and not self._compact_requested:
                            self.txn.abort()
                        else:
                            self._flush()
                            self.txn.commit()
                            self._publish()
                        break
                    except lmdb.MapFullError:
                        self._grow_and_replay()
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._store._writer = None

    def _publish(self) -> None:
        """After a commit: hand this batch's lookups to the process (so the next batch, and
        this process's readers, need not rebuild them), keyed by the new generation."""
        shared = self._shared
        shared.item_index = self._carried(shared.item_index, self._ix, untouched=not self._rows)
        shared.code_loc = self._carried(shared.code_loc, self._loc, untouched=not self._codes_touched)

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

    def abort(self) -> None:
        if not self._closed:
            self.txn.abort()
            self._closed = True
            self._store._writer = None

    # -- public operations -------------------------------------------------------------------

    def add_item(self, item: Item, code=None, embedding=None) -> int:
        """Store a new item with exactly one of a code or a (staging) embedding; returns its id."""
        if item.id not in (0, None):
            raise InputError(f"{item.path}: add_item takes an item without id (got {item.id})")
        if (code is None) == (embedding is None):
            raise InputError(f"{item.path}: add_item needs exactly one of code= or embedding=")
        vec = self._code_bytes(code) if code is not None else self._embedding_bytes(embedding)
        return self._run(self._add, dataclasses.replace(item, id=0), code is not None, vec)

    def update_item(self, item: Item) -> None:
        """Replace an item's metadata (e.g. a moved file's new path), keeping its code."""
        self._run(self._update, dataclasses.replace(item))

    def set_code(self, id: int, code) -> None:
        """Give an item a new code (replacing its old code or staging row)."""
        self._run(self._set_vectors, (int(id),), True, self._code_bytes(code))

    def set_codes(self, ids, codes) -> None:
        """set_code for many items: codes uint8 (n, code_bytes)."""
        codes = np.asarray(codes)
        if codes.ndim != 2 or len(codes) != len(ids):
            raise InputError(f"set_codes: codes shape {codes.shape} does not match {len(ids)} ids")
        rows = tuple(self._code_bytes(c) for c in codes)
        self._run(self._set_vectors, tuple(int(i) for i in ids), True, rows, True)

    def set_embedding(self, id: int, embedding) -> None:
        """Stage a new embedding for an item (replacing its code or staging row)."""
        self._run(self._set_vectors, (int(id),), False, self._embedding_bytes(embedding))

    def delete_item(self, id: int) -> None:
        """Remove an item: record, path and hash entries, code or staging row."""
        self._run(self._delete, int(id))

    def set_meta(self, key: str, value) -> None:
        if key in _MANAGED_META:
            raise InputError(f"meta key {key!r} is managed by the store")
        try:
            text = json.dumps(value)
        except (TypeError, ValueError) as e:
            raise InputError(f"meta {key!r}: value is not JSON ({e})") from None
        self._run(self._put_meta, key, json.loads(text))

    def set_codec(self, codec_bytes: bytes, codec_id: str, code_bytes: int) -> None:
        """Embed the codec; codes written afterwards must be code_bytes long."""
        if self._new_codes and code_bytes != self._meta["code_bytes"]:
            raise InputError("set_codec: this batch already holds codes of another width")
        self._run(self._set_codec, bytes(codec_bytes), str(codec_id), int(code_bytes))

    def set_training_queries(self, queries) -> None:
        """Record text query embeddings (n, dim) that codec training (and retraining) will use."""
        Q = np.asarray(queries, np.float32)
        if Q.ndim != 2 or not len(Q) or not np.isfinite(Q).all():
            raise InputError(f"training queries: expected a finite (n, dim) array, got {Q.shape}")
        self._run(self._set_queries, Q.astype(np.float16).tobytes(), list(Q.shape))

    def set_pending_codec(self, codec_bytes: bytes, codec_id: str, code_bytes: int) -> None:
        """Begin moving the store to another codec (a retrain): queries keep the current codec
        and codes until switch_codec(); any earlier pending codec and its recodes are dropped."""
        if not self._meta["codec_id"]:
            raise InputError(f"{self._store.path} has no codec yet: set_codec instead")
        self._run(self._set_pending, bytes(codec_bytes), str(codec_id), int(code_bytes))

    def set_recodes(self, ids, codes) -> None:
        """Codes of items under the pending codec: uint8 (n, pending code_bytes)."""
        pending = self._meta.get("pending_codec")
        if not pending:
            raise InputError(f"{self._store.path} has no pending codec: set_pending_codec first")
        codes = np.asarray(codes)
        if codes.dtype != np.uint8 or codes.shape != (len(ids), pending["code_bytes"]):
            raise InputError(
                f"set_recodes: codes {codes.dtype} {codes.shape}, expected uint8 ({len(ids)}, {pending['code_bytes']})"
            )
        self._run(self._set_recodes, tuple(int(i) for i in ids), tuple(c.tobytes() for c in codes))

    def switch_codec(self) -> None:
        """Install the pending codec with every item's recode as its code, in this batch."""
        if not self._meta.get("pending_codec"):
            raise InputError(f"{self._store.path} has no pending codec to switch to")
        self._run(self._switch)

    def discard_pending(self) -> None:
        """Drop a pending codec and its recodes (the store stays on its codec)."""
        self._run(self._discard_pending)

    def set_ivf(self, centroids, info: dict, ids, lists) -> None:
        """Install an IVF: coarse centroids (nlist, dim) float32, its meta record `info`
        ({nlist, dim, codec_id, built_on, id}) and the list of every coded item (ids, lists);
        every segment's list row is rewritten when the batch commits."""
        C = np.ascontiguousarray(centroids, np.float32)
        ids, lists = np.asarray(ids, np.uint64), np.asarray(lists, np.uint32)
        if C.ndim != 2 or C.shape != (info.get("nlist"), info.get("dim")) or len(ids) != len(lists):
            raise InputError(f"set_ivf: centroids {C.shape}, info {info}, {len(ids)} ids, {len(lists)} lists")
        if len(lists) and int(lists.max()) >= len(C):
            raise InputError(f"set_ivf: list {int(lists.max())} >= nlist {len(C)}")
        self._run(self._set_ivf, C.tobytes(), json.loads(json.dumps(info)), ids.tobytes(), lists.tobytes(), True)

    def fill_ivf(self, ids, lists) -> None:
        """List numbers of coded items whose segment has no valid list row (written at commit)."""
        self._run(
            self._set_ivf,
            None,
            None,
            np.asarray(ids, np.uint64).tobytes(),
            np.asarray(lists, np.uint32).tobytes(),
            False,
        )

    def drop_ivf(self) -> None:
        """Remove the IVF (centroids and every list row): the store is searched exhaustively."""
        self._run(self._drop_ivf)

    def compact(self) -> None:
        """Merge small segments when this batch commits."""
        self._compact_requested = True

    def meta(self) -> dict:
        return dict(self._meta)

    # -- validation (before anything changes) --------------------------------------------------

    def _code_bytes(self, code) -> bytes:
        width = self._meta["code_bytes"]
        if not width:
            raise InputError(f"{self._store.path} has no codec yet: set_codec first or stage embeddings instead")
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

    def _require(self, id: int) -> Item:
        item = self.get_item(id)
        if item is None:
            raise InputError(f"{self._store.path} has no item {id}")
        return item

    # -- operations (validate, then mutate) ------------------------------------------------------

    def _add(self, item: Item, is_code: bool, vec: bytes) -> int:
        id_ = self._meta["next_id"]
        row = _row(item, id_)
        pkey = segments.path_key(row.path)
        other = self._find_path(row.path, pkey)
        if other is not None:
            raise InputError(f"{item.path} is already in the store (item {other.id}); use update_item")
        ix = self._index()
        self._rows[id_] = row
        ix.paths.add(pkey, id_)
        ix.hashes.add(segments.hash_key(item.hash), id_)
        self._put_meta("next_id", id_ + 1)
        self._attach_vector(id_, is_code, vec)
        return id_

    def _update(self, item: Item) -> None:
        old = self._require(item.id)
        row = _row(item)
        raw, old_raw = row.path, _fs_bytes(old.path)
        ix = self._index()
        if raw != old_raw:
            other = self.item_by_path(item.path)
            if other is not None:
                raise InputError(f"{item.path} is already in the store (item {other.id})")
            ix.paths.remove(segments.path_key(old_raw), item.id)
            ix.paths.add(segments.path_key(raw), item.id)
        if item.hash != old.hash:
            ix.hashes.remove(segments.hash_key(old.hash), item.id)
            ix.hashes.add(segments.hash_key(item.hash), item.id)
        self._rows[item.id] = row

    def _set_vectors(self, ids: tuple, is_code: bool, vecs, many: bool = False) -> None:
        for id_ in ids:
            self._require(id_)
        for i, id_ in enumerate(ids):
            self._detach_vector(id_)
            self._attach_vector(id_, is_code, vecs[i] if many else vecs)

    def _delete(self, id_: int) -> None:
        item = self._require(id_)
        ix = self._index()
        ix.paths.remove(segments.path_key(_fs_bytes(item.path)), id_)
        ix.hashes.remove(segments.hash_key(item.hash), id_)
        self._rows[id_] = None
        self._detach_vector(id_)

    def _put_meta(self, key: str, value) -> None:
        self._meta[key] = value
        self._meta_dirty.add(key)

    def _set_codec(self, codec: bytes, codec_id: str, code_bytes: int) -> None:
        self.txn.put(b"codec", codec, db=self._db["codec"])
        self._put_meta("codec_id", codec_id)
        self._put_meta("code_bytes", code_bytes)

    def _set_queries(self, raw: bytes, shape: list) -> None:
        self.txn.put(b"queries", raw, db=self._db["codec"])
        self._put_meta("training_queries", shape)

    def _set_pending(self, codec: bytes, codec_id: str, code_bytes: int) -> None:
        self.txn.drop(self._db["recode"], delete=False)
        self.txn.put(b"pending", codec, db=self._db["codec"])
        self._put_meta("pending_codec", {"id": codec_id, "code_bytes": code_bytes})

    def _set_recodes(self, ids: tuple, codes: tuple) -> None:
        for id_ in ids:
            self._require(id_)
        for id_, code in zip(ids, codes):
            self.txn.put(_k(id_), code, db=self._db["recode"])

    def _switch(self) -> None:
        db = self._db
        n_recoded = self.txn.stat(db["recode"])["entries"]
        n_items = self._item_count() + sum(
            (r is not None) if id_ >= self._first_new else -(r is None) for id_, r in self._rows.items()
        )
        if n_recoded != n_items or self.txn.stat(db["staging"])["entries"]:
            raise InputError(
                f"{self._store.path}: {n_items - n_recoded} of {n_items} items have no code under the pending codec yet"
            )
        pending = self._meta["pending_codec"]
        ids, codes = [], []
        for k, code in self.txn.cursor(db=db["recode"]):
            ids.append(int.from_bytes(k, "big"))
            codes.append(bytes(code))
        self.txn.drop(db["codes"], delete=False)
        self._codes_touched = True
        if self._loc is not None:
            self._loc = segments.KeyMultimap()  # every code is rewritten below
        self.txn.drop(db["recode"], delete=False)
        self._drop_ivf()  # its lists belong to the old codes (retrain builds a new IVF)
        self._new_codes.clear()
        self._dirty_segments.clear()
        self.txn.put(b"codec", self._get(b"pending", "codec"), db=db["codec"])
        self.txn.delete(b"pending", db=db["codec"])
        self._put_meta("codec_id", pending["id"])
        self._put_meta("code_bytes", pending["code_bytes"])
        self._put_meta("pending_codec", None)
        if ids:
            self._append_segments(
                np.array(ids, np.uint64), np.frombuffer(b"".join(codes), np.uint8).reshape(len(ids), -1)
            )

    def _set_ivf(self, centroids, info, ids, lists, every: bool) -> None:
        if centroids is not None:
            self.txn.put(b"centroids", centroids, db=self._db["ivf"])
            self._put_meta("ivf", info)
        elif not self._meta.get("ivf"):
            raise InputError(f"{self._store.path} has no IVF to fill")
        self._ivf_fill = (np.frombuffer(ids, np.uint64), np.frombuffer(lists, np.uint32), every)

    def _drop_ivf(self) -> None:
        self.txn.drop(self._db["ivf"], delete=False)
        self._put_meta("ivf", None)
        self._ivf_fill = None

    def _assign(self, codes: np.ndarray) -> np.ndarray | None:
        """IVF lists of new codes from the store's assigner, or None (no IVF, no assigner)."""
        info, hook = self._meta.get("ivf"), self._store.ivf_assigner
        if not info or hook is None:
            return None
        centroids = lambda: np.frombuffer(self._get(b"centroids", "ivf"), np.float32).reshape(  # noqa: E731
            info["nlist"], info["dim"]
        )
        fn = hook(self._meta["codec_id"], info, centroids)
        return None if fn is None else np.asarray(fn(codes), np.uint32)

    def _put_segment(self, seg: int, ids: np.ndarray, codes: np.ndarray, lists: np.ndarray | None) -> None:
        self._codes_touched = True
        packed = _pack_segment(ids, codes)
        self.txn.put(_k(seg), packed, db=self._db["codes"])
        if lists is not None and self._meta.get("ivf"):
            self.txn.put(_k(seg), _pack_lists(lists, _SEG_HEAD.unpack_from(packed)[2]), db=self._db["ivf"])
        else:
            self.txn.delete(_k(seg), db=self._db["ivf"])

    def _segment_lists(self, seg: int, n: int, crc: int) -> np.ndarray | None:
        return _unpack_lists(self.txn.get(_k(seg), db=self._db["ivf"]), n, crc) if self._meta.get("ivf") else None

    def _fill_ivf_rows(self) -> None:
        ids_in, lists_in, every = self._ivf_fill
        order = np.argsort(ids_in, kind="stable")
        sorted_ids, sorted_lists = ids_in[order], lists_in[order]
        for k, raw in self.txn.cursor(db=self._db["codes"]):
            seg = int.from_bytes(k, "big")
            n, _, crc = _SEG_HEAD.unpack_from(raw)
            if not every and self._segment_lists(seg, n, crc) is not None:
                continue
            ids, _ = _unpack_segment(raw)
            pos = np.minimum(np.searchsorted(sorted_ids, ids), max(len(sorted_ids) - 1, 0))
            if len(sorted_ids) and (sorted_ids[pos] == ids).all():
                self._ivf_rows.append((bytes(k), _pack_lists(sorted_lists[pos], crc)))
            elif every:
                self._ivf_rows.append((bytes(k), None))
        for k in self.txn.cursor(db=self._db["ivf"]).iternext(values=False):
            if len(k) == 8 and self.txn.get(bytes(k), db=self._db["codes"]) is None:
                self._ivf_rows.append((bytes(k), None))  # e.g. left by a writer that knew no IVF
        for k, row in self._ivf_rows:  # written after the cursor walks
            if row is None:
                self.txn.delete(k, db=self._db["ivf"])
            else:
                self.txn.put(k, row, db=self._db["ivf"])

    def _discard_pending(self) -> None:
        self.txn.drop(self._db["recode"], delete=False)
        self.txn.delete(b"pending", db=self._db["codec"])
        self._put_meta("pending_codec", None)

    def _attach_vector(self, id_: int, is_code: bool, vec: bytes) -> None:
        if is_code:
            self._new_codes[id_] = vec
        else:
            if not self._meta["dim"]:
                self._put_meta("dim", len(vec) // 2)
            self.txn.put(_k(id_), vec, db=self._db["staging"])

    def _detach_vector(self, id_: int) -> None:
        self.txn.delete(_k(id_), db=self._db["recode"])  # its new content needs a new recode
        if self._new_codes.pop(id_, None) is not None:
            return
        if id_ >= self._first_new:  # added in this batch: its code is in _new_codes or staging
            self.txn.delete(_k(id_), db=self._db["staging"])
            return
        loc = self._code_loc()
        segs = loc.get(id_)
        if not segs:
            self.txn.delete(_k(id_), db=self._db["staging"])
            return
        seg = segs[0]
        loc.remove(id_, seg)
        entry = self._dirty_segments.get(seg)
        if entry is None:  # first touch of this segment in the batch: one read, one rewrite at commit
            raw = self._get(_k(seg), "codes")
            if raw is None:
                raise _Corrupt(f"code_loc points item {id_} to missing segment {seg}")
            ids, codes = _unpack_segment(raw)
            entry = self._dirty_segments[seg] = [ids, codes, np.ones(len(ids), bool), _SEG_HEAD.unpack_from(raw)[2]]
        hit = np.flatnonzero((entry[0] == id_) & entry[2])
        if len(hit) != 1:
            raise _Corrupt(f"segment {seg} does not hold item {id_}")
        entry[2][hit] = False

    # -- commit ---------------------------------------------------------------------------------

    def _flush(self) -> None:
        codes_db = self._db["codes"]
        for seg, (ids, codes, keep, crc) in self._dirty_segments.items():
            if keep.all():
                continue
            if keep.any():
                lists = self._segment_lists(seg, len(ids), crc)
                self._put_segment(seg, ids[keep], codes[keep], None if lists is None else lists[keep])
            else:
                self._codes_touched = True
                self.txn.delete(_k(seg), db=codes_db)
                self.txn.delete(_k(seg), db=self._db["ivf"])
        if self._new_codes:
            ids = np.fromiter(self._new_codes, np.uint64, len(self._new_codes))
            codes = np.frombuffer(b"".join(self._new_codes.values()), np.uint8).reshape(len(ids), -1)
            self._append_segments(ids, codes, self._assign(codes))
        if self._compact_requested or self.txn.stat(codes_db)["entries"] > COMPACT_AFTER:
            self._compact(force=self._compact_requested)
        self._write_items()
        if self._compact_requested:
            self._merge_item_segments()
        self._ivf_rows = []
        if self._ivf_fill is not None:
            self._fill_ivf_rows()
        self._put_meta("generation", self._meta["generation"] + 1)
        for key in self._meta_dirty:
            self.txn.put(key.encode(), json.dumps(self._meta[key]).encode(), db=self._db["meta"])

    def _write_items(self) -> None:
        """Rewrite the item segments holding this batch's changed or deleted items, and append
        its new items to the last segment (while it has room), then to new segments."""
        if not self._rows:
            return
        db = self._db["itemsegs"]
        cur = self.txn.cursor(db=db)
        # the last segment takes new items while it has room (a full one is left alone)
        last = bytes(cur.key()) if cur.last() and _seg_header(cur.value()).n < segments.ITEMSEG_MAX else None
        touched: dict[bytes, dict[int, segments.Row | None]] = {}
        for id_, row in self._rows.items():
            if id_ < self._first_new:
                key = self._segment_key(id_)
                if key is None:
                    raise _Corrupt(f"no item segment holds item {id_}")
                touched.setdefault(key, {})[id_] = row
        new = [row for id_, row in sorted(self._rows.items()) if id_ >= self._first_new and row is not None]
        if new and last is not None and last not in touched:
            touched[last] = {}
        out: dict[bytes, list[segments.Row]] = {}
        for key, changes in touched.items():
            stored = _rows_of(self._segment(key))
            if not set(changes) <= {r.id for r in stored}:
                raise _Corrupt(f"item segment {int.from_bytes(key, 'big')} lacks items it should hold")
            out[key] = [r for r in (changes.get(r.id, r) for r in stored) if r is not None]
        if new and last is not None:
            room = max(segments.ITEMSEG_MAX - len(out[last]), 0)  # deletions in this batch may add room
            out[last] += new[:room]
            new = new[room:]
        for start in range(0, len(new), segments.ITEMSEG_MAX):
            part = new[start : start + segments.ITEMSEG_MAX]
            out[_k(part[0].id)] = part
        for key, rows in out.items():
            self._put_item_segment(key, rows)

    def _put_item_segment(self, key: bytes, rows: list[segments.Row]) -> None:
        if not rows:
            self.txn.delete(key, db=self._db["itemsegs"])
            return
        try:
            packed = segments.encode(rows)
        except ValueError as e:  # _row checked every field: this is a bug, not bad input
            raise _Corrupt(f"cannot encode item segment {int.from_bytes(key, 'big')}: {e}") from None
        self.txn.put(key, packed, db=self._db["itemsegs"])

    def _merge_item_segments(self) -> None:
        """Merge runs of adjacent item segments that together fit in one (deletes shrink them)."""
        db = self._db["itemsegs"]
        heads = [(bytes(k), _seg_header(raw).n) for k, raw in self.txn.cursor(db=db)]
        runs, run, size = [], [], 0
        for key, n in heads:
            if run and size + n > segments.ITEMSEG_MAX:
                runs.append(run)
                run, size = [], 0
            run.append(key)
            size += n
        if run:
            runs.append(run)
        for run in runs:
            if len(run) > 1:
                rows = [r for key in run for r in _rows_of(self._segment(key))]
                for key in run[1:]:
                    self.txn.delete(key, db=db)
                self._put_item_segment(run[0], rows)

    def _append_segments(self, ids: np.ndarray, codes: np.ndarray, lists: np.ndarray | None = None) -> None:
        for start in range(0, len(ids), SEGMENT_MAX):
            seg = self._meta["next_segment"]
            part = slice(start, start + SEGMENT_MAX)
            self._put_segment(seg, ids[part], codes[part], None if lists is None else lists[part])
            if self._loc is not None:  # else the process's code_loc is dropped at commit
                for id_ in ids[part].tolist():
                    self._loc.add(id_, seg)
            self._put_meta("next_segment", seg + 1)

    def _compact(self, force: bool) -> None:
        width = self._meta["code_bytes"]
        small = []
        for k, raw in self.txn.cursor(db=self._db["codes"]):
            n, seg_width, _ = _SEG_HEAD.unpack_from(raw)  # header only: no copy of the body
            if n < SEGMENT_MAX // 2 and seg_width == width:
                small.append(bytes(k))
        if len(small) < 2 or (not force and len(small) <= COMPACT_AFTER):
            return
        raws = [self._get(k, "codes") for k in small]  # copies, read before writes
        parts = [_unpack_segment(raw) for raw in raws]
        lists = [
            self._segment_lists(int.from_bytes(k, "big"), len(p[0]), _SEG_HEAD.unpack_from(raw)[2])
            for k, p, raw in zip(small, parts, raws)
        ]
        for k, (ids, _) in zip(small, parts):
            self.txn.delete(k, db=self._db["codes"])
            self.txn.delete(k, db=self._db["ivf"])
            if self._loc is not None:
                for id_ in ids.tolist():
                    self._loc.remove(id_, int.from_bytes(k, "big"))
        self._append_segments(
            np.concatenate([p[0] for p in parts]),
            np.concatenate([p[1] for p in parts]),
            None if any(x is None for x in lists) else np.concatenate(lists),
        )
