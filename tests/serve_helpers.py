"""A real `semdb serve` process for the tests of test_serve.py and test_web.py, and plain HTTP.

`Server(store, *args)` runs `python -m semdb.cli serve --store STORE --port 0 ARGS` (the code
under test, as CI installs it), waits (bounded) until it has written STORE/serve.json, and
stops it with SIGINT. Requests go over real TCP with the standard library.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from kit import cli_env

START_TIMEOUT = 180  # seconds: torch import and model load on a busy 2-core machine


class Server:
    def __init__(self, store, *args, log_dir=None, env=None, cwd=None):
        self.store = Path(store)
        self.log = Path(log_dir or self.store.parent) / f"serve-{os.getpid()}-{time.monotonic_ns()}.log"
        self._log = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "semdb.cli", "serve", "--store", str(store), "--port", "0", *map(str, args)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=cli_env(**(env or {})),
            cwd=cwd,
        )
        deadline = time.monotonic() + START_TIMEOUT
        beacon = self.store / "serve.json"
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"semdb serve exited {self.proc.returncode}: {self.output()}")
            try:
                facts = json.loads(beacon.read_text())
                if facts.get("pid") == self.proc.pid:
                    break
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"semdb serve did not start in {START_TIMEOUT} s: {self.output()}")
            time.sleep(0.2)
        self.host, self.port = "127.0.0.1", facts["port"]
        self.base = f"http://{self.host}:{self.port}"
        self.headers = {}  # sent with every request (e.g. the access key as a bearer token)

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log.read_text(errors="replace")

    def wait_output(self, text: str, timeout: float = 60) -> str:
        """The server's output once it holds `text` (it writes its beacon before it prints)."""
        deadline = time.monotonic() + timeout
        while text not in self.output() and time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.1)
        return self.output()

    def stop(self, sig=signal.SIGINT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self._log.close()
        return self.proc.returncode

    # --- HTTP ---
    def request(
        self, method: str, target: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 120
    ):
        """(status, headers dict with lower-case names, body bytes). `target` is sent as is."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, target, body=body, headers={**self.headers, **(headers or {})})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def get(self, target: str, **kw):
        return self.request("GET", target, **kw)

    def get_json(self, target: str, status: int = 200):
        code, headers, body = self.get(target)
        assert code == status, (target, code, body[:300])
        assert headers["content-type"].startswith("application/json"), headers
        return json.loads(body)


def multipart(field: str, filename: str, data: bytes, content_type: str = "application/octet-stream"):
    """(body, headers) of a multipart/form-data upload of one file."""
    boundary = "semdbtestboundary7d1e"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def stop_all(*servers):
    for server in servers:
        if server is not None:
            server.stop()


__all__ = ["Server", "multipart", "stop_all", "signal"]
