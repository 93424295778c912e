"""Shared fixtures.

``tiny_model_dir`` / ``tiny_model``: a tiny random-init open_clip model (2-layer, 64-wide ViT
and text towers, 32 px input, 64-d embeddings) written once per session, so tests exercise the
real open_clip loading path without downloading CLIP weights. Load it with
``Embedder(model=tiny_model)``. ``tiny_embedder`` is one such Embedder, shared by the session.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

SEMDB = str(Path(sys.executable).with_name("semdb"))  # the installed console script


def pytest_configure(config):
    """The digest cache and ONNX exports of every test's models go to a temp folder, not ~/.cache."""
    import tempfile

    os.environ.setdefault("SEMDB_CACHE_DIR", tempfile.mkdtemp(prefix="semdb-test-cache-"))


CLI_ENV = {"SEMDB_STORE": "", "HF_HUB_OFFLINE": "1", "COLUMNS": "500"}  # offline, no default store, no wrapping


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    from semdb.testing import write_tiny_model  # imported lazily: torch is slow to import

    return write_tiny_model(tmp_path_factory.mktemp("tiny_clip"), seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir) -> str:
    return "local-dir:" + tiny_model_dir


@pytest.fixture(scope="session")
def tiny_embedder(tiny_model):
    from semdb.clip.embedder import Embedder

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
            draw.ellipse(
                [int(x), int(y), int(x) + 30, int(y) + 20], fill=tuple(int(c) for c in rng.integers(0, 255, 3))
            )
        img.save(folder / f"shapes_{i}.png")
    return folder


def clip_like_embeddings(n=400, dim=64, seed=0, classes=6):
    """Rows shaped like CLIP image embeddings: around a common mean, a decaying spectrum, a few
    classes; with noisy paired texts and the labels. (dict of image_emb, text_emb, label)"""
    import numpy as np

    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(np.random.default_rng(1234).standard_normal((dim, dim)))[0]  # one geometry for all seeds
    label = rng.integers(0, classes, n)
    centers = np.random.default_rng(99).standard_normal((classes, dim - 1)) * 0.5 / np.arange(1, dim) ** 0.5
    Z = centers[label] + rng.standard_normal((n, dim - 1)) / np.arange(1, dim) ** 0.8
    X = 2.0 * basis[:, 0] + Z @ basis[:, 1:].T
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    T = X + 0.3 * rng.standard_normal((n, dim)) / np.sqrt(dim)
    return dict(image_emb=X.astype(np.float32), text_emb=T.astype(np.float32), label=label)


@pytest.fixture()
def photos(tmp_path):
    return write_photos(tmp_path / "photos")


def cli_env(**extra) -> dict:
    """The environment `semdb_cli` runs the command in, plus `extra` (for Popen)."""
    return {**os.environ, **CLI_ENV, **extra}


def semdb_cli(*args, check=True, text=True, env=None, timeout=300, input=None, prefix=()):
    """Run the installed `semdb` command as a user does; args may be str, Path or bytes.
    `check`: True fails unless it exits 0, an int fails unless it exits with that code, None
    checks nothing. `prefix`: a command to run it under (e.g. setpriv)."""
    proc = subprocess.run(
        [*prefix, SEMDB, *(a if isinstance(a, bytes) else os.fsencode(str(a)) for a in args)],
        capture_output=True,
        text=text,
        input=input,
        env=cli_env(**(env or {})),
        timeout=timeout,
    )
    want = 0 if check is True else check
    if want is not None and want is not False and proc.returncode != want:
        stderr = proc.stderr if text else proc.stderr.decode(errors="replace")
        raise AssertionError(f"semdb {args} exited {proc.returncode}, not {want}: {stderr}")
    return proc


def store_items(db, ids: bool = True) -> list:
    """Every item of an open Database with its code, in id order: what "the same store" means
    (ids are store-local: leave them out to compare stores built by different routes)."""
    codes = db.codes()
    return [
        ((it.id,) if ids else ()) + (it.path, it.size, it.mtime_ns, it.hash, it.width, it.height, bytes(codes[it.id]))
        for it in db.store.iter_items()
    ]


# The run's exit status, kept for pytest_unconfigure (below).
_EXIT_STATUS = None


def pytest_sessionfinish(session, exitstatus):
    global _EXIT_STATUS
    _EXIT_STATUS = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Leave with the run's own exit status once pytest has reported everything, skipping the
    interpreter's teardown: threads that Ray (its gRPC client) and other native libraries leave
    behind after the tests that use them can crash there (seen once in a full run here: every
    test passed, then exit 139), which would turn a green run red for no failure of ours."""
    if _EXIT_STATUS is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS)
