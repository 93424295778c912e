"""What a store holds, listed and removed: `Database.ls`, `count` and `rm` (`semdb ls`, `semdb rm`).

A listing reads the item segments' columns only (ids, paths, dates taken), never a code, and
builds Items for the page it returns: a 1M-item store is one pass over its metadata. Newest
first means by date taken (EXIF, else the file's mtime), photos without a known date last, then
by id (the later added first). Removal is one write transaction, the one `ingest --prune` uses
(Writer.delete_items): it lands whole or not at all, also under kill -9.
"""

from __future__ import annotations

import os
from collections import Counter

import numpy as np

from .errors import InputError, display_path
from .faults import fault_point
from .search.request import Where
from .store import Item, Store


class Listing:
    """ls and count over one store. The order of the last filter asked is kept until the next
    commit, so paging through a listing scans the metadata once."""

    def __init__(self, store: Store):
        self.store = store
        self._last: tuple | None = None  # (generation, where, ids in listing order, tally)

    def ls(self, where: Where, offset: int = 0, limit: int | None = None) -> list[Item]:
        """Items matching `where`, newest first, from `offset`, at most `limit` of them."""
        offset, limit = _count_arg("offset", offset), None if limit is None else _count_arg("limit", limit)
        page = self._ordered(where)[offset : None if limit is None else offset + limit]
        return [it for it in self.store.items(page.tolist()) if it is not None]  # (a commit may remove one)

    def count(self, where: Where) -> int:
        """How many items match `where` (without a filter: the item segments' headers only)."""
        return self.store.count() if not where else len(self._ordered(where))

    def tally(self, where: Where) -> dict:
        """Of the items matching `where`: how many are photos, how many video frames, and of how
        many videos (read in the listing's own scan)."""
        return dict(self._scan(where)[3])

    def _ordered(self, where: Where) -> np.ndarray:
        return self._scan(where)[2]

    def _scan(self, where: Where) -> tuple:
        """(generation, where, ids in listing order, tally) of `where`, scanned once per commit."""
        generation = self.store.meta().get("generation")  # read first: a commit during the scan is seen next time
        last = self._last  # one read: a server's threads may list at once
        if last is None or last[:2] != (generation, where):
            ids, taken, videos = _matching(self.store, where)
            # date taken descending (unknown last), then id descending
            order = np.lexsort((-ids.astype(np.int64), -np.where(np.isnan(taken), -np.inf, taken)))
            frames = sum(videos.values())
            tally = {"photos": len(ids) - frames, "frames": frames, "videos": len(videos)}
            last = self._last = (generation, where, ids[order], tally)
        return last


def removal(store: Store, targets=(), under=None) -> list[Item]:
    """The items `rm` removes, in id order: each of `targets` is an item id (int) or a path (a
    stored file, or a folder: every item under it), plus every item `under` a folder. A target
    that names nothing stored is an InputError: nothing is removed."""
    targets = list(targets)
    if not targets and under is None:
        raise InputError("give item ids, paths or --under FOLDER to remove")
    ids: set[int] = set() if under is None else set(_matching(store, Where.of(under=under))[0].tolist())
    numbers = [int(t) for t in targets if _is_id(t)]
    for id_, item in zip(numbers, store.items(numbers)):  # one read of each segment they share
        if item is None:
            raise InputError(f"no item {id_} in {store.path}: nothing removed")
    ids.update(numbers)
    for target in targets:
        if _is_id(target):
            continue
        if isinstance(target, (str, os.PathLike)) and os.fspath(target):
            where = Where.of(under=target)
            found = [it.id for it in store.items_by_path(where.under)]  # a photo, or a video's frames
            found = found or _matching(store, where)[0].tolist()
            if not found:
                raise InputError(
                    f"{display_path(target)}: no stored item has this path or is under it: nothing removed"
                )
            ids.update(found)
        else:
            raise InputError(f"{target!r}: give an item id or a path to remove")
    return [it for it in store.items(sorted(ids)) if it is not None]


def remove(store: Store, ids, fault: str = "rm_txn") -> None:
    """Remove the items `ids` in one write transaction (`fault`: its fault point,
    docs/notes/RELIABILITY.md), and with them any codec of the store's set (but its first) that no
    item is left to use."""
    ids = list(ids)
    gone = np.asarray(ids, np.uint64)
    first = store.meta().get("codec_id")
    groups = store.load_code_groups()
    emptied = [c for c, (coded, _) in groups.items() if c != first and np.isin(coded, gone).all()]
    with store.write() as w:
        w.delete_items(ids)
        for codec_id in emptied:
            w.drop_codec(codec_id)
        fault_point(fault)


def _is_id(target) -> bool:
    return isinstance(target, (int, np.integer)) and not isinstance(target, bool) and 0 <= target < 1 << 63


def _matching(store: Store, where: Where) -> tuple[np.ndarray, np.ndarray, Counter]:
    """(ids uint64, dates taken float64 with NaN for unknown) of the items matching `where`, and
    how many of them are frames of each video (by path)."""
    prefix = None
    if where.under is not None:
        prefix = os.fsencode(where.under if where.under.endswith(os.sep) else where.under + os.sep)
    ids, taken, videos = [], [], Counter()
    for cols in store.iter_columns():
        keep = np.ones(len(cols), bool)
        if prefix is not None:
            keep &= np.fromiter((p.startswith(prefix) for p in cols.paths), bool, len(cols))
        if where.after is not None:
            keep &= cols.taken >= where.after  # NaN (date unknown) never passes
        if where.before is not None:
            keep &= cols.taken < where.before
        ids.append(cols.ids[keep])
        taken.append(cols.taken[keep])
        videos.update(cols.paths[i] for i in np.flatnonzero(keep & (cols.frame_ms >= 0)))
    if not ids:
        return np.empty(0, np.uint64), np.empty(0, np.float64), videos
    return np.concatenate(ids).astype(np.uint64), np.concatenate(taken).astype(np.float64), videos


def _count_arg(name: str, value) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        raise InputError(f"--{name} {value!r}: give a whole number >= 0")
    return int(value)


def item_record(item: Item) -> dict:
    """An item as JSON (`ls --json`, `rm --json`, the server's /api/item): taken in POSIX
    seconds or null; a video frame's `time` in its video and the video's `duration`, seconds."""
    record = {
        "id": item.id,
        "path": item.path,
        "taken": item.taken,
        "size": item.size,
        "width": item.width,
        "height": item.height,
    }
    if item.frame_ms is not None:
        record.update(time=item.frame_ms / 1000, duration=item.duration_ms / 1000)
    return record
