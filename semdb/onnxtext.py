"""The CLIP text tower as a cached ONNX model run by onnxruntime: text queries without torch.

With onnxruntime and onnx (dependencies of semdb): when a text query has to load
the model with torch, ``export`` writes the text tower (tokens -> unit embedding) with
``torch.onnx.export``, checks it against torch on a few texts, and caches it per weights digest
in the cache dir (``semdb.modelcache.cache_dir()/onnx/DIGEST/``). The next cold text query of
that model finds the digest in the digest cache and runs the cached model with onnxruntime and
``semdb.tokenizer`` (CLIP's tokenizer without torch): neither torch nor open_clip is imported.

Only models with open_clip's standard tokenizer (``SimpleTokenizer``, lower-case cleaning,
truncation) are exported; others keep the torch path. ``SEMDB_ONNX=0`` turns the ONNX path off
(neither used nor built).

This module imports no torch at import time (``export``, which runs where a torch Embedder is
already loaded, imports torch) and never imports open_clip.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import modelcache

FORMAT = 2  # 2: weights in text.onnx.data
MAX_ABS_DIFF = 1e-4  # an export that differs more from torch on the check texts is not kept
_CHECK_TEXTS = ["a photo of a cat", "a red bicycle leaning against a wall at night", "x"]


def enabled() -> bool:
    """Whether the ONNX path may be used or built: onnxruntime installed and SEMDB_ONNX not 0."""
    if os.environ.get("SEMDB_ONNX", "").strip().lower() in ("0", "false", "no", "off"):
        return False
    return importlib.util.find_spec("onnxruntime") is not None


def model_dir(digest: str) -> Path:
    return modelcache.cache_dir() / "onnx" / digest


class OnnxTextEncoder:
    """``encode_texts`` as ``Embedder.encode_texts`` (same cleaning, truncation and unit rows),
    from a cached export. Attributes: ``model_id``, ``dim``, ``context_length``."""

    def __init__(self, folder: Path, meta: dict, model_id: dict, threads: int | None = None):
        import onnxruntime as ort

        from .tokenizer import SimpleTokenizer

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(folder / "text.onnx"), options, providers=["CPUExecutionProvider"])
        self.context_length = int(meta["context_length"])
        self.tokenizer = SimpleTokenizer(context_length=self.context_length)
        self.dim = int(meta["dim"])
        self.model_id = model_id

    def __repr__(self) -> str:
        return f"OnnxTextEncoder({self.model_id['name']}, dim={self.dim}, digest={self.model_id['digest']})"

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        from .tokenizer import clean_texts

        cleaned = clean_texts(texts, self.context_length)  # as Embedder does
        out = [
            self.session.run(None, {"tokens": self.tokenizer(cleaned[i : i + batch_size])})[0]
            for i in range(0, len(cleaned), batch_size)
        ]
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        x = np.concatenate(out).astype(np.float32, copy=False)
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # as F.normalize
        return np.ascontiguousarray(x)


def _read_meta(folder: Path, digest: str) -> dict | None:
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = meta.get("format") == FORMAT and meta.get("digest") == digest and (folder / "text.onnx").is_file()
    return meta if ok else None


def load(name: str, pretrained: str | None, threads: int | None = None) -> OnnxTextEncoder | None:
    """The cached ONNX text tower of this model, if its weights file is unchanged since its
    digest was cached and an export exists; else None (load the model with torch)."""
    if not enabled():
        return None
    digest = modelcache.digest_of(name, pretrained)
    if digest is None:
        return None
    folder = model_dir(digest)
    meta = _read_meta(folder, digest)
    if meta is None:
        return None
    model_id = {"name": name, "pretrained": pretrained, "digest": digest, "dim": int(meta["dim"])}
    try:
        return OnnxTextEncoder(folder, meta, model_id, threads)
    except Exception:  # noqa: BLE001 - a damaged cached export: drop it (the torch path re-exports)
        shutil.rmtree(folder, ignore_errors=True)
        return None


def exportable(embedder) -> bool:
    """The model's tokenizer is open_clip's standard one, which semdb.tokenizer reproduces."""
    tok = embedder.tokenizer  # checked by name: embed.py stays the only importer of open_clip
    kind = (type(tok).__module__, type(tok).__name__)
    return (
        kind == ("open_clip.tokenizer", "SimpleTokenizer")
        and tok.reduction_fn is None
        and tok.vocab_size == 49408
        and getattr(tok.clean_fn, "__name__", "") == "_clean_lower"
    )


def export(embedder, force: bool = False) -> Path | None:
    """Export `embedder`'s text tower to the cache (once per digest); the folder, or None when
    the model cannot be exported or the export does not match torch (nothing is kept then)."""
    if (
        not enabled()
        or embedder.device.type != "cpu"
        or importlib.util.find_spec("onnx") is None
        or not exportable(embedder)
    ):
        return None
    digest = embedder.model_id["digest"]
    folder = model_dir(digest)
    if not force and _read_meta(folder, digest) is not None:
        return folder
    import torch

    class TextTower(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, tokens):
            return self.model.encode_text(tokens)

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{digest}-"))
    try:
        tokens = embedder.tokenizer(_CHECK_TEXTS)
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                TextTower(embedder.model).eval(),
                (tokens,),
                str(tmp / "export.onnx"),
                input_names=["tokens"],
                output_names=["embedding"],
                dynamic_axes={"tokens": {0: "batch"}, "embedding": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
        # weights in a separate file: onnxruntime maps it instead of parsing it out of the
        # protobuf (measured: session start 0.35-0.5 s instead of 0.85-1.0 s for ViT-B-32)
        import onnx

        graph = onnx.load(str(tmp / "export.onnx"))
        onnx.save_model(
            graph,
            str(tmp / "text.onnx"),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location="text.onnx.data",
            size_threshold=1024,
        )
        del graph
        (tmp / "export.onnx").unlink()
        meta = {
            "format": FORMAT,
            "digest": digest,
            "dim": embedder.dim,
            "context_length": embedder.context_length,
            "tokenizer": "open_clip.SimpleTokenizer",
            "torch": torch.__version__,
        }
        (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        check = OnnxTextEncoder(tmp, meta, dict(embedder.model_id))
        diff = float(np.abs(check.encode_texts(_CHECK_TEXTS) - embedder.encode_texts(_CHECK_TEXTS)).max())
        del check
        if not diff <= MAX_ABS_DIFF:
            return None
        meta["max_abs_diff"] = diff
        (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
        return folder
    except Exception:  # noqa: BLE001 - an optimisation: any failure leaves the torch path
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
