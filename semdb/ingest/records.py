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
    """What a batch stores for its decodable images, row by row: a code of the codec
    `codec_ids[i]`, or (codec_ids[i] None, or no codec_ids at all) the float embedding, staged
    until a codec of the store's set takes it."""

    codes: np.ndarray | None = None  # uint8 (n, code_bytes); a staged row's is zeros
    embeddings: np.ndarray | None = None  # float (n, D): every row's, when some row is staged
    codec_ids: tuple | None = None  # (n,) the codec of each row, None for a staged row
    errors: np.ndarray | None = None  # with codes: each embedding's reconstruction error (drift; NaN: staged)
    outside: np.ndarray | None = None  # with codes: each one's share outside its codec's subspace (shift)

    def __len__(self) -> int:
        return len(self.codes if self.codes is not None else self.embeddings)

    def codec_of(self, i: int) -> str | None:
        return None if self.codec_ids is None else self.codec_ids[i]

    def rows(self, keep: np.ndarray) -> Vectors:
        """These vectors' rows `keep` (indices), in that order."""

        def pick(a):
            return None if a is None else a[keep]

        ids = None if self.codec_ids is None else tuple(self.codec_ids[i] for i in keep.tolist())
        return Vectors(pick(self.codes), pick(self.embeddings), ids, pick(self.errors), pick(self.outside))

    @staticmethod
    def concat(parts: list[Vectors]) -> Vectors:
        """One Vectors of `parts`' rows, in order (each staged part carries its embeddings)."""

        def cat(name, fill):
            arrays = [getattr(p, name) for p in parts]
            if all(a is None for a in arrays):
                return None
            return np.concatenate([a if a is not None else fill(p) for a, p in zip(arrays, parts)])

        ids = None
        if any(p.codec_ids is not None for p in parts):
            ids = tuple(i for p in parts for i in (p.codec_ids if p.codec_ids is not None else (None,) * len(p)))
        width = next(p.codes.shape[1] for p in parts if p.codes is not None) if ids else 0
        dim = next((p.embeddings.shape[1] for p in parts if p.embeddings is not None), 0)
        return Vectors(
            cat("codes", lambda p: np.zeros((len(p), width), np.uint8)),
            cat("embeddings", lambda p: np.zeros((len(p), dim), np.float16)),
            ids,
            cat("errors", lambda p: np.full(len(p), np.nan)),
            cat("outside", lambda p: np.full(len(p), np.nan)),
        )


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
