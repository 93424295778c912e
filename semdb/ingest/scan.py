"""Stage 1, scan: discover the image files under the given paths and stat them; files whose
path, size and mtime match their stored item are unchanged and skipped without reading them,
and so are files that failed before, unchanged (ingest/failures.py).
A given folder with no image in it, or a given file that is not one, is named (`no_images`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ImageError, display_path
from ..images import IMAGE_EXTENSIONS, discover
from ..store import Item, Store
from .failures import failed_before, remembered
from .records import FileState, IngestSummary

NOT_AN_IMAGE = f"not an image (semdb reads {', '.join(sorted(IMAGE_EXTENSIONS))} files)"


@dataclass(frozen=True)
class Scan:
    todo: list[FileState]  # new or changed (by size or mtime): to hash
    seen: frozenset[str]  # every path discovered, unchanged ones included
    undated: list[Item]  # unchanged items stored before semdb kept the date taken


def scan(store: Store, paths, summary: IngestSummary, retry_failed: bool = False) -> Scan:
    """`retry_failed`: also the files that failed before, unchanged (else skipped, counted)."""
    failed = {} if retry_failed else remembered(store)
    files = [
        Path(os.path.abspath(p))
        for p in discover(paths, exclude=[store.path], on_error=lambda p, why: summary.fail(ImageError(p, why)))
    ]
    _name_paths_without_images(paths, files, summary)
    todo, undated = [], []
    for path in files:
        try:
            st = path.stat()
        except OSError as err:
            summary.fail(ImageError(path, err.strerror or str(err)))
            continue
        if failed and failed_before(failed.get(os.fsdecode(path)), st):
            summary.failed_before += 1
            continue
        item = store.item_by_path(os.fsdecode(path))
        if item and item.size == st.st_size and item.mtime_ns == st.st_mtime_ns:
            summary.unchanged += 1
            if item.taken is None:
                undated.append(item)
        else:
            todo.append(FileState.of(path, st, item))
    return Scan(todo, frozenset(os.fsdecode(p) for p in files), undated)


def _name_paths_without_images(paths, files: list[Path], summary: IngestSummary) -> None:
    """Each given folder under which no image was found, and each given file that is not an
    image (a failure as well): else a run that found nothing only says "new 0"."""
    found = {os.path.realpath(f) for f in files}
    for given in paths:
        path = Path(os.path.abspath(os.fsdecode(given)))
        if path.is_dir():
            inside = os.path.join(os.path.realpath(path), "")
            if not any(f.startswith(inside) for f in found):
                summary.no_images.append(display_path(given))
        elif os.path.realpath(path) not in found:
            summary.fail(ImageError(given, NOT_AN_IMAGE))
            summary.no_images.append(display_path(given))
