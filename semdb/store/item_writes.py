"""Item segments a write batch rewrites at commit (db `itemsegs`: first id -> the item
segment of up to segments.ITEMSEG_MAX items with ascending, disjoint id ranges).

New ids are always larger than stored ones: a batch's new items fill the last segment, then
new ones; a changed or deleted item rewrites its segment; compaction merges adjacent segments
that together fit in one.
"""

from __future__ import annotations

from . import segments
from .format import CorruptValue, int_key, item_segment_head, item_segment_rows, key_int


def write_items(view, rows: dict[int, segments.Row | None], first_new: int) -> None:
    """Rewrite the item segments holding the batch's changed or deleted items (`rows`: id ->
    new row, None: deleted; ids from `first_new` on are new) and append its new items to the
    last segment (while it has room), then to new segments."""
    if not rows:
        return
    db = view.dbs["itemsegs"]
    cur = view.txn.cursor(db=db)
    # the last segment takes new items while it has room (a full one is left alone)
    last = bytes(cur.key()) if cur.last() and item_segment_head(cur.value()).n < segments.ITEMSEG_MAX else None
    touched: dict[bytes, dict[int, segments.Row | None]] = {}
    for id_, row in rows.items():
        if id_ < first_new:
            key = view.item_segment_key(id_)
            if key is None:
                raise CorruptValue(f"no item segment holds item {id_}")
            touched.setdefault(key, {})[id_] = row
    new = [row for id_, row in sorted(rows.items()) if id_ >= first_new and row is not None]
    if new and last is not None and last not in touched:
        touched[last] = {}
    out: dict[bytes, list[segments.Row]] = {}
    for key, changes in touched.items():
        stored = item_segment_rows(view.item_segment(key))
        if not set(changes) <= {r.id for r in stored}:
            raise CorruptValue(f"item segment {key_int(key)} lacks items it should hold")
        out[key] = [r for r in (changes.get(r.id, r) for r in stored) if r is not None]
    if new and last is not None:
        room = max(segments.ITEMSEG_MAX - len(out[last]), 0)  # deletions in this batch may add room
        out[last] += new[:room]
        new = new[room:]
    for start in range(0, len(new), segments.ITEMSEG_MAX):
        part = new[start : start + segments.ITEMSEG_MAX]
        out[int_key(part[0].id)] = part
    for key, segment_rows in out.items():
        _put_item_segment(view, key, segment_rows)


def merge_item_segments(view) -> None:
    """Merge runs of adjacent item segments that together fit in one (deletes shrink them)."""
    db = view.dbs["itemsegs"]
    heads = [(bytes(k), item_segment_head(raw).n) for k, raw in view.txn.cursor(db=db)]
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
            rows = [r for key in run for r in item_segment_rows(view.item_segment(key))]
            for key in run[1:]:
                view.txn.delete(key, db=db)
            _put_item_segment(view, run[0], rows)


def _put_item_segment(view, key: bytes, rows: list[segments.Row]) -> None:
    if not rows:
        view.txn.delete(key, db=view.dbs["itemsegs"])
        return
    try:
        packed = segments.encode(rows)
    except ValueError as e:  # item_segment_row checked every field: this is a bug, not bad input
        raise CorruptValue(f"cannot encode item segment {key_int(key)}: {e}") from None
    view.txn.put(key, packed, db=view.dbs["itemsegs"])
