"""Helpers for tests and benchmarks (never imported by semdb itself): a tiny random-init
open_clip model written as a ``local-dir:`` folder, so the real loading path runs without CLIP
weights or network."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch


def tiny_model_config(
    image_size: int = 32, patch_size: int = 8, width: int = 64, layers: int = 2, embed_dim: int = 64
) -> dict:
    """open_clip_config.json of a tiny ViT CLIP (standard tokenizer, OpenAI mean/std)."""
    return {
        "model_cfg": {
            "embed_dim": embed_dim,
            "vision_cfg": {
                "image_size": image_size,
                "patch_size": patch_size,
                "width": width,
                "layers": layers,
                "head_width": 32,
            },
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": width, "heads": 2, "layers": layers},
        },
        "preprocess_cfg": {
            "mean": list(open_clip.OPENAI_DATASET_MEAN),
            "std": list(open_clip.OPENAI_DATASET_STD),
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
    }


def write_tiny_model(folder, seed: int = 0, **config) -> str:
    """Write a tiny random-init open_clip model to ``folder`` and return the folder as str.

    For tests and benchmarks (no real CLIP weights are needed): load it with
    ``Embedder(model="local-dir:" + folder)``. Same seed, same weights (and digest). The
    caller's torch RNG state is left untouched.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = tiny_model_config(**config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.CLIP(**cfg["model_cfg"])
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    (folder / "open_clip_config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    return str(folder)
