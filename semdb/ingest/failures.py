"""Files that could not be decoded, remembered in the store so that a re-ingest neither decodes
nor lists them again while they are unchanged (same size and mtime): it counts them as
`failed_before`; `retry_failed` (`semdb ingest --retry-failed`) tries them again, e.g. after
raising --max-megapixels. A record is written in the transaction of the batch that failed, and
dropped once its file is gone, changed or stored."""

from __future__ import annotations

import os

from ..store import Store, Writer
from .records import FileState

FAILED_KEY = "failed_files"  # store meta: {path: [size, mtime_ns, reason]}


def remembered(store: Store) -> dict[str, list]:
    return store.meta().get(FAILED_KEY) or {}


def failed_before(record: list | None, st: os.stat_result) -> bool:
    """The file `st` is the one that failed (`record`, or None: none did)."""
    return record is not None and (record[0], record[1]) == (st.st_size, st.st_mtime_ns)


def remember(w: Writer, failed: list[tuple[FileState, str]]) -> None:
    """Record `failed` (file, reason) in the batch `w`."""
    records = dict(w.meta().get(FAILED_KEY) or {})
    for file, reason in failed:
        records[file.path] = [file.size, file.mtime_ns, reason]
    w.set_meta(FAILED_KEY, records)


def forget_settled(store: Store) -> None:
    """Drop the records whose file is gone or changed, or now stored (a retry that worked)."""
    records = remembered(store)
    keep = {}
    for path, record in records.items():
        try:
            st = os.stat(path)
        except OSError:
            continue
        item = store.item_by_path(path)
        if failed_before(record, st) and not (item and (item.size, item.mtime_ns) == (st.st_size, st.st_mtime_ns)):
            keep[path] = record
    if keep != records:
        with store.write() as w:
            w.set_meta(FAILED_KEY, keep)
