"""Shared fixtures.

``tiny_model_dir`` / ``tiny_model``: a tiny random-init open_clip model (2-layer, 64-wide ViT
and text towers, 32 px input, 64-d embeddings) written once per session, so tests exercise the
real open_clip loading path without downloading CLIP weights. Load it with
``Embedder(model=tiny_model)``. ``tiny_embedder`` is one such Embedder, shared by the session.
"""

import os
import sys

import pytest
from kit import CHROMIUM_ARGS, TIMEOUT_MS, chromium, write_photos


def pytest_configure(config):
    """The digest cache and ONNX exports of every test's models go to a temp folder, not ~/.cache."""
    import tempfile

    os.environ.setdefault("SEMDB_CACHE_DIR", tempfile.mkdtemp(prefix="semdb-test-cache-"))
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # under pytest-xdist (-n): a cache of each worker's own
    if worker:
        os.environ["SEMDB_CACHE_DIR"] = os.path.join(os.environ["SEMDB_CACHE_DIR"], worker)
    # Property tests check what comes out, not how fast: on a busy shared machine Hypothesis's
    # time limits (a 200 ms deadline per example, "input generation is slow") fail correct code.
    from hypothesis import HealthCheck, settings

    settings.register_profile("semdb", deadline=None, suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile("semdb")


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


@pytest.fixture()
def photos(tmp_path):
    return write_photos(tmp_path / "photos")


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


# --- a headless Chromium (Debian's chromium driven by playwright) for the page's tests


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    exe = chromium()
    if exe is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set SEMDB_CHROMIUM=/path/to/chrome)")
    with sync_playwright() as pw:
        try:
            # a fresh temporary profile: launch() makes one per browser
            chrome = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS)
        except Error as e:
            pytest.skip(f"Chromium at {exe} does not start: {str(e).splitlines()[0]}")
        yield chrome
        chrome.close()
