"""Ingest on Ray (`engine="ray"`) on a real local Ray instance: it builds the same store as a
local ingest of the same folder (items, ids, codec, codes), first run and incremental."""

import json
import os
import shutil
from pathlib import Path

import pytest
from kit import semdb_app, semdb_cli, store_items, write_photos

import semdb
from semdb.ingest.encode import CodecSet

ray = pytest.importorskip("ray", reason="the [ray] extra is part of [test]; this only skips a partial install")


# "local": a new instance even while another test file's Ray cluster runs (pytest -n 2): that
# one's address is recorded in /tmp/ray, where a plain ray.init() would find and join it.
LOCAL = {"RAY_ADDRESS": "local"}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def collection(folder: Path) -> Path:
    """16 files: 14 distinct images (4 photos, 10 drawings, two of them in a sub-folder), a
    copy of one photo and an undecodable file."""
    write_photos(folder, n_generated=8)
    (folder / "copy_of_chelsea.jpg").write_bytes((folder / "chelsea.jpg").read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    write_photos(folder / "sub", n_generated=2, seed=3)
    for name in ("astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg"):
        (folder / "sub" / name).unlink()
    return folder


def snapshot(path) -> tuple:
    """The codec id and every item with its id and code: what 'the same store' means."""
    with semdb.open(path, readonly=True) as db:
        items = store_items(db)
        assert db.store.verify() == [] and db.store.staging_count() == 0
        return db.codec.id, items


def ingest_both(tmp_path, folder, tiny_model, **kw) -> tuple[dict, dict]:
    """Both engines on the torch image tower (Ray's actors run torch; the ONNX tower's
    embeddings differ in the 7th digit, which can move a codec trained on them)."""
    summaries = []
    os.environ["SEMDB_ONNX"] = "0"
    try:
        for engine in ("local", "ray"):
            with semdb.open(tmp_path / engine, model=tiny_model, threads=1) as db:
                summaries.append(db.ingest([folder], engine=engine, batch_size=4, train_now=True, **kw))
    finally:
        del os.environ["SEMDB_ONNX"]
    assert [s.pop("image_model") for s in summaries] == ["torch", "torch"]
    for s in summaries:
        s.pop("seconds"), s.pop("images_per_second"), s.pop("peak_rss_mb", None), s.pop("onnx_export_seconds", None)
    return summaries[0], summaries[1]


def test_ray_ingest_builds_the_same_store_as_a_local_ingest(local_ray, tmp_path, tiny_model):
    folder = collection(tmp_path / "photos")
    local, on_ray = ingest_both(tmp_path, folder, tiny_model)
    assert local == on_ray
    assert (local["new"], local["duplicate"], local["failed"], local["items"]) == (14, 1, 1, 15)
    assert snapshot(tmp_path / "local") == snapshot(tmp_path / "ray")
    assert not any((tmp_path / "ray" / "ray-shards").iterdir())  # shards are deleted once imported

    # incremental: a moved file, a changed file, a new file, a deleted file
    os.rename(folder / "shapes_0.png", folder / "sub" / "moved.png")
    shutil.copy(folder / "rocket.jpg", folder / "shapes_1.png")  # same path, new content
    write_photos(tmp_path / "more", n_generated=1, seed=9)
    shutil.copy(tmp_path / "more" / "shapes_0.png", folder / "new.png")
    (folder / "shapes_2.png").unlink()
    leftover = tmp_path / "ray" / "ray-shards" / "semdb-killedrun"  # as a killed run leaves it
    leftover.mkdir()
    (leftover / "000000000.parquet").write_bytes(b"half a shard")
    local, on_ray = ingest_both(tmp_path, folder, tiny_model, prune=True)
    assert not leftover.exists()
    assert local == on_ray
    assert (local["moved"], local["changed"], local["new"], local["pruned"], local["embedded"]) == (1, 1, 1, 1, 2)
    assert snapshot(tmp_path / "local") == snapshot(tmp_path / "ray")

    with semdb.open(tmp_path / "ray", threads=1) as db:  # nothing left to do
        again = db.ingest([folder], engine="ray", train_now=True)
        assert again["embedded"] == 0 and again["unchanged"] == 15 and again["failed_before"] == 1
        assert db.search(image=folder / "rocket.jpg", k=2)[0].path in {
            str(folder / "rocket.jpg"),
            str(folder / "shapes_1.png"),
        }


def test_ray_trains_the_codec_on_a_sample_then_encodes_on_the_cluster(local_ray, tmp_path, tiny_model):
    """With train_at = 6 and batches of 4, both engines stage 2 batches, train the codec from
    them, and encode the rest to codes (on the Ray actors for the Ray engine)."""
    from semdb.ingest import CodecPolicy

    folder = collection(tmp_path / "photos")
    local, on_ray = ingest_both(tmp_path, folder, tiny_model, policy=CodecPolicy(train_at=6, train_now=True))
    assert local == on_ray and local["codec_trained"]
    codec_id, items = snapshot(tmp_path / "ray")
    assert (codec_id, items) == snapshot(tmp_path / "local")
    with semdb.open(tmp_path / "ray", readonly=True) as db:
        assert db.codec.config["n_train"] == 8  # the sample: two batches of four


def test_cli_engine_ray_starts_its_own_local_instance(tmp_path, tiny_model):
    folder = write_photos(tmp_path / "photos", n_generated=2)
    args = ["ingest", "--train-now", folder, "--store", tmp_path / "s", "--model", tiny_model, "--threads", "1"]
    proc = semdb_cli(*args, "--engine", "ray", "--json", env=LOCAL, timeout=600)
    summary = json.loads(proc.stdout)  # stdout holds only the JSON, whatever Ray logs
    assert summary["new"] == 6 and summary["items"] == 6 and summary["codec_trained"]
    proc = semdb_app(*args, "--engine", "spark", check=2)  # a usage error: no process of its own needed
    assert "use 'local' or 'ray'" in proc.stderr
    proc = semdb_cli(
        *args, "--engine", "ray", "--ray-address", "127.0.0.1:1", check=2
    )  # nothing listens there: fail fast, one line
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_worker_with_other_weights_fails_the_ingest_in_one_line(local_ray, tmp_path):
    """Each actor checks its model against the store's weights digest (nodes may hold other
    files under the same path); the error raised inside Ray reaches the caller as itself."""
    from semdb.clip.embedder import Embedder
    from semdb.errors import ModelError
    from semdb.ingest.decode import decode_image
    from semdb.ingest.ray import RayEngine
    from semdb.ingest.records import EmbedJob, FileState
    from semdb.testing import write_tiny_model

    folder = write_photos(tmp_path / "photos", n_generated=1)
    job = EmbedJob(FileState(str(folder / "coffee.jpg"), 0, 0, None), "hash")
    model_dir = tmp_path / "model"
    embedder = Embedder("local-dir:" + write_tiny_model(model_dir, seed=0))
    write_tiny_model(model_dir, seed=1)  # the workers now find other weights at the same path
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "semdb-user-file.txt").write_text("a --ray-shards folder is not ours to clean")
    with RayEngine(tmp_path / "shards", threads=1) as engine:
        with pytest.raises(ModelError, match="loaded other weights") as err:
            list(engine.embed([[job]], CodecSet(), embedder))
        assert "\n" not in str(err.value)
        write_tiny_model(model_dir, seed=0)
        (batch,) = engine.embed([[job]], CodecSet(), embedder)
        expected = decode_image(embedder, job.path, None)
        assert (batch.images[0].width, batch.images[0].height) == (expected.width, expected.height)
        assert batch.vectors.embeddings.shape == (1, 64)
    assert [p.name for p in (tmp_path / "shards").iterdir()] == ["semdb-user-file.txt"]
