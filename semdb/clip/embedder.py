"""The CLIP embedder: the only semdb module that imports open_clip.

``Embedder`` loads an open_clip model through open_clip's own factory
(``create_model_and_transforms`` / ``get_tokenizer``) from any of:

- a built-in model name plus a pretrained tag (``"ViT-B-32"``, ``"laion2b_s34b_b79k"``), whose
  weights open_clip fetches from the Hugging Face hub on first use and caches;
- a built-in model name plus a local weights file (``pretrained="/path/to/weights.bin"``);
- ``"local-dir:/path/to/folder"``: a folder holding ``open_clip_config.json`` and a weights file
  (``open_clip_pytorch_model.bin`` or ``*.safetensors``), the offline way to use any model;
- ``"hf-hub:org/repo"``: an open_clip model repository on the hub.

Loading never starts from random weights, and every failure is a one-line ``ModelError``.
Without network, a hub download fails within a few seconds instead of retrying for a minute.

The model is built with its parameters on torch's meta device (no random initialisation, no
memory) from open_clip's own model classes and config, then the weights file's tensors are
memory-mapped and assigned (``load_state_dict(assign=True)``) after open_clip's checkpoint
conversions, so only what is used is read. ``Embedder(text_only=True)`` assigns the text tower
only; the image tower is loaded from the same file when an image is first encoded. The weights
digest is cached per weights file (``semdb.clip.modelcache``), so a text-only load reads neither
the image tower nor the whole file to hash it. ``semdb.clip.onnx`` (torch-free) exports both
towers and runs them with onnxruntime on a CPU; ``semdb.clip.tokenizer`` is CLIP's tokenizer
without torch (it reads open_clip's vocabulary file without importing open_clip).
``semdb.testing.write_tiny_model`` writes a tiny random-init model folder for tests.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError, ModelError
from . import modelcache

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"

LOCAL_DIR = "local-dir:"
HF_HUB = "hf-hub:"

_WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pth", "*.pt")
_LOCAL_HINT = (
    "pass --model local-dir:/path/to/folder (a folder with open_clip_config.json and "
    "open_clip_pytorch_model.bin) or set SEMDB_MODEL"
)
_PROBE_TIMEOUT_S = 3.0


def resolve_model(model: str | None = None, pretrained: str | None = None):
    """Return ``(model, pretrained)`` after applying SEMDB_MODEL / SEMDB_PRETRAINED and defaults.

    An explicit argument wins over the environment, which wins over the defaults.
    SEMDB_PRETRAINED only applies when the model itself was not given explicitly (a tag belongs
    to one model). A built-in model without a tag gets DEFAULT_PRETRAINED if it is the default
    model, else open_clip's first listed tag for it. ``local-dir:`` and ``hf-hub:`` models carry
    their weights, so their pretrained is None.
    """
    explicit_model = bool(model)
    model = model or os.environ.get("SEMDB_MODEL") or DEFAULT_MODEL
    if model.startswith((LOCAL_DIR, HF_HUB)):
        return model, None
    if not pretrained and not explicit_model:
        pretrained = os.environ.get("SEMDB_PRETRAINED") or None
    if not pretrained:
        pretrained = DEFAULT_PRETRAINED if model == DEFAULT_MODEL else _first_tag(model)
    return model, pretrained


def _first_tag(model: str) -> str | None:
    import open_clip  # noqa: PLC0415 - open_clip takes seconds to import: only a model load needs it

    tags = open_clip.list_pretrained_tags_by_model(model.replace("/", "-"))
    return tags[0] if tags else None


def _one_line(text: object, limit: int = 200) -> str:
    """First line of an exception text, shortened: library errors can be pages long."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    line = lines[0] if lines else text.__class__.__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _find_weights(folder: Path) -> list[Path]:
    return sorted(p for pattern in _WEIGHT_PATTERNS for p in folder.glob(pattern))


def state_dict_digest(model: torch.nn.Module) -> str:
    """sha256 (first 16 hex chars) over the model's tensors, in key order.

    It depends on the weights only (not on the file they came from), so a store can tell
    whether a query model is the model its codes were made with.
    """
    return _digest_items(sorted(model.state_dict().items()))


def _digest_items(items) -> str:
    digest = hashlib.sha256()
    for key, tensor in items:
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# loading without random init: parameters on the meta device, the file's tensors assigned


@contextlib.contextmanager
def _params_on_meta():
    """Modules built inside get their parameters on the meta device (no memory, and their
    initialisers run on nothing); buffers stay real (non-persistent ones, like the causal
    attention mask, are not in a checkpoint). Process-wide while it lasts (as accelerate's
    init_empty_weights): no other thread should build modules meanwhile."""
    original = torch.nn.Module.register_parameter

    def register(module, name, param):
        if param is not None and param.device.type != "meta":
            param = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        original(module, name, param)

    with _META_LOCK:
        torch.nn.Module.register_parameter = register
        try:
            yield
        finally:
            torch.nn.Module.register_parameter = original


_META_LOCK = threading.Lock()


class _NeedsLegacy(Exception):
    """The meta-device build left a tensor unmade: load with open_clip's own loader."""


def _build_on_meta(model_cfg: dict) -> torch.nn.Module:
    """open_clip's model class for `model_cfg`, built as open_clip.create_model builds it
    (fp32, no pretrained tower weights: the checkpoint has them), parameters on meta."""
    from open_clip.coca_model import CoCa  # noqa: PLC0415 - open_clip takes seconds to import: only a model load needs it
    from open_clip.model import CLIP, CustomTextCLIP  # noqa: PLC0415 - open_clip takes seconds to import: only a model load needs it

    cfg = copy.deepcopy(model_cfg)
    if "timm_model_name" in cfg.get("vision_cfg", {}):
        cfg["vision_cfg"]["timm_model_pretrained"] = False
    is_hf_text = "hf_model_name" in cfg.get("text_cfg", {})
    if is_hf_text:
        cfg["text_cfg"]["hf_model_pretrained"] = False
    custom_text = cfg.pop("custom_text", False) or is_hf_text
    cls = (CoCa if "multimodal_cfg" in cfg else CustomTextCLIP) if custom_text else CLIP
    with _params_on_meta():
        return cls(**cfg, cast_dtype=None)


_ST_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _mmap_safetensors(path: str) -> dict:
    """A .safetensors file's tensors as views of a private memory map (read when touched)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    raw = torch.from_file(path, shared=False, size=os.path.getsize(path), dtype=torch.uint8)
    base, out = 8 + n, {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _ST_DTYPES[info["dtype"]]
        start, end = info["data_offsets"]
        chunk = raw[base + start : base + end]
        if (base + start) % dtype.itemsize:
            chunk = chunk.clone()  # unaligned: a copy of this tensor only
        out[name] = chunk.view(dtype).reshape(info["shape"])
    return out


def _read_state_dict(path, model: torch.nn.Module) -> dict:
    """The checkpoint's state dict, memory-mapped, after the conversions open_clip's
    load_checkpoint applies (third-party formats, old text layout, logit shapes, resized
    position embeddings)."""
    from open_clip.convert import convert_state_dict  # noqa: PLC0415 - open_clip takes seconds to import: only a model load needs it
    from open_clip.model import convert_to_custom_text_state_dict, resize_pos_embed, resize_text_pos_embed  # noqa: PLC0415 - open_clip takes seconds to import: only a model load needs it

    path = str(path)
    if path.endswith(".safetensors"):
        state = _mmap_safetensors(path)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # noqa: BLE001 - not a zip checkpoint (legacy format): read it whole
            state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        if not isinstance(state, dict) or not state:
            raise ValueError("the file holds no state dict")
        if next(iter(state)).startswith("module"):
            state = {k[7:]: v for k, v in state.items()}
    state = convert_state_dict(model, state)
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    for key in ("logit_scale", "logit_bias"):
        ref = getattr(model, key, None)
        if key in state and ref is not None and ref.ndim != state[key].ndim:
            state[key] = state[key].reshape(ref.shape)
    if "logit_bias" not in state and getattr(model, "logit_bias", None) is not None:
        state["logit_bias"] = torch.zeros_like(state["logit_scale"])
    position_id_key = "text.transformer.embeddings.position_ids"
    if position_id_key in state and not hasattr(model, position_id_key):
        del state[position_id_key]
    resize_pos_embed(state, model)
    resize_text_pos_embed(state, model)
    return state


def _check_keys(model: torch.nn.Module, state: dict) -> None:
    """What a strict load_state_dict checks: the same keys, the same shapes (names and shapes
    only: no tensor is read)."""
    target = model.state_dict(keep_vars=True)
    missing, unexpected = sorted(set(target) - set(state)), sorted(set(state) - set(target))
    if missing or unexpected:
        raise RuntimeError(
            f"Error(s) in loading state_dict: missing keys {missing[:3]}, unexpected keys {unexpected[:3]}"
        )
    for key, ref in target.items():
        if tuple(state[key].shape) != tuple(ref.shape):
            raise RuntimeError(
                f"size mismatch for {key}: the checkpoint has shape {tuple(state[key].shape)}, "
                f"the model {tuple(ref.shape)}"
            )


def _digest_of_state(model: torch.nn.Module, state: dict) -> str:
    """state_dict_digest of `model` as it would be after a full strict load of `state`."""
    target = model.state_dict(keep_vars=True)
    return _digest_items((k, state[k].to(target[k].dtype)) for k in sorted(target))


def _is_visual(key: str) -> bool:
    return key.startswith("visual.")


def _assign(model: torch.nn.Module, state: dict, keep, device: torch.device) -> None:
    """Give `model` the checkpoint's tensors for the keys `keep` accepts (None: all), cast to
    the model's dtypes and copied out of the file's memory map (a weights file rewritten in
    place under a running process would otherwise crash it)."""
    target = model.state_dict(keep_vars=True)
    part = {}
    for key, ref in target.items():
        if keep is None or keep(key):
            tensor = state[key]
            tensor = tensor.to(ref.dtype) if tensor.dtype != ref.dtype else tensor.clone()
            part[key] = tensor.to(device) if device.type != "cpu" else tensor
    model.load_state_dict(part, strict=False, assign=True)
    if device.type != "cpu":  # buffers that are not in a checkpoint (causal masks) follow
        for module in model.modules():
            for name, buf in module._buffers.items():
                if buf is not None and buf.device.type not in ("meta", device.type):
                    module._buffers[name] = buf.to(device)


# --------------------------------------------------------------------------------------------
# hub access without network: fail in a second, not after a minute of retries


def _hub_reachable() -> bool:
    """Does the Hugging Face endpoint answer an HTTP request within a few seconds?

    Without this check huggingface_hub retries an unreachable hub with backoff for ~25 s per
    file. A real HTTP request is used, not a TCP connect: sandboxes and corporate networks often
    accept any TCP connection and fail later (TLS, proxy). urllib honours the proxy variables.
    Name resolution has no timeout of its own, so the probe runs in a daemon thread.
    """
    from huggingface_hub import constants  # noqa: PLC0415 - only a hub model needs it

    result: list[bool] = []

    def probe():
        try:
            request = urllib.request.Request(constants.ENDPOINT, method="HEAD")
            urllib.request.urlopen(request, timeout=_PROBE_TIMEOUT_S).close()
            result.append(True)
        except urllib.error.HTTPError:
            result.append(True)  # any HTTP answer means the hub is there
        except (OSError, ValueError):  # URLError, timeouts, TLS errors are OSErrors
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(_PROBE_TIMEOUT_S + 1.0)
    return bool(result and result[0])


@contextlib.contextmanager
def _hub_guard(needs_hub: bool):
    """Quiet, fast-failing hub access for the duration of a model load.

    Offline mode (HF_HUB_OFFLINE set now, or the hub unreachable) makes huggingface_hub serve
    cached files only and fail at once otherwise; the env var is re-read here because
    huggingface_hub only reads it at import. open_clip and huggingface_hub also log their own
    errors and retries, which would duplicate our one-line error, so logging is muted.
    Yields True when running offline.
    """
    from huggingface_hub import constants  # noqa: PLC0415 - only a hub model needs it

    saved_offline = constants.HF_HUB_OFFLINE
    env_offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    offline = saved_offline or env_offline or (needs_hub and not _hub_reachable())
    saved_disable = logging.root.manager.disable
    constants.HF_HUB_OFFLINE = offline
    logging.disable(logging.ERROR)
    try:
        yield offline
    finally:
        constants.HF_HUB_OFFLINE = saved_offline
        logging.disable(saved_disable)


# --------------------------------------------------------------------------------------------


class Embedder:
    """An open_clip model in eval mode that turns images and texts into unit float32 vectors.

    ``model``/``pretrained`` as in ``resolve_model``. ``device``: torch device string.
    ``threads``: torch intra-op threads (process-wide torch setting; None leaves it alone).

    ``text_only``: assign the text tower's weights only; the image tower (built on the meta
    device, holding no memory) is loaded on the first ``encode_images``. Same ``model_id``
    and the same embeddings as a full load.

    Attributes: ``model_id`` ({"name", "pretrained", "digest", "dim"}), ``dim``,
    ``image_size`` (int input resolution), ``preprocess`` (PIL image -> CHW float tensor),
    ``context_length``, ``weights_path``, ``image_tower_loaded``.
    """

    def __init__(
        self,
        model: str | None = None,
        pretrained: str | None = None,
        device: str = "cpu",
        threads: int | None = None,
        text_only: bool = False,
    ):
        if threads:
            torch.set_num_threads(int(threads))
        self.name, self.pretrained = resolve_model(model, pretrained)
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError):
            raise InputError(f"unknown torch device {device!r}: use 'cpu' or 'cuda'") from None
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"device {device!r} asked for, but CUDA is not available here: use 'cpu'")
        self._label = self.name + (f" ({self.pretrained})" if self.pretrained else "")
        self._lock = threading.Lock()
        oc_name, oc_pretrained, needs_hub = self._check_source()
        self.model, self.preprocess, self.tokenizer, digest = self._load(oc_name, oc_pretrained, needs_hub, text_only)

        visual_size = self.model.visual.image_size
        self.image_size = int(max(visual_size) if isinstance(visual_size, (tuple, list)) else visual_size)
        self.context_length = int(getattr(self.tokenizer, "context_length", 77) or 77)
        self.dim = self._embedding_dim()
        self.model_id = {
            "name": self.name,
            "pretrained": self.pretrained,
            "digest": digest,
            "dim": self.dim,
        }

    def __repr__(self) -> str:
        return f"Embedder({self._label}, dim={self.dim}, digest={self.model_id['digest']})"

    # -- loading ----------------------------------------------------------------------------

    def _fail(self, reason: str, hint: str = _LOCAL_HINT) -> ModelError:
        return ModelError(f"cannot load CLIP model {self._label}: {reason}. To fix it, {hint}.")

    def _check_source(self):
        """Validate what can be validated without loading; return open_clip's arguments."""
        import open_clip  # noqa: PLC0415 - open_clip takes seconds to import: only a model load needs it

        if self.name.startswith(LOCAL_DIR):
            folder = Path(self.name[len(LOCAL_DIR) :]).expanduser()
            if not folder.is_dir():
                raise self._fail(f"folder {folder} does not exist")
            config = folder / "open_clip_config.json"
            if not config.is_file():
                raise self._fail(f"{config} is missing")
            try:
                if "model_cfg" not in json.loads(config.read_text(encoding="utf-8")):
                    raise ValueError("it has no 'model_cfg' section")
            except (ValueError, OSError) as exc:
                raise self._fail(f"{config} is not a valid open_clip config ({_one_line(exc)})") from None
            if not _find_weights(folder):
                raise self._fail(f"no weights file (*.safetensors, *.bin, *.pth) in {folder}")
            return LOCAL_DIR + str(folder), None, False

        if self.name.startswith(HF_HUB):
            return self.name, None, True

        arch = self.name.replace("/", "-")
        if arch not in open_clip.list_models():
            raise ModelError(
                f"unknown CLIP model {self.name!r}: not an open_clip model name (see "
                f"open_clip.list_models(), e.g. {DEFAULT_MODEL}); or {_LOCAL_HINT}."
            )
        if not self.pretrained:
            raise self._fail(
                "open_clip has no pretrained weights for it",
                "give a weights file with --pretrained, or " + _LOCAL_HINT,
            )
        if open_clip.is_pretrained_cfg(arch, self.pretrained):
            return arch, self.pretrained, True
        weights = os.path.expanduser(self.pretrained)
        if os.path.isfile(weights):
            # Some architectures (SigLIP...) fetch a Hugging Face tokenizer by name.
            text_cfg = (open_clip.get_model_config(arch) or {}).get("text_cfg", {})
            return arch, weights, bool(text_cfg.get("hf_tokenizer_name"))
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
        raise self._fail(
            f"{self.pretrained!r} is neither a pretrained tag of {arch} (known: {tags}) nor a weights file",
            "give a known tag or an existing file, or " + _LOCAL_HINT,
        )

    def _load(self, oc_name: str, oc_pretrained: str | None, needs_hub: bool, text_only: bool):
        import open_clip  # noqa: PLC0415 - open_clip takes seconds to import: only a model load needs it

        with _hub_guard(needs_hub) as offline:
            # 1. obtain the files (download or cache), so "no network" is told apart from
            #    "bad weights" below. open_clip caches what it fetches.
            try:
                model_cfg, pp_cfg, weights = self._files(oc_name, oc_pretrained)
            except ModelError:
                raise
            except Exception as exc:  # noqa: BLE001 - hub errors come in many types
                why = "no network?" if offline else _one_line(exc, 120)
                raise self._fail(
                    f"weights not found locally and download failed ({why})",
                    "download them elsewhere and " + _LOCAL_HINT,
                ) from None
            # 2. build the model on the meta device and assign the file's tensors to it.
            self.weights_path = str(weights)
            self._weights_key = modelcache.file_key(weights)
            config_fp = modelcache.config_fingerprint(model_cfg)
            try:
                model = _build_on_meta(model_cfg)
            except Exception:  # noqa: BLE001 - an architecture that cannot be built on meta
                model = None
            if model is None:
                return self._load_legacy(oc_name, oc_pretrained, offline, config_fp)
            try:
                state = _read_state_dict(weights, model)
                _check_keys(model, state)
                digest = modelcache.cached_digest(weights, config_fp) if text_only else None
                if digest is None:
                    digest = _digest_of_state(model, state)
                    modelcache.store_digest(weights, config_fp, digest)
                _assign(model, state, (lambda k: not _is_visual(k)) if text_only else None, self.device)
                del state
                if any(b.is_meta for b in model.buffers()):
                    raise _NeedsLegacy  # a buffer made from parameters at build time: build it for real
                modelcache.store_source(self.name, self.pretrained, weights, config_fp)
            except _NeedsLegacy:
                return self._load_legacy(oc_name, oc_pretrained, offline, config_fp)
            except MemoryError:
                hint = "use a smaller model, or " + _LOCAL_HINT
                raise self._fail("not enough memory to load it", hint) from None
            except Exception as exc:  # noqa: BLE001 - torch.load/load_state_dict raise many types
                raise self._fail(
                    f"its weights are corrupt or do not match its config ({_one_line(exc, 160)})",
                    "re-download the weights, or " + _LOCAL_HINT,
                ) from None
            self.image_tower_loaded = not text_only
            # 3. preprocessing as open_clip.create_model_and_transforms sets it up
            from open_clip.factory import set_model_preprocess_cfg  # noqa: PLC0415 - open_clip takes seconds to import: only a model load needs it
            from open_clip.transform import PreprocessCfg, image_transform_v2  # noqa: PLC0415 - open_clip takes seconds to import: only a model load needs it

            visual = getattr(model, "visual", None)
            if visual is not None and hasattr(visual, "image_size"):
                pp_cfg["size"] = visual.image_size
            set_model_preprocess_cfg(model, pp_cfg)
            preprocess = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
            try:
                tokenizer = open_clip.get_tokenizer(oc_name)
            except Exception as exc:  # noqa: BLE001 - HF tokenizers may need the hub too
                why = "no network?" if offline else _one_line(exc, 120)
                raise self._fail(f"its tokenizer cannot be loaded ({why})", _LOCAL_HINT) from None
        model.eval()
        return model, preprocess, tokenizer, digest

    def _load_legacy(self, oc_name: str, oc_pretrained: str | None, offline: bool, config_fp: str):
        """open_clip's own loader (random init, then the weights; both towers), for a model
        the meta-device build cannot make. Called inside _hub_guard."""
        import open_clip  # noqa: PLC0415 - open_clip takes seconds to import: only a model load needs it

        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                oc_name, pretrained=oc_pretrained, device=self.device, require_pretrained=True
            )
        except MemoryError:
            raise self._fail("not enough memory to load it", "use a smaller model, or " + _LOCAL_HINT) from None
        except Exception as exc:  # noqa: BLE001 - torch.load/load_state_dict raise many types
            raise self._fail(
                f"its weights are corrupt or do not match its config ({_one_line(exc, 160)})",
                "re-download the weights, or " + _LOCAL_HINT,
            ) from None
        try:
            tokenizer = open_clip.get_tokenizer(oc_name)
        except Exception as exc:  # noqa: BLE001 - HF tokenizers may need the hub too
            why = "no network?" if offline else _one_line(exc, 120)
            raise self._fail(f"its tokenizer cannot be loaded ({why})", _LOCAL_HINT) from None
        self.image_tower_loaded = True
        model.eval()
        digest = state_dict_digest(model)
        modelcache.store_digest(self.weights_path, config_fp, digest)
        modelcache.store_source(self.name, self.pretrained, self.weights_path, config_fp)
        return model, preprocess, tokenizer, digest

    def _files(self, oc_name: str, oc_pretrained: str | None):
        """(model config, preprocess config, weights file) as open_clip.create_model finds them."""
        import open_clip  # noqa: PLC0415 - open_clip takes seconds to import: only a model load needs it
        from open_clip.transform import PreprocessCfg, merge_preprocess_dict  # noqa: PLC0415 - open_clip takes seconds to import: only a model load needs it

        pp_cfg = dataclasses.asdict(PreprocessCfg())
        if oc_name.startswith(LOCAL_DIR):
            folder = Path(oc_name[len(LOCAL_DIR) :])
            config = json.loads((folder / "open_clip_config.json").read_text(encoding="utf-8"))
            weights = modelcache.pick_checkpoint(folder)
        elif oc_name.startswith(HF_HUB):
            repo = oc_name[len(HF_HUB) :]
            fetch = open_clip.pretrained.download_pretrained_from_hf
            config = json.loads(Path(fetch(repo, filename="open_clip_config.json")).read_text(encoding="utf-8"))
            weights = fetch(repo)
        else:
            config = {"model_cfg": open_clip.get_model_config(oc_name)}
            cfg = open_clip.get_pretrained_cfg(oc_name, oc_pretrained)
            if cfg:
                weights = open_clip.download_pretrained(cfg)
                pp_cfg = merge_preprocess_dict(pp_cfg, cfg)
            else:
                weights = oc_pretrained
        if "model_cfg" not in config or not config["model_cfg"]:
            raise self._fail("its open_clip config has no 'model_cfg' section")
        pp_cfg = merge_preprocess_dict(pp_cfg, config.get("preprocess_cfg", {}))
        if not weights:
            raise self._fail("no weights file found")
        if str(weights).endswith((".npz", ".npy")):
            raise self._fail(
                "big_vision .npz weights are not supported",
                "convert them to an open_clip checkpoint, or " + _LOCAL_HINT,
            )
        return config["model_cfg"], pp_cfg, Path(weights)

    def load_image_tower(self) -> None:
        """Assign the image tower's weights (a ``text_only`` Embedder does it on first use)."""
        if self.image_tower_loaded:
            return
        with self._lock:
            if self.image_tower_loaded:
                return
            if modelcache.file_key(self.weights_path) != self._weights_key:
                raise self._fail(
                    f"its weights file {self.weights_path} changed since the model was loaded", "run the command again"
                )
            try:
                state = _read_state_dict(self.weights_path, self.model)
                _assign(self.model, state, _is_visual, self.device)
            except MemoryError:
                raise self._fail("not enough memory to load its image tower", "use a smaller model") from None
            except Exception as exc:  # noqa: BLE001
                raise self._fail(
                    f"its image tower's weights do not load ({_one_line(exc, 160)})",
                    "re-download the weights, or " + _LOCAL_HINT,
                ) from None
            self.image_tower_loaded = True

    def _embedding_dim(self) -> int:
        """Output dimension: from the image tower when it says, else by encoding one word."""
        dim = getattr(self.model.visual, "output_dim", None)
        if isinstance(dim, int) and dim > 0:
            return dim
        with torch.inference_mode():
            return int(self.model.encode_text(self.tokenizer(["a photo"]).to(self.device)).shape[-1])

    # -- encoding ---------------------------------------------------------------------------

    def encode_images(self, images, batch_size: int = 64) -> np.ndarray:
        """Embed a list of PIL images, or a preprocessed (n, 3, H, W) tensor, as unit rows."""
        self.load_image_tower()
        if torch.is_tensor(images):
            if images.ndim != 4 or images.shape[1] != 3:
                raise InputError(f"image batch must have shape (n, 3, H, W), got {tuple(images.shape)}")
            batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
        else:
            images = list(images)
            batches = (
                torch.stack([self.preprocess(im) for im in images[i : i + batch_size]])
                for i in range(0, len(images), batch_size)
            )
        return self._run(self.model.encode_image, batches)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Embed texts as unit rows; texts longer than the context are truncated, not refused."""
        from .tokenizer import clean_texts  # noqa: PLC0415 - the tokenizer module reads its vocabulary: only text encoding needs it

        cleaned = clean_texts(texts, self.context_length)
        batches = (self.tokenizer(cleaned[i : i + batch_size]) for i in range(0, len(cleaned), batch_size))
        return self._run(self.model.encode_text, batches)

    def _run(self, encode, batches) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for batch in batches:
                features = encode(batch.to(self.device, non_blocking=True))
                features = torch.nn.functional.normalize(features.float(), dim=-1)
                out.append(features.cpu().numpy())
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)
