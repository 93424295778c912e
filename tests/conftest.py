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
