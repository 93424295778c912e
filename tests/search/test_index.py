"""SetIndex: the codes of several codecs (and staged rows) searched as one index."""

import numpy as np
from kit import clip_like_embeddings

from semdb import Codec
from semdb.search.adc import FlatIndex
from semdb.search.index import SetIndex, codec_index


def _unit(X):
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def test_codecs_with_different_means_share_one_shortlist_fairly():
    """The scan scores of each codec include its <q, mean>, so one shortlist cut from all of
    them keeps what the exhaustive exact search finds, however far apart the codecs' means."""
    X = clip_like_embeddings(n=6000, dim=64, seed=7)["image_emb"]
    rng = np.random.default_rng(0)
    away = _unit(rng.standard_normal((1, 64)))
    A, B = X[:3000], _unit(X[3000:] + 0.6 * away)  # B's photos share a direction A's do not
    ca, cb = Codec.train(A[:1500], bits=64, seed=0), Codec.train(B[:1500], bits=64, seed=0)
    staged = X[:40] * 0.99
    index = SetIndex([codec_index(ca, ca.encode(A)), codec_index(cb, cb.encode(B)), FlatIndex(staged)])
    assert index.n == 6040
    Q = np.concatenate([A[1500:1600], B[1500:1600]])
    fast, _ = index.search(Q, 10)
    exact, _ = index.search(Q, 10, rows=np.arange(index.n))
    found = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(fast, exact)])
    assert found >= 0.97
    assert (fast[:100] < 3000).mean() > 0.5 and (fast[100:] >= 3000).mean() > 0.5  # each finds its own kind


def test_a_stack_of_codecs_scores_its_shortlist_as_each_codec_does():
    """Codecs of one shape are prepared and re-scored as one stack: the same hits and scores as
    each codec's own rerank, and those are the cosines to the decoded codes."""
    X = clip_like_embeddings(n=4500, dim=512, seed=8)["image_emb"]
    rng = np.random.default_rng(1)
    parts = [_unit(X[i * 1500 : (i + 1) * 1500] + 0.5 * _unit(rng.standard_normal((1, 512)))) for i in range(3)]
    codecs = [Codec.train(P[:1000], bits=256, seed=0) for P in parts]
    index = SetIndex([codec_index(c, c.encode(P)) for c, P in zip(codecs, parts)] + [FlatIndex(X[:30])])
    assert index.stack is not None and index.stacked == [0, 1, 2]
    Q = _unit(np.concatenate([P[1000:1020] for P in parts]))
    ids, scores = index.search(Q, 10)
    index.stack, index.stacked = None, []  # each codec on its own
    ids_alone, scores_alone = index.search(Q, 10)
    np.testing.assert_array_equal(ids, ids_alone)
    np.testing.assert_allclose(scores, scores_alone, rtol=1e-5, atol=1e-6)
    decoded = np.concatenate([c.decode(c.encode(P)) for c, P in zip(codecs, parts)] + [X[:30]])
    norms = np.linalg.norm(decoded, axis=1)
    norms[-30:] = 1.0  # staged rows score by inner product
    want = (Q @ decoded.T) / norms[None, :]
    np.testing.assert_allclose(scores, np.take_along_axis(want, ids, axis=1), rtol=1e-4, atol=1e-5)
