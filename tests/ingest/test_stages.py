"""Ingest's stages one by one (semdb/ingest: scan, classify, decode, encode, commit) on real
files, a real store and the tiny CLIP model; the whole pipeline is tested in test_images.py."""

import os
import shutil

import numpy as np
import pytest
from kit import clip_like_embeddings

from semdb.codec import Codec
from semdb.context import StoreContext
from semdb.errors import ImageError
from semdb.images import content_hash
from semdb.ingest.classify import classify
from semdb.ingest.commit import commit_batch, prune_missing, stored_rows
from semdb.ingest.decode import ahead, decode_ahead, decode_image
from semdb.ingest.encode import CodecSet, embed_and_encode, reconstruction_errors
from semdb.ingest.failures import FAILED_KEY
from semdb.ingest.records import DecodedImage, EmbeddedBatch, EmbedJob, FileState, IngestSummary, Vectors
from semdb.ingest.scan import NOT_AN_IMAGE, scan
from semdb.store import Item, Store

CB = 8  # code bytes of the made-up codes below


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "store", create=True)
    yield s
    s.close()


def _stored(store, path, *, code=None, hash="h", mtime_shift=0, taken=None) -> int:
    """An item for the file at `path` as an earlier ingest stored it (its size and mtime, shifted)."""
    st = os.stat(path)
    item = Item.new(os.fsdecode(path), st.st_size, st.st_mtime_ns + mtime_shift, hash, 4, 3, taken=taken)
    with store.write() as w:
        if code is not None:
            return w.add_item(item, code=code)
        return w.add_item(item, embedding=np.ones(16, np.float32))


def _files(folder):
    return sorted(str(p) for p in folder.iterdir())


# --------------------------------------------------------------------------- scan


def test_scan_lists_new_and_changed_files_and_skips_unchanged_ones(store, photos):
    found = scan(store, [photos], IngestSummary())
    assert sorted(f.path for f in found.todo) == _files(photos) and all(f.item is None for f in found.todo)
    assert found.seen == frozenset(_files(photos)) and found.undated == []

    unchanged = _stored(store, photos / "chelsea.jpg")  # no date taken: stored before semdb kept it
    _stored(store, photos / "coffee.jpg", taken=1.5e9)
    changed = _stored(store, photos / "rocket.jpg", mtime_shift=-1)
    summary = IngestSummary()
    again = scan(store, [photos], summary)
    assert summary.unchanged == 2 and [it.id for it in again.undated] == [unchanged]
    todo = {os.path.basename(f.path): f for f in again.todo}
    assert "chelsea.jpg" not in todo and "coffee.jpg" not in todo and len(todo) == len(_files(photos)) - 2
    st = os.stat(photos / "rocket.jpg")
    assert todo["rocket.jpg"].item.id == changed and (todo["rocket.jpg"].size, todo["rocket.jpg"].mtime_ns) == (
        st.st_size,
        st.st_mtime_ns,
    )
    assert again.seen == found.seen  # unchanged files are seen too (prune keeps their items)


def test_scan_names_a_folder_without_images_and_a_file_that_is_not_one(store, tmp_path, photos):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    summary = IngestSummary()
    found = scan(store, [photos / "chelsea.jpg", tmp_path / "empty", tmp_path / "notes.txt"], summary)
    assert [f.path for f in found.todo] == [str(photos / "chelsea.jpg")]
    assert summary.no_images == [str(tmp_path / "empty"), str(tmp_path / "notes.txt")]
    assert summary.failures == [{"path": str(tmp_path / "notes.txt"), "reason": NOT_AN_IMAGE}] and summary.failed == 1


def test_scan_skips_files_that_failed_before_unless_asked_to_retry(store, photos):
    st = os.stat(photos / "coffee.jpg")
    with store.write() as w:
        w.set_meta(FAILED_KEY, {str(photos / "coffee.jpg"): [st.st_size, st.st_mtime_ns, "too large"]})
    summary = IngestSummary()
    assert str(photos / "coffee.jpg") not in {f.path for f in scan(store, [photos], summary).todo}
    assert summary.failed_before == 1
    retry = IngestSummary()
    assert str(photos / "coffee.jpg") in {f.path for f in scan(store, [photos], retry, retry_failed=True).todo}
    assert retry.failed_before == 0
    os.utime(photos / "coffee.jpg", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # changed since: tried again
    assert str(photos / "coffee.jpg") in {f.path for f in scan(store, [photos], IngestSummary()).todo}


# --------------------------------------------------------------------------- classify


def _classify(store, folder, hashes=None):
    summary = IngestSummary()
    found = scan(store, [folder], summary)
    seen = set(found.seen)
    hashes = hashes or [content_hash(f.path) for f in found.todo]
    jobs = classify(StoreContext(store), found.todo, seen, hashes, summary, None)
    return jobs, summary, seen


def test_classify_makes_one_job_per_new_content_with_its_copies(store, photos):
    shutil.copy(photos / "chelsea.jpg", photos / "chelsea_copy.jpg")
    jobs, summary, _ = _classify(store, photos)
    assert len(jobs) == len(_files(photos)) - 1 and store.count() == 0  # nothing settled: all new
    [cat] = [j for j in jobs if j.path.endswith("chelsea.jpg")]
    assert [c.path for c in cat.copies] == [str(photos / "chelsea_copy.jpg")]
    assert cat.hash == content_hash(photos / "chelsea.jpg") and summary.duplicate == 0


def test_classify_refreshes_a_touched_file_and_moves_an_item_whose_file_moved(store, photos, tmp_path):
    touched = _stored(store, photos / "coffee.jpg", hash=content_hash(photos / "coffee.jpg"), mtime_shift=-5)
    moved = _stored(store, photos / "rocket.jpg", hash=content_hash(photos / "rocket.jpg"))
    os.rename(photos / "rocket.jpg", photos / "rocket_moved.jpg")
    jobs, summary, seen = _classify(store, photos)
    assert summary.unchanged == 1 and summary.moved == 1 and len(jobs) == len(_files(photos)) - 2
    assert store.get_item(touched).mtime_ns == os.stat(photos / "coffee.jpg").st_mtime_ns
    assert store.get_item(moved).path == str(photos / "rocket_moved.jpg") and store.count() == 2
    assert str(photos / "rocket.jpg") in seen  # claimed by the moved file: prune leaves it alone


def test_classify_gives_a_copy_of_a_stored_image_its_code_without_clip(store, photos, tmp_path):
    with store.write() as w:
        w.set_codec(b"codec-bytes", "codec-1", CB)
    original = tmp_path / "elsewhere" / "chelsea.jpg"
    original.parent.mkdir()
    shutil.copy(photos / "chelsea.jpg", original)
    code = np.arange(CB, dtype=np.uint8).tobytes()
    _stored(store, original, code=code, hash=content_hash(original), taken=1.4e9)
    jobs, summary, _ = _classify(store, photos)
    assert summary.duplicate == 1 and not any(j.path.endswith("chelsea.jpg") for j in jobs)
    copy = store.item_by_path(str(photos / "chelsea.jpg"))
    assert copy.taken == 1.4e9 and bytes(store.codes_by_id()[copy.id]) == code


def test_classify_counts_a_file_it_could_not_read(store, photos):
    found = scan(store, [photos], IngestSummary())
    hashes = [content_hash(f.path) for f in found.todo]
    hashes[0] = ImageError(found.todo[0].path, "permission denied")
    summary = IngestSummary()
    jobs = classify(StoreContext(store), found.todo, set(found.seen), hashes, summary, None)
    assert len(jobs) == len(found.todo) - 1 and summary.failures == [
        {"path": found.todo[0].path, "reason": "permission denied"}
    ]


# --------------------------------------------------------------------------- decode


def test_decode_preprocesses_for_the_model_and_keeps_the_files_own_size(tiny_embedder, photos):
    from PIL import Image

    got = decode_image(tiny_embedder, str(photos / "astronaut.jpg"), None)
    assert got.error is None and tuple(got.pixels.shape) == (3, 32, 32)
    assert (got.width, got.height) == Image.open(photos / "astronaut.jpg").size == (512, 512)
    refused = decode_image(tiny_embedder, str(photos / "astronaut.jpg"), 0.1)  # 0.26 megapixels > 0.1
    assert refused.pixels is None and isinstance(refused.error, ImageError)


def test_decode_reports_a_broken_file_instead_of_raising(tiny_embedder, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    got = decode_image(tiny_embedder, str(tmp_path / "broken.jpg"), None)
    assert got.pixels is None and got.error.path == str(tmp_path / "broken.jpg") and got.error.reason


def test_decode_ahead_keeps_batch_order_and_hands_errors_to_the_caller():
    batches = [[1, 2, 3], [4], [5, 6]]
    assert list(decode_ahead(batches, lambda x: x * 10, workers=2)) == [
        ([1, 2, 3], [10, 20, 30]),
        ([4], [40]),
        ([5, 6], [50, 60]),
    ]
    assert list(decode_ahead([], lambda x: x)) == []

    def fails(x):
        if x == 4:
            raise RuntimeError("decoder bug")
        return x

    got = decode_ahead(batches, fails, workers=2)
    assert next(got) == ([1, 2, 3], [1, 2, 3])
    with pytest.raises(RuntimeError, match="decoder bug"):
        next(got)


def test_ahead_stops_its_producer_when_the_caller_stops_early():
    made = []

    def batches():
        for i in range(1000):
            made.append(i)
            yield i

    got = ahead(batches(), depth=2)
    assert next(got) == 0
    got.close()  # joins the producer thread: it must not run on
    assert len(made) <= 4


# --------------------------------------------------------------------------- encode


@pytest.fixture
def decoded(tiny_embedder, photos, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    paths = [photos / "astronaut.jpg", tmp_path / "broken.jpg", photos / "chelsea.jpg", photos / "shapes_0.png"]
    return [decode_image(tiny_embedder, str(p), None) for p in paths]


@pytest.fixture(scope="module")
def codec():
    return Codec.train(clip_like_embeddings(n=400, dim=64)["image_emb"], bits=64, seed=0)


def test_embed_without_a_codec_gives_float16_embeddings_of_the_decoded_images(tiny_embedder, decoded):
    import torch

    got = embed_and_encode(tiny_embedder, decoded, CodecSet())
    assert got.codes is None and got.embeddings.dtype == np.float16 and got.embeddings.shape == (3, 64)
    good = [d for d in decoded if d.error is None]
    expected = tiny_embedder.encode_images(torch.stack([d.pixels for d in good]))
    np.testing.assert_allclose(got.embeddings, expected, atol=2e-3)
    assert len(got) == 3 and embed_and_encode(tiny_embedder, [decoded[1]], CodecSet()) is None  # none decoded


def test_embed_with_a_codec_gives_its_codes_and_what_drift_is_measured_in(tiny_embedder, decoded, codec):
    got = embed_and_encode(tiny_embedder, decoded, CodecSet((codec,), stage=False))  # none waits staged
    X = embed_and_encode(tiny_embedder, decoded, CodecSet()).embeddings.astype(np.float32)
    assert got.embeddings is None and got.codec_ids == (codec.id,) * 3 and got.codes.shape == (3, codec.code_bytes)
    np.testing.assert_array_equal(got.codes, codec.encode(X))
    assert got.errors.shape == (3,) and (got.errors >= 0).all()
    np.testing.assert_allclose(got.errors, reconstruction_errors(codec, X, got.codes), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(reconstruction_errors(codec, 3 * X, got.codes), got.errors, rtol=1e-3, atol=1e-4)
    assert got.outside is None or got.outside.shape == (3,)


# --------------------------------------------------------------------------- commit


def test_stored_rows_are_codes_of_the_stores_codecs_or_staged_embeddings(codec):
    X = clip_like_embeddings(n=5, dim=64, seed=2)["image_emb"]
    staged = stored_rows(Vectors(embeddings=X), CodecSet())
    assert staged.embeddings.dtype == np.float16 and staged.codes is None
    codecs = CodecSet((codec,), stage=False)
    late = stored_rows(Vectors(embeddings=X), codecs)  # embedded before the codec was trained
    np.testing.assert_array_equal(late.codes, codec.encode(X))
    assert late.codec_ids == (codec.id,) * 5
    coded = Vectors(codes=codec.encode(X), codec_ids=(codec.id,) * 5)
    assert stored_rows(coded, codecs) is coded
    with pytest.raises(ValueError, match="without the codec that wrote them"):
        stored_rows(Vectors(codes=coded.codes), codecs)
    with pytest.raises(ValueError, match="of codec other"):
        stored_rows(Vectors(codes=coded.codes, codec_ids=("other",) * 5), codecs)


def _file(path, item=None) -> FileState:
    return FileState.of(path, os.stat(path), item)


def test_commit_writes_a_batch_in_one_go_and_remembers_its_failures(store, photos, tmp_path):
    old = store.get_item(_stored(store, photos / "rocket.jpg", mtime_shift=-1))
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    shutil.copy(photos / "chelsea.jpg", tmp_path / "chelsea_copy.jpg")
    jobs = (
        EmbedJob(_file(photos / "chelsea.jpg"), "hash-cat", (_file(tmp_path / "chelsea_copy.jpg"),)),
        EmbedJob(_file(tmp_path / "broken.jpg"), "hash-broken"),
        EmbedJob(_file(photos / "rocket.jpg", old), "hash-rocket"),
    )
    images = (
        DecodedImage("pixels", 451, 300, taken=1.3e9),
        DecodedImage(None, error=ImageError(str(tmp_path / "broken.jpg"), "cannot decode")),
        DecodedImage("pixels", 427, 640),
    )
    X = clip_like_embeddings(n=2, dim=16, seed=4)["image_emb"]
    summary = IngestSummary()
    commit_batch(StoreContext(store), EmbeddedBatch(jobs, images, Vectors(embeddings=X)), CodecSet(), summary)
    assert (summary.new, summary.changed, summary.duplicate, summary.embedded, summary.failed) == (1, 1, 1, 2, 1)
    cat, copy = store.item_by_path(str(photos / "chelsea.jpg")), store.item_by_path(str(tmp_path / "chelsea_copy.jpg"))
    assert (cat.hash, cat.width, cat.height, cat.taken) == ("hash-cat", 451, 300, 1.3e9) and copy.hash == "hash-cat"
    rocket = store.get_item(old.id)
    assert rocket.hash == "hash-rocket" and rocket.mtime_ns == os.stat(photos / "rocket.jpg").st_mtime_ns
    assert rocket.taken == rocket.mtime_ns / 1e9  # no EXIF date: the file's mtime
    staged = {int(i): e for ids, E in store.iter_staging() for i, e in zip(ids, E)}
    np.testing.assert_allclose(staged[cat.id], X[0], atol=1e-3)
    np.testing.assert_allclose(staged[copy.id], X[0], atol=1e-3)
    np.testing.assert_allclose(staged[old.id], X[1], atol=1e-3)
    assert store.meta()[FAILED_KEY] == {
        str(tmp_path / "broken.jpg"): [12, os.stat(tmp_path / "broken.jpg").st_mtime_ns, "cannot decode"]
    }
    assert store.verify() == []


def test_prune_counts_the_items_whose_files_are_gone_and_removes_them_when_asked(store, photos):
    gone = _stored(store, photos / "coffee.jpg")
    kept = _stored(store, photos / "chelsea.jpg")
    os.remove(photos / "coffee.jpg")
    seen = set(_files(photos))
    summary = IngestSummary()
    prune_missing(store, seen, False, summary)
    assert summary.missing == 1 and summary.pruned == 0 and store.get_item(gone) is not None
    summary = IngestSummary()
    prune_missing(store, seen, True, summary)
    assert summary.pruned == 1 and store.get_item(gone) is None and store.get_item(kept) is not None
    assert store.verify() == []
