"""One store against the same items in N shards on a local multi-node Ray cluster, side by side.

    python bench/sharded_search.py [--n 1000000] [--shards 3] [--queries 100] [--train-n 20000]
                                   [--pool 100000] [--k 10]

Items: n synthetic 256-bit codes drawn like bench/ivf_speed.py's (a codec trained on --train-n
Gaussian draws with real CLIP ViT-B/32 statistics; --pool of them encoded, the n codes drawn
column by column from the pool), written once as an Arrow table and imported through the
public import path: all n into one store, contiguous slices into --shards stores (each import
carries the same codec). Queries: --queries more draws (vector queries: no model is loaded).

Timed per query (median and p90 ms, one query at a time, one FAISS thread everywhere):
- local: query.Searcher over the one store, in this process (the exhaustive scan + rerank);
- serve 1: the one store as a single shard behind the Ray Serve router (the serving overhead);
- serve N: the N shards behind the router, each shard's replica on its own 1-CPU node.
The hits of serve 1 and serve N are compared with local's: identical lists (same paths,
scores within 1e-5; the router cuts the union of the shards' shortlists as the one store's scan
cuts its own, semdb.cluster.merge), and lists at least as good (every rank's score >= local's).
Also recall@k of each against the exact top k (every code scored in float). The last line is JSON.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one FAISS thread here and in every Ray worker

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ivf_speed import resampled_codes  # noqa: E402
from scan_speed import synthetic  # noqa: E402

import semdb  # noqa: E402
from semdb import Codec  # noqa: E402


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def table_of(codec, codes):
    """An export-format Arrow table of these codes (paths /bench/dNNN/img_NNNNNNNN.jpg)."""
    import pyarrow as pa

    from semdb import arrow

    n = len(codes)
    idx = np.arange(n)
    now = pa.array(np.full(n, 1_700_000_000_000_000, np.int64), pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    cols = {
        "id": pa.array(idx + 1, pa.uint64()),
        "path": pa.array([f"/bench/d{i % 1000:03d}/img_{i:08d}.jpg" for i in idx], pa.string()),
        "path_bytes": pa.nulls(n, pa.binary()),
        "size": pa.array(np.full(n, 100_000), pa.uint64()),
        "mtime": pa.array(np.full(n, 1_700_000_000 * 10**9, np.int64)).cast(pa.timestamp("ns", tz="UTC")),
        "hash": pa.array([f"{i:032x}" for i in idx], pa.string()),
        "width": pa.array(np.full(n, 640), pa.uint32()),
        "height": pa.array(np.full(n, 480), pa.uint32()),
        "added": now,
        "updated": now,
        "code": pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(codec.code_bytes), n, [None, pa.py_buffer(np.ascontiguousarray(codes).tobytes())]
        ),
        "taken": now,
    }
    meta = arrow.make_meta(
        codec.id, codec.code_bytes, {"name": "ViT-B-32", "pretrained": "synthetic", "dim": codec.dim}, codec.to_bytes()
    )
    sch = arrow.schema(codec.code_bytes, meta)
    return pa.Table.from_arrays([cols[f.name] for f in sch], schema=sch)


def timed(fn, queries):
    times, hits = [], []
    for q in queries:
        t = time.perf_counter()
        hits.append(fn(q))
        times.append((time.perf_counter() - t) * 1e3)
    return {"median_ms": round(float(np.median(times)), 3), "p90_ms": round(float(np.percentile(times, 90)), 3)}, hits


def exact_top_k(searcher, Q, k, chunk=200_000):
    """Every code scored in float (the rerank's exact score) for every query: the exact top k."""
    from semdb.search import Hit

    ids, index = searcher.index()
    best_s = np.full((len(Q), 0), -np.inf, np.float32)
    best_r = np.zeros((len(Q), 0), np.int64)
    for a in range(0, len(ids), chunk):
        rows = np.arange(a, min(a + chunk, len(ids)))
        S = np.concatenate([best_s, index.exact_scores(Q, rows)], axis=1)
        R = np.concatenate([best_r, np.broadcast_to(rows, (len(Q), len(rows)))], axis=1)
        top = np.argsort(-S, axis=1, kind="stable")[:, :k]
        best_s, best_r = np.take_along_axis(S, top, 1), np.take_along_axis(R, top, 1)
    return [
        [Hit(it.path, float(sc), int(it.id)) for it, sc in zip(searcher.ctx.store.items(ids[r]), s)]
        for r, s in zip(best_r, best_s)
    ]


def at_least_as_good(a, b) -> bool:
    return len(a) == len(b) and all(x.score >= y.score - 1e-5 for x, y in zip(a, b))


def recall(hits, exact) -> float:
    return float(
        np.mean([len({h.path for h in a} & {h.path for h in b}) / max(len(b), 1) for a, b in zip(hits, exact)])
    )


def same(a, b) -> bool:
    return [h.path for h in a] == [h.path for h in b] and np.allclose(
        [h.score for h in a], [h.score for h in b], atol=1e-5, rtol=0
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--shards", type=int, default=3)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--train-n", type=int, default=20_000)
    ap.add_argument("--pool", type=int, default=100_000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--tmp", default=None, help="folder for the stores (default: a temp dir)")
    args = ap.parse_args()

    import faiss
    import ray
    from ray.cluster_utils import Cluster as RayCluster

    from semdb.cluster import Cluster
    from semdb.context import StoreContext
    from semdb.search.request import SearchRequest
    from semdb.search.searcher import Searcher
    from semdb.store import Store

    faiss.omp_set_num_threads(1)
    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="semdb-sharded-"))
    t = time.perf_counter()
    X, source = synthetic(args.train_n, seed=5)
    codec = Codec.train(X, bits=256, seed=0)
    log(f"codec trained on {args.train_n} ({source}) in {time.perf_counter() - t:.1f} s")
    pool = codec.encode(synthetic(args.pool, seed=1)[0])
    codes = resampled_codes(codec, pool, args.n)
    table = table_of(codec, codes)
    del pool, codes
    build = {}
    t = time.perf_counter()
    with semdb.open(tmp / "one") as db:  # (an import of the same rows again adds nothing)
        db.import_arrow(table)
    build["one_store_s"] = round(time.perf_counter() - t, 1)
    bounds = np.linspace(0, args.n, args.shards + 1).astype(int)
    shards = []
    t = time.perf_counter()
    for j in range(args.shards):
        with semdb.open(tmp / f"shard{j}") as db:
            db.import_arrow(table.slice(bounds[j], bounds[j + 1] - bounds[j]))
        shards.append(tmp / f"shard{j}")
    build["shards_s"] = round(time.perf_counter() - t, 1)
    with semdb.open(tmp / "one", readonly=True) as db:
        build["bytes_per_item_on_disk"] = round(db.info()["bytes_on_disk"] / args.n, 1)
    log(f"stores built: {build}")
    del table
    Q = synthetic(args.queries, seed=2)[0]

    local = Searcher(StoreContext(Store(tmp / "one", readonly=True)))
    local.index()  # warm, as a serving shard is
    result = {
        "n": args.n,
        "shards": args.shards,
        "k": args.k,
        "queries": args.queries,
        "build": build,
        "load_before": os.getloadavg(),
    }
    result["local"], ref = timed(lambda q: local.search(SearchRequest(vector=q, k=args.k))[0], Q)
    exact = exact_top_k(local, Q, args.k)
    result["local"]["recall_vs_exact"] = round(recall(ref, exact), 4)
    log("local", result["local"])

    nodes = RayCluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for _ in range(args.shards):
        nodes.add_node(num_cpus=1)
    ray.init(address=nodes.address, include_dashboard=False, log_to_driver=False)
    try:
        for label, stores in (("serve_1", [tmp / "one"]), (f"serve_{args.shards}", shards)):
            t = time.perf_counter()
            with Cluster.start(stores, name=label.replace("_", ""), text=False, num_cpus=0.2) as c:
                start_s = time.perf_counter() - t
                for q in Q[:5]:  # warm the handles
                    c.search(vector=q, k=args.k)
                stats, hits = timed(lambda q: c.search(vector=q, k=args.k).hits, Q)
                stats["start_s"] = round(start_s, 1)
                stats["nodes"] = len({s.node for s in c.specs})
                stats["same_hits_as_local"] = sum(same(a, b) for a, b in zip(hits, ref))
                stats["at_least_as_good_as_local"] = sum(at_least_as_good(a, b) for a, b in zip(hits, ref))
                stats["recall_vs_exact"] = round(recall(hits, exact), 4)
                result[label] = stats
                log(label, stats)
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()
        nodes.shutdown()
    result["load_after"] = os.getloadavg()
    if not args.tmp:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    n_label = f"serve_{args.shards}"
    result["ratio_serve_n_over_local"] = round(result[n_label]["median_ms"] / result["local"]["median_ms"], 2)
    result["ratio_serve_n_over_serve_1"] = round(result[n_label]["median_ms"] / result["serve_1"]["median_ms"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
