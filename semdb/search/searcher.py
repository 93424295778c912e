"""Search a store: a SearchRequest (semdb/search/request.py) reads left to right,
terms -> vector -> where -> limit -> refine.

terms ("2:cat + ./x.jpg - dog", an image, a stored item) --CLIP, or the item's stored code-->
one query vector q (or the request's own vectors) --where: rows whose path is under a folder /
taken in a date range--> index over the last committed codes (ADC shortlist + exact rerank;
a codec past semdb.ingest.ivf_upkeep.MIN_ITEMS codes gives its shortlist from its `nprobe` IVF lists nearest q; a
store without a codec yet: exact search of its staged embeddings) --limit k--> --min_score,
within X of the best--> Hits (path, score, id, frame_ms) --a video's best frame only (unless
`frames`)--> the k best
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ..errors import InputError, UnknownItemError, display_path
from ..images import load_image
from . import ivf
from .adc import Candidates, FlatIndex
from .filters import FilterFacts
from .hit import Hit
from .index import SetIndex, codec_index
from .ivf import IvfIndex
from .request import MAX_K, SearchRequest, Term, Where

# Frames fetched per hit asked for when hits are grouped by video: a video's frames crowd the
# shortlist (a matching scene is several frames), so k videos need more than k frames.
GROUP_FETCH = 8


class Searcher:
    """Queries over one store; the index is rebuilt, and what filters read caught up, only
    after a commit."""

    def __init__(self, ctx):
        """`ctx`: the StoreContext of the store to search (search sits below the context: it
        is handed one, never imports it)."""
        self.ctx = ctx
        self._index = None  # (generation, ids, search index)
        self.filter_facts = FilterFacts()  # every item's folder and date, caught up per commit
        self._aligned = None  # (generation, folder numbers, dates) aligned with the index's ids
        self._frames = None  # (generation, whether the store holds video frames)

    # --- the query vector -------------------------------------------------------------------
    def encode(self, request: SearchRequest, like: int | None = None) -> np.ndarray:
        """The request's query vectors (nq, D): its own, else the unit vector of its terms (1, D).
        `like`: the id of the request's `like` item, when the caller has looked it up."""
        if request.vector is not None:
            return request.vector
        if like is None and request.like is not None:
            like = self.stored_id(request.like)
        terms = [Term("item", like, t.weight) if t.kind == "item" else t for t in request.terms()]
        return self.vector(terms)

    def vector(self, terms: Sequence[Term]) -> np.ndarray:
        """The unit query vector of weighted terms (1, D); an "item" term's value is a stored id."""
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
        return self.item_vector(term.value)

    def stored_id(self, item) -> int:
        """The id of a stored item named by id or by (absolute) path, or InputError."""
        store = self.ctx.store
        found = store.get_item(item) if isinstance(item, int) else store.item_by_path(item)
        if found is None:
            raise UnknownItemError(f"--like {item}: not an item of {self.ctx.path} (give a stored id or path)")
        return int(found.id)

    def item_vector(self, item_id: int) -> np.ndarray:
        """A stored item's vector from what the store keeps: its decoded code (or staged
        embedding). No file is read, no CLIP runs."""
        ids, _ = self.index()
        if not (ids == item_id).any():
            raise InputError(f"no item {item_id} in {self.ctx.path}")
        return self.ctx.stored_vectors([item_id])

    # --- search -----------------------------------------------------------------------------
    def search(self, request: SearchRequest) -> list[list[Hit]]:
        """One list of hits per query vector, best first: one list for a request's terms, one
        per row of its `vector`. The `like` item itself is never a hit."""
        like = self._like(request)
        Q = self.encode(request, like)
        ids, index, rows = self._allowed(request, like)
        if index is None or (rows is not None and not len(rows)):
            return [[] for _ in range(len(Q))]
        group = not request.frames and self.holds_frames()
        k = min(request.k * GROUP_FETCH, MAX_K) if group else request.k
        skip = _skipped(like, rows)
        found, scores = index.search(Q, k + (skip is not None), rows=rows, **_nprobe(index, request))
        results = []
        for row, score in zip(found, scores):
            keep = row >= 0
            if skip is not None:
                keep &= ids[np.maximum(row, 0)] != skip
            if request.min_score is not None:
                keep &= score >= request.min_score
            if request.within is not None and keep.any():
                keep &= score >= score[keep].max() - request.within
            items = self.ctx.store.items(ids[row[keep]])
            hits = [Hit(it.path, float(s), int(it.id), it.frame_ms) for it, s in zip(items, score[keep]) if it]
            results.append((best_per_file(hits) if group else hits)[: request.k])
        return results

    def holds_frames(self) -> bool:
        """Whether the store holds video frames (read once per commit)."""
        generation = self.ctx.store.meta().get("generation")
        if self._frames is None or self._frames[0] != generation:
            self._frames = (generation, self.ctx.store.holds_frames())
        return self._frames[1]

    def candidates(self, request: SearchRequest, Q: np.ndarray | None = None) -> list[Candidates]:
        """Per query vector (`Q`, else the request's own), the search's two stages before its
        top k is cut: search.Candidates whose `rows` are item ids. What a sharded search
        merges (semdb/cluster.py): the union of its shards' candidates, cut as one store's
        scan cuts them, gives one store's hits."""
        like = self._like(request)
        Q = self.encode(request, like) if Q is None else np.asarray(Q, np.float32)
        ids, index, rows = self._allowed(request, like)
        if index is None or (rows is not None and not len(rows)):
            none = np.empty(0, np.float32)
            return [Candidates(np.empty(0, np.uint64), none, none, True) for _ in range(len(Q))]
        found = index.candidates(Q, request.k, rows=rows, **_nprobe(index, request))
        skip = _skipped(like, rows)
        keeps = [slice(None) if skip is None else ids[c.rows] != skip for c in found]
        return [Candidates(ids[c.rows[i]], c.approx[i], c.exact[i], c.complete) for c, i in zip(found, keeps)]

    def _like(self, request: SearchRequest) -> int | None:
        """The id of the request's `like` item (looked up once per search), or None."""
        return None if request.like is None else self.stored_id(request.like)

    def _allowed(self, request: SearchRequest, like: int | None):
        """(item ids, index, the index rows the request may return: None for all); `like`: the
        id of the item left out."""
        ids, index = self.index()
        if index is None:
            return ids, None, None
        return ids, index, self._rows(request.where, ids, like)

    def _rows(self, where: Where, ids: np.ndarray, exclude: int | None) -> np.ndarray | None:
        """Index rows the search may return (None: all). Without a filter, the `like` item
        `exclude` is dropped from the hits instead (_skipped): a search of chosen rows scores
        every one of them exactly, a whole store's worth for all but one."""
        if not where:
            return None
        keep = self.filter_facts.matches(where, *self._metadata(ids))
        if exclude is not None:
            keep &= ids != np.uint64(exclude)
        return np.flatnonzero(keep)

    def _metadata(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(folder numbers, dates taken with NaN for unknown) aligned with the index's ids: after
        a commit, only the item segments it rewrote are read (filters.py)."""
        generation = self._index[0]
        if self._aligned is None or self._aligned[0] != generation or generation is None:
            self.filter_facts.refresh(self.ctx.store)
            self._aligned = (generation, *self.filter_facts.aligned(ids))
        return self._aligned[1], self._aligned[2]

    def index(self):
        """(item ids, index) over the last committed codes and staged embeddings: one codec's
        index for a store of one codec and nothing staged, else a SetIndex of each codec's and
        the staged rows' (exact). A codec's index is its IVF when the store keeps one for it
        (past ivf_upkeep.MIN_ITEMS of its codes), else a scan of all its codes."""
        store = self.ctx.store
        generation = store.meta().get("generation")
        if self._index is not None and self._index[0] == generation:
            return self._index[1], self._index[2]
        groups = store.load_code_groups()
        staged = list(store.iter_staging()) if store.staging_count() else []
        if store.meta().get("generation") != generation:
            # a commit came in while staging was read (in chunks): a photo may have moved from
            # staging to a code in between, so read everything again
            return self.index()
        codecs, parts, current = self.ctx.codecs, [], generation
        for codec_id, (ids, codes) in groups.items():
            index = self._ivf_index(codecs[codec_id], ids, codes, generation)
            if index is False:  # a commit came in between: exhaustive now, the IVF next time
                index, current = None, None
            parts.append((ids, index or codec_index(codecs[codec_id], np.asarray(codes))))
        if staged:
            parts.append((np.concatenate([i for i, _ in staged]), FlatIndex(np.concatenate([e for _, e in staged]))))
        if len(parts) <= 1:
            ids, index = parts[0] if parts else (np.empty(0, np.uint64), None)
        else:
            ids, index = np.concatenate([i for i, _ in parts]), SetIndex([p for _, p in parts])
        self._index = (current, ids, index)
        return ids, index

    def _ivf_index(self, codec, ids, codes, generation):
        """The IVF index over these codes when the store keeps an IVF for this codec (codes
        whose segment has no list row are assigned here), else None; False when the IVF read
        is of another commit than the codes."""
        if not len(ids) or not ivf.supported(codec):
            return None
        try:
            got = self.ctx.store.load_ivf(codec.id)
        except InputError:  # a commit dropped the codec since its codes were read
            return False
        if got is None or got[1].get("codec_id") != codec.id:
            return None
        got_generation, info, C, lists = got
        if got_generation != generation or len(lists) != len(ids):
            return False
        missing = lists < 0
        if missing.any():
            lists = lists.copy()
            lists[missing] = ivf.Assigner(codec, C)(np.asarray(codes)[missing])
        return codec_index(codec, np.asarray(codes), ivf=(C, lists))


def _skipped(like: int | None, rows: np.ndarray | None) -> np.uint64 | None:
    """The id to drop from the hits: the `like` item when the scan was not already kept off it
    (no filter: Searcher._rows)."""
    return None if like is None or rows is not None else np.uint64(like)


def best_per_file(hits: list[Hit]) -> list[Hit]:
    """Each file's best hit (hits come best first): a video's best frame stands for the video."""
    seen: set[str] = set()
    return [h for h in hits if h.path not in seen and not seen.add(h.path)]


def _nprobe(index, request: SearchRequest) -> dict:
    """nprobe only means something to an IVF index (a smaller store scans every code)."""
    parts = index.parts if isinstance(index, SetIndex) else [index]
    return {"nprobe": request.nprobe} if any(isinstance(p, IvfIndex) for p in parts) else {}
