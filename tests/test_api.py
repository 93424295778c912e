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
        hits = db.search(image=photos / "chelsea.jpg", k=3)
        assert hits[0].path == str(photos / "chelsea.jpg") and hits[0].score > hits[-1].score
        assert len(db.search("a cat", k=5)) == 5
        assert db.search("a cat", k=5, min_score=10.0) == []

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
        assert db.ingest([photos], count_missing=False)["missing"] == 0  # not looked for
        s = db.ingest([photos], prune=True, train_now=True)
        assert s["pruned"] == 1 and s["items"] == 12
        paths = {h.path for h in db.search("anything", k=50)}
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
        hits = db.search("a photo of a rocket", k=5)
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
            db.search("a cat")


def test_bad_queries(photos, tmp_path, tiny_model):
    with semdb.open(tmp_path / "s", model=tiny_model) as db:
        db.ingest([photos], train_now=True)
        with pytest.raises(InputError, match="empty query"):
            db.search("   ")
        with pytest.raises(InputError, match="not found"):
            db.search(image=tmp_path / "missing.jpg")
        assert len(db.search("x" * 10_000, k=2)) == 2
    with pytest.raises(StoreError, match="no semdb store"):
        semdb.open(tmp_path / "nothing", readonly=True)


def test_every_way_of_searching_takes_every_filter(photos, tmp_path, tiny_model):
    """One vocabulary: search (with a text, an image, a stored item or a SearchRequest) and
    search_vectors all take every filter; a Database has no other name for a search."""
    import datetime

    from semdb.search.request import SearchRequest

    tomorrow = datetime.date.today() + datetime.timedelta(days=1)
    with semdb.open(tmp_path / "s", model=tiny_model) as db:
        db.ingest([photos], train_now=True)
        chelsea = db.store.item_by_path(str(photos / "chelsea.jpg")).id
        vector = db.embedder.encode_texts(["a cat"])
        ways = {
            "search": lambda **f: db.search("a cat", k=5, **f),
            "image": lambda **f: db.search(image=photos / "chelsea.jpg", k=5, **f),
            "like": lambda **f: db.search(like=chelsea, k=5, **f),
            "search_vectors": lambda **f: db.search_vectors(vector, k=5, **f)[0],
            "a SearchRequest": lambda **f: db.search(SearchRequest.of("a cat", k=5, **f)),
        }
        for name, way in ways.items():
            hits = way()
            assert len(hits) == 5 and way(under=photos, before=tomorrow, nprobe=4) == hits, name
            assert way(under=tmp_path / "elsewhere") == [] and way(after=tomorrow) == [], name
            assert way(min_score=10.0) == [], name
        assert db.search(vector=vector, k=5) == ways["search_vectors"]()
        assert chelsea not in [h.id for h in ways["like"]()]  # the item itself is never a hit
        searches = {n for n in dir(db) if not n.startswith("_") and any(w in n for w in ("search", "query", "similar"))}
        assert searches == {"search", "search_vectors"}
        with pytest.raises(InputError, match="not both"):
            db.search(SearchRequest.of("a cat"), k=3)
        with pytest.raises(InputError, match="search_vectors"):
            db.search(vector=np.vstack([vector, vector]))
        with pytest.raises(TypeError):
            db.search("a cat", undr=photos)  # a misspelt filter is an error, never ignored


def test_a_search_request_is_checked_once_and_frozen():
    import dataclasses

    from semdb.search.request import MAX_K, SearchRequest, Where

    request = SearchRequest.of("2:cat - dog", k=7, under="/photos/../photos/2023/", after="2023-06-01")
    assert request.where == Where.of("/photos/2023", "2023-06-01") and request.where.under == "/photos/2023"
    assert [(t.kind, t.value, t.weight) for t in request.terms()] == [("text", "cat", 2.0), ("text", "dog", -1.0)]
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.k = 3
    assert dataclasses.replace(request, k=8).k == 8 and request.k == 7
    with pytest.raises(InputError, match="at least one result"):
        dataclasses.replace(request, k=0)  # a changed copy is checked again
    bad = [
        ({}, "empty query"),
        ({"text": "cat +"}, "no term beside it"),
        ({"text": "cat", "k": MAX_K + 1}, f"at most {MAX_K}"),
        ({"text": "cat", "k": True}, "at least one result"),
        ({"text": "cat", "nprobe": 0}, "nprobe=0"),
        ({"text": "cat", "within": float("nan")}, "finite"),
        ({"text": "cat", "min_score": "high"}, "expected a number"),
        ({"text": "cat", "after": "2024-05-01", "before": "2024-01-01"}, "not earlier"),
        ({"text": "cat", "vector": [1.0, 0.0]}, "not both"),
        ({"vector": [1.0, float("inf")]}, "NaN or infinite"),
        ({"like": -1}, "stored item's id or path"),
    ]
    for kwargs, message in bad:
        with pytest.raises(InputError, match=message):
            SearchRequest.of(**kwargs)
    vectors = SearchRequest.of(vector=np.ones(4)).vector
    assert vectors.shape == (1, 4) and not vectors.flags.writeable
    assert SearchRequest.of(vector=np.ones(4)) == SearchRequest.of(vector=[[1, 1, 1, 1]])
    assert SearchRequest.of(vector=np.ones(4)) != SearchRequest.of(vector=np.zeros(4))


def test_ingest_takes_one_options_record_or_its_fields(photos, tmp_path, tiny_model):
    from semdb.ingest import CodecPolicy, IngestOptions

    with semdb.open(tmp_path / "s", model=tiny_model) as db:
        summary = db.ingest([photos], IngestOptions.of(bits=64, train_now=True, batch_size=5))
        assert summary["items"] == 12 and db.codec.bits == 64
        with pytest.raises(InputError, match="not both"):
            db.ingest([photos], IngestOptions.of(), prune=True)
        with pytest.raises(InputError, match="disagree"):
            IngestOptions.of(bits=128, policy=CodecPolicy())
        assert IngestOptions.of(train_now=True, policy=CodecPolicy(train_at=6, train_now=True)).policy.train_at == 6
        with pytest.raises(TypeError):
            db.ingest([photos], prun=True)  # a misspelt option is an error, never ignored
