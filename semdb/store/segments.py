"""Columnar item segments (store schema 2) and the in-memory lookups built from them.

An item segment is one LMDB value holding the metadata of up to ITEMSEG_MAX items with
ascending ids. Its layout:

    header <BIII: format version, n, length of the uncompressed body, crc32 of the stored body
    body (zlib): columns, each for all n items in id order
        ids         <u8, first id then deltas (consecutive ids compress to almost nothing)
        hash kind   u1: 1 = the hash is 32 lowercase hex chars, stored as 16 bytes; 0 = raw utf-8
        hash bytes  16 bytes per kind-1 item
        raw hashes  <u2 length per kind-0 item, then their bytes (imports may carry other hashes)
        size <u8, mtime_ns <i8, width <u4, height <u4, added <f8, updated <f8, taken <f8 (NaN:
                    unknown): numeric columns are stored byte-transposed (all first bytes, then
                    all second bytes, ...) so that the high bytes, nearly equal across a
                    folder or a batch, sit together and compress away
        path length <u4 per item, then the paths' file system bytes (os.fsencode: exact bytes)
        format 2 only: frame_ms <i8, duration_ms <i8 (byte-transposed; -1: not a video frame),
                    written only by segments that hold a video frame, so a store without
                    videos stays readable by a semdb that predates them

Paths of one folder share prefixes and the times of one batch are equal, so zlib takes a
typical item (43-byte path, hex hash) to ~36 bytes. The crc covers the stored (compressed) body:
damage is found before zlib sees it.

KeyMultimap is the sorted uint64 key -> ids structure behind the store's in-memory path,
content-hash and code-location lookups: a base of two sorted numpy arrays plus a small
overlay of a write batch's changes, merged into new arrays when the batch commits.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import zlib
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

# Items per item segment: one get_item decompresses at most this many (a larger segment
# compresses a few bytes an item better, but every hit a query reads decompresses a whole one)
ITEMSEG_MAX = 1024
_HEAD = struct.Struct("<BIII")
_VERSION = 1  # no video frames
VIDEO_FORMAT = 2  # + frame_ms, duration_ms
_HEX32 = re.compile(rb"[0-9a-f]{32}")
_NUMERIC = (
    ("size", "<u8"),
    ("mtime_ns", "<i8"),
    ("width", "<u4"),
    ("height", "<u4"),
    ("added", "<f8"),
    ("updated", "<f8"),
    ("taken", "<f8"),
)
_VIDEO_NUMERIC = (("frame_ms", "<i8"), ("duration_ms", "<i8"))  # format 2; -1: none


class Row(NamedTuple):
    """One item as a segment stores it (path: its exact file system bytes)."""

    id: int
    path: bytes
    hash: str
    size: int
    mtime_ns: int
    width: int
    height: int
    added: float
    updated: float
    taken: float | None
    frame_ms: int | None = None  # a video frame's time in its video (path: the video's)
    duration_ms: int | None = None  # that video's duration


class Header(NamedTuple):
    version: int
    n: int  # items
    length: int  # of the uncompressed body
    crc: int  # crc32 of the stored (compressed) body


class SegmentError(Exception):
    """A stored item segment that cannot be decoded (the store reports it as corruption)."""


@dataclass
class Columns:
    """One decoded item segment: numpy columns (see the module doc) plus the hash strings and
    path bytes, aligned by row."""

    ids: np.ndarray
    hashes: list
    paths: list
    size: np.ndarray
    mtime_ns: np.ndarray
    width: np.ndarray
    height: np.ndarray
    added: np.ndarray
    updated: np.ndarray
    taken: np.ndarray
    frame_ms: np.ndarray  # <i8, -1: not a video frame
    duration_ms: np.ndarray
    hash_kind: np.ndarray  # 1: hex hash, stored as the 16 bytes of hash_bin's row
    hash_bin: np.ndarray  # uint8 (number of hex hashes, 16)

    def __len__(self) -> int:
        return len(self.ids)

    def row(self, id_: int) -> int | None:
        i = int(np.searchsorted(self.ids, np.uint64(id_)))
        return i if i < len(self.ids) and int(self.ids[i]) == id_ else None


def header(raw) -> Header:
    """The segment's header, without decompressing; SegmentError if truncated."""
    try:
        return Header._make(_HEAD.unpack_from(raw))
    except struct.error:
        raise SegmentError("truncated item segment") from None


def _transpose(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a.view(np.uint8).reshape(len(a), a.itemsize).T).tobytes()


def _untranspose(raw: bytes, n: int, dtype: str) -> np.ndarray:
    width = np.dtype(dtype).itemsize
    return np.frombuffer(raw, np.uint8).reshape(width, n).T.copy().view(dtype).reshape(n)


def encode(rows: list[Row]) -> bytes:
    """Rows in ascending id order as one segment; ValueError for out-of-range fields."""
    n = len(rows)
    ids = np.array([r.id for r in rows], np.uint64)
    if n > 1 and not (np.diff(ids.astype(np.int64)) > 0).all():
        raise ValueError("item segment ids must ascend")
    hashes = [r.hash.encode("utf-8") for r in rows]
    kind = np.array([len(h) == 32 and _HEX32.fullmatch(h) is not None for h in hashes], np.uint8)
    raw_hashes = [h for h, k in zip(hashes, kind) if not k]
    paths = [r.path for r in rows]
    deltas = ids.copy()
    deltas[1:] -= ids[:-1]
    parts = [
        deltas.astype("<u8").tobytes(),
        kind.tobytes(),
        b"".join(bytes.fromhex(h.decode()) for h, k in zip(hashes, kind) if k),
        np.array([len(h) for h in raw_hashes], "<u2").tobytes(),
        b"".join(raw_hashes),
    ]
    for name, dtype in _NUMERIC:
        values = [getattr(r, name) for r in rows]
        if name == "taken":
            values = [np.nan if v is None else v for v in values]
        try:
            column = np.array(values, dtype)
        except OverflowError:  # numpy refuses integers outside the column's type
            raise ValueError(f"{name} out of range") from None
        parts.append(_transpose(column))
    parts += [np.array([len(p) for p in paths], "<u4").tobytes(), b"".join(paths)]
    video = any(r.frame_ms is not None for r in rows)
    for name, dtype in _VIDEO_NUMERIC if video else ():
        try:
            column = np.array([-1 if getattr(r, name) is None else getattr(r, name) for r in rows], dtype)
        except OverflowError:
            raise ValueError(f"{name} out of range") from None
        parts.append(_transpose(column))
    body = b"".join(parts)
    packed = zlib.compress(body, 6)
    return _HEAD.pack(VIDEO_FORMAT if video else _VERSION, n, len(body), zlib.crc32(packed)) + packed


def _columns(raw) -> tuple[bytes, int, dict]:
    """The checked, decompressed body, n, and {column: (start, end)} in the body."""
    version, n, length, crc = header(raw)
    packed = memoryview(raw)[_HEAD.size :]
    if version not in (_VERSION, VIDEO_FORMAT) or zlib.crc32(packed) != crc:
        raise SegmentError(f"item segment (format {version}) fails its checksum test")
    try:
        body = zlib.decompress(packed)
    except zlib.error as e:
        raise SegmentError(f"item segment does not decompress ({e})") from None
    if len(body) != length:
        raise SegmentError("item segment has the wrong length")
    spans: dict[str, tuple[int, int]] = {}
    pos = 0

    def take(name: str, size: int) -> bytes:
        nonlocal pos
        if pos + size > len(body):
            raise SegmentError("item segment is shorter than its columns")
        spans[name] = (pos, pos + size)
        pos += size
        return body[pos - size : pos]

    take("ids", 8 * n)
    n_hex = int(np.frombuffer(take("kind", n), np.uint8).sum())
    take("hexes", 16 * n_hex)
    take("raw_hashes", int(np.frombuffer(take("raw_lens", 2 * (n - n_hex)), "<u2").sum(dtype=np.int64)))
    for name, dtype in _NUMERIC:
        take(name, np.dtype(dtype).itemsize * n)
    take("paths", int(np.frombuffer(take("path_lens", 4 * n), "<u4").sum(dtype=np.int64)))
    for name, dtype in _VIDEO_NUMERIC if version == VIDEO_FORMAT else ():
        take(name, np.dtype(dtype).itemsize * n)
    if pos != len(body):
        raise SegmentError("item segment is longer than its columns")
    return body, n, spans


def decode(raw) -> Columns:
    body, n, spans = _columns(raw)
    col = {name: body[a:b] for name, (a, b) in spans.items()}
    ids = np.cumsum(np.frombuffer(col["ids"], "<u8"), dtype=np.uint64)
    kind = np.frombuffer(col["kind"], np.uint8)
    text = col["hexes"].hex()  # one call for all hex hashes, then cut: per-row hex() is the slow part
    hexed = [text[i : i + 32] for i in range(0, len(text), 32)]
    if len(hexed) == n:
        hashes = hexed
    else:
        ends = np.cumsum(np.frombuffer(col["raw_lens"], "<u2"), dtype=np.int64).tolist()
        try:
            raws = iter([col["raw_hashes"][s:e].decode("utf-8") for s, e in zip([0] + ends[:-1], ends)])
        except UnicodeDecodeError:
            raise SegmentError("item segment holds a hash that is not utf-8") from None
        hexed_it = iter(hexed)
        hashes = [next(hexed_it) if k else next(raws) for k in kind.tolist()]
    numeric = {name: _untranspose(col[name], n, dtype) for name, dtype in _NUMERIC}
    for name, dtype in _VIDEO_NUMERIC:
        numeric[name] = _untranspose(col[name], n, dtype) if name in col else np.full(n, -1, np.int64)
    ends = np.cumsum(np.frombuffer(col["path_lens"], "<u4"), dtype=np.int64).tolist()
    paths = [col["paths"][s:e] for s, e in zip([0] + ends[:-1], ends)]
    return Columns(
        ids=ids,
        hashes=hashes,
        paths=paths,
        **numeric,
        hash_kind=kind,
        hash_bin=np.frombuffer(col["hexes"], np.uint8).reshape(len(hexed), 16),
    )


def decode_row(raw, id_: int) -> Row | None:
    """The row of item `id_`, or None: decompresses the segment but builds only that row
    (what get_item of a query's hits needs)."""
    body, n, spans = _columns(raw)
    ids = np.cumsum(np.frombuffer(body, "<u8", n, spans["ids"][0]), dtype=np.uint64)
    i = int(np.searchsorted(ids, np.uint64(id_)))
    if i == n or int(ids[i]) != id_:
        return None
    kind = np.frombuffer(body, np.uint8, n, spans["kind"][0])
    before = int(kind[:i].sum())  # hex hashes before row i
    if kind[i]:
        at = spans["hexes"][0] + 16 * before
        hash_ = body[at : at + 16].hex()
    else:
        lens = np.frombuffer(body, "<u2", n - int(kind.sum()), spans["raw_lens"][0])
        j = i - before
        at = spans["raw_hashes"][0] + int(lens[:j].sum(dtype=np.int64))
        try:
            hash_ = body[at : at + int(lens[j])].decode("utf-8")
        except UnicodeDecodeError:
            raise SegmentError("item segment holds a hash that is not utf-8") from None
    values = {}
    for name, dtype in _NUMERIC + _VIDEO_NUMERIC:  # byte-transposed: row i's bytes are every n-th from i
        if name in spans:
            start, end = spans[name]
            values[name] = np.frombuffer(body[start + i : end : n], dtype)[0].item()
    lens = np.frombuffer(body, "<u4", n, spans["path_lens"][0])
    at = spans["paths"][0] + int(lens[:i].sum(dtype=np.int64))
    taken = values["taken"]
    values["taken"] = None if taken != taken else taken
    for name, _ in _VIDEO_NUMERIC:
        values[name] = None if values.get(name, -1) < 0 else values[name]
    return Row(id_, body[at : at + int(lens[i])], hash_, **values)


# -- in-memory lookups -----------------------------------------------------------------------


def path_key(raw: bytes) -> int:
    """64-bit key of a path's bytes (a hit is checked against the stored path)."""
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little")


def hash_key(h: str) -> int:
    """64-bit key of a content hash: its first 8 bytes if hex (already uniform), else blake2b."""
    raw = h.encode("utf-8", "surrogatepass")
    if len(raw) == 32 and _HEX32.fullmatch(raw):
        return int(raw[:16], 16)
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little")


def path_keys(cols: Columns) -> np.ndarray:
    """path_key of every row (what building the in-memory index spends its time on)."""
    blake = hashlib.blake2b
    return np.frombuffer(b"".join([blake(p, digest_size=8).digest() for p in cols.paths]), "<u8", len(cols))


def hash_keys(cols: Columns) -> np.ndarray:
    """hash_key of every row: hex hashes straight from their stored bytes."""
    keys = np.empty(len(cols), np.uint64)
    hexed = cols.hash_kind == 1
    keys[hexed] = cols.hash_bin[:, :8].copy().view(">u8")[:, 0]
    keys[~hexed] = [hash_key(h) for h, k in zip(cols.hashes, hexed.tolist()) if not k]
    return keys


class KeyMultimap:
    """uint64 key -> uint64 values (several values may share a key; the pairs are a set).

    `keys`/`values` are sorted by key and never modified in place (other readers may hold
    them); a writer records its changes in `added`/`removed` and `merged()` makes new arrays."""

    def __init__(self, keys: np.ndarray | None = None, values: np.ndarray | None = None):
        self.keys = np.empty(0, np.uint64) if keys is None else keys
        self.values = np.empty(0, np.uint64) if values is None else values
        self.added: dict[int, set] = {}
        self.removed: set = set()

    @classmethod
    def build(cls, keys, values) -> KeyMultimap:
        keys, values = np.asarray(keys, np.uint64), np.asarray(values, np.uint64)
        order = np.argsort(keys, kind="stable")
        return cls(keys[order], values[order])

    def overlay(self) -> KeyMultimap:
        """The same base with an empty change set (for one write batch)."""
        return KeyMultimap(self.keys, self.values)

    def get(self, key: int) -> list[int]:
        k = np.uint64(key)
        lo = self.keys.searchsorted(k)
        found = []
        if lo < len(self.keys) and self.keys[lo] == k:  # most lookups (a new path) miss: one search
            hi = self.keys.searchsorted(k, "right")
            found = [v for v in self.values[lo:hi].tolist() if (key, v) not in self.removed]
        added = self.added.get(key)
        return found + sorted(added) if added else found

    def add(self, key: int, value: int) -> None:
        if (key, value) in self.removed:
            self.removed.discard((key, value))
        else:
            self.added.setdefault(key, set()).add(value)

    def remove(self, key: int, value: int) -> None:
        got = self.added.get(key)
        if got is not None and value in got:
            got.discard(value)
            if not got:
                del self.added[key]
        else:
            self.removed.add((key, value))

    def merged(self) -> KeyMultimap:
        keys, values = self.keys, self.values
        if self.removed:
            # candidates by key and by value, vectorised (a key may hold many values: content
            # hashes of copies, code segments), then each candidate checked as a pair
            rk = np.fromiter((k for k, _ in self.removed), np.uint64, len(self.removed))
            rv = np.fromiter((v for _, v in self.removed), np.uint64, len(self.removed))
            cand = np.flatnonzero(np.isin(keys, rk) & np.isin(values, rv))
            pairs = zip(keys[cand].tolist(), values[cand].tolist())
            drop = cand[np.fromiter((p in self.removed for p in pairs), bool, len(cand))]
            keys, values = np.delete(keys, drop), np.delete(values, drop)
        if self.added:
            pairs = sorted((k, v) for k, vs in self.added.items() for v in vs)
            add_k = np.array([p[0] for p in pairs], np.uint64)
            add_v = np.array([p[1] for p in pairs], np.uint64)
            at = np.searchsorted(keys, add_k, "right")
            keys, values = np.insert(keys, at, add_k), np.insert(values, at, add_v)
        return KeyMultimap(keys, values)


def fs_bytes_ok(raw: bytes) -> bool:
    return bool(raw) and b"\0" not in raw and os.fsencode(os.fsdecode(raw)) == raw
