"""`semdb serve --watch` under load, over time, and under hostile requests (loopback only).

    python bench/serve_load.py [--items 100000] [--seconds 60] [--clients 8] [--ingest 3000]
                               [--soak-minutes 10] [--soak-rate 20] [--thumbs 200]
                               [--phases load,soak,thumbs,hostile] [--model tiny|vit-b-32|MODEL]

The store: --real generated photos (real JPEG files, ingested with the codec trained on them,
so the store has a real model and codec), then synthetic items up to --items: perturbed
copies of the real embeddings stored through Database.add_embeddings (paths that do not exist;
their codes are real codes of the store's codec). One `semdb serve --port 0 --watch W` runs on
it for every phase (the watcher idle but where said):

- load: --clients threads, each sending one request after another for --seconds: a text search,
  a `like` search (a random stored id), a filtered search (text + under a folder, or a date
  range) in turn. First with the watcher idle, then while --ingest generated photos (copied into
  W at the start of the phase) go through the watcher: p50 / p95 / p99 per kind and errors,
  side by side, how many photos the watcher committed in the window and how long they took, and
  the window's requests answered before the last of them was committed (while indexing).
- idle: the server's CPU seconds over --idle-seconds of nothing, once the watcher's start rescan
  is done (its event loop included).
- soak: --soak-rate requests per second (the same mix) for --soak-minutes: RSS and open file
  descriptors of the server at the start, each minute and at the end, errors, latency.
- thumbs: a result page of --thumbs real photos, their /thumb requests all at once (one
  connection each), cold cache: p50 / p99, errors.
- burst (not in the default phases): `semdb watch` alone, a new store, --burst small photos
  copied in at once: seconds until all are stored, the watcher's RSS and peak RSS.
- hostile: malformed and hostile requests, each with the answer it got, while a client keeps
  searching (its errors and slowest answer are reported), and the server's RSS before and after.

Every phase is bounded in time and count, and the server is stopped at the end (SIGINT). The
last output line is JSON.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from ingest_speed import resolve_model_arg  # noqa: E402

WORDS = "cat dog car tree house beach mountain bicycle person flower boat city snow food street bird".split()


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# --- the store ----------------------------------------------------------------------------------


def generate_photos(folder: Path, n: int, seed: int, size=(320, 240)) -> list[Path]:
    """n JPEGs of coloured shapes (distinct content each)."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = Image.new("RGB", size, tuple(int(c) for c in rng.integers(0, 255, 3)))
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x, y = (int(v) for v in rng.integers(0, size[0] - 40, 2))
            draw.ellipse(
                [x, y % size[1], x + 60, y % size[1] + 40], fill=tuple(int(c) for c in rng.integers(0, 255, 3))
            )
        path = folder / f"g{seed}_{i:06d}.jpg"
        img.save(path, quality=85)
        out.append(path)
    return out


def build_store(tmp: Path, model: str, real: int, items: int) -> tuple[Path, Path]:
    """The store (real photos + synthetic items) and the folder of its real photos."""
    import semdb

    photos = tmp / "photos"
    generate_photos(photos, real, seed=1)
    store = tmp / "store"
    t0 = time.perf_counter()
    with semdb.open(store, model=model) as db:
        db.ingest([photos], train_now=True)
        n_syn = max(0, items - db.count())
        if n_syn:
            ids, codes = db.store.load_codes()
            base = db.codec.decode(np.asarray(codes))
            rng = np.random.default_rng(7)
            rows = base[rng.integers(0, len(base), n_syn)] + 0.05 * rng.standard_normal((n_syn, base.shape[1]))
            rows /= np.linalg.norm(rows, axis=1, keepdims=True)
            paths = [f"/bench/d{i % 100:02d}/img_{i:07d}.jpg" for i in range(n_syn)]
            db.add_embeddings(paths, rows.astype(np.float32))
        log(f"store: {db.count()} items ({real} real photos) in {time.perf_counter() - t0:.1f} s")
    return store, photos


# --- the server ---------------------------------------------------------------------------------


def start_server(store: Path, watch: Path, log_path: Path) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "semdb.cli", "serve", "--store", str(store), "--port", "0"]
    cmd += ["--watch", str(watch), "--settle", "1", "--rescan", "0"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"semdb serve exited {proc.returncode}: {log_path.read_text()}")
        try:
            facts = json.loads((store / "serve.json").read_text())
            if facts.get("pid") == proc.pid:
                return proc, facts["port"]
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("semdb serve did not start in 600 s")


def proc_facts(pid: int) -> dict:
    """RSS (MiB), open file descriptors and CPU seconds of a process (Linux /proc)."""
    rss = 0.0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return {
        "rss_mb": round(rss, 1),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "cpu_s": round((int(fields[11]) + int(fields[12])) / ticks, 2),
    }


class Client:
    """One kept-alive HTTP connection; (status, seconds, body) per request, reconnecting."""

    def __init__(self, port: int, timeout: float = 60):
        self.port, self.timeout, self.conn = port, timeout, None

    def get(self, target: str) -> tuple[int, float, bytes]:
        t = time.perf_counter()
        for attempt in (0, 1):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                self.conn.request("GET", target)
                resp = self.conn.getresponse()
                body = resp.read()
                if resp.getheader("connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return resp.status, time.perf_counter() - t, body
            except (http.client.HTTPException, ConnectionError, TimeoutError, OSError):
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
                if attempt:
                    return 0, time.perf_counter() - t, b""
        return 0, time.perf_counter() - t, b""


def request_mix(rng: random.Random, n_items: int, photos: Path):
    """Endless (kind, target) of the three kinds, in turn."""
    kinds = ("text", "like", "filtered")
    i = 0
    while True:
        kind = kinds[i % 3]
        i += 1
        text = f"a photo of a {rng.choice(WORDS)} and a {rng.choice(WORDS)}"
        if kind == "text":
            q = {"q": text, "k": 24}
        elif kind == "like":
            q = {"like": rng.randint(1, n_items), "k": 24}
        elif rng.random() < 0.5:
            q = {"q": text, "k": 24, "under": f"/bench/d{rng.randrange(100):02d}"}
        else:
            q = {"q": text, "k": 24, "under": str(photos)}
        yield kind, "/api/search?" + urllib.parse.urlencode(q)


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.ms: dict[str, list[float]] = {}
        self.errors: dict[str, int] = {}
        self.samples: list[str] = []
        self.answered: list[tuple[float, str, int, float]] = []  # (monotonic time answered, kind, status, ms)

    def add(self, kind: str, status: int, seconds: float, body: bytes):
        with self.lock:
            self.answered.append((time.monotonic(), kind, status, 1000 * seconds))
            if status == 200:
                self.ms.setdefault(kind, []).append(1000 * seconds)
            else:
                self.errors[kind] = self.errors.get(kind, 0) + 1
                if len(self.samples) < 5:
                    self.samples.append(f"{kind} {status} {body[:120]!r}")

    def until(self, end: float) -> Tally:
        """The requests answered by monotonic time `end`."""
        part = Tally()
        for t, kind, status, ms in self.answered:
            if t <= end:
                part.add(kind, status, ms / 1000, b"")
        return part

    def report(self) -> dict:
        out = {}
        for kind in sorted(set(self.ms) | set(self.errors)):
            ms = sorted(self.ms.get(kind, []))
            out[kind] = {
                "n": len(ms),
                "errors": self.errors.get(kind, 0),
                **({"p50_ms": pct(ms, 0.5), "p95_ms": pct(ms, 0.95), "p99_ms": pct(ms, 0.99)} if ms else {}),
            }
        everything = sorted(m for ms in self.ms.values() for m in ms)
        out["all"] = {
            "n": len(everything),
            "errors": sum(self.errors.values()),
            **(
                {"p50_ms": pct(everything, 0.5), "p95_ms": pct(everything, 0.95), "p99_ms": pct(everything, 0.99)}
                if everything
                else {}
            ),
        }
        if self.samples:
            out["error_samples"] = self.samples
        return out


def pct(sorted_ms: list[float], q: float) -> float:
    return round(sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))], 1)


def run_clients(port, n_items, photos, clients: int, seconds: float, rate: float | None = None, seed=0) -> dict:
    """`clients` threads sending the mix for `seconds`; `rate`: requests per second in all (paced)."""
    return client_tally(port, n_items, photos, clients, seconds, rate, seed).report()


def client_tally(port, n_items, photos, clients: int, seconds: float, rate: float | None = None, seed=0) -> Tally:
    tally = Tally()
    end = time.monotonic() + seconds

    def loop(i):
        rng = random.Random(seed * 1000 + i)
        client = Client(port)
        interval = clients / rate if rate else 0
        next_at = time.monotonic() + rng.random() * interval
        for kind, target in request_mix(rng, n_items, photos):
            if interval:
                pause = next_at - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                next_at += interval
            if time.monotonic() >= end:
                return
            tally.add(kind, *client.get(target))

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)
    return tally


def watch_status(port) -> dict:
    status, _, body = Client(port).get("/api/status")
    return json.loads(body) if status == 200 else {}


# --- phases -------------------------------------------------------------------------------------


def phase_load(args, port, pid, n_items, photos, watch: Path, staged: Path) -> dict:
    log(f"load: {args.clients} clients for {args.seconds} s, watcher idle")
    idle = run_clients(port, n_items, photos, args.clients, args.seconds, seed=1)
    before = watch_status(port)
    log(f"load: {args.clients} clients for {args.seconds} s while {args.ingest} photos arrive in the watched folder")
    t0 = time.monotonic()
    shutil.copytree(staged, watch / "arrived")
    copy_s = time.monotonic() - t0
    cpu0 = proc_facts(pid)["cpu_s"]
    indexed = {}  # when the last photo was committed (monotonic)
    target = before.get("added", 0) + args.ingest
    watching = threading.Thread(
        target=_time_indexing, args=(port, target, indexed, args.seconds + args.drain_timeout), daemon=True
    )
    watching.start()
    tally = client_tally(port, n_items, photos, args.clients, args.seconds, seed=2)
    busy = tally.report()
    after = watch_status(port)
    committed = after.get("added", 0) - before.get("added", 0)
    log("load: waiting (bounded) for the watcher to finish the photos")
    deadline = time.monotonic() + args.drain_timeout
    while time.monotonic() < deadline and watch_status(port).get("added", 0) - before.get("added", 0) < args.ingest:
        time.sleep(1)
    done = watch_status(port)
    watching.join(5)
    indexing_s = indexed["at"] - t0 if "at" in indexed else None
    return {
        "idle_watcher": idle,
        "during_watch_ingest": busy,
        # the window's requests answered before the last photo was committed
        "while_indexing": tally.until(indexed.get("at", float("inf"))).report(),
        "ingest": {
            "photos": args.ingest,
            "copy_seconds": round(copy_s, 1),
            "committed_in_window": committed,
            "committed_total": done.get("added", 0) - before.get("added", 0),
            "seconds_to_all": None if indexing_s is None else round(indexing_s, 1),
            "server_cpu_s_in_window": round(proc_facts(pid)["cpu_s"] - cpu0, 1),
        },
    }


def _time_indexing(port: int, target: int, out: dict, timeout: float) -> None:
    """Poll /api/status until `target` photos were added since the start: out["at"] = when."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if watch_status(port).get("added", 0) >= target:
            out["at"] = time.monotonic()
            return
        time.sleep(0.25)


def phase_idle(port, pid, seconds=10.0) -> dict:
    """CPU of the server over `seconds` of nothing, once the watcher's start rescan is done."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not (
        (s := watch_status(port)).get("rescans", 0) >= 1 and s.get("state") == "idle"
    ):
        time.sleep(0.5)
    a = proc_facts(pid)
    time.sleep(seconds)
    b = proc_facts(pid)
    return {
        "seconds": seconds,
        "cpu_s": round(b["cpu_s"] - a["cpu_s"], 3),
        "cpu_percent": round(100 * (b["cpu_s"] - a["cpu_s"]) / seconds, 2),
    }


def phase_soak(args, port, pid, n_items, photos) -> dict:
    """The mix at a steady rate; the server's RSS and open fds sampled each minute (the first
    minute warms what a server keeps per store: the index, what filters read, caches)."""
    log(f"soak: {args.soak_rate} requests/s for {args.soak_minutes} min")
    start = proc_facts(pid)
    samples, stop = [], threading.Event()

    def sample():
        while not stop.wait(60):
            samples.append(proc_facts(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = run_clients(port, n_items, photos, 4, 60 * args.soak_minutes, rate=args.soak_rate, seed=3)
    stop.set()
    sampler.join(5)
    end = proc_facts(pid)
    return {
        "rate_per_s": args.soak_rate,
        "minutes": args.soak_minutes,
        "start": start,
        "end": end,
        "rss_mb_each_minute": [s["rss_mb"] for s in samples],
        "fds_each_minute": [s["fds"] for s in samples],
        "requests": out,
    }


def phase_thumbs(args, port, photos) -> dict:
    log(f"thumbs: {args.thumbs} concurrent thumbnail requests of one result page")
    q = urllib.parse.urlencode({"q": "a photo", "k": args.thumbs, "under": str(photos)})
    status, _, body = Client(port).get("/api/search?" + q)
    ids = [h["id"] for h in json.loads(body)["hits"]] if status == 200 else []
    results = [None] * len(ids)
    gate = threading.Barrier(len(ids) + 1) if ids else None

    def one(i, item_id):
        c = Client(port)
        gate.wait()
        results[i] = c.get(f"/thumb/{item_id}?size=256")

    threads = [threading.Thread(target=one, args=(i, x), daemon=True) for i, x in enumerate(ids)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    if gate:
        gate.wait()
    for t in threads:
        t.join(120)
    wall = time.perf_counter() - t0
    ok = sorted(1000 * r[1] for r in results if r and r[0] == 200)
    return {
        "requests": len(ids),
        "errors": len(ids) - len(ok),
        "wall_s": round(wall, 2),
        **({"p50_ms": pct(ok, 0.5), "p99_ms": pct(ok, 0.99)} if ok else {}),
    }


def raw_request(
    port: int, data: bytes, read_timeout: float = 30, total: int | None = None, header_bytes: int = 0
) -> str:
    """Send raw bytes (then, with `total`, zeros up to `total` bytes of body while the server
    reads them; with `header_bytes`, that many bytes of a header's value, a piece at a time,
    until the server answers) and return the status line (or what happened)."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as s:
        s.sendall(data)
        for _ in range(header_bytes >> 16):
            readable = select.select([s], [], [], 0.01)[0]
            if readable:
                return _status_line(s) or "closed by the server"
            try:
                s.sendall(b"a" * (1 << 16))
            except OSError as e:
                return _status_line(s) or f"connection closed while sending ({type(e).__name__})"
        if total:
            chunk = b"\0" * (1 << 20)
            try:
                for _ in range(total >> 20):
                    s.sendall(chunk)
            except OSError as e:  # the server answered and closed: what it answered is in the buffer
                return _status_line(s) or f"connection closed while sending ({type(e).__name__})"
        return _status_line(s) or "no answer"


def _status_line(s: socket.socket) -> str:
    try:
        head = s.recv(4096)
    except OSError as e:
        return f"no answer ({type(e).__name__})"
    line = head.split(b"\r\n", 1)[0].decode(errors="replace")
    body = head.split(b"\r\n\r\n", 1)[1][:100].decode(errors="replace") if b"\r\n\r\n" in head else ""
    return f"{line} {body}".strip()


def phase_hostile(args, port, pid, n_items, photos) -> dict:
    log("hostile: malformed and hostile requests, a client searching meanwhile")
    before = proc_facts(pid)
    bystander: dict = {}
    stop = threading.Event()

    def keep_searching():
        c, ms, errors = Client(port), [], 0
        mix = request_mix(random.Random(9), n_items, photos)
        while not stop.is_set():
            kind, target = next(mix)
            status, s, _ = c.get(target)
            if status == 200:
                ms.append(1000 * s)
            else:
                errors += 1
        bystander.update(n=len(ms), errors=errors, p50_ms=pct(sorted(ms), 0.5), max_ms=round(max(ms), 1))

    searcher = threading.Thread(target=keep_searching, daemon=True)
    searcher.start()
    host = f"Host: 127.0.0.1:{port}\r\n".encode()
    deep = " + ".join(["a"] * 250)  # 250 terms in 997 characters (the text limit is 1,000)
    cases = [
        ("huge k (k=1000000000)", lambda: get_status(port, "/api/search?q=cat&k=1000000000")),
        ("k=-1", lambda: get_status(port, "/api/search?q=cat&k=-1")),
        ("bad UTF-8 in the query (%ff%fe)", lambda: get_status(port, "/api/search?q=%ff%fe%fd")),
        (
            "raw bad UTF-8 bytes in the target",
            lambda: raw_request(port, b"GET /api/search?q=\xff\xfe HTTP/1.1\r\n" + host + b"\r\n"),
        ),
        (
            "deep query arithmetic (250 terms)",
            lambda: get_status(port, "/api/search?" + urllib.parse.urlencode({"q": deep})),
        ),
        ("a 100,000-character query", lambda: get_status(port, "/api/search?q=" + "a" * 100_000)),
        ("like=99999999999999999999", lambda: get_status(port, "/api/similar/99999999999999999999")),
        ("offset=10**12 in the listing", lambda: get_status(port, "/api/items?offset=1000000000000")),
        (
            "a 16 MB header (sent in 64 KB pieces)",
            lambda: raw_request(port, b"GET /api/info HTTP/1.1\r\n" + host + b"X-Big: ", header_bytes=16 << 20),
        ),
        (
            "a 64 KB header",
            lambda: raw_request(port, b"GET /api/info HTTP/1.1\r\n" + host + b"X-Big: " + b"a" * 65536 + b"\r\n\r\n"),
        ),
        (
            "a 200 MB upload (Content-Length declared, body sent)",
            lambda: raw_request(
                port,
                b"POST /api/search HTTP/1.1\r\n"
                + host
                + b"Content-Type: image/jpeg\r\nContent-Length: 209715200\r\n\r\n",
                total=200 << 20,
            ),
        ),
        (
            "a 200 MB chunked upload (no Content-Length)",
            lambda: raw_request(
                port,
                b"POST /api/search HTTP/1.1\r\n"
                + host
                + b"Content-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b"100000\r\n",
                total=200 << 20,
            ),
        ),
        ("an upload that is not an image", lambda: post_status(port, b"not an image at all" * 100)),
    ]
    results = []
    for name, fn in cases:
        t = time.perf_counter()
        try:
            got = fn()
        except Exception as e:  # what the client met is the answer
            got = f"{type(e).__name__}: {e}"
        results.append({"request": name, "got": got[:160], "seconds": round(time.perf_counter() - t, 2)})
        log(f"  {name}: {got[:100]} ({results[-1]['seconds']} s)")
    results.append(slow_clients(port, args.slow_clients, args.slow_seconds))
    log(f"  {results[-1]['request']}: {results[-1]['got']}")
    stop.set()
    searcher.join(120)
    after = proc_facts(pid)
    return {"cases": results, "bystander_client": bystander, "server_before": before, "server_after": after}


def get_status(port: int, target: str) -> str:
    status, _, body = Client(port).get(target)
    return f"{status} {body[:100].decode(errors='replace')}"


def post_status(port: int, data: bytes) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", "/api/search", body=data, headers={"Content-Type": "image/jpeg"})
        resp = conn.getresponse()
        return f"{resp.status} {resp.read()[:100].decode(errors='replace')}"
    finally:
        conn.close()


def slow_clients(port: int, n: int, seconds: float) -> dict:
    """n connections that send half a request line and hold it open `seconds` (a slow or
    malicious client), while a normal request is timed; what the slow ones got at the end."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /api/search?q=ca")
        socks.append(s)
    time.sleep(seconds / 2)
    status, took, _ = Client(port).get("/api/search?q=cat")
    time.sleep(seconds / 2)
    answers: dict[str, int] = {}
    for s in socks:
        s.settimeout(0.5)
        try:
            got = s.recv(200)
            key = got.split(b"\r\n", 1)[0].decode(errors="replace") if got else "closed by the server"
        except TimeoutError:
            key = "still open, no answer"
        except OSError as e:
            key = f"closed ({type(e).__name__})"
        answers[key] = answers.get(key, 0) + 1
        s.close()
    return {
        "request": f"{n} slow clients holding half a request line for {seconds:.0f} s",
        "got": f"{answers}; a normal search meanwhile: {status} in {1000 * took:.0f} ms",
        "seconds": seconds,
    }


def phase_burst(args, tmp: Path, model: str) -> dict:
    """`semdb watch` alone on an empty folder into a new store, then --burst small photos copied
    in at once: time until all are stored, the watcher's peak RSS, and its RSS along the way."""
    import semdb

    src, folder, store = tmp / "burst-src", tmp / "burst", tmp / "burst-store"
    generate_photos(src, args.burst, seed=3, size=(96, 72))
    folder.mkdir()
    cmd = [sys.executable, "-m", "semdb.cli", "watch", str(folder), "--store", str(store), "--model", model]
    proc = subprocess.Popen(
        [*cmd, "--settle", "1", "--rescan", "0"], stdout=open(tmp / "burst.log", "wb"), stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 300
        while "watching" not in (tmp / "burst.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(3)  # its start rescan (of the empty folder) done: the photos come as events
        rss_start = proc_facts(proc.pid)["rss_mb"]
        log(f"burst: {args.burst} photos copied into a folder `semdb watch` watches")
        t0 = time.monotonic()
        shutil.copytree(src, folder / "card")
        rss, count = [], 0
        deadline = time.monotonic() + args.drain_timeout
        while count < args.burst and time.monotonic() < deadline:
            time.sleep(2)
            rss.append(proc_facts(proc.pid)["rss_mb"])
            with semdb.open(store, readonly=True) as db:
                count = db.count()
        seconds = time.monotonic() - t0
        with open(f"/proc/{proc.pid}/status") as f:
            hwm = next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    lines = (tmp / "burst.log").read_text().splitlines()
    return {
        "photos": args.burst,
        "stored": count,
        "seconds": round(seconds, 1),
        "rss_mb_start": rss_start,
        "rss_mb_max_sampled": max(rss, default=0),
        "peak_rss_mb": round(hwm, 1),
        "batches_said": sum("watch: indexed" in line for line in lines),
        "exit_code": proc.returncode,
        "last_lines": lines[-3:],
    }


# --- main ---------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny", help="tiny (random init) | vit-b-32 (random init) | any semdb model")
    ap.add_argument("--items", type=int, default=100_000, help="items in the store (real photos + synthetic)")
    ap.add_argument("--real", type=int, default=240, help="real (generated) photo files in the store")
    ap.add_argument("--seconds", type=float, default=60, help="each load run")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--ingest", type=int, default=3000, help="photos arriving in the watched folder during load")
    ap.add_argument("--drain-timeout", type=float, default=600, help="seconds to wait for the watcher after load")
    ap.add_argument("--soak-minutes", type=float, default=10)
    ap.add_argument("--soak-rate", type=float, default=20, help="requests per second during the soak")
    ap.add_argument("--thumbs", type=int, default=200)
    ap.add_argument("--slow-clients", type=int, default=50)
    ap.add_argument("--slow-seconds", type=float, default=30, help="past the server's 20 s header deadline")
    ap.add_argument("--burst", type=int, default=10_000, help="photos of the burst phase (`semdb watch` alone)")
    ap.add_argument("--idle-seconds", type=float, default=30, help="the idle CPU measurement")
    ap.add_argument("--phases", default="load,idle,soak,thumbs,hostile")
    args = ap.parse_args(argv)
    phases = set(args.phases.split(","))

    tmp = Path(tempfile.mkdtemp(prefix="semdb_serve_load_"))
    server = None
    try:
        load = os.getloadavg()
        log(f"host: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        model, desc = resolve_model_arg(args.model, tmp)
        store, photos = build_store(tmp, model, args.real, args.items)
        if "burst" in phases:
            res_burst = phase_burst(args, tmp, model)
        staged = tmp / "arriving"
        if "load" in phases:
            t0 = time.perf_counter()
            generate_photos(staged, args.ingest, seed=2)
            log(f"{args.ingest} photos to arrive generated in {time.perf_counter() - t0:.1f} s")
        watch = tmp / "watched"
        watch.mkdir()
        server, port = start_server(store, watch, tmp / "serve.log")
        n_items = watch_status(port).get("items", args.items)
        res = {"model": desc, "items": n_items, "cores": os.cpu_count(), "load_avg_start": [round(x, 2) for x in load]}
        res["server_start"] = proc_facts(server.pid)
        if "burst" in phases:
            res["burst"] = res_burst
        if "idle" in phases:
            res["idle_watcher_cpu"] = phase_idle(port, server.pid, args.idle_seconds)
        if "load" in phases:
            res["load"] = phase_load(args, port, server.pid, n_items, photos, watch, staged)
        if "soak" in phases:
            res["soak"] = phase_soak(args, port, server.pid, n_items, photos)
        if "thumbs" in phases:
            res["thumbs"] = phase_thumbs(args, port, photos)
        if "hostile" in phases:
            res["hostile"] = phase_hostile(args, port, server.pid, n_items, photos)
        res["server_end"] = proc_facts(server.pid)
        res["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
        print(json.dumps(res), flush=True)
        return 0
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
        if server is not None:
            log((tmp / "serve.log").read_text()[-2000:])
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
