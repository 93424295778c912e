"""IVF against the exhaustive scan, side by side in one run (single-thread search).

    python bench/ivf_speed.py [--n 10000000] [--bits 256] [--queries 100] [--train-n 50000]
                              [--nprobe 32,64,128,256] [--nlist N] [--cache /tmp/codes.npy]

Database: n synthetic codes drawn like bench/scan_speed.py's (embeddings from a Gaussian with
the mean and covariance of the real OpenAI CLIP ViT-B/32 embeddings in ../shared/data,
L2-normalised, encoded by a codec trained on --train-n others), generated and encoded in
chunks so that only the codes are held. Queries: --queries more draws (seed 2).
- exhaustive: semdb's AdcIndex (LUT + FAISS fast-scan over every code + exact float rerank);
- ivf: semdb's IvfIndex over the same codes (coarse centroids trained on decoded codes, every
  code assigned to one list), per nprobe: median ms per single query and recall@10 against
  the exhaustive results (the same rerank, so 1.0 means the same top 10).
Also the build: k-means, assignment, index build (seconds) and the index's memory.
Then the real check (when ../shared/data is there): FashionCLIP pairs, seed-0 half split,
codec trained on one half, the other half stored; text->image R@1 exhaustive vs IVF at the
default nprobe and at the other --nprobe values. The last output line is JSON.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scan_speed import recall, synthetic  # noqa: E402

from semdb import Codec  # noqa: E402
from semdb.search.index import codec_index  # noqa: E402
from semdb.search.ivf import Assigner, default_nprobe, nlist_for, train_centroids  # noqa: E402

PAIRS = Path(__file__).resolve().parents[2] / "shared" / "data" / "embeddings" / "shopsphere_fashionclip_pairs.npz"


def synthetic_codes(codec, n, chunk=200_000):
    """Codes of n synthetic embeddings (seed 0 stream, like scan_speed), chunk by chunk."""
    out = np.empty((n, codec.code_bytes), np.uint8)
    for i in range(0, n, chunk):
        X, _ = synthetic(min(chunk, n - i), seed=1000 + i // chunk)
        out[i : i + len(X)] = codec.encode(X)
        print(f"  encoded {i + len(X):,} / {n:,}", flush=True)
    return out


def resampled_codes(codec, pool, n, seed=0, chunk=1_000_000):
    """n codes drawn column by column from `pool` (codes of encoded synthetic embeddings): the
    encoder codes each column of the codec's basis on its own, and the synthetic Gaussian's
    coordinates in that (PCA) basis are uncorrelated, hence independent; so drawing every
    column's sub-codes from a different pool item gives codes distributed as encoding fresh
    draws would, at a fraction of the encoding time. (Only for codecs without a coarse slot.)"""
    from semdb.packing import pack

    assert codec.n_coarse == 0
    rng = np.random.default_rng(seed)
    cols = codec.layout.col
    slots = [np.flatnonzero(cols == c) for c in np.unique(cols)]
    pool_idx = codec.indices(pool).astype(np.uint8)
    out = np.empty((n, codec.code_bytes), np.uint8)
    for i in range(0, n, chunk):
        m = min(chunk, n - i)
        idx = np.empty((m, codec.m), np.int64)
        for S in slots:
            rows = rng.integers(0, len(pool), m)
            idx[:, S] = pool_idx[rows[:, None], S[None, :]]
        out[i : i + m] = pack(idx, codec.nbits)
        print(f"  drawn {i + m:,} / {n:,}", flush=True)
    return out


def real_check(nprobes, k=10):
    if not PAIRS.exists():
        return None
    data = np.load(PAIRS)
    X, T = data["image_emb"].astype(np.float32), data["text_emb"].astype(np.float32)
    perm = np.random.default_rng(0).permutation(len(X))
    train, test = perm[: len(X) // 2], perm[len(X) // 2 :]
    codec = Codec.train(X[train], bits=256, seed=0)
    codes = codec.encode(X[test])
    Q = T[test]
    exhaustive = codec_index(codec, codes)
    nlist = nlist_for(len(codes))
    C = train_centroids(codec, codes, nlist)
    ivf = codec_index(codec, codes, ivf=(C, Assigner(codec, C)(codes)))
    truth = np.arange(len(test))
    r1 = lambda ids: float(np.mean(ids[:, 0] == truth))  # noqa: E731
    out = {
        "items": len(codes),
        "nlist": nlist,
        "default_nprobe": ivf.nprobe,
        "r1_exhaustive": r1(exhaustive.search(Q, k)[0]),
        "r1_ivf": {},
    }
    for p in sorted({ivf.nprobe, nlist // 16, nlist // 8, nlist // 4, nlist}):
        if 0 < p <= nlist:
            out["r1_ivf"][p] = r1(ivf.search(Q, k, nprobe=p)[0])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--bits", type=int, default=256)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--train-n", type=int, default=50_000)
    ap.add_argument("--nlist", type=int, default=None, help="default: semdb.search.ivf.nlist_for(n)")
    ap.add_argument("--nprobe", default="16,32,64,128,256")
    ap.add_argument("--cache", default=None, help="a .npy file (outside the repo) to keep the codes in")
    ap.add_argument(
        "--pool",
        type=int,
        default=None,
        help="encode only this many; draw the n codes column by column from them (resampled_codes)",
    )
    ap.add_argument("-k", type=int, default=10)
    args = ap.parse_args()
    nprobes = [int(p) for p in args.nprobe.split(",")]

    train, source = synthetic(args.train_n, seed=1)
    t = time.perf_counter()
    codec = Codec.train(train, bits=args.bits, seed=0)
    print(
        f"data: {args.n:,} synthetic codes ({source}), {args.bits} bits; codec trained on {args.train_n:,} "
        f"in {time.perf_counter() - t:.0f} s",
        flush=True,
    )
    n_encoded = args.pool or args.n
    cache = Path(args.cache) if args.cache else None
    if (
        cache
        and cache.exists()
        and cache.with_suffix(".codec").exists()
        and Codec.from_bytes(cache.with_suffix(".codec").read_bytes()).id == codec.id
    ):
        codes = np.load(cache, mmap_mode="r")[:n_encoded]
        codes = np.ascontiguousarray(codes) if len(codes) == n_encoded else None
    else:
        codes = None
    if codes is None:
        t = time.perf_counter()
        codes = synthetic_codes(codec, n_encoded)
        print(f"encode: {n_encoded / (time.perf_counter() - t):,.0f} items/s", flush=True)
        if cache:
            np.save(cache, codes)
            cache.with_suffix(".codec").write_bytes(codec.to_bytes())
    if args.pool:
        codes = resampled_codes(codec, codes, args.n)
    Q, _ = synthetic(args.queries, seed=2)

    # Build (k-means and assignment may use every core; the searches below use one thread).
    nlist = args.nlist or nlist_for(args.n)
    t = time.perf_counter()
    C = train_centroids(codec, codes, nlist)
    kmeans_s = time.perf_counter() - t
    t = time.perf_counter()
    lists = Assigner(codec, C)(codes)
    assign_s = time.perf_counter() - t
    print(
        f"ivf: nlist {nlist}, k-means {kmeans_s:.1f} s, assignment {assign_s:.1f} s "
        f"({args.n / assign_s:,.0f} items/s, {os.cpu_count()} cores)",
        flush=True,
    )

    faiss.omp_set_num_threads(1)
    t = time.perf_counter()
    exhaustive = codec_index(codec, codes)
    flat_build_s = time.perf_counter() - t
    t = time.perf_counter()
    ivf = codec_index(codec, codes, ivf=(C, lists))
    ivf_build_s = time.perf_counter() - t
    sizes = ivf.list_sizes
    print(
        f"index build: exhaustive {flat_build_s:.1f} s, ivf {ivf_build_s:.1f} s; list sizes min {sizes.min()} "
        f"median {int(np.median(sizes))} max {sizes.max()}; ivf memory {ivf.memory_bytes() / 2**20:.0f} MiB "
        f"(+ codes {codes.nbytes / 2**20:.0f} MiB for the rerank)",
        flush=True,
    )

    k = args.k
    ref, _ = exhaustive.search(Q, k)
    # Side by side: each query timed on the exhaustive index, then on every nprobe.
    times = {"exhaustive": []}
    got = {}
    for p in nprobes:
        times[p] = []
        got[p] = ivf.search(Q, k, nprobe=p)[0]
    for q in Q:
        for key in times:
            fn = (
                (lambda x: exhaustive.search(x, k))
                if key == "exhaustive"
                else (lambda x, p=key: ivf.search(x, k, nprobe=p))
            )
            s = time.perf_counter()
            fn(q[None])
            times[key].append((time.perf_counter() - s) * 1e3)
    ex_ms = float(np.median(times["exhaustive"]))
    rows = []
    print(f"exhaustive: {ex_ms:.2f} ms per query (k={k}, one thread)")
    for p in nprobes:
        ms = float(np.median(times[p]))
        rec = recall(ref, got[p], k)
        scanned = float(sizes[np.argsort(-(Q @ C.T), axis=1)[:, :p]].sum(1).mean()) / args.n
        rows.append(
            dict(
                nprobe=p,
                ms=round(ms, 3),
                speedup=round(ex_ms / ms, 1),
                recall_at_10=round(rec, 4),
                scanned_fraction=round(scanned, 4),
            )
        )
        print(f"ivf nprobe {p:5d}: {ms:7.3f} ms  {ex_ms / ms:6.1f}x  recall@{k} {rec:.4f}  scans {scanned:.2%}")
    real = real_check(nprobes)
    if real:
        print(
            f"real (FashionCLIP, {real['items']} stored, nlist {real['nlist']}): R@1 exhaustive "
            f"{real['r1_exhaustive']:.3f}, ivf {real['r1_ivf']}"
        )
    result = dict(
        n=args.n,
        bits=args.bits,
        data="synthetic" + (f" (columns drawn from {args.pool:,} encoded)" if args.pool else ""),
        k=k,
        queries=args.queries,
        nlist=nlist,
        default_nprobe=default_nprobe(nlist),
        exhaustive_ms=round(ex_ms, 3),
        ivf=rows,
        kmeans_s=round(kmeans_s, 1),
        assign_s=round(assign_s, 1),
        ivf_build_s=round(ivf_build_s, 1),
        exhaustive_build_s=round(flat_build_s, 1),
        ivf_memory_bytes=ivf.memory_bytes(),
        codes_bytes=int(codes.nbytes),
        real=real,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
