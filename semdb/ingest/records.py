"""The records ingest's stages hand each other (and nothing else): immutable, named fields.

FileState ----classify (hash)----> EmbedJob ----decode----> DecodedImage
    ----embed (+ encode)----> EmbeddedBatch ----commit----> store
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import ImageError, display_path
from ..store import Item

try:
    import resource
except ImportError:  # Windows: no peak memory figure
    resource = None


@dataclass(frozen=True)
class FileState:
    """A file found by discovery that is new, or whose size or mtime differ from its item."""

    path: str
    size: int
    mtime_ns: int
    item: Item | None  # the stored item at this path, if any

    @classmethod
    def of(cls, path, st: os.stat_result, item: Item | None) -> FileState:
        return cls(os.fsdecode(path), st.st_size, st.st_mtime_ns, item)


@dataclass(frozen=True)
class EmbedJob:
    """One distinct content that needs CLIP: the file, its content hash, and byte-identical
    copies new in this run (they get the same code without being embedded again)."""

    file: FileState
    hash: str
    copies: tuple[FileState, ...] = ()

    @property
    def path(self) -> str:
        return self.file.path


@dataclass(frozen=True)
class DecodedImage:
    """One job's image, preprocessed for CLIP (`pixels`), or why it could not be decoded."""

    pixels: Any  # float32 (3, H, W): numpy for ONNX, a torch tensor for torch; None when `error` is set
    width: int = 0
    height: int = 0
    error: ImageError | None = None
    taken: float | None = None  # EXIF date taken, if the file has one


@dataclass(frozen=True)
class Vectors:
    """What a batch stores for its decodable images, row by row: codes of the codec
    `codec_id`, or float embeddings (staged until the store has a codec)."""

    codes: np.ndarray | None = None  # uint8 (n, code_bytes)
    embeddings: np.ndarray | None = None  # float (n, D)
    codec_id: str | None = None
    errors: np.ndarray | None = None  # with codes: each embedding's reconstruction error (drift)
    outside: np.ndarray | None = None  # with codes: each embedding's share outside the codec's subspace (shift)

    def __len__(self) -> int:
        return len(self.codes if self.codes is not None else self.embeddings)


@dataclass(frozen=True)
class EmbeddedBatch:
    """An ingest batch after CLIP: `images[j]` is job j's decoding outcome; `vectors` holds one
    row per job whose image decoded, in job order."""

    jobs: tuple[EmbedJob, ...]
    images: tuple[DecodedImage, ...]
    vectors: Vectors | None  # None when no image of the batch decoded


@dataclass
class IngestSummary:
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    moved: int = 0
    duplicate: int = 0
    failed: int = 0
    failed_before: int = 0  # files that failed in an earlier run, unchanged since: skipped
    pruned: int = 0
    missing: int = 0  # items whose files are gone (removed with --prune)
    embedded: int = 0  # images and video frames through CLIP
    video_frames: int = 0  # frames of videos indexed by this run that were kept (stored)
    seconds: float = 0.0
    images_per_second: float | None = None  # of the embedding phase (run.py, EmbeddingRate); None: too short
    items: int = 0
    staged: int = 0  # items not compressed yet (the store has no codec)
    staged_frames: int = 0  # of the staged items, video frames
    codec_trained: bool = False
    retrain_advice: str | None = None  # why `semdb retrain` should run, if it should
    image_model: str = ""  # what embedded the images: "onnx fp32", "onnx int8" or "torch" ("": none did)
    onnx_export_seconds: float = 0.0  # this run exported the model to ONNX (a first ingest of it on a CPU)
    peak_rss_mb: float = 0.0  # the process's peak resident memory so far (MiB)
    failures: list = field(default_factory=list)  # [{"path", "reason"}]
    no_images: list = field(default_factory=list)  # given folders with no image file, given files that are not images

    def fail(self, error: ImageError) -> None:
        self.failures.append({"path": display_path(error.path), "reason": error.reason})
        self.failed = len(self.failures)

    def to_dict(self) -> dict:
        return asdict(self)


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB (0 where the OS does not say). Linux: VmHWM,
    which starts afresh at exec (ru_maxrss would carry over a large parent's peak)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    if resource is None:
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)  # bytes on macOS, KiB elsewhere
