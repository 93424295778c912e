"""Stage 2, classify: hash each candidate file and settle what needs no CLIP.

touched   same path, same content (only mtime changed)  -> refresh the item's metadata
moved     content of an item whose file is gone          -> the item takes the new path
duplicate content of a stored item                       -> a new item reusing its code (or staged embedding)
copy      content met earlier in this run                -> rides along with that job
else      new or changed content                         -> an EmbedJob
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from ..context import StoreContext
from ..errors import ImageError
from ..progress import Progress, report
from ..store import Item
from .commit import SettledItem, write_settled
from .records import EmbedJob, FileState, IngestSummary

SETTLE_BATCH = 512  # settled items written per transaction


def classify(
    ctx: StoreContext,
    todo: list[FileState],
    seen: set[str],
    hashes,
    summary: IngestSummary,
    progress: Progress | None,
) -> list[EmbedJob]:
    """`hashes`: the content hash (or ImageError) of each file of `todo`, in order, from the
    engine. `seen` (updated here): discovered paths, plus items claimed by a moved file.
    Returns one job per distinct content that needs embedding."""
    store = ctx.store
    jobs: list[EmbedJob] = []
    first_job: dict[str, int] = {}  # content hash -> position in jobs
    settled: list[SettledItem] = []
    rows = StoredRows(store)
    now = time.time()
    for n, (file, h) in enumerate(zip(todo, hashes)):
        report(progress, "hashing", n + 1, len(todo))
        if isinstance(h, ImageError):  # unreadable, or gone since it was listed
            summary.fail(h)
            continue
        old = file.item
        same = store.items_by_hash(h) if old is None else []
        gone = [it for it in same if it.path not in seen and not os.path.lexists(it.path)]
        if old is not None and old.hash == h:  # touched, same content: refresh metadata
            settled.append(SettledItem(moved_item(old, file, h, now)))
            summary.unchanged += 1
        elif gone:  # the file moved: keep its code, change its path
            settled.append(SettledItem(moved_item(gone[0], file, h, now)))
            seen.add(gone[0].path)  # one moved file claims one missing item
            summary.moved += 1
        elif same and (row := rows.of(same[0].id)) is not None:
            # a copy of a stored image: reuse its code (or staged embedding), no CLIP needed
            item = Item.new(file.path, file.size, file.mtime_ns, h, same[0].width, same[0].height, now, same[0].taken)
            settled.append(SettledItem(item, **row))
            summary.duplicate += 1
        elif old is None and h in first_job:  # a copy of an image new in this run
            job = jobs[first_job[h]]
            jobs[first_job[h]] = EmbedJob(job.file, h, job.copies + (file,))
        else:
            first_job[h] = len(jobs)
            jobs.append(EmbedJob(file, h))
        if len(settled) >= SETTLE_BATCH:
            write_settled(ctx, settled)
            settled = []
    write_settled(ctx, settled)
    return jobs


class StoredRows:
    """What stored items are kept as: their code (with the codec of the store's set that wrote
    it), or their staged float16 embedding. Each kind is read once, on the first copy of a stored
    image that needs it."""

    def __init__(self, store):
        self.store = store
        self._codes, self._staged = None, None

    def of(self, item_id: int) -> dict | None:
        """{"code": ..., "codec": ...} or {"embedding": ...} of the item (None: it has neither)."""
        if self._codes is None:
            self._codes = {
                int(i): (code, codec_id)
                for codec_id, (ids, codes) in self.store.load_code_groups().items()
                for i, code in zip(ids.tolist(), codes)
            }
        if item_id in self._codes:
            code, codec_id = self._codes[item_id]
            return {"code": np.array(code), "codec": codec_id}
        if self._staged is None:
            self._staged = {int(i): x for ids, X in self.store.iter_staging() for i, x in zip(ids, X)}
        row = self._staged.get(item_id)
        return None if row is None else {"embedding": row}


def moved_item(item: Item, file: FileState, h: str, now: float) -> Item:
    """`item` (its id, size in pixels and first-added time) now at `file`."""
    return dataclasses.replace(item, path=file.path, size=file.size, mtime_ns=file.mtime_ns, hash=h, updated=now)
