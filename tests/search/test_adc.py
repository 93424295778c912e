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


def test_scan_and_rerank_in_the_slots_coordinates_score_as_the_decoded_codes():
    """A PCA-slot codec's slots each span a few of the embeddings' dimensions: the index reads
    queries in every slot's own coordinates (its LUT costs M K d), and its norms come from table
    look-ups (a coarse slot's pairs included); the scores are those of the decoded codes all the same."""
    X = clip_like_embeddings(n=2000, dim=512, seed=5)["image_emb"]
    Q = clip_like_embeddings(n=4, dim=512, seed=6)["text_emb"]
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    for bits in (128, 256):  # 128 bits: a coarse slot, whose word crosses every other slot
        codec = Codec.train(X[:1000], bits=bits, seed=0)
        codes = codec.encode(X)
        index = codec_index(codec, codes)
        assert index.slots.shape[2] <= 16 and index.slots.basis.shape[1] <= X.shape[1]
        assert isinstance(index.norms, adc.TableNorms) and index.norms.usable
        assert len(index.norms.first) > 0  # stages sharing a block of directions (and the coarse word) cross
        if codec.quantizer.n_coarse:
            assert (index.norms.first == 0).sum() == codec.quantizer.m - 1
        idx = codec.indices(codes)
        np.testing.assert_allclose(index.norms(idx), codec.norms(idx), rtol=1e-5)
        X_hat = codec.decode(codes)
        want = (Q @ X_hat.T) / np.linalg.norm(X_hat, axis=1)[None, :]
        ids, scores = index.search(Q, 10, shortlist=len(X) - 1)
        for q in range(len(Q)):
            np.testing.assert_allclose(scores[q], want[q, ids[q]], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(scores[q], np.sort(want[q])[::-1][:10], rtol=1e-4, atol=1e-5)


def test_an_exact_lut_scan_in_the_slots_coordinates_scores_as_the_decoded_codes():
    """8-bit sub-codes are scanned by FAISS's exact-LUT kernel (no fast-scan, no rerank): it too
    reads the queries in the slots' coordinates, and its scores include <q, b>."""
    rng = np.random.default_rng(2)
    m, k, dim, rank = 4, 256, 64, 12
    tables = (rng.standard_normal((m, k, rank)) @ rng.standard_normal((rank, dim))).astype(np.float32) / 10
    bias = rng.standard_normal(dim).astype(np.float32)
    idx = rng.integers(0, k, (500, m))
    index = adc.AdcIndex(tables, bias, idx.astype(np.uint8), nbits=8)
    assert not index.fast_scan and index.slots.shape == (m, k, rank)
    X_hat = bias + tables[np.arange(m), idx].sum(1)
    Q = rng.standard_normal((3, dim)).astype(np.float32)
    ids, scores = index.search(Q, 5)
    want = Q @ X_hat.T
    for q in range(len(Q)):
        np.testing.assert_allclose(scores[q], np.sort(want[q])[::-1][:5], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(scores[q], want[q, ids[q]], rtol=1e-4, atol=1e-4)
