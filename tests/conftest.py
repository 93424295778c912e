"""Shared fixtures.

``tiny_model_dir`` / ``tiny_model``: a tiny random-init open_clip model (2-layer, 64-wide ViT
and text towers, 32 px input, 64-d embeddings) written once per session, so tests exercise the
real open_clip loading path without downloading CLIP weights. Load it with
``Embedder(model=tiny_model)``. ``tiny_embedder`` is one such Embedder, shared by the session.
"""

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    from semdb.embed import write_tiny_model  # imported lazily: torch is slow to import

    return write_tiny_model(tmp_path_factory.mktemp("tiny_clip"), seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir) -> str:
    return "local-dir:" + tiny_model_dir


@pytest.fixture(scope="session")
def tiny_embedder(tiny_model):
    from semdb.embed import Embedder

    return Embedder(model=tiny_model)


def write_photos(folder, n_generated: int = 8, seed: int = 0):
    """Real sample photos shipped by scikit-image plus generated pictures, as JPEG/PNG files."""
    from pathlib import Path

    import numpy as np
    import skimage.data
    from PIL import Image, ImageDraw

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        Image.fromarray(getattr(skimage.data, name)()).save(folder / f"{name}.jpg", quality=90)
    rng = np.random.default_rng(seed)
    for i in range(n_generated):
        img = Image.new("RGB", (96, 72), tuple(int(c) for c in rng.integers(0, 255, 3)))
        draw = ImageDraw.Draw(img)
        for _ in range(4):
            x, y = rng.integers(0, 80, 2)
            draw.ellipse([int(x), int(y), int(x) + 30, int(y) + 20], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        img.save(folder / f"shapes_{i}.png")
    return folder


@pytest.fixture()
def photos(tmp_path):
    return write_photos(tmp_path / "photos")
