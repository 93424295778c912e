"""`semdb serve` with an access key: real server processes over real TCP. A server bound to
0.0.0.0 is reached only through 127.0.0.1 (nothing leaves this machine): every route of its
app refuses without the key and answers with it (bearer token or session cookie); a restart
keeps the key and its sessions, --new-key ends both; wrong keys are slowed per client; a
headless Chromium logs in with the printed URL and browses on its cookie, under the CSP; bad
and oversized requests get 4xx JSON; --tls-cert/--tls-key serve HTTPS, which `semdb query`
uses with the key. A loopback server stays key-free unless --require-key asks."""

from __future__ import annotations

import datetime
import http.client
import io
import ipaddress
import itertools
import json
import os
import re
import shutil
import ssl
import stat
import subprocess
import time
import urllib.parse
from importlib import resources

import pytest
from kit import CHROMIUM_ARGS, TIMEOUT_MS, chromium, semdb_cli, write_photos
from PIL import Image
from serve_helpers import Server, multipart

from semdb.serve import auth

URL_LINE = re.compile(r"access key: open (https?)://(\S+):(\d+)/\?key=([A-Za-z0-9_-]+)")


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_model):
    import semdb

    root = tmp_path_factory.mktemp("keyed")
    photos = write_photos(root / "photos", n_generated=3)
    store = root / "store"
    with semdb.open(store, model=tiny_model) as db:
        db.ingest([str(photos)], train_now=False)
    with semdb.open(store, readonly=True) as db:
        ids = sorted(int(it.id) for it in db.store.iter_items())
    return store, ids


def _printed_key(server) -> str:
    """The key of the URL the server printed, checked against STORE/serve.key."""
    found = URL_LINE.search(server.wait_output("access key: open"))
    assert found, server.output()
    assert int(found.group(3)) == server.port
    key = found.group(4)
    assert auth.stored_key(server.store) == key
    assert stat.S_IMODE(os.stat(server.store / "serve.key").st_mode) == 0o600  # owner-only
    return key


@pytest.fixture(scope="module")
def keyed(store):
    server = Server(store[0], "--host", "0.0.0.0")
    key = _printed_key(server)
    yield server, key, store[1]
    if server.proc.poll() is None:
        assert server.stop() == 0, server.output()
    assert "Traceback" not in server.output(), server.output()


def _error(status_headers_body, status):
    code, headers, body = status_headers_body
    assert code == status, (code, body[:300])
    assert headers["content-type"].startswith("application/json")
    message = json.loads(body)["error"]
    assert message and "\n" not in message
    return message


def _bearer(key):
    return {"Authorization": f"Bearer {key}"}


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 40)).save(buf, "JPEG")
    return buf.getvalue()


def _app_routes(store):
    """(methods, path) of every route of the app a server builds, read from create_app itself,
    so a route added later is checked too (the page's files each as one)."""
    import semdb
    from semdb.serve.app import create_app

    with semdb.open(store, readonly=True) as db:
        app = create_app(db, access=auth.Access("k" * 43))
        while not hasattr(app, "routes"):
            app = app.app  # the guards around the Starlette app
        found = []
        static = resources.files("semdb.serve") / "static"
        for route in app.routes:
            if route.path == "/static/{name}":  # one route for the page's files: each of them
                found += [(["GET"], f"/static/{f.name}") for f in sorted(static.iterdir(), key=lambda f: f.name)]
            else:
                found.append((sorted(route.methods - {"HEAD"}), route.path))
        app.state.service.close()
    return found


ANSWERED = {
    "/",
    "/favicon.ico",
    "/api/search",
    "/api/similar/{id}",
    "/api/item/{id}",
    "/api/info",
    "/thumb/{id}",
    "/image/{id}",
    "/static/app.js",
    "/static/index.html",
    "/static/style.css",
    "/static/key.html",
}


def _target(path: str, item: int) -> str:
    """A request to `path` that the route answers with 200 (given the key)."""
    path = re.sub(r"\{[a-z_]+\}", str(item), path)
    return path + ("?q=a+rocket&k=3" if path == "/api/search" else "")


# --- every route --------------------------------------------------------------------------------


def test_every_route_refuses_without_the_key_and_answers_with_it(keyed, store):
    server, key, ids = keyed
    routes = _app_routes(store[0])
    assert {"/api/search", "/thumb/{id}", "/image/{id}", "/", "/static/key.html"} <= {p for _, p in routes}
    checked = 0
    for methods, path in routes:
        for method in methods:
            target = _target(path, ids[0])
            body, headers = (None, {}) if method == "GET" else multipart("image", "q.jpg", _jpeg())
            if path == "/static/key.css":  # the prompt's stylesheet, nothing of the store: the one public file
                assert server.request(method, target, body=body, headers=headers)[0] == 200
                continue
            message = _error(server.request(method, target, body=body, headers=headers), 401)
            assert "access key" in message, (target, message)
            code, _, answer = server.request(method, target, body=body, headers={**headers, **_bearer(key)})
            assert code not in (401, 403, 429) and code < 500, (method, target, code, answer[:200])
            if path in ANSWERED:  # the routes this test knows: a real answer
                assert code in (200, 204), (method, target, code, answer[:200])
                checked += 1
    assert checked >= len(ANSWERED)
    # what the refusal looks like: a bearer challenge for the API, the prompt for a page
    code, headers, _ = server.get("/api/info")
    assert code == 401 and headers["www-authenticate"].startswith("Bearer")
    code, headers, page = server.get("/?q=cat", headers={"Accept": "text/html"})
    assert code == 401 and headers["content-type"].startswith("text/html")
    assert b'action="/auth/login"' in page and b'name="next" value="/?q=cat"' in page
    assert b"<script" not in page and b"style=" not in page  # nothing inline: the CSP allows none
    assert headers["cache-control"] == "no-store" and "frame-ancestors 'none'" in headers["content-security-policy"]
    # a wrong key is not a key; one that differs in its last character neither
    _error(server.get("/api/info", headers=_bearer("x" * len(key))), 401)
    _error(server.get("/api/info", headers=_bearer(key[:-1] + ("A" if key[-1] != "A" else "B"))), 401)
    # security headers on every answer, refused or not
    for target, extra in (("/api/info", {}), ("/api/info", _bearer(key)), (f"/thumb/{ids[0]}", _bearer(key))):
        headers = server.get(target, headers=extra)[1]
        assert headers["x-content-type-options"] == "nosniff" and headers["referrer-policy"] == "no-referrer"
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp


def _qr_modules(block: str) -> list[list[bool]]:
    """The dark modules of a QR code drawn two rows a character (a full block: both light)."""
    top = {"\u2588": False, "\u2580": False, "\u2584": True, " ": True}
    bottom = {"\u2588": False, "\u2580": True, "\u2584": False, " ": True}
    rows = []
    for line in block.splitlines():
        rows += [[top[c] for c in line], [bottom[c] for c in line]]
    return rows


def test_a_network_server_prints_its_url_as_a_qr_code(keyed):
    import segno

    server, key, _ = keyed
    output = server.wait_output("scan it with a phone:")
    url = URL_LINE.search(output).group(0).removeprefix("access key: open ")
    after = output.split("scan it with a phone:\n", 1)[1].splitlines()
    lines = list(itertools.takewhile(lambda line: line and set(line) <= set("\u2588\u2580\u2584 "), after))
    block = "\n".join(lines)
    assert len(lines) >= 15 and len({len(line) for line in lines}) == 1, block  # a square block of its own
    modules = _qr_modules(block)
    border = 4
    drawn = [row[border:-border] for row in modules[border : border + len(modules[0]) - 2 * border]]
    assert drawn == [[bool(m) for m in row] for row in segno.make(url, error="l").matrix]  # that URL, scannable


def test_the_url_key_becomes_a_session_cookie(keyed):
    server, key, _ = keyed
    code, headers, _ = server.get(f"/?q=cat&key={key}", headers={"Accept": "text/html"})
    assert code == 303 and headers["location"] == "/?q=cat"  # the key leaves the address bar
    cookie = headers["set-cookie"]
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/"):
        assert attribute in cookie
    assert key not in cookie and "Secure" not in cookie
    # behind a reverse proxy on this machine that serves HTTPS, the cookie is HTTPS-only
    proxied = server.get(f"/?key={key}", headers={"X-Forwarded-Proto": "https"})[1]["set-cookie"]
    assert "Secure" in proxied
    session = {"Cookie": cookie.split(";")[0]}
    code, headers, page = server.get("/?q=cat", headers={"Accept": "text/html", **session})
    assert code == 200 and b"/static/app.js" in page
    assert server.get("/api/search?q=cat&k=2", headers=session)[0] == 200
    # a forged or altered session is refused, and the browser is told to drop it
    forged = session["Cookie"][:-4] + "0000"
    code, headers, _ = server.get("/api/info", headers={"Cookie": forged})
    assert code == 401 and "Max-Age=0" in headers["set-cookie"]
    # the prompt's form: a wrong key shows the prompt again, the right one goes where it was headed
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    code, _, page = server.request("POST", "/auth/login", body=b"key=nope&next=%2Fapi%2Finfo", headers=form)
    assert code == 401 and b'<p id="wrong">' in page
    body = urllib.parse.urlencode({"key": key, "next": "/?q=dog"}).encode()
    code, headers, _ = server.request("POST", "/auth/login", body=body, headers=form)
    assert code == 303 and headers["location"] == "/?q=dog" and "HttpOnly" in headers["set-cookie"]
    # never a redirect to another site
    for elsewhere in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        body = urllib.parse.urlencode({"key": key, "next": elsewhere}).encode()
        assert server.request("POST", "/auth/login", body=body, headers=form)[1]["location"] == "/"


def test_bad_and_oversized_requests_get_4xx_json(keyed):
    server, key, ids = keyed
    with_key = _bearer(key)
    # an upload larger than the limit is refused from its Content-Length, before it is read
    conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
    conn.putrequest("POST", "/api/search")
    for name, value in {**with_key, "Content-Type": "image/jpeg", "Content-Length": str(10**10)}.items():
        conn.putheader(name, value)
    conn.endheaders()
    resp = conn.getresponse()
    _error((resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()), 413)
    conn.close()
    _error(server.request("POST", "/api/search", body=b"", headers=with_key), 400)
    _error(server.request("POST", "/api/search", body=b"not an image" * 10, headers=with_key), 415)
    _error(server.get("/api/search?q=cat&k=ten", headers=with_key), 400)
    _error(server.get("/thumb/..%2F..%2Fetc%2Fpasswd", headers=with_key), 404)
    _error(server.request("POST", "/auth/login", body=b"key=" + b"x" * 10_000), 413)
    # a POST a browser sends from another site is refused, key or not
    upload, headers = multipart("image", "q.jpg", _jpeg())
    for bad in (
        {"Origin": "http://evil.example"},
        {"Origin": "http://evil.example", "Sec-Fetch-Site": "same-origin"},
        {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ):
        sent = server.request("POST", "/api/search", body=upload, headers={**headers, **with_key, **bad})
        assert "another" in _error(sent, 403)
    same = {"Origin": f"http://127.0.0.1:{server.port}", "Sec-Fetch-Site": "same-origin"}
    assert server.request("POST", "/api/search?k=2", body=upload, headers={**headers, **with_key, **same})[0] == 200
    # and the server keeps serving
    assert server.get("/api/info", headers=with_key)[0] == 200


# --- the page in a browser ------------------------------------------------------------------------


def test_a_browser_logs_in_with_the_printed_url_and_browses_on_its_cookie(keyed):
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    exe = chromium()
    if exe is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set SEMDB_CHROMIUM=/path/to/chrome)")
    server, key, ids = keyed
    printed = URL_LINE.search(server.output())
    login = f"http://127.0.0.1:{printed.group(3)}/?key={printed.group(4)}"  # the printed URL, on loopback
    with sync_playwright() as pw:
        try:
            chrome = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS)
        except Error as e:
            pytest.skip(f"Chromium at {exe} does not start: {str(e).splitlines()[0]}")
        try:
            # without the key: the prompt, under the CSP; a wrong key, then the right one
            context = chrome.new_context()
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            console = []
            page.on("console", lambda m: console.append(m.text))
            page.on("pageerror", lambda e: console.append(str(e)))
            page.goto(server.base + "/?q=rocket")
            page.fill("#key", "not the key")
            page.click("button[type=submit]")
            page.wait_for_selector("#wrong", state="visible")
            page.fill("#key", key)
            page.click("button[type=submit]")
            page.wait_for_url(server.base + "/?q=rocket")
            assert not [m for m in console if "Content Security Policy" in m], console
            context.close()

            # the printed URL: the cookie is set, the key leaves the address bar, the page works
            context = chrome.new_context()
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            console, answers = [], []
            page.on("console", lambda m: console.append(m.text))
            page.on("pageerror", lambda e: console.append(str(e)))
            page.on("response", lambda r: answers.append((r.status, r.url)))
            page.goto(login)
            assert page.url == server.base + "/" and "key=" not in page.url
            page.wait_for_load_state("networkidle")
            cookies = context.cookies()
            assert [(c["name"], c["httpOnly"], c["sameSite"]) for c in cookies] == [(auth.COOKIE, True, "Strict")]
            assert auth.COOKIE not in page.evaluate("document.cookie")  # HttpOnly: no script reads it
            scripts = [(s, u) for s, u in answers if urllib.parse.urlsplit(u).path.endswith(".js")]
            assert scripts and all(s == 200 for s, _ in scripts), answers
            assert all(s != 401 for s, _ in answers), answers

            # later visits carry no key: the cookie is enough for the page, the API and pictures
            answers.clear()
            page.goto(server.base + "/?q=a+rocket")
            page.wait_for_load_state("networkidle")
            assert all(s != 401 for s, _ in answers), answers
            status = page.evaluate("fetch('/api/search?q=a+rocket&k=3').then(r => r.status)")
            loaded = page.evaluate(
                "(id) => new Promise(ok => { const i = new Image(); i.onload = () => ok(i.naturalWidth);"
                " i.onerror = () => ok(-1); i.src = '/thumb/' + id; })",
                ids[0],
            )
            assert status == 200 and loaded > 0
            violations = [m for m in console if "Content Security Policy" in m]
            assert not violations, violations  # the page runs under the CSP: no inline script or style
            context.close()
        finally:
            chrome.close()


# --- a restart, a new key, wrong keys -------------------------------------------------------------


def test_a_restart_keeps_the_key_and_new_key_revokes_keys_and_sessions(keyed, store):
    server, old_key, _ = keyed
    session = {"Cookie": server.get(f"/?key={old_key}")[1]["set-cookie"].split(";")[0]}
    assert server.stop() == 0, server.output()

    (store[0] / "serve.key").chmod(0o644)  # say, a copy made under another umask: made private again
    again = Server(store[0], "--host", "0.0.0.0")
    try:
        assert _printed_key(again) == old_key  # kept: the printed URL and the sessions still work
        assert again.get("/api/info", headers=session)[0] == 200
    finally:
        assert again.stop() == 0, again.output()

    renewed = Server(store[0], "--host", "0.0.0.0", "--new-key")
    try:
        new_key = _printed_key(renewed)
        assert new_key != old_key
        _error(renewed.get("/api/info", headers=_bearer(old_key)), 401)
        _error(renewed.get("/api/info", headers=session), 401)
        assert renewed.get(f"/?key={old_key}", headers={"Accept": "text/html"})[0] == 401
        assert renewed.get("/api/info", headers=_bearer(new_key))[0] == 200

        # a guessing loop of bounded length: after a few wrong keys the client is made to wait
        # (429 with Retry-After) and, while it waits, no key it sends is even compared
        free = auth.FREE_FAILURES - 2  # the old key, twice, was wrong already
        statuses = [renewed.get("/api/info", headers=_bearer(f"guess{i:040d}"))[0] for i in range(30)]
        assert statuses[: free + 1] == [401] * (free + 1) and statuses[free + 1] == 429, statuses
        assert statuses.count(401) <= free + 2, statuses  # 30 guesses, at most a few compared
        code, headers, _ = renewed.get("/api/info", headers=_bearer(new_key))
        assert code == 429 and int(headers["retry-after"]) >= 1  # the right key waits too
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        assert renewed.request("POST", "/auth/login", body=f"key={new_key}".encode(), headers=form)[0] == 429
        # another client behind a reverse proxy on this machine (X-Forwarded-For) is not held up
        assert renewed.get("/api/info", headers={**_bearer(new_key), "X-Forwarded-For": "10.0.0.7"})[0] == 200
        time.sleep(int(headers["retry-after"]) + 0.2)
        assert renewed.get("/api/info", headers=_bearer(new_key))[0] == 200  # then it is let in again
    finally:
        assert renewed.stop() == 0, renewed.output()


# --- loopback ------------------------------------------------------------------------------------


def test_loopback_is_key_free_unless_asked(tmp_path, tiny_model):
    import semdb

    store = tmp_path / "store"
    with semdb.open(store, model=tiny_model) as db:
        db.ingest([str(write_photos(tmp_path / "photos", n_generated=1))], train_now=False)
    server = Server(store)
    try:
        assert server.get("/api/info")[0] == 200 and server.get("/")[0] == 200
        assert "access key" not in server.output() and not (store / "serve.key").exists()
    finally:
        assert server.stop() == 0
    server = Server(store, "--require-key")
    try:
        key = _printed_key(server)
        _error(server.get("/api/info"), 401)
        assert server.get("/api/info", headers=_bearer(key))[0] == 200
        assert "scan it" not in server.output() and "\u2588" not in server.output()  # no QR code on loopback
    finally:
        assert server.stop() == 0


# --- HTTPS -----------------------------------------------------------------------------------------


def _self_signed(folder):
    """A self-signed certificate for localhost/127.0.0.1 and its key (PEM files): made with the
    `cryptography` package, else the openssl command."""
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        if shutil.which("openssl") is None:
            pytest.skip("neither the cryptography package nor openssl is here to make a certificate")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
            + ["-days", "1", "-keyout", str(key_file), "-out", str(cert_file), "-subj", "/CN=localhost"]
            + ["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
            check=True,
            capture_output=True,
        )
        return cert_file, key_file
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_file.chmod(0o600)
    return cert_file, key_file


def test_https_with_a_certificate_and_semdb_query_through_it(tmp_path, tiny_model_dir):
    """The store's model folder is removed once the server has loaded it: `semdb query` can then
    only be answered by the server, over HTTPS, with the key from the store."""
    import semdb

    cert, private = _self_signed(tmp_path)
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    photos = write_photos(tmp_path / "photos", n_generated=2)
    store = tmp_path / "store"
    with semdb.open(store, model="local-dir:" + str(model_dir)) as db:
        db.ingest([str(photos)], train_now=False)
    semdb_cli("serve", "--store", store, "--port", "0", "--tls-cert", cert, "--tls-key", tmp_path / "nothing", check=2)
    server = Server(store, "--host", "0.0.0.0", "--tls-cert", cert, "--tls-key", private)
    try:
        key = _printed_key(server)
        assert URL_LINE.search(server.output()).group(1) == "https"
        context = ssl.create_default_context(cafile=str(cert))

        def get(target, headers=None):
            conn = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=60, context=context)
            try:
                conn.request("GET", target, headers=headers or {})
                resp = conn.getresponse()
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
            finally:
                conn.close()

        _error(get("/api/info"), 401)
        code, _, body = get("/api/search?q=a+rocket&k=3", _bearer(key))
        assert code == 200
        expected = json.loads(body)["hits"]
        code, headers, _ = get(f"/?key={key}")
        assert code == 303 and "Secure" in headers["set-cookie"]  # sent over HTTPS only
        with pytest.raises((http.client.HTTPException, OSError)):  # plain HTTP gets no answer
            server.get("/api/info", timeout=10)
        shutil.rmtree(model_dir)
        out = semdb_cli("query", "a rocket", "--store", store, "-k", "3", "--json").stdout
        assert [h["id"] for h in json.loads(out)] == [h["id"] for h in expected]
    finally:
        assert server.stop() == 0, server.output()
