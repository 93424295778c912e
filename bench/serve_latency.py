"""Warm query latency of `semdb serve` against a bare in-process encode + scan (issue 13).

    python bench/serve_latency.py [--model vit-b-32|tiny|MODEL] [--limit 300] [--queries 60]
                                  [--k 10] [--threads N] [--cli-runs 3] [--caltech-tar PATH | --images DIR]

Builds a store of --limit photos (default: a class-balanced pick of the Caltech-101 test
JPEGs in ../shared/data, extracted to a temp dir) with the codec trained on them
(`--train-now`: compressed, as a real store is), starts `semdb serve --port 0` on it, and then,
in one run, times the same --queries distinct texts (class prompts) two ways, interleaved
(the order flips every query, so machine load falls on both alike), after 5 warm-up queries each:

- server: one HTTP GET /api/search?q=TEXT&k=K over a kept-alive connection, JSON parsed
  (what the web page and `semdb query` pay once the server runs);
- bare: in this process, with the same model loaded (`Embedder.encode_texts([text])`) and the
  store open read-only, `Database.search_vectors(q, k)`: encode one text plus the scan, nothing else.

Reports p50 / p90 / mean of each and the ratio of the p50s (target <= 1.3), the server's own
time inside the request ("ms" of the answer), and, with --cli-runs N, the wall time of
`python -m semdb.cli query TEXT` answered by the running server (a new process each time).
Both sides use torch's default threads unless --threads N (passed to the server too).
The model is `vit-b-32`: open_clip's exact ViT-B-32 architecture with random weights, saved as
a local-dir folder (no download). The last output line is JSON.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from ingest_speed import DEFAULT_TAR, log, resolve_model_arg  # noqa: E402

ADJECTIVES = [
    "a photo of",
    "a close-up photo of",
    "a blurry picture of",
    "a drawing of",
    "a bright photo of",
    "an old photo of",
    "a cropped photo of",
    "a photo of the small",
    "a photo of the large",
    "a low-light photo of",
]


def extract_sample(tar_path: str, dest: Path, limit: int, seed: int) -> list[Path]:
    """A class-balanced seeded pick of `limit` JPEGs from the tar, extracted to dest."""
    with tarfile.open(tar_path) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.lower().endswith(".jpg")]
        by_class: dict[str, list] = {}
        for m in members:
            by_class.setdefault(Path(m.name).parent.name, []).append(m)
        rng = random.Random(seed)
        for group in by_class.values():
            rng.shuffle(group)
        picked, i = [], 0
        while len(picked) < min(limit, len(members)):
            for group in by_class.values():
                if i < len(group) and len(picked) < limit:
                    picked.append(group[i])
            i += 1
        try:
            tar.extractall(dest, members=picked, filter="data")
        except TypeError:
            tar.extractall(dest, members=picked)
    return [dest / m.name for m in picked]


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def summary(ms: list[float]) -> dict:
    return {
        "p50_ms": round(statistics.median(ms), 2),
        "p90_ms": round(pct(ms, 0.9), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
        "n": len(ms),
    }


class Client:
    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def search(self, text: str, k: int) -> dict:
        target = "/api/search?" + urllib.parse.urlencode({"q": text, "k": k})
        try:
            self.conn.request("GET", target)
            resp = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionError):  # keep-alive expired: reconnect (timed)
            self.conn.close()
            self.conn.request("GET", target)
            resp = self.conn.getresponse()
        body = json.loads(resp.read())
        if resp.status != 200:
            raise RuntimeError(f"server answered {resp.status}: {body}")
        return body


def start_server(store: Path, threads, log_path: Path) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "semdb.cli", "serve", "--store", str(store), "--port", "0"]
    if threads:
        cmd += ["--threads", str(threads)]
    fh = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 600:
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--images", help="folder of photos (used in place)")
    src.add_argument("--caltech-tar", default=DEFAULT_TAR)
    ap.add_argument("--model", default="vit-b-32", help="vit-b-32 (random init) | tiny | any semdb model string")
    ap.add_argument("--limit", type=int, default=300, help="photos in the store")
    ap.add_argument("--queries", type=int, default=60, help="timed queries on each side")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="torch threads, here and in the server")
    ap.add_argument("--cli-runs", type=int, default=3, help="timed `semdb query` processes answered by the server")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch

    import semdb
    from semdb.clip.embedder import Embedder
    from semdb.images import discover

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="semdb_serve_bench_"))
    server = None
    try:
        load = os.getloadavg()
        log(
            f"host: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
            f"torch threads {torch.get_num_threads()}"
        )
        if args.images:
            files = list(discover([Path(args.images)]))[: args.limit]
        else:
            files = extract_sample(args.caltech_tar, tmp / "photos", args.limit, args.seed)
        classes = sorted({p.parent.name.replace("_", " ") for p in files}) or ["thing"]
        model, desc = resolve_model_arg(args.model, tmp)
        emb = Embedder(model)
        log(f"model: {desc} (dim {emb.dim}); {len(files)} photos")
        store = tmp / "store"
        t0 = time.perf_counter()
        with semdb.open(store, embedder=emb) as db:
            facts = db.ingest([str(p) for p in files], train_now=True)
        log(f"ingest: {facts['items']} items in {time.perf_counter() - t0:.1f} s, staged {facts['staged']}")

        rng = random.Random(args.seed)
        combos = [f"{a} {c}" for a in ADJECTIVES for c in classes]  # distinct texts: nothing is cached
        texts = (
            rng.sample(combos, args.queries + 5)
            if len(combos) >= args.queries + 5
            else [f"{combos[i % len(combos)]} {i}" for i in range(args.queries + 5)]
        )

        server, port = start_server(store, args.threads, tmp / "serve.log")
        client = Client(port)
        with semdb.open(store, readonly=True, embedder=emb) as db:

            def bare(text):
                t = time.perf_counter()
                hits = db.search_vectors(emb.encode_texts([text]), k=args.k)[0]
                return 1000 * (time.perf_counter() - t), hits

            def http(text):
                t = time.perf_counter()
                body = client.search(text, args.k)
                return 1000 * (time.perf_counter() - t), body

            for text in texts[:5]:  # warm-up, not timed
                bare(text)
                http(text)
            t_bare, t_http, t_inside, same = [], [], [], 0
            for i, text in enumerate(texts[5:]):
                order = (bare, http) if i % 2 == 0 else (http, bare)
                for fn in order:
                    ms, out = fn(text)
                    if fn is bare:
                        t_bare.append(ms)
                        local = [h.id for h in out]
                    else:
                        t_http.append(ms)
                        t_inside.append(out["ms"])
                        served = [h["id"] for h in out["hits"]]
                same += served == local
        res = {
            "model": desc,
            "items": facts["items"],
            "k": args.k,
            "queries": len(t_bare),
            "torch_threads": torch.get_num_threads(),
            "server_http": summary(t_http),
            "server_inside": summary(t_inside),
            "bare_encode_scan": summary(t_bare),
            "same_hits": same,
        }
        res["ratio_p50"] = round(res["server_http"]["p50_ms"] / res["bare_encode_scan"]["p50_ms"], 3)
        log(f"\nwarm text query, {len(t_bare)} queries each, interleaved, k={args.k}, {facts['items']} items:")
        for name, key in (
            ("server (HTTP GET, JSON)", "server_http"),
            ("  of which inside the server", "server_inside"),
            ("bare encode_texts + query_vectors", "bare_encode_scan"),
        ):
            s = res[key]
            log(f"  {name:36s} p50 {s['p50_ms']:8.2f} ms  p90 {s['p90_ms']:8.2f} ms  mean {s['mean_ms']:8.2f} ms")
        log(
            f"  ratio server / bare (p50): {res['ratio_p50']:.3f} (target <= 1.3); "
            f"same hits in {same} of {len(t_bare)} queries"
        )

        if args.cli_runs:
            walls = []
            for i in range(args.cli_runs):
                t = time.perf_counter()
                out = subprocess.run(
                    [sys.executable, "-m", "semdb.cli", "query", texts[i], "--store", str(store), "--json"],
                    capture_output=True,
                    text=True,
                    timeout=600,
                )
                walls.append(time.perf_counter() - t)
                if out.returncode != 0:
                    raise RuntimeError(out.stderr)
            res["cli_query_via_server_s"] = {
                "p50": round(statistics.median(walls), 3),
                "all": [round(w, 3) for w in walls],
            }
            log(
                f"  `semdb query` (new process) answered by the server: p50 {statistics.median(walls):.2f} s "
                f"over {len(walls)} runs"
            )
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
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
