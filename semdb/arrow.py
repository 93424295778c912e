"""Items as Arrow tables: the Parquet format of `semdb export` and `semdb import`.

One row per item (docs/CLI.md#export-and-import):

    id          uint64              the item's id in the exporting store; an import keeps it when
                                    it is larger than every id the target store has used
    path        string              the file's path (bytes that are not UTF-8 shown as U+FFFD)
    path_bytes  binary, nullable    the exact path bytes, set only when the name is not UTF-8
    size        uint64              bytes
    mtime       timestamp[ns, UTC]  the file's modification time
    hash        string              blake2b-128 hex digest of the file's bytes
    width       uint32, height uint32  pixels
    added       timestamp[us, UTC]  when the item entered the store
    updated     timestamp[us, UTC]  its last change
    code        fixed_size_binary   the packed code (Codec.code_bytes bytes)
    taken       timestamp[us, UTC], nullable   when the photo was taken (EXIF, else mtime);
                                    optional on import (exports of older semdb have none)
    frame_ms    int64, nullable     a video frame's time in its video (null: a photo); optional
    duration_ms int64, nullable     that video's duration; optional
    codec       string, nullable    the codec of the store's set that wrote the code (null: the
                                    store's first, codec_id below); optional
    embedding   binary, nullable    float16 embedding of a photo waiting for a codec of its own
                                    (its code is then zeros); optional

The schema metadata key b"semdb" holds JSON: format, codec_id, code_bytes, model_id and, in
exports, the codec itself (base64) so that a new store can be built from the file alone, and
"codecs": {id: base64} of the store's other codecs.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from .errors import InputError
from .store import Item

FORMAT = 1
META_KEY = b"semdb"
_COLUMNS = (
    "id",
    "path",
    "path_bytes",
    "size",
    "mtime",
    "hash",
    "width",
    "height",
    "added",
    "updated",
    "code",
    "taken",
    "frame_ms",
    "duration_ms",
    "codec",
    "embedding",
)
_OPTIONAL = {"path_bytes", "taken", "frame_ms", "duration_ms", "codec", "embedding"}  # may be null
_LATER = {"taken", "frame_ms", "duration_ms", "codec", "embedding"}  # may be missing (exports of older semdb)


def schema(code_bytes: int, meta: dict | None = None) -> pa.Schema:
    fields = [
        pa.field("id", pa.uint64(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("path_bytes", pa.binary()),
        pa.field("size", pa.uint64(), nullable=False),
        pa.field("mtime", pa.timestamp("ns", tz="UTC"), nullable=False),
        pa.field("hash", pa.string(), nullable=False),
        pa.field("width", pa.uint32(), nullable=False),
        pa.field("height", pa.uint32(), nullable=False),
        pa.field("added", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("updated", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("code", pa.binary(code_bytes), nullable=False),
        pa.field("taken", pa.timestamp("us", tz="UTC")),
        pa.field("frame_ms", pa.int64()),
        pa.field("duration_ms", pa.int64()),
        pa.field("codec", pa.string()),
        pa.field("embedding", pa.binary()),
    ]
    return pa.schema(fields, metadata={META_KEY: json.dumps(meta).encode()} if meta else None)


def make_meta(
    codec_id: str, code_bytes: int, model_id: dict | None, codec: bytes | None = None, others: dict | None = None
) -> dict:
    """`others`: {codec id: bytes} of the store's codecs but its first."""
    meta = {"format": FORMAT, "codec_id": codec_id, "code_bytes": code_bytes, "model_id": model_id}
    if codec is not None:
        meta["codec"] = base64.b64encode(codec).decode()
    if others:
        meta["codecs"] = {k: base64.b64encode(v).decode() for k, v in others.items()}
    return meta


def read_meta(sch: pa.Schema, source: str) -> dict:
    """The semdb metadata of a table or file schema; InputError if it is not a semdb export."""
    raw = (sch.metadata or {}).get(META_KEY)
    if raw is None:
        raise InputError(
            f"{source} is not a semdb export (its schema has no semdb metadata); "
            f"write it with `semdb export` or Database.to_arrow()"
        )
    try:
        meta = json.loads(raw)
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, this semdb reads format {FORMAT}")
        int(meta["code_bytes"]), str(meta["codec_id"])
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{source}: damaged semdb metadata ({e})") from None
    if meta.get("codec") is not None:
        meta["codec"] = base64.b64decode(meta["codec"])
    meta["codecs"] = {k: base64.b64decode(v) for k, v in (meta.get("codecs") or {}).items()}
    return meta


def check_columns(sch: pa.Schema, code_bytes: int, source: str) -> None:
    """InputError unless the schema has every column with a type that casts to ours."""
    want = schema(code_bytes)
    for field in want:
        if field.name in _LATER and field.name not in sch.names:
            continue
        if field.name not in sch.names:
            raise InputError(f"{source}: no {field.name!r} column (a semdb export has {', '.join(_COLUMNS)})")
        got = sch.field(field.name).type
        if got != field.type and not (field.name == "path_bytes" and pa.types.is_null(got)):
            if field.name == "code" or not _castable(got, field.type):
                raise InputError(f"{source}: column {field.name!r} is {got}, expected {field.type}")


def _castable(src: pa.DataType, dst: pa.DataType) -> bool:
    return (
        (pa.types.is_integer(src) and pa.types.is_integer(dst))
        or (pa.types.is_timestamp(src) and pa.types.is_timestamp(dst))
        or (pa.types.is_string(src) or pa.types.is_large_string(src))
        and pa.types.is_string(dst)
    )


def to_batch(
    items: list[Item], codes: np.ndarray, code_bytes: int, codec_ids: list | None = None, embeddings: list | None = None
) -> pa.RecordBatch:
    """Items and their codes (uint8 (n, code_bytes)) as one record batch of the export schema;
    `codec_ids`: each code's codec (None: the first); `embeddings`: float16 bytes of the items
    that wait staged (None for coded ones)."""
    paths = [it.path for it in items]
    exact = [os.fsencode(p) for p in paths]
    shown = [b.decode("utf-8", "replace") for b in exact]
    codes = np.ascontiguousarray(codes, np.uint8).reshape(len(items), code_bytes)
    columns = [
        pa.array([it.id for it in items], pa.uint64()),
        pa.array(shown, pa.string()),
        pa.array([None if s.encode() == b else b for s, b in zip(shown, exact)], pa.binary()),
        pa.array([it.size for it in items], pa.uint64()),
        pa.array([it.mtime_ns for it in items], pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
        pa.array([it.hash for it in items], pa.string()),
        pa.array([it.width for it in items], pa.uint32()),
        pa.array([it.height for it in items], pa.uint32()),
        _seconds([it.added for it in items]),
        _seconds([it.updated for it in items]),
        pa.FixedSizeBinaryArray.from_buffers(pa.binary(code_bytes), len(items), [None, pa.py_buffer(codes.tobytes())]),
        _seconds([it.taken for it in items]),
        pa.array([it.frame_ms for it in items], pa.int64()),
        pa.array([it.duration_ms for it in items], pa.int64()),
        pa.array(codec_ids or [None] * len(items), pa.string()),
        pa.array(embeddings or [None] * len(items), pa.binary()),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=schema(code_bytes))


def _seconds(values) -> pa.Array:
    """POSIX seconds (None: null) as a microsecond timestamp column."""
    known = [v is not None for v in values]
    us = np.round(np.array([v if v is not None else 0.0 for v in values], np.float64) * 1e6).astype(np.int64)
    return pa.array(us, pa.int64(), mask=~np.array(known, bool)).cast(pa.timestamp("us", tz="UTC"))


def to_items(batch: pa.RecordBatch | pa.Table, code_bytes: int) -> Iterator[tuple[Item, dict]]:
    """(Item with the row's id, what it stores as the writer's keywords: code= and codec=, or
    embedding= float16) for each row, in row order."""
    target = schema(code_bytes)
    cols = {}
    for field in target:
        if field.name not in batch.schema.names:  # _LATER: exports of older semdb have none
            cols[field.name] = pa.nulls(batch.num_rows, field.type)
            continue
        col = batch.column(field.name)
        cols[field.name] = col if col.type == field.type or field.name == "path_bytes" else col.cast(field.type)
    if any(cols[name].null_count for name in _COLUMNS if name not in _OPTIONAL):
        bad = [name for name in _COLUMNS if name not in _OPTIONAL and cols[name].null_count]
        raise InputError(f"column(s) {', '.join(bad)} hold nulls; every item needs them")
    ints = {name: _ints(cols[name]) for name in ("size", "mtime", "width", "height", "added", "updated")}
    ids, paths, exact = cols["id"].to_pylist(), cols["path"].to_pylist(), cols["path_bytes"].to_pylist()
    hashes, codes = cols["hash"].to_pylist(), cols["code"].to_pylist()
    taken = cols["taken"].cast(pa.int64()).to_pylist()
    frame_ms, duration_ms = cols["frame_ms"].to_pylist(), cols["duration_ms"].to_pylist()
    codec_ids, embeddings = cols["codec"].to_pylist(), cols["embedding"].to_pylist()
    for i in range(len(paths)):
        path = os.fsdecode(exact[i]) if exact[i] is not None else paths[i]
        yield (
            Item(
                ids[i],
                path,
                int(ints["size"][i]),
                int(ints["mtime"][i]),
                hashes[i],
                int(ints["width"][i]),
                int(ints["height"][i]),
                ints["added"][i] / 1e6,
                ints["updated"][i] / 1e6,
                None if taken[i] is None else taken[i] / 1e6,
                frame_ms[i],
                duration_ms[i],
            ),
            {"code": codes[i], "codec": codec_ids[i]}
            if embeddings[i] is None
            else {"embedding": np.frombuffer(embeddings[i], np.float16)},
        )


def _ints(col) -> np.ndarray:
    if pa.types.is_timestamp(col.type):
        col = col.cast(pa.int64())
    return np.asarray(col.to_numpy(zero_copy_only=False))
