"""Which model an ingest embeds images with: on a CPU, the ONNX export of the image tower
(semdb.clip.onnx), made by the first ingest of a model that has none (it pays the export once:
seconds for ViT-B-32) and used by every later ingest without torch; on CUDA, or with
SEMDB_ONNX=0, the torch model."""

from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import islice

from ..clip.onnx import export as tower
from ..clip.onnx import image
from ..clip.onnx import model as onnx_model
from ..context import StoreContext
from ..errors import ImageError, InputError
from ..images import load_image
from ..progress import Progress, report

CHECK_IMAGES = 8  # real photos of the run the export is checked on (plus a synthetic one)
EXPORT_STAGE = "exporting to ONNX"  # once per model


@dataclass(frozen=True)
class ImageModel:
    model: object  # semdb.clip.onnx.model.OnnxModel or semdb.clip.embedder.Embedder
    kind: str  # "onnx fp32", "onnx int8" or "torch"
    export_seconds: float = 0.0  # what this run spent exporting (0: the export was cached)


def image_model(
    ctx: StoreContext, paths: list[str], int8: bool, max_megapixels, progress: Progress | None = None
) -> ImageModel:
    """The model to embed `paths` with; `int8`: the int8 image tower (InputError where there
    is none: on CUDA, with SEMDB_ONNX=0, or for a model the ONNX export does not cover)."""
    emb = ctx.embedder
    start = time.perf_counter()
    if isinstance(emb, onnx_model.OnnxModel):
        if not int8:
            return ImageModel(emb, "onnx fp32")
        if tower.cached(emb.model_id["digest"], image.TOWER_INT8) is not None:
            return ImageModel(onnx_model.OnnxModel(emb.text, emb.threads, int8=True), "onnx int8")
        report(progress, EXPORT_STAGE, 0, 1)
        emb = onnx_model.with_int8(emb, _sample(paths, emb.image_size, max_megapixels)) or _no_int8()
        report(progress, EXPORT_STAGE, 1, 1)
        return ImageModel(emb, "onnx int8", _since(start))
    if not tower.can_export(emb):
        return ImageModel(_no_int8() if int8 else emb, "torch")
    report(progress, EXPORT_STAGE, 0, 1)
    exported = onnx_model.from_embedder(emb, _sample(paths, emb.image_size, max_megapixels), ctx.threads, int8)
    report(progress, EXPORT_STAGE, 1, 1)
    if exported is None:
        return ImageModel(_no_int8() if int8 else emb, "torch")
    return ImageModel(exported, "onnx int8" if int8 else "onnx fp32", _since(start))


def _sample(paths: list[str], image_size: int, max_megapixels) -> list:
    """Up to CHECK_IMAGES of the first few `paths`, decoded (the ones that decode)."""
    decoded = (_decode(p, image_size, max_megapixels) for p in paths[: 4 * CHECK_IMAGES])
    return list(islice(filter(None, decoded), CHECK_IMAGES))


def _decode(path: str, image_size: int, max_megapixels):
    try:
        return load_image(path, draft_size=image_size, max_megapixels=max_megapixels)
    except ImageError:
        return None


def _since(start: float) -> float:
    return round(time.perf_counter() - start, 3)


def _no_int8():
    raise InputError(
        "--int8 needs the ONNX image tower: a CPU device, onnxruntime and onnx installed, SEMDB_ONNX not 0, "
        "and a model whose preprocessing semdb reproduces (see docs/CLI.md: ingest on small machines)"
    )
