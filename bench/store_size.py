"""Bytes on disk per item of a store built through the public import path, and the time to
open it and answer the first query in a fresh process.

    python bench/store_size.py [--n 1000000] [--bits 256] [--out /tmp/store_size] [--schema1]

Items: n synthetic rows written to one Parquet file in the `semdb export` format (docs/
CLI.md): photo-library paths like /photos/2019/07-Holiday/IMG_153012_0042.jpg (~43
bytes, near the ~30 the issue's 305 B/item figure had; one folder a month for 20 years),
blake2b-128 hex content hashes, file sizes
and times drawn like a camera's, codes drawn like bench/ivf_speed.py's (a codec trained on
synthetic embeddings from bench/scan_speed.py; codes resampled column by column). The file
is merged with `Database.import_parquet` (what `semdb import` runs: one transaction per 4096
rows). Reported: data.mdb st_size / items against the budget code + mean path + 40 bytes;
in a fresh process, Database(store, readonly=True) + the first query_vectors (k=10) and
its get_item of the hits, timed inside the process and as the process's wall time.
--schema1: the same file imported by the semdb of commit 995d13f (schema 1, `git archive`d
into --out) side by side, then the time this semdb takes to migrate that store and the
migrated size. The last output line is JSON.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ivf_speed import resampled_codes  # noqa: E402
from scan_speed import synthetic  # noqa: E402

from semdb import Codec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
V1 = "995d13f"
MODEL = {"name": "ViT-B-32", "pretrained": "openai", "dim": 512, "digest": None}

FIRST_QUERY = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from semdb.api import Database
t1 = time.perf_counter()
with Database(sys.argv[1], readonly=True) as db:
    q = np.load(sys.argv[2])
    hits = db.query_vectors(q, k=10)[0]
    paths = [db.item(h.id).path for h in hits]
    t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "open_and_first_query_s": t2 - t1, "hits": len(paths)}))
"""


def write_parquet(path: Path, codec: Codec, n: int, chunk: int = 100_000) -> float:
    """n synthetic rows as an export-format Parquet file; returns the mean path length."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from semdb import arrow

    rng = np.random.default_rng(0)
    pool, _ = synthetic(20_000, seed=5)
    codes = resampled_codes(codec, codec.encode(pool), n, seed=1)
    sch = arrow.schema(codec.code_bytes, arrow.make_meta(codec.id, codec.code_bytes, MODEL, codec.to_bytes()))
    total_len = 0
    with pq.ParquetWriter(path, sch, compression="zstd") as w:
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            i = np.arange(start, start + m)
            year = 2005 + i * 20 // n  # 20 years of photos, in import order
            month = 1 + (i * 240 // n) % 12
            taken = (
                np.datetime64("2005-01-01", "s").astype(np.int64)
                + i * (20 * 365 * 86400 // n)
                + rng.integers(0, 3600, m)
            )
            stamp = taken.astype("datetime64[s]").astype(str)  # 2019-07-12T15:30:12
            paths = [
                f"/photos/{y}/{mo:02d}-Holiday/IMG_{s[11:13]}{s[14:16]}{s[17:19]}_{k % 10000:04d}.jpg"
                for y, mo, s, k in zip(year.tolist(), month.tolist(), stamp.tolist(), i.tolist())
            ]
            total_len += sum(len(p) for p in paths)
            mtime_ns = (taken + rng.integers(0, 86400 * 30, m)) * 1_000_000_000 + rng.integers(0, 1e9, m)
            added_us = np.full(m, 1_760_000_000_000_000) + start  # one import: nearly equal times
            cols = [
                pa.array(i.astype(np.uint64) + 1),
                pa.array(paths, pa.string()),
                pa.nulls(m, pa.binary()),
                pa.array(rng.integers(800_000, 9_000_000, m).astype(np.uint64)),
                pa.array(mtime_ns, pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
                pa.array([os.urandom(16).hex() for _ in range(m)], pa.string()),
                pa.array(np.full(m, 4032, np.uint32)),
                pa.array(np.full(m, 3024, np.uint32)),
                pa.array(added_us, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                pa.array(added_us, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                pa.FixedSizeBinaryArray.from_buffers(
                    pa.binary(codec.code_bytes), m, [None, pa.py_buffer(codes[start : start + m].tobytes())]
                ),
                pa.array(taken * 1_000_000, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            ]
            w.write_batch(pa.RecordBatch.from_arrays(cols, schema=sch))
    return total_len / n


def first_query(store: Path, query: Path, pythonpath: Path) -> dict:
    t = time.perf_counter()
    # cwd: `python -c` puts it first on sys.path, so it must not hold another semdb
    r = subprocess.run(
        [sys.executable, "-c", FIRST_QUERY, str(store), str(query)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(pythonpath), "SEMDB_STORE": ""},
        cwd=pythonpath,
        check=True,
    )
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = time.perf_counter() - t
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


def per_item(store: Path, n: int) -> float:
    return round((store / "data.mdb").stat().st_size / n, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--bits", type=int, default=256)
    ap.add_argument("--out", type=Path, default=Path("/tmp/store_size"))
    ap.add_argument("--schema1", action="store_true", help="also build it with the schema-1 semdb and migrate it")
    args = ap.parse_args()
    from semdb.api import Database

    args.out.mkdir(parents=True, exist_ok=True)
    X, source = synthetic(20_000, seed=3)
    codec = Codec.train(X, bits=args.bits, seed=0)
    parquet = args.out / f"items_{args.n}.parquet"
    t = time.perf_counter()
    mean_path = write_parquet(parquet, codec, args.n)
    print(
        f"wrote {parquet} ({args.n:,} rows, mean path {mean_path:.1f} B) in {time.perf_counter() - t:.1f} s", flush=True
    )
    query = args.out / "query.npy"
    np.save(query, synthetic(1, seed=9)[0])

    store = args.out / "store"
    shutil.rmtree(store, ignore_errors=True)
    t = time.perf_counter()
    with Database(store) as db:
        summary = db.import_parquet([parquet])
    import_s = time.perf_counter() - t
    budget = codec.code_bytes + mean_path + 40
    result = {
        "n": args.n,
        "bits": args.bits,
        "code_bytes": codec.code_bytes,
        "mean_path_bytes": round(mean_path, 1),
        "budget_bytes_per_item": round(budget, 1),
        "bytes_per_item": per_item(store, args.n),
        "import_s": round(import_s, 1),
        "added": summary["added"],
        "first_query": first_query(store, query, ROOT),
        "embeddings": source,
    }
    print(
        f"schema 2: {result['bytes_per_item']} B/item (budget {budget:.1f}), import {import_s:.1f} s, "
        f"first query {result['first_query']}",
        flush=True,
    )

    if args.schema1:
        v1 = args.out / "semdb_v1"
        if not v1.exists():
            v1.mkdir()
            tar = args.out / "v1.tar"
            tar.write_bytes(
                subprocess.run(["git", "archive", V1, "semdb"], cwd=ROOT, capture_output=True, check=True).stdout
            )
            with tarfile.open(tar) as f:
                f.extractall(v1, filter="data")
        old = args.out / "store_v1"
        shutil.rmtree(old, ignore_errors=True)
        t = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from semdb.api import Database; "
                "db = Database(sys.argv[1]); db.import_parquet([sys.argv[2]]); db.close()",
                str(old),
                str(parquet),
            ],
            env={**os.environ, "PYTHONPATH": str(v1), "SEMDB_STORE": ""},
            cwd=v1,
            check=True,
        )
        v1_import = time.perf_counter() - t
        v1_size = per_item(old, args.n)
        v1_query = first_query(old, query, v1)
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "import sys; from semdb.store import Store; Store(sys.argv[1]).close()", str(old)],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
            check=True,
        )
        result["schema1"] = {
            "bytes_per_item": v1_size,
            "import_s": round(v1_import, 1),
            "first_query": v1_query,
            "migrate_s": round(time.perf_counter() - t, 1),
            "migrated_bytes_per_item": per_item(old, args.n),
        }
        print(
            f"schema 1: {v1_size} B/item, import {v1_import:.1f} s, first query {v1_query}; migrated in "
            f"{result['schema1']['migrate_s']} s to {result['schema1']['migrated_bytes_per_item']} B/item",
            flush=True,
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
