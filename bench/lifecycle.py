"""Codec lifecycle acceptance (issue 11): a store grown from a few images against one built in
one go, through the store's public paths.

    python bench/lifecycle.py [--caltech-tar PATH] [--first 5] [--model tiny|vit-b-32|MODEL] [--skip-cli]

1. Real embeddings (../shared/data, FashionCLIP pairs): the 1126 image embeddings imported with
   `Database.add_embeddings` as FIRST then the rest (FIRST = 20, 300, and 700: past the
   threshold), and all at once; text->image R@1 over all 1126 with the paired texts as
   queries (`search_vectors`), float32 beside; staging left; what the final codec trained on.
2. The CLI with a local model: `semdb ingest` of FIRST of the photos (default 5), then of the
   whole folder of 2,893 Caltech-101 photos, against one `semdb ingest` of the folder: the
   final codec's training size, staging, whether both stores have the same codec, and the
   overlap@10 of both stores' answers to image queries (a seeded sample of 200 of the photos,
   `search(image=)`) and to 20 text queries.
The last output line is JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from ingest_speed import DEFAULT_TAR, extract, log, resolve_model_arg  # noqa: E402

import semdb  # noqa: E402
from semdb.images import discover  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "embeddings"
SEMDB = str(Path(sys.executable).with_name("semdb"))
TEXTS = [
    "a photo of an airplane",
    "a face",
    "a motorbike",
    "a leopard",
    "a watch",
    "a bonsai tree",
    "a piano",
    "a car",
    "a chair",
    "an elephant",
    "a butterfly",
    "a ketch",
    "a lamp",
    "a helicopter",
    "a starfish",
    "a sunflower",
    "a camera",
    "a brain",
    "a kangaroo",
    "a laptop",
]


def real_embeddings(tmp: Path) -> dict:
    d = np.load(DATA / "shopsphere_fashionclip_pairs.npz")
    X, T = d["image_emb"], d["text_emb"]
    paths = [f"/shop/{i}.jpg" for i in range(len(X))]

    def r1(db):
        return float(np.mean([h[0].path == paths[i] for i, h in enumerate(db.search_vectors(T, k=1))]))

    out = {"float32": round(float(np.mean((T @ X.T).argmax(1) == np.arange(len(X)))), 3)}
    with semdb.open(tmp / "once") as db:
        db.add_embeddings(paths, X, model="fashion-clip")
        out["once"] = round(r1(db), 3)
    for first in (20, 300, 700):  # 700: past the threshold, the codec trains on 700, encodes the rest
        with semdb.open(tmp / f"grown{first}") as db:
            db.add_embeddings(paths[:first], X[:first], model="fashion-clip")
            db.add_embeddings(paths[first:], X[first:])
            out[f"grown_{first}"] = {
                "r1": round(r1(db), 3),
                "staging": db.store.staging_count(),
                "trained_on": db.codec.config["n_train"],
            }
    return out


def semdb_cli(*args) -> dict:
    proc = subprocess.run([SEMDB, *map(str, args), "--json"], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def overlap(a, b, k=10) -> float:
    return len({h.path for h in a[:k]} & {h.path for h in b[:k]}) / k


def cli_growth(tmp: Path, tar: str, first: int, model: str) -> dict:
    photos = extract(tar, tmp / "photos")
    files = sorted(discover([photos]))
    grown, once = tmp / "grown_store", tmp / "once_store"
    s_few = semdb_cli("ingest", *files[:first], "--store", grown, "--model", model, "--threads", 1)
    s_all = semdb_cli("ingest", photos, "--store", grown, "--threads", 1)
    semdb_cli("ingest", photos, "--store", once, "--model", model, "--threads", 1)
    sample = random.Random(0).sample(files, 200)
    out = {
        "first_ingest": {k: s_few[k] for k in ("new", "staged", "codec_trained")},
        "second_ingest": {k: s_all[k] for k in ("new", "duplicate", "staged", "codec_trained", "items")},
    }
    with semdb.open(grown, readonly=True) as g, semdb.open(once, readonly=True, embedder=g.embedder) as o:
        info = g.info()
        out.update(
            trained_on=info["codec"]["trained_on"],
            staging=info["staging"],
            items=info["items"],
            image_overlap10=round(
                float(np.mean([overlap(g.search(image=f, k=10), o.search(image=f, k=10)) for f in sample])), 3
            ),
            text_overlap10=round(float(np.mean([overlap(g.search(t, k=10), o.search(t, k=10)) for t in TEXTS])), 3),
            same_codec=g.codec.id == o.codec.id,
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--caltech-tar", default=DEFAULT_TAR)
    ap.add_argument("--first", type=int, default=5)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--skip-cli", action="store_true")
    args = ap.parse_args()
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        result["real_embeddings"] = real_embeddings(tmp)
        log("real embeddings (FashionCLIP, t2i R@1 over 1126):", result["real_embeddings"])
        if not args.skip_cli:
            model, _ = resolve_model_arg(args.model, tmp)
            result["cli"] = cli_growth(tmp, args.caltech_tar, args.first, model)
            log(f"CLI, {args.first} photos then all:", result["cli"])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
