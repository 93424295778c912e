"""Which files are videos: by extension, and for files without one by their first bytes
(what a camera or a recovery tool leaves unnamed). Standard library only: discovery imports it."""

from __future__ import annotations

import os

#: Lower-case file extensions (without the dot) that discovery treats as videos.
VIDEO_TYPES = {  # extension: the media type /video/{id} serves it as
    "mp4": "video/mp4",
    "m4v": "video/mp4",
    "mov": "video/quicktime",
    "webm": "video/webm",
    "mkv": "video/x-matroska",
    "avi": "video/x-msvideo",
    "3gp": "video/3gpp",
}
VIDEO_EXTENSIONS = frozenset(VIDEO_TYPES)


def is_video_path(path) -> bool:
    """True if the file name ends with one of VIDEO_EXTENSIONS (any case)."""
    return os.path.splitext(os.fsdecode(path))[1][1:].lower() in VIDEO_EXTENSIONS


def has_no_extension(path) -> bool:
    return not os.path.splitext(os.fsdecode(path))[1]


def sniffs_as_video(path) -> bool:
    """The file starts like an ISO media (mp4/mov/3gp: 'ftyp' box), Matroska/WebM (EBML) or
    AVI (RIFF....AVI) file. False for anything unreadable."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return head[4:8] == b"ftyp" or head[:4] == b"\x1a\x45\xdf\xa3" or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")


def is_video_file(path) -> bool:
    """A video by its extension, or (without an extension) by its first bytes."""
    return is_video_path(path) or (has_no_extension(path) and sniffs_as_video(path))
