"""Codec lifecycle: a store stays uncompressed until it holds enough images to train a codec
that generalises, is told when (and retrains) as it grows or drifts, and takes precomputed
embeddings. Real open_clip (tiny model), real FAISS, real LMDB, real files."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from kit import semdb_app, semdb_cli, sigint_not_ignored, write_photos

import semdb
from semdb.errors import InputError, StoreError
from semdb.ingest import CodecPolicy
from semdb.ingest.training import MIN_TRAIN
from semdb.store import Store

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "embeddings"


def test_a_small_store_stays_uncompressed_and_is_searched_exactly(photos, tmp_path, tiny_model, tiny_embedder):
    with semdb.open(tmp_path / "s", model=tiny_model) as db:
        s = db.ingest([photos])
        assert (s["items"], s["staged"], s["codec_trained"]) == (12, 12, False)
        info = db.info()
        assert not info["compressed"] and info["codec_trains_at"] == MIN_TRAIN and info["codec"] is None
        q = tiny_embedder.encode_texts(["a photo of a rocket"])
        X = np.concatenate([e for _, e in db.store.iter_staging()]).astype(np.float32)
        ids = np.concatenate([i for i, _ in db.store.iter_staging()])
        hits = db.search_vectors(q, k=12)[0]
        assert [h.id for h in hits] == ids[np.argsort(-(X @ q[0]), kind="stable")].tolist()  # exact ranking
        s = db.ingest([photos], train_now=True)  # nothing new: trains on what is staged
        assert s["codec_trained"] and s["staged"] == 0 and db.info()["compressed"]
        assert db.store.verify() == [] and len(db.search("a cat", k=5)) == 5


def test_info_and_ingest_say_when_the_store_will_be_compressed(photos, tmp_path, tiny_model):
    store = tmp_path / "s"
    proc = semdb_app("ingest", photos, "--store", store, "--model", tiny_model, "--threads", 1)
    assert f"12 images are stored uncompressed (searched exactly) until the store holds {MIN_TRAIN}" in proc.stderr
    assert "--train-now" in proc.stderr
    info = semdb_app("info", "--store", store).stdout
    assert f"not compressed until the store holds {MIN_TRAIN} items" in info
    facts = json.loads(semdb_app("info", "--store", store, "--json").stdout)
    assert facts["compressed"] is False and facts["staging"] == 12
    summary = json.loads(semdb_app("ingest", photos, "--store", store, "--train-now", "--json").stdout)
    assert summary["codec_trained"] and summary["staged"] == 0


def test_growth_and_drift_are_reported_with_the_command(photos, tmp_path, tiny_model):
    with semdb.open(tmp_path / "s", model=tiny_model) as db:
        db.ingest([photos], policy=CodecPolicy(bits=64, min_train=12))
        assert db.info()["codec"]["trained_on"] == 12 and db.info()["retrain_advice"] is None
        more = write_photos(tmp_path / "more", n_generated=40, seed=3)
        s = db.ingest([more])
        assert s["items"] == 12 + 44 and s["retrain_advice"].startswith("the store has grown 4.7x")
        info = db.info()
        assert info["codec"]["encoded_since"] == 40 and info["codec"]["drift_ratio"] > 0  # 4 copies need no CLIP
    proc = semdb_app("info", "--store", tmp_path / "s")
    assert "grown 4.7x" in proc.stdout


def test_retrain_reembeds_files_and_transcodes_the_missing(photos, tmp_path, tiny_model):
    with semdb.open(tmp_path / "s", model=tiny_model) as db:
        db.ingest([photos], policy=CodecPolicy(bits=64, min_train=12))
        old = db.codec.id
        before = {it.path: it.id for it in db.store.iter_items()}
    (photos / "shapes_0.png").unlink()
    (photos / "shapes_1.png").write_bytes((photos / "rocket.jpg").read_bytes())  # changed since stored
    reader = semdb.open(tmp_path / "s", readonly=True)
    with semdb.open(tmp_path / "s", model=tiny_model) as db:
        s = db.retrain(sample=6)
        assert (s["items"], s["reembedded"], s["transcoded"]) == (12, 10, 2)
        assert 2 <= s["trained_on"] <= 6  # the readable files of a sample of 6
        assert s["old_codec"] == old and s["codec"] == db.codec.id != old and not s["resumed"]
        assert {it.path: it.id for it in db.store.iter_items()} == before  # ids, paths unchanged
        assert db.store.verify() == [] and db.info()["retrain_pending"] is None
        assert db.info()["codec"]["trained_on"] == s["trained_on"] and db.info()["codec"]["encoded_since"] == 0
    assert len(reader.search("a photo", k=12)) == 12  # an open reader moves to the new codes
    assert reader.codec.id == s["codec"]
    reader.close()


def test_captions_make_the_codec_train_in_the_text_query_metric_now_and_at_retrain(photos, tmp_path, tiny_model):
    captions = tmp_path / "captions.txt"
    captions.write_text("a cat on a sofa\n\na rocket at launch\na cup of coffee\nan astronaut in space\n")
    with semdb.open(tmp_path / "s", model=tiny_model) as db:
        db.ingest([photos], captions=captions, train_now=True)
        assert db.store.training_queries().shape == (4, 64)
        assert db.info()["codec"]["query_source"] == "unpaired" and db.codec.config["n_queries"] == 4
        assert db.retrain()["codec"] == db.codec.id and db.codec.config["query_source"] == "unpaired"
        with pytest.raises(InputError, match="at least 2 captions"):
            db.ingest([photos], captions=["only one"])
    with semdb.open(tmp_path / "plain", model=tiny_model) as db:
        db.ingest([photos], train_now=True)
        assert db.info()["codec"]["query_source"] == "none"
    # past searches given to the retrain itself (semdb retrain --captions): an interrupted
    # retrain's pending pair-free codec is trained again with them, not resumed
    plain, searches = tmp_path / "plain", tmp_path / "searches.txt"
    searches.write_text("a red rocket\na mug\nan astronaut\n")
    args = ("retrain", "--store", plain, "--sample", 3, "--batch-size", 2, "--json")
    semdb_cli(*args, env={"SEMDB_FAULT_POINT": "recode_txn:1"}, check=-signal.SIGKILL)
    s = json.loads(semdb_app(*args, "--captions", searches).stdout)
    with semdb.open(plain, model=tiny_model) as db:
        assert not s["resumed"] and s["codec"] == db.codec.id and db.codec.config["query_source"] == "unpaired"
        assert db.codec.config["n_queries"] == 3 and db.store.verify() == []


def test_retrain_of_a_store_without_a_codec_trains_it(photos, tmp_path, tiny_model):
    with semdb.open(tmp_path / "s", model=tiny_model) as db:
        db.ingest([photos])
        s = db.retrain()
        assert s["codec"] and db.store.staging_count() == 0 and s["trained_on"] == 12


RETRAIN_FAULTS = ["decode:2", "embedded:1", "train:1", "pending_txn:1", "recode_txn:1", "recode_txn:2", "switch_txn:1"]


@pytest.mark.slow
def test_retrain_survives_kill_9_at_every_stage(tmp_path, tiny_model):
    """kill -9 of `semdb retrain` at each stage: the store is on the old codec or the new one for
    every item (verify, every item coded, queries work), and re-running it finishes."""
    photos = write_photos(tmp_path / "photos", n_generated=12)
    base = tmp_path / "base"
    with semdb.open(base, model=tiny_model) as db:
        db.ingest([photos], policy=CodecPolicy(bits=64, min_train=2))
        base_codec, n = db.codec.id, db.store.count()
    (photos / "shapes_3.png").unlink()  # one item is transcoded
    tried = []
    for fault in RETRAIN_FAULTS:
        store = tmp_path / "store"
        shutil.rmtree(store, ignore_errors=True)
        shutil.copytree(base, store)
        args = ("retrain", "--store", store, "--sample", 5, "--batch-size", 4, "--threads", 1, "--json")
        killed = semdb_cli(*args, env={"SEMDB_FAULT_POINT": fault}, check=-signal.SIGKILL)
        with Store(store) as s:
            assert s.verify() == [], (fault, s.verify())
            assert len(s.load_codes()[0]) == s.count() == n and s.staging_count() == 0
            on = s.meta()["codec_id"]
        with semdb.open(store, readonly=True, embedder=None) as db:
            assert len(db.search_vectors(np.ones((1, 64), np.float32), k=n)[0]) == n
        rerun = json.loads(semdb_app(*args).stdout)
        with Store(store) as s:
            assert s.verify() == [] and s.meta()["codec_id"] == rerun["codec"] != base_codec
            assert s.meta().get("pending_codec") is None and len(s.load_codes()[0]) == n
        # killed while it trains or commits the pending codec, it had saved the sample's embeddings
        assert rerun["resumed"] == (fault not in ("decode:2", "embedded:1")), (fault, rerun)
        if fault in ("train:1", "pending_txn:1"):  # only the files outside the sample are embedded
            assert rerun["reembedded"] == n - rerun["transcoded"] - rerun["trained_on"], (fault, rerun)
        tried.append((fault, on == base_codec, killed.returncode))
    assert len(tried) == len(RETRAIN_FAULTS)


# -- bring your own embeddings ----------------------------------------------------------------


def _unit(n, d=64, seed=0):
    X = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def test_clip_retrieval_layout_and_npz_are_imported(tmp_path, tiny_model):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "clip_out"
    (folder / "img_emb").mkdir(parents=True)
    (folder / "metadata").mkdir()
    X = _unit(30)
    for part, rows in enumerate((slice(0, 20), slice(20, 30))):
        np.save(folder / "img_emb" / f"img_emb_{part}.npy", X[rows].astype(np.float16))
        pq.write_table(
            pa.table({"image_path": [f"/photos/{i}.jpg" for i in range(30)][rows]}),
            folder / "metadata" / f"metadata_{part}.parquet",
        )
    with semdb.open(tmp_path / "s") as db:
        s = db.add_embeddings(folder, model=tiny_model, train_now=True)
        assert (s["new"], s["items"], s["staged"], s["codec_trained"]) == (30, 30, 0, True)
        assert db.store.model_id()["name"] == tiny_model and db.store.model_id()["digest"] is None
        hit = db.search_vectors(X[7:8], k=1)[0][0]
        assert hit.path == "/photos/7.jpg"
        again = db.add_embeddings(folder)  # the store's model; known paths are left alone
        assert (again["new"], again["unchanged"]) == (0, 30)
    np.savez(tmp_path / "more.npz", image_emb=_unit(5, seed=1), image_path=[f"/more/{i}.jpg" for i in range(5)])
    with semdb.open(tmp_path / "s", model=tiny_model) as db:  # loading the model binds its digest
        assert db.add_embeddings(tmp_path / "more.npz")["new"] == 5
        db.search("a cat", k=3)
        assert db.store.model_id()["digest"] == db.embedder.model_id["digest"]


def test_bad_embeddings_are_refused_in_one_line_before_anything_is_written(tmp_path, tiny_model):
    with semdb.open(tmp_path / "s") as db:
        db.add_embeddings([f"/p/{i}.jpg" for i in range(4)], _unit(4), model=tiny_model)
    before = (tmp_path / "s" / "data.mdb").read_bytes()
    nan = _unit(6)
    nan[3, 5] = np.nan
    np.save(tmp_path / "x.npy", _unit(3))
    (tmp_path / "two.txt").write_text("/a.jpg\n/b.jpg\n")
    np.savez(tmp_path / "nopaths.npz", image_emb=_unit(3))
    cases = [
        (lambda db: db.add_embeddings([f"/q/{i}.jpg" for i in range(3)], _unit(3, d=32)), StoreError, "dim"),
        (lambda db: db.add_embeddings([f"/q/{i}.jpg" for i in range(6)], nan), InputError, "row 3 is NaN"),
        (lambda db: db.add_embeddings(["/q/a.jpg"], _unit(2)), InputError, "2 embeddings but 1 paths"),
        (lambda db: db.add_embeddings(tmp_path / "missing.npz"), InputError, "no such file"),
        (lambda db: db.add_embeddings(tmp_path / "x.npy", tmp_path / "two.txt"), InputError, "3 embeddings but 2"),
        (lambda db: db.add_embeddings(tmp_path / "x.npy"), InputError, "--paths"),
        (lambda db: db.add_embeddings(tmp_path / "nopaths.npz"), InputError, "image_path"),
        (lambda db: db.add_embeddings(["/q/a.jpg", "/q/a.jpg"], _unit(2)), InputError, "appears twice"),
    ]
    with semdb.open(tmp_path / "s") as db:
        for call, error, needle in cases:
            with pytest.raises(error, match=needle) as e:
                call(db)
            assert "\n" not in str(e.value)
    assert (tmp_path / "s" / "data.mdb").read_bytes() == before
    proc = semdb_app("ingest", "--embeddings", tmp_path / "x.npy", "--store", tmp_path / "s", check=2)
    assert len(proc.stderr.strip().splitlines()) == 1 and "--paths" in proc.stderr
    semdb_app("ingest", "--store", tmp_path / "s", check=2)  # neither PATHS nor --embeddings


def _shopsphere():
    path = DATA / "shopsphere_fashionclip_pairs.npz"
    if not path.exists():
        pytest.skip(f"real embeddings not found at {path}")
    d = np.load(path)
    return d["image_emb"], d["text_emb"]


def _r1(db, T) -> float:
    hits = db.search_vectors(T, k=1)
    return float(np.mean([h[0].path == f"/shop/{i}.jpg" for i, h in enumerate(hits)]))


@pytest.mark.parametrize("first", [20, 300])
def test_a_store_grown_from_a_few_images_matches_one_built_in_one_go(tmp_path, first):
    """FashionCLIP's 1126 image embeddings imported as FIRST, then the rest, against all at
    once: text->image R@1 over all 1126 (the paired texts as queries) within 0.02, no float
    embedding left."""
    X, T = _shopsphere()
    paths = [f"/shop/{i}.jpg" for i in range(len(X))]
    with semdb.open(tmp_path / "once") as db:
        db.add_embeddings(paths, X, model="fashion-clip")
        once = _r1(db, T)
    with semdb.open(tmp_path / "grown") as db:
        s = db.add_embeddings(paths[:first], X[:first], model="fashion-clip")
        assert s["staged"] == first and not s["codec_trained"]  # below the threshold: not compressed
        s = db.add_embeddings(paths[first:], X[first:])
        assert s["staged"] == 0 and db.store.staging_count() == 0 and db.codec.config["n_train"] >= MIN_TRAIN
        grown = _r1(db, T)
    float_r1 = float(np.mean((T @ X.T).argmax(1) == np.arange(len(X))))
    assert abs(grown - once) <= 0.02 and grown > 0.9 * float_r1, (grown, once, float_r1)


# A store that keeps one codec (no codec of their own for new kinds of photo): the shift signal
# is what tells its user that the codec no longer fits.
ONE_CODEC = CodecPolicy(bits=256, max_codecs=1)


def _shift_advice_run(store, X_train, X_same, X_shifted, model, dim_paths="/p", policy=ONE_CODEC):
    """Train a store's codec on X_train, add held-out photos of the same collection, then
    photos unlike them: (info after the same-collection photos, info after the shifted ones)."""
    with semdb.open(store) as db:
        db.add_embeddings([f"{dim_paths}/t{i}.jpg" for i in range(len(X_train))], X_train, model=model, policy=policy)
        assert db.info()["compressed"]
        db.add_embeddings([f"{dim_paths}/s{i}.jpg" for i in range(len(X_same))], X_same, policy=policy)
        same = db.info()
    with semdb.open(store) as db:  # the stats persist
        s = db.add_embeddings([f"{dim_paths}/x{i}.jpg" for i in range(len(X_shifted))], X_shifted, policy=policy)
        shifted = db.info()
    assert s["retrain_advice"] == shifted["retrain_advice"]
    return same, shifted


def test_photos_unlike_the_training_photos_advise_retrain(tmp_path, tiny_model):
    from kit import clip_like_embeddings

    from semdb.bench import source_shift

    X = clip_like_embeddings(n=1100, dim=64, seed=5)["image_emb"]
    train, same, new = X[:600], X[600:850], X[850:]
    shifted = source_shift(train, new, 0.5, seed=1).apply(new)
    same_info, shifted_info = _shift_advice_run(tmp_path / "s", train, same, shifted, tiny_model)
    assert same_info["retrain_advice"] is None and same_info["codec"]["shift_ratio"] < 1.1
    ratio = shifted_info["codec"]["shift_ratio"]  # the latest photos weigh most
    assert ratio > 1.3 and "vary along directions its training images did not" in shifted_info["retrain_advice"]
    facts = json.loads(semdb_app("info", "--store", tmp_path / "s", "--json").stdout)
    assert facts["retrain_advice"] == shifted_info["retrain_advice"] and facts["codec"]["shift_ratio"] == ratio
    assert "shift ratio" in semdb_app("info", "--store", tmp_path / "s").stdout


def test_photos_unlike_every_codec_wait_for_one_of_their_own(tmp_path, tiny_model):
    """A store that may learn a codec per kind of photo stages the shifted photos (searched
    exactly) instead of encoding them with a codec that does not know them; its codec's shift
    ratio stays that of its own kind of photo, and nothing advises a retrain."""
    from kit import clip_like_embeddings

    from semdb.bench import source_shift

    X = clip_like_embeddings(n=1100, dim=64, seed=5)["image_emb"]
    train, same, new = X[:600], X[600:850], X[850:]
    shifted = source_shift(train, new, 0.5, seed=1).apply(new)
    same_info, info = _shift_advice_run(tmp_path / "s", train, same, shifted, tiny_model, policy=CodecPolicy())
    assert same_info["waiting"] <= 0.03 * len(same)  # the home photos: coded by the home codec
    assert info["waiting"] >= 0.9 * len(shifted) and info["retrain_advice"] is None
    assert info["codec"]["shift_ratio"] < 1.3 and len(info["codecs"]) == 1
    with semdb.open(tmp_path / "s", readonly=True) as db:  # waiting photos are found, exactly
        hits = db.search_vectors(shifted[:20], k=1)
        assert sum(h[0].path == f"/p/x{i}.jpg" for i, h in enumerate(hits)) >= 19


@pytest.mark.skipif(not (DATA / "flickr8k_openai_vitb32_images.npz").exists(), reason="../shared/data is absent")
@pytest.mark.parametrize("name", ["flickr8k_openai_vitb32_images.npz", "shopsphere_fashionclip_pairs.npz"])
def test_shift_signal_on_real_clip_embeddings(tmp_path, name):
    from semdb.bench import source_shift

    X = np.load(DATA / name)["image_emb"].astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    X = X[np.random.default_rng(0).permutation(len(X))]
    train, same, new = X[:500], X[500:750], X[750:1000]
    shifted = source_shift(train, new, 0.5, seed=0).apply(new)
    same_info, shifted_info = _shift_advice_run(tmp_path / "s", train, same, shifted, "ViT-B-32")
    # (held-out photos reconstruct worse than the training photos did: the drift rule may speak)
    assert same_info["codec"]["shift_ratio"] < 1.0 and "vary along" not in (same_info["retrain_advice"] or "")
    assert "vary along directions" in shifted_info["retrain_advice"] and shifted_info["codec"]["shift_ratio"] > 1.3


def test_a_retrain_interrupted_while_it_trains_resumes_without_embedding_again(tmp_path, tiny_model):
    """Ctrl-C (SIGINT) and kill -9 while the new codec trains: the next retrain takes the
    sample's embeddings from the interrupted one (resumed, 0 files embedded) and trains the very
    codec an uninterrupted retrain trains."""
    import subprocess
    import time

    from kit import SEMDB, cli_env

    photos = write_photos(tmp_path / "photos", n_generated=8)
    store, twin = tmp_path / "s", tmp_path / "twin"
    with semdb.open(store, model=tiny_model) as db:
        db.ingest([photos], policy=CodecPolicy(bits=64, min_train=2))
    shutil.copytree(store, twin)
    args = ["retrain", "--batch-size", "4", "--threads", "1", "--json"]
    uninterrupted = json.loads(semdb_app(*args, "--store", twin).stdout)
    assert not uninterrupted["resumed"] and uninterrupted["reembedded"] == 12

    proc = subprocess.Popen(
        [SEMDB, *args, "--store", str(store)],
        env=cli_env(SEMDB_FAULT_POINT="train:delay=120"),  # training held open
        preexec_fn=sigint_not_ignored,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for attempt in range(1200):  # the sample is saved just before training starts
        assert proc.poll() is None and attempt < 1199, proc.communicate()
        if (store / "retrain-sample.npz").exists():
            break
        time.sleep(0.1)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    with Store(store) as s:
        assert s.verify() == [] and s.meta().get("pending_codec") is None
    resumed = json.loads(semdb_app(*args, "--store", store).stdout)
    assert resumed["resumed"] and resumed["reembedded"] == 0 and resumed["trained_on"] == 12
    assert resumed["codec"] == uninterrupted["codec"]
    assert not (store / "retrain-sample.npz").exists()

    semdb_cli(*args, "--store", store, env={"SEMDB_FAULT_POINT": "train:1"}, check=-signal.SIGKILL)
    again = json.loads(semdb_app(*args, "--store", store).stdout)
    assert again["resumed"] and again["reembedded"] == 0 and again["trained_on"] == 12
    with Store(store) as s:
        assert s.verify() == [] and s.meta()["codec_id"] == again["codec"]
