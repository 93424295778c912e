"""Run `semdb serve`: open the store read-only, warm the model and index, bind, serve.

The socket is bound before uvicorn starts (so `--port 0` picks a free port and the real one is
known), STORE/serve.json is written once the app is up and removed when it stops.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import sys
from collections.abc import Callable

from ..errors import InputError
from . import client

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port; InputError (one line) if that cannot be had."""
    if not 0 <= port <= 65535:
        raise InputError(f"--port {port}: expected 0-65535 (0: any free port)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise InputError(f"--host {host}: cannot resolve it ({e.strerror})") from None
    last = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(128)
            sock.set_inheritable(True)
            return sock
        except OSError as e:
            sock.close()
            last = e
    if last is not None and last.errno == 98:
        raise InputError(f"{host}:{port} is already in use (another `semdb serve`?): pass another --port")
    raise InputError(f"cannot listen on {host}:{port} ({last.strerror if last else 'no address'})")


def refuse_if_served(store) -> None:
    """InputError if a `semdb serve` already runs for the store: a second one would only
    compete for STORE/serve.json, which tells `semdb query` where the store's server is."""
    running = client.running_server(store)
    if running is not None:
        raise InputError(
            f"{store} is already served at {client.server_url(running)} (pid {running['pid']}): "
            f"use that one, or stop it first"
        )


def run(
    store,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    allow_remote: bool = False,
    model: str | None = None,
    pretrained: str | None = None,
    threads: int | None = None,
    access_log: bool = False,
    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> None:
    """Serve the store until interrupted (SIGINT/SIGTERM)."""
    if not is_loopback(host) and not allow_remote:
        raise InputError(
            f"--host {host} would expose every photo of the store to the network: "
            f"pass --allow-remote as well to do that (default: 127.0.0.1)"
        )
    import uvicorn  # noqa: PLC0415 - the server's libraries: only `semdb serve` loads them

    from ..api import Database  # noqa: PLC0415 - kept lazy: loaded only on this path (a cold `import semdb` stays light)
    from .app import create_app  # noqa: PLC0415 - kept lazy: loaded only on this path (a cold `import semdb` stays light)

    # The store before the port: a missing store is named as such, and a store has one server.
    db = Database(store, model=model, pretrained=pretrained, readonly=True, threads=threads)
    try:
        refuse_if_served(db.path)
        sock = bind(host, port)
    except BaseException:
        db.close()
        raise
    try:
        with db:
            bound_port = sock.getsockname()[1]
            instance = client.new_instance()
            allowed = None if allow_remote else LOOPBACK_NAMES | {host.lower()}

            @contextlib.asynccontextmanager
            async def lifespan(_app):
                other = client.running_server(db.path)  # one that started while this one loaded
                beacon = None if other else client.write_beacon(db.path, host, bound_port, instance)
                shown = f"[{host}]" if ":" in host else host
                say(
                    f"semdb serve: http://{shown}:{bound_port}/  (store {db.path}, "
                    f"{db.store.count()} items)"
                    f"{'' if beacon or other else '; store folder not writable: semdb query will not find this server'}"
                    f"; Ctrl-C to stop"
                )
                if other:
                    say(f"warning: {db.path} is also served at {client.server_url(other)}: semdb query uses that one")
                if not is_loopback(host):
                    say(
                        f"warning: listening on {host}: anyone who can reach this machine can search and "
                        f"view the store's photos (no authentication)"
                    )
                try:
                    yield
                finally:
                    client.remove_beacon(db.path, instance)

            app = create_app(db, instance=instance, allowed_hosts=allowed, lifespan=lifespan)
            app.state.service.warm()
            config = uvicorn.Config(
                app,
                log_level="warning",
                access_log=access_log,
                lifespan="on",
                timeout_graceful_shutdown=3,
                server_header=False,
            )
            server = uvicorn.Server(config)
            try:
                server.run(sockets=[sock])
            except KeyboardInterrupt:  # uvicorn shuts down gracefully, then re-raises Ctrl-C
                pass
            finally:
                client.remove_beacon(db.path, instance)
                app.state.service.close()
    finally:
        sock.close()
