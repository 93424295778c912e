"""Query time of a store whose codes are split over a codec set, against one codec, side by side
(single thread).

    python bench/codec_set_speed.py [--n 1000000] [--bits 256] [--sets 1,2,4,8] [--queries 100] [--rounds 5]

n synthetic CLIP-like embeddings (bench/scan_speed.py's: the mean and covariance of real
ViT-B/32 embeddings when ../shared/data is there) are split into equal parts, each encoded by a
codec trained on its own part (one codec per source, as a codec-set store holds them), and
searched as one (semdb.search.index.SetIndex: one ADC table per codec, one merged top k); the
one-codec baseline encodes all n with one codec. Each query runs on every variant in turn, so
that a busy machine slows them alike. Per variant: median ms per single query, its ratio to one codec,
its CPU time (mean; the thread's own, which other work on a busy machine disturbs less) and ratio,
and recall@10 against the float top 10. The last output line is JSON.
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

TRAIN = 20_000  # embeddings each codec trains on


def build(X, parts: int, bits: int):
    """The search index over X's codes, X split into `parts` codecs (one: a plain codec index)."""
    splits = np.array_split(np.arange(len(X)), parts)
    indexes = []
    for rows in splits:
        codec = Codec.train(X[rows[:TRAIN]], bits=bits, seed=0)
        codes = np.concatenate([codec.encode(X[rows[i : i + 100_000]]) for i in range(0, len(rows), 100_000)])
        indexes.append(codec_index(codec, codes))
    return indexes[0] if parts == 1 else SetIndex(indexes)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--bits", type=int, default=256)
    ap.add_argument("--sets", default="1,2,4,8")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    sets = [int(s) for s in args.sets.split(",")]
    X, source = synthetic(args.n + args.queries, seed=1)
    X, Q = X[: args.n], X[args.n :]
    flat = faiss.IndexFlatIP(X.shape[1])
    flat.add(X)
    _, truth = flat.search(Q, args.k)
    indexes = {s: build(X, s, args.bits) for s in sets}
    times = {s: [] for s in sets}  # wall ms per query
    cpu = {s: [] for s in sets}  # this thread's CPU ms per query: what other work on the machine leaves alone
    with threadpool_limits(1):
        faiss.omp_set_num_threads(1)
        for _ in range(args.rounds):
            for q in Q:
                for s in sets:
                    t, c = time.perf_counter(), time.thread_time()
                    indexes[s].search(q[None], args.k)
                    cpu[s].append((time.thread_time() - c) * 1e3)
                    times[s].append((time.perf_counter() - t) * 1e3)
    rows = []
    base, cpu_base = float(np.median(times[sets[0]])), float(np.mean(cpu[sets[0]]))
    for s in sets:
        ms, cpu_ms = float(np.median(times[s])), float(np.mean(cpu[s]))
        found = indexes[s].search(Q, args.k)[0]
        rows.append(
            {
                "codecs": s,
                "ms_per_query": round(ms, 3),
                "vs_one_codec": round(ms / base, 3),
                "cpu_ms_per_query": round(cpu_ms, 3),
                "cpu_vs_one_codec": round(cpu_ms / cpu_base, 3),
                "recall_at_10": round(recall(truth, found, args.k), 3),
            }
        )
        print(
            f"{s} codec(s): {ms:.3f} ms/query, {ms / base:.2f}x one codec; CPU {cpu_ms:.3f} ms, "
            f"{cpu_ms / cpu_base:.2f}x; recall@10 {rows[-1]['recall_at_10']}"
        )
    print(json.dumps({"n": args.n, "bits": args.bits, "data": source, "threads": 1, "rows": rows}))


if __name__ == "__main__":
    main()
