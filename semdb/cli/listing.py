"""How `semdb ls` and `semdb rm` print items (and `semdb query` its paths): plain lines (a path
is never cut or wrapped, so it can be copied), JSON, or paths alone as the file system's exact
bytes (for xargs)."""

from __future__ import annotations

import datetime
import os
import sys

from ..catalog import item_record
from ..errors import display_path
from ..search.hit import Hit
from ..store import Item
from ..video.timecode import format_time
from .base import print_json, say


def print_items(items: list[Item], as_json: bool, paths_only: bool, empty: str) -> None:
    """`semdb ls`'s answer on stdout: a table of id, date taken, size and path; a JSON array
    of catalog.item_record()s; or one path per line. No items: `empty` is said (on stderr)
    beside an empty answer."""
    if not items and not as_json:
        say(empty)
    elif as_json:
        print_json([item_record(it) for it in items])
    elif paths_only:
        print_paths(it.path for it in items)
    else:
        sys.stdout.write("".join(line + "\n" for line in table(items)))


def print_paths(paths) -> None:
    """One path a line as the file system's exact bytes (for `| xargs -d '\\n'`); a name holding
    a newline is shown escaped, so that one path stays one line."""
    sys.stdout.flush()
    for path in paths:
        raw = os.fsencode(path)
        sys.stdout.buffer.write((display_path(path).encode() if b"\n" in raw else raw) + b"\n")
    sys.stdout.buffer.flush()


def place(found: Item | Hit) -> str:
    """Where an item or a hit is: its path, and a video frame's time in it (`path @ 01:23`)."""
    return display_path(found.path) + ("" if found.frame_ms is None else f" @ {format_time(found.frame_ms)}")


def table(items: list[Item]) -> list[str]:
    """Aligned lines: id, date taken (local time), size, path."""
    width = max(len("id"), *(len(str(it.id)) for it in items))
    lines = [f"{'id':>{width}}  {'taken':<16}  {'size':>8}  path"]
    for it in items:
        lines.append(f"{it.id:>{width}}  {taken_text(it.taken):<16}  {size_text(it.size):>8}  {place(it)}")
    return lines


def print_removed(items: list[Item], as_json: bool, dry_run: bool, empty: str) -> None:
    """`semdb rm`'s answer: what it removed (or, with dry_run, would remove) on stdout, a count
    (or `empty`) on stderr."""
    if not items and not as_json:
        say(empty)
        return
    if as_json:
        print_json({"dry_run": dry_run, "removed": [item_record(it) for it in items]})
        return
    sys.stdout.write("".join(line + "\n" for line in table(items)))
    verb = "would remove" if dry_run else "removed"
    say(f"{verb} {len(items)} item{'' if len(items) == 1 else 's'} from the store (the files are untouched)")


def nothing(under=None, after=None, before=None, offset: int = 0) -> str:
    """The line that says no item matches these filters (past the first `offset`)."""
    parts = ["no items"]
    if under is not None:
        parts.append(f"under {display_path(os.path.abspath(os.path.expanduser(under)))}")
    if after:
        parts.append(f"taken on or after {after}")
    if before:
        parts.append(f"taken before {before}")
    if offset:
        parts.append(f"after the first {offset}")
    return " ".join(parts)


def taken_text(taken: float | None) -> str:
    if taken is None:
        return "-"
    try:
        return datetime.datetime.fromtimestamp(taken).strftime("%Y-%m-%d %H:%M")
    except (OverflowError, OSError, ValueError):
        return "-"


def size_text(size: int) -> str:
    """Bytes in decimal units, 3 significant digits: 812 B, 94.1 kB, 2.40 MB."""
    value, unit = float(size), "B"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 999.5 or unit == "TB":
            break
        value /= 1000
    return f"{size} B" if unit == "B" else f"{value:.3g} {unit}"
