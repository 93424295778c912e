"""Tests of semdb.bench: metrics on hand-made cases, input validation, an end-to-end synthetic
run (JSON schema, Parquet, plot), and anchors on the shared evaluation data (skipped when
../shared/data is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from kit import clip_like_embeddings

from semdb.bench import (
    ROW_KEYS,
    Variant,
    load_embeddings,
    make_split,
    make_table,
    run_bench,
    save_embeddings,
    source_shift,
    split_indices,
    to_json,
    validate,
    write_json,
    write_parquet,
    write_plot,
)
from semdb.bench import metrics as M
from semdb.bench.methods import PQMethod, SignBitsMethod, categorical_entropy_bits, unpack_subcodes
from semdb.bench.runner import check_methods
from semdb.errors import InputError

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "embeddings"
SHOP = DATA / "shopsphere_fashionclip_pairs.npz"
FLICKR = DATA / "flickr8k_openai_vitb32_images.npz"
needs_data = pytest.mark.skipif(
    not SHOP.exists() or not FLICKR.exists(),
    reason="../shared/data/embeddings is absent (evaluation data lives outside the repo)",
)


# --------------------------------------------------------------------------------------------
# metrics on hand-made cases


def test_target_ranks_and_recall():
    S = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.1], [0.5, 0.6, 0.4]])
    ranks = M.target_ranks(S, np.arange(3))
    assert ranks.tolist() == [0, 0, 2]
    assert M.paired_recall(S, ks=(1, 2, 3)) == {1: pytest.approx(2 / 3), 2: pytest.approx(2 / 3), 3: 1.0}


def test_ties_count_against_the_method():
    # every item scores the same: nothing is found at rank 1
    S = np.ones((4, 4))
    assert M.paired_recall(S, ks=(1, 4)) == {1: 0.0, 4: 1.0}
    # a single tie with the target pushes it to rank 1
    assert M.target_ranks(np.array([[0.5, 0.5, 0.1]]), np.array([0])).tolist() == [1]


def test_target_ranks_exclude_column():
    S = np.array([[1.0, 0.9, 0.8]])
    # the target is column 2; column 0 (the query itself) is excluded, column 1 still beats it
    assert M.target_ranks(S, np.array([2]), exclude=np.array([0])).tolist() == [1]


def test_knn_recall_known_overlap():
    S_true = np.array([[9, 5, 4, 3, 2, 1.0]])  # column 0 is the query itself
    S_apx = np.array([[9, 1, 2, 3, 5, 4.0]])
    # top-2 excluding self: true {1, 2}; approx {4, 5} -> 0; top-3: true {1,2,3}, approx {4,5,3} -> 1/3
    assert M.knn_recall(S_true, S_apx, k=2, self_index=np.array([0])) == 0.0
    assert M.knn_recall(S_true, S_apx, k=3, self_index=np.array([0])) == pytest.approx(1 / 3)
    assert M.knn_recall(S_true, S_true, k=3, self_index=np.array([0])) == 1.0
    # without excluding self, the query itself is in both lists: true {0,1,2,3}, approx {0,4,5,3}
    assert M.knn_recall(S_true, S_apx, k=4, self_index=None) == pytest.approx(2 / 4)


def test_zero_shot_top_k():
    # 3 classes x 4 items; true labels 0, 1, 2, 0
    S = np.array(
        [
            [0.9, 0.1, 0.3, 0.2],
            [0.1, 0.8, 0.5, 0.3],
            [0.0, 0.2, 0.4, 0.1],
        ]
    )
    zs = M.zero_shot(S, np.array([0, 1, 2, 0]), ks=(1, 2))
    # item 2: class 2 scores 0.4 < class 1's 0.5 -> rank 1; item 3: class 0 (0.2) < class 1 (0.3) -> rank 1
    assert zs == {1: 0.5, 2: 1.0}


def test_nn1_accuracy_leave_one_out():
    S = np.array(
        [
            [1.0, 0.9, 0.1],
            [0.9, 1.0, 0.2],
            [0.1, 0.8, 1.0],
        ]
    )
    labels = np.array([0, 0, 1])
    # item 0 -> 1 (label 0, right); item 1 -> 0 (right); item 2 -> 1 (label 0, wrong)
    assert M.nn1_accuracy(S, labels, self_index=np.arange(3)) == pytest.approx(2 / 3)
    # without leave-one-out every item finds itself
    assert M.nn1_accuracy(S, labels, self_index=None) == 1.0


def test_mean_cosine():
    X = np.array([[1.0, 0.0], [0.0, 2.0]])
    Y = np.array([[1.0, 1.0], [0.0, -1.0]])
    assert M.mean_cosine(X, Y) == pytest.approx((np.sqrt(0.5) - 1.0) / 2)


def test_entropy_bits_with_constriction():
    rng = np.random.default_rng(0)
    uniform = rng.integers(0, 16, size=(4000, 3))
    constant = np.zeros((4000, 3), dtype=np.int64)
    skewed = (rng.random((4000, 1)) < 0.1).astype(np.int64)  # H(0.1) = 0.469 bits
    assert categorical_entropy_bits(uniform, 16) == pytest.approx(12.0, abs=0.05)
    assert categorical_entropy_bits(constant, 16) < 0.05
    assert categorical_entropy_bits(skewed, 2) == pytest.approx(0.469, abs=0.02)


def test_unpack_subcodes_matches_faiss_decode():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((400, 16)).astype(np.float32)
    m = PQMethod(16, 32, 8, 4, fast_scan=True)
    m.fit(X)
    codes = m.encode(X[:50])
    sub, alphabet = m.subcodes(codes)
    assert alphabet == 16 and sub.shape == (50, 8) and sub.max() < 16
    import faiss

    pq = faiss.downcast_index(m.index).pq
    cent = faiss.vector_to_array(pq.centroids).reshape(pq.M, pq.ksub, pq.dsub)
    manual = np.concatenate([cent[j, sub[:, j]] for j in range(pq.M)], axis=1)
    np.testing.assert_allclose(M_unit(manual), m.decode(codes), atol=1e-5)
    # generic bit order: 3-bit codes
    packed = np.packbits(np.array([[1, 0, 1, 0, 1, 1, 0, 0]], dtype=np.uint8), bitorder="little")[None, :]
    assert unpack_subcodes(packed.reshape(1, -1), 2, 3).tolist() == [[5, 6]]


def M_unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_sign_bits_reconstruct_direction():
    rng = np.random.default_rng(2)
    X = M_unit(rng.standard_normal((300, 24)) * np.linspace(3, 0.2, 24))
    m = SignBitsMethod(24, 24, 24)
    m.fit(X)
    codes = m.encode(X)
    assert codes.shape == (300, 3) and codes.dtype == np.uint8
    assert M.mean_cosine(X, m.decode(codes)) > 0.75
    assert m.entropy_bits(codes) <= 24.0 + 0.1


# --------------------------------------------------------------------------------------------
# inputs


def _synthetic(n=600, dim=32, classes=8, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, dim))
    label = rng.integers(0, classes, n)
    X = centers[label] + 0.8 * rng.standard_normal((n, dim))
    T = X + 0.6 * rng.standard_normal((n, dim))
    names = np.array([f"class {i}" for i in range(classes)])
    return dict(
        image_emb=X.astype(np.float32),
        text_emb=T.astype(np.float32),
        label=label,
        class_names=names,
        class_text_emb=centers.astype(np.float32),
    )


def test_split_is_the_documented_permutation():
    tr, te = split_indices(1126, 0.5, 0)
    perm = np.random.default_rng(0).permutation(1126)
    assert tr.tolist() == perm[:563].tolist() and te.tolist() == perm[563:].tolist()


@pytest.mark.parametrize("suffix", [".npz", ".parquet"])
def test_save_load_round_trip(tmp_path, suffix):
    arrays = _synthetic(n=40, dim=8, classes=3)
    path = save_embeddings(tmp_path / f"e{suffix}", **arrays)
    data = load_embeddings(path)
    assert data.n == 40 and data.dim == 8
    np.testing.assert_allclose(data.image_emb, M_unit(arrays["image_emb"]), atol=1e-6)
    np.testing.assert_allclose(data.text_emb, M_unit(arrays["text_emb"]), atol=1e-6)
    assert data.label.tolist() == arrays["label"].tolist()
    assert data.class_names == [str(x) for x in arrays["class_names"]]
    np.testing.assert_allclose(data.class_text_emb, M_unit(arrays["class_text_emb"]), atol=1e-6)


def test_string_labels_map_to_class_names():
    arr = _synthetic(n=20, dim=8, classes=3)
    names = arr["class_names"]
    data = validate(
        arr["image_emb"], label=names[arr["label"]], class_names=names, class_text_emb=arr["class_text_emb"]
    )
    assert data.label.tolist() == arr["label"].tolist()


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(image_emb=None), "image_emb"),
        (dict(text_emb=np.zeros((39, 8), np.float32) + 1), "text_emb: has 39 rows"),
        (dict(text_emb=np.ones((40, 7), np.float32)), "text_emb: has 7 dims"),
        (dict(image_emb=np.ones((40,), np.float32)), "image_emb: expected a 2-D"),
        (dict(label=np.zeros(39, int)), r"label: expected shape \(40,\)"),
        (dict(class_text_emb=np.ones((3, 9), np.float32)), "class_text_emb: has 9 dims"),
        (dict(class_names=np.array(["a", "b"])), "class_text_emb: has 3 rows but class_names has 2"),
        (dict(label=np.full(40, 5)), "label: class index 5 out of range"),
    ],
)
def test_validation_errors_name_the_array(change, match):
    arrays = _synthetic(n=40, dim=8, classes=3)
    arrays.update(change)
    with pytest.raises(InputError, match=match) as info:
        validate(**arrays)
    assert "\n" not in str(info.value)


def test_nan_rows_are_refused_with_the_row():
    arrays = _synthetic(n=40, dim=8, classes=3)
    arrays["image_emb"][17, 3] = np.nan
    arrays["image_emb"][20, 0] = np.inf
    with pytest.raises(InputError, match=r"image_emb: 2 row\(s\) contain NaN or inf \(first: row 17\)"):
        validate(**arrays)


def test_file_errors(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_embeddings(tmp_path / "nope.npz")
    np.savez(tmp_path / "no_images.npz", text_emb=np.ones((10, 4), np.float32))
    with pytest.raises(InputError, match="missing array 'image_emb'"):
        load_embeddings(tmp_path / "no_images.npz")
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(InputError, match="unsupported file type"):
        load_embeddings(tmp_path / "x.csv")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a readable .npz"):
        load_embeddings(tmp_path / "bad.npz")


def test_argument_errors():
    data = validate(**_synthetic(n=60, dim=16, classes=3))
    with pytest.raises(InputError, match="--bits 12: no method among pq fits"):
        run_bench(data, bits=[12], methods=["pq"])
    with pytest.raises(InputError, match="--bits 99999: no method"):
        run_bench(data, bits=[64, 99999], methods=["pq", "sign", "rq", "float32"])
    with pytest.raises(InputError, match="--bits 0"):
        run_bench(data, bits=[0])
    with pytest.raises(InputError, match="--methods 'pqx'"):
        run_bench(data, methods=["pqx"])
    with pytest.raises(InputError, match="--train-fraction 1.0"):
        run_bench(data, train_fraction=1.0, methods=["float32"])
    with pytest.raises(InputError, match="--bpp-pixels"):
        run_bench(data, bpp_pixels="224", methods=["float32"])


# --------------------------------------------------------------------------------------------
# end to end on synthetic data


@pytest.fixture(scope="module")
def synthetic_rows():
    data = validate(**_synthetic(), name="synthetic")
    calls = []
    rows = run_bench(
        data,
        bits=[16, 32, 64],
        methods=["pq", "pqfs", "rq", "rabitq", "sign", "int8", "fp16", "float32"],
        threads=1,
        progress=lambda stage, done, total: calls.append((stage, done, total)),
    )
    return rows, calls


def test_synthetic_run_rows(synthetic_rows):
    rows, calls = synthetic_rows
    # the semdb.progress protocol: one stage per job, 3 steps each, every job finished
    finished = [stage for stage, done, total in calls if done == total == 3]
    assert len(finished) == len(rows) and "PQ8x8 @ 64 bits" in finished and "float32" in finished
    names = [(r["budget"], r["method"]) for r in rows]
    assert names == [
        (16, "PQ2x8"),
        (16, "PQ4x4fs"),
        (16, "RQ2x8"),
        (16, "PCA16,sign"),
        (32, "PQ4x8"),
        (32, "PQ8x4fs"),
        (32, "RQ4x8"),
        (32, "RaBitQ"),
        (32, "PCA32,sign"),
        (64, "PQ8x8"),
        (64, "PQ16x4fs"),
        (64, "RQ8x8"),
        (None, "SQ8"),
        (None, "fp16"),
        (None, "float32"),
    ]
    for r in rows:
        assert tuple(r) == ROW_KEYS
        assert r["status"] == "ok", r
        assert r["n_eval"] == 300 and r["dataset"] == "synthetic"
        for key in (
            "t2i_recall_1",
            "t2i_recall_5",
            "knn_recall_10",
            "zeroshot_top1",
            "zeroshot_top5",
            "nn1_accuracy",
            "mean_cosine",
            "entropy_bits",
            "encode_us_per_item",
        ):
            assert r[key] is not None, (r["method"], key)
        assert r["bpp"] == pytest.approx(r["bits"] / (224 * 224))
        assert r["entropy_bits"] <= r["bits"] + 1.0
    by = {r["method"]: r for r in rows}
    f32 = by["float32"]
    assert f32["knn_recall_10"] == 1.0 and f32["mean_cosine"] == pytest.approx(1.0)
    assert f32["bits"] == 32 * 32 and by["fp16"]["bits"] == 16 * 32 and by["SQ8"]["bits"] == 8 * 32
    assert by["PQ8x8"]["bits"] == 64 and by["PQ8x8"]["n_train"] == 300 and by["float32"]["n_train"] == 0
    # more bits, better reconstruction
    assert by["PQ2x8"]["mean_cosine"] < by["PQ4x8"]["mean_cosine"] < by["PQ8x8"]["mean_cosine"] < 1.0
    assert by["PQ8x8"]["knn_recall_10"] > by["PQ2x8"]["knn_recall_10"]
    assert by["PQ8x8"]["size_bytes"] > 32 * 256 * 4  # codebooks: D x 256 floats


def test_reports_json_parquet_plot(synthetic_rows, tmp_path):
    import pyarrow.parquet as pq
    from rich.console import Console

    rows, _ = synthetic_rows
    records = json.loads(to_json(rows))
    assert [list(r) for r in records] == [list(ROW_KEYS)] * len(rows)
    assert records[0]["schema_version"] == 2
    write_json(rows, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text()) == records

    write_parquet(rows, tmp_path / "r.parquet")
    table = pq.read_table(tmp_path / "r.parquet")
    assert table.column_names == list(ROW_KEYS) and table.num_rows == len(rows)
    back = table.to_pylist()
    assert [r["method"] for r in back] == [r["method"] for r in rows]
    assert back[0]["t2i_recall_1"] == pytest.approx(rows[0]["t2i_recall_1"])

    write_plot(rows, tmp_path / "r.png")
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    console = Console(width=220, record=True)
    console.print(make_table(rows))
    text = console.export_text()
    assert "PQ8x4fs" in text and "float32" in text and "bits / 224*224" in text


def test_skips_are_rows_with_reasons():
    data = validate(**_synthetic(n=200, dim=16, classes=3))  # 100 training rows < 256 centroids
    messages = []
    rows = run_bench(data, bits=[32], methods=["pq", "pqfs", "float32"], on_message=messages.append)
    by = {r["method"]: r for r in rows}
    assert by["PQ4x8"]["status"] == "skipped" and "needs >= 256 training vectors" in by["PQ4x8"]["note"]
    assert by["PQ8x4fs"]["status"] == "ok"
    assert any("PQ4x8" in m for m in messages)
    assert "PQ4x8 @ 32: skipped" in (make_table(rows).caption or "")


def test_slow_fits_are_skipped_by_prediction():
    data = validate(**_synthetic(n=600, dim=16, classes=3))
    rows = run_bench(data, bits=[8, 32], methods=["lsq"], max_train_seconds=1e-9)
    assert [r["status"] for r in rows] == ["ok", "skipped"]
    assert "predicted training time" in rows[1]["note"] and "LSQ1x8 took" in rows[1]["note"]


def test_variant_rows_use_real_bits_per_pixel():
    arrays = _synthetic(n=100, dim=16, classes=3)
    rng = np.random.default_rng(5)
    noisy = arrays["image_emb"] + 0.3 * rng.standard_normal(arrays["image_emb"].shape).astype(np.float32)
    bits = rng.integers(8000, 12000, 100).astype(float)
    pixels = np.full(100, 200 * 100.0)
    data = validate(**arrays, variants=[Variant("jpeg-q10", "JPEG", noisy, bits, pixels)])
    rows = run_bench(data, methods=["float32"], seed=3)
    row = next(r for r in rows if r["method"] == "jpeg-q10")
    _, te = split_indices(100, 0.5, 3)
    assert row["bits"] == pytest.approx(bits[te].mean())
    assert row["bpp"] == pytest.approx((bits[te] / pixels[te]).mean())
    assert row["bpp_convention"] == "actual" and row["budget"] is None
    assert 0 < row["mean_cosine"] < 1 and row["zeroshot_top1"] is not None


def test_given_codec_is_evaluated_on_all_rows():
    from semdb.codec import Codec

    data = validate(**_synthetic(n=300, dim=32, classes=4))
    codec = Codec.train(data.image_emb, bits=64, seed=0)
    rows = run_bench(data, codec=codec)
    by = {r["family"]: r for r in rows}
    assert set(by) == {"codec", "int8", "fp16", "float32"}
    c = by["codec"]
    assert c["method"] == f"codec:{codec.id}"
    assert c["status"] == "ok", c["note"]
    assert c["n_eval"] == 300 and c["protocol"] == "given-codec" and c["bits"] == codec.bits
    assert c["size_bytes"] == len(codec.to_bytes()) and c["t2i_recall_1"] is not None


# --------------------------------------------------------------------------------------------
# the shared evaluation data


@needs_data
def test_shopsphere_issue2_anchors():
    data = load_embeddings(SHOP)
    assert data.has_pairs and not data.has_labels
    rows = run_bench(data, bits=[256], methods=["pq", "pqfs", "float32"], seed=0, train_fraction=0.5, threads=1)
    by = {r["method"]: r for r in rows}
    f32, pq = by["float32"], by["PQ32x8"]
    assert f32["n_eval"] == 563 and pq["n_train"] == 563
    # the split and the metric: float32 on the issue-2 split (FAISS's own figures are not pinned)
    assert f32["t2i_recall_1"] == pytest.approx(0.881, abs=0.0015)
    assert f32["t2i_recall_5"] == pytest.approx(0.991, abs=0.0015)


@needs_data
@pytest.mark.parametrize("path", [SHOP, FLICKR], ids=["shopsphere", "flickr8k"])
def test_ood_image_neighbours_beat_pq_at_256_bits(path):
    # issue 12: trained on 5 of 10 k-means clusters, evaluated on the other 5
    rows = run_bench(
        load_embeddings(path), bits=[256], methods=["semdb", "pq", "pqfs", "float32"], protocol="ood", seed=0, threads=1
    )
    by = {r["method"]: r for r in rows}
    assert {r["protocol"] for r in rows} == {"ood-cluster"}
    semdb = by["semdb"]
    assert semdb["knn_recall_10"] > max(by["PQ32x8"]["knn_recall_10"], by["PQ64x4fs"]["knn_recall_10"]) + 0.03
    # 1-NN label accuracy sits at float's own level for every method (labels are the clusters)
    assert semdb["nn1_accuracy"] >= by["float32"]["nn1_accuracy"] - 0.015


@needs_data
def test_flickr_file_works_as_is():
    data = load_embeddings(FLICKR)
    assert data.n == 1000 and not data.has_pairs and not data.has_labels
    rows = run_bench(data, bits=[64], methods=["pqfs", "sign", "float32"], threads=1)
    for r in rows:
        assert r["status"] == "ok" and r["n_eval"] == 500
        assert r["t2i_recall_1"] is None and r["zeroshot_top1"] is None and r["knn_recall_10"] is not None
    by = {r["method"]: r for r in rows}
    assert by["float32"]["knn_recall_10"] == 1.0
    assert 0.1 < by["PQ16x4fs"]["knn_recall_10"] < 1.0


# --------------------------------------------------------------------------------------------
# --images: class sub-folders embedded with the tiny random CLIP model


@pytest.fixture()
def class_folder(tmp_path):
    import skimage.data
    from PIL import Image, ImageDraw

    root = tmp_path / "classes"
    rng = np.random.default_rng(0)
    for cls, color in (("red_things", (220, 30, 30)), ("blue_things", (30, 30, 220)), ("photos", None)):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            if color is None:
                name = ("astronaut", "chelsea", "coffee", "rocket")[i]
                img = Image.fromarray(getattr(skimage.data, name)())
            else:
                img = Image.new("RGB", (120, 90), color)
                draw = ImageDraw.Draw(img)
                x, y = (int(v) for v in rng.integers(0, 80, 2))
                draw.ellipse([x, y, x + 30, y + 25], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
            img.save(root / cls / f"img_{i}.jpg", quality=92)
    (root / "photos" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (root / ".hidden").mkdir()
    return root


def test_image_folder_with_jpeg_baseline(class_folder, tiny_embedder):
    from semdb.bench.images import load_image_folder

    messages = []
    data = load_image_folder(
        class_folder,
        tiny_embedder,
        prompts=["a photo of a {}.", "a picture of {}"],
        jpeg_quality=[10, 50],
        on_message=messages.append,
    )
    assert data.class_names == ["blue things", "photos", "red things"]
    assert data.n == 12 and data.dim == tiny_embedder.dim
    assert data.label.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert data.class_text_emb.shape == (3, data.dim)
    assert any("broken.jpg" in m for m in messages)
    v10, v50 = data.variants
    assert (v10.name, v50.name) == ("jpeg-q10", "jpeg-q50")
    assert (v10.bits < v50.bits).all() and v10.pixels[4] == 512 * 512 and v10.pixels[0] == 120 * 90  # astronaut; drawn
    rows = run_bench(data, bits=[16], methods=["sign", "float32"], train_fraction=0.5)
    by = {r["method"]: r for r in rows}
    assert set(by) == {"PCA16,sign", "float32", "jpeg-q10", "jpeg-q50"}
    for r in rows:
        assert r["status"] == "ok" and r["zeroshot_top1"] is not None and r["n_eval"] == 6
    assert "image-codec rows: real bits per pixel" in make_table(rows).title
    j = by["jpeg-q10"]
    _, te = split_indices(12, 0.5, 0)
    assert j["bpp_convention"] == "actual" and j["bpp"] == pytest.approx((v10.bits[te] / v10.pixels[te]).mean())
    assert j["encode_us_per_item"] > 0


def test_image_folder_errors(tmp_path, tiny_embedder):
    from semdb.bench.images import load_image_folder

    with pytest.raises(InputError, match="not a directory"):
        load_image_folder(tmp_path / "missing", tiny_embedder)
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "a.png").write_bytes(b"")
    with pytest.raises(InputError, match="zero-shot needs at least 2"):
        load_image_folder(tmp_path, tiny_embedder)
    with pytest.raises(InputError, match="needs '\\{\\}'"):
        load_image_folder(tmp_path, tiny_embedder, prompts=["a photo"])
    with pytest.raises(InputError, match="--jpeg-quality 0"):
        load_image_folder(tmp_path, tiny_embedder, jpeg_quality=[0])


def test_opq_with_fewer_training_vectors_than_dims():
    # FAISS's OPQ aborts the process on n < D; the method repeats the training set instead
    rng = np.random.default_rng(3)
    X = M_unit(rng.standard_normal((560, 320)).astype(np.float32))
    rows = run_bench(validate(X), bits=[16], methods=["opq"])
    assert rows[0]["status"] == "ok" and rows[0]["n_train"] == 280
    assert "repeated x2" in rows[0]["note"]


def test_rq_with_fewer_training_vectors_than_dims():
    rng = np.random.default_rng(4)
    X = M_unit(rng.standard_normal((560, 320)).astype(np.float32))
    rows = run_bench(validate(X), bits=[16], methods=["rq"])
    assert rows[0]["status"] == "ok", rows[0]["note"]
    assert "repeated x2" in rows[0]["note"]


def test_progress_protocol_and_query_families():
    # semdb with and without the training split's texts as queries; progress(stage, done, total)
    data = validate(**_synthetic(n=400, dim=32, classes=4))
    calls = []
    rows = run_bench(
        data,
        bits=[64],
        methods=["semdb", "semdb-paired", "semdb-unpaired", "float32"],
        progress=lambda *a: calls.append(a),
    )
    by = {r["method"]: r for r in rows}
    assert set(by) == {"semdb", "semdb-paired", "semdb-unpaired", "float32"}
    assert all(r["status"] == "ok" for r in rows), [r["note"] for r in rows]
    assert "paired with their images" in by["semdb-paired"]["note"] and "unpaired" in by["semdb-unpaired"]["note"]
    assert ("semdb-paired @ 64 bits", 3, 3) in calls and all(len(c) == 3 and isinstance(c[0], str) for c in calls)
    # without text_emb the query families are not in the default plan, and skipped when asked for
    assert "semdb-paired" not in check_methods(None, codec_given=False, has_pairs=False)
    assert "semdb-unpaired" in check_methods(None, codec_given=False, has_pairs=True)
    bare = validate(data.image_emb)
    row = run_bench(bare, bits=[64], methods=["semdb-paired"])[0]
    assert row["status"] == "skipped" and "needs text_emb" in row["note"]


def test_ood_protocol_trains_on_other_groups():
    data = validate(**_synthetic(n=400, dim=32, classes=6))
    rows = run_bench(data, bits=[64], methods=["pqfs", "float32"], protocol="ood", seed=1)
    from semdb.bench import ood_split

    tr, te, group, kind = ood_split(data, 0.5, 1)
    assert kind == "ood-class" and set(group[tr]).isdisjoint(group[te]) and len(set(group[tr])) == 3
    assert all(r["protocol"] == "ood-class" and r["n_eval"] == len(te) for r in rows)
    assert {r["n_train"] for r in rows if r["method"] == "PQ16x4fs"} == {len(tr)}
    # no labels: k-means clusters are the groups and the labels of 1-NN accuracy
    bare = validate(data.image_emb)
    rows = run_bench(bare, bits=[64], methods=["pqfs"], protocol="ood", ood_groups=4)
    assert rows[0]["protocol"] == "ood-cluster" and rows[0]["nn1_accuracy"] is not None
    with pytest.raises(InputError, match="--protocol"):
        run_bench(data, protocol="sideways")


def _pair_ranks(data):
    S = data.text_emb @ data.image_emb.T
    return (S >= np.diag(S)[:, None]).sum(1)


def test_shift_turns_spread_out_of_the_training_subspace():
    data = validate(**clip_like_embeddings())
    split = make_split(data, "held-out", seed=2)
    shifted = make_split(data, "shift", seed=2, shift=0.4)
    rotation = source_shift(split.train.image_emb, split.eval.image_emb, 0.4, seed=2)
    before = rotation.share(split.eval.image_emb)
    assert before > 0.5 and shifted.shift_share == pytest.approx(0.4, abs=1e-3) and rotation.moved > 0
    assert shifted.protocol == "shift" and np.array_equal(shifted.train.image_emb, split.train.image_emb)
    ev, base = shifted.eval, split.eval
    # a rotation that keeps the training mean: unit rows, every inner product (so the float
    # ground truth: image neighbours, the pairs' text->image ranks, zero-shot) unchanged
    assert np.allclose(np.linalg.norm(ev.image_emb, axis=1), 1, atol=1e-5)
    assert np.allclose(ev.image_emb @ ev.image_emb.T, base.image_emb @ base.image_emb.T, atol=1e-5)
    assert np.array_equal(_pair_ranks(ev), _pair_ranks(base)) and np.array_equal(ev.label, base.label)
    assert not np.allclose(ev.image_emb, base.image_emb, atol=1e-2)
    mean = split.train.image_emb.mean(0)
    assert np.allclose(rotation.apply(mean[None])[0] * np.linalg.norm(mean), mean, atol=1e-5)
    # a share the data already has below it turns nothing
    assert source_shift(split.train.image_emb, split.eval.image_emb, 0.99).moved == 0
    with pytest.raises(InputError, match="--shift 1.5"):
        make_split(data, "shift", shift=1.5)


def test_shift_protocol_rows_report_the_share_and_cost_a_pca_codec():
    data = validate(**clip_like_embeddings(n=600))
    rows = {
        protocol: {r["method"]: r for r in run_bench(data, bits=[64], methods=["semdb", "float32"], protocol=protocol)}
        for protocol in ("held-out", "shift")
    }
    assert rows["shift"]["semdb"]["shift_share"] == pytest.approx(0.5, abs=1e-3)
    assert rows["held-out"]["semdb"]["shift_share"] is None
    assert rows["shift"]["float32"]["knn_recall_1"] == rows["held-out"]["float32"]["knn_recall_1"] == 1.0
    assert rows["shift"]["semdb"]["knn_recall_10"] < rows["held-out"]["semdb"]["knn_recall_10"]


def test_transfer_protocol_trains_on_one_collection_and_scores_another(tmp_path):
    a = validate(**_synthetic(n=300, dim=32, classes=4, seed=1), name="a")
    b = validate(**_synthetic(n=120, dim=32, classes=3, seed=2), name="b")
    rows = run_bench(a, bits=[64], methods=["pqfs", "float32"], protocol="transfer", eval_data=b)
    pq = next(r for r in rows if r["method"] == "PQ16x4fs")
    assert pq["protocol"] == "transfer" and pq["dataset"] == "a -> b" and pq["n_train"] == 300 and pq["n_eval"] == 120
    assert pq["t2i_recall_1"] is not None and pq["nn1_accuracy"] is not None and pq["train_fraction"] is None
    with pytest.raises(InputError, match="--eval FILE goes with --protocol transfer"):
        run_bench(a, bits=[64], methods=["pqfs"], eval_data=b)
    with pytest.raises(InputError, match="16-d embeddings"):
        run_bench(a, bits=[64], methods=["pqfs"], protocol="transfer", eval_data=validate(**_synthetic(n=50, dim=16)))


def test_cli_trains_on_one_file_and_scores_another(tmp_path):
    from kit import semdb_app

    a = save_embeddings(tmp_path / "mine.npz", **clip_like_embeddings(n=300, seed=1))
    b = save_embeddings(tmp_path / "theirs.npz", **clip_like_embeddings(n=100, seed=2))
    proc = semdb_app("bench", "--train", a, "--eval", b, "--bits", "64", "--methods", "pqfs", "--json")
    (row,) = json.loads(proc.stdout)
    assert row["protocol"] == "transfer" and row["n_train"] == 300 and row["n_eval"] == 100
    assert row["knn_recall_1"] is not None and row["t2i_recall_1"] is not None
    bad = semdb_app("bench", "--train", a, "--bits", "64", check=False)
    assert bad.returncode != 0 and "--train FILE and --eval FILE go together" in bad.stderr
    shifted = semdb_app(
        "bench",
        "--embeddings",
        a,
        "--protocol",
        "shift",
        "--shift",
        "0.45",
        "--bits",
        "64",
        "--methods",
        "pqfs",
        "--json",
    )
    assert json.loads(shifted.stdout)[0]["shift_share"] == pytest.approx(0.45, abs=1e-3)
