"""The ONNX image tower: pixels -> unit embedding, with open_clip's eval preprocessing done in
Pillow and numpy (no torch, no torchvision).

``Preprocess`` reproduces open_clip's ``image_transform(is_train=False)`` for the configs CLIP
models ship with: a square input, resize mode "shortest" (shorter side to the input size, then
the centre crop) or "squash", bicubic or bilinear resampling, then RGB, /255 and the config's
mean and std. Other configs ("longest" with padding, non-square inputs) keep the torch path.
The export checks it against the model's own open_clip transform on the check images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ...errors import InputError
from . import export as tower
from .text import unit_batches

TOWER, TOWER_INT8 = "image", "image-int8"
# images per onnxruntime run: the fastest of 8, 16, 32 and 64 (bench/ingest_towers.py, docs/BENCHMARKS.md)
BATCH = 16
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


@dataclass(frozen=True)
class Preprocess:
    """PIL image -> float32 (3, size, size), as open_clip's eval transform for this config."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"

    @classmethod
    def of(cls, cfg: dict) -> Preprocess | None:
        """From a model's open_clip preprocess config; None for a config not reproduced here."""
        size = cfg.get("size", 224)
        if isinstance(size, (list, tuple)):
            if len(size) != 2 or size[0] != size[1]:
                return None
            size = size[0]
        interpolation = cfg.get("interpolation") or "bicubic"
        interpolation = "bicubic" if interpolation == "random" else interpolation  # as open_clip's eval
        mean, std = cfg.get("mean"), cfg.get("std")
        if (
            cfg.get("mode", "RGB") != "RGB"
            or cfg.get("resize_mode", "shortest") not in ("shortest", "squash")
            or interpolation not in _RESAMPLE
            or not isinstance(mean, (list, tuple))
            or not isinstance(std, (list, tuple))
            or len(mean) != 3
            or len(std) != 3
        ):
            return None
        return cls(
            int(size),
            tuple(map(float, mean)),
            tuple(map(float, std)),
            interpolation,
            cfg.get("resize_mode", "shortest"),
        )

    def __call__(self, img: Image.Image) -> np.ndarray:
        w, h = img.size
        s = self.size
        if self.resize_mode == "squash":
            target = (s, s)
        elif w <= h:  # torchvision's Resize(int): the shorter side to s, the longer truncated
            target = (s, int(s * h / w))
        else:
            target = (int(s * w / h), s)
        if target != img.size:
            img = img.resize(target, _RESAMPLE[self.interpolation])
        w, h = img.size
        top, left = int(round((h - s) / 2.0)), int(round((w - s) / 2.0))  # torchvision's CenterCrop
        if (w, h) != (s, s):
            img = img.crop((left, top, left + s, top + s))
        x = np.asarray(img.convert("RGB"), dtype=np.float32) / np.float32(255)
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))


class OnnxImageEncoder:
    """``encode_images`` as ``Embedder.encode_images`` (unit rows) from a cached export.
    Attributes: ``dim``, ``image_size``, ``preprocess`` (PIL image -> float32 (3, H, W))."""

    def __init__(self, folder: Path, meta: dict, threads: int | None = None):
        self.session = tower.session(folder, threads)
        self.preprocess = Preprocess(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in meta["preprocess"].items()}
        )
        self.dim = int(meta["dim"])
        self.image_size = int(meta["image_size"])
        self.int8 = meta["tower"] == TOWER_INT8

    def encode_images(self, images, batch_size: int = BATCH) -> np.ndarray:
        """Embed a list of PIL images, or a preprocessed float32 (n, 3, H, W) array."""
        if not isinstance(images, np.ndarray):
            images = [self.preprocess(im) for im in images]
            images = np.stack(images) if images else np.zeros((0, 3, self.image_size, self.image_size), np.float32)
        if images.ndim != 4 or images.shape[1] != 3:
            raise InputError(f"image batch must have shape (n, 3, H, W), got {tuple(images.shape)}")
        pixels = np.ascontiguousarray(images, dtype=np.float32)
        out = [
            self.session.run(None, {"pixels": pixels[i : i + batch_size]})[0] for i in range(0, len(pixels), batch_size)
        ]
        return unit_batches(out, self.dim)


def load(digest: str, threads: int | None = None, int8: bool = False) -> OnnxImageEncoder | None:
    """The cached image tower of this digest (its int8 version with `int8`), or None."""
    name = TOWER_INT8 if int8 else TOWER
    found = tower.cached(digest, name) if tower.enabled() else None
    if found is None:
        return None
    try:
        return OnnxImageEncoder(*found, threads)
    except Exception:  # noqa: BLE001 - a damaged cached export: drop it (it is made again)
        tower.drop(digest, name)
        return None


def check_images(images) -> list[Image.Image]:
    """The caller's real decoded images plus one synthetic picture (never an empty check)."""
    ramp = np.linspace(0, 255, 97 * 61 * 3).reshape(61, 97, 3).astype(np.uint8)
    return [*images, Image.fromarray(ramp)]


def export(embedder, images=(), force: bool = False) -> Path | None:
    """Export `embedder`'s image tower to the cache (once per digest), checked on `images`
    (decoded PIL images, e.g. the first photos of an ingest): the numpy preprocessing against
    the model's open_clip transform, and the export against torch on the same pixels. The
    folder, or None when the model cannot be exported or a check fails."""
    preprocess = Preprocess.of(getattr(embedder.model.visual, "preprocess_cfg", None) or {})
    if not tower.can_export(embedder) or preprocess is None or preprocess.size != embedder.image_size:
        return None
    digest = embedder.model_id["digest"]
    found = tower.cached(digest, TOWER)
    if found is not None and not force:
        return found[0]
    import torch  # noqa: PLC0415 - exports run where a torch model is already loaded

    class ImageTower(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, pixels):
            return self.model.encode_image(pixels)

    images = check_images(images)
    pixels = np.stack([preprocess(im) for im in images])
    theirs = torch.stack([embedder.preprocess(im) for im in images]).numpy()
    if not np.abs(pixels - theirs).max() <= 1e-5:
        return None
    embedder.load_image_tower()
    expected = embedder.encode_images(torch.from_numpy(pixels))

    def check(folder: Path, meta: dict) -> float:
        return float(np.abs(OnnxImageEncoder(folder, meta).encode_images(pixels) - expected).max())

    meta = {"dim": embedder.dim, "image_size": embedder.image_size, "preprocess": asdict(preprocess)}
    example = torch.from_numpy(pixels[:2])
    return tower.export(digest, TOWER, ImageTower(embedder.model), example, "pixels", meta, check)


def quantize(digest: str, images=()) -> Path | None:
    """The int8 image tower of `digest` (made from its fp32 export once, then cached); its
    meta.json records its agreement with fp32 on `images`."""
    found = tower.cached(digest, TOWER_INT8)
    if found is not None:
        return found[0]
    fp32 = load(digest)
    if fp32 is None:
        return None
    images = check_images(images)
    expected = fp32.encode_images(images)

    def check(folder: Path, meta: dict) -> dict:
        got = OnnxImageEncoder(folder, meta).encode_images(images)
        cosines = (got * expected).sum(1)
        return {"min_cosine_to_fp32": float(cosines.min()), "max_abs_diff_to_fp32": float(np.abs(got - expected).max())}

    return tower.quantize(digest, TOWER, TOWER_INT8, check)
