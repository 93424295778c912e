"""What the commands do to stores: imported embeddings stored without their model, the bits a
new store records, a missing store or folder refused before anything is made or loaded."""

import json

import numpy as np
import pytest
from kit import clip_like_embeddings
from typer.testing import CliRunner

from semdb.cli import app

runner = CliRunner()
OFFLINE = {"HF_HUB_OFFLINE": "1", "SEMDB_STORE": "", "COLUMNS": "500"}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], env=OFFLINE)


def info(store) -> dict:
    result = invoke("info", "--store", store, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("model", ["hf-hub:nobody/no-such-clip", "local-dir:/nonexistent/clip"])
def test_embeddings_are_imported_without_loading_their_model(tmp_path, model):
    X = clip_like_embeddings(n=20)["image_emb"]
    np.savez(tmp_path / "emb.npz", image_emb=X, image_path=np.array([f"/p/{i}.jpg" for i in range(20)]))
    store = tmp_path / "s"
    result = invoke("ingest", "--embeddings", tmp_path / "emb.npz", "--model", model, "--store", store)
    assert result.exit_code == 0, result.output
    facts = info(store)
    assert facts["items"] == 20 and facts["model"]["name"] == model and facts["model"]["digest"] is None


def test_a_new_store_keeps_its_bits_for_train_now(tmp_path):
    X = clip_like_embeddings(n=20)["image_emb"]
    np.savez(tmp_path / "emb.npz", image_emb=X, image_path=np.array([f"/p/{i}.jpg" for i in range(20)]))
    store = tmp_path / "s"
    args = ("--model", "local-dir:/nonexistent/clip", "--bits", "128", "--store", store)
    assert invoke("ingest", "--embeddings", tmp_path / "emb.npz", *args).exit_code == 0
    assert info(store)["staging"] == 20
    result = invoke("ingest", "--train-now", "--store", store)
    assert result.exit_code == 0, result.output
    assert "compressed: the codec is trained; the store's 20 items now take 128 bits each\n" in result.stderr
    assert info(store)["bits_per_item"] == 128


@pytest.mark.parametrize(
    "args",
    [
        ["retrain"],
        ["ingest", "--train-now"],
        ["info"],
        ["ls"],
        ["rm", "1"],
        ["export", "--out", "x.parquet"],
        ["query", "a cat"],
        ["duplicates"],
        ["tag", "--labels", "cat,dog"],
        ["serve", "--port", "0"],
    ],
)
def test_every_command_refuses_a_missing_store_and_makes_nothing(tmp_path, args):
    store = tmp_path / "missing"
    result = invoke(*args, "--store", store)
    assert result.exit_code == 4, result.output
    assert result.stderr == f"error: {store}: no semdb store here yet; run `semdb ingest PATH --store {store}` first\n"
    assert not store.exists()


def test_a_missing_folder_is_named_before_the_store_is_made_or_the_model_loads(tmp_path):
    store = tmp_path / "s"
    result = invoke("ingest", tmp_path / "nonexistent", "--store", store, "--model", "local-dir:/nonexistent/clip")
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: {tmp_path / 'nonexistent'}: no such file or directory\n"
    assert not store.exists()


def test_info_names_the_sample_an_interrupted_retrain_left(tmp_path, tiny_model):
    import signal

    from kit import semdb_cli, write_photos

    import semdb
    from semdb.ingest import CodecPolicy

    store = tmp_path / "s"
    with semdb.open(store, model=tiny_model) as db:
        db.ingest([write_photos(tmp_path / "photos", n_generated=4)], policy=CodecPolicy(bits=64, min_train=2))
    semdb_cli("retrain", "--store", store, env={"SEMDB_FAULT_POINT": "train:1"}, check=-signal.SIGKILL)
    assert info(store)["retrain_sample"] == str(store / "retrain-sample.npz")
    line = next(line for line in invoke("info", "--store", store).stdout.splitlines() if line.startswith("retrain "))
    assert "interrupted while training; `semdb retrain` resumes" in line


def test_import_of_another_models_export_says_the_models_differ(tmp_path):
    import semdb

    X = clip_like_embeddings(n=20)["image_emb"]
    with semdb.open(tmp_path / "a") as db:
        db.add_embeddings([f"/a/{i}.jpg" for i in range(20)], X, model="local-dir:/models/one", train_now=True)
        db.export(tmp_path / "a.parquet")
    with semdb.open(tmp_path / "b") as db:
        db.add_embeddings([f"/b/{i}.jpg" for i in range(20)], X, model="local-dir:/models/two")
    result = invoke("import", tmp_path / "a.parquet", "--store", tmp_path / "b")
    assert result.exit_code == 4, result.output
    assert result.stderr == (
        f"error: {tmp_path / 'a.parquet'} was exported from a store of CLIP model local-dir:/models/one, but "
        f"{tmp_path / 'b'} is of local-dir:/models/two: import it into a new --store\n"
    )
    assert "--model" not in result.stderr
