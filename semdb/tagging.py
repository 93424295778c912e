"""Zero-shot tagging: the best of a list of labels for every item, scored on the codes.

labels --prompt ("a photo of a {}.")--> CLIP text embeddings (L, D) --ADC on every code
    (or the staged embeddings)--> per item: best label and its score
A video is one row: its best-scoring frame's label, with that frame's `time` (seconds).
"""

from __future__ import annotations

import numpy as np

from .context import StoreContext
from .errors import InputError

CHUNK = 65536  # items scored at once


def classify(ctx: StoreContext, searcher, labels, prompt: str = "a photo of a {}.") -> list[dict]:
    labels = [str(label).strip() for label in (labels.split(",") if isinstance(labels, str) else labels)]
    labels = [label for label in labels if label]
    if not labels:
        raise InputError("--labels: give at least one label, e.g. --labels 'cat,dog,car'")
    if "{}" not in prompt:
        raise InputError(f"--prompt {prompt!r}: the template needs '{{}}' where the label goes")
    T = ctx.embedder.encode_texts([prompt.format(label) for label in labels])
    ids, index = searcher.index()
    if index is None:
        return []
    best, score = [], []
    for i in range(0, len(ids), CHUNK):
        X = ctx.stored_vectors(ids[i : i + CHUNK])  # each code decoded by its codec: unit vectors
        S = X @ T.T  # (n, L)
        best.append(S.argmax(1))
        score.append(S.max(1))
    best, score = np.concatenate(best), np.concatenate(score)
    order = np.argsort(ids, kind="stable")
    items = ctx.store.items(ids[order])
    rows: dict[str, dict] = {}  # by path: a video's frames compete for its one row
    for it, r in zip(items, order):
        if it is None:
            continue
        row = {"id": int(it.id), "path": it.path, "label": labels[int(best[r])], "score": round(float(score[r]), 6)}
        if it.frame_ms is not None:
            row["time"] = it.frame_ms / 1000
        if it.path not in rows or row["score"] > rows[it.path]["score"]:
            rows[it.path] = row
    return sorted(rows.values(), key=lambda row: row["id"])
