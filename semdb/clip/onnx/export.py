"""What the ONNX text and image towers share: the cache, export + check + publish, sessions.

A tower's export lives in ``cache_dir()/onnx/DIGEST/TOWER/`` (``model.onnx``, its weights in
``model.onnx.data``, ``meta.json``). It is written in a temporary folder beside it, checked
against torch there, and renamed into place only if it matches: a reader finds a whole,
checked export or none. Anything that goes wrong leaves the torch path (an optimisation only).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

from .. import modelcache

FORMAT = 3  # 3: one folder per tower (text, image, image-int8)
MAX_ABS_DIFF = 1e-4  # an export that differs more from torch on its check inputs is not kept
MODEL_FILE = "model.onnx"


def enabled() -> bool:
    """Whether the ONNX path may be used or built: SEMDB_ONNX is not 0."""
    return os.environ.get("SEMDB_ONNX", "").strip().lower() not in ("0", "false", "no", "off")


def can_export(embedder) -> bool:
    """A torch model on the CPU (CUDA keeps torch) and ONNX enabled."""
    device = getattr(embedder, "device", None)  # an OnnxModel has none: it is an export already
    return enabled() and device is not None and device.type == "cpu"


def tower_dir(digest: str, tower: str) -> Path:
    return modelcache.cache_dir() / "onnx" / digest / tower


def read_meta(folder: Path, digest: str) -> dict | None:
    """The export's meta.json if it is a complete export of this digest in this format."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = meta.get("format") == FORMAT and meta.get("digest") == digest and (folder / MODEL_FILE).is_file()
    return meta if ok else None


def cached(digest: str, tower: str) -> tuple[Path, dict] | None:
    folder = tower_dir(digest, tower)
    meta = read_meta(folder, digest)
    return None if meta is None else (folder, meta)


def drop(digest: str, tower: str) -> None:
    """Remove a damaged export (the next load with torch exports it again)."""
    shutil.rmtree(tower_dir(digest, tower), ignore_errors=True)


def session(folder: Path, threads: int | None = None):
    """An onnxruntime CPU session tuned for throughput: every graph optimisation (fused
    attention, GELU and layer norms), `threads` intra-op threads, one inter-op thread (the
    graph is a chain: parallel branches would only compete for the same cores)."""
    import onnxruntime as ort  # noqa: PLC0415 - a few hundred ms; only the ONNX path pays it

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = int(threads)
    options.log_severity_level = 3
    return ort.InferenceSession(str(folder / MODEL_FILE), options, providers=["CPUExecutionProvider"])


def export(
    digest: str,
    tower: str,
    module,
    example,
    input_name: str,
    meta: dict,
    check: Callable[[Path, dict], float],
) -> Path | None:
    """Export the torch `module` (one input `example`, batch axis dynamic) as `tower` of
    `digest`; `check(folder, meta)` returns the export's max abs difference from torch on the
    tower's check inputs. The published folder, or None (nothing is kept then)."""
    import onnx  # noqa: PLC0415 - only an export needs it
    import torch  # noqa: PLC0415 - exports run where a torch model is already loaded

    folder = tower_dir(digest, tower)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{tower}-"))
    fastpath = torch.backends.mha.get_fastpath_enabled()
    try:
        # nn.MultiheadAttention's fused fast path (taken without grad) has no ONNX export
        torch.backends.mha.set_fastpath_enabled(False)
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module.eval(),
                (example,),
                str(tmp / "export.onnx"),
                input_names=[input_name],
                output_names=["embedding"],
                dynamic_axes={input_name: {0: "batch"}, "embedding": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
        # weights in a separate file: onnxruntime maps it instead of parsing it out of the
        # protobuf, which halves a session's start (docs/notes/FIGURES.md)
        graph = onnx.load(str(tmp / "export.onnx"))
        onnx.save_model(
            graph,
            str(tmp / MODEL_FILE),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=MODEL_FILE + ".data",
            size_threshold=1024,
        )
        del graph
        (tmp / "export.onnx").unlink()
        meta = {"format": FORMAT, "digest": digest, "tower": tower, **meta, "torch": torch.__version__}
        diff = check(tmp, meta)
        if not diff <= MAX_ABS_DIFF:
            return None
        return _publish(tmp, folder, {**meta, "max_abs_diff": diff})
    except Exception:  # noqa: BLE001 - an optimisation: any failure leaves the torch path
        return None
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        shutil.rmtree(tmp, ignore_errors=True)


def quantize(digest: str, source: str, target: str, check: Callable[[Path, dict], dict]) -> Path | None:
    """The int8 version of an exported tower (onnxruntime dynamic quantisation: int8 weights
    of every MatMul, activations quantised per batch). `check(folder, meta)` measures its
    agreement with the fp32 export (recorded in meta.json, not a gate: int8 is opt-in)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: PLC0415 - only --int8 needs it

    found = cached(digest, source)
    if found is None:
        return None
    src, meta = found
    folder = tower_dir(digest, target)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{target}-"))
    try:
        muted = logging.root.manager.disable
        logging.disable(logging.WARNING)  # its advice to pre-process the model, on the root logger
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(
                str(src / MODEL_FILE),
                str(tmp / MODEL_FILE),
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul"],
            )
        logging.disable(muted)
        meta = {**meta, "tower": target, "quantized": "dynamic int8 (MatMul)"}
        meta.pop("max_abs_diff", None)
        return _publish(tmp, folder, {**meta, **check(tmp, meta)})
    except Exception:  # noqa: BLE001 - an optimisation: any failure leaves the fp32 export
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, folder: Path, meta: dict) -> Path:
    (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    if folder.exists():
        shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder
