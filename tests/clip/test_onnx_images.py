"""The image tower without torch (issue 24): open_clip's preprocessing in numpy, the ONNX
export of the image tower checked against torch, ingest that exports once and then runs
without torch or open_clip, the opt-in int8 tower. Speed and memory: bench/ingest_towers.py."""

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import semdb

ROOT = str(Path(__file__).resolve().parents[2])

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Each test its own model cache: no export exists at the start."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("SEMDB_CACHE_DIR", str(folder))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("SEMDB_ONNX", raising=False)
    return folder


def run_python(code: str, **env) -> dict:
    """A fresh interpreter running `code`, whose last stdout line is JSON."""
    full_env = {**os.environ, "PYTHONPATH": ROOT, **env}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def real_images(photos):
    from semdb.images import load_image

    return [load_image(p) for p in sorted(Path(photos).iterdir())]


# ------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize(
    "cfg",
    [
        {"size": 32},  # the tiny model's
        {"size": 224},  # ViT-B-32's
        {"size": 224, "interpolation": "bilinear"},
        {"size": 64, "resize_mode": "squash"},
        {"size": (96, 96), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
    ],
)
def test_preprocess_matches_open_clip_on_real_photos(photos, cfg):
    import dataclasses

    import torch
    from open_clip.transform import PreprocessCfg, image_transform_v2

    from semdb.clip.onnx.image import Preprocess

    full = {**dataclasses.asdict(PreprocessCfg()), **cfg}
    theirs = image_transform_v2(PreprocessCfg(**full), is_train=False)
    ours = Preprocess.of(full)
    images = real_images(photos)
    images += [images[0].rotate(90, expand=True), images[1].crop((0, 0, 37, 300))]  # portrait, thin
    for img in images:
        expected = theirs(img).numpy()
        got = ours(img)
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    assert torch.is_tensor(theirs(images[0]))  # the reference really is open_clip's


def test_preprocess_declines_what_it_does_not_reproduce():
    from semdb.clip.onnx.image import Preprocess

    base = {"size": 224, "mean": (0.5,) * 3, "std": (0.5,) * 3}
    assert Preprocess.of(base) is not None
    assert Preprocess.of({**base, "resize_mode": "longest"}) is None
    assert Preprocess.of({**base, "size": (224, 160)}) is None
    assert Preprocess.of({**base, "interpolation": "nearest"}) is None


# ------------------------------------------------------------------------- the export


def test_image_export_matches_torch_and_a_damaged_one_is_rebuilt(tiny_model, tiny_embedder, photos):
    from semdb.clip.embedder import Embedder
    from semdb.clip.onnx import image

    emb = Embedder(model=tiny_model, text_only=True)
    images = real_images(photos)
    folder = image.export(emb, images)
    assert folder is not None and (folder / "model.onnx").is_file()
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["max_abs_diff"] <= 1e-4 and meta["image_size"] == 32
    enc = image.load(emb.model_id["digest"])
    x = enc.encode_images(images)
    assert x.dtype == np.float32 and x.shape == (len(images), 64)
    np.testing.assert_allclose(x, tiny_embedder.encode_images(images), atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    assert enc.encode_images([]).shape == (0, 64)
    with pytest.raises(semdb.errors.InputError):
        enc.encode_images(np.zeros((2, 32, 32), np.float32))
    (folder / "model.onnx.data").write_bytes(b"damaged")
    assert image.load(emb.model_id["digest"]) is None and not folder.exists()
    assert image.export(emb, images) == folder and image.load(emb.model_id["digest"]) is not None


def test_no_export_when_onnx_is_off(tiny_model, monkeypatch, cache):
    from semdb.clip.embedder import Embedder
    from semdb.clip.onnx import image

    monkeypatch.setenv("SEMDB_ONNX", "0")
    assert image.export(Embedder(model=tiny_model, text_only=True)) is None
    assert not (cache / "onnx").exists()


# ------------------------------------------------------------------------- ingest

INGEST = """
import json, sys, semdb
with semdb.open({store!r}, model={model!r}) as db:
    s = db.ingest([{photos!r}], codec={codec!r}, int8={int8})
    if {codec!r} is None:  # a dozen photos stay staged: their float16 embeddings
        by_id = {{int(i): x for ids, X in db.store.iter_staging() for i, x in zip(ids, X.tolist())}}
    else:
        ids, codes = db.store.load_codes()
        by_id = dict(zip(ids.tolist(), codes.tolist()))
    s["vectors"] = {{it.path.rsplit("/", 1)[-1]: by_id[it.id] for it in db.store.iter_items()}}
    s["image_hit"] = db.search(image={probe!r}, k=1)[0].path.rsplit("/", 1)[-1]
    if {retrain}:
        db.retrain()  # trains the codec on the staged embeddings
        db.retrain()  # re-embeds every file
print(json.dumps({{**s, "torch": "torch" in sys.modules, "open_clip": "open_clip" in sys.modules}}))
"""


@pytest.fixture()
def codec_file(tmp_path, tiny_embedder, photos):
    from semdb.codec import Codec

    X = tiny_embedder.encode_images(real_images(photos))
    path = tmp_path / "codec.bin"
    Codec.train(X, 32, model_id=tiny_embedder.model_id).save(path)
    return str(path)


def ingest(tmp_path, name, tiny_model, photos, codec_file, int8=False, retrain=False, here=False, **env):
    """INGEST in a fresh interpreter, or (`here`) in this one, whose torch is loaded already: for
    what does not ask whether the run imported torch, without a Python start and a torch import."""
    probe = str(sorted(Path(photos).iterdir())[0])
    code = INGEST.format(
        store=str(tmp_path / name),
        model=tiny_model,
        photos=str(photos),
        codec=codec_file,
        int8=int8,
        probe=probe,
        retrain=retrain,
    )
    if not here:
        return run_python(code, **env)
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
        for name, value in env.items():
            patch.setenv(name, value)
        exec(code, {})
    return json.loads(out.getvalue().strip().splitlines()[-1])


def test_first_ingest_exports_then_ingest_runs_without_torch(tmp_path, tiny_model, photos, cache):
    torch_path = ingest(tmp_path, "torch", tiny_model, photos, None, here=True, SEMDB_ONNX="0")
    assert torch_path["image_model"] == "torch" and torch_path["onnx_export_seconds"] == 0
    assert not (cache / "onnx").exists()

    first = ingest(tmp_path, "first", tiny_model, photos, None, here=True)  # it loads torch to export
    assert first["image_model"] == "onnx fp32" and first["onnx_export_seconds"] > 0  # paid once, and said

    again = ingest(tmp_path, "again", tiny_model, photos, None, retrain=True)
    assert again["image_model"] == "onnx fp32" and again["onnx_export_seconds"] == 0
    assert not again["torch"] and not again["open_clip"]  # ingest, image query and retrain
    assert again["peak_rss_mb"] > 0
    assert again["embedded"] == torch_path["embedded"] == len(list(Path(photos).iterdir()))
    assert again["vectors"] == first["vectors"]
    names = sorted(torch_path["vectors"])
    assert sorted(again["vectors"]) == names
    np.testing.assert_allclose(  # torch's embeddings, to float16 rounding
        [again["vectors"][n] for n in names], [torch_path["vectors"][n] for n in names], atol=1e-3, rtol=0
    )
    assert again["image_hit"] == torch_path["image_hit"]


def test_same_codes_as_torch(tmp_path, tiny_model, photos, codec_file):
    torch_path = ingest(tmp_path, "torch", tiny_model, photos, codec_file, here=True, SEMDB_ONNX="0")
    onnx = ingest(tmp_path, "onnx", tiny_model, photos, codec_file, here=True)
    assert onnx["image_model"] == "onnx fp32"
    from semdb.codec import Codec

    codec = Codec.load(codec_file)
    names = sorted(torch_path["vectors"])
    codes = {run["image_model"]: np.array([run["vectors"][n] for n in names], np.uint8) for run in (torch_path, onnx)}
    # the same vectors out of the codes: the tiny random model's codebook holds equal codewords,
    # so the code bytes of a tie may differ (the embeddings agree to 1e-7, test above); ViT-B-32's
    # gave the same code bytes for 64 of 64 (docs/BENCHMARKS.md)
    np.testing.assert_allclose(codec.decode(codes["onnx fp32"]), codec.decode(codes["torch"]), atol=1e-6, rtol=0)


def test_int8_is_opt_in_and_close_to_fp32(tmp_path, tiny_model, tiny_embedder, photos, codec_file, cache):
    from semdb.clip.onnx import image

    out = ingest(tmp_path, "int8", tiny_model, photos, codec_file, int8=True, here=True)
    assert out["image_model"] == "onnx int8" and out["onnx_export_seconds"] > 0
    digest = tiny_embedder.model_id["digest"]
    meta = json.loads((cache / "onnx" / digest / "image-int8" / "meta.json").read_text())
    assert meta["min_cosine_to_fp32"] > 0.99
    images = real_images(photos)
    x8, x32 = image.load(digest, int8=True).encode_images(images), image.load(digest).encode_images(images)
    assert not np.array_equal(x8, x32)  # really another model
    assert (x8 * x32).sum(1).min() > 0.99
    fp32 = ingest(tmp_path, "fp32", tiny_model, photos, codec_file, here=True)
    assert fp32["image_model"] == "onnx fp32"  # not by default


def test_int8_without_onnx_is_refused(tmp_path, tiny_model, photos):
    from kit import semdb_app

    cmd = ["ingest", photos, "--store", tmp_path / "s", "--model", tiny_model, "--int8"]
    proc = semdb_app(*cmd, env={"SEMDB_ONNX": "0"}, check=None)
    assert proc.returncode != 0 and "--int8 needs the ONNX image tower" in proc.stderr


def test_cli_json_reports_memory_and_model(tmp_path, tiny_model, photos):
    ingest(tmp_path, "first", tiny_model, photos, None, int8=True, here=True)  # exported here: the command runs on it
    env = {**os.environ, "PYTHONPATH": ROOT, "COLUMNS": "500"}
    cmd = [sys.executable, "-m", "semdb.cli", "ingest", str(photos), "--store", str(tmp_path / "s")]
    proc = subprocess.run(
        [*cmd, "--model", tiny_model, "--int8", "--json"], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["image_model"] == "onnx int8" and summary["peak_rss_mb"] > 50
