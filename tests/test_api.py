"""The Python API end to end with a real (tiny, random-init) open_clip model and real files."""

import os
import shutil

import numpy as np
import pytest

import semdb
from semdb import Codec
from semdb.errors import InputError, StoreError


def test_ingest_query_and_incremental_reruns(photos, tmp_path, tiny_model):
    store = tmp_path / "store"
    with semdb.open(store, model=tiny_model) as db:
        s = db.ingest([photos], train_now=True)
        assert (s["new"], s["failed"], s["items"], s["codec_trained"]) == (12, 0, 12, True)
        info = db.info()
        assert info["items"] == 12 and info["staging"] == 0 and info["bits_per_item"] == 256
        assert 0 < info["entropy_bits_per_item"] <= 256 + 8
        hits = db.query_image(photos / "chelsea.jpg", k=3)
        assert hits[0].path == str(photos / "chelsea.jpg") and hits[0].score > hits[-1].score
        assert len(db.query("a cat", k=5)) == 5
        assert db.query("a cat", k=5, min_score=10.0) == []

        again = db.ingest([photos], train_now=True)
        assert (again["unchanged"], again["embedded"], again["new"]) == (12, 0, 0)

        shutil.copy(photos / "coffee.jpg", photos / "coffee copy.jpg")  # duplicate
        os.rename(photos / "rocket.jpg", photos / "rocket moved.jpg")  # moved
        (photos / "shapes_0.png").unlink()  # gone
        from PIL import Image

        Image.new("RGB", (40, 40), (255, 0, 0)).save(photos / "shapes_1.png")  # changed
        (photos / "notes.jpg").write_text("not an image")  # failed
        s = db.ingest([photos], train_now=True)
        assert (s["duplicate"], s["moved"], s["changed"], s["missing"], s["failed"], s["embedded"]) == (
            1,
            1,
            1,
            1,
            1,
            1,
        )
        assert s["failures"][0]["path"].endswith("notes.jpg")
        s = db.ingest([photos], prune=True, train_now=True)
        assert s["pruned"] == 1 and s["items"] == 12
        paths = {h.path for h in db.query("anything", k=50)}
        assert str(photos / "rocket moved.jpg") in paths and str(photos / "rocket.jpg") not in paths
        assert db.store.verify() == []


def test_adc_results_agree_with_brute_force_float_ranking(photos, tmp_path, tiny_model, tiny_embedder):
    from semdb.images import discover, load_image

    with semdb.open(tmp_path / "s", model=tiny_model) as db:
        db.ingest([photos], train_now=True)
        files = [str(p) for p in discover([photos])]
        X = tiny_embedder.encode_images([load_image(p, draft_size=tiny_embedder.image_size) for p in files])
        q = tiny_embedder.encode_texts(["a photo of a rocket"])
        float_top = [files[i] for i in np.argsort(-(q @ X.T)[0])[:5]]
        hits = db.query("a photo of a rocket", k=5)
        assert len(set(float_top) & {h.path for h in hits}) >= 3


def test_given_codec_and_model_binding(photos, tmp_path, tiny_model, tiny_embedder):
    from semdb.images import discover, load_image
    from semdb.testing import write_tiny_model

    X = tiny_embedder.encode_images([load_image(p) for p in discover([photos])])
    codec = Codec.train(X, bits=64, model_id=tiny_embedder.model_id)
    codec.save(tmp_path / "c.safetensors")
    with semdb.open(tmp_path / "s", model=tiny_model) as db:
        s = db.ingest([photos], codec=tmp_path / "c.safetensors", train_now=True)
        assert not s["codec_trained"] and db.info()["codec"]["id"] == codec.id and db.info()["bits_per_item"] == 64
    other = "local-dir:" + write_tiny_model(tmp_path / "other", seed=1)
    with pytest.raises(StoreError, match="was built with CLIP model"):
        with semdb.open(tmp_path / "s", model=other) as db:
            db.query("a cat")


def test_bad_queries(photos, tmp_path, tiny_model):
    with semdb.open(tmp_path / "s", model=tiny_model) as db:
        db.ingest([photos], train_now=True)
        with pytest.raises(InputError, match="empty query"):
            db.query("   ")
        with pytest.raises(InputError, match="not found"):
            db.query_image(tmp_path / "missing.jpg")
        assert len(db.query("x" * 10_000, k=2)) == 2
    with pytest.raises(StoreError, match="no semdb store"):
        semdb.open(tmp_path / "nothing", readonly=True)
