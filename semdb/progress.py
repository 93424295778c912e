"""The one progress protocol of semdb: a callable ``progress(stage, done, total)``.

Ingest, codec training, the benchmark, export and import all report through it: `stage` names
the step ("hashing", "embedding", "training codec", ...), `done` of `total` units are finished.
The CLI turns it into rich progress bars (one per stage); library callers may pass any callable,
or None for silence.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str, int, int], None]


def report(progress: Progress | None, stage: str, done: int, total: int) -> None:
    """Call `progress` if there is one (so callers need no `if progress:` of their own)."""
    if progress is not None:
        progress(stage, done, total)
