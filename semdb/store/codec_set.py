"""A store's codec set: the codecs its codes were written by, each in a slot (meta `codec_set`:
codec id by slot, None for a freed slot; slot 0 is the store's first codec, meta `codec_id`, whose
bytes stay at b"codec"). Each code segment's key names its slot (format.segment_key). A store of
one codec keeps no `codec_set` key: it is written as before codec sets existed."""

from __future__ import annotations

from ..errors import InputError
from .format import MAX_CODECS, codec_key, codec_slots


def slot_of(meta: dict, codec_id: str | None, path) -> int:
    """The slot of codec `codec_id` in the set (None: the first codec, slot 0)."""
    if codec_id is None:
        return 0
    slots = codec_slots(meta)
    if codec_id not in slots:
        raise InputError(f"{path} holds no codec {codec_id}")
    return slots.index(codec_id)


def free_slot(meta: dict, codec_id: str, code_bytes: int, path) -> int:
    """The slot a new codec of the set takes; InputError (nothing changed) when it cannot join."""
    slots = codec_slots(meta)
    if codec_id in slots:
        raise InputError(f"{path} already holds codec {codec_id}")
    if int(code_bytes) != meta["code_bytes"]:
        raise InputError(f"codec {codec_id} writes {code_bytes}-byte codes; this store's are {meta['code_bytes']}")
    slot = slots.index(None) if None in slots else len(slots)
    if slot >= MAX_CODECS:
        raise InputError(f"{path} holds {MAX_CODECS} codecs already")
    return slot


def add(view, meta: dict, put_meta, codec: bytes, codec_id: str, slot: int) -> None:
    slots = codec_slots(meta)
    slots[slot : slot + 1] = [codec_id]
    view.txn.put(codec_key(slot), codec, db=view.dbs["codec"])
    put_meta("codec_set", slots)


def drop(view, meta: dict, put_meta, slot: int) -> None:
    slots = codec_slots(meta)
    slots[slot] = None
    while slots and slots[-1] is None:
        slots.pop()
    view.txn.delete(codec_key(slot), db=view.dbs["codec"])
    put_meta("codec_set", slots if len(slots) > 1 else None)


def drop_all_but_first(view, meta: dict, put_meta) -> None:
    """One codec again (a retrain's switch): the set's other codecs go (their codes are replaced)."""
    for slot, codec_id in enumerate(codec_slots(meta)):
        if slot and codec_id:
            view.txn.delete(codec_key(slot), db=view.dbs["codec"])
    if meta.get("codec_set"):
        put_meta("codec_set", None)
