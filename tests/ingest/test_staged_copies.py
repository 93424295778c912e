"""Copies are recognised in a store that is not compressed yet, as in one that is."""

import shutil

import numpy as np
from kit import write_photos

import semdb


def test_a_copy_of_a_staged_image_is_a_duplicate_with_its_embedding(tmp_path, tiny_model):
    photos = write_photos(tmp_path / "photos", n_generated=2)
    store = tmp_path / "s"
    with semdb.open(store, model=tiny_model) as db:
        first = db.ingest([photos])
        assert first["new"] == 6 and first["staged"] == 6 and db.codec is None
    shutil.copy2(photos / "chelsea.jpg", photos / "chelsea copy.jpg")
    with semdb.open(store) as db:
        again = db.ingest([photos])
        assert (again["new"], again["duplicate"], again["staged"]) == (0, 1, 7)
        assert not db.model_loaded  # settled from the stored embedding: no CLIP
        staged = {int(i): x for ids, X in db.store.iter_staging() for i, x in zip(ids, X)}
        original, copy = (db.store.item_by_path(str(photos / n)).id for n in ("chelsea.jpg", "chelsea copy.jpg"))
        assert staged[copy].dtype == np.float16 and np.array_equal(staged[copy], staged[original])
        db.retrain()  # compress: the copy gets the original's code
        codes = db.codes()
        assert bytes(codes[copy]) == bytes(codes[original])
