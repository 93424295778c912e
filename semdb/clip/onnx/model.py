"""Both ONNX towers as one model: what ingest, image and text queries and `semdb serve` use on
a CPU instead of ``semdb.clip.embedder.Embedder`` once the model's exports are cached (no torch)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from ...errors import ModelError
from . import export as tower
from . import image, text


class OnnxModel:
    """``Embedder``'s interface (``model_id``, ``dim``, ``image_size``, ``preprocess``,
    ``context_length``, ``encode_texts``, ``encode_images``, ``load_image_tower``) over the
    cached ONNX towers. The image session opens on first use, so a text query never maps the
    image tower's weights. ``int8``: the int8 image tower instead of the fp32 one."""

    def __init__(self, text_encoder: text.OnnxTextEncoder, threads: int | None = None, int8: bool = False):
        self.text = text_encoder
        self.model_id = text_encoder.model_id
        self.dim, self.context_length = text_encoder.dim, text_encoder.context_length
        self.threads, self.int8 = threads, int8
        self._image: image.OnnxImageEncoder | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        kind = "int8" if self.int8 else "fp32"
        return f"OnnxModel({self.model_id['name']}, dim={self.dim}, digest={self.model_id['digest']}, image {kind})"

    @property
    def image_encoder(self) -> image.OnnxImageEncoder:
        if self._image is None:
            with self._lock:
                if self._image is None:
                    enc = image.load(self.model_id["digest"], self.threads, self.int8)
                    if enc is None:
                        raise ModelError(f"the ONNX image tower of {self.model_id['name']} is gone from the cache")
                    self._image = enc
        return self._image

    @property
    def image_size(self) -> int:
        return self.image_encoder.image_size

    @property
    def preprocess(self):
        return self.image_encoder.preprocess

    def load_image_tower(self) -> None:
        self.image_encoder  # noqa: B018 - opens the session

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        return self.text.encode_texts(texts, batch_size)

    def encode_images(self, images, batch_size: int = image.BATCH) -> np.ndarray:
        return self.image_encoder.encode_images(images, batch_size)


def load(name: str, pretrained: str | None, threads: int | None = None, int8: bool = False) -> OnnxModel | None:
    """The model from its cached exports (both towers; the int8 image tower with `int8`) when
    its weights file is unchanged since its digest was cached; else None (load it with torch)."""
    text_encoder = text.load(name, pretrained, threads)
    if text_encoder is None:
        return None
    digest = text_encoder.model_id["digest"]
    if tower.cached(digest, image.TOWER_INT8 if int8 else image.TOWER) is None:
        return None
    return OnnxModel(text_encoder, threads, int8)


def from_embedder(embedder, images=(), threads: int | None = None, int8: bool = False) -> OnnxModel | None:
    """Export `embedder`'s towers where not cached yet (the image tower checked on `images`,
    decoded PIL images) and return the ONNX model; None when a tower cannot be exported."""
    if text.export(embedder) is None or image.export(embedder, images) is None:
        return None
    digest = embedder.model_id["digest"]
    if int8 and image.quantize(digest, images) is None:
        return None
    found = tower.cached(digest, text.TOWER)
    if found is None:
        return None
    return OnnxModel(text.OnnxTextEncoder(*found, dict(embedder.model_id), threads), threads, int8)


def with_int8(model: OnnxModel, images=()) -> OnnxModel | None:
    """The same model with the int8 image tower (quantised from the fp32 export once)."""
    if model.int8:
        return model
    if image.quantize(model.model_id["digest"], images) is None:
        return None
    return OnnxModel(model.text, model.threads, int8=True)
