"""Stage 5, commit: every write ingest makes, each batch ONE store transaction.

Here, and only here, it is decided what an item stores (`stored_rows`): a code of the codec of
the store's set that knows it, or its float16 embedding, staged until a codec takes it.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass

import numpy as np

from ..catalog import remove
from ..context import StoreContext, codec_stats, put_codec_stats
from ..errors import ImageError
from ..faults import fault_point
from ..images import date_taken
from ..store import Item, Store
from .encode import CodecSet
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


def stored_rows(vectors: Vectors, codecs: CodecSet) -> Vectors:
    """What to store for a batch's images: each one's code under the codec of the set that
    knows it, else its float16 embedding (staged). Embeddings that arrive unencoded (given as
    they are, or embedded before a codec was trained) are routed and encoded here; codes must be
    of codecs the store holds."""
    if vectors.codec_ids is None:
        if vectors.embeddings is None:
            raise ValueError("codes given without the codec that wrote them")
        return codecs.encode(vectors.embeddings)
    unknown = set(vectors.codec_ids) - set(codecs.ids) - {None}
    if unknown:
        raise ValueError(f"codes of codec {sorted(unknown)[0]} given for a store on codecs {list(codecs.ids)}")
    return vectors


def commit_batch(ctx: StoreContext, batch: EmbeddedBatch, codecs: CodecSet, summary: IngestSummary) -> None:
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
    stored = stored_rows(batch.vectors, codecs)
    now = time.time()
    with ctx.write() as w:  # new codes get their IVF lists in this transaction
        if failed:
            remember(w, failed)
        for i, (job, image) in enumerate(good):
            vector = stored_vector(stored, i)
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
                if "code" in vector:
                    w.set_code(old.id, vector["code"], vector["codec"])
                else:
                    w.set_embedding(old.id, vector["embedding"])
                summary.changed += 1
            else:
                w.add_item(
                    Item.new(f.path, f.size, f.mtime_ns, job.hash, image.width, image.height, now, _taken(image, f)),
                    **vector,
                )
                summary.new += 1
            for c in job.copies:
                w.add_item(
                    Item.new(c.path, c.size, c.mtime_ns, job.hash, image.width, image.height, now, _taken(image, c)),
                    **vector,
                )
                summary.duplicate += 1
        count_drift(w, stored)
        fault_point("batch_txn")
    fault_point("batch_committed")
    summary.embedded += len(good)


def stored_vector(stored: Vectors, i: int) -> dict:
    """Row i of what a batch stores, as the writer's keywords: code= and codec=, or embedding=."""
    codec_id = stored.codec_of(i)
    if codec_id is None:
        return {"embedding": stored.embeddings[i]}
    return {"code": stored.codes[i], "codec": codec_id}


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


def count_drift(w, stored: Vectors) -> None:
    """Add newly encoded items' reconstruction errors and shares outside their codec's subspace
    to each codec's stats (same transaction)."""
    if stored.codec_ids is None or stored.errors is None:
        return
    of = np.array([c or "" for c in stored.codec_ids])
    for codec_id in set(stored.codec_ids) - {None}:
        stats = codec_stats(w.meta(), codec_id)
        if not stats:
            continue
        rows = of == codec_id
        errors = stored.errors[rows]
        counted = {
            "encoded": stats.get("encoded", 0) + len(errors),
            "error_sum": stats.get("error_sum", 0.0) + float(errors.sum()),
        }
        if stored.outside is not None and "outside_recent" in stats:
            outside = stored.outside[rows]
            total, weight = stats["outside_recent"]
            fade = SHIFT_FADE ** len(outside)
            counted["outside_recent"] = [total * fade + float(np.nansum(outside)), weight * fade + len(outside)]
        put_codec_stats(w, codec_id, {**stats, **counted})


def prune_missing(store: Store, seen: set[str], prune: bool, summary: IngestSummary) -> None:
    """Items whose files are gone: removed (one transaction) with `prune`, else counted."""
    gone = [it.id for it in store.iter_items() if it.path not in seen and not os.path.lexists(it.path)]
    if prune and gone:
        remove(store, gone, fault="prune_txn")
        summary.pruned = len(gone)
    else:
        summary.missing = len(gone)
