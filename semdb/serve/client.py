"""Find a running `semdb serve` for a store and query it: the fast path of `semdb query`.

A server writes STORE/serve.json ({"host", "port", "pid", "instance", "store"}, and "tls_cert"
when it serves HTTPS) once it listens and removes it when it stops. `query_server` reads it,
checks that the process is alive, connects with a short timeout and sends the query; the
response must carry the same `instance` token in its X-Semdb-Instance header (so a stale file
whose port another program now uses is never believed). The store's access key (auth.py) goes
along as a bearer token when serve.json is this user's own file; over HTTPS the server must
show the certificate serve.json names. Anything short of that returns None and the caller
searches locally. This module must not import torch, open_clip or starlette (the request's
query string comes from params.py, which imports neither; auth.py imports no framework).
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import ssl
import urllib.parse
from pathlib import Path
from typing import NamedTuple

from ..errors import ImageError, InputError
from ..search.hit import Hit
from ..search.request import SearchRequest
from ..store import Store
from .auth import stored_key
from .params import query_params

BEACON = "serve.json"
INSTANCE_HEADER = "X-Semdb-Instance"
CONNECT_TIMEOUT = 0.5  # seconds: a server that does not accept by then is not used
QUERY_TIMEOUT = 120.0  # seconds for the answer once connected


class ServerAnswer(NamedTuple):
    status: int
    body: dict


def beacon_path(store) -> Path:
    return Path(store) / BEACON


def new_instance() -> str:
    return secrets.token_hex(8)


def write_beacon(store, host: str, port: int, instance: str, tls_cert: str | None = None) -> Path | None:
    """Write STORE/serve.json atomically; None (and no file) if the store folder is not writable."""
    path = beacon_path(store)
    tmp = path.with_name(f".{BEACON}.{os.getpid()}.tmp")
    facts = {"host": host, "port": port, "pid": os.getpid(), "instance": instance, "store": os.path.realpath(store)}
    if tls_cert is not None:
        facts["tls_cert"] = tls_cert
    try:
        tmp.write_text(json.dumps(facts), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass
        return None
    return path


def remove_beacon(store, instance: str) -> None:
    """Remove STORE/serve.json if it is still this server's."""
    path = beacon_path(store)
    if (read_beacon(store) or {}).get("instance") == instance:
        try:
            path.unlink()
        except OSError:
            pass


def read_beacon(store) -> dict | None:
    try:
        facts = json.loads(beacon_path(store).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        not isinstance(facts, dict)
        or not isinstance(facts.get("port"), int)
        or not isinstance(facts.get("host"), str)
        or not isinstance(facts.get("pid"), int)
        or not isinstance(facts.get("instance"), str)
    ):
        return None
    return facts


def running_server(store) -> dict | None:
    """The beacon of the `semdb serve` running for the store now (its process answers as the
    instance the beacon names), or None."""
    facts = read_beacon(store)
    return facts if facts is not None and request(store, "GET", "/api/info") is not None else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except (OverflowError, ValueError, OSError):
        return False
    return True


def _own_file(path: Path) -> bool:
    """Only a serve.json this user wrote is trusted with the key (not one written by another
    user into a shared store folder, naming a port of theirs)."""
    try:
        return os.stat(path).st_uid == os.getuid()
    except OSError:
        return False


def _connect_host(host: str) -> str:
    # a server bound to every interface is reached on loopback
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def request(
    store, method: str, target: str, body: bytes | None = None, headers: dict | None = None
) -> ServerAnswer | None:
    """One request to the store's running server; None if there is none (or it is not ours)."""
    facts = read_beacon(store)
    if facts is None or not _alive(facts["pid"]):
        return None
    headers = {"Accept": "application/json", **(headers or {})}
    key = stored_key(store) if _own_file(beacon_path(store)) else None
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    host, port = _connect_host(facts["host"]), facts["port"]
    try:
        if isinstance(facts.get("tls_cert"), str):
            context = ssl.create_default_context(cafile=facts["tls_cert"])
            context.check_hostname = False  # reached on loopback: the certificate itself is what is checked
            context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
            conn = http.client.HTTPSConnection(host, port, timeout=CONNECT_TIMEOUT, context=context)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=CONNECT_TIMEOUT)
    except (OSError, ssl.SSLError):
        return None
    try:
        conn.connect()
        conn.sock.settimeout(QUERY_TIMEOUT)
        conn.request(method, target, body=body, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        if resp.getheader(INSTANCE_HEADER) != facts["instance"]:
            return None
        answer = json.loads(raw)
        return ServerAnswer(resp.status, answer) if isinstance(answer, dict) else None
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        conn.close()


def query_server(store, search: SearchRequest) -> list[Hit] | None:
    """Hits from the store's running server, or None when there is no usable server (or the
    request is one the server does not take: query vectors, an image file inside the text's
    arithmetic, --like by path), so the caller searches locally with the same meaning.

    A 4xx answer (the query itself is bad) raises InputError (ImageError for an undecodable
    --image) with the server's message, as the local search would; any other failure (a 401 or
    403 too: no usable key, so the store is searched here) returns None."""
    params = query_params(search)
    if params is None or not (search.image is None or isinstance(search.image, (str, os.PathLike))):
        return None
    target = "/api/search?" + urllib.parse.urlencode(params)
    if search.image is None:
        answer = request(store, "GET", target)
    else:
        try:
            data = Path(search.image).read_bytes()
        except OSError:
            return None  # the local path reports a missing or unreadable query image
        answer = request(store, "POST", target, body=data, headers={"Content-Type": "application/octet-stream"})
    if answer is None:
        return None
    if 400 <= answer.status < 500 and answer.status not in (401, 403, 408, 421, 429):
        message = str(answer.body.get("error") or f"the server refused the query ({answer.status})")
        if search.image is not None and answer.status == 415:
            raise ImageError(search.image, message.split(": ", 1)[-1])
        raise InputError(message)
    if answer.status != 200 or not isinstance(answer.body.get("hits"), list):
        return None
    try:
        hits = [Hit.from_json(h) for h in answer.body["hits"]]
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    if any("\\" in h.path for h in hits):  # maybe a name the server escaped (display_path): the stored one
        with Store(store, readonly=True) as stored:
            items = stored.items([h.id for h in hits])
        hits = [h._replace(path=it.path) if it is not None else h for h, it in zip(hits, items)]
    return hits
