"""Near-duplicate images, found from what the store keeps (codes, or staged embeddings).

    every item's vector (decoded code) --FAISS range search: cosine >= threshold--> neighbours
        --groups around representatives, every pair in a group >= threshold--> groups, largest first

Two copies of one photo (resized, re-compressed, lightly edited) have CLIP embeddings with a
cosine near 1; their codes each add quantisation noise. The default threshold is therefore
NEAR_DUPLICATE_COSINE less the codec's own noise: the mean squared reconstruction error of its
training items (2 - 2 cos(x, decode(code(x))), recorded when it was trained).

Groups do not chain: linking every pair above the threshold (union-find) joins a burst of
slowly changing shots into one group whose ends are not alike at all. Instead the item with the
most neighbours starts a group, and takes its neighbours, closest first, that are above the
threshold with every member so far; the rest are left for the next group. Each group is labelled
with its least similar pair; exact copies (the same content hash) are flagged as such, within a
group too. Cost: n x D floats in memory and an exact all-pairs scan, O(n^2 D): seconds for 10^4
items, minutes for 10^5.

A video is one member, not its hundreds of frames: a group names each file once (by its first
frame in the group), is reported only when it holds two files or more (two copies of a video, a
photo and the video it was taken from), and once for each set of files (the frames of two
copies of a video pair up one by one).
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
    if threshold is None:
        threshold = default_threshold(ctx)
    if not -1.0 <= threshold <= 1.0:
        raise InputError(f"--threshold {threshold}: a cosine between -1 and 1")
    ids, index = searcher.index()
    if index is None:
        return {"threshold": threshold, "groups": []}
    X = np.concatenate([ctx.stored_vectors(ids[i : i + CHUNK]) for i in range(0, len(ids), CHUNK)])
    X = np.ascontiguousarray(X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12), np.float32)
    out = []
    frames, files_seen = searcher.holds_frames(), set()
    for rows in _groups(X, _neighbours(X, threshold), threshold):
        items = ctx.store.items(ids[rows])
        if frames:  # a video counts once
            items, rows = _one_per_file(items, rows)
            files = frozenset(it.path for it in items)
            if len(files) < 2 or files in files_seen:
                continue
            files_seen.add(files)
        sim = X[rows] @ X[rows].T
        by_hash: dict[str, list[int]] = {}
        for it in items:
            by_hash.setdefault(it.hash, []).append(it.id)
        out.append(
            {
                "ids": [it.id for it in items],
                "paths": [it.path for it in items],
                "min_similarity": round(float(sim.min()), 4),
                "exact": len(by_hash) == 1,
                "copies": [same for same in by_hash.values() if len(same) > 1],  # ids of one content
            }
        )
    out.sort(key=lambda g: (-len(g["ids"]), g["ids"][0]))
    return {"threshold": round(threshold, 4), "groups": out}


def _one_per_file(items: list, rows: list[int]) -> tuple[list, list[int]]:
    seen: set[str] = set()
    kept = [(it, r) for it, r in zip(items, rows) if it is not None and it.path not in seen and not seen.add(it.path)]
    return [it for it, _ in kept], [r for _, r in kept]


def _neighbours(X: np.ndarray, threshold: float) -> list[np.ndarray]:
    """Each row's other rows with a cosine >= threshold, closest first."""
    import faiss  # noqa: PLC0415 - 0.2 s to import; `import semdb` must not load faiss

    flat = faiss.IndexFlatIP(X.shape[1])
    flat.add(X)
    out = []
    for start in range(0, len(X), CHUNK):
        lims, sims, found = flat.range_search(X[start : start + CHUNK], float(threshold))
        for q in range(len(lims) - 1):
            row, near, s = start + q, found[lims[q] : lims[q + 1]], sims[lims[q] : lims[q + 1]]
            keep = near != row
            out.append(near[keep][np.argsort(-s[keep], kind="stable")].astype(np.int64))
    return out


def _groups(X: np.ndarray, neighbours: list[np.ndarray], threshold: float) -> list[list[int]]:
    """Groups of rows (2 or more) in which every pair has a cosine >= threshold: the row with
    the most neighbours first takes those of its neighbours still free, closest first, that
    are >= threshold with every member so far."""
    free = np.ones(len(X), bool)
    groups = []
    for row in sorted(range(len(X)), key=lambda r: (-len(neighbours[r]), r)):
        if not free[row]:
            continue
        free[row] = False
        candidates = [int(j) for j in neighbours[row] if free[j]]
        if not candidates:
            continue
        fits = np.ones(len(candidates), bool)  # >= threshold with every member taken so far
        members = []
        for c, sim in enumerate(X[candidates] @ X[candidates].T):
            if fits[c]:
                members.append(candidates[c])
                fits &= sim >= threshold
        free[members] = False
        groups.append([row, *members])
    return groups
