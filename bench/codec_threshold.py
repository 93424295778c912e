"""How many images a codec must see before it generalises (issue 11: the training threshold).

    python bench/codec_threshold.py [--bits 64,128,256] [--sizes 2,20,50,100,200,300,400,563] [--seeds 0,1,2]

On the FashionCLIP pairs in ../shared/data: for each seed, the images are split in half
(seeded permutation, as `semdb bench` does); a codec is trained on the first N images of the
training half and text->image R@1 is measured on the held-out half (queries: the paired
texts), next to float32. Also image kNN@10 overlap with float on Flickr8k (same protocol).
Prints a markdown table per dataset (mean over seeds) and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from semdb.codec import Codec

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "embeddings"


def recall_at_1(S: np.ndarray) -> float:
    return float(np.mean(S.argmax(1) == np.arange(len(S))))


def knn_overlap(X_eval: np.ndarray, S: np.ndarray, k: int = 10) -> float:
    F = X_eval @ X_eval.T
    np.fill_diagonal(F, -np.inf)
    np.fill_diagonal(S, -np.inf)
    truth = np.argsort(-F, 1)[:, :k]
    got = np.argsort(-S, 1)[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(truth, got)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bits", default="64,128,256")
    ap.add_argument("--sizes", default="2,20,50,100,200,300,400,563")
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    bits = [int(b) for b in args.bits.split(",")]
    sizes = [int(n) for n in args.sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    out = {"bits": bits, "sizes": sizes, "seeds": seeds, "shopsphere_t2i_r1": {}, "flickr_knn10": {}}
    shop = np.load(DATA / "shopsphere_fashionclip_pairs.npz")
    flickr = np.load(DATA / "flickr8k_openai_vitb32_images.npz")
    t0 = time.perf_counter()
    for name, X, T in (
        ("shopsphere_t2i_r1", shop["image_emb"], shop["text_emb"]),
        ("flickr_knn10", flickr["image_emb"].astype(np.float32), None),
    ):
        table = {}
        for seed in seeds:
            perm = np.random.default_rng(seed).permutation(len(X))
            train, held = perm[: len(X) // 2], perm[len(X) // 2 :]
            Xe = X[held]
            ref = recall_at_1(T[held] @ Xe.T) if T is not None else 1.0
            table.setdefault("float32", []).append(ref)
            for b in bits:
                for n in sizes:
                    if n > len(train):
                        continue
                    codec = Codec.train(X[train[:n]], bits=b, seed=seed)
                    S = codec.scores(T[held] if T is not None else Xe, codec.encode(Xe))
                    table.setdefault(f"{b}:{n}", []).append(recall_at_1(S) if T is not None else knn_overlap(Xe, S))
        out[name] = {key: round(float(np.mean(v)), 3) for key, v in table.items()}
        print(f"\n{name} (mean of seeds {seeds}; float32 {out[name]['float32']})\n")
        print("| bits | " + " | ".join(f"N={n}" for n in sizes) + " |")
        print("|---|" + "---|" * len(sizes))
        for b in bits:
            print(f"| {b} | " + " | ".join(str(out[name].get(f"{b}:{n}", "-")) for n in sizes) + " |")
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
