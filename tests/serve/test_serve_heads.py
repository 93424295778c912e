"""The request-head bounds of `semdb serve` (server.bounded_heads around uvicorn's protocol): a
real uvicorn on a real socket. A slow client gets 408 at the deadline, a huge head 431, an idle
connection is closed, and ordinary and kept-alive requests are answered."""

import http.client
import socket
import threading
import time

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from semdb.serve import server as serve_server


@pytest.fixture()
def port(monkeypatch):
    monkeypatch.setattr(serve_server, "HEADER_TIMEOUT", 1.0)
    app = Starlette(routes=[Route("/", lambda request: JSONResponse({"ok": True}))])
    sock = serve_server.bind("127.0.0.1", 0)
    config = uvicorn.Config(app, log_level="warning", http=serve_server.bounded_heads(AutoHTTPProtocol))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield sock.getsockname()[1]
    server.should_exit = True
    thread.join(10)
    sock.close()


def _answer(s: socket.socket) -> bytes:
    s.settimeout(10)
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    return data


def test_a_slow_head_gets_408_and_an_idle_connection_is_closed(port):
    slow, idle = socket.create_connection(("127.0.0.1", port)), socket.create_connection(("127.0.0.1", port))
    slow.sendall(b"GET /?q=ca")
    t = time.monotonic()
    assert _answer(slow).startswith(b"HTTP/1.1 408 ")
    assert _answer(idle) == b""  # closed, no answer
    assert 0.5 < time.monotonic() - t < 8
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(3):  # kept alive past the deadline: later requests are answered
        conn.request("GET", "/")
        assert conn.getresponse().read() == b'{"ok":true}'
        time.sleep(0.6)
    conn.close()


def test_a_huge_head_gets_431(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
    try:
        for _ in range(64):  # up to 4 MB, a piece at a time, as a client streams it
            s.sendall(b"a" * 65536)
            time.sleep(0.01)
    except OSError:
        pass
    answer = _answer(s)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    assert b"request head over" in answer
