"""The codec: exact ADC, packing, persistence, determinism, input validation, real-data accuracy."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semdb import Codec
from semdb.packing import pack, unpack
from semdb.errors import CodecError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "embeddings"


def clip_like(n, dim=128, seed=0):
    """Unit vectors in a cone with a decaying spectrum, like CLIP image embeddings."""
    rng = np.random.default_rng(seed)
    spectrum = 1.0 / np.arange(1, dim + 1) ** 0.8
    X = rng.standard_normal((n, dim)) * np.sqrt(spectrum) + 2.0 * np.ones(dim) / np.sqrt(dim)
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    return clip_like(600), clip_like(200, seed=1)


@pytest.fixture(scope="module")
def codec(data):
    return Codec.train(data[0], bits=64, seed=0)


def _queries_for(X, seed=5):
    """Text-like queries: the images pushed along a shared offset (a modality gap) plus noise."""
    rng = np.random.default_rng(seed)
    gap = rng.standard_normal(X.shape[1]) * 0.05
    T = X + gap + 0.05 * rng.standard_normal(X.shape).astype(np.float32)
    return (T / np.linalg.norm(T, axis=1, keepdims=True)).astype(np.float32)


SHAPES = [(4, 64, {}), (16, 128, {}), (256, 64, {}), (16, 400, {}), (4, 128, {}), (16, 256, {"coarse": True}),
          (16, 64, {"coarse": False}), (16, 128, {"queries": "unpaired"}), (16, 256, {"queries": "paired"})]


@pytest.mark.parametrize("k,bits,kw", SHAPES)
def test_adc_scores_equal_cosine_to_additive_decode(data, k, bits, kw):
    Xtr, Xte = data
    kw = dict(kw)
    if kw.get("queries") == "paired":
        kw.update(queries=_queries_for(Xtr), paired=True)
    elif kw.get("queries") == "unpaired":
        kw.update(queries=_queries_for(Xtr)[::-1][:150])
    c = Codec.train(Xtr, bits=bits, k=k, seed=0, **kw)
    assert c.bits == bits and c.code_bytes == bits // 8 and c.scoring == "cosine"
    codes = c.encode(Xte)
    assert codes.shape == (len(Xte), c.code_bytes) and codes.dtype == np.uint8
    Q = clip_like(7, seed=2)
    xh = c.decode_additive(codes)
    # The tables are exact: LUT sums give <q, x_hat> for the additive decode ...
    from semdb.search import adc_lut, adc_scores

    lut, off = adc_lut(Q, c.tables, c.tensors["mean"])
    np.testing.assert_allclose(adc_scores(lut, off, c.indices(codes)), Q @ xh.T, atol=1e-4)
    # ... ||x_hat|| comes from the code alone, and the codec scores by cosine to x_hat.
    np.testing.assert_allclose(c.norms(c.indices(codes)), np.linalg.norm(xh, axis=1), rtol=1e-4)
    np.testing.assert_allclose(c.scores(Q, codes), Q @ c.decode(codes).T, atol=1e-4)
    # The search returns the exact top-k of those scores (fast-scan shortlist + exact rerank).
    # (Compared by score: identical codes tie, and ties may come in any order.)
    ids, scores = c.search(Q, codes, k=10)
    exact = c.scores(Q, codes)
    np.testing.assert_allclose(scores, -np.sort(-exact, axis=1)[:, :10], atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(exact, ids, 1), scores, atol=1e-5)


def test_reconstruction_beats_mean_and_improves_with_bits(data):
    Xtr, Xte = data
    cos = {}  # mean reconstruction cosine per budget
    for bits in (32, 128, 256):
        c = Codec.train(Xtr, bits=bits, seed=0)
        cos[bits] = float((c.decode(c.encode(Xte)) * Xte).sum(1).mean())
    mean = Xtr.mean(0) / np.linalg.norm(Xtr.mean(0))
    assert float((Xte @ mean).mean()) < cos[32] < cos[128] < cos[256]


@given(st.integers(1, 8), st.integers(1, 40), st.integers(0, 30), st.integers(0, 2**32 - 1))
@settings(max_examples=200, deadline=None)
def test_pack_unpack_round_trip(nbits, m, n, seed):
    idx = np.random.default_rng(seed).integers(0, 2**nbits, (n, m))
    packed = pack(idx, nbits)
    assert packed.shape == (n, (m * nbits + 7) // 8)
    np.testing.assert_array_equal(unpack(packed, m, nbits), idx)


def test_save_load_round_trip_is_bit_exact(codec, data, tmp_path):
    path = tmp_path / "c.safetensors"
    codec.save(path)
    again = Codec.load(path)
    assert again.to_bytes() == codec.to_bytes() and again.id == codec.id
    np.testing.assert_array_equal(again.encode(data[1]), codec.encode(data[1]))
    assert Codec.from_bytes(codec.to_bytes()).config == codec.config


def test_same_seed_same_codes_other_seed_other_codec(data, codec):
    same = Codec.train(data[0], bits=64, seed=0)
    np.testing.assert_array_equal(same.encode(data[1]), codec.encode(data[1]))
    assert same.id == codec.id
    assert Codec.train(data[0], bits=64, seed=1).id != codec.id


def test_utilisation_and_entropy_rate(codec, data):
    assert 0.5 <= codec.config["utilisation"] <= 1.0
    codes = codec.encode(data[1])
    bits = codec.entropy_bits(codes)
    assert 0 < bits <= codec.bits + 8  # range coder overhead is a few bits for the whole batch
    np.testing.assert_array_equal(codec.decompress(codec.compress(codes), len(codes)), codes)


def test_non_unit_rows_are_normalised(codec, data):
    np.testing.assert_array_equal(codec.encode(3.5 * data[1]), codec.encode(data[1]))


@pytest.mark.parametrize("bad,msg", [
    (np.zeros((0, 128), np.float32), "non-empty"),
    (np.ones((3, 64), np.float32), "dimension 64"),
    (np.array([[np.nan] * 128], np.float32), "NaN"),
    (np.array([[np.inf] * 128], np.float32), "NaN or inf"),
    (np.zeros((2, 128), np.float32), "all zeros"),
    (np.ones((3,), np.float32), "(n, D)"),
])
def test_bad_embeddings_raise_clear_value_errors(codec, bad, msg):
    with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        codec.encode(bad)


def test_bad_queries_raise_clear_value_errors(codec):
    codes = codec.encode(clip_like(3))
    with pytest.raises(ValueError, match="queries: row 0 contains NaN"):
        codec.search(np.full((1, 128), np.nan, np.float32), codes)
    with pytest.raises(ValueError, match="queries: has dimension 3"):
        codec.scores(np.ones(3, np.float32), codes)


def test_bad_shapes_and_files(codec, data, tmp_path):
    with pytest.raises(CodecError, match="multiple of log2"):
        Codec.train(data[0], bits=65)
    with pytest.raises(CodecError, match="power of two"):
        Codec.train(data[0], bits=60, k=12)
    with pytest.raises(CodecError, match="uint8"):
        codec.decode(np.zeros((2, 3), np.uint8))
    corrupt = tmp_path / "bad.safetensors"
    raw = bytearray(codec.to_bytes())
    corrupt.write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(CodecError, match="corrupt"):
        Codec.load(corrupt)
    (tmp_path / "text.safetensors").write_text("hello")
    with pytest.raises(CodecError, match="not a semdb codec"):
        Codec.load(tmp_path / "text.safetensors")
    codec.save(tmp_path / "ok.safetensors")
    with pytest.raises(CodecError, match="512-d"):
        Codec.load(tmp_path / "ok.safetensors", dim=512)
    with pytest.raises(CodecError, match="cannot read"):
        Codec.load(tmp_path / "missing.safetensors")


def test_search_pads_when_fewer_items_than_k(codec, data):
    ids, scores = codec.search(data[1][:2], codec.encode(data[1][:3]), k=5)
    assert ids.shape == (2, 5) and (ids[:, 3:] == -1).all() and (ids[:, :3] >= 0).all()


# --- real CLIP embeddings (skip when ../shared/data is absent) --------------------------------

def _shopsphere():
    path = DATA / "shopsphere_fashionclip_pairs.npz"
    if not path.exists():
        pytest.skip(f"real embeddings not found at {path}")
    z = np.load(path)
    perm = np.random.default_rng(0).permutation(len(z["image_emb"]))
    half = len(perm) // 2
    return z["image_emb"][perm[:half]], z["image_emb"][perm[half:]], z["text_emb"][perm[half:]]


def _recall_at(scores, k):
    rank = (scores > np.diag(scores)[:, None]).sum(1)
    return float((rank < k).mean())


@pytest.mark.parametrize("bits,min_r1,min_r5", [(256, 0.80, 0.98), (128, 0.691, 0.95)])
def test_text_to_image_recall_on_held_out_fashionclip(bits, min_r1, min_r5):
    # Issue 2 targets: at 256 bits beat every FAISS quantizer (best R@1 0.691, R@5 0.968);
    # at 128 bits beat the best FAISS quantizer at 256 bits (R@1 0.691).
    train, gallery, queries = _shopsphere()
    codec = Codec.train(train, bits=bits, seed=0)
    S = codec.scores(queries, codec.encode(gallery))
    assert _recall_at(S, 1) >= min_r1 and _recall_at(S, 5) >= min_r5
