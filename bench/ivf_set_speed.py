"""Query time of a codec-set store with an IVF per codec, against its full scan and one codec's,
side by side (single thread).

    python bench/ivf_set_speed.py [--n 1000000] [--codecs 2] [--bits 256] [--queries 100] [--rounds 3]

n synthetic CLIP-like embeddings (bench/scan_speed.py's, drawn and encoded half a million at a
time, so that n may be larger than memory's floats) are split into `codecs` equal parts, each
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
CHUNK = 500_000  # embeddings drawn, encoded and searched exactly at a time: n may exceed memory's floats


def encode(n: int, parts: int, bits: int, Q: np.ndarray, k: int):
    """Draw n embeddings chunk by chunk; encode them with one codec (trained on the first TRAIN)
    and with `parts` codecs (each trained on the first TRAIN of its own equal share of the rows);
    keep only the codes and the float top k of each query. Returns ((codec, codes), [(codec,
    codes) per part], the float top-k ids, what the embeddings are drawn like)."""
    per_part = n // parts
    chunk = min(CHUNK, per_part)
    if n % parts or per_part % chunk:
        raise SystemExit(f"--n {n} must split into {parts} parts of whole chunks of {chunk}")
    one, mine, source = None, [], None
    one_codes, part_codes = [], [[] for _ in range(parts)]
    top_s, top_i = np.full((len(Q), k), -np.inf, np.float32), np.full((len(Q), k), -1, np.int64)
    for i, start in enumerate(range(0, n, chunk)):
        X, source = synthetic(chunk, seed=2 + i)
        p = start // per_part
        if one is None:
            one = Codec.train(X[:TRAIN], bits=bits, seed=0)
        if len(mine) == p:
            mine.append(Codec.train(X[:TRAIN], bits=bits, seed=0))
        one_codes.append(one.encode(X))
        part_codes[p].append(mine[p].encode(X))
        S = np.concatenate([top_s, Q @ X.T], axis=1)
        ids = np.concatenate([top_i, np.broadcast_to(np.arange(start, start + chunk), (len(Q), chunk))], axis=1)
        best = np.argsort(-S, axis=1)[:, :k]
        top_s, top_i = np.take_along_axis(S, best, 1), np.take_along_axis(ids, best, 1)
    codes = [(c, np.concatenate(cc)) for c, cc in zip(mine, part_codes)]
    return (one, np.concatenate(one_codes)), codes, top_i, source


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
    Q, _ = synthetic(args.queries, seed=1)
    one, parts, truth, source = encode(args.n, args.codecs, args.bits, Q, args.k)
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
