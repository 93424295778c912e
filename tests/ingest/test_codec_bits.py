"""A store trains its codec at the bits it was created with, whichever later ingest trains it."""

import numpy as np
import pytest
from kit import clip_like_embeddings

import semdb
from semdb.errors import InputError
from semdb.ingest import CodecPolicy

NO_WEIGHTS = "local-dir:/nonexistent/clip"  # a model named, never loaded


def test_a_later_ingest_trains_at_the_recorded_bits(tmp_path):
    X = clip_like_embeddings(n=600)["image_emb"]
    paths = [f"/p/{i}.jpg" for i in range(600)]
    with semdb.open(tmp_path / "s") as db:
        db.add_embeddings(paths[:300], X[:300], model=NO_WEIGHTS, bits=64)
        assert db.codec is None and db.info()["staging"] == 300
    with semdb.open(tmp_path / "s") as db:
        db.add_embeddings(paths[300:], X[300:])  # past the threshold, no bits given
        assert db.codec.bits == 64


def test_bits_given_before_the_codec_replace_the_recorded_ones(tmp_path):
    X = clip_like_embeddings(n=20)["image_emb"]
    with semdb.open(tmp_path / "s") as db:
        db.add_embeddings([f"/p/{i}.jpg" for i in range(10)], X[:10], model=NO_WEIGHTS, bits=64)
        db.add_embeddings([f"/p/{i}.jpg" for i in range(10, 20)], X[10:], bits=32)
        db.retrain()  # trains what is staged, at the recorded bits
        assert db.codec.bits == 32


@pytest.mark.parametrize("bits", [7, 0, 4100])
def test_a_bad_budget_is_refused_before_anything_is_written(tmp_path, bits):
    with pytest.raises(InputError, match="give a multiple of 4"):
        CodecPolicy(bits=bits)
    with semdb.open(tmp_path / "s") as db:
        with pytest.raises(InputError, match="give a multiple of 4"):
            db.add_embeddings(["/p/a.jpg", "/p/b.jpg"], np.eye(2, 8, dtype=np.float32), model=NO_WEIGHTS, bits=bits)
        assert db.info()["items"] == 0
        with pytest.raises(InputError, match="give a multiple of 4"):
            db.retrain(bits=bits)
