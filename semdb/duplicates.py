"""Near-duplicate images, found from what the store keeps (codes, or staged embeddings).

    every item's vector (decoded code) --FAISS range search: cosine >= threshold--> pairs
        --union-find--> groups, largest first

Two copies of one photo (resized, re-compressed, lightly edited) have CLIP embeddings with a
cosine near 1; their codes each add quantisation noise. The default threshold is therefore
NEAR_DUPLICATE_COSINE less the codec's own noise: the mean squared reconstruction error of its
training items (2 - 2 cos(x, decode(code(x))), recorded when it was trained). Exact copies are
known by their content hash and are flagged as such. Cost: n x D floats in memory and an exact
all-pairs scan, O(n^2 D): seconds for 10^4 items, minutes for 10^5.

A video is one member, not its hundreds of frames: its frames start in one group, and a group
is reported when it holds two files or more (two copies of a video, a photo and the video it
was taken from), each file once, by its first frame in the group.
"""

from __future__ import annotations

import numpy as np

from .context import STATS_KEY, StoreContext
from .errors import InputError

NEAR_DUPLICATE_COSINE = 0.95  # float CLIP cosine of two versions of one photo
CHUNK = 4096  # queries per range search


def default_threshold(ctx: StoreContext) -> float:
    noise = (ctx.store.meta().get(STATS_KEY) or {}).get("train_error") or 0.0
    return float(NEAR_DUPLICATE_COSINE - noise)


def find_duplicates(ctx: StoreContext, searcher, threshold: float | None = None) -> dict:
    import faiss  # noqa: PLC0415 - 0.2 s to import; `import semdb` must not load faiss

    if threshold is None:
        threshold = default_threshold(ctx)
    if not -1.0 <= threshold <= 1.0:
        raise InputError(f"--threshold {threshold}: a cosine between -1 and 1")
    ids, index = searcher.index()
    if index is None:
        return {"threshold": threshold, "groups": []}
    codec = ctx.codec
    if codec is None:
        X = index.vectors / np.linalg.norm(index.vectors, axis=1, keepdims=True)
    else:
        _, codes = ctx.store.load_codes()
        X = np.concatenate([codec.decode(np.asarray(codes[i : i + CHUNK])) for i in range(0, len(codes), CHUNK)])
    flat = faiss.IndexFlatIP(X.shape[1])
    flat.add(np.ascontiguousarray(X, np.float32))
    parent = np.arange(len(X))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if searcher.holds_frames():  # a video's frames are one member from the start
        first_row: dict[str, int] = {}
        for row, it in enumerate(ctx.store.items(ids)):
            if it is not None:
                parent[row] = first_row.setdefault(it.path, row)
    for start in range(0, len(X), CHUNK):
        lims, sims, found = flat.range_search(X[start : start + CHUNK], float(threshold))
        for q in range(len(lims) - 1):
            for j in found[lims[q] : lims[q + 1]]:
                a, b = root(start + q), root(int(j))
                if a != b:
                    parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for i in range(len(X)):
        groups.setdefault(root(i), []).append(i)
    out = []
    for rows in groups.values():
        if len(rows) < 2:
            continue
        items, rows = _one_per_file(ctx.store.items(ids[rows]), rows)
        if len(rows) < 2:
            continue
        sim = X[rows] @ X[rows].T
        out.append(
            {
                "ids": [it.id for it in items],
                "paths": [it.path for it in items],
                "min_similarity": round(float(sim.min()), 4),
                "exact": len({it.hash for it in items}) == 1,
            }
        )
    out.sort(key=lambda g: (-len(g["ids"]), g["ids"][0]))
    return {"threshold": round(threshold, 4), "groups": out}


def _one_per_file(items: list, rows: list[int]) -> tuple[list, list[int]]:
    seen: set[str] = set()
    kept = [(it, r) for it, r in zip(items, rows) if it is not None and it.path not in seen and not seen.add(it.path)]
    return [it for it, _ in kept], [r for _, r in kept]
