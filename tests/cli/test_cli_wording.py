"""What ingest tells the user: counts with their plurals, video frames counted as frames, and
the ingest that compresses the store says so (in-process: typer's CliRunner)."""

import json

import numpy as np
from kit import clip_like_embeddings, write_photos
from typer.testing import CliRunner

from semdb.cli import app
from semdb.video.synthetic import Scene, write_video

runner = CliRunner()
ENV = {"HF_HUB_OFFLINE": "1", "SEMDB_STORE": "", "COLUMNS": "500"}


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args], env=ENV)
    assert result.exit_code == 0, result.output
    return result


def notes(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith(("note:", "compressed:"))]


def test_the_ingest_that_passes_the_threshold_says_it_compressed_the_store(tmp_path):
    X = clip_like_embeddings(n=600)["image_emb"]
    paths = np.array([f"/p/{i}.jpg" for i in range(600)])
    np.savez(tmp_path / "a.npz", image_emb=X[:300], image_path=paths[:300])
    np.savez(tmp_path / "b.npz", image_emb=X[300:], image_path=paths[300:])
    store = ("--store", tmp_path / "s", "--model", "local-dir:/nonexistent/clip", "--bits", "64")
    first = invoke("ingest", "--embeddings", tmp_path / "a.npz", *store)
    assert not any(line.startswith("compressed:") for line in notes(first))
    second = invoke("ingest", "--embeddings", tmp_path / "b.npz", *store)
    assert notes(second) == ["compressed: the codec is trained; the store's 600 items now take 64 bits each"]
    assert json.loads(invoke("info", "--store", tmp_path / "s", "--json").stdout)["bits_per_item"] == 64


def test_counts_have_their_plurals_and_frames_are_counted_as_frames(tmp_path, tiny_model):
    photos = write_photos(tmp_path / "media", n_generated=0)
    write_video(photos / "clip.mp4", [Scene(1, (255, 0, 0)), Scene(1, (0, 0, 255), "disc")])
    store = ("--store", tmp_path / "s")
    first = invoke("ingest", photos, *store, "--model", tiny_model, "--threads", "1")
    frames = json.loads(invoke("info", *store, "--json").stdout)["items"] - 4
    assert frames >= 2
    staged = f"note: 4 photos and {frames} video frames are stored uncompressed (searched exactly)"
    assert notes(first)[0].startswith(staged), first.stderr
    (photos / "rocket.jpg").unlink()
    (photos / "clip.mp4").unlink()
    again = invoke("ingest", photos, *store)
    gone = f"note: the files of {frames + 1} stored items are gone; run this ingest again with --prune"
    assert notes(again)[0].startswith(gone), again.stderr
    assert notes(again)[1].startswith(f"note: 4 photos and {frames} video frames are stored uncompressed")
    invoke("ingest", photos, *store, "--prune")
    (photos / "coffee.jpg").unlink()
    once = invoke("ingest", photos, *store)
    assert notes(once)[:2] == [
        "note: the file of 1 stored item is gone; run this ingest again with --prune to remove it",
        "note: 3 images are stored uncompressed (searched exactly) until the store holds 500; "
        f"`semdb ingest --train-now --store {tmp_path / 's'}` compresses them now",
    ]
