"""AdcIndex's filtered search: every kept row scored exactly, against the decoded codes."""

import numpy as np
from kit import clip_like_embeddings

from semdb import Codec
from semdb.search import adc
from semdb.search.index import codec_index


def test_a_long_filter_scores_every_row_exactly_as_a_short_one_does():
    X = clip_like_embeddings(n=6000, dim=64, seed=3)["image_emb"]
    codec = Codec.train(X[:2000], bits=64, seed=0)
    codes = codec.encode(X)
    index = codec_index(codec, codes)
    assert index.norms is not None  # a cosine codec: scores divide by ||x_hat||
    Q = clip_like_embeddings(n=3, dim=64, seed=4)["text_emb"]
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    X_hat = codec.decode(codes)
    want = (Q @ X_hat.T) / np.linalg.norm(X_hat, axis=1)[None, :]

    long_rows = np.delete(np.arange(len(X)), 17)  # `like` item 17: every row but one
    assert len(long_rows) >= adc.ALL_NORMS_FROM
    short_rows = np.arange(0, len(X), 7)[:200]
    for rows in (short_rows, long_rows, short_rows):  # the short one before and after the norms are kept
        ids, scores = index.search(Q, 10, rows=rows)
        for q in range(len(Q)):
            best = rows[np.argsort(-want[q, rows], kind="stable")[:10]]
            np.testing.assert_allclose(scores[q], want[q, ids[q]], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(np.sort(want[q, ids[q]]), np.sort(want[q, best]), rtol=1e-4, atol=1e-5)
            assert 17 not in ids[q] or rows is short_rows
    assert index._all_norms is not None and len(index._all_norms) == len(X)
