"""semdb.clip.embedder with a tiny random-init open_clip model loaded through open_clip's real loader."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from semdb.clip import embedder as embed
from semdb.clip.embedder import DEFAULT_MODEL, DEFAULT_PRETRAINED, Embedder, resolve_model
from semdb.errors import InputError, ModelError
from semdb.testing import write_tiny_model

skimage_data = pytest.importorskip("skimage.data")


def photos():
    return [Image.fromarray(skimage_data.astronaut()), Image.fromarray(skimage_data.chelsea())]


def assert_unit_rows(x, n, d=64):
    assert isinstance(x, np.ndarray) and x.dtype == np.float32 and x.shape == (n, d)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def assert_one_line_model_error(err, *needles):
    msg = str(err.value)
    assert "\n" not in msg and "Traceback" not in msg
    for needle in needles:
        assert needle in msg, msg


# ------------------------------------------------------------------------------- tiny model


def test_tiny_model_is_a_local_model_folder(tmp_path):
    folder = write_tiny_model(tmp_path / "m", seed=3)
    assert sorted(os.listdir(folder)) == ["open_clip_config.json", "open_clip_pytorch_model.bin"]


def test_write_tiny_model_leaves_torch_rng_alone(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    write_tiny_model(tmp_path / "m")
    assert torch.equal(torch.rand(3), expected)


def test_embedder_attributes(tiny_embedder, tiny_model):
    e = tiny_embedder
    assert e.dim == 64 and e.image_size == 32
    assert e.model_id["name"] == tiny_model and e.model_id["pretrained"] is None
    assert e.model_id["dim"] == 64
    digest = e.model_id["digest"]
    assert len(digest) == 16 and int(digest, 16) >= 0
    assert not e.model.training
    tensor = e.preprocess(photos()[0])
    assert tuple(tensor.shape) == (3, 32, 32)


def test_encode_images_list_and_tensor_agree(tiny_embedder):
    imgs = photos() + [Image.new("L", (5, 7), 128)]
    from_list = tiny_embedder.encode_images(imgs)
    assert_unit_rows(from_list, 3)
    batch = torch.stack([tiny_embedder.preprocess(im) for im in imgs])
    np.testing.assert_allclose(tiny_embedder.encode_images(batch), from_list, atol=1e-5)
    # batching inside does not change results
    np.testing.assert_allclose(tiny_embedder.encode_images(imgs, batch_size=1), from_list, atol=1e-5)
    assert tiny_embedder.encode_images([]).shape == (0, 64)
    assert not np.allclose(from_list[0], from_list[1])


def test_encode_images_rejects_bad_tensor(tiny_embedder):
    with pytest.raises(InputError, match="shape"):
        tiny_embedder.encode_images(torch.zeros(2, 32, 32))


def test_encode_texts(tiny_embedder):
    x = tiny_embedder.encode_texts(["a photo of a cat", "an astronaut", "a photo of a cat"])
    assert_unit_rows(x, 3)
    np.testing.assert_allclose(x[0], x[2], atol=1e-6)
    assert not np.allclose(x[0], x[1])
    assert_unit_rows(tiny_embedder.encode_texts("just one string"), 1)


@pytest.mark.parametrize("bad", ["", "   ", "\n\t"])
def test_empty_text_is_input_error(tiny_embedder, bad):
    with pytest.raises(InputError, match="empty"):
        tiny_embedder.encode_texts([bad])
    with pytest.raises(InputError):
        tiny_embedder.encode_texts(["fine", bad])


def test_very_long_text_is_truncated_not_refused(tiny_embedder):
    long_text = ("the quick brown fox jumps over the lazy dog " * 250)[:10_000]
    x = tiny_embedder.encode_texts([long_text, "x" * 10_000, "word " * 100_000])
    assert_unit_rows(x, 3)
    # only the first context_length tokens count
    prefix = " ".join(long_text.split()[:200])
    np.testing.assert_allclose(tiny_embedder.encode_texts([prefix])[0], x[0], atol=1e-5)


def test_two_loads_are_identical(tiny_model, tiny_embedder):
    again = Embedder(model=tiny_model)
    assert again.model_id == tiny_embedder.model_id
    imgs = photos()
    np.testing.assert_array_equal(again.encode_images(imgs), tiny_embedder.encode_images(imgs))
    np.testing.assert_array_equal(again.encode_texts(["cat"]), tiny_embedder.encode_texts(["cat"]))


def test_other_weights_other_digest(tmp_path, tiny_embedder):
    other = Embedder(model="local-dir:" + write_tiny_model(tmp_path / "seed1", seed=1))
    assert other.model_id["digest"] != tiny_embedder.model_id["digest"]
    assert other.dim == tiny_embedder.dim
    same_seed = Embedder(model="local-dir:" + write_tiny_model(tmp_path / "seed0", seed=0))
    assert same_seed.model_id["digest"] == tiny_embedder.model_id["digest"]


def test_threads(tiny_model):
    before = torch.get_num_threads()
    try:
        Embedder(model=tiny_model, threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------- resolve_model


def test_resolve_model_defaults_and_env(monkeypatch):
    monkeypatch.delenv("SEMDB_MODEL", raising=False)
    monkeypatch.delenv("SEMDB_PRETRAINED", raising=False)
    assert resolve_model() == (DEFAULT_MODEL, DEFAULT_PRETRAINED)
    assert resolve_model("ViT-B-32", "openai") == ("ViT-B-32", "openai")
    model, tag = resolve_model("ViT-L-14")
    assert model == "ViT-L-14" and tag  # a tag that belongs to ViT-L-14
    assert resolve_model("local-dir:/x", "ignored") == ("local-dir:/x", None)
    assert resolve_model("hf-hub:org/repo") == ("hf-hub:org/repo", None)

    monkeypatch.setenv("SEMDB_MODEL", "ViT-B-16")
    monkeypatch.setenv("SEMDB_PRETRAINED", "laion2b_s34b_b88k")
    assert resolve_model() == ("ViT-B-16", "laion2b_s34b_b88k")
    assert resolve_model(pretrained="openai") == ("ViT-B-16", "openai")
    # an explicit model does not inherit the env tag meant for the env model
    assert resolve_model("ViT-B-32") == ("ViT-B-32", DEFAULT_PRETRAINED)
    monkeypatch.setenv("SEMDB_MODEL", "local-dir:/models/tiny")
    assert resolve_model() == ("local-dir:/models/tiny", None)


def test_env_model_is_used(monkeypatch, tiny_model, tiny_embedder):
    monkeypatch.setenv("SEMDB_MODEL", tiny_model)
    assert Embedder().model_id == tiny_embedder.model_id


# ---------------------------------------------------------------------------------- failures


def test_missing_local_dir(tmp_path):
    with pytest.raises(ModelError) as err:
        Embedder(model="local-dir:" + str(tmp_path / "nope"))
    assert_one_line_model_error(err, "nope", "does not exist", "local-dir:/path/to/folder")


def test_local_dir_without_config_or_weights(tmp_path, tiny_model_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError) as err:
        Embedder(model=f"local-dir:{empty}")
    assert_one_line_model_error(err, "open_clip_config.json", "missing")

    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "open_clip_config.json").write_text(
        open(os.path.join(tiny_model_dir, "open_clip_config.json")).read()
    )
    with pytest.raises(ModelError) as err:
        Embedder(model=f"local-dir:{no_weights}")
    assert_one_line_model_error(err, "no weights file")

    bad_json = tmp_path / "bad_json"
    bad_json.mkdir()
    (bad_json / "open_clip_config.json").write_text("{not json")
    with pytest.raises(ModelError) as err:
        Embedder(model=f"local-dir:{bad_json}")
    assert_one_line_model_error(err, "not a valid open_clip config")


def test_corrupt_and_mismatched_weights(tmp_path, tiny_model_dir):
    corrupt = tmp_path / "corrupt"
    write_tiny_model(corrupt)
    (corrupt / "open_clip_pytorch_model.bin").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ModelError) as err:
        Embedder(model=f"local-dir:{corrupt}")
    assert_one_line_model_error(err, "corrupt", "local-dir:/path/to/folder")

    # weights of a 64-wide model under a config that says 32-wide
    mismatched = tmp_path / "mismatched"
    write_tiny_model(mismatched, width=32)
    (mismatched / "open_clip_pytorch_model.bin").write_bytes(
        open(os.path.join(tiny_model_dir, "open_clip_pytorch_model.bin"), "rb").read()
    )
    with pytest.raises(ModelError) as err:
        Embedder(model=f"local-dir:{mismatched}")
    assert_one_line_model_error(err, "do not match")


def test_unknown_model_and_tag():
    with pytest.raises(ModelError) as err:
        Embedder(model="ViT-Imaginary-99")
    assert_one_line_model_error(err, "unknown CLIP model", "open_clip.list_models()")
    with pytest.raises(ModelError) as err:
        Embedder(model="ViT-B-32", pretrained="no_such_tag_or_file")
    assert_one_line_model_error(err, "no_such_tag_or_file", "laion2b_s34b_b79k")


def _weights_cached() -> bool:
    from huggingface_hub import try_to_load_from_cache

    repo = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    return any(
        isinstance(try_to_load_from_cache(repo, name), str)
        for name in ("open_clip_pytorch_model.bin", "open_clip_model.safetensors")
    )


def test_default_model_offline_is_fast_clean_model_error(monkeypatch):
    if _weights_cached():
        pytest.skip("the default model's weights are cached on this machine")
    monkeypatch.delenv("SEMDB_MODEL", raising=False)
    monkeypatch.delenv("SEMDB_PRETRAINED", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never hang, whatever the network does
    with pytest.raises(ModelError) as err:
        Embedder()
    assert_one_line_model_error(err, "ViT-B-32", "laion2b_s34b_b79k", "download failed", "local-dir:", "SEMDB_MODEL")
    assert err.value.exit_code == 3


def test_default_model_without_network_fails_fast(monkeypatch):
    """The real path (HF_HUB_OFFLINE unset): the hub probe must turn 'no network' into a quick error."""
    if _weights_cached():
        pytest.skip("the default model's weights are cached on this machine")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    if embed._hub_reachable():
        pytest.skip("the Hugging Face hub is reachable: this would download ViT-B-32")
    with pytest.raises(ModelError) as err:
        Embedder(model=DEFAULT_MODEL, pretrained=DEFAULT_PRETRAINED)
    assert_one_line_model_error(err, "no network?", "local-dir:")
    assert constants.HF_HUB_OFFLINE is False  # the guard restores the hub's state


def test_hf_hub_schema_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as err:
        Embedder(model="hf-hub:semdb-test/does-not-exist")
    assert_one_line_model_error(err, "hf-hub:semdb-test/does-not-exist", "download failed")


@pytest.mark.slow
def test_builtin_architecture_with_local_weights_file(tmp_path):
    """model name + pretrained=<weights file>: the offline path for a built-in architecture."""
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-S-32-alt")  # random init, no download; a quarter of ViT-B-32's weights
    weights = tmp_path / "vit_s_32_alt_random.bin"
    torch.save(model.state_dict(), weights)
    del model
    e = Embedder(model="ViT-S-32-alt", pretrained=str(weights))
    assert e.dim == 256 and e.image_size == 224
    assert e.model_id["pretrained"] == str(weights)
    assert_unit_rows(e.encode_images(photos()), 2, 256)
    assert_unit_rows(e.encode_texts(["a cat"]), 1, 256)


def test_bad_device(tiny_model):
    with pytest.raises(InputError, match="device"):
        Embedder(model=tiny_model, device="not-a-device")
