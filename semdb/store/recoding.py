"""A retrain's rows: the pending codec (db `codec` key b"pending", meta pending_codec = {id,
code_bytes}) and the recode rows (db `recode`: id -> the item's code under the pending codec).

Queries never read them: until the switch every item is searched with the current codec and
codes. The switch moves every recode row into code segments and installs the pending codec in
one transaction. Any change to an item (its code, staging row, or its deletion) drops its
recode row, so a resumed retrain encodes it again.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .format import int_key, key_int


def set_pending(view, put_meta, codec: bytes, codec_id: str, code_bytes: int) -> None:
    """Begin moving to `codec`; any earlier pending codec's recodes are dropped."""
    view.txn.drop(view.dbs["recode"], delete=False)
    view.txn.put(b"pending", codec, db=view.dbs["codec"])
    put_meta("pending_codec", {"id": codec_id, "code_bytes": code_bytes})


def put_recodes(view, ids: tuple, codes: tuple) -> None:
    for id_, code in zip(ids, codes):
        view.txn.put(int_key(id_), code, db=view.dbs["recode"])


def drop_recode(view, id_: int) -> None:
    """An item changed: its recode (if any) no longer describes it."""
    view.txn.delete(int_key(id_), db=view.dbs["recode"])


def discard(view, put_meta) -> None:
    view.txn.drop(view.dbs["recode"], delete=False)
    view.txn.delete(b"pending", db=view.dbs["codec"])
    put_meta("pending_codec", None)


def take_for_switch(view, meta: dict, put_meta, n_items: int, path) -> tuple[np.ndarray, np.ndarray]:
    """Install the pending codec as the store's and return every item's recode (ids, codes),
    the recode rows and any staged rows (photos that waited for a codec of their own) dropped;
    InputError (nothing changed) unless all `n_items` have a recode."""
    n_recoded = view.txn.stat(view.dbs["recode"])["entries"]
    if n_recoded != n_items:
        raise InputError(f"{path}: {n_items - n_recoded} of {n_items} items have no code under the pending codec yet")
    view.txn.drop(view.dbs["staging"], delete=False)
    pending = meta["pending_codec"]
    ids, codes = [], []
    for k, code in view.txn.cursor(db=view.dbs["recode"]):
        ids.append(key_int(k))
        codes.append(bytes(code))
    view.txn.drop(view.dbs["recode"], delete=False)
    view.txn.put(b"codec", view.get(b"pending", "codec"), db=view.dbs["codec"])
    view.txn.delete(b"pending", db=view.dbs["codec"])
    put_meta("codec_id", pending["id"])
    put_meta("code_bytes", pending["code_bytes"])
    put_meta("pending_codec", None)
    width = pending["code_bytes"]
    return np.array(ids, np.uint64), np.frombuffer(b"".join(codes), np.uint8).reshape(len(ids), width)


def recoded_ids(view) -> np.ndarray:
    """Ids (uint64, ascending) that already have a code under the pending codec."""
    if view.dbs["recode"] is None:  # a read-only open of a store from before the recode db
        return np.empty(0, np.uint64)
    return np.array([key_int(k) for k in view.txn.cursor(db=view.dbs["recode"]).iternext(values=False)], np.uint64)


def verify_recodes(view, meta: dict, items: set[int]) -> list[str]:
    """Recode rows only while a pending codec exists, of its width, for stored items; the
    pending codec's bytes and meta record agree."""
    problems = []
    if view.dbs["recode"] is not None:
        pending = meta.get("pending_codec")
        recoded = set()
        for k, raw in view.txn.cursor(db=view.dbs["recode"]):
            recoded.add(key_int(k))
            if not pending or len(raw) != pending["code_bytes"]:
                problems.append(f"recode row {key_int(k)}: {len(raw)} bytes, pending codec {pending}")
        problems += [f"recode row for missing item {i}" for i in sorted(recoded - items)]
    if bool(meta.get("pending_codec")) != (view.get(b"pending", "codec") is not None):
        problems.append("the pending codec's bytes and its meta record disagree")
    return problems
