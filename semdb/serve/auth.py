"""The access key of `semdb serve` on a network: the key, sessions, and the ASGI guards.

A server bound beyond loopback (or started with --require-key) asks for a key: 32 random bytes
(URL-safe text) kept in STORE/serve.key, owner-only (0600), reused by the next server and read
by `semdb query` (client.py) until `--new-key` replaces it. A request is let in with

  - `Authorization: Bearer KEY` (the JSON API, `semdb query`, scripts), or
  - the session cookie. A browser gives the key once (`?key=KEY` in the printed URL, or the
    prompt's form posted to /auth/login) and gets an HttpOnly, SameSite=Strict cookie, then a
    redirect to the URL without the key. The cookie is signed with the key (HMAC-SHA256), so
    a new key ends every session at once and no session table is kept.

Anything else gets 401: JSON for the API and pictures, the key prompt (static/key.html) for a
page. Only the prompt's stylesheet is served without the key. Wrong keys are counted per client
address: after FREE_FAILURES the address is refused (429, Retry-After) for a time that doubles
with each further wrong key, up to MAX_LOCK seconds; while refused, no key it sends is even
compared. Every comparison is hmac.compare_digest.

SameOrigin (on every server, keyed or not) refuses a POST a browser sends from another site.
No web framework is imported here: client.py reads the key through this module.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import math
import os
import re
import secrets
import time
import urllib.parse
from collections import OrderedDict
from importlib import resources
from pathlib import Path

from ..errors import InputError

KEY_FILE = "serve.key"
KEY_TEXT = re.compile(r"[A-Za-z0-9_-]{32,128}")
COOKIE = "semdb_session"
SESSION_SECONDS = 30 * 86400
LOGIN_PATH = "/auth/login"
PUBLIC_PATHS = frozenset({"/static/key.css"})  # the prompt's own assets
MAX_LOGIN_BODY = 4096
FREE_FAILURES = 5  # wrong keys an address may send before it is made to wait
MAX_LOCK = 900  # seconds: the longest wait
FAILURE_MEMORY = 2 * MAX_LOCK  # seconds without a wrong key after which an address starts afresh
MAX_TRACKED = 10_000  # addresses remembered (the oldest are forgotten first)


# --- the key on disk ------------------------------------------------------------------------------


def key_path(store) -> Path:
    return Path(store) / KEY_FILE


def stored_key(store) -> str | None:
    """The store's access key, or None (no key file, unreadable, or not a key)."""
    try:
        key = key_path(store).read_text(encoding="ascii").strip()
    except (OSError, UnicodeError):
        return None
    return key if KEY_TEXT.fullmatch(key) else None


def load_key(store, new: bool = False) -> tuple[str, str]:
    """(key, how): the store's key, made if it has none (or if `new`). how is "kept", "new", or
    "unsaved" (the store folder is not writable: the key lasts as long as this server)."""
    path = key_path(store)
    if not new:
        try:
            text = path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            text = None
        except (OSError, UnicodeError) as e:
            raise InputError(f"cannot read the access key {path}: {getattr(e, 'strerror', None) or e}") from None
        if text is not None and KEY_TEXT.fullmatch(text):
            _owner_only(path)
            return text, "kept"
    key = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, (key + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        return key, "unsaved"
    return key, "new"


def _owner_only(path: Path) -> None:
    """A key file others can read is made owner-only (a copy made with another umask, say)."""
    if os.stat(path).st_mode & 0o077:
        try:
            os.chmod(path, 0o600)
        except OSError as e:
            raise InputError(
                f"the access key {path} is readable by others and cannot be made private ({e.strerror})"
            ) from None


# --- keys and sessions ----------------------------------------------------------------------------


class Access:
    """One key: checks it, and makes and checks the session cookies signed with it."""

    def __init__(self, key: str):
        self._key = key.encode("ascii")

    def is_key(self, given: str) -> bool:
        return hmac.compare_digest(given.encode("utf-8", "replace"), self._key)

    def _mac(self, body: str) -> str:
        return hmac.new(self._key, b"semdb-session." + body.encode("ascii"), hashlib.sha256).hexdigest()

    def new_session(self) -> str:
        body = f"{int(time.time())}.{secrets.token_urlsafe(12)}"
        return f"{body}.{self._mac(body)}"

    def is_session(self, value: str) -> bool:
        body, _, mac = value.rpartition(".")
        if not body.isascii() or not hmac.compare_digest(mac.encode("utf-8", "replace"), self._mac(body).encode()):
            return False
        issued = body.split(".", 1)[0]
        return issued.isdigit() and 0 <= time.time() - int(issued) < SESSION_SECONDS

    @staticmethod
    def cookie(value: str, https: bool, max_age: int = SESSION_SECONDS) -> bytes:
        """The Set-Cookie value; Secure when the browser came over HTTPS (directly, or through a
        reverse proxy on this machine that says so in X-Forwarded-Proto: uvicorn believes it)."""
        secure = "; Secure" if https else ""
        return f"{COOKIE}={value}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Strict{secure}".encode("ascii")


class Failures:
    """Wrong keys per client address, and how long the address must still wait."""

    def __init__(self):
        self._by_client: OrderedDict[str, tuple[int, float, float]] = OrderedDict()  # count, last, until

    def wait(self, client: str, now: float) -> float:
        entry = self._by_client.get(client)
        if entry is None:
            return 0.0
        if now - entry[1] > FAILURE_MEMORY:
            del self._by_client[client]
            return 0.0
        return max(0.0, entry[2] - now)

    def fail(self, client: str, now: float) -> None:
        count, _, until = self._by_client.pop(client, (0, now, now))
        count += 1
        if count > FREE_FAILURES:
            until = now + min(2.0 ** (count - FREE_FAILURES - 1), MAX_LOCK)
        self._by_client[client] = (count, now, until)
        while len(self._by_client) > MAX_TRACKED:
            self._by_client.popitem(last=False)

    def forget(self, client: str) -> None:
        self._by_client.pop(client, None)


# --- ASGI -----------------------------------------------------------------------------------------


def _headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}


async def _respond(send, status: int, body: bytes, content_type: bytes, extra=()) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _error(send, status: int, message: str, extra=()) -> None:
    body = json.dumps({"error": message}).encode()
    await _respond(send, status, body, b"application/json", extra)


def _hostname(netloc: str) -> str | None:
    try:
        return urllib.parse.urlsplit("//" + netloc.strip()).hostname
    except ValueError:
        return None


class SameOrigin:
    """Refuse (403) a state-changing request that a browser sends from another site: its
    Sec-Fetch-Site says so, or its Origin names another host than the one it was sent to
    (Host, or X-Forwarded-Host from a reverse proxy). Requests without these headers are not
    a browser's cross-site requests (curl, `semdb query`) and pass. `Origin: null` is what a
    browser sends for a same-origin form under Referrer-Policy: no-referrer (the key prompt's
    form), so it is left to Sec-Fetch-Site."""

    def __init__(self, app):
        self.app, self.state = app, getattr(app, "state", None)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            headers = _headers(scope)
            site = headers.get("sec-fetch-site")
            origin = headers.get("origin")
            if site is not None and site not in ("same-origin", "none"):
                return await _error(send, 403, f"refused: a {scope['method']} from another site ({site})")
            if origin is not None and origin != "null":
                names = {_hostname(headers.get("host", ""))}
                names.add(_hostname(headers.get("x-forwarded-host", "").split(",")[0]))
                try:
                    from_host = urllib.parse.urlsplit(origin).hostname
                except ValueError:
                    from_host = None
                if from_host is None or from_host not in names:
                    return await _error(send, 403, f"refused: a {scope['method']} from another origin ({origin[:80]})")
        await self.app(scope, receive, send)


class KeyGuard:
    """Let in requests that carry the key or a session; answer the rest (see the module's doc)."""

    def __init__(self, app, access: Access):
        self.app, self.access, self.state = app, access, getattr(app, "state", None)
        self.failures = Failures()
        self.page = (resources.files("semdb.serve") / "static" / "key.html").read_text(encoding="utf-8")

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":  # none are served; refused before anything reads them
            return await send({"type": "websocket.close", "code": 1008})
        if scope["type"] != "http":  # lifespan
            return await self.app(scope, receive, send)
        method, path = scope["method"], scope["path"]
        if path in PUBLIC_PATHS and method in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        headers = _headers(scope)
        client = (scope.get("client") or ("?",))[0]
        wait = self.failures.wait(client, time.monotonic())
        if wait > 0:
            return await _error(
                send,
                429,
                f"too many wrong keys from {client}: try again in {math.ceil(wait)} s",
                [(b"retry-after", str(math.ceil(wait)).encode())],
            )
        if path == LOGIN_PATH and method == "POST":
            return await self._login(scope, receive, send, client)
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            if self.access.is_key(auth[7:].strip()):
                return await self.app(scope, receive, send)
            return await self._wrong(scope, send, headers, client, "wrong key in the Authorization header")
        query = urllib.parse.parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = [v for k, v in query if k == "key"]
        if given and method in ("GET", "HEAD"):
            if not self.access.is_key(given[-1]):
                return await self._wrong(scope, send, headers, client, "wrong key in the URL")
            self.failures.forget(client)
            rest = urllib.parse.urlencode([(k, v) for k, v in query if k != "key"])
            return await self._session(scope, send, _raw_path(scope) + ("?" + rest if rest else ""))
        cookie = _cookie(headers)
        if cookie is not None and self.access.is_session(cookie):
            return await self.app(scope, receive, send)
        clear = [(b"set-cookie", self.access.cookie("", _https(scope), 0))] if cookie is not None else []
        return await self._refuse(scope, send, headers, wrong=False, extra=clear)

    async def _session(self, scope, send, target: str) -> None:
        """A new session cookie and a redirect to `target` (a path on this server)."""
        location = _local(target).encode("ascii")
        cookie = self.access.cookie(self.access.new_session(), _https(scope))
        extra = [(b"set-cookie", cookie), (b"location", location)]
        await _respond(send, 303, b"", b"text/plain", extra)

    async def _wrong(self, scope, send, headers, client, message) -> None:
        self.failures.fail(client, time.monotonic())
        await self._refuse(scope, send, headers, wrong=True, message=message)

    async def _refuse(self, scope, send, headers, wrong: bool, message: str = "", extra=()) -> None:
        if scope["method"] in ("GET", "HEAD") and "text/html" in headers.get("accept", ""):
            query = scope.get("query_string", b"").decode("latin-1")
            return await self._prompt(send, _raw_path(scope) + ("?" + query if query else ""), wrong, extra)
        await _error(
            send,
            401,
            message or "this server asks for its access key: send `Authorization: Bearer KEY` (STORE/serve.key)",
            [(b"www-authenticate", b'Bearer realm="semdb"'), *extra],
        )

    async def _prompt(self, send, target: str, wrong: bool, extra=()) -> None:
        """The key prompt (401): its form posts the key and where to go next to /auth/login."""
        page = self.page.replace('name="next" value="/"', f'name="next" value="{html.escape(_local(target))}"')
        if wrong:
            page = page.replace('<p id="wrong" hidden>', '<p id="wrong">')
        await _respond(send, 401, page.encode("utf-8"), b"text/html; charset=utf-8", extra)

    async def _login(self, scope, receive, send, client) -> None:
        """POST /auth/login from the prompt: key=KEY&next=PATH (form-encoded, small)."""
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > MAX_LOGIN_BODY:
                return await _error(send, 413, f"the login form has at most {MAX_LOGIN_BODY} bytes")
            if not message.get("more_body"):
                break
        form = dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        target = _local(form.get("next", "/"))
        if not self.access.is_key(form.get("key", "").strip()):
            self.failures.fail(client, time.monotonic())
            return await self._prompt(send, target, wrong=True)
        self.failures.forget(client)
        await self._session(scope, send, target)


def _https(scope) -> bool:
    return scope.get("scheme") == "https"


def _cookie(headers: dict) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            return value
    return None


def _raw_path(scope) -> str:
    return scope.get("raw_path", b"").decode("latin-1") or urllib.parse.quote(scope["path"])


def _local(target: str) -> str:
    """`target` if it is a path on this server (never another site's URL), without its key;
    percent-encoded, so it can go in a Location header."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target or not target.isprintable():
        return "/"
    path, _, query = target.partition("?")
    rest = [(k, v) for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True) if k != "key"]
    return urllib.parse.quote(path, safe="/%") + ("?" + urllib.parse.urlencode(rest) if rest else "")


def protect(app, access: Access | None):
    """The app behind SameOrigin, and behind KeyGuard when a key is asked for."""
    return SameOrigin(app if access is None else KeyGuard(app, access))
