"""Search a store: a query reads left to right, terms -> vector -> where -> limit -> refine.

terms ("2:cat + ./x.jpg - dog", a stored item) --CLIP, or the item's stored code-->
one query vector q --where: rows whose path is under a folder / taken in a date range-->
index over the last committed codes (ADC shortlist + exact rerank; past semdb.ivf.MIN_ITEMS
codes the shortlist comes from the `nprobe` IVF lists nearest q; a store without a codec
yet: exact search of its staged embeddings) --limit k--> --within X of the best-->
Hits (path, score, id)
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from . import ivf
from .context import StoreContext
from .errors import InputError, display_path
from .images import load_image
from .ivf import IvfIndex
from .search import Candidates, FlatIndex

MAX_K = 10_000  # a larger k is refused: nobody reads that many hits, and it costs memory


class Hit(NamedTuple):
    path: str
    score: float
    id: int


@dataclass(frozen=True)
class Term:
    """One term of a query: a text, an image file, or a stored item (by id), with a weight
    (negative: subtracted)."""

    kind: str  # "text" | "image" | "item"
    value: str | int | object  # text, image path (or PIL image), item id
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


def parse_date(value, flag: str) -> float | None:
    """A date or datetime (or "YYYY-MM-DD" / ISO 8601 text, local time) as POSIX seconds."""
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
        terms.append(Term(kind, os.path.expanduser(part) if kind == "image" else part, sign * w))
    return terms


class Searcher:
    """Queries over one store; the index (and the metadata filters read) are rebuilt only after
    a commit."""

    def __init__(self, ctx: StoreContext):
        self.ctx = ctx
        self._index = None  # (generation, ids, search index)
        self._meta = None  # (generation, paths, taken) aligned with the index's ids

    # --- the query vector -------------------------------------------------------------------
    def vector(self, terms: Sequence[Term]) -> np.ndarray:
        """The unit query vector of weighted terms (1, D)."""
        if not terms:
            raise InputError("empty query: give text, an image or a stored item")
        total = None
        for term in terms:
            v = self._embed(term)[0]
            total = term.weight * v if total is None else total + term.weight * v
        norm = float(np.linalg.norm(total))
        if norm < 1e-6:
            raise InputError("the query's terms cancel out: nothing is left to search for")
        return (total / norm)[None, :].astype(np.float32)

    def _embed(self, term: Term) -> np.ndarray:
        if term.kind == "text":  # the text tower only (a cached ONNX export when there is one)
            if not str(term.value).strip():
                raise InputError("empty query text: give some words to search for")
            return self.ctx.text_encoder.encode_texts([str(term.value)])
        if term.kind == "image":
            emb = self.ctx.embedder
            img = term.value
            if isinstance(img, (str, bytes, os.PathLike)):
                if not os.path.exists(img):
                    raise InputError(f"{display_path(img)}: query image not found")
                img = load_image(img, draft_size=emb.image_size)
            return emb.encode_images([img])
        return self.item_vector(int(term.value))

    def item_vector(self, item_id: int) -> np.ndarray:
        """A stored item's vector from what the store keeps: its decoded code (or staged
        embedding). No file is read, no CLIP runs."""
        ids, index = self.index()
        row = np.flatnonzero(ids == item_id)
        if not len(row):
            raise InputError(f"no item {item_id} in {self.ctx.path}")
        codec = self.ctx.codec
        if codec is None:
            return index.vectors[row[:1]]
        _, codes = self.ctx.store.load_codes()
        return codec.decode(np.asarray(codes)[row[:1]])

    # --- search -----------------------------------------------------------------------------
    def search(
        self,
        terms: Sequence[Term],
        k: int = 10,
        where: Where = Where(),
        within: float | None = None,
        min_score: float | None = None,
        exclude: Sequence[int] = (),
        nprobe: int | None = None,
    ) -> list[Hit]:
        _check_k(k)
        _check_nprobe(nprobe)
        q = self.vector(terms)
        return self._search(q, k, where, within, min_score, exclude, nprobe)[0]

    def vectors(
        self,
        Q,
        k: int = 10,
        min_score: float | None = None,
        where: Where = Where(),
        within: float | None = None,
        nprobe: int | None = None,
    ) -> list[list[Hit]]:
        _check_k(k)
        _check_nprobe(nprobe)
        return self._search(np.asarray(Q, np.float32), k, where, within, min_score, (), nprobe)

    def _search(self, Q, k, where, within, min_score, exclude, nprobe=None) -> list[list[Hit]]:
        ids, index = self.index()
        if index is None:
            return [[] for _ in range(len(Q))]
        rows = self._rows(where, ids, exclude)
        if rows is not None and not len(rows):
            return [[] for _ in range(len(Q))]
        # nprobe only means something to an IVF index (a smaller store scans every code)
        found, scores = index.search(Q, k, rows=rows, **({"nprobe": nprobe} if isinstance(index, IvfIndex) else {}))
        results = []
        for row, score in zip(found, scores):
            keep = row >= 0
            if min_score is not None:
                keep &= score >= min_score
            if within is not None and keep.any():
                keep &= score >= score[keep].max() - within
            items = self.ctx.store.items(ids[row[keep]])
            results.append([Hit(it.path, float(s), int(it.id)) for it, s in zip(items, score[keep]) if it is not None])
        return results

    def candidates(self, Q, k: int = 10, where: Where = Where(), nprobe: int | None = None) -> list[Candidates]:
        """Per query, the search's two stages before its top k is cut: search.Candidates whose
        `rows` are item ids. What a sharded search merges (semdb/cluster.py): the union of its
        shards' candidates, cut as one store's scan cuts them, gives one store's hits."""
        _check_k(k)
        _check_nprobe(nprobe)
        Q = np.asarray(Q, np.float32)
        ids, index = self.index()
        rows = None if index is None else self._rows(where, ids, ())
        if index is None or (rows is not None and not len(rows)):
            none = np.empty(0, np.float32)
            return [Candidates(np.empty(0, np.uint64), none, none, True) for _ in range(len(Q))]
        found = index.candidates(Q, k, rows=rows, **({"nprobe": nprobe} if isinstance(index, IvfIndex) else {}))
        return [Candidates(ids[c.rows], c.approx, c.exact, c.complete) for c in found]

    def _rows(self, where: Where, ids: np.ndarray, exclude) -> np.ndarray | None:
        """Index rows the search may return (None: all)."""
        if not where and not len(exclude):
            return None
        keep = ~np.isin(ids, np.asarray(list(exclude), np.uint64))
        if where:
            paths, taken = self._metadata(ids)
            if where.under is not None:
                prefix = where.under if where.under.endswith(os.sep) else where.under + os.sep
                keep &= np.array([p.startswith(prefix) for p in paths], bool)
            if where.after is not None:
                keep &= taken >= where.after  # NaN (date unknown) never passes
            if where.before is not None:
                keep &= taken < where.before
        return np.flatnonzero(keep)

    def _metadata(self, ids: np.ndarray) -> tuple[list[str], np.ndarray]:
        generation = self._index[0]
        if self._meta is None or self._meta[0] != generation:
            items = self.ctx.store.items(ids)
            self._meta = (
                generation,
                [it.path if it else "" for it in items],
                np.array([np.nan if it is None or it.taken is None else it.taken for it in items]),
            )
        return self._meta[1], self._meta[2]

    def index(self):
        """(item ids, index) over the last committed codes (or staged embeddings)."""
        store = self.ctx.store
        generation = store.meta().get("generation")
        if self._index is not None and self._index[0] == generation:
            return self._index[1], self._index[2]
        codec = self.ctx.codec
        if codec is None:  # no codec yet: search the staged embeddings exactly
            staged = list(store.iter_staging())
            if store.codec_bytes() is not None:
                # The codec (and with it every code) was committed while staging was read, in
                # chunks: search the codes instead of a part of the staged rows.
                return self.index()
            ids = np.concatenate([i for i, _ in staged]) if staged else np.empty(0, np.uint64)
            index = FlatIndex(np.concatenate([e for _, e in staged])) if staged else None
        else:
            ids, codes = store.load_codes()
            index = self._ivf_index(codec, ids, codes, generation)
            if index is False:  # a commit came in between: exhaustive now, the IVF next time
                self._index = (None, ids, codec.index(np.asarray(codes)))
                return ids, self._index[2]
            if index is None:
                index = codec.index(np.asarray(codes)) if len(ids) else None
        self._index = (generation, ids, index)
        return ids, index

    def _ivf_index(self, codec, ids, codes, generation):
        """The IVF index over these codes when the store keeps an IVF for this codec (codes
        whose segment has no list row are assigned here), else None; False when the IVF read
        is of another commit than the codes."""
        if not len(ids) or not ivf.supported(codec):
            return None
        got = self.ctx.store.load_ivf()
        if got is None or got[1].get("codec_id") != codec.id:
            return None
        got_generation, info, C, lists = got
        if got_generation != generation or len(lists) != len(ids):
            return False
        missing = lists < 0
        if missing.any():
            lists = lists.copy()
            lists[missing] = ivf.Assigner(codec, C)(np.asarray(codes)[missing])
        return codec.index(np.asarray(codes), ivf=(C, lists))


def _check_nprobe(nprobe) -> None:
    if nprobe is not None and (not isinstance(nprobe, (int, np.integer)) or isinstance(nprobe, bool) or nprobe <= 0):
        raise InputError(f"nprobe={nprobe}: give a positive number of IVF lists to scan")


def _check_k(k: int) -> None:
    if not isinstance(k, (int, np.integer)) or k <= 0:
        raise InputError(f"k={k}: ask for at least one result")
    if k > MAX_K:
        raise InputError(f"k={k}: at most {MAX_K} results per query")
