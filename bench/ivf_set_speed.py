"""Query time of a codec-set store with an IVF per codec, against its full scan and one codec's,
side by side (single thread).

    python bench/ivf_set_speed.py [--n 1000000] [--codecs 2] [--bits 256] [--queries 100] [--rounds 3]

n synthetic CLIP-like embeddings (bench/scan_speed.py's) are split into `codecs` equal parts, each
encoded by a codec trained on its own part (as bench/codec_set_speed.py does); one codec encodes
all n for the baseline. Variants: one codec scanning every code; one codec's IVF (nlist for n);
the set scanning every code (semdb.search.index.SetIndex); the set with an IVF per codec (nlist
for its n / codecs codes, as semdb.ingest.ivf_upkeep builds it), each at its default nprobe
(nlist / 4) unless --nprobe. Rounds interleave the variants. Per variant: median ms per query,
CPU ms (mean, this thread's), both against the one-codec scan, and recall@10 against the float
top 10. The last output line is JSON.
"""

import argparse
import json
import time

import faiss
import numpy as np
from scan_speed import recall, synthetic
from threadpoolctl import threadpool_limits

from semdb import Codec
from semdb.search.index import SetIndex, codec_index
from semdb.search.ivf import Assigner, nlist_for, train_centroids

TRAIN = 20_000  # embeddings each codec trains on


def encoded(X, bits: int):
    codec = Codec.train(X[:TRAIN], bits=bits, seed=0)
    return codec, np.concatenate([codec.encode(X[i : i + 100_000]) for i in range(0, len(X), 100_000)])


def with_ivf(codec, codes):
    C = train_centroids(codec, codes, nlist_for(len(codes)))
    return codec_index(codec, codes, ivf=(C, Assigner(codec, C)(codes)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--codecs", type=int, default=2)
    ap.add_argument("--bits", type=int, default=256)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--nprobe", type=int, default=None, help="IVF lists scanned per codec (default nlist / 4)")
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    X, source = synthetic(args.n + args.queries, seed=1)
    X, Q = X[: args.n], X[args.n :]
    flat = faiss.IndexFlatIP(X.shape[1])
    flat.add(X)
    _, truth = flat.search(Q, args.k)
    del flat
    one = encoded(X, args.bits)
    # each part keeps its rows' order, so SetIndex row r is X row r
    parts = [encoded(X[rows], args.bits) for rows in np.array_split(np.arange(args.n), args.codecs)]
    indexes = {
        "one codec, scan": codec_index(*one),
        "one codec, IVF": with_ivf(*one),
        f"{args.codecs} codecs, scan": SetIndex([codec_index(*p) for p in parts]),
        f"{args.codecs} codecs, IVF per codec": SetIndex([with_ivf(*p) for p in parts]),
    }
    probe = {} if args.nprobe is None else {"nprobe": args.nprobe}
    kw = {name: (probe if "IVF" in name else {}) for name in indexes}
    times = {name: [] for name in indexes}
    cpu = {name: [] for name in indexes}
    with threadpool_limits(1):
        faiss.omp_set_num_threads(1)
        for _ in range(args.rounds):
            for name, index in indexes.items():
                for q in Q:
                    t, c = time.perf_counter(), time.thread_time()
                    index.search(q[None], args.k, **kw[name])
                    cpu[name].append((time.thread_time() - c) * 1e3)
                    times[name].append((time.perf_counter() - t) * 1e3)
    base, cpu_base = float(np.median(times["one codec, scan"])), float(np.mean(cpu["one codec, scan"]))
    rows = []
    for name, index in indexes.items():
        ms, cpu_ms = float(np.median(times[name])), float(np.mean(cpu[name]))
        found = index.search(Q, args.k, **kw[name])[0]
        nlists = [p.nlist for p in getattr(index, "parts", [index]) if hasattr(p, "nlist")]
        rows.append(
            {
                "variant": name,
                "nlist": nlists or None,
                "ms_per_query": round(ms, 3),
                "vs_one_codec_scan": round(ms / base, 3),
                "cpu_ms_per_query": round(cpu_ms, 3),
                "cpu_vs_one_codec_scan": round(cpu_ms / cpu_base, 3),
                "recall_at_10": round(recall(truth, found, args.k), 3),
            }
        )
        print(
            f"{name} (nlist {nlists or '-'}): {ms:.3f} ms/query, {ms / base:.2f}x; CPU {cpu_ms:.3f} ms, "
            f"{cpu_ms / cpu_base:.2f}x; recall@10 {rows[-1]['recall_at_10']}"
        )
    facts = {"n": args.n, "codecs": args.codecs, "bits": args.bits, "data": source, "threads": 1}
    print(json.dumps({**facts, "nprobe": args.nprobe, "rows": rows}))


if __name__ == "__main__":
    main()
