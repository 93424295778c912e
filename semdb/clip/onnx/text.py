"""The ONNX text tower: tokens -> unit embedding, with ``semdb.clip.tokenizer`` (no torch).

Only models with open_clip's standard tokenizer (``SimpleTokenizer``, lower-case cleaning,
truncation) are exported; others keep the torch path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...rows import unit_rows
from .. import modelcache
from ..tokenizer import SimpleTokenizer, clean_texts
from . import export as tower

TOWER = "text"
_CHECK_TEXTS = ["a photo of a cat", "a red bicycle leaning against a wall at night", "x"]


class OnnxTextEncoder:
    """``encode_texts`` as ``Embedder.encode_texts`` (same cleaning, truncation and unit rows),
    from a cached export. Attributes: ``model_id``, ``dim``, ``context_length``."""

    def __init__(self, folder: Path, meta: dict, model_id: dict, threads: int | None = None):
        self.session = tower.session(folder, threads)
        self.context_length = int(meta["context_length"])
        self.tokenizer = SimpleTokenizer(context_length=self.context_length)
        self.dim = int(meta["dim"])
        self.model_id = model_id

    def __repr__(self) -> str:
        return f"OnnxTextEncoder({self.model_id['name']}, dim={self.dim}, digest={self.model_id['digest']})"

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        cleaned = clean_texts(texts, self.context_length)  # as Embedder does
        out = [
            self.session.run(None, {"tokens": self.tokenizer(cleaned[i : i + batch_size])})[0]
            for i in range(0, len(cleaned), batch_size)
        ]
        return unit_batches(out, self.dim)


def unit_batches(batches: list[np.ndarray], dim: int) -> np.ndarray:
    """The batches' rows, concatenated and normalised as torch's F.normalize does."""
    if not batches:
        return np.zeros((0, dim), dtype=np.float32)
    return np.ascontiguousarray(unit_rows(np.concatenate(batches)))


def model_id_of(name: str, pretrained: str | None, digest: str, meta: dict) -> dict:
    return {"name": name, "pretrained": pretrained, "digest": digest, "dim": int(meta["dim"])}


def load(name: str, pretrained: str | None, threads: int | None = None) -> OnnxTextEncoder | None:
    """The cached ONNX text tower of this model, if its weights file is unchanged since its
    digest was cached and an export exists; else None (load the model with torch)."""
    if not tower.enabled():
        return None
    digest = modelcache.digest_of(name, pretrained)
    found = None if digest is None else tower.cached(digest, TOWER)
    if found is None:
        return None
    try:
        return OnnxTextEncoder(*found, model_id_of(name, pretrained, digest, found[1]), threads)
    except Exception:  # noqa: BLE001 - a damaged cached export: drop it (the torch path re-exports)
        tower.drop(digest, TOWER)
        return None


def exportable(embedder) -> bool:
    """The model's tokenizer is open_clip's standard one, which semdb.clip.tokenizer reproduces."""
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
    if not tower.can_export(embedder) or not exportable(embedder):
        return None
    digest = embedder.model_id["digest"]
    found = tower.cached(digest, TOWER)
    if found is not None and not force:
        return found[0]
    import torch  # noqa: PLC0415 - exports run where a torch model is already loaded

    class TextTower(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, tokens):
            return self.model.encode_text(tokens)

    def check(folder: Path, meta: dict) -> float:
        onnx_enc = OnnxTextEncoder(folder, meta, dict(embedder.model_id))
        return float(np.abs(onnx_enc.encode_texts(_CHECK_TEXTS) - embedder.encode_texts(_CHECK_TEXTS)).max())

    meta = {"dim": embedder.dim, "context_length": embedder.context_length, "tokenizer": "open_clip.SimpleTokenizer"}
    tokens = embedder.tokenizer(_CHECK_TEXTS)
    return tower.export(digest, TOWER, TextTower(embedder.model), tokens, "tokens", meta, check)
