"""Ingest throughput and end-to-end acceptance of semdb on real photos (issue 3, "Acceptance").

    python bench/ingest_speed.py [--caltech-tar PATH | --images DIR] [--model tiny|vit-b-32|MODEL]
                                 [--batch-size 32] [--limit N] [--megapixel12 N] [--sample 300]
                                 [--keep-store DIR]

For the photo folder (default: the 2,893 Caltech-101 test JPEGs, extracted to a temp dir) and,
with --megapixel12 N, for N 4000x3000 JPEGs made by upscaling N of those photos (quality 90):

- ingest into a fresh store (wall seconds, images/s; model load excluded, as in the bare loop);
  `info()` must count every image with no staging embedding left; a second ingest (store
  re-opened without a model, like a second CLI run) must embed nothing;
- self-query: fraction of a seeded sample whose own path is in `search(image=path, k=5)`;
- overlap@10 against a brute-force float ranking: the same files embedded by the same Embedder
  with the same `load_image(draft_size=...)` preprocessing, ranked by inner product. Reported
  for `search(image=path, k=10)` and for `search_vectors(float query, k=10)` (codec effect only);
- a bare loop over the same files: `PIL.Image.open(p).convert("RGB")` (no draft mode) +
  the Embedder's open_clip `preprocess` + `model.encode_image` in batches of --batch-size under
  torch.inference_mode, single thread of Python. Run before and after the ingest (the machine
  may be shared); ratio = semdb ingest images/s / bare loop images/s.

Models: `tiny` (semdb.testing.write_tiny_model: 2-layer 64-wide ViT, 32 px input), `vit-b-32`
(open_clip ViT-B-32 architecture, random init, saved as a local-dir folder), or any model
string semdb accepts (e.g. local-dir:/models/clip). Temp files go under $TMPDIR and are removed.
The last output line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import semdb
from semdb.clip.embedder import Embedder
from semdb.images import discover, load_image
from semdb.testing import write_tiny_model

DEFAULT_TAR = "/work/shared/data/images/caltech101_test.tar"


def log(*args):
    print(*args, flush=True)


# --- inputs ---------------------------------------------------------------------------------


def extract(tar_path: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path) as tar:
        try:
            tar.extractall(dest, filter="data")
        except TypeError:  # Python without extraction filters
            tar.extractall(dest)
    return dest


def make_megapixel12(files: list[Path], n: int, dest: Path, seed: int) -> list[Path]:
    """n 4000x3000 JPEGs (quality 90) upscaled (bicubic) from a seeded sample of `files`."""
    dest.mkdir(parents=True, exist_ok=True)
    picks = random.Random(seed).sample(files, min(n, len(files)))
    out = []
    for i, src in enumerate(picks):
        with Image.open(src) as im:
            big = im.convert("RGB").resize((4000, 3000), Image.BICUBIC)
        path = dest / f"mp12_{i:04d}_{src.parent.name}_{src.stem}.jpg"
        big.save(path, quality=90)
        out.append(path)
    return out


def vit_b_32_random(folder: Path, seed: int = 0) -> str:
    """A local-dir folder with open_clip's exact ViT-B-32 config and random-init weights."""
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    cfg = open_clip.get_model_config("ViT-B-32")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model("ViT-B-32")  # random init, no download
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    preprocess = {
        "mean": list(open_clip.OPENAI_DATASET_MEAN),
        "std": list(open_clip.OPENAI_DATASET_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": preprocess}))
    return str(folder)


def resolve_model_arg(model: str, tmp: Path) -> tuple[str, str]:
    if model == "tiny":
        return "local-dir:" + write_tiny_model(tmp / "tiny_model"), "tiny random-init (2-layer 64-wide ViT, 32 px)"
    if model in ("vit-b-32", "ViT-B-32-random"):
        return "local-dir:" + vit_b_32_random(tmp / "vit_b_32_model"), "ViT-B-32 random-init (open_clip config, 224 px)"
    return model, model


# --- measurements ---------------------------------------------------------------------------


def bare_loop(emb: Embedder, files: list[Path], batch_size: int) -> tuple[float, np.ndarray]:
    """open_clip preprocess + encode_image, no draft mode, no threads: (seconds, unit rows)."""
    model, preprocess = emb.model, emb.preprocess
    out = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(files), batch_size):
            tensors = []
            for p in files[i : i + batch_size]:
                with Image.open(p) as im:
                    tensors.append(preprocess(im.convert("RGB")))
            feats = model.encode_image(torch.stack(tensors))
            out.append(torch.nn.functional.normalize(feats.float(), dim=-1).numpy())
    return time.perf_counter() - t0, np.concatenate(out)


def float_embeddings(emb: Embedder, files: list[Path], batch_size: int) -> np.ndarray:
    """Same decoding and preprocessing as semdb's ingest, float32 unit rows."""
    out = []
    for i in range(0, len(files), batch_size):
        imgs = [load_image(p, draft_size=emb.image_size) for p in files[i : i + batch_size]]
        out.append(emb.encode_images(imgs, batch_size=batch_size))
    return np.concatenate(out)


def top_indices(S: np.ndarray, k: int) -> np.ndarray:
    k = min(k, S.shape[1])
    part = np.argpartition(-S, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(S, part, 1), axis=1, kind="stable")
    return np.take_along_axis(part, order, 1)


def overlap_at(hits_lists, truth_rows, index_of, k=10) -> float:
    """Mean |semdb top-k & float top-k| / k (k capped at the collection size)."""
    vals = []
    for hits, truth in zip(hits_lists, truth_rows):
        kk = min(k, len(truth))
        got = {index_of.get(h.path, -1) for h in hits[:kk]}
        vals.append(len(got & set(truth[:kk].tolist())) / kk)
    return float(np.mean(vals))


class StageClock:
    """Progress callback that records when each ingest stage was first and last reported."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.stages: dict[str, list[float]] = {}

    def __call__(self, stage, done, total):
        now = time.perf_counter() - self.t0
        span = self.stages.setdefault(stage, [now, now])
        span[1] = now

    def summary(self) -> dict:
        """Seconds per stage, each from the previous stage's last report (the ingest start for
        the first) to its own last report; 'other' is the rest (discovery, stat, prune, info)."""
        out, prev = {}, 0.0
        for stage, (_, last) in self.stages.items():
            out[stage] = round(last - prev, 2)
            prev = last
        return out


def run_set(label: str, files: list[Path], model: str, emb: Embedder, args, store: Path) -> dict:
    n = len(files)
    log(f"\n== {label}: {n} images, model {model}, batch {args.batch_size} ==")
    res: dict = {"n_images": n}

    # bare loop, first pass
    t_bare1, bare_vecs = bare_loop(emb, files, args.batch_size)
    log(f"bare loop #1      {t_bare1:8.2f} s  {n / t_bare1:8.1f} img/s")

    # ingest into a fresh store (model loaded before the clock starts, as in the bare loop)
    if store.exists():
        shutil.rmtree(store)
    with semdb.open(store, embedder=emb) as db:  # the already-loaded model: keep load time out
        clock = StageClock()
        t0 = time.perf_counter()
        summary = db.ingest(
            [str(p) for p in files], batch_size=args.batch_size, workers=args.workers, train_now=True, progress=clock
        )
        t_ingest = time.perf_counter() - t0
        info = db.info()
    stages = clock.summary()
    stages["other"] = round(t_ingest - sum(stages.values()), 2)
    res.update(
        ingest_s=round(t_ingest, 2),
        ingest_img_s=round(n / t_ingest, 1),
        stages_s=stages,
        embedded=summary["embedded"],
        new=summary["new"],
        duplicate=summary["duplicate"],
        failed=summary["failed"],
        codec_trained=summary["codec_trained"],
        info_items=info["items"],
        info_staging=info["staging"],
        bytes_on_disk=info["bytes_on_disk"],
        entropy_bits_per_item=info["entropy_bits_per_item"],
    )
    log(f"semdb ingest      {t_ingest:8.2f} s  {n / t_ingest:8.1f} img/s   stages {stages}")
    log(
        f"  summary: new={summary['new']} duplicate={summary['duplicate']} failed={summary['failed']} "
        f"embedded={summary['embedded']} codec_trained={summary['codec_trained']}"
    )
    for f in summary["failures"][:5]:
        log(f"  failed: {f['path']}: {f['reason']}")
    log(
        f"  info: items={info['items']} staging={info['staging']} bytes_on_disk={info['bytes_on_disk']} "
        f"bits/item={info['bits_per_item']} entropy bits/item={info['entropy_bits_per_item']}"
    )

    # bare loop, second pass (load on a shared machine drifts)
    t_bare2, _ = bare_loop(emb, files, args.batch_size)
    log(f"bare loop #2      {t_bare2:8.2f} s  {n / t_bare2:8.1f} img/s")
    bare_img_s = 2 * n / (t_bare1 + t_bare2)
    res.update(
        bare_s=[round(t_bare1, 2), round(t_bare2, 2)],
        bare_img_s=round(bare_img_s, 1),
        ratio=round((n / t_ingest) / bare_img_s, 3),
    )
    log(f"ratio semdb/bare  {res['ratio']:.3f}  (bare = mean of both passes, {bare_img_s:.1f} img/s)")

    # second ingest: a fresh open without a model, like a second `semdb ingest` run
    with semdb.open(store) as db:
        t0 = time.perf_counter()
        again = db.ingest([str(p) for p in files], batch_size=args.batch_size, workers=args.workers)
        t_re = time.perf_counter() - t0
        model_loaded = db.model_loaded
    res.update(
        reingest_s=round(t_re, 2),
        reingest_embedded=again["embedded"],
        reingest_unchanged=again["unchanged"],
        reingest_loaded_model=model_loaded,
    )
    log(
        f"second ingest     {t_re:8.2f} s  embedded={again['embedded']} unchanged={again['unchanged']} "
        f"(model loaded: {model_loaded})"
    )

    if args.incremental and n >= 4:
        # steady state: a store whose codec is already trained (on the first half) takes the rest;
        # every batch is then encoded to codes as it is written (no staging, no training)
        inc = store.with_name(store.name + "_incremental")
        if inc.exists():
            shutil.rmtree(inc)
        with semdb.open(inc, embedder=emb) as db:
            db.ingest(
                [str(p) for p in files[: n // 2]], batch_size=args.batch_size, workers=args.workers, train_now=True
            )
            clock = StageClock()
            t0 = time.perf_counter()
            more = db.ingest([str(p) for p in files], batch_size=args.batch_size, workers=args.workers, progress=clock)
            t_inc = time.perf_counter() - t0
        k_inc = more["embedded"]
        res.update(
            incr_embedded=k_inc,
            incr_s=round(t_inc, 2),
            incr_img_s=round(k_inc / t_inc, 1),
            incr_ratio=round((k_inc / t_inc) / bare_img_s, 3),
            incr_stages_s=clock.summary(),
        )
        log(
            f"incremental       {t_inc:8.2f} s  {k_inc / t_inc:8.1f} img/s   ratio {res['incr_ratio']:.3f}  "
            f"({k_inc} new images into a store whose codec was trained on the first {n // 2}; "
            f"stages {clock.summary()})"
        )
        if not args.keep_store:
            shutil.rmtree(inc, ignore_errors=True)

    # acceptance: self-query and agreement with a brute-force float ranking
    t0 = time.perf_counter()
    E = float_embeddings(emb, files, args.batch_size)
    t_float = time.perf_counter() - t0
    index_of = {os.path.abspath(p): i for i, p in enumerate(files)}
    sample = sorted(random.Random(args.seed).sample(range(n), min(args.sample, n)))
    truth = top_indices(E[sample] @ E.T, 10)
    truth_nodraft = top_indices(bare_vecs[sample] @ bare_vecs.T, 10)
    with semdb.open(store, readonly=True, embedder=emb) as db:  # same weights: skip a reload
        t0 = time.perf_counter()
        hits5 = [db.search(image=str(files[i]), k=5) for i in sample]
        t_q = time.perf_counter() - t0
        hitsv = db.search_vectors(E[sample], k=10)
        hits10 = [db.search(image=str(files[i]), k=10) for i in sample] if args.query_image_overlap else None
    self5 = float(np.mean([any(h.path == os.path.abspath(files[i]) for h in hits) for i, hits in zip(sample, hits5)]))
    self1 = float(np.mean([bool(hits) and hits[0].path == os.path.abspath(files[i]) for i, hits in zip(sample, hits5)]))
    float_self1 = float(
        np.mean([truth[j, 0] == i or E[truth[j, 0]] @ E[i] >= E[i] @ E[i] - 1e-6 for j, i in enumerate(sample)])
    )
    cos_draft = float(np.mean(np.sum(E * bare_vecs, 1)))
    res.update(
        sample=len(sample),
        self_top1=round(self1, 3),
        self_top5=round(self5, 3),
        overlap10=round(overlap_at(hits10 or hitsv, truth, index_of), 3),
        overlap10_source="query_image" if hits10 else "query_vectors",
        overlap10_query_vectors=round(overlap_at(hitsv, truth, index_of), 3),
        overlap10_vs_nodraft_float=round(overlap_at(hits10 or hitsv, truth_nodraft, index_of), 3),
        float_draft_vs_nodraft_overlap10=round(
            float(np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(truth.tolist(), truth_nodraft.tolist())])), 3
        ),
        cos_draft_vs_nodraft=round(cos_draft, 4),
        query_image_ms=round(1000 * t_q / len(sample), 1),
        float_embed_s=round(t_float, 2),
        float_self_top1=round(float_self1, 3),
    )
    log(
        f"self-query        top1 {self1:.3f}  top5 {self5:.3f}  (sample {len(sample)}, seed {args.seed}; "
        f"float brute force top1 {float_self1:.3f}; {res['query_image_ms']} ms/query_image)"
    )
    log(
        "overlap@10 vs float brute force: "
        + (f"query_image {res['overlap10']:.3f}  " if hits10 else "")
        + f"query_vectors {res['overlap10_query_vectors']:.3f}"
    )
    log(
        f"  draft-mode effect: semdb vs no-draft float {res['overlap10_vs_nodraft_float']:.3f}; "
        f"float draft vs no-draft {res['float_draft_vs_nodraft_overlap10']:.3f}; "
        f"mean cos(draft, no-draft) {cos_draft:.4f}"
    )
    ok = info["items"] == n and info["staging"] == 0 and again["embedded"] == 0 and summary["failed"] == 0
    res["acceptance_ok"] = bool(ok)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--images", help="folder of photos (used in place, not copied)")
    src.add_argument("--caltech-tar", default=DEFAULT_TAR, help="tar of photos, extracted to a temp dir")
    ap.add_argument("--model", default="tiny", help="tiny | vit-b-32 (random init) | any semdb model string")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None, help="semdb decode threads (default: semdb's)")
    ap.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch.set_num_threads for the whole run, bare loop and semdb alike (default: torch's)",
    )
    ap.add_argument("--limit", type=int, default=None, help="use only the first N images")
    ap.add_argument("--megapixel12", type=int, default=0, help="also measure N generated 4000x3000 JPEGs")
    ap.add_argument("--sample", type=int, default=300, help="self-query sample size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--no-query-image-overlap",
        dest="query_image_overlap",
        action="store_false",
        help="overlap@10 from query_vectors(float query) only, skipping a second query_image "
        "pass (same query vector; saves one single-image forward pass per sample image)",
    )
    ap.add_argument(
        "--incremental",
        action="store_true",
        help="also time ingesting the second half into a store whose codec the first half trained",
    )
    ap.add_argument("--keep-store", help="put the stores here (photos/, mp12/) and keep them")
    args = ap.parse_args(argv)

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    tmp = Path(tempfile.mkdtemp(prefix="semdb_ingest_bench_"))
    try:
        load = os.getloadavg()
        log(
            f"host: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
            f"torch threads {torch.get_num_threads()}, python {sys.version.split()[0]}"
        )
        t0 = time.perf_counter()
        root = Path(args.images) if args.images else extract(args.caltech_tar, tmp / "photos")
        files = list(discover([root]))
        if args.limit:
            files = files[: args.limit]
        log(f"photos: {len(files)} images under {root} ({time.perf_counter() - t0:.1f} s to prepare)")

        t0 = time.perf_counter()
        model, model_desc = resolve_model_arg(args.model, tmp)
        emb = Embedder(model)
        t_load = time.perf_counter() - t0
        n_params = sum(p.numel() for p in emb.model.visual.parameters())
        model_info = {
            "arg": args.model,
            "desc": model_desc,
            "image_size": emb.image_size,
            "dim": emb.dim,
            "visual_params": n_params,
            "load_s": round(t_load, 2),
        }
        log(
            f"model: {model_desc}; image_size {emb.image_size}, dim {emb.dim}, "
            f"{n_params / 1e6:.2f} M visual params, built+loaded in {t_load:.1f} s"
        )

        stores = Path(args.keep_store) if args.keep_store else tmp / "stores"
        stores.mkdir(parents=True, exist_ok=True)
        result = {
            "model": model_info,
            "batch_size": args.batch_size,
            "workers": args.workers,
            "torch_threads": torch.get_num_threads(),
            "load_avg_start": [round(x, 2) for x in load],
        }
        photos = run_set("photos", files, model, emb, args, stores / "photos")
        result.update(photos)
        if args.megapixel12:
            t0 = time.perf_counter()
            big = make_megapixel12(files, args.megapixel12, tmp / "mp12", args.seed)
            mb = sum(p.stat().st_size for p in big) / len(big) / 1e6
            log(
                f"\ngenerated {len(big)} 4000x3000 JPEGs (q90, {mb:.2f} MB each on average) "
                f"in {time.perf_counter() - t0:.1f} s"
            )
            mp = run_set("12-megapixel JPEGs", big, model, emb, args, stores / "mp12")
            mp["mean_file_mb"] = round(mb, 2)
            result.update({f"mp12_{k}": v for k, v in mp.items()})
        result["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]

        log("\nsummary")
        log(
            f"{'set':<10} {'n':>5} {'ingest s':>9} {'ingest/s':>9} {'bare/s':>8} {'ratio':>6} "
            f"{'reingest s':>10} {'self@5':>7} {'ovl@10':>7} {'ovl@10 qv':>9} {'train s':>7} {'incr/s':>7} "
            f"{'incr ratio':>10}"
        )
        for name, r in [("photos", photos)] + ([("12MP", mp)] if args.megapixel12 else []):
            log(
                f"{name:<10} {r['n_images']:>5} {r['ingest_s']:>9.2f} {r['ingest_img_s']:>9.1f} "
                f"{r['bare_img_s']:>8.1f} {r['ratio']:>6.2f} {r['reingest_s']:>10.2f} {r['self_top5']:>7.3f} "
                f"{r['overlap10']:>7.3f} {r['overlap10_query_vectors']:>9.3f} "
                f"{r['stages_s'].get('training codec', 0):>7.2f} {r.get('incr_img_s', float('nan')):>7.1f} "
                f"{r.get('incr_ratio', float('nan')):>10.2f}"
            )
        print(json.dumps(result), flush=True)
        ok = photos["acceptance_ok"] and (not args.megapixel12 or mp["acceptance_ok"])
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
