"""A retrain that fails (rather than being interrupted) leaves no resumable sample behind."""

import pytest
from kit import write_photos

import semdb
from semdb.errors import InputError
from semdb.ingest import CodecPolicy


def test_a_retrain_that_cannot_train_leaves_no_sample(tmp_path, tiny_model):
    photos = write_photos(tmp_path / "photos", n_generated=8)
    store = tmp_path / "s"
    with semdb.open(store, model=tiny_model) as db:
        db.ingest([photos], policy=CodecPolicy(bits=64, min_train=2))
    keep = photos / "astronaut.jpg"
    for p in photos.iterdir():
        if p != keep:
            p.unlink()
    with semdb.open(store) as db, pytest.raises(InputError, match="only 1 of the 12 sampled files"):
        db.retrain()
    assert not (store / "retrain-sample.npz").exists()
