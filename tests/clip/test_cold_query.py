"""Cold text queries (issue 13): text tower only, no random init, cached digest, lazy imports,
the cached ONNX text tower. Behaviour only: bench/cold_query.py measures the time and memory."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import semdb
from semdb.clip import modelcache

TEXTS = ["a photo of a cat", "an astronaut on the moon", "Ünïcode &amp; café ☕ 42", "word " * 200]
ROOT = str(Path(__file__).resolve().parents[2])


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Each test its own model cache (digests, sources, ONNX exports)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("SEMDB_CACHE_DIR", str(folder))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return folder


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    """A fresh interpreter importing this checkout's semdb."""
    full_env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **env}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture()
def tiny_store(tmp_path, tiny_model, photos, monkeypatch):
    """A store built with torch: no ONNX export is cached yet."""
    path = tmp_path / "store"
    with monkeypatch.context() as env:
        env.setenv("SEMDB_ONNX", "0")
        with semdb.open(path, model=tiny_model) as db:
            db.ingest([photos])
    return path


# ---------------------------------------------------------------------------- text tower only


def test_text_only_has_the_same_digest_and_embeddings(tiny_model, tiny_embedder):
    import open_clip
    import torch

    from semdb.clip.embedder import Embedder, state_dict_digest

    text = Embedder(model=tiny_model, text_only=True)
    assert text.model_id == tiny_embedder.model_id
    assert not text.image_tower_loaded
    assert all(p.is_meta for p in text.model.visual.parameters())  # image tower: no weights held
    assert not any(p.is_meta for n, p in text.model.named_parameters() if not n.startswith("visual."))
    np.testing.assert_allclose(text.encode_texts(TEXTS), tiny_embedder.encode_texts(TEXTS), atol=1e-5)

    # and both are what open_clip's own loader (random init, then load) gives
    ref, _, preprocess = open_clip.create_model_and_transforms(tiny_model)
    ref.eval()
    assert state_dict_digest(ref) == tiny_embedder.model_id["digest"]
    tokens = open_clip.get_tokenizer(tiny_model)(TEXTS)
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(ref.encode_text(tokens), dim=-1).numpy()
    np.testing.assert_allclose(text.encode_texts(TEXTS), expected, atol=1e-5)


def test_text_only_loads_the_image_tower_on_first_image(tiny_model, tiny_embedder):
    from PIL import Image

    from semdb.clip.embedder import Embedder, state_dict_digest

    text = Embedder(model=tiny_model, text_only=True)
    images = [Image.new("RGB", (40, 30), (200, 20, 20)), Image.new("RGB", (30, 40), (20, 20, 200))]
    np.testing.assert_allclose(text.encode_images(images), tiny_embedder.encode_images(images), atol=1e-5)
    assert text.image_tower_loaded
    assert state_dict_digest(text.model) == tiny_embedder.model_id["digest"]


def test_image_tower_refused_when_the_file_changed(tmp_path):
    from semdb.clip.embedder import Embedder
    from semdb.errors import ModelError
    from semdb.testing import write_tiny_model

    folder = write_tiny_model(tmp_path / "m", seed=0)
    text = Embedder(model="local-dir:" + folder, text_only=True)
    write_tiny_model(folder, seed=1)  # other weights under the loaded model
    os.utime(Path(folder) / "open_clip_pytorch_model.bin", ns=(1, 1))
    with pytest.raises(ModelError, match="changed since"):
        text.encode_images(np.zeros(0))


def test_a_text_query_does_not_load_the_image_tower(tiny_store, monkeypatch):
    monkeypatch.setenv("SEMDB_ONNX", "0")
    with semdb.open(tiny_store, readonly=True) as db:
        hits = db.search("a cat", k=3)
        assert len(hits) == 3
        emb = db.embedder
        assert not emb.image_tower_loaded
        assert all(p.is_meta for p in emb.model.visual.parameters())
        # an image query in the same session still works: the tower loads then
        image_hits = db.search(image=hits[0].path, k=1)
        assert image_hits[0].path == hits[0].path and emb.image_tower_loaded


@pytest.mark.parametrize("half", [False, True])
def test_safetensors_and_half_precision_checkpoints(tmp_path, tiny_model_dir, tiny_embedder, half):
    """.safetensors files are memory-mapped too; fp16 weights load into the fp32 model as
    open_clip loads them (same digest, same embeddings)."""
    import shutil

    import open_clip
    import torch
    from safetensors.torch import save_file

    from semdb.clip.embedder import Embedder, state_dict_digest

    state = torch.load(Path(tiny_model_dir) / "open_clip_pytorch_model.bin", weights_only=True)
    folder = tmp_path / "st"
    folder.mkdir()
    shutil.copy(Path(tiny_model_dir) / "open_clip_config.json", folder)
    save_file(
        {k: (v.half() if half and v.is_floating_point() else v).contiguous() for k, v in state.items()},
        folder / "open_clip_model.safetensors",
    )
    model = "local-dir:" + str(folder)
    emb = Embedder(model=model, text_only=True)
    ref, _, _ = open_clip.create_model_and_transforms(model)
    ref.eval()
    assert emb.model_id["digest"] == state_dict_digest(ref)
    assert (emb.model_id["digest"] == tiny_embedder.model_id["digest"]) == (not half)
    tokens = open_clip.get_tokenizer(model)(TEXTS)
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(ref.encode_text(tokens), dim=-1).numpy()
    np.testing.assert_allclose(emb.encode_texts(TEXTS), expected, atol=1e-5)


def test_open_clip_loader_is_the_fallback(tiny_model, tiny_embedder, monkeypatch):
    """An architecture that cannot be built on the meta device loads with open_clip's own
    loader (random init, then the weights): the same model either way."""
    from semdb.clip import embedder as embed

    def cannot(cfg):
        raise NotImplementedError("not on meta")

    monkeypatch.setattr(embed, "_build_on_meta", cannot)
    legacy = embed.Embedder(model=tiny_model, text_only=True)
    assert legacy.model_id == tiny_embedder.model_id and legacy.image_tower_loaded
    np.testing.assert_allclose(legacy.encode_texts(TEXTS), tiny_embedder.encode_texts(TEXTS), atol=1e-5)


# ----------------------------------------------------------------------------- digest cache


def test_digest_cache_is_used_and_invalidated(tmp_path, monkeypatch, cache):
    from semdb.clip import embedder as embed
    from semdb.clip.embedder import Embedder
    from semdb.testing import write_tiny_model

    folder = write_tiny_model(tmp_path / "m", seed=0)
    model = "local-dir:" + folder
    first = Embedder(model=model, text_only=True)  # a miss: hashed and recorded
    assert json.loads((cache / "models.json").read_text())["digests"]
    assert modelcache.digest_of(model, None) == first.model_id["digest"]

    hashed = []
    real = embed._digest_of_state
    monkeypatch.setattr(embed, "_digest_of_state", lambda m, s: hashed.append(1) or real(m, s))
    again = Embedder(model=model, text_only=True)
    assert again.model_id == first.model_id and hashed == []  # from the cache, not re-hashed

    write_tiny_model(folder, seed=1)  # the file changes (new content, new mtime)
    assert modelcache.digest_of(model, None) is None
    changed = Embedder(model=model, text_only=True)
    assert hashed == [1]
    assert changed.model_id["digest"] != first.model_id["digest"]
    assert changed.model_id == Embedder(model=model).model_id  # what a full load says
    assert modelcache.digest_of(model, None) == changed.model_id["digest"]


def test_digest_cache_survives_a_broken_cache_file(tiny_model, tiny_embedder, cache):
    from semdb.clip.embedder import Embedder

    cache.mkdir(parents=True, exist_ok=True)
    (cache / "models.json").write_text("{not json")
    assert Embedder(model=tiny_model, text_only=True).model_id == tiny_embedder.model_id


def test_config_change_misses_the_digest_cache(tmp_path):
    from semdb.testing import write_tiny_model

    folder = Path(write_tiny_model(tmp_path / "m", seed=0))
    weights = folder / "open_clip_pytorch_model.bin"
    modelcache.store_digest(weights, "cfg-a", "0123456789abcdef")
    assert modelcache.cached_digest(weights, "cfg-a") == "0123456789abcdef"
    assert modelcache.cached_digest(weights, "cfg-b") is None


def test_hub_models_resolve_through_the_source_cache(tmp_path):
    """A model named by tag resolves to its weights file without open_clip, while unchanged."""
    weights = tmp_path / "open_clip_model.safetensors"
    weights.write_bytes(b"weights v1")
    assert modelcache.digest_of("ViT-B-32", "some_tag") is None
    modelcache.store_source("ViT-B-32", "some_tag", weights, "cfg")
    modelcache.store_digest(weights, "cfg", "00112233aabbccdd")
    assert modelcache.digest_of("ViT-B-32", "some_tag") == "00112233aabbccdd"
    assert modelcache.digest_of("ViT-B-32", "other_tag") is None
    weights.write_bytes(b"weights v2, longer")
    assert modelcache.digest_of("ViT-B-32", "some_tag") is None


# ---------------------------------------------------------------------------- lazy imports


def test_import_semdb_does_not_import_torch():
    out = run_python(
        "import sys, semdb, semdb.cli, semdb.api; "
        "print(sorted(m for m in ('torch', 'open_clip', 'onnxruntime', 'faiss') if m in sys.modules))"
    )
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- ONNX text tower


def test_tokenizer_matches_open_clip():
    import open_clip

    from semdb.clip.tokenizer import SimpleTokenizer

    theirs, ours = open_clip.get_tokenizer("ViT-B-32"), SimpleTokenizer()
    texts = TEXTS + [
        "",
        "  spaces   and\ttabs\n",
        "it's they're I'll",
        "日本語のテキスト",
        "x" * 500,
        "<start_of_text> hi",
        "emoji 🚲🚲 and 3.14159",
    ]
    np.testing.assert_array_equal(ours(texts), theirs(texts).numpy())
    assert ours.encoder == theirs.encoder  # the whole vocabulary and every merge rule
    assert ours.bpe_ranks == {f"{a} {b}": rank for (a, b), rank in theirs.bpe_ranks.items()}
    assert ours(texts, context_length=16).shape == (len(texts), 16)


@pytest.fixture()
def onnx_ready():
    pytest.importorskip("onnxruntime", reason="the ONNX text path needs onnxruntime (pip install 'semdb[onnx]')")
    pytest.importorskip("onnx", reason="exporting the text tower needs onnx (pip install 'semdb[onnx]')")


def test_onnx_export_matches_torch(onnx_ready, tiny_model, tiny_embedder):
    from semdb.clip.embedder import Embedder
    from semdb.clip.onnx import text as onnxtext

    emb = Embedder(model=tiny_model, text_only=True)  # records the digest for this cache
    folder = onnxtext.export(emb)
    assert folder is not None and (folder / "model.onnx").is_file()
    enc = onnxtext.load(tiny_model, None)
    assert enc is not None and enc.model_id == tiny_embedder.model_id
    x = enc.encode_texts(TEXTS)
    assert x.dtype == np.float32 and x.shape == (len(TEXTS), 64)
    np.testing.assert_allclose(x, tiny_embedder.encode_texts(TEXTS), atol=1e-5)
    with pytest.raises(semdb.errors.InputError):
        enc.encode_texts(["  "])
    (folder / "model.onnx.data").write_bytes(b"damaged")  # a damaged export is dropped, then rebuilt
    assert onnxtext.load(tiny_model, None) is None and not folder.exists()
    assert onnxtext.export(emb) == folder and onnxtext.load(tiny_model, None) is not None


def test_onnx_is_not_used_for_changed_weights(onnx_ready, tmp_path):
    from semdb.clip.embedder import Embedder
    from semdb.clip.onnx import text as onnxtext
    from semdb.testing import write_tiny_model

    folder = write_tiny_model(tmp_path / "m", seed=0)
    model = "local-dir:" + folder
    assert onnxtext.export(Embedder(model=model, text_only=True)) is not None
    assert onnxtext.load(model, None) is not None
    write_tiny_model(folder, seed=1)
    assert onnxtext.load(model, None) is None  # the digest cache no longer vouches for the file


def test_cold_text_query_runs_without_torch(onnx_ready, tiny_store, cache, monkeypatch):
    """torch path (SEMDB_ONNX=0), then a CLI query (torch; caches the export), then the ONNX
    path in a fresh interpreter: no torch, no open_clip, the same hits."""
    from kit import semdb_app

    with monkeypatch.context() as env:
        env.setenv("SEMDB_ONNX", "0")
        with semdb.open(tiny_store, readonly=True) as db:
            off = [[h.id, h.score] for h in db.search("a red bicycle", k=4)]
    assert not (cache / "onnx").exists()

    proc = semdb_app("query", "a red bicycle", "--store", tiny_store, "-k", "4", "--json")
    assert_same_hits([[h["id"], h["score"]] for h in json.loads(proc.stdout)], off)
    assert [p.name for p in (cache / "onnx").iterdir()]  # the export is cached

    code = (
        "import json, sys, semdb\n"
        f"with semdb.open({str(tiny_store)!r}, readonly=True) as db:\n"
        "    hits = db.search('a red bicycle', k=4)\n"
        "print(json.dumps({'hits': [[h.id, h.score] for h in hits],\n"
        "                  'torch': 'torch' in sys.modules, 'open_clip': 'open_clip' in sys.modules}))\n"
    )
    onnx = json.loads(run_python(code).stdout)
    assert not onnx["torch"] and not onnx["open_clip"]
    assert_same_hits(onnx["hits"], off)


def assert_same_hits(a, b):
    assert [i for i, _ in a] == [i for i, _ in b]
    np.testing.assert_allclose([s for _, s in a], [s for _, s in b], atol=1e-5)
