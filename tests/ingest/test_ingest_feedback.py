"""What ingest and query tell a user about runs that find nothing, fail, or do little: the
installed `semdb` command on real files (tiny model, Pillow-written images, LMDB)."""

from __future__ import annotations

import json
import os

from kit import semdb_app as run
from kit import semdb_cli
from PIL import Image


def _picture(path, color=(200, 30, 30), size=(64, 48)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def test_an_empty_folder_or_a_file_that_is_not_an_image_is_named(tmp_path, tiny_model):
    store, empty, notes = tmp_path / "s", tmp_path / "empty", tmp_path / "notes.txt"
    empty.mkdir()
    notes.write_text("not a picture\n")
    proc = run("ingest", empty, "--store", store, "--model", tiny_model)
    assert f"no images found in {empty}" in proc.stderr
    proc = run("ingest", notes, "--store", store, "--model", tiny_model)
    assert f"failed: {notes}: not an image" in proc.stderr and f"no images found in {notes}" in proc.stderr
    summary = json.loads(run("ingest", notes, empty, "--store", store, "--json").stdout)
    assert summary["no_images"] == [str(notes), str(empty)] and summary["failed"] == 1
    # a folder with pictures is not named, even beside an empty one
    _picture(tmp_path / "pics" / "a.png")
    proc = run("ingest", tmp_path / "pics", empty, "--store", store, "--model", tiny_model)
    assert f"no images found in {empty}" in proc.stderr and "pics" not in proc.stderr


def test_an_empty_result_says_why_and_json_stays_a_list(tmp_path, tiny_model):
    store = tmp_path / "s"
    run("ingest", tmp_path / "nothing", "--store", store, "--model", tiny_model, check=2)  # no such folder
    (tmp_path / "empty").mkdir()
    run("ingest", tmp_path / "empty", "--store", store, "--model", tiny_model)
    proc = run("query", "a cat", "--store", store)
    assert proc.stdout == "" and "no results: the store is empty" in proc.stderr
    assert json.loads(run("query", "a cat", "--store", store, "--json").stdout) == []
    _picture(tmp_path / "pics" / "a.png")
    run("ingest", tmp_path / "pics", "--store", store)
    proc = run("query", "a cat", "--store", store, "--under", "/nope")
    assert proc.stdout == "" and "no results: nothing stored under /nope" in proc.stderr
    proc = run("query", "a cat", "--store", store, "--under", "/nope", "--paths-only")
    assert proc.stdout == "" and "no results" in proc.stderr
    assert json.loads(run("query", "a cat", "--store", store, "--under", "/nope", "--json").stdout) == []
    proc = run("query", "a cat", "--store", store, "--min-score", "1.5")
    assert proc.stdout == "" and "no results" in proc.stderr


def _messy_folder(folder):
    """A photo, two truncated JPEGs (cut in the header, cut in the pixels) and a text file named
    like a JPEG."""
    import numpy as np

    _picture(folder / "good.png")
    noise = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "whole.jpg", quality=90)
    data = (folder / "whole.jpg").read_bytes()
    (folder / "cut_header.jpg").write_bytes(data[:300])
    (folder / "cut_pixels.jpg").write_bytes(data[: len(data) // 2])
    (folder / "whole.jpg").unlink()
    (folder / "x.jpg").write_text("a text file with a JPEG's name\n")
    return folder


def test_failed_files_are_remembered_and_skipped_until_they_change_or_retry_failed(tmp_path, tiny_model):
    folder, store = _messy_folder(tmp_path / "messy"), tmp_path / "s"
    first = json.loads(run("ingest", folder, "--store", store, "--model", tiny_model, "--json").stdout)
    reasons = {f["path"].rsplit("/", 1)[1]: f["reason"] for f in first["failures"]}
    assert first["new"] == 1 and sorted(reasons) == ["cut_header.jpg", "cut_pixels.jpg", "x.jpg"]
    assert reasons["cut_header.jpg"].startswith("truncated or corrupt image: ")
    assert reasons["cut_pixels.jpg"].startswith("truncated or corrupt image: image file is truncated")
    assert reasons["x.jpg"] == "not an image or unsupported format"
    # unchanged failures are neither decoded (a decode would kill this run) nor listed again
    proc = semdb_cli("ingest", folder, "--store", store, env={"SEMDB_FAULT_POINT": "decode:1"})
    assert "failed:" not in proc.stderr and "3 files that failed before" in proc.stderr
    assert "--retry-failed" in proc.stderr
    again = json.loads(run("ingest", folder, "--store", store, "--json").stdout)
    assert (again["failed"], again["failed_before"], again["unchanged"]) == (0, 3, 1)
    retried = json.loads(run("ingest", folder, "--store", store, "--retry-failed", "--json").stdout)
    assert (retried["failed"], retried["failed_before"]) == (3, 0)
    # a fixed file is ingested, a deleted one forgotten
    _picture(folder / "x.jpg", color=(10, 200, 10))
    (folder / "cut_pixels.jpg").unlink()
    fixed = json.loads(run("ingest", folder, "--store", store, "--json").stdout)
    assert (fixed["new"], fixed["failed"], fixed["failed_before"]) == (1, 0, 1)
    import semdb

    with semdb.open(store, readonly=True) as db:
        assert [os.path.basename(p) for p in db.store.meta()["failed_files"]] == ["cut_header.jpg"]
        assert db.store.verify() == []


def test_images_per_second_is_the_embedding_rate_and_left_out_of_short_runs(photos, tmp_path, tiny_model):
    store = tmp_path / "s"
    # 6 batches of 2, each commit held 0.3 s: the embedding phase runs at about 2 / 0.3 = 6.7
    # images a second, whatever loading the model and exporting it to ONNX cost before it
    args = ("ingest", photos, "--store", store, "--batch-size", 2, "--json")
    slow = json.loads(
        semdb_cli(*args, "--model", tiny_model, env={"SEMDB_FAULT_POINT": "batch_committed:delay=0.3"}).stdout
    )
    assert slow["embedded"] == 12 and 5.5 < slow["images_per_second"] < 7.5, slow
    assert slow["seconds"] > 12 / slow["images_per_second"]  # the run's own time includes the model's loading
    # nothing embedded, or too little work to time: no rate
    assert json.loads(run(*args).stdout)["images_per_second"] is None
    _picture(photos / "another.png", color=(1, 2, 3))
    quick = json.loads(run(*args).stdout)
    assert quick["new"] == 1 and quick["images_per_second"] is None
    table = run("ingest", photos, "--store", store).stdout
    assert "images per second" not in table and "seconds" in table
