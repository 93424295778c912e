"""What ingest and query tell a user about runs that find nothing, fail, or do little: the
installed `semdb` command on real files (tiny model, Pillow-written images, LMDB)."""

from __future__ import annotations

import json

from conftest import semdb_cli as run
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
