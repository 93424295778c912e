"""What one search asks: a frozen SearchRequest, built and checked here and nowhere else.

Each front end turns its own input into this record, and every back end reads it unchanged:

    semdb query ARGS           cli/search.py    SearchRequest.of(text, image=, like=, k=, under=, ...)
    GET/POST /api/search       serve/params.py  the query string -> SearchRequest.of(..., files=False)
    db.search(...)             api.py           SearchRequest.of(...), or a record given as is
    Cluster.search(...)        cluster.py       SearchRequest.of(text, files=False, ...), or a record
        --> query.Searcher (one store, in this process or in `semdb serve`), or the cluster's
            Router (which encodes its text once) and every ShardReplica (its k, where, nprobe)

A request is what to look for (weighted terms of a text, an image, a stored item to find more
like, or query vectors), how many hits (k), which items may be hits (where: a folder, a date
range) and how the hits are refined (within of the best, min_score), plus how much of an IVF to
scan (nprobe). One set of limits, below; the HTTP front ends (anyone on the network may ask)
hold k and the text to lower caps named here too.
"""

from __future__ import annotations

import datetime
import math
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from ..errors import InputError, display_path
from ..images import is_image_path

DEFAULT_K = 10
MAX_K = 10_000  # hits per query: nobody reads more, and the exact rerank's shortlist grows with k
HTTP_MAX_K = 1_000  # hits per query asked over HTTP: one JSON answer stays near 100 KB
HTTP_MAX_TEXT = 1_000  # characters of a query text asked over HTTP (CLIP reads its first 77 tokens)
MAX_NPROBE = 1 << 20  # IVF lists to scan: more than any store keeps (semdb.search.ivf)


@dataclass(frozen=True)
class Term:
    """One term of a query: a text, an image file, or a stored item (by id or path), with a
    weight (negative: subtracted)."""

    kind: str  # "text" | "image" | "item"
    value: str | int | object  # text, image path (or PIL image), item id or path
    weight: float = 1.0


@dataclass(frozen=True)
class Where:
    """Which items a search may return. `under`: an absolute folder; `after` / `before`:
    POSIX seconds of the date taken (after inclusive, before exclusive)."""

    under: str | None = None
    after: float | None = None
    before: float | None = None

    @classmethod
    def of(cls, under=None, after=None, before=None) -> Where:
        """From a folder (relative: to the working directory) and dates (see parse_date)."""
        w = cls(
            os.path.abspath(os.path.expanduser(os.fsdecode(under))).rstrip(os.sep) or os.sep if under else None,
            parse_date(after, "after"),
            parse_date(before, "before"),
        )
        if w.after is not None and w.before is not None and w.after >= w.before:
            raise InputError(f"after {after} is not earlier than before {before}: no date is in between")
        return w

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.under, self.after, self.before))

    def matches(self, paths, taken: np.ndarray) -> np.ndarray:
        """Which items pass (a bool mask), given their paths (bytes, os.fsencode's) and dates
        taken (POSIX seconds, NaN unknown: never passes a date filter)."""
        keep = self.in_dates(taken)
        if self.under is not None:
            keep &= self.inside(paths)
        return keep

    def inside(self, paths) -> np.ndarray:
        """Which of these paths (bytes) are under the folder (all, without one); a folder's
        own path ending in the separator is under it as its files are."""
        if self.under is None:
            return np.ones(len(paths), bool)
        prefix = os.fsencode(self.under if self.under.endswith(os.sep) else self.under + os.sep)
        return np.fromiter((p.startswith(prefix) for p in paths), bool, len(paths))

    def in_dates(self, taken: np.ndarray) -> np.ndarray:
        """Which of these dates taken pass the date range (NaN: unknown, never passes one)."""
        keep = np.ones(len(taken), bool)
        if self.after is not None:
            keep &= taken >= self.after
        if self.before is not None:
            keep &= taken < self.before
        return keep


def parse_date(value, flag: str) -> float | None:
    """A date or datetime (or "YYYY-MM-DD" / ISO 8601 text, local time unless it names its
    offset) as POSIX seconds."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if isinstance(value, datetime.date):
        return datetime.datetime(value.year, value.month, value.day).timestamp()
    try:
        return datetime.datetime.fromisoformat(str(value).strip()).timestamp()
    except ValueError:
        raise InputError(f"--{flag} {value!r}: not a date; use YYYY-MM-DD or YYYY-MM-DDTHH:MM") from None


_SPLIT = re.compile(r"\s+([+-])\s+")


def parse_terms(text: str, files: bool = True) -> list[Term]:
    """rclip's query arithmetic: terms joined by " + " or " - ", each optionally "WEIGHT:term";
    a term naming an existing image file is that image (`files=False`: every term is text, as a
    server needs), anything else is text. "2:cat + ./x.jpg - dog" -> cat (x2) + image - dog."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("empty query text: give some words to search for")
    parts = _SPLIT.split(" " + text.strip() + " ")
    terms, sign = [], 1.0
    for i, part in enumerate(parts):
        if i % 2:
            sign = 1.0 if part == "+" else -1.0
            continue
        part = part.strip()
        if not part:
            raise InputError(f"query {text!r}: a '+' or '-' has no term beside it")
        weight, _, rest = part.partition(":")
        try:
            w, part = (float(weight), rest.strip()) if rest and not (files and os.path.exists(part)) else (1.0, part)
        except ValueError:
            w = 1.0
        if not part:
            raise InputError(f"query {text!r}: the weight {weight}: has no term")
        if not np.isfinite(w):
            raise InputError(f"query {text!r}: the weight {weight} is not a finite number")
        kind = "image" if files and os.path.isfile(os.path.expanduser(part)) else "text"
        if kind == "text" and files and _names_a_file(part):
            raise InputError(
                f"{display_path(part)}: query image not found (a term that starts like a path or ends in an "
                f"image extension names a file)"
            )
        terms.append(Term(kind, os.path.expanduser(part) if kind == "image" else part, sign * w))
    return terms


def _names_a_file(term: str) -> bool:
    """Whether a term is meant as a file rather than words: "./x.jpg", "~/a", "/tmp/b", "c.png",
    "my photos/d.jpg" (not "AC/DC", "black and/or white" or "a cat.jpg in words")."""
    if term.startswith(("/", "./", "../", "~/", os.sep)):
        return True
    return is_image_path(term) and ("/" in term or os.sep in term or not any(c.isspace() for c in term))


def is_whole(value) -> bool:
    """Whether `value` is an integer (Python's or numpy's; a bool is not one)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_k(k, limit: int = MAX_K) -> int:
    """k as an int, or InputError: at least one hit, at most `limit` (MAX_K; HTTP_MAX_K over HTTP)."""
    if not is_whole(k) or k <= 0:
        raise InputError(f"k={k}: ask for at least one result")
    if k > limit:
        raise InputError(f"k={k}: at most {limit} results per query")
    return int(k)


def _number(name: str, value, lowest: float = -math.inf) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{name}={value!r}: expected a number")
    if not math.isfinite(value) or value < lowest:
        raise InputError(
            f"{name}={value}: expected a finite number" + (f" >= {lowest:g}" if lowest > -math.inf else "")
        )
    return float(value)


@dataclass(frozen=True)
class SearchRequest:
    """What one search asks; checked when built (InputError), read-only after.

    `text` (rclip's arithmetic), and/or `image` (a file or PIL image), and/or `like` (a stored
    item's id or path: more like it, from its code, itself left out); or instead `vector`,
    query embeddings (D,) or (nq, D), one search per row. `files=False`: no term of `text` is
    an image file. `k` hits (at most MAX_K); `where` (`under`, `after`, `before` in `of`);
    `within` (of the best score), `min_score`; `nprobe`: IVF lists to scan in a store past a
    million items (default nlist / 4); `frames`: every matching frame of a video is a hit
    (default: its best frame only). Build one with `SearchRequest.of`:

        request = semdb.SearchRequest.of("a red bicycle", k=10, under="./photos", after="2023-06-01")
        hits = db.search(request)
    """

    text: str | None = None
    image: Any = None
    like: int | str | None = None
    vector: np.ndarray | None = None
    files: bool = True
    k: int = DEFAULT_K
    where: Where = Where()
    within: float | None = None
    min_score: float | None = None
    nprobe: int | None = None
    frames: bool = False
    text_terms: tuple[Term, ...] = field(default=(), init=False, repr=False)  # `text` parsed, once

    @classmethod
    def of(
        cls,
        text: str | None = None,
        *,
        image=None,
        like=None,
        vector=None,
        files: bool = True,
        k: int = DEFAULT_K,
        under=None,
        after=None,
        before=None,
        within: float | None = None,
        min_score: float | None = None,
        nprobe: int | None = None,
        frames: bool = False,
    ) -> SearchRequest:
        """The request, its filters given as a folder (`under`) and dates (`after` inclusive,
        `before` exclusive: "YYYY-MM-DD", ISO text, date or datetime; the date taken, from
        EXIF, else the file's mtime)."""
        where = Where.of(under, after, before)
        return cls(text, image, like, vector, files, k, where, within, min_score, nprobe, bool(frames))

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        if self.text is not None:
            put("text_terms", tuple(parse_terms(self.text, self.files)))  # checked now, not at search time
        like = self.like
        if like is not None:
            if is_whole(like) and like >= 0:
                put("like", int(like))
            elif isinstance(like, (str, os.PathLike)) and os.fspath(like):
                put("like", os.path.abspath(os.path.expanduser(os.fsdecode(like))))
            else:
                raise InputError(f"--like {like!r}: give a stored item's id or path")
        if self.vector is not None:
            if self.text is not None or self.image is not None or like is not None:
                raise InputError("give query vectors, or a text, image or stored item to search with: not both")
            put("vector", _vectors(self.vector))
        elif self.text is None and self.image is None and like is None:
            raise InputError("empty query: give text, an image, a stored item (like) or a query vector")
        if not isinstance(self.where, Where):
            raise InputError(
                "where: a semdb.search.request.Where (SearchRequest.of builds it from under, after, before)"
            )
        put("files", bool(self.files))
        put("k", check_k(self.k))
        put("within", _number("within", self.within, 0.0))
        put("min_score", _number("min_score", self.min_score))
        n = self.nprobe
        if n is not None:
            if not is_whole(n) or not 0 < n <= MAX_NPROBE:
                raise InputError(f"nprobe={n}: give a positive number of IVF lists to scan (at most {MAX_NPROBE})")
            put("nprobe", int(n))

    def terms(self) -> list[Term]:
        """The weighted terms to embed and add: the text's, the image, the `like` item."""
        terms = list(self.text_terms)
        if self.image is not None:
            terms.append(Term("image", self.image))
        if self.like is not None:
            terms.append(Term("item", self.like))
        return terms

    def __eq__(self, other) -> bool:
        """Field by field; query vectors by value."""
        if not isinstance(other, SearchRequest):
            return NotImplemented
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                if a is None or b is None or not np.array_equal(a, b):
                    return False
            elif a != b:
                return False
        return True


def _vectors(vector) -> np.ndarray:
    """Query embeddings as a read-only (nq, D) float32 array, or InputError."""
    try:
        Q = np.array(vector, np.float32, ndmin=2)
    except (TypeError, ValueError):
        raise InputError("the query vector is not an array of numbers") from None
    if Q.ndim != 2 or not Q.size:
        raise InputError(f"query vectors of shape {Q.shape}: give one (D,) vector or (nq, D) rows")
    if not np.isfinite(Q).all():
        raise InputError("the query vector holds NaN or infinite values")
    Q.setflags(write=False)
    return Q
