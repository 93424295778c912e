"""Stage 3, decode: read, decode and preprocess images in worker threads, ahead of CLIP.

Pillow releases the GIL while it decodes, so a few threads keep the model busy; at most two
batches are in flight so memory stays bounded. Used by both engines (the local one, and each
embedding actor on Ray).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from ..errors import ImageError
from ..faults import fault_point
from ..images import Header, load_image, read_header
from ..video.extract import frame_at
from .records import DecodedImage, EmbedJob

T = TypeVar("T")


def decode_image(embedder, path: str, max_megapixels) -> DecodedImage:
    """One image file, preprocessed for `embedder`; never raises for a bad file."""
    try:
        fault_point("decode")
        img = load_image(path, draft_size=embedder.image_size, max_megapixels=max_megapixels)
        # the file's own size and date (the decoded image may be draft-reduced)
        header = read_header(path) or Header(img.width, img.height, None)
        return DecodedImage(embedder.preprocess(img), header.width, header.height, taken=header.taken)
    except ImageError as err:
        return DecodedImage(None, error=err)
    except Exception as err:  # noqa: BLE001 - a Pillow bug on one odd file must not stop the run
        return DecodedImage(None, error=ImageError(path, f"cannot decode ({type(err).__name__}: {err})"))


def decode_job(embedder, job: EmbedJob, max_megapixels) -> DecodedImage:
    """A job's image: its file's, or for a stored video frame (a retrain re-reads those) the
    frame at its time; never raises for a bad file."""
    item = job.file.item
    if item is None or item.frame_ms is None:
        return decode_image(embedder, job.path, max_megapixels)
    try:
        img = frame_at(job.path, item.frame_ms, embedder.image_size, max_megapixels)
    except ImageError as err:
        return DecodedImage(None, error=err)
    return DecodedImage(embedder.preprocess(img), item.width, item.height, taken=item.taken)


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


def decode_ahead(
    batches: Sequence[Sequence[T]], decode: Callable[[T], DecodedImage], workers: int | None = None
) -> Iterator[tuple[Sequence[T], list[DecodedImage]]]:
    """Yield (batch, [decode(x) for x in batch]) batch by batch, decoding in worker threads
    (see ahead)."""
    if not batches:
        return

    def decoded():
        with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
            for batch in batches:
                yield batch, list(pool.map(decode, batch))

    yield from ahead(decoded())


def ahead(batches: Iterator, depth: int = 2) -> Iterator:
    """`batches` produced on a worker thread, at most `depth` ahead; its exception re-raised
    here; stopped and joined when the caller stops early (a decoding thread left running at
    exit can abort the interpreter)."""
    out: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(value) -> bool:
        while not stop.is_set():
            try:
                out.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def producer():
        try:
            for batch in batches:
                if not put(batch):
                    break
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            put(e)
            return
        finally:
            batches.close()
        put(done)

    thread = threading.Thread(target=producer, daemon=True)
    thread.start()
    try:
        while (item := out.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
