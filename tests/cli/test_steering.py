"""Steering a search: folder and date filters, more-like-this from stored codes, query
arithmetic, --within, near-duplicates, zero-shot tags; CLI and API, tiny model, real photos."""

from __future__ import annotations

import datetime
import json
import os
import shutil

import numpy as np
import pytest
from kit import semdb_app, write_photos
from PIL import Image

import semdb
from semdb.errors import InputError
from semdb.images import date_taken


def _with_exif_date(path, when: str) -> None:
    img = Image.open(path).convert("RGB")
    exif = Image.Exif()
    exif.get_ifd(0x8769)[36867] = when  # DateTimeOriginal
    img.save(path, exif=exif)


@pytest.fixture(scope="module")
def built_library(tmp_path_factory, tiny_model):
    """12 photos in two folders; 3 of them with an EXIF date taken in 2019; a coded store; and
    a copy of the photos as they were (dates kept)."""
    tmp_path = tmp_path_factory.mktemp("library")
    root = tmp_path / "photos"
    write_photos(root / "trips", n_generated=2)
    write_photos(root / "home", n_generated=2, seed=5)
    for name in ("trips/astronaut.jpg", "trips/coffee.jpg", "home/rocket.jpg"):
        _with_exif_date(root / name, "2019:07:14 12:30:00")
    with semdb.open(tmp_path / "s", model=tiny_model) as db:
        db.ingest([root], train_now=True)
    shutil.copytree(root, tmp_path / "as_stored")
    return root, tmp_path / "s", tmp_path / "as_stored"


@pytest.fixture
def library(built_library):
    """(photos, store): built once for the module and only read by its tests; a photo a test
    removes is put back after it."""
    root, store, as_stored = built_library
    yield root, store
    shutil.copytree(as_stored, root, dirs_exist_ok=True)


def test_exif_date_is_read_from_the_header_else_mtime(library):
    root, store = library
    assert date_taken(root / "trips/astronaut.jpg") == datetime.datetime(2019, 7, 14, 12, 30).timestamp()
    assert date_taken(root / "trips/chelsea.jpg") is None
    with semdb.open(store, readonly=True) as db:
        it = db.store.item_by_path(str(root / "home/rocket.jpg"))
        assert it.taken == datetime.datetime(2019, 7, 14, 12, 30).timestamp()
        other = db.store.item_by_path(str(root / "home/chelsea.jpg"))
        assert other.taken == pytest.approx(other.mtime_ns / 1e9)


def test_folder_and_date_filters(library, tiny_model):
    root, store = library
    with semdb.open(store, readonly=True) as db:
        under = db.search("a photo", k=50, under=root / "trips")
        assert len(under) == 6 and all(h.path.startswith(str(root / "trips") + os.sep) for h in under)
        assert db.search("a photo", k=50, under=root / "tri") == []  # a folder, not a string prefix
        old = db.search("a photo", k=50, before="2020-01-01")
        assert sorted(os.path.basename(h.path) for h in old) == ["astronaut.jpg", "coffee.jpg", "rocket.jpg"]
        both = db.search("a photo", k=50, before="2020-01-01", under=root / "home")
        assert [os.path.basename(h.path) for h in both] == ["rocket.jpg"]
        recent = db.search("a photo", k=50, after=datetime.date(2020, 1, 1))
        assert len(recent) == 9 and not {h.id for h in recent} & {h.id for h in old}
        for bad in ({"after": "yesterday"}, {"before": "2020-13-01"}, {"after": "2021-01-01", "before": "2020-01-01"}):
            with pytest.raises(InputError):
                db.search("a photo", **bad)
    proc = semdb_app("query", "a photo", "--store", store, "--under", root / "home", "--before", "2020-01-01", "--json")
    assert [os.path.basename(h["path"]) for h in json.loads(proc.stdout)] == ["rocket.jpg"]
    proc = semdb_app("query", "a photo", "--store", store, "--after", "not-a-date", check=2)
    assert "not a date" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_more_like_this_uses_the_stored_code_not_the_file(library):
    root, store = library
    with semdb.open(store, readonly=True) as db:
        target = db.store.item_by_path(str(root / "trips/chelsea.jpg"))
        copy = db.store.item_by_path(str(root / "home/chelsea.jpg"))  # the same photo, stored twice
        (root / "trips/chelsea.jpg").unlink()  # no file read: it still works
        hits = db.search(like=target.id, k=5)
        assert target.id not in {h.id for h in hits} and hits[0].id == copy.id
        assert [h.id for h in db.search(like=str(root / "trips/chelsea.jpg"), k=5)] == [h.id for h in hits]
        with pytest.raises(InputError, match="not an item"):
            db.search(like=10**6)
    proc = semdb_app("query", "--like", str(target.id), "--store", store, "-k", 3, "--json")
    assert json.loads(proc.stdout)[0]["id"] == copy.id


def test_query_arithmetic_adds_and_subtracts_weighted_terms(library, tiny_embedder):
    root, store = library
    img = root / "trips/rocket.jpg"
    with semdb.open(store, readonly=True) as db:
        got = db.search(f"2:a cat + {img} - a dog", k=12)
        from semdb.images import load_image

        v = (
            2 * tiny_embedder.encode_texts(["a cat"])[0]
            - tiny_embedder.encode_texts(["a dog"])[0]
            + tiny_embedder.encode_images([load_image(img, draft_size=tiny_embedder.image_size)])[0]
        )
        want = db.search_vectors((v / np.linalg.norm(v))[None], k=12)[0]
        assert [h.id for h in got] == [h.id for h in want]
        whole = db.search_vectors(db.embedder.encode_texts(["a t-shirt"]), k=3)[0]
        assert [h.id for h in db.search("a t-shirt", k=3)] == [h.id for h in whole]  # no split at the "-"
        with pytest.raises(InputError, match="no term"):
            db.search("cat + ", k=3)


def test_within_keeps_hits_close_to_the_best(library):
    _, store = library
    with semdb.open(store, readonly=True) as db:
        hits = db.search("a photo", k=12)
        cut = db.search("a photo", k=12, within=0.02)
        assert cut == [h for h in hits if h.score >= hits[0].score - 0.02] and len(cut) >= 1


def test_near_duplicates_are_grouped_and_exact_copies_flagged(tmp_path, tiny_model):
    photos = write_photos(tmp_path / "p", n_generated=6)
    Image.open(photos / "coffee.jpg").resize((300, 200)).save(photos / "coffee_small.jpg", quality=70)
    (photos / "copy_of_rocket.jpg").write_bytes((photos / "rocket.jpg").read_bytes())
    with semdb.open(tmp_path / "s", model=tiny_model) as db:
        db.ingest([photos], train_now=True)
        found = db.duplicates(threshold=0.995)
        groups = {frozenset(os.path.basename(p) for p in g["paths"]): g for g in found["groups"]}
        assert groups[frozenset({"rocket.jpg", "copy_of_rocket.jpg"})]["exact"]
        assert not groups[frozenset({"coffee.jpg", "coffee_small.jpg"})]["exact"]
        strict = db.duplicates(threshold=0.9999)["groups"]  # identical codes only
        assert strict and all(g in found["groups"] and g["min_similarity"] >= 0.9999 for g in strict)
        default = db.duplicates()
        stats = db.store.meta()["codec_stats"]
        assert default["threshold"] == pytest.approx(0.95 - stats["train_error"], abs=1e-4)
    proc = semdb_app("duplicates", "--store", tmp_path / "s", "--threshold", "0.995", "--json")
    assert len(json.loads(proc.stdout)["groups"]) == len(found["groups"])
    semdb_app("duplicates", "--store", tmp_path / "s", "--threshold", "7", check=2)


def test_tag_gives_every_item_its_best_label(library, tiny_embedder):
    _, store = library
    with semdb.open(store, readonly=True) as db:
        rows = db.classify("cat, rocket ,coffee")
        assert len(rows) == db.store.count() and {r["label"] for r in rows} <= {"cat", "rocket", "coffee"}
        T = tiny_embedder.encode_texts([f"a photo of a {x}." for x in ("cat", "rocket", "coffee")])
        first = rows[0]
        scores = db.codec.scores(T, db.codes()[first["id"]][None])[:, 0]
        assert first["label"] == ["cat", "rocket", "coffee"][int(scores.argmax())]
        with pytest.raises(InputError):
            db.classify("cat", prompt="no placeholder")
    proc = semdb_app("tag", "--labels", "cat,dog", "--store", store, "--csv")
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "id,path,label,score" and len(lines) == 13


def test_older_items_get_their_date_taken_on_the_next_ingest(tmp_path, tiny_model):
    from semdb.store import Store

    photos = write_photos(tmp_path / "p", n_generated=2)
    _with_exif_date(photos / "coffee.jpg", "2018:01:02 03:04:05")
    with semdb.open(tmp_path / "s", model=tiny_model) as db:
        db.ingest([photos], train_now=True)
    with Store(tmp_path / "s") as s:  # as a store written before semdb kept the date
        with s.write() as w:
            for it in list(s.iter_items()):
                it.taken = None
                w.update_item(it)
    with semdb.open(tmp_path / "s", model=tiny_model) as db:
        assert db.ingest([photos])["unchanged"] == 6
        coffee = db.store.item_by_path(str(photos / "coffee.jpg"))
        assert coffee.taken == datetime.datetime(2018, 1, 2, 3, 4, 5).timestamp()
        assert all(it.taken is not None for it in db.store.iter_items())


def test_items_keep_the_files_own_size_not_the_decoded_one(tmp_path, tiny_model):
    """Big images are decoded at a reduced scale (JPEG draft mode, box reduction) for CLIP; the
    item records the file's size as shown (EXIF orientation applied)."""
    photos = write_photos(tmp_path / "p", n_generated=1)
    img = Image.open(photos / "coffee.jpg")  # 600 x 400
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown 400 x 600
    img.save(photos / "turned.jpg", exif=exif)
    img.resize((1200, 800)).save(photos / "big.png")
    with semdb.open(tmp_path / "s", model=tiny_model) as db:
        db.ingest([photos])
        size = {os.path.basename(it.path): (it.width, it.height) for it in db.store.iter_items()}
    assert size["coffee.jpg"] == (600, 400) and size["turned.jpg"] == (400, 600) and size["big.png"] == (1200, 800)
    assert size["astronaut.jpg"] == (512, 512)


def test_duplicate_groups_do_not_chain_and_flag_exact_copies_inside_a_group(tmp_path, tiny_model):
    # a burst of slowly changing shots: each 0.97 from the next, 0.88 from the one after
    basis = np.linalg.qr(np.random.default_rng(0).standard_normal((64, 2)))[0].T
    angles = np.arccos(0.97) * np.arange(7)
    burst = np.cos(angles)[:, None] * basis[0] + np.sin(angles)[:, None] * basis[1]
    with semdb.open(tmp_path / "burst", model=tiny_model) as db:
        db.add_embeddings([f"/burst/{i}.jpg" for i in range(7)], burst.astype(np.float32), model=tiny_model)
        groups = db.duplicates(threshold=0.95)["groups"]
    assert groups and all(len(g["ids"]) == 2 for g in groups)  # chained, it was one group of 7
    for g in groups:
        rows = [int(os.path.basename(p)[0]) for p in g["paths"]]
        assert abs(rows[0] - rows[1]) == 1 and g["min_similarity"] == pytest.approx(0.97, abs=2e-3)
    proc = semdb_app("duplicates", "--store", tmp_path / "burst", "--threshold", "0.95")
    assert "similarity >= 0.97" in proc.stdout and "similarity >= 0.8" not in proc.stdout

    # an exact copy beside a resized version: one group, the copy flagged
    photos = write_photos(tmp_path / "p", n_generated=0)
    Image.open(photos / "coffee.jpg").resize((300, 200)).save(photos / "coffee_small.jpg", quality=70)
    (photos / "copy_of_coffee.jpg").write_bytes((photos / "coffee.jpg").read_bytes())
    with semdb.open(tmp_path / "s", model=tiny_model) as db:
        db.ingest([photos], train_now=True)
        id_of = {os.path.basename(it.path): it.id for it in db.store.iter_items()}
        groups = db.duplicates(threshold=0.995)["groups"]
    group = next(g for g in groups if id_of["coffee.jpg"] in g["ids"])
    assert {id_of["coffee_small.jpg"], id_of["copy_of_coffee.jpg"]} <= set(group["ids"]) and not group["exact"]
    assert [sorted(c) for c in group["copies"]] == [sorted([id_of["coffee.jpg"], id_of["copy_of_coffee.jpg"]])]
    shown = semdb_app("duplicates", "--store", tmp_path / "s", "--threshold", "0.995").stdout
    first, second = group["copies"][0]
    flagged = [line.split() for line in shown.splitlines() if "exact copy of" in line]
    assert flagged == [
        [str(second), str(tmp_path / "p" / os.path.basename(group["paths"][group["ids"].index(second)]))]
        + ["(exact", "copy", "of", f"{first})"]
    ]
