"""Run `semdb serve`: open the store read-only, warm the model and index, bind, serve.

The socket is bound before uvicorn starts (so `--port 0` picks a free port and the real one is
known), STORE/serve.json is written once the app is up and removed when it stops. A server
bound beyond loopback asks for the store's access key (auth.py) and prints a URL carrying it;
`--tls-cert`/`--tls-key` serve HTTPS.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import os
import socket
import ssl
import sys
from collections.abc import Callable

from ..errors import InputError
from . import auth, client

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
            f"{store} is already served at {_server_url(running)} (pid {running['pid']}): "
            f"use that one, or stop it first"
        )


def check_tls(cert: str | None, key: str | None) -> None:
    """InputError (one line) unless both or neither are given and they load as a pair."""
    if (cert is None) != (key is None):
        raise InputError("--tls-cert and --tls-key go together: the certificate and its private key (PEM files)")
    if cert is not None:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
        except ssl.SSLError as e:  # (an OSError too: first)
            raise InputError(f"--tls-cert {cert} --tls-key {key}: not a PEM certificate and its key ({e})") from None
        except OSError as e:
            raise InputError(f"--tls-cert {cert} --tls-key {key}: cannot read them ({e.strerror})") from None


def reachable_address(host: str) -> str:
    """An address of this machine that others on the network can use for `host`: for a wildcard
    bind, the address of the interface that leads out (a UDP connect sends no packet)."""
    wildcard = {"0.0.0.0": (socket.AF_INET, "192.0.2.1"), "::": (socket.AF_INET6, "2001:db8::1")}.get(host)
    if wildcard is None:
        return host
    try:
        with socket.socket(wildcard[0], socket.SOCK_DGRAM) as s:
            s.connect((wildcard[1], 9))
            return s.getsockname()[0]
    except OSError:
        return socket.gethostname()


def qr_block(text: str) -> str:
    """`text` as a QR code drawn with block characters, two modules a line, for a terminal."""
    import segno  # noqa: PLC0415 - only a server on the network prints one

    out = io.StringIO()
    segno.make(text, error="l").terminal(out=out, compact=True)
    return out.getvalue().rstrip("\n")


def _url(host: str, port: int, tls: bool) -> str:
    return f"{'https' if tls else 'http'}://{f'[{host}]' if ':' in host else host}:{port}/"


def _server_url(facts: dict) -> str:
    """The address of a server from its STORE/serve.json facts."""
    return _url(facts["host"], facts["port"], bool(facts.get("tls_cert")))


def run(
    store,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    require_key: bool = False,
    new_key: bool = False,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    model: str | None = None,
    pretrained: str | None = None,
    threads: int | None = None,
    access_log: bool = False,
    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> None:
    """Serve the store until interrupted (SIGINT/SIGTERM). Beyond loopback (or if `require_key`
    or `new_key`) every request must carry the store's access key; `new_key` replaces it."""
    check_tls(tls_cert, tls_key)
    remote, tls = not is_loopback(host), tls_cert is not None
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
            allowed = None if remote else LOOPBACK_NAMES | {host.lower()}
            access, key_state = None, ""
            if remote or require_key or new_key:
                key, key_state = auth.load_key(db.path, new=new_key)
                access = auth.Access(key)

            @contextlib.asynccontextmanager
            async def lifespan(_app):
                other = client.running_server(db.path)  # one that started while this one loaded
                beacon = None
                if not other:
                    beacon = client.write_beacon(
                        db.path, host, bound_port, instance, tls_cert=os.path.abspath(tls_cert) if tls else None
                    )
                say(
                    f"semdb serve: {_url(host, bound_port, tls)}  (store {db.path}, "
                    f"{db.store.count()} items)"
                    f"{'' if beacon or other else '; store folder not writable: semdb query will not find this server'}"
                    f"; Ctrl-C to stop"
                )
                if other:
                    say(f"warning: {db.path} is also served at {_server_url(other)}: semdb query uses that one")
                if access is not None:
                    where = {
                        "kept": f"kept owner-only in {auth.key_path(db.path)}",
                        "new": f"new, kept owner-only in {auth.key_path(db.path)}",
                        "unsaved": "store folder not writable: it lasts until this server stops",
                    }[key_state]
                    key_url = f"{_url(reachable_address(host), bound_port, tls)}?key={key}"
                    say(f"access key: open {key_url} (the key: {where}; --new-key replaces it and ends every session)")
                    if remote:
                        say(f"or scan it with a phone:\n{qr_block(key_url)}")
                try:
                    yield
                finally:
                    client.remove_beacon(db.path, instance)

            app = create_app(db, instance=instance, allowed_hosts=allowed, lifespan=lifespan, access=access)
            app.state.service.warm()
            config = uvicorn.Config(
                app,
                log_level="warning",
                access_log=access_log,
                lifespan="on",
                timeout_graceful_shutdown=3,
                server_header=False,
                ssl_certfile=tls_cert,
                ssl_keyfile=tls_key,
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
