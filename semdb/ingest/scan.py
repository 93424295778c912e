"""Stage 1, scan: discover the image files under the given paths and stat them; files whose
path, size and mtime match their stored item are unchanged and skipped without reading them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ImageError
from ..images import discover
from ..store import Item, Store
from .records import FileState, IngestSummary


@dataclass(frozen=True)
class Scan:
    todo: list[FileState]  # new or changed (by size or mtime): to hash
    seen: frozenset[str]  # every path discovered, unchanged ones included
    undated: list[Item]  # unchanged items stored before semdb kept the date taken


def scan(store: Store, paths, summary: IngestSummary) -> Scan:
    files = [
        Path(os.path.abspath(p))
        for p in discover(paths, exclude=[store.path], on_error=lambda p, why: summary.fail(ImageError(p, why)))
    ]
    todo, undated = [], []
    for path in files:
        try:
            st = path.stat()
        except OSError as err:
            summary.fail(ImageError(path, err.strerror or str(err)))
            continue
        item = store.item_by_path(os.fsdecode(path))
        if item and item.size == st.st_size and item.mtime_ns == st.st_mtime_ns:
            summary.unchanged += 1
            if item.taken is None:
                undated.append(item)
        else:
            todo.append(FileState.of(path, st, item))
    return Scan(todo, frozenset(os.fsdecode(p) for p in files), undated)
