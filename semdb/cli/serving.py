"""`semdb serve`: the page and the JSON API over one store, or search over shards."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import typer
from rich.text import Text

from ..cluster import Cluster
from ..errors import InputError
from ..serve.server import is_loopback, run
from .base import (
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
        None, "--shards", help="Stores sharing one codec: GET /api/search over them on Ray Serve (docs/SCALE.md)."
    ),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="With --shards: the Ray cluster to run on (default: a local instance)."
    ),
):
    """Search the store from a web page and a JSON API, model and index kept warm (docs/SERVE.md)."""
    with user_errors():
        if shards is not None:
            if any(v is not None for v in (store, model, pretrained, tls_cert, tls_key)) or require_key or new_key:
                raise InputError("--shards serves the stores it names, with their own model, without a key or TLS")
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
            say=say,
        )


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
