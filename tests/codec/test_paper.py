"""The paper-faithful PQ-VAE baseline (semdb/codec/paper.py): shape choice, training, codes,
determinism, serialisation round trip, and that it learns something."""

import json

import numpy as np
import pytest

from semdb import Codec
from semdb.codec import paper
from semdb.codec.paper import PaperCodec, paper_shape, train_paper
from semdb.errors import CodecError
from semdb.search.index import codec_index

# Small network and few epochs: these tests exercise the real torch training loop quickly.
FAST = dict(hidden=64, feat=8, max_epochs=10, patience=10, batch_size=50)


def lowrank_data(n=300, dim=64, rank=8, seed=0):
    """Unit rows from a low-rank Gaussian around a common direction (like CLIP embeddings)."""
    rng = np.random.default_rng(seed)
    mean = rng.standard_normal(dim)
    mean /= np.linalg.norm(mean)
    X = 1.2 * mean + (rng.standard_normal((n, rank)) @ rng.standard_normal((rank, dim))) / np.sqrt(dim)
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    return lowrank_data()


@pytest.fixture(scope="module")
def params(data):
    return train_paper(data, bits=400, seed=0, **FAST)


def test_paper_shape_default_and_impossible():
    s = paper_shape(400, 768)
    assert (s["grid"], s["channels"], s["e_dim"], s["n_e"]) == (5, 128, 16, 4)
    assert paper_shape(3, 512) is None
    assert paper_shape(0, 512) is None


@pytest.mark.parametrize("bits", [64, 128, 200, 256, 300, 400, 512, 800])
def test_paper_shape_exact_bits(bits):
    s = paper_shape(bits, 512)
    assert s is not None
    slots = s["grid"] ** 2 * s["channels"] // s["e_dim"]
    assert s["channels"] % s["e_dim"] == 0 and 4 <= s["e_dim"] <= 32
    assert s["n_e"] in (2, 4, 16, 256)
    assert slots * int(np.log2(s["n_e"])) == bits == s["bits"]
    assert slots == s["m"]
    assert paper_shape(bits, 512) == s  # deterministic


def test_paper_shape_grid4_for_powers_of_two():
    s = paper_shape(256, 512)
    assert (s["grid"], s["channels"], s["e_dim"], s["n_e"]) == (4, 128, 16, 4)


def test_train_encode_decode(data, params):
    codec = PaperCodec(params)
    assert codec.bits == 400 and codec.m == 200 and codec.k == 4
    idx = codec.encode(data)
    assert idx.shape == (len(data), 200) and idx.dtype == np.int64
    assert idx.min() >= 0 and idx.max() < 4
    Y = codec.decode(idx)
    assert Y.shape == data.shape and Y.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(Y, axis=1), 1.0, atol=1e-5)
    # batching does not change anything
    np.testing.assert_array_equal(codec.encode(data, batch_size=128), idx)
    np.testing.assert_allclose(codec.decode(idx, batch_size=128), Y, atol=1e-6)
    assert params["train_seconds"] > 0 and 1 <= params["best_epoch"] <= params["epochs"]


def test_learns_better_than_mean(data, params):
    codec = PaperCodec(params)
    cos = float((codec.decode(codec.encode(data)) * data).sum(1).mean())
    mu = data.mean(0)
    baseline = float((data @ (mu / np.linalg.norm(mu))).mean())
    assert cos > baseline + 0.05, (cos, baseline)


def test_same_seed_identical(data, params):
    again = train_paper(data, bits=400, seed=0, **FAST)
    a, b = PaperCodec(params), PaperCodec(again)
    np.testing.assert_array_equal(a.encode(data), b.encode(data))
    for k, v in params.items():
        if k.startswith("paper."):
            np.testing.assert_array_equal(v, again[k])


def test_parts_round_trip(data, params):
    codec = PaperCodec(params)
    config, tensors = codec.to_parts()
    config = json.loads(json.dumps(config))  # the config must be JSON-able
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in tensors.values())
    back = PaperCodec.from_parts(config, tensors)
    idx = codec.encode(data)
    np.testing.assert_array_equal(back.encode(data), idx)
    np.testing.assert_array_equal(back.decode(idx), codec.decode(idx))
    assert back.to_parts()[0] == codec.to_parts()[0]


def test_bad_inputs(data, params):
    codec = PaperCodec(params)
    with pytest.raises(ValueError):
        train_paper(data, bits=3)
    with pytest.raises(ValueError):
        codec.encode(data[:, :10])
    with pytest.raises(ValueError):
        codec.decode(np.full((2, codec.m), 4))


def test_progress_protocol(data):
    calls = []
    train_paper(data[:120], bits=400, seed=0, progress=lambda *a: calls.append(a), **dict(FAST, max_epochs=3))
    assert [c[0] for c in calls] == ["training paper codec"] * len(calls) and calls[-1][2] == 3
    assert [c[1] for c in calls] == list(range(1, len(calls) + 1))


def test_codec_over_the_paper_variant_scores_by_decoding(data, monkeypatch, tmp_path):
    """semdb.Codec(arch="paper"): the PQ-VAE behind the codec's API (decode-then-score, no ADC parts)."""
    for key, value in FAST.items():
        monkeypatch.setitem(paper.DEFAULTS, key, value)
    codec = Codec.train(data[:200], bits=400, arch="paper", seed=0)
    assert (codec.variant, codec.bits, codec.n_coarse, codec.layout) == ("paper", 400, 0, None)
    codes = codec.encode(data[200:])
    X_hat = codec.decode(codes)
    np.testing.assert_allclose(np.linalg.norm(X_hat, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(X_hat, codec.decode_additive(codes))
    Q = data[200:210]
    S = codec.scores(Q, codes)
    np.testing.assert_allclose(S, Q @ X_hat.T, atol=1e-6)
    ids, _ = codec_index(codec, codes).search(Q, 1)
    np.testing.assert_array_equal(ids[:, 0], np.argmax(S, axis=1))
    for part in ("tables", "decoder"):
        with pytest.raises(CodecError, match="paper architecture"):
            getattr(codec, part)
    with pytest.raises(CodecError, match="paper architecture"):
        codec.norms(codec.indices(codes))
    codec.save(tmp_path / "paper.safetensors")
    again = Codec.load(tmp_path / "paper.safetensors")
    assert again.id == codec.id and again.variant == "paper"
    np.testing.assert_array_equal(again.encode(data[200:]), codes)
