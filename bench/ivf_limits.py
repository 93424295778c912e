"""Why IVF cannot reach 10x at recall@10 0.95 on the synthetic codes (docs/notes/SCALE.md, IVF).

    python bench/ivf_limits.py [--n 1000000] [--queries 300] [--nlist 1024,4096] [--hnsw] [--prefix]

The same synthetic 256-bit codes as bench/ivf_speed.py (a Gaussian with the mean and covariance
of real CLIP embeddings, encoded). Four measurements, each against the exhaustive search's
top 10 (semdb's AdcIndex, the same reference as ivf_speed):
1. coverage: the share of the exhaustive top 10 that lies in the nprobe lists a query visits,
   against the share of the codes those lists hold (an upper bound on any IVF's recall@10 at
   that scan cost), for three ways to build and visit the lists:
   - k-means: every code in its nearest centroid's list, lists visited by <q, c_j> (semdb.search.ivf);
   - spilled (ScaNN's SOAR): every code also in a second list, the one minimising
     ||r'||^2 + lambda <r, r'>^2 / ||r||^2 (r, r': the code's residuals to its first and
     second centroid), so each list holds about twice the codes;
   - spread-aware visiting: lists ranked by <q, c_j> + beta sqrt(sum_i q_i^2 var_ji), the
     list's spread along the query added to its centroid's score;
2. the cost per code and per list of FAISS's IVF fast-scan (semdb's IvfIndex), single thread:
   the same share of the codes scanned in lists of different sizes;
3. with --hnsw, a graph instead of lists: FAISS IndexHNSWFlat (M 32) over the codes' slot
   coordinates (floats in RAM: 4 bytes per coordinate and item), then semdb's exact rerank;
4. with --prefix, a cheaper scan of part of each code: the rank, under the inner product of
   only the P slots of most score variance, of every item of the exhaustive top 10 (100
   queries): how long a shortlist a prefix scan would need to keep them.
The last output line is JSON.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ivf_speed import synthetic_codes  # noqa: E402
from scan_speed import median_ms, recall, synthetic  # noqa: E402

from semdb import Codec  # noqa: E402
from semdb.search.adc import adc_lut  # noqa: E402
from semdb.search.index import codec_index  # noqa: E402
from semdb.search.ivf import Assigner, train_centroids  # noqa: E402

NPROBE_FRACTIONS = (1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4)


def coverage(Q, C, ref, assigned, nlist, score=None):
    """[(nprobe, covered share of ref, scanned share of the codes)] for lists `assigned` (a list
    of (n,) arrays: each code is in every one of them), visited by `score` (nq, nlist)."""
    sizes = sum(np.bincount(a, minlength=nlist) for a in assigned)
    order = np.argsort(-(Q @ C.T if score is None else score), axis=1)
    out = []
    for f in NPROBE_FRACTIONS:
        p = max(1, int(nlist * f))
        probed = np.zeros((len(Q), nlist), bool)
        np.put_along_axis(probed, order[:, :p], True, axis=1)
        hit = np.zeros(ref.shape, bool)
        for a in assigned:
            hit |= np.take_along_axis(probed, a[ref], axis=1)
        out.append(
            (
                p,
                round(float(hit.mean()), 3),
                round(float(sizes[order[:, :p]].sum(1).mean() / sizes.sum() * len(assigned)), 4),
            )
        )
    return out


def spilled(Z, Cz, first, lam, candidates=16):
    """Each code's second list (SOAR): among its `candidates` nearest centroids other than its first."""
    index = faiss.IndexFlatL2(Z.shape[1])
    index.add(Cz)
    _, near = index.search(Z, candidates)
    R = Z - Cz[first]
    rr = np.maximum((R * R).sum(1), 1e-12)
    best, second = np.full(len(Z), np.inf), first.copy()
    for j in range(candidates):
        c = near[:, j]
        Rp = Z - Cz[c]
        loss = (Rp * Rp).sum(1) + lam * (R * Rp).sum(1) ** 2 / rr
        better = (loss < best) & (c != first)
        best[better], second[better] = loss[better], c[better]
    return second


def prefix_ranks(codec, codes, Q, ref, prefixes=(8, 16, 24, 32)):
    """{P: quantiles (50/90/95/99%) of the ref items' ranks under the score of P slots}."""
    idx = codec.indices(codes)
    lut, _ = adc_lut(Q, codec.tables, codec.tensors["mean"])  # (nq, M, K)
    sample = idx[:200_000]
    var = np.mean(
        [[lut[q, m][sample[:, m]].var() for m in range(idx.shape[1])] for q in range(min(20, len(Q)))], axis=0
    )
    order = np.argsort(-var)  # slots by the variance of their share of the score
    out, S, used = {}, np.zeros((len(Q), len(idx)), np.float32), 0
    for p in sorted(prefixes):
        for m in order[used:p]:
            S += lut[:, m, :][:, idx[:, m]]
        used = p
        ranks = [(S[q][None, :] > S[q][ref[q]][:, None]).sum(1) for q in range(len(Q))]
        out[p] = [int(np.quantile(ranks, f)) for f in (0.5, 0.9, 0.95, 0.99)]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--nlist", default="1024,4096")
    ap.add_argument("--hnsw", action="store_true")
    ap.add_argument("--prefix", action="store_true")
    args = ap.parse_args()

    train, _ = synthetic(50_000, seed=1)
    codec = Codec.train(train, bits=256, seed=0)
    codes = synthetic_codes(codec, args.n)
    Q, _ = synthetic(args.queries, seed=2)
    exhaustive = codec_index(codec, codes)
    ref = exhaustive.search(Q, 10)[0]
    Z = np.concatenate([codec.slot_coords(codes[i : i + 100_000]) for i in range(0, len(codes), 100_000)])
    Z = np.ascontiguousarray(Z, np.float32)
    mean, P = codec.tensors["mean"], codec.decoder
    result = dict(n=args.n, queries=args.queries, coverage={}, per_list={}, hnsw=None, prefix=None)
    if args.prefix:
        result["prefix"] = prefix_ranks(codec, codes, Q[:100], ref[:100])
        for p, q in result["prefix"].items():
            print(f"{p} of {codec.m} slots: ranks of the exhaustive top 10, 50/90/95/99%: {q}", flush=True)

    for nlist in [int(x) for x in args.nlist.split(",")]:
        C = train_centroids(codec, codes, nlist)
        Cz = np.ascontiguousarray((C - mean[None]) @ P, np.float32)  # the centroids in slot coordinates
        first = Assigner(codec, C)(codes).astype(np.int64)
        sizes = np.bincount(first, minlength=nlist)
        var = np.zeros((nlist, Z.shape[1]))
        np.add.at(var, first, (Z - Cz[first]).astype(np.float64) ** 2)
        var /= np.maximum(sizes, 1)[:, None]
        spread = np.sqrt(((Q @ P) ** 2) @ var.T)
        rows = {"k-means": coverage(Q, C, ref, [first], nlist)}
        for lam in (1.0, 2.0):
            rows[f"spilled, lambda {lam:g}"] = coverage(Q, C, ref, [first, spilled(Z, Cz, first, lam)], nlist)
        for beta in (1.0, 2.0):
            rows[f"spread-aware, beta {beta:g}"] = coverage(Q, C, ref, [first], nlist, Q @ C.T + beta * spread)
        result["coverage"][nlist] = rows
        for name, row in rows.items():
            print(
                f"nlist {nlist:5d} {name:24s} " + "  ".join(f"p{p}: {c:.3f} of top 10 / {s:.1%}" for p, c, s in row),
                flush=True,
            )

    faiss.omp_set_num_threads(1)
    result["exhaustive_ms"] = ex_ms = median_ms(lambda q: exhaustive.search(q, 10), Q[:100])
    for nlist in (256, 1024, 4096):
        faiss.omp_set_num_threads(2)
        C = train_centroids(codec, codes, nlist)
        ivf = codec_index(codec, codes, ivf=(C, Assigner(codec, C)(codes)))
        faiss.omp_set_num_threads(1)
        p = nlist // 4
        scanned = float(ivf.list_sizes[np.argsort(-(Q @ C.T), axis=1)[:, :p]].sum(1).mean())
        ms = median_ms(lambda q, ivf=ivf, p=p: ivf.search(q, 10, nprobe=p), Q[:100])
        ms1 = median_ms(lambda q, ivf=ivf: ivf.search(q, 10, nprobe=1), Q[:100])
        result["per_list"][nlist] = dict(
            nprobe=p, codes_scanned=round(scanned), ms=round(ms, 3), ms_nprobe_1=round(ms1, 3)
        )
        print(
            f"IVF nlist {nlist:5d} nprobe {p:4d}: {scanned:,.0f} codes, {ms:.3f} ms (nprobe 1: {ms1:.3f} ms): "
            f"{(ms - ms1) * 1e6 / scanned:.2f} ns per code scanned; exhaustive {ex_ms:.3f} ms",
            flush=True,
        )

    if args.hnsw:
        faiss.omp_set_num_threads(2)
        t = time.perf_counter()
        graph = faiss.IndexHNSWFlat(Z.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = 64
        graph.add(Z)
        result["hnsw"] = dict(build_s=round(time.perf_counter() - t, 1), rows=[])
        faiss.omp_set_num_threads(1)
        short = 74
        for ef in (64, 128, 256):
            graph.hnsw.efSearch = ef

            def search(q):
                _, cand = graph.search(np.ascontiguousarray(q @ P, np.float32), short)
                rows = cand[0][cand[0] >= 0]
                return rows[np.argsort(-exhaustive.exact_scores(q, rows)[0], kind="stable")[:10]]

            got = np.array([search(q[None]) for q in Q])
            ms = median_ms(search, Q[:100])
            result["hnsw"]["rows"].append(dict(ef=ef, recall_at_10=round(recall(ref, got, 10), 3), ms=round(ms, 3)))
            print(
                f"HNSW ef {ef}: recall@10 {recall(ref, got, 10):.3f}, {ms:.3f} ms ({ex_ms / ms:.1f}x the exhaustive)",
                flush=True,
            )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
