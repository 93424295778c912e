"""`semdb serve`: the page and the JSON API over one store, or search over shards; `semdb watch`."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import typer
from rich.text import Text

from ..cluster import Cluster
from ..errors import InputError
from ..serve.server import is_loopback, run
from ..watch import Watcher, WatchOptions
from .base import (
    ModelOption,
    ModelOverrideOption,
    PretrainedOption,
    StoreOption,
    ThreadsOption,
    app,
    err,
    examples,
    say,
    shard_list,
    user_errors,
)

RESCAN = typer.Option(
    300.0, "--rescan", min=0, help="Seconds between full rescans, for changes no event reports (0: at start only)."
)
POLL = typer.Option(False, "--poll", help="Poll the folders instead of file events (network mounts).")
SETTLE = typer.Option(
    2.0, "--settle", min=0, help="Seconds a new file's size must hold still before it is read (copies in progress)."
)


@app.command(epilog=examples("semdb serve", "semdb serve --store photos.semdb --port 0"))
def serve(
    store: StoreOption = None,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (not loopback: asks for the key)."),
    port: int = typer.Option(
        8765, "--port", help="TCP port (0: any free port; the one chosen is printed and written to STORE/serve.json)."
    ),
    require_key: bool = typer.Option(
        False, "--require-key", help="Ask for the access key on loopback too (behind a reverse proxy: docs/SERVE.md)."
    ),
    new_key: bool = typer.Option(False, "--new-key", help="Replace the access key: earlier keys and sessions end."),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="Serve HTTPS with this certificate (PEM)."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="The --tls-cert's private key (PEM)."),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="With --shards: allow a network --host (no key)."),
    model: ModelOverrideOption = None,
    pretrained: PretrainedOption = None,
    threads: ThreadsOption = None,
    access_log: bool = typer.Option(False, "--access-log", help="Log every request on stderr."),
    shards: str | None = typer.Option(
        None, "--shards", help="Stores of one model: GET /api/search over them on Ray Serve (docs/SCALE.md)."
    ),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="With --shards: the Ray cluster to run on (default: a local instance)."
    ),
    watch: list[Path] | None = typer.Option(
        None, "--watch", help="Keep the store current with this folder as photos arrive (repeat for more folders)."
    ),
    rescan: float = RESCAN,
    poll: bool = POLL,
    settle: float = SETTLE,
):
    """Search the store from a web page and a JSON API, model and index kept warm (docs/SERVE.md)."""
    with user_errors():
        if shards is not None:
            if any(v is not None for v in (store, model, pretrained, tls_cert, tls_key)) or require_key or new_key:
                raise InputError("--shards serves the stores it names, with their own model, without a key or TLS")
            if watch:
                raise InputError("--watch keeps one --store current: not with --shards")
            _serve_shards(shard_list(shards), host, port, allow_remote, ray_address, threads)
            return
        if allow_remote:  # one store's server asks a network client for the access key instead
            raise InputError("--allow-remote goes with --shards (a network --host asks for the store's access key)")
        run(
            store,
            host,
            port,
            require_key=require_key,
            new_key=new_key,
            tls_cert=str(tls_cert) if tls_cert else None,
            tls_key=str(tls_key) if tls_key else None,
            model=model,
            pretrained=pretrained,
            threads=threads,
            access_log=access_log,
            watch=watch,
            watch_options=WatchOptions(rescan=rescan, poll=poll, settle=settle),
            say=say,
        )


@app.command(
    epilog=examples("semdb watch ~/Pictures", "semdb watch /mnt/nas/photos --store photos.semdb --poll --rescan 600")
)
def watch(
    folders: list[Path] = typer.Argument(..., metavar="FOLDERS", help="Folders to keep the store current with."),
    store: StoreOption = None,
    model: ModelOption = None,
    pretrained: PretrainedOption = None,
    rescan: float = RESCAN,
    poll: bool = POLL,
    settle: float = SETTLE,
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per CLIP batch and per commit."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Image decoding threads."),
    threads: ThreadsOption = None,
):
    """Index new, changed, moved and deleted photos under FOLDERS as they happen, until stopped."""
    with user_errors():
        options = WatchOptions(rescan=rescan, poll=poll, settle=settle, batch_size=batch_size, workers=workers)
        watcher = Watcher(store, folders, options, model=model, pretrained=pretrained, threads=threads, say=say)
        stop = threading.Event()

        def stop_on_signal(*_):
            stop.set()  # seen between two commits: the batch in hand is committed, then it stops

        signal.signal(signal.SIGTERM, stop_on_signal)
        watcher.open()
        say(f"watching {', '.join(str(f) for f in watcher.folders)} (store {store or 'default'}); Ctrl-C to stop")
        try:
            watcher.run(stop)
        finally:
            watcher.close()
        say(f"stopped: {watcher.status.added} files indexed, {watcher.status.removed} items removed")


def _serve_shards(stores, host, port, allow_remote, ray_address, threads) -> None:
    """`semdb serve --shards`: Cluster.start with Serve's HTTP proxy, until Ctrl-C or SIGTERM."""
    if not is_loopback(host) and not allow_remote:
        raise InputError(f"--host {host} would expose the shards' search to the network: pass --allow-remote as well")
    with Cluster.start(stores, address=ray_address, threads=threads or 1, http_host=host, http_port=port) as cluster:
        items = sum(s.items for s in cluster.specs)
        err.print(
            Text(
                f"semdb serve: http://{host}:{port}/api/search?q=...  ({len(stores)} shards, {items} items, "
                f"Ray Serve); Ctrl-C to stop"
            ),
            highlight=False,
            soft_wrap=True,
        )

        def stop(*_):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop)  # like Ctrl-C: remove the deployments, then exit
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
