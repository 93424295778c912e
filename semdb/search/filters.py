"""What a search's `where` reads of every item: its folder and its date taken (searcher.py).

Kept per item segment of the store and read again only for the segments a commit rewrote: a
batch's new items fill the last segment and new ones, a changed, moved or deleted item rewrites
its own, so the first filtered search after a commit reads the batch (a segment or two), not
the store. A path is kept as the number of its folder: `under` tests each distinct folder once,
then every item with one numpy lookup, so a filtered search costs about what an unfiltered one
does.
"""

from __future__ import annotations

import os

import numpy as np

from .request import Where

SEP = os.fsencode(os.sep)


class FilterFacts:
    """The folder number and date taken (NaN: unknown) of every stored item, in id order, as
    of the last refresh; `folders[n]` is folder n's path bytes, ending in the separator."""

    def __init__(self):
        self._segments: dict[bytes, tuple] = {}  # item segment key -> (tag, its rows of the arrays below)
        self.folders: list[bytes] = []  # every folder seen, deleted items' included (a few bytes each)
        self._folder_numbers: dict[bytes, int] = {}
        self.ids = np.empty(0, np.uint64)
        self.folder = np.empty(0, np.int32)
        self.taken = np.empty(0, np.float64)
        self.rows_read = 0  # item rows decoded so far: what refreshes have cost

    def refresh(self, store) -> None:
        """Catch up with the store's last commit, decoding only the item segments it rewrote."""
        tags, fresh = store.changed_item_segments({key: seg[0] for key, seg in self._segments.items()})
        if not fresh and tags.keys() == self._segments.keys():
            return
        # tags come in key order: segments hold ascending, disjoint id ranges, so ids stay sorted
        parts, segments, start = [], {}, 0
        for key, tag in tags.items():
            if key in fresh:
                part = self._columns(fresh[key])
                self.rows_read += len(part[0])
            else:
                rows = self._segments[key][1]
                part = (self.ids[rows], self.folder[rows], self.taken[rows])
            parts.append(part)
            segments[key] = (tag, slice(start, start + len(part[0])))
            start += len(part[0])
        self._segments = segments
        self.ids = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, np.uint64)
        self.folder = np.concatenate([p[1] for p in parts]) if parts else np.empty(0, np.int32)
        self.taken = np.concatenate([p[2] for p in parts]) if parts else np.empty(0, np.float64)

    def _columns(self, cols) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        numbers = self._folder_numbers
        folder = np.empty(len(cols), np.int32)
        for i, path in enumerate(cols.paths):
            name = path[: path.rfind(SEP) + 1]
            n = numbers.get(name)
            if n is None:
                n = numbers[name] = len(self.folders)
                self.folders.append(name)
            folder[i] = n
        return np.asarray(cols.ids, np.uint64), folder, np.asarray(cols.taken, np.float64)

    def aligned(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(folder numbers, dates taken) of `ids` (an index's rows): -1 and NaN for an id not
        stored (deleted since the index was read)."""
        ids = np.asarray(ids, np.uint64)
        if not len(self.ids):
            return np.full(len(ids), -1, np.int32), np.full(len(ids), np.nan)
        pos = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
        found = self.ids[pos] == ids
        return np.where(found, self.folder[pos], -1), np.where(found, self.taken[pos], np.nan)

    def matches(self, where: Where, folder: np.ndarray, taken: np.ndarray) -> np.ndarray:
        """Which rows pass `where` (a bool mask), given their folder numbers and dates (aligned):
        Where.matches, with each folder tested once. A path is under a folder exactly when its
        own folder (ending in the separator) is."""
        keep = where.in_dates(taken)
        if where.under is not None:
            keep &= np.append(where.inside(self.folders), False)[folder]  # folder -1 (not stored) reads the False
        return keep
