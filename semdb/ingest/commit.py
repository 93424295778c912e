"""Stage 5, commit: every write ingest makes, each batch ONE store transaction.

Here, and only here, it is decided whether an item gets a code or a staged embedding
(`stored_rows`): codes when the store has a codec, staged float16 embeddings before.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass

import numpy as np

from ..catalog import remove
from ..codec import Codec
from ..context import STATS_KEY, StoreContext
from ..errors import ImageError
from ..faults import fault_point
from ..images import date_taken
from ..store import Item, Store
from ..store.documents import PATHLESS
from .encode import encode
from .failures import remember
from .records import EmbeddedBatch, IngestSummary, Vectors

# The shift signal follows the latest photos: each older photo's weight fades by this much per
# newer one (a window of about 256), so a store of years of one camera notices the screenshots.
SHIFT_FADE = 1 - 1 / 256


@dataclass(frozen=True)
class SettledItem:
    """An item classify settled without CLIP: `code` given for a new item (a duplicate of a
    stored image), None for a metadata update of an existing item (touched or moved)."""

    item: Item
    code: np.ndarray | None = None


def write_settled(ctx: StoreContext, settled: list[SettledItem]) -> None:
    if not settled:
        return
    with ctx.write() as w:  # a duplicate's code gets its IVF list here
        for s in settled:
            w.update_item(s.item) if s.code is None else w.add_item(s.item, code=s.code)
        fault_point("classify_txn")


def stored_rows(vectors: Vectors, codec: Codec | None) -> Vectors:
    """What to store for a batch's images: codes when the store has a codec, else float16
    embeddings (staged). Embeddings that arrive after the codec was trained (an engine embedded
    them before) are encoded here; codes must be of the store's codec."""
    if codec is None:
        if vectors.embeddings is None:
            raise ValueError("codes given for a store without a codec")
        return Vectors(embeddings=vectors.embeddings.astype(np.float16))
    if vectors.codes is not None:
        if vectors.codec_id != codec.id:
            raise ValueError(f"codes of codec {vectors.codec_id} given for a store on codec {codec.id}")
        return vectors
    return encode(codec, vectors.embeddings)


def commit_batch(ctx: StoreContext, batch: EmbeddedBatch, codec: Codec | None, summary: IngestSummary) -> None:
    """One transaction: every decodable job's item (and its copies') with its code or staged
    embedding. Jobs whose image failed are listed in the summary, with their copies, and
    remembered in the same transaction (failures.py)."""
    good, failed = [], []
    for job, image in zip(batch.jobs, batch.images):
        if image.error is not None:
            for file in (job.file, *job.copies):  # byte-identical copies fail alike
                summary.fail(ImageError(file.path, image.error.reason))
                failed.append((file, image.error.reason))
        else:
            good.append((job, image))
    if not good:
        with ctx.write() as w:
            remember(w, failed)
        return
    stored = stored_rows(batch.vectors, codec)
    kind, rows = ("code", stored.codes) if stored.codes is not None else ("embedding", stored.embeddings)
    now = time.time()
    with ctx.write() as w:  # new codes get their IVF lists in this transaction
        if failed:
            remember(w, failed)
        for (job, image), row in zip(good, rows):
            f, old = job.file, job.file.item
            if old is not None:  # same path, new content: re-encoded
                w.update_item(
                    Item(
                        old.id,
                        f.path,
                        f.size,
                        f.mtime_ns,
                        job.hash,
                        image.width,
                        image.height,
                        old.added,
                        now,
                        _taken(image, f),
                    )
                )
                (w.set_code if kind == "code" else w.set_embedding)(old.id, row)
                summary.changed += 1
            else:
                w.add_item(
                    Item.new(f.path, f.size, f.mtime_ns, job.hash, image.width, image.height, now, _taken(image, f)),
                    **{kind: row},
                )
                summary.new += 1
            for c in job.copies:
                w.add_item(
                    Item.new(c.path, c.size, c.mtime_ns, job.hash, image.width, image.height, now, _taken(image, c)),
                    **{kind: row},
                )
                summary.duplicate += 1
        if stored.errors is not None:
            count_drift(w, stored.errors, stored.outside)
        fault_point("batch_txn")
    fault_point("batch_committed")
    summary.embedded += len(good)


def _taken(image, file) -> float | None:
    """The photo's EXIF date taken, else its file's mtime (None for a file never seen): what
    date filters compare."""
    return image.taken if image.taken is not None else (file.mtime_ns / 1e9 if file.mtime_ns else None)


def fill_dates(store: Store, items: list[Item]) -> None:
    """Give items stored before semdb kept the date taken one (read from the file's header)."""
    for i in range(0, len(items), 512):
        with store.write() as w:
            for it in items[i : i + 512]:
                taken = date_taken(it.path)
                w.update_item(dataclasses.replace(it, taken=taken if taken is not None else it.mtime_ns / 1e9))
            fault_point("classify_txn")


def count_drift(w, errors: np.ndarray, outside: np.ndarray | None) -> None:
    """Add newly encoded items' reconstruction errors and shares outside the codec's subspace
    to the codec's stats (same transaction)."""
    stats = w.meta().get(STATS_KEY)
    if stats:
        counted = {
            "encoded": stats.get("encoded", 0) + len(errors),
            "error_sum": stats.get("error_sum", 0.0) + float(errors.sum()),
        }
        if outside is not None and "outside_recent" in stats:
            total, weight = stats["outside_recent"]
            fade = SHIFT_FADE ** len(outside)
            counted["outside_recent"] = [total * fade + float(np.nansum(outside)), weight * fade + len(outside)]
        w.set_meta(STATS_KEY, {**stats, **counted})


def prune_missing(store: Store, seen: set[str], prune: bool, summary: IngestSummary) -> None:
    """Items whose files are gone: removed (one transaction) with `prune`, else counted."""
    gone = [
        it.id
        for it in store.iter_items()
        if it.path not in seen and not it.path.startswith(PATHLESS) and not os.path.lexists(it.path)
    ]  # a document without a file (PATHLESS) never had one
    if prune and gone:
        remove(store, gone, fault="prune_txn")
        summary.pruned = len(gone)
    else:
        summary.missing = len(gone)
