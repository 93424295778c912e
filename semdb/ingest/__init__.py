"""Ingest: image files -> CLIP embeddings -> codes -> the store. One module per stage:

    scan.py      discover + stat; unchanged files (path, size, mtime) are skipped   -> FileState
    classify.py  content hash; touched, moved, duplicate files settled without CLIP -> EmbedJob
    decode.py    decode + preprocess in worker threads, ahead of CLIP             -> DecodedImage
    encode.py    CLIP, then the codec if the store has one                         -> Vectors
    commit.py    one transaction per batch: items with codes or staged embeddings
    training.py  when the codec is trained (CodecPolicy) and installed
    local.py     the local engine (threads);  ray.py: the Ray engine (tasks and actors)
    run.py       `ingest`: the whole run, top to bottom

The records they exchange are in records.py.
"""

from .records import IngestSummary
from .run import IngestOptions, ingest
from .training import DEFAULT_BITS, CodecPolicy

__all__ = ["CodecPolicy", "DEFAULT_BITS", "IngestOptions", "IngestSummary", "ingest"]
