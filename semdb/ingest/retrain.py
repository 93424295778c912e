"""`retrain`: move a store to a new codec trained on what the store holds now.

    stored items --sample--> re-embed their files (decode + CLIP) --train--> new codec
        --pending: new codec + the sample's codes (one transaction)-->
    every other item: re-embed its file and encode, or, when the file is gone, changed or
    unreadable, transcode its old code (decode, then encode) --recodes, one txn per batch-->
    --switch: the new codec and every item's new code replace the old (one transaction)

Queries keep using the old codec and codes until the switch commits, so every item is always
scored by the codec its code belongs to. A killed retrain leaves the pending codec and the
recodes it committed; running it again continues from there (an ingest in between is fine:
changing or deleting an item drops its recode, new items have none, so both are encoded).
Before the pending codec is committed, the sample's embeddings are kept in a file
(retrain_sample.py): a retrain interrupted while it trains does not embed them again.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from itertools import islice

import numpy as np

from ..codec import Codec
from ..context import SET_STATS_KEY, STATS_KEY, StoreContext
from ..errors import InputError, StoreError
from ..faults import fault_point
from ..images import DEFAULT_MAX_MEGAPIXELS
from ..progress import Progress, report
from ..store import Item
from . import ivf_upkeep, retrain_sample
from .encode import CodecSet
from .local import LocalEngine
from .model import image_model
from .records import EmbedJob, FileState
from .training import CodecPolicy, codec_stats, record_captions, train_codec, train_if_due

RETRAIN_SAMPLE = 20_000  # stored files re-embedded to train the new codec (Lloyd uses at most 16k)
PENDING_STATS = "pending_codec_stats"  # store meta: the pending codec's stats, installed at the switch


@dataclass
class RetrainSummary:
    items: int = 0
    trained_on: int = 0
    reembedded: int = 0  # items whose file was embedded again (in this run)
    transcoded: int = 0  # items whose file is gone, changed or unreadable: re-encoded from their old code
    old_codec: str | None = None
    codec: str | None = None
    resumed: bool = False  # an interrupted retrain was finished (its pending codec, or its sample's embeddings)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def retrain(
    ctx: StoreContext,
    bits: int | None = None,
    sample: int = RETRAIN_SAMPLE,
    batch_size: int = 32,
    workers: int | None = None,
    max_megapixels=DEFAULT_MAX_MEGAPIXELS,
    progress: Progress | None = None,
    captions=None,
) -> RetrainSummary:
    """`captions` (a text file, one per line, or a list of str): texts like the store's queries,
    recorded first (as `semdb ingest --captions` does), so the new codec trains in their metric;
    an interrupted retrain is then trained again rather than resumed with its older codec."""
    store = ctx.store
    if store.readonly:
        raise StoreError(f"{ctx.path} is open read-only")
    if captions is not None:
        record_captions(ctx, captions)
    start = time.perf_counter()
    summary = RetrainSummary(items=store.count())
    old = ctx.codec
    if old is None:  # nothing is compressed yet: training on the staged embeddings is the retrain
        if not train_if_due(ctx, CodecPolicy(bits=bits or CodecPolicy.bits, train_now=True), True, progress):
            raise InputError(f"{ctx.path} holds {summary.items} image(s): a codec needs at least 2")
        summary.codec, summary.trained_on = ctx.codec.id, summary.items
        summary.seconds = round(time.perf_counter() - start, 3)
        return summary
    summary.old_codec = old.id
    engine = LocalEngine(workers, max_megapixels)
    # the ONNX image tower on a CPU (exported now if this model has none yet), else torch
    model = image_model(ctx, [it.path for it in islice(store.iter_items(), 32)], False, max_megapixels, progress).model
    ctx.bind_model()  # the new codes come from it: a store that knows it by name records its weights
    with engine:
        new = _pending(ctx)
        if new is not None and (bits is None or new.bits == bits) and captions is None:
            summary.resumed = True
        else:
            new = _train_pending(ctx, engine, model, bits or old.bits, sample, batch_size, summary, progress)
        summary.trained_on = int((store.meta().get(PENDING_STATS) or {}).get("trained_on") or 0)
        _recode_rest(ctx, engine, model, old, new, batch_size, summary, progress)
    had_ivf = store.ivf_meta()
    with store.write() as w:
        stats = w.meta().get(PENDING_STATS)
        w.switch_codec()
        w.set_meta(STATS_KEY, stats)
        w.set_meta(SET_STATS_KEY, None)  # one codec again
        w.set_meta(PENDING_STATS, None)
        fault_point("switch_txn")
    retrain_sample.discard(ctx)  # (left by a kill just after the pending codec was committed)
    # The switch dropped the old codes' IVF: a store that had one gets a new one for the new codes.
    ivf_upkeep.rebuild(ctx, had_ivf, progress) if had_ivf else ivf_upkeep.maintain(ctx, progress)
    summary.codec = new.id
    summary.seconds = round(time.perf_counter() - start, 3)
    return summary


def _pending(ctx: StoreContext) -> Codec | None:
    raw = ctx.store.pending_codec_bytes()
    return None if raw is None else Codec.from_bytes(raw, source=f"{ctx.path} (pending codec)")


def _unchanged_files(items: list[Item]) -> tuple[list[EmbedJob], list[Item]]:
    """Jobs for the items whose file is still the one they were made from (size and mtime),
    and the other items."""
    jobs, others = [], []
    for it in items:
        try:
            st = os.stat(it.path)
        except OSError:
            others.append(it)
            continue
        if (st.st_size, st.st_mtime_ns) == (it.size, it.mtime_ns):
            jobs.append(EmbedJob(FileState(it.path, it.size, it.mtime_ns, it), it.hash))
        else:
            others.append(it)
    return jobs, others


def _embed(engine, model, jobs, batch_size):
    """Per batch: (items whose file decoded, their float32 embeddings, items whose did not)."""
    batches = [jobs[i : i + batch_size] for i in range(0, len(jobs), batch_size)]
    for batch in engine.embed(batches, CodecSet(), model):
        good = [job.file.item for job, img in zip(batch.jobs, batch.images) if img.error is None]
        bad = [job.file.item for job, img in zip(batch.jobs, batch.images) if img.error is not None]
        yield good, (batch.vectors.embeddings.astype(np.float32) if good else None), bad


def _train_pending(ctx, engine, model, bits, sample, batch_size, summary, progress) -> Codec:
    """Re-embed a sample of the stored files (those an interrupted retrain had embedded are
    taken from retrain_sample.py), train the new codec on it, and commit it as the pending codec
    together with the codes of the sample."""
    store = ctx.store
    items = list(store.iter_items())
    rng = np.random.default_rng(0)
    picked = [items[i] for i in sorted(rng.choice(len(items), min(sample, len(items)), replace=False))]
    jobs, _ = _unchanged_files(picked)
    kept = retrain_sample.load(ctx)  # {id: (hash, embedding)} of an interrupted retrain
    embedded = {job.file.item.id: kept[job.file.item.id] for job in jobs if _same_file(kept, job)}
    todo = [job for job in jobs if job.file.item.id not in embedded]
    summary.resumed = bool(embedded)
    done, saved = len(embedded), time.monotonic()
    try:
        for good, X, bad in _embed(engine, model, todo, batch_size):
            embedded.update((it.id, (it.hash, x)) for it, x in zip(good, X if good else ()))
            summary.reembedded += len(good)
            done += len(good) + len(bad)
            report(progress, "re-embedding sample", done, len(jobs))
            if time.monotonic() - saved >= retrain_sample.SAVE_SECONDS:
                retrain_sample.save(ctx, embedded)
                saved = time.monotonic()
    finally:  # interrupted (Ctrl-C, a full disk...) or not: what is embedded is kept
        retrain_sample.save(ctx, embedded)
    ids = [job.file.item.id for job in jobs if job.file.item.id in embedded]  # in the sample's order
    if len(ids) < 2:
        raise InputError(
            f"{ctx.path}: only {len(ids)} of the {len(picked)} sampled files can still be read; "
            f"a codec needs at least 2 (are the photos on an unmounted drive?)"
        )
    X = np.stack([embedded[i][1] for i in ids]).astype(np.float32)
    new = train_codec(ctx, X, bits, progress)
    codes = new.encode(X)
    with store.write() as w:
        w.set_pending_codec(new.to_bytes(), new.id, new.code_bytes)
        w.set_recodes(ids, codes)
        w.set_meta(PENDING_STATS, codec_stats(new, X, codes))
        fault_point("pending_txn")
    retrain_sample.discard(ctx)  # the pending codec carries the work from here
    return new


def _same_file(kept: dict, job: EmbedJob) -> bool:
    return job.file.item.id in kept and kept[job.file.item.id][0] == job.hash


def _recode_rest(ctx, engine, model, old: Codec, new: Codec, batch_size, summary, progress) -> None:
    """Give every item without a code under the pending codec one: re-embedded from its file,
    else transcoded from its old code. One transaction per batch."""
    store = ctx.store
    done_ids = set(store.recoded_ids().tolist())
    todo = [it for it in store.iter_items() if it.id not in done_ids]
    if not todo:
        return
    jobs, others = _unchanged_files(todo)
    done = 0

    def commit(items, codes):
        nonlocal done
        with store.write() as w:
            w.set_recodes([it.id for it in items], codes)
            fault_point("recode_txn")
        done += len(items)
        report(progress, "re-encoding", done, len(todo))

    for good, X, bad in _embed(engine, model, jobs, batch_size):
        if good:
            commit(good, new.encode(X))
            summary.reembedded += len(good)
        others += bad
    for i in range(0, len(others), 4096):  # gone, changed or unreadable files: from what the store keeps
        part = others[i : i + 4096]
        commit(part, new.encode(ctx.stored_vectors([it.id for it in part])))
        summary.transcoded += len(part)
