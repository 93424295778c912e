"""The whole ingest, top to bottom (`ingest`), and its options."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..context import StoreContext
from ..errors import InputError, StoreError
from ..images import DEFAULT_MAX_MEGAPIXELS, check_paths
from ..progress import Progress, report
from ..video.files import is_video_file
from ..video.frames import Sampling
from . import ivf_upkeep
from .classify import classify
from .commit import commit_batch, fill_dates, prune_missing
from .encode import codec_set
from .failures import forget_settled
from .local import LocalEngine
from .model import image_model
from .records import IngestSummary, peak_rss_mb
from .scan import scan
from .training import CodecPolicy, adopt_codec, record_bits, record_captions, retrain_advice, train_if_due
from .videos import ingest_videos


@dataclass(frozen=True)
class IngestOptions:
    """How one ingest runs: the one record from `semdb ingest` (or `Database.ingest`'s keywords)
    to the pipeline. Build it with `IngestOptions.of`, which also takes `bits` and `train_now`.

    A new store keeps its embeddings staged (searched exactly) until it holds enough images to
    train a codec that generalises (`policy`, CodecPolicy: `bits` per item, `train_now` trains
    on what is staged when the ingest ends, however few). `captions`: a text file (one per line)
    or list of texts that show how the store is searched; the codec is trained to rank well for
    such texts (now and at each retrain). `engine="ray"`: hash, decode, embed and encode on a Ray
    cluster (`ray_address`; by default Ray's: the cluster `ray start` runs on this machine, else a
    new local one), its shards in `ray_shards` (default STORE/ray-shards; ingest/ray.py). `int8`:
    embed with the int8 ONNX image tower (a CPU only; docs/CLI.md, "Ingest on small machines").
    Files that failed in an earlier run and are unchanged are skipped (counted as
    `failed_before`); `retry_failed` decodes them again."""

    batch_size: int = 32  # images per CLIP batch and per commit
    workers: int | None = None  # decoding threads
    max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS  # larger images are refused (None: no limit)
    prune: bool = False  # remove items whose files are gone
    count_missing: bool = True  # without prune: count them (a stat of every item's file)
    codec: object = None  # a Codec or codec file for a new store (default: train one)
    policy: CodecPolicy = field(default_factory=CodecPolicy)
    engine: str = "local"  # or "ray"
    ray_address: str | None = None
    ray_shards: Path | None = None  # default STORE/ray-shards
    captions: object = None  # text queries for the codec's training: a file (one per line) or list[str]
    int8: bool = False  # the int8 ONNX image tower (local engine on a CPU; semdb.clip.onnx)
    retry_failed: bool = False  # decode again the files that failed before, unchanged since (failures.py)
    sampling: Sampling = field(default_factory=Sampling)  # how video frames are chosen (semdb.video.frames)

    def __post_init__(self):
        if self.engine not in ("local", "ray"):
            raise InputError(f"engine {self.engine!r}: use 'local' or 'ray'")

    @classmethod
    def of(cls, *, bits: int | None = None, train_now: bool = False, **fields) -> IngestOptions:
        """The options from keywords: the fields, and `bits` and `train_now` for the default
        `policy` (CodecPolicy(bits, train_now)); beside a policy of your own they must agree with it."""
        policy = fields.setdefault("policy", CodecPolicy(bits=bits, train_now=train_now))
        if (bits is not None and bits != policy.bits) or (train_now and not policy.train_now):
            raise InputError(f"bits={bits}, train_now={train_now} and the policy {policy} disagree: give one")
        return cls(**fields)


def ingest(ctx: StoreContext, paths, options: IngestOptions, progress: Progress | None = None) -> IngestSummary:
    """Add new and changed images and videos under `paths` to the store, skip unchanged ones.

    scan (stat) -> classify (hash; settle touched, moved, duplicate files) -> per batch:
    decode -> embed (+ encode) -> commit; then videos, one transaction each (ingest/videos.py);
    the codec is trained when due; prune.
    Every batch commits atomically, so an interrupted ingest resumes where it stopped.
    """
    if ctx.store.readonly:
        raise StoreError(f"{ctx.path} is open read-only")
    paths = list(paths)
    check_paths(paths)  # a missing folder is named before the model loads
    start = time.perf_counter()
    summary = IngestSummary()
    policy = options.policy
    record_bits(ctx, policy.bits)
    if not ctx.store.model_id() or options.codec is not None or ctx.model_named:
        ctx.bind_model()  # otherwise the model loads only if some file needs embedding
    if options.codec is not None:
        adopt_codec(ctx, options.codec)
    if options.captions is not None:
        record_captions(ctx, options.captions)
    found = scan(ctx.store, paths, summary, options.retry_failed)
    fill_dates(ctx.store, found.undated)
    seen = set(found.seen)
    videos, images = [], []
    for f in found.todo:
        (videos if is_video_file(f.path) else images).append(f)
    chosen = []

    def local_model(paths):  # chosen once, by the first stage that needs CLIP
        if not chosen:
            chosen.append(image_model(ctx, paths, options.int8, options.max_megapixels, progress))
            summary.image_model, summary.onnx_export_seconds = chosen[0].kind, chosen[0].export_seconds
        return chosen[0].model

    with _engine(ctx, options) as engine:
        jobs = classify(ctx, images, seen, engine.hashes(images), summary, progress)
        batches = [jobs[i : i + options.batch_size] for i in range(0, len(jobs), options.batch_size)]
        model = ctx.embedder if batches else None
        if batches and options.engine == "local":  # Ray's actors load the model themselves
            model = local_model([job.path for job in jobs])
        elif batches:
            summary.image_model = "torch"  # Ray's actors run the torch tower
        done = embedded = 0
        rate = EmbeddingRate()
        while done < len(batches):
            codecs = codec_set(ctx, policy)
            # While photos may wait staged, embed just the batches that can reach train_at, train
            # a codec of them, then go on with it (a Ray engine ships the new set to its actors).
            n = len(batches) - done
            if codecs.stage:
                n = min(n, policy.batches_to_stage(ctx.store.staging_count(), options.batch_size))
            for batch in engine.embed(batches[done : done + n], codecs, model):
                before = summary.embedded
                commit_batch(ctx, batch, codecs, summary)
                rate.committed(summary.embedded - before)
                embedded += len(batch.jobs)
                report(progress, "embedding", embedded, len(jobs))
            done += n
            rate.pause()  # the codec may train now: not embedding
            summary.codec_trained |= train_if_due(ctx, policy, ingest_ended=False, progress=progress)

    def train_when_due():
        summary.codec_trained |= train_if_due(ctx, policy, ingest_ended=False, progress=progress)

    sampling = dataclasses.replace(options.sampling, max_megapixels=options.max_megapixels)
    model_of_videos = lambda: local_model([])  # noqa: E731 - Ray ingests the videos locally too
    ingest_videos(
        ctx,
        videos,
        seen,
        model_of_videos,
        sampling,
        options.batch_size,
        summary,
        progress,
        policy,
        train_when_due,
    )
    summary.codec_trained |= train_if_due(ctx, policy, ingest_ended=True, progress=progress)
    if options.prune or options.count_missing:
        prune_missing(ctx.store, seen, options.prune, summary)
    forget_settled(ctx.store)
    ivf_upkeep.maintain(ctx, progress)  # build the IVF past its threshold, rebuild it when outgrown
    summary.items, summary.staged = ctx.store.count(), ctx.store.staging_count()
    summary.staged_frames = staged_frames(ctx.store) if summary.staged and ctx.store.holds_frames() else 0
    summary.retrain_advice = retrain_advice(ctx.store.meta(), summary.items)
    summary.seconds = round(time.perf_counter() - start, 3)
    summary.peak_rss_mb = peak_rss_mb()
    summary.images_per_second = rate.per_second()
    return summary


def staged_frames(store) -> int:
    """How many of the store's staged (uncompressed) items are video frames."""
    ids = [int(i) for chunk, _ in store.iter_staging() for i in chunk]
    return sum(it is not None and it.frame_ms is not None for it in store.items(ids))


class EmbeddingRate:
    """Images per second of the embedding phase: decoding, CLIP, encoding and commits, timed
    from one batch's commit to the next (the first batch also waits for the model to load and
    the decoders to start, and training the codec is no part of it). None for less than
    MIN_SECONDS of it: a rate of a second's work says nothing."""

    MIN_SECONDS = 1.0

    def __init__(self):
        self.images, self.seconds, self._last = 0, 0.0, None

    def committed(self, images: int) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.images, self.seconds = self.images + images, self.seconds + now - self._last
        self._last = now

    def pause(self) -> None:
        self._last = None

    def per_second(self) -> float | None:
        if self.seconds < self.MIN_SECONDS or not self.images:
            return None
        return round(self.images / self.seconds, 2)


def _engine(ctx: StoreContext, options: IngestOptions):
    if options.engine == "ray":
        from .ray import RayEngine  # noqa: PLC0415 - Ray is optional

        return RayEngine(
            Path(options.ray_shards or ctx.path / "ray-shards"),
            options.ray_address,
            ctx.threads,
            options.max_megapixels,
            clean=not options.ray_shards,
        )
    return LocalEngine(options.workers, options.max_megapixels)
