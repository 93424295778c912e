"""Helpers the tests share (fixtures are in conftest.py): sample photos, CLIP-like embeddings,
the installed `semdb` command run as a user runs it (semdb_cli) or in this process (semdb_app),
a store's items compared."""

import os
import shutil
import struct
import subprocess
import sys
import traceback
import zlib
from pathlib import Path

SEMDB = str(Path(sys.executable).with_name("semdb"))  # the installed console script
CLI_ENV = {"SEMDB_STORE": "", "HF_HUB_OFFLINE": "1", "COLUMNS": "500"}  # offline, no default store, no wrapping


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


def sigint_not_ignored() -> None:
    """A Popen preexec_fn for a child the test interrupts with SIGINT: Python raises
    KeyboardInterrupt only if its parent did not ignore SIGINT, and a test run started as a
    background job of a non-interactive shell (`pytest &`, as a CI script may) ignores it."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


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


def semdb_app(*args, check=True, env=None, input=None, text=True):
    """`semdb_cli` in this process, through typer's CliRunner: the same arguments, environment
    and result (returncode, stdout, stderr as text), without a Python start and its imports per
    command (0.5 s to seconds each). For help, usage errors and commands whose outcome is their
    output and the store; exit codes of a real process, signals, locks between processes, a
    server and a path's own bytes on stdout stay with semdb_cli. An uncaught exception is printed
    on stderr as a traceback, as the command prints it. `text=False`: stdout and stderr as bytes."""
    from semdb.cli import app

    if "SEMDB_FAULT_POINT" in (env or {}):
        raise ValueError("a fault point kills or holds its process: run the command with semdb_cli")
    threads = _torch_threads()
    try:
        result = _runner().invoke(
            app,
            [os.fsdecode(a) if isinstance(a, bytes) else str(a) for a in args],
            input=input,
            env={**CLI_ENV, **(env or {})},
            prog_name="semdb",
        )
    finally:
        _torch_threads(threads)  # `--threads N` sets torch's process-wide count: give it back
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(*result.exc_info))
    out = (result.stdout, stderr) if text else (result.stdout_bytes, stderr.encode(errors="backslashreplace"))
    proc = subprocess.CompletedProcess(["semdb", *args], result.exit_code, *out)
    want = 0 if check is True else check
    if want is not None and want is not False and proc.returncode != want:
        raise AssertionError(f"semdb {args} exited {proc.returncode}, not {want}: {stderr}")
    return proc


def _runner():
    """typer's CliRunner, wrapping help at the terminal's width ($COLUMNS) as the command does,
    not at the 80 columns it forces."""
    import contextlib

    from typer.testing import CliRunner

    formatting = sys.modules[CliRunner.isolation.__module__].formatting  # typer's copy of click's, or click's

    class Runner(CliRunner):
        @contextlib.contextmanager
        def isolation(self, *args, **kwargs):
            with super().isolation(*args, **kwargs) as streams:
                formatting.FORCED_WIDTH = None  # restored by CliRunner on the way out
                yield streams

    return Runner()


def _torch_threads(n: int | None = None) -> int | None:
    """torch's intra-op thread count (None: torch is not loaded); set it to `n` if given."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    if n is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def store_items(db, ids: bool = True) -> list:
    """Every item of an open Database with its code, in id order: what "the same store" means
    (ids are store-local: leave them out to compare stores built by different routes)."""
    codes = db.codes()
    return [
        ((it.id,) if ids else ()) + (it.path, it.size, it.mtime_ns, it.hash, it.width, it.height, bytes(codes[it.id]))
        for it in db.store.iter_items()
    ]


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
TIMEOUT_MS = 60_000


def chromium() -> str | None:
    """The Chromium to drive: $SEMDB_CHROMIUM, else the first on PATH."""
    for candidate in (os.environ.get("SEMDB_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        found = candidate and shutil.which(candidate)
        if found:
            return found
    return None


def png_bytes(width: int, height: int) -> bytes:
    """A valid 1-bit grayscale PNG of the given size, all black: tiny on disk however big."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
