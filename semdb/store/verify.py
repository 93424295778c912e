"""`Store.verify`: every problem of a store, one line each.

The invariant checked: every item has exactly one of a code or a staging row; item segments
decode, their ids lie in [key, next key) and below next_id, no (path, frame time) is stored twice; code
segments decode, have the store's code width and numbers below next_segment, and no item has
two codes; staging, recode and IVF rows exist only for what they describe (recoding.py,
ivf_rows.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from . import segments
from .format import (
    MAX_HASH_BYTES,
    CorruptValue,
    codec_key,
    codec_slots,
    decode_item_segment,
    key_int,
    segment_number,
    segment_slot,
    unpack_code_segment,
)
from .ivf_rows import verify_rows
from .opening import one_line
from .recoding import verify_recodes


def check_pages(path: Path) -> list[str]:
    """The LMDB file's pages, checked by py-lmdb's pure-Python walker without reading them
    through LMDB (which trusts its pages and may abort the process on some damaged ones).
    Only for a file at rest (its writer.lock held). [] also when py-lmdb has no walker."""
    try:
        from lmdb import verify as lmdb_verify  # noqa: PLC0415  (py-lmdb >= 3.0 only; optional)
    except ImportError:
        return []
    try:
        found = lmdb_verify.verify(str(path))
    except (lmdb_verify.VerifyError, OSError) as e:
        found = [str(e)]
    return [f"data.mdb: {one_line(p)}" for p in found]


def check_databases(view) -> list[str]:
    """The databases of one read snapshot checked against each other."""
    problems: list[str] = []
    meta = view.read_meta()
    items, item_problems = _items(view, meta)
    problems += item_problems
    coded, code_problems = _codes(view, meta)
    problems += code_problems
    staged = set()
    for k, raw in view.txn.cursor(db=view.dbs["staging"]):
        staged.add(key_int(k))
        if len(raw) != 2 * (meta.get("dim") or 0):
            problems.append(f"staging row {key_int(k)}: {len(raw)} bytes for dim {meta.get('dim')}")
    for id_ in items:
        if (id_ in coded) + (id_ in staged) != 1:
            problems.append(f"item {id_}: {'both a code and' if id_ in coded else 'neither a code nor'} a staging row")
    problems += [f"code for missing item {i}" for i in sorted(set(coded) - items)]
    problems += [f"staging row for missing item {i}" for i in sorted(staged - items)]
    problems += verify_recodes(view, meta, items)
    if view.dbs["ivf"] is not None:
        problems += verify_rows(view, meta)
    if coded and view.get(b"codec", "codec") is None:
        problems.append("codes exist but the store has no codec")
    return problems


def _items(view, meta: dict) -> tuple[set[int], list[str]]:
    txn, db = view.txn, view.dbs["itemsegs"]
    items: set[int] = set()
    paths: dict[tuple[bytes, int], int] = {}  # (path, frame_ms): a video's frames share its path
    problems = []
    keys = [bytes(k) for k in txn.cursor(db=db).iternext(values=False)]
    for n_seg, key in enumerate(keys):
        first = key_int(key)
        limit = key_int(keys[n_seg + 1]) if n_seg + 1 < len(keys) else meta.get("next_id", 0)
        try:
            cols = decode_item_segment(txn.get(key, db=db))
        except CorruptValue as e:
            problems.append(f"item segment {first}: {e}")
            continue
        ids = cols.ids.tolist()
        if not ids or ids[0] < first or ids[-1] >= limit:
            problems.append(f"item segment {first}: ids {ids[:1]}..{ids[-1:]} outside [{first}, {limit})")
        for id_, raw, h, frame_ms in zip(ids, cols.paths, cols.hashes, cols.frame_ms.tolist()):
            items.add(id_)
            if not segments.fs_bytes_ok(raw):
                problems.append(f"item {id_}: stored path {raw!r} is not a valid file system path")
            elif (raw, frame_ms) in paths:
                problems.append(f"item {id_}: path {os.fsdecode(raw)!r} is also item {paths[raw, frame_ms]}")
            else:
                paths[raw, frame_ms] = id_
            if not h or len(h.encode("utf-8", "surrogatepass")) > MAX_HASH_BYTES:
                problems.append(f"item {id_}: bad content hash {h!r}")
    return items, problems


def _codes(view, meta: dict) -> tuple[dict[int, int], list[str]]:
    coded: dict[int, int] = {}
    problems = []
    slots = codec_slots(meta)
    for slot, codec_id in enumerate(slots):
        if codec_id is not None and view.get(codec_key(slot), "codec") is None:
            problems.append(f"codec {codec_id} (slot {slot}) has no bytes")
    for k, raw in view.txn.cursor(db=view.dbs["codes"]):
        seg = key_int(k)
        try:
            ids, codes = unpack_code_segment(raw)
        except CorruptValue as e:
            problems.append(f"segment {seg}: {e}")
            continue
        if codes.shape[1] != meta.get("code_bytes"):
            problems.append(f"segment {seg}: code width {codes.shape[1]} != code_bytes {meta.get('code_bytes')}")
        if segment_number(seg) >= meta.get("next_segment", 0):
            problems.append(f"segment {seg} >= next_segment {meta.get('next_segment')}")
        slot = segment_slot(seg)
        if slot >= len(slots) or slots[slot] is None:
            problems.append(f"segment {seg}: codes of codec slot {slot}, which the store's codec set does not hold")
        for i in ids.tolist():
            if i in coded:
                problems.append(f"item {i} has codes in segments {coded[i]} and {seg}")
            coded[i] = seg
    return coded, problems
