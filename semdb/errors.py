"""Errors semdb raises on bad input. The CLI prints ``str(err)`` as one line and exits with
``err.exit_code``; the Python API lets them propagate. Each message names the file or argument
and says what to do."""

import os


def display_path(path) -> str:
    """A printable, single-line form of ``path``, as every message names a file.

    File names may hold bytes that are not UTF-8 (kept by Python as surrogate escapes, which
    crash ``print``) or newlines (which would break one-line error messages); both are shown
    escaped instead.
    """
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


class SemdbError(Exception):
    """Base class: a problem the user can fix. Never a bug."""

    exit_code = 1


class InputError(SemdbError, ValueError):
    """A bad argument or input value (empty query, missing query image, NaN embeddings...)."""

    exit_code = 2


class UnknownItemError(InputError):
    """An item id or path that names no stored item (a server answers it with 404)."""


class ModelError(SemdbError):
    """The CLIP model cannot be loaded (no network, missing local folder, bad weights)."""

    exit_code = 3


class StoreError(SemdbError):
    """The store is not a store, is corrupt, is from a newer schema, or was made with another model."""

    exit_code = 4


class StoreLockedError(StoreError):
    """Another process is writing to the store."""

    exit_code = 5


class ShardError(StoreError):
    """A shard of a sharded search (semdb.cluster) does not fit the others, or did not answer."""


class CodecError(SemdbError, ValueError):
    """A codec file is corrupt, or does not fit the embeddings it is given."""

    exit_code = 6


class ImageError(SemdbError):
    """One image cannot be read (truncated, not an image, too large). Ingest lists it as failed.

    `path` and `reason` are kept as fields (ingest lists them apart; they survive pickling
    across Ray); the message is "PATH: reason"."""

    exit_code = 7

    def __init__(self, path, reason: str):
        super().__init__(path, reason)
        self.path, self.reason = path, reason

    def __str__(self) -> str:
        return f"{display_path(self.path)}: {self.reason}"
