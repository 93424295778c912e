"""The codec: exact ADC, packing, persistence, determinism, input validation, real-data accuracy."""

import json
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from hypothesis import given, settings
from hypothesis import strategies as st

from semdb import Codec
from semdb.errors import CodecError
from semdb.packing import pack, unpack
from semdb.search.index import codec_index

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "embeddings"


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


SHAPES = [
    (4, 64, {}),
    (16, 128, {}),
    (256, 64, {}),
    (16, 64, {}),
    (16, 400, {}),
    (4, 128, {}),
    (16, 256, {"coarse": True}),
    (16, 64, {"coarse": False}),
    (16, 128, {"queries": "unpaired"}),
    (16, 256, {"queries": "paired"}),
]


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
    from semdb.codec.lut import adc_lut, adc_scores

    lut, off = adc_lut(Q, c.tables, c.tensors["mean"])
    np.testing.assert_allclose(adc_scores(lut, off, c.indices(codes)), Q @ xh.T, atol=1e-4)
    # ... ||x_hat|| comes from the code alone, and the codec scores by cosine to x_hat.
    np.testing.assert_allclose(c.norms(c.indices(codes)), np.linalg.norm(xh, axis=1), rtol=1e-4)
    np.testing.assert_allclose(c.scores(Q, codes), Q @ c.decode(codes).T, atol=1e-4)
    # The search returns the exact top-k of those scores (fast-scan shortlist + exact rerank).
    # (Compared by score: identical codes tie, and ties may come in any order.)
    ids, scores = codec_index(c, codes).search(Q, 10)
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


def test_training_does_not_depend_on_the_thread_count():
    # On 2 threads FAISS's k-means and the BLAS round sums differently and train another 64-bit
    # codec from these rows (semdb/threads.py; without its cap 600 x 128 gives two codecs, as
    # 2000 x 512 does); a store's codec must not depend on that.
    import threading

    from threadpoolctl import threadpool_info, threadpool_limits

    X = clip_like(600)
    ids = []
    for n in (1, 2):
        with threadpool_limits(limits=n):
            ids.append(Codec.train(X, bits=64, seed=0).id)
    # concurrent trainings share one process-wide BLAS setting: still the same codec, and the
    # pools are given back as they were
    before = [p["num_threads"] for p in threadpool_info()]
    trainers = [threading.Thread(target=lambda: ids.append(Codec.train(X, bits=64, seed=0).id)) for _ in range(2)]
    for t in trainers:
        t.start()
    for t in trainers:
        t.join()
    assert [p["num_threads"] for p in threadpool_info()] == before
    assert len(ids) == 4 and len(set(ids)) == 1, ids


def test_utilisation_and_entropy_rate(codec, data):
    assert 0.5 <= codec.config["utilisation"] <= 1.0
    codes = codec.encode(data[1])
    bits = codec.entropy_bits(codes)
    assert 0 < bits <= codec.bits + 8  # range coder overhead is a few bits for the whole batch
    np.testing.assert_array_equal(codec.decompress(codec.compress(codes), len(codes)), codes)


def test_non_unit_rows_are_normalised(codec, data):
    np.testing.assert_array_equal(codec.encode(3.5 * data[1]), codec.encode(data[1]))


@pytest.mark.parametrize(
    "bad,msg",
    [
        (np.zeros((0, 128), np.float32), "non-empty"),
        (np.ones((3, 64), np.float32), "dimension 64"),
        (np.array([[np.nan] * 128], np.float32), "NaN"),
        (np.array([[np.inf] * 128], np.float32), "NaN or inf"),
        (np.zeros((2, 128), np.float32), "all zeros"),
        (np.ones((3,), np.float32), "(n, D)"),
    ],
)
def test_bad_embeddings_raise_clear_value_errors(codec, bad, msg):
    with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        codec.encode(bad)


def test_bad_queries_raise_clear_value_errors(codec):
    codes = codec.encode(clip_like(3))
    with pytest.raises(ValueError, match="queries: row 0 contains NaN"):
        codec.scores(np.full((1, 128), np.nan, np.float32), codes)
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


def test_the_quantizer_variant_is_stored_by_name(codec, data):
    assert (codec.variant, codec.residual, codec.config["variant"]) == ("residual", True, "residual")
    slots = Codec.train(data[0], bits=128, seed=0)
    assert slots.variant == slots.config["variant"] == "pca-slots"
    for c in (codec, slots):  # a file written before the config named its variant: arch and residual say it
        old = {k: v for k, v in c.config.items() if k != "variant"}
        before = Codec.from_bytes(safetensors.numpy.save(dict(c.tensors), metadata={"semdb_codec": json.dumps(old)}))
        assert before.variant == c.variant and "variant" not in before.config
        np.testing.assert_array_equal(before.encode(data[1]), c.encode(data[1]))
    for bad, says in (({"variant": "other"}, "variant='other'"), ({"arch": "other"}, "arch='other'")):
        config = {k: v for k, v in codec.config.items() if k != "variant" or "variant" in bad} | bad
        raw = safetensors.numpy.save(dict(codec.tensors), metadata={"semdb_codec": json.dumps(config)})
        with pytest.raises(CodecError, match=says):
            Codec.from_bytes(raw)


def test_search_pads_when_fewer_items_than_k(codec, data):
    ids, scores = codec_index(codec, codec.encode(data[1][:3])).search(data[1][:2], 5)
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


# --- text queries, cosine scoring, the coarse slot -------------------------------------------


def test_config_records_what_the_codec_was_trained_with(data, tmp_path):
    Xtr, Xte = data
    T = _queries_for(Xtr)
    free = Codec.train(Xtr, bits=64, seed=0)
    assert (free.query_source, free.config["n_queries"], free.scoring, free.config["residual"]) == (
        "none",
        0,
        "cosine",
        1,
    )
    assert Codec.train(Xtr, bits=128, seed=0).config["coarse"] == 1
    assert "text_map" not in free.tensors and Codec.train(Xtr, bits=256, seed=0).config["coarse"] == 0
    bag = Codec.train(Xtr, bits=128, seed=0, queries=T[:100])
    assert (bag.query_source, bag.config["n_queries"]) == ("unpaired", 100) and bag.config["tau"] > 0
    paired = Codec.train(Xtr, bits=128, seed=0, queries=T, paired=True)
    assert (paired.query_source, paired.config["n_queries"]) == ("paired", len(T))
    assert (
        paired.tensors["text_map"].shape == (128, 128)
        and paired.tensors["decoder"].shape == paired.tensors["basis"].shape
    )
    assert len({free.id, bag.id, paired.id}) == 3
    assert Codec.train(Xtr, bits=64, seed=0, queries=T[:100]).config.get("residual", 0) == 0  # queries: PCA slots
    for c in (free, bag, paired):  # every new tensor persists: a loaded codec encodes identically
        c.save(tmp_path / "c.safetensors")
        again = Codec.load(tmp_path / "c.safetensors")
        assert again.config == c.config and again.id == c.id
        np.testing.assert_array_equal(again.encode(Xte), c.encode(Xte))


def test_residual_stages_are_the_pair_free_default_at_64_bits(data):
    Xtr, Xte = data
    c = Codec.train(Xtr, bits=64, seed=0)
    assert c.residual and c.config["residual"] == 1 and c.tensors["stages"].shape == (16, 16, c.config["p"])
    assert c.config["beam"] > 1 and c.config["train_beam"] > 1  # beam-search encoding, recorded
    assert not Codec.train(Xtr, bits=128, seed=0).residual  # above 64 bits: coarse word + PCA slots
    assert not Codec.train(Xtr, bits=64, seed=0, coarse=True).residual
    assert not Codec.train(Xtr[:40], bits=64, seed=0).residual  # too few images: the PCA slots
    # beam search beats greedy residual encoding on the held-out items (the point of the beam)
    greedy = Codec(dict(c.config, beam=1), dict(c.tensors))
    err = [((Xte - x.decode_additive(x.encode(Xte))) ** 2).sum(1).mean() for x in (c, greedy)]
    assert err[0] < err[1]
    with pytest.raises(CodecError, match="not with queries"):
        Codec.train(Xtr, bits=64, residual=True, queries=_queries_for(Xtr))
    with pytest.raises(CodecError, match="choose one"):
        Codec.train(Xtr, bits=64, residual=True, coarse=True)
    broken = dict(c.tensors, stages=c.tensors["stages"][:, :8])
    with pytest.raises(CodecError, match="corrupt"):
        Codec.from_bytes(Codec(c.config, broken).to_bytes())


def test_bad_queries_are_refused(data):
    Xtr, _ = data
    T = _queries_for(Xtr)
    with pytest.raises(CodecError, match="paired=True needs one query per training embedding"):
        Codec.train(Xtr, bits=64, queries=T[:10], paired=True)
    with pytest.raises(CodecError, match="queries: has dimension 64"):
        Codec.train(Xtr, bits=64, queries=T[:, :64])
    with pytest.raises(CodecError, match="paired=True needs queries"):
        Codec.train(Xtr, bits=64, paired=True)
    with pytest.raises(CodecError, match="queries: row 3 contains NaN"):
        Codec.train(Xtr, bits=64, queries=np.where(np.arange(len(T))[:, None] == 3, np.nan, T))
    with pytest.raises(CodecError, match="only the additive architecture"):
        Codec.train(Xtr, bits=400, arch="paper", queries=T)


def test_version_1_codec_files_still_load_and_score_by_inner_product(data):
    Xtr, Xte = data
    c = Codec.train(Xtr, bits=64, seed=0, coarse=False)
    old = {k: v for k, v in c.config.items() if k not in ("scoring", "coarse", "query_source", "n_queries")}
    old["version"] = 1
    v1 = Codec.from_bytes(Codec(old, dict(c.tensors)).to_bytes())
    assert v1.scoring == "ip" and v1.query_source == "none"
    codes = v1.encode(Xte)
    np.testing.assert_array_equal(codes, c.encode(Xte))
    Q = clip_like(5, seed=3)
    np.testing.assert_allclose(v1.scores(Q, codes), Q @ v1.decode_additive(codes).T, atol=1e-4)
    ids, scores = codec_index(v1, codes).search(Q, 5)
    np.testing.assert_allclose(scores, -np.sort(-v1.scores(Q, codes), axis=1)[:, :5], atol=1e-5)


def test_score_aware_refinement_never_raises_its_loss(data):
    from semdb.codec.additive import refine_anisotropic

    Xtr, Xte = data
    c = Codec.train(Xtr, bits=128, seed=0, coarse=False)
    t, lay = c.tensors, c.layout
    Z = ((Xte - t["mean"]) @ t["basis"]).reshape(len(Xte), lay.n_cols, lay.d)
    U = _queries_for(Xte)
    W = (U @ t["basis"]).reshape(Z.shape)
    r = ((Xte - t["mean"]) * U).sum(1) - (W * Z).sum((1, 2))
    mse = c.indices(c.encode(Xte))
    eta = 10.0

    def loss(idx):
        from semdb.codec.additive import decode_coords

        E = Z - decode_coords(idx, lay, t["scale"], t["codebook"])
        return (E * E).sum((1, 2)) + (eta - 1) * ((W * E).sum((1, 2)) + r) ** 2

    new = refine_anisotropic(Z, W, r, mse, lay, t["scale"], t["codebook"], eta, 2)
    assert (loss(new) <= loss(mse) + 1e-6).all() and loss(new).mean() < 0.9 * loss(mse).mean()


# --- real CLIP embeddings: the figures of docs/notes/CODEC.md ---------------------------------------


def _shopsphere_split(seed=0):
    path = DATA / "shopsphere_fashionclip_pairs.npz"
    if not path.exists():
        pytest.skip(f"real embeddings not found at {path}")
    z = np.load(path)
    perm = np.random.default_rng(seed).permutation(len(z["image_emb"]))
    tr, te = perm[: len(perm) // 2], perm[len(perm) // 2 :]
    return z["image_emb"][tr], z["text_emb"][tr], z["image_emb"][te], z["text_emb"][te]


@pytest.mark.parametrize(
    "bits,source,min_r1",
    [
        (256, "paired", 0.837),  # 0.95 x float (0.881)
        (256, "unpaired", 0.837),
        (128, "paired", 0.80),  # every FAISS quantizer at 256 bits: <= 0.691
        (64, "paired", 0.69),  # every FAISS quantizer at 64 bits: <= 0.652
        (128, "none", 0.76),  # pair-free, coarse slot + cosine
        (64, "none", 0.62),  # pair-free, residual stages in the image metric (seed 0: 0.627;
        # seeds 0-3 mean 0.663 against RQ8x8's 0.667, docs/notes/CODEC.md)
    ],
)
def test_recall_with_and_without_text_queries_on_held_out_fashionclip(bits, source, min_r1):
    train, train_text, gallery, queries = _shopsphere_split()
    kw = {} if source == "none" else dict(queries=train_text, paired=source == "paired")
    codec = Codec.train(train, bits=bits, seed=0, **kw)
    codes = codec.encode(gallery)
    S = codec.scores(queries, codes)
    assert _recall_at(S, 1) >= min_r1
    # the search (fast-scan shortlist by <q, x_hat>, cosine rerank) finds the same top-1
    ids, _ = codec_index(codec, codes).search(queries, 1)
    assert float((ids[:, 0] == np.arange(len(queries))).mean()) == pytest.approx(_recall_at(S, 1), abs=0.002)


def test_pair_free_64_bit_image_neighbours_on_held_out_fashionclip():
    # issue 12: LSQ8x8's image kNN@10 is 0.758 on this split (0.754 over training seeds)
    # (the bench re-normalises the rows: 6e-8 of input change gives another codec; docs/notes/CODEC.md)
    train, _, gallery, _ = _shopsphere_split()
    codec = Codec.train(train, bits=64, seed=0)
    assert codec.residual and codec.config["residual_metric_shrink"] == 0.95
    truth = gallery @ gallery.T
    np.fill_diagonal(truth, -np.inf)
    S = codec.scores(gallery, codec.encode(gallery))
    np.fill_diagonal(S, -np.inf)
    top, got = np.argsort(-truth, 1)[:, :10], np.argsort(-S, 1)[:, :10]
    assert np.mean([len(np.intersect1d(top[i], got[i])) / 10 for i in range(len(top))]) >= 0.74


def test_flickr8k_image_neighbours_do_not_regress():
    path = DATA / "flickr8k_openai_vitb32_images.npz"
    if not path.exists():
        pytest.skip(f"real embeddings not found at {path}")
    X = np.load(path)["image_emb"].astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    perm = np.random.default_rng(0).permutation(len(X))
    train, gallery = X[perm[:500]], X[perm[500:]]
    truth = gallery @ gallery.T
    np.fill_diagonal(truth, -np.inf)
    top = np.argsort(-truth, 1)[:, :10]
    # issue 12: no regression beyond 0.02 of the previous kNN@10 (0.545 / 0.671 / 0.744)
    for bits, before in ((64, 0.545), (128, 0.671), (256, 0.744)):
        codec = Codec.train(train, bits=bits, seed=0)
        S = codec.scores(gallery, codec.encode(gallery))
        np.fill_diagonal(S, -np.inf)
        got = np.argsort(-S, 1)[:, :10]
        recall = np.mean([len(np.intersect1d(top[i], got[i])) / 10 for i in range(len(top))])
        assert recall >= before - 0.02, (bits, recall)


def test_training_reports_through_the_progress_protocol(data):
    calls = []
    Codec.train(data[0], bits=64, seed=0, progress=lambda *a: calls.append(a))
    assert calls and all(stage == "training codec" and 0 < done <= total for stage, done, total in calls)
    assert [done for _, done, _ in calls] == list(range(1, len(calls) + 1))
