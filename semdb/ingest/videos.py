"""The video stage: each video file becomes the items of its kept frames (semdb/video).

Per video: its content hash settles a touched video (same content: the frames' metadata are
refreshed) and a moved one (its frames take the new path) without decoding. Otherwise it is
decoded in a worker thread (PyAV, FFmpeg's own threads) while CLIP embeds the frames sampled
so far on this thread; a frame whose vector (its decoded code once the store has a codec) is
within DEDUP_COSINE of the last kept frame's is dropped. All of a video's frames, and the
removal of what its path held before, are ONE transaction: a changed video is re-indexed
whole, and an ingest killed in the middle of a video resumes with that video, never storing
its frames twice.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator

import numpy as np

from ..context import StoreContext
from ..errors import ImageError
from ..faults import fault_point
from ..progress import Progress, report
from ..store import Item
from ..video.frames import Sampling, sample
from .classify import moved_item
from .commit import SettledItem, count_drift, stored_rows, stored_vector, write_settled
from .decode import ahead
from .encode import CodecSet, codec_set, embed_and_encode
from .failures import remember
from .local import try_hash
from .records import DecodedImage, FileState, IngestSummary, Vectors
from .training import CodecPolicy

# A frame this close (cosine) to the last kept one adds nothing a search could tell apart.
DEDUP_COSINE = 0.95


def ingest_videos(
    ctx: StoreContext,
    files: list[FileState],
    seen: set[str],
    get_model: Callable[[], object],
    sampling: Sampling,
    batch_size: int,
    summary: IngestSummary,
    progress: Progress | None,
    policy: CodecPolicy,
    after_each: Callable[[], None] = lambda: None,
) -> None:
    """Index the videos `files` (new or changed by size or mtime). `get_model`: the image
    model, loaded only when a video needs CLIP. `after_each`: run after each video's commit
    (the codec's training when it becomes due)."""
    for n, file in enumerate(files):
        report(progress, "videos", n, len(files))
        h = try_hash(file.path)
        if isinstance(h, ImageError):
            summary.fail(h)
            continue
        old = ctx.store.items_by_path(file.path)
        now = time.time()
        if old and all(it.hash == h for it in old):  # touched: same content
            write_settled(ctx, [SettledItem(moved_item(it, file, h, now)) for it in old])
            summary.unchanged += 1
            continue
        moved = [] if old else _gone_copy(ctx, h, seen)
        if moved:
            seen.add(moved[0].path)
            write_settled(ctx, [SettledItem(moved_item(it, file, h, now)) for it in moved])
            summary.moved += 1
            continue
        _index(ctx, file, h, old, get_model(), sampling, batch_size, summary, codec_set(ctx, policy))
        after_each()
    if files:
        report(progress, "videos", len(files), len(files))


def _gone_copy(ctx: StoreContext, h: str, seen: set[str]) -> list[Item]:
    """The frames of a stored video with this content whose file is gone (it moved here)."""
    gone = [it for it in ctx.store.items_by_hash(h) if it.path not in seen and not os.path.lexists(it.path)]
    return [it for it in gone if it.path == gone[0].path] if gone else []


def _index(
    ctx, file: FileState, h: str, old: list[Item], model, sampling: Sampling, batch_size: int, summary, codecs: CodecSet
) -> None:
    try:
        info, frames = sample(file.path, model.image_size, sampling)
    except ImageError as err:
        summary.fail(err)
        with ctx.write() as w:  # not decoded again while unchanged (failures.py)
            remember(w, [(file, err.reason)])
        return
    times: list[int] = []
    rows: list[Vectors] = []
    last = None  # the last kept frame's unit vector
    for batch in ahead(_preprocessed(frames, model, batch_size)):
        vectors = embed_and_encode(model, [DecodedImage(p) for _, p in batch], codecs)
        unit = _unit(codecs.decode(vectors))
        keep = []
        for i, v in enumerate(unit):
            if last is None or float(v @ last) < DEDUP_COSINE:
                keep.append(i)
                last = v
        times += [batch[i][0] for i in keep]
        rows.append(vectors.rows(np.array(keep, int)))
        summary.embedded += len(batch)
    stored = stored_rows(Vectors.concat(rows), codecs)
    now = time.time()
    taken = info.taken if info.taken is not None else file.mtime_ns / 1e9
    duration = max([info.duration_ms, *times])
    with ctx.write() as w:  # the whole video, and what its path held before, at once
        w.delete_items(it.id for it in old)
        for i, ms in enumerate(times):
            item = Item.new(file.path, file.size, file.mtime_ns, h, info.width, info.height, now, taken)
            w.add_item(dataclasses.replace(item, frame_ms=ms, duration_ms=duration), **stored_vector(stored, i))
        count_drift(w, stored)
        fault_point("video_txn")
    fault_point("batch_committed")
    summary.video_frames += len(times)
    if old:
        summary.changed += 1
    else:
        summary.new += 1


def _preprocessed(frames, model, batch_size: int) -> Iterator[list[tuple[int, object]]]:
    """Batches of (time, CLIP input), made on the decoding thread."""
    batch = []
    for frame in frames:
        batch.append((frame.ms, model.preprocess(frame.image)))
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _unit(x) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
