"""The on-disk format of a store: database names, keys, the item record, code segments and
IVF list rows, and the item segment rows (semdb/store/segments.py holds the item segment codec).
docs/notes/STORE-FORMAT.md describes the layout; this module is its one implementation."""

from __future__ import annotations

import os
import struct
import time
import zlib
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from . import segments

SCHEMA_VERSION = 2  # 2: columnar item segments; 1: items/paths/hashes/code_loc (migrated on open)
DBS = ("meta", "codec", "itemsegs", "codes", "staging", "recode", "ivf", "docs")
V1_DBS = ("items", "paths", "hashes", "code_loc")  # schema 1's item databases: dropped by the migration
LATER_DBS = {"recode", "ivf", "docs"}  # added after schema 1 was released: created on the first writable open
MAX_DBS = len(DBS) + len(V1_DBS) + 2
MANAGED_META = {
    "schema",
    "created",
    "generation",
    "next_id",
    "next_segment",
    "code_bytes",
    "codec_id",
    "codec_set",
    "dim",
    "pending_codec",
    "training_queries",
    "ivf",
    "reclaim",
}  # only the store itself changes these
CODE_SEGMENT_HEAD = struct.Struct("<QII")  # n, code_bytes, crc32 of the body
# A code segment's key is (codec slot << SLOT_SHIFT) | its number: slot 0 is the store's first
# codec (a store of one codec has only slot-0 keys, as before codec sets existed), slot s > 0 the
# codec meta["codec_set"][s]. Cursors then walk each codec's segments together, in slot order.
SLOT_SHIFT = 56
MAX_CODECS = 1 << (64 - SLOT_SHIFT)
# The IVF over the codes of the codec in each slot: its meta record's key -> the slot ("ivf": slot 0, as
# before codec sets existed; its centroids at b"centroids", slot s's at b"centroids/s")
IVF_META_KEYS = {"ivf": 0, **{f"ivf/{slot}": slot for slot in range(1, MAX_CODECS)}}
MANAGED_META |= set(IVF_META_KEYS)
LIST_ROW_HEAD = struct.Struct("<QI")  # n, crc32 of the code segment's body
ITEM_HEADS = {
    1: struct.Struct("<BQQqIIddH"),  # records written before the date taken existed
    2: struct.Struct("<BQQqIIdddH"),
}  # + taken (NaN: not known)
ITEM_VERSION = 2
MAX_HASH_BYTES = 400  # schema 1 kept hashes as LMDB keys (511-byte limit); kept for old readers


class CorruptValue(Exception):
    """A stored value that cannot be decoded; the store turns it into a StoreError naming itself."""


def int_key(n: int) -> bytes:
    """An id or a segment number as an LMDB key: 8 bytes big-endian, so cursors walk in order."""
    return int(n).to_bytes(8, "big")


def key_int(key) -> int:
    return int.from_bytes(key, "big")


def segment_key(slot: int, number: int) -> int:
    """The key number of code segment `number` of the codec in `slot`."""
    return (int(slot) << SLOT_SHIFT) | int(number)


def segment_slot(key: int) -> int:
    return int(key) >> SLOT_SHIFT


def segment_number(key: int) -> int:
    return int(key) & ((1 << SLOT_SHIFT) - 1)


def codec_key(slot: int) -> bytes:
    """Where the codec of `slot` keeps its bytes in db `codec` (slot 0: b"codec", as always)."""
    return b"codec" if slot == 0 else b"codec/%d" % slot


def ivf_meta_key(slot: int) -> str:
    """The meta key of the IVF over the codes of the codec in `slot` (slot 0: "ivf", as always)."""
    return "ivf" if slot == 0 else f"ivf/{slot}"


def centroids_key(slot: int) -> bytes:
    """Where that IVF keeps its coarse centroids in db `ivf` (slot 0: b"centroids", as always)."""
    return b"centroids" if slot == 0 else b"centroids/%d" % slot


def ivf_slots(meta: dict) -> dict[int, dict]:
    """{codec slot: its IVF's meta record} of every IVF the store keeps."""
    return dict(sorted((IVF_META_KEYS[k], info) for k, info in meta.items() if info and k in IVF_META_KEYS))


def codec_slots(meta: dict) -> list:
    """Codec id by slot (None: a slot freed by a dropped codec); [] before the first codec."""
    return list(meta.get("codec_set") or ([meta["codec_id"]] if meta.get("codec_id") else []))


def fs_bytes(path: str) -> bytes:
    """The file system's own bytes of `path` (surrogateescape), so non-UTF-8 names round-trip
    exactly. A str that does not survive fsencode->fsdecode cannot name a file distinctly:
    InputError."""
    try:
        raw = os.fsencode(path)
    except (UnicodeEncodeError, TypeError):
        raw = b""
    if not raw or b"\0" in raw or os.fsdecode(raw) != path:
        raise InputError(f"{path!r} is not a valid file system path")
    return raw


def hash_bytes(h: str) -> bytes:
    """A content hash's stored bytes; InputError unless it is non-empty UTF-8 of at most MAX_HASH_BYTES."""
    try:
        raw = h.encode("utf-8") if isinstance(h, str) else b""
    except UnicodeEncodeError:
        raw = b""
    if not raw or len(raw) > MAX_HASH_BYTES:
        raise InputError(f"content hash {h!r} must be a non-empty UTF-8 string of at most {MAX_HASH_BYTES} bytes")
    return raw


@dataclass
class Item:
    """One stored file's metadata, as `db.item`, `db.ls` and `db.rm` return it: `id` (0: not
    stored yet), `path`, `size` in bytes, `mtime_ns`, `hash` (blake2b-128 hex of its bytes),
    `width` and `height` in pixels, `added` and last `updated` (POSIX seconds), `taken` (EXIF
    DateTimeOriginal, else the file's mtime; POSIX seconds; None in records of an older semdb
    until the next ingest). A video frame has its video's path, size, mtime, hash and display
    size, `frame_ms` (its time) and `duration_ms` (the video's); both None for a photo."""

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
    frame_ms: int | None = None
    duration_ms: int | None = None

    def __post_init__(self):
        if isinstance(self.path, os.PathLike):
            self.path = os.fspath(self.path)

    @classmethod
    def new(
        cls, path, size, mtime_ns, hash, width, height, now: float | None = None, taken: float | None = None
    ) -> Item:
        now = time.time() if now is None else now
        return cls(0, path, size, mtime_ns, hash, width, height, now, now, taken)

    @classmethod
    def from_bytes(cls, raw) -> Item:
        raw = bytes(raw)
        try:
            head = ITEM_HEADS.get(raw[0] if raw else 0)
            if head is None:
                raise ValueError(f"record version {raw[0] if raw else None}")
            version, id_, size, mtime_ns, w, h, added, updated, *taken, hlen = head.unpack_from(raw)
            if len(raw) <= head.size + hlen:
                raise ValueError(f"record version {version}, length {len(raw)}")
            start = head.size
            hash_ = raw[start : start + hlen].decode("utf-8")
        except (struct.error, ValueError) as e:
            raise CorruptValue(f"bad item record: {e}") from None
        taken = taken[0] if taken and taken[0] == taken[0] else None  # NaN: not known
        return cls(id_, os.fsdecode(raw[start + hlen :]), size, mtime_ns, hash_, w, h, added, updated, taken)


# -- code segments and their IVF list rows -------------------------------------------------------


def pack_code_segment(ids: np.ndarray, codes: np.ndarray) -> bytes:
    body = np.ascontiguousarray(ids, "<u8").tobytes() + np.ascontiguousarray(codes, np.uint8).tobytes()
    return CODE_SEGMENT_HEAD.pack(len(ids), codes.shape[1], zlib.crc32(body)) + body


def code_segment_head(raw) -> tuple[int, int, int]:
    """(n, code_bytes, crc32 of the body) of a code segment, from its header only."""
    try:
        return CODE_SEGMENT_HEAD.unpack_from(raw)
    except struct.error:
        raise CorruptValue("truncated code segment") from None


def unpack_code_segment(raw) -> tuple[np.ndarray, np.ndarray]:
    """(ids, codes): views onto raw (copy them if raw is an LMDB buffer that outlives its transaction)."""
    n, width, crc = code_segment_head(raw)
    head = CODE_SEGMENT_HEAD.size
    if len(raw) != head + n * (8 + width) or zlib.crc32(memoryview(raw)[head:]) != crc:
        raise CorruptValue("code segment fails its length or checksum test")
    ids = np.frombuffer(raw, "<u8", n, head)
    codes = np.frombuffer(raw, np.uint8, n * width, head + 8 * n).reshape(n, width)
    return ids, codes


def pack_list_row(lists: np.ndarray, code_segment_crc: int) -> bytes:
    return LIST_ROW_HEAD.pack(len(lists), code_segment_crc) + np.ascontiguousarray(lists, "<u4").tobytes()


def unpack_list_row(raw, n: int, code_segment_crc: int) -> np.ndarray | None:
    """A code segment's list numbers (a copy), or None if the row is missing or not this segment's."""
    if raw is None or len(raw) < LIST_ROW_HEAD.size:
        return None
    rn, rcrc = LIST_ROW_HEAD.unpack_from(raw)
    if rn != n or rcrc != code_segment_crc or len(raw) != LIST_ROW_HEAD.size + 4 * n:
        return None
    return np.frombuffer(raw, "<u4", n, LIST_ROW_HEAD.size).copy()


# -- item segment rows ----------------------------------------------------------------------------


def item_segment_row(item: Item, id_: int | None = None) -> segments.Row:
    """An item (with id `id_` if given) as an item segment row (see semdb/store/segments.py),
    validated: InputError if a field cannot be stored, before anything changes."""
    raw = fs_bytes(item.path)
    hash_bytes(item.hash)
    try:
        ints = [int(item.size), int(item.mtime_ns), int(item.width), int(item.height)]
        floats = [float(item.added), float(item.updated), None if item.taken is None else float(item.taken)]
        frame = [None if v is None else int(v) for v in (item.frame_ms, item.duration_ms)]
    except (TypeError, ValueError, OverflowError) as e:
        raise InputError(f"{item.path}: item field is not a number ({e})") from None
    size, mtime_ns, width, height = ints
    if not (
        0 <= size < 1 << 64 and -(1 << 63) <= mtime_ns < 1 << 63 and 0 <= width < 1 << 32 and 0 <= height < 1 << 32
    ):
        raise InputError(
            f"{item.path}: item field out of range (size {ints[0]}, mtime_ns {ints[1]}, {ints[2]}x{ints[3]})"
        )
    if any(v is not None and not 0 <= v < 1 << 62 for v in frame) or (frame[0] is None) != (frame[1] is None):
        raise InputError(f"{item.path}: frame_ms {frame[0]} / duration_ms {frame[1]}: both or neither, >= 0")
    return segments.Row(int(item.id if id_ is None else id_), raw, item.hash, *ints, *floats, *frame)


def _none_if_negative(values: np.ndarray) -> list:
    return [None if v < 0 else v for v in values.tolist()]


def item_segment_rows(cols: segments.Columns) -> list[segments.Row]:
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
                _none_if_negative(cols.frame_ms),
                _none_if_negative(cols.duration_ms),
            ),
        )
    )


def item_segment_row_at(cols: segments.Columns, i: int) -> segments.Row:
    taken, frame_ms, duration_ms = float(cols.taken[i]), int(cols.frame_ms[i]), int(cols.duration_ms[i])
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
        None if frame_ms < 0 else frame_ms,
        None if duration_ms < 0 else duration_ms,
    )


def item_of(r: segments.Row) -> Item:
    return Item(
        r.id,
        os.fsdecode(r.path),
        r.size,
        r.mtime_ns,
        r.hash,
        r.width,
        r.height,
        r.added,
        r.updated,
        r.taken,
        r.frame_ms,
        r.duration_ms,
    )


def items_of(cols: segments.Columns) -> list[Item]:
    return [item_of(r) for r in item_segment_rows(cols)]


def item_segment_head(raw) -> segments.Header:
    try:
        return segments.header(raw)
    except segments.SegmentError as e:
        raise CorruptValue(str(e)) from None


def decode_item_segment(raw) -> segments.Columns:
    try:
        return segments.decode(raw)
    except segments.SegmentError as e:
        raise CorruptValue(str(e)) from None


def decode_item_segment_row(raw, id_: int) -> segments.Row | None:
    try:
        return segments.decode_row(raw, id_)
    except segments.SegmentError as e:
        raise CorruptValue(str(e)) from None
