"""The local engine: content hashes in a few I/O threads; decoding in worker threads while
CLIP runs on the calling thread."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from ..errors import ImageError
from ..images import content_hash
from .decode import decode_ahead, decode_job
from .encode import CodecSet, embed_and_encode
from .records import EmbeddedBatch, EmbedJob, FileState

HASH_THREADS = 4  # hashing is I/O: a few threads overlap it


class LocalEngine:
    def __init__(self, workers: int | None = None, max_megapixels=None):
        self.workers, self.max_megapixels = workers, max_megapixels
        self._pool = ThreadPoolExecutor(max_workers=HASH_THREADS)

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc) -> None:
        self._pool.shutdown(cancel_futures=True)

    def hashes(self, files: list[FileState]) -> Iterator:
        """content_hash of each file (or the ImageError), in order."""
        return self._pool.map(try_hash, [f.path for f in files])

    def embed(self, batches: list[list[EmbedJob]], codecs: CodecSet, emb) -> Iterator[EmbeddedBatch]:
        """Each batch decoded (worker threads), embedded by `emb` and encoded by `codecs`, in order."""
        decoded = decode_ahead(batches, lambda job: decode_job(emb, job, self.max_megapixels), self.workers)
        for jobs, images in decoded:
            yield EmbeddedBatch(tuple(jobs), tuple(images), embed_and_encode(emb, images, codecs))


def try_hash(path):
    try:
        return content_hash(path)
    except ImageError as err:
        return err
