"""Search a store: query embeddings in, hits out.

    text / image --CLIP--> q --index over the last committed codes (ADC shortlist + exact
    rerank; a store without a codec yet: exact search of its staged embeddings)--> Hits
"""

from __future__ import annotations

import os
from typing import NamedTuple, Optional

import numpy as np

from .context import StoreContext
from .errors import InputError, display_path
from .images import load_image
from .search import FlatIndex


class Hit(NamedTuple):
    path: str
    score: float
    id: int


class Searcher:
    """Queries over one store; the search index is rebuilt only after a commit."""

    def __init__(self, ctx: StoreContext):
        self.ctx = ctx
        self._index = None  # (generation, ids, search index)

    def text(self, text: str, k: int = 10, min_score: Optional[float] = None) -> list[Hit]:
        if not isinstance(text, str) or not text.strip():
            raise InputError("empty query text: give some words to search for")
        return self.vectors(self.ctx.text_encoder.encode_texts([text]), k, min_score)[0]

    def image(self, path, k: int = 10, min_score: Optional[float] = None) -> list[Hit]:
        if not os.path.exists(path):
            raise InputError(f"{display_path(path)}: query image not found")
        emb = self.ctx.embedder
        img = load_image(path, draft_size=emb.image_size)
        return self.vectors(emb.encode_images([img]), k, min_score)[0]

    def vectors(self, Q, k: int = 10, min_score: Optional[float] = None) -> list[list[Hit]]:
        if k <= 0:
            raise InputError(f"k={k}: ask for at least one result")
        ids, index = self.index()
        if index is None:
            return [[] for _ in range(len(Q))]
        rows, scores = index.search(np.asarray(Q, np.float32), k)
        floor = -np.inf if min_score is None else min_score
        results = []
        for row, score in zip(rows, scores):
            keep = (row >= 0) & (score >= floor)
            items = self.ctx.store.items(ids[row[keep]])
            results.append([Hit(it.path, float(s), int(it.id)) for it, s in zip(items, score[keep]) if it is not None])
        return results

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
            index = codec.index(np.asarray(codes)) if len(ids) else None
        self._index = (generation, ids, index)
        return ids, index
