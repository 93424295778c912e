"""Scan speed of semdb's ADC search against FAISS, side by side in one run (single thread).

    python bench/scan_speed.py [--n 1000000] [--bits 256] [--queries 50] [--train-n 100000]

Database: n synthetic embeddings (labelled synthetic) drawn from a Gaussian with the mean and
covariance of the real OpenAI CLIP ViT-B/32 embeddings in ../shared/data (a power-law spectrum
when that folder is absent), L2-normalised. Measured per single query, median milliseconds:
- semdb: LUT + FAISS fast-scan over the packed codes + exact float rerank of the shortlist;
- faiss_flat: IndexFlatIP over the float32 vectors (the uncompressed baseline);
- faiss_pqfs: IndexPQFastScan with 4-bit sub-codes at the same bits (FAISS's fastest PQ scan).
Also codec training time on --train-n embeddings (all cores) and encode throughput, and with
--shortlists 74,300,...: per shortlist size, semdb's ms per query and its recall@k against the
float top k and against the exact cosine top k of every code (the shortlist is cut by the
scan's inner product, the hits ranked by cosine). The last output line is JSON.
"""

import argparse
import json
import os
import time
from pathlib import Path

import faiss
import numpy as np

from semdb import Codec
from semdb.search.index import codec_index  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "embeddings" / "flickr8k_openai_vitb32_images.npz"


def synthetic(n, seed=0, chunk=100_000):
    rng = np.random.default_rng(seed)
    if REAL.exists():
        F = np.load(REAL)["image_emb"].astype(np.float64)
        mean, cov, source = F.mean(0), np.cov((F - F.mean(0)).T), "flickr8k ViT-B/32 mean+covariance"
    else:
        d = 512
        mean, cov, source = np.full(d, 0.03), np.diag(0.02 / np.arange(1, d + 1) ** 0.9), "power-law spectrum"
    L = np.linalg.cholesky(cov + 1e-6 * np.eye(len(mean)))
    out = np.empty((n, len(mean)), np.float32)
    for i in range(0, n, chunk):
        X = mean + rng.standard_normal((min(chunk, n - i), len(mean))) @ L.T
        out[i : i + chunk] = X / np.linalg.norm(X, axis=1, keepdims=True)
    return out, source


def median_ms(fn, queries):
    times = []
    for q in queries:
        t = time.perf_counter()
        fn(q[None])
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def recall(ref, got, k):
    """Mean share of each row of `ref` (top-k ids, -1 padding ignored) found in `got`'s row."""
    return float(np.mean([len(set(a[a >= 0]) & set(b[b >= 0])) / k for a, b in zip(np.asarray(ref), np.asarray(got))]))


def shortlist_recall(codec, codes, index, Q, float_top, k, sizes):
    """Per shortlist size: ms per query, recall@k against the float top k and against the exact
    cosine top k of every code; plus the exact rankings of every code against the float top k."""
    if not sizes:
        return None
    from semdb.search.adc import adc_lut, adc_scores

    rec = lambda a, b: round(recall(a, b, k), 3)  # noqa: E731
    idx = codec.indices(codes)
    norms = np.concatenate([codec.norms(idx[i : i + 100_000]) for i in range(0, len(idx), 100_000)])
    lut, offset = adc_lut(Q, index.tables, index.bias)
    cos_top, ip_top = [], []
    for i in range(len(Q)):
        ip = adc_scores(lut[i : i + 1], offset[i : i + 1], idx)[0]
        cos_top.append(np.argsort(-ip / norms, kind="stable")[:k])
        ip_top.append(np.argsort(-ip, kind="stable")[:k])
    out = dict(
        every_code_cosine_vs_float=rec(cos_top, float_top), every_code_ip_vs_float=rec(ip_top, float_top), rows=[]
    )
    for size in sizes:
        got = index.search(Q, k, shortlist=size)[0]
        ms = median_ms(lambda q, size=size: index.search(q, k, shortlist=size), Q)
        out["rows"].append(
            dict(
                shortlist=size,
                ms=round(ms, 3),
                recall_vs_float=rec(got, float_top),
                recall_vs_every_code_cosine=rec(got, cos_top),
            )
        )
        print(
            f"shortlist {size}: {ms:.2f} ms, recall@{k} {rec(got, float_top):.3f} against the float top {k}, "
            f"{rec(got, cos_top):.3f} against the exact cosine top {k} of every code",
            flush=True,
        )
    print(
        f"every code scored exactly: cosine {out['every_code_cosine_vs_float']:.3f}, inner product "
        f"{out['every_code_ip_vs_float']:.3f} against the float top {k}"
    )
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--bits", type=int, default=256)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--train-n", type=int, default=100_000)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--shortlists", default="", help="e.g. 74,150,300,600: shortlist sizes to compare")
    args = ap.parse_args()

    X, source = synthetic(args.n)
    train, _ = synthetic(args.train_n, seed=1)
    Q, _ = synthetic(args.queries, seed=2)
    print(f"data: {args.n} synthetic embeddings ({source}), {args.bits} bits, k={args.k}", flush=True)

    t = time.perf_counter()
    codec = Codec.train(train, bits=args.bits, seed=0)
    train_s = time.perf_counter() - t
    print(f"codec training on {args.train_n} x {X.shape[1]}: {train_s:.1f} s ({os.cpu_count()} cores)", flush=True)
    t = time.perf_counter()
    codes = codec.encode(X)
    encode_rate = args.n / (time.perf_counter() - t)
    print(f"encode: {encode_rate:,.0f} items/s", flush=True)

    faiss.omp_set_num_threads(1)  # single-thread, single-query comparison from here on
    index = codec_index(codec, codes)
    semdb_ms = median_ms(lambda q: index.search(q, args.k), Q)

    flat = faiss.IndexFlatIP(X.shape[1])
    flat.add(X)
    flat_ms = median_ms(lambda q: flat.search(q, args.k), Q)

    pqfs = faiss.IndexPQFastScan(X.shape[1], args.bits // 4, 4, faiss.METRIC_INNER_PRODUCT)
    pqfs.train(train[:65536])
    pqfs.add(X)
    pqfs_ms = median_ms(lambda q: pqfs.search(q, args.k), Q)

    # How much of the float top-k the codes find (synthetic data: a sanity figure, not accuracy).
    _, ref = flat.search(Q, args.k)
    got, _ = index.search(Q, args.k)
    overlap = recall(ref, got, args.k)

    shortlists = shortlist_recall(
        codec, codes, index, Q, ref, args.k, [int(s) for s in args.shortlists.split(",") if s]
    )
    result = dict(
        n=args.n,
        bits=args.bits,
        data="synthetic",
        k=args.k,
        semdb_ms=round(semdb_ms, 3),
        faiss_flat_ms=round(flat_ms, 3),
        faiss_pqfs_ms=round(pqfs_ms, 3),
        speedup_vs_flat=round(flat_ms / semdb_ms, 2),
        ratio_vs_pqfs=round(semdb_ms / pqfs_ms, 2),
        train_seconds=round(train_s, 1),
        train_n=args.train_n,
        encode_items_per_s=round(encode_rate),
        overlap_at_k_vs_float=round(overlap, 3),
        shortlists=shortlists,
    )
    print(
        f"semdb {semdb_ms:.2f} ms | FAISS flat {flat_ms:.2f} ms ({result['speedup_vs_flat']}x slower) | "
        f"FAISS PQ fast-scan {pqfs_ms:.2f} ms (semdb/pqfs = {result['ratio_vs_pqfs']})"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
