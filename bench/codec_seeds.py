"""The pair-free codec against FAISS RQ and LSQ at equal bits, averaged over training seeds.

    python bench/codec_seeds.py [--bits 64] [--splits 0,1,2,3] [--train-seeds 6]
                                [--shrinks 0.8,0.9,0.95,0.97,1.0] [--embeddings FILE.npz] [--faiss RQ,LSQ]

At 64 bits one training seed moves text->image R@1 by up to 0.05 on a split, for every method;
`semdb bench` trains each method once per split (FAISS with its default seed). Here, per split
of ../shared/data/embeddings/shopsphere_fashionclip_pairs.npz (the bench's own split and
metrics: R@1 of each held-out image's paired text, kNN@10 of each held-out image), every
method is trained with --train-seeds seeds (--embeddings: another file in the bench's format; without
texts, as flickr8k_openai_vitb32_images.npz, only kNN@10): semdb's `Codec` (S + 100 j; at 64 bits at each
residual-metric shrinkage in --shrinks, 0.95 being the default and 1.0 no image metric), FAISS
RQ{bits/8}x8 (k-means seed 1234 + S + 100 j) and LSQ{bits/8}x8 (2 training iterations as in the
bench; half the seeds, it is slow). Prints each run as JSON, then the per-split means and their mean. One
thread for every library (semdb.threads): FAISS's k-means and the BLAS give other codecs on other thread counts.
"""

import argparse
import json
from pathlib import Path

import faiss
import numpy as np

import semdb.codec.residual as residual_module
from semdb.bench import metrics
from semdb.bench.data import load_embeddings, split_indices
from semdb.codec import Codec
from semdb.rows import unit_rows
from semdb.threads import limited

PAIRS = Path(__file__).resolve().parents[2] / "shared" / "data" / "embeddings" / "shopsphere_fashionclip_pairs.npz"


def faiss_scorer(factory, seed, X_train, X_eval):
    index = faiss.index_factory(X_train.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if factory.startswith("RQ"):
        index.rq.cp.seed = seed
        index.rq.cp.verbose = False
    else:
        index.lsq.random_seed, index.lsq.train_iters, index.lsq.verbose = seed, 2, False
    index.train(X_train)
    R = unit_rows(index.sa_decode(index.sa_encode(X_eval)))
    return lambda Q: Q @ R.T


def semdb_scorer(bits, shrink, seed, X_train, X_eval):
    residual_module.RESIDUAL_METRIC_SHRINK = shrink  # the module constant the residual stages train with (64 bits)
    codec = Codec.train(X_train, bits=bits, seed=seed)
    codes = codec.encode(X_eval)
    return lambda Q: codec.scores(Q, codes)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--splits", default="0,1,2,3")
    ap.add_argument("--train-seeds", type=int, default=6)
    ap.add_argument("--shrinks", default="0.8,0.9,0.95,0.97,1.0")
    ap.add_argument("--embeddings", default=str(PAIRS))
    ap.add_argument("--faiss", default="RQ,LSQ", help="FAISS families to compare (RQ, LSQ)")
    args = ap.parse_args()
    with limited(1):
        run(args)


def run(args):
    data = load_embeddings(args.embeddings)
    X, T = data.image_emb, data.text_emb
    m = args.bits // 8
    semdb = [f"semdb shrink {s}" for s in args.shrinks.split(",")] if args.bits == 64 else ["semdb"]
    methods = [f"{family}{m}x8" for family in args.faiss.split(",") if family] + semdb
    runs = []
    for split in [int(s) for s in args.splits.split(",")]:
        train, held_out = split_indices(len(X), 0.5, split)
        X_train, X_eval = X[train], X[held_out]
        n = len(held_out)
        for j in range(args.train_seeds):
            seed = split + 100 * j
            for method in methods:
                if method.startswith("LSQ") and j >= (args.train_seeds + 1) // 2:
                    continue
                if method.startswith("semdb"):
                    shrink = float(method.split()[-1]) if args.bits == 64 else residual_module.RESIDUAL_METRIC_SHRINK
                    score = semdb_scorer(args.bits, shrink, seed, X_train, X_eval)
                else:
                    score = faiss_scorer(method, 1234 + seed, X_train, X_eval)
                r1 = None if T is None else metrics.paired_recall(score(T[held_out]), (1,))[1]
                knn = metrics.knn_recall(X_eval @ X_eval.T, score(X_eval), 10, np.arange(n))
                runs.append(
                    dict(
                        bits=args.bits,
                        split=split,
                        train_seed=seed,
                        method=method,
                        r1=None if r1 is None else round(r1, 4),
                        knn=round(knn, 4),
                    )
                )
                print(json.dumps(runs[-1]), flush=True)
    summary = {}
    splits = sorted({r["split"] for r in runs})
    for method in methods:
        summary[method] = {}
        for metric in ("r1", "knn") if T is not None else ("knn",):
            per_split = [
                float(np.mean([r[metric] for r in runs if r["method"] == method and r["split"] == split]))
                for split in splits
            ]
            summary[method][metric] = [round(v, 3) for v in per_split]
            summary[method][f"{metric}_mean"] = round(float(np.mean(per_split)), 3)
        print(
            f"{method:18s} "
            + " | ".join(
                f"{metric} {summary[method][metric]} mean {summary[method][metric + '_mean']:.3f}"
                for metric in ("r1", "knn")
                if metric in summary[method]
            )
        )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
