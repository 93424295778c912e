"""The image tower with and without torch (issue 24): steady-state ingest into a store with a
codec, today's torch path vs the ONNX export (fp32, int8) vs a bare open_clip loop.

    python bench/ingest_towers.py [--model vit-b-32|tiny|MODEL] [--limit 320] [--threads 2]
                                  [--rounds 2] [--batch-size 32]

Every variant runs in its own process (its peak resident memory is its own, and the ONNX
ones must not import torch), the variants interleaved round by round on the same photos
(the default: the first --limit Caltech-101 test JPEGs, extracted to a temp dir), all with
--threads intra-op threads. A store per run, with a codec trained once beforehand on the
torch embeddings, so every batch is embedded and encoded; images/s is steady state: from
the end of the first committed batch to the end of the last (model loading excluded).
The bare loop: open_clip's create_model_and_transforms + PIL decode + its preprocess +
encode_image in batches of --batch-size under torch.inference_mode, timed the same way.

Agreement, in this process, on the first 64 photos decoded as an ingest decodes them:
ONNX fp32 vs torch (max abs difference; codes equal), int8 vs fp32 (cosine; codes equal),
the numpy preprocessing vs open_clip's (max abs pixel difference). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_speed import DEFAULT_TAR, extract, log, resolve_model_arg  # noqa: E402

ROOT = str(Path(__file__).resolve().parents[1])

INGEST = """
import json, sys, time, semdb
from semdb.ingest.records import peak_rss_mb
marks = []
def progress(stage, done, total):
    if stage == "embedding":
        marks.append((time.perf_counter(), done))
with semdb.open({store!r}, model={model!r}, threads={threads}) as db:
    s = db.ingest([{photos!r}], codec={codec!r}, int8={int8}, batch_size={batch}, progress=progress)
(t0, d0), (t1, d1) = marks[0], marks[-1]
print(json.dumps({{"img_s": (d1 - d0) / (t1 - t0), "peak_rss_mb": peak_rss_mb(), "image_model": s["image_model"],
                  "export_s": s["onnx_export_seconds"], "embedded": s["embedded"],
                  "torch": "torch" in sys.modules, "open_clip": "open_clip" in sys.modules}}))
"""

BARE = """
import json, sys, time, torch, open_clip
from PIL import Image
from semdb.ingest.records import peak_rss_mb
torch.set_num_threads({threads})
files = json.load(open({files!r}))
model, _, preprocess = open_clip.create_model_and_transforms({model!r})
model.eval()
marks = []
with torch.inference_mode():
    for i in range(0, len(files), {batch}):
        tensors = []
        for p in files[i : i + {batch}]:
            with Image.open(p) as im:
                tensors.append(preprocess(im.convert("RGB")))
        torch.nn.functional.normalize(model.encode_image(torch.stack(tensors)), dim=-1).numpy()
        marks.append((time.perf_counter(), i + len(tensors)))
(t0, d0), (t1, d1) = marks[0], marks[-1]
print(json.dumps({{"img_s": (d1 - d0) / (t1 - t0), "peak_rss_mb": peak_rss_mb(), "image_model": "bare open_clip"}}))
"""

VARIANTS = {  # name: (environment, int8)
    "torch": ({"SEMDB_ONNX": "0"}, False),
    "onnx fp32": ({}, False),
    "onnx int8": ({}, True),
}


def run(code: str, env: dict) -> dict:
    full = {**os.environ, "PYTHONPATH": ROOT, "HF_HUB_OFFLINE": "1", **env}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def agreement(model: str, files: list[Path], threads: int, codec) -> dict:
    """ONNX vs torch on the same decoded photos (the export exists by now)."""
    import torch

    from semdb.clip.embedder import Embedder
    from semdb.clip.onnx import model as onnx_model
    from semdb.images import load_image

    emb = Embedder(model, threads=threads)
    fp32 = onnx_model.load(model, None, threads)
    int8 = onnx_model.load(model, None, threads, int8=True)
    images = [load_image(p, draft_size=emb.image_size) for p in files[:64]]
    ours = np.stack([fp32.preprocess(im) for im in images])
    theirs = torch.stack([emb.preprocess(im) for im in images]).numpy()
    x_torch = emb.encode_images(images)
    x_fp32, x_int8 = fp32.encode_images(images), int8.encode_images(images)
    c_torch, c_fp32, c_int8 = (codec.encode(x) for x in (x_torch, x_fp32, x_int8))
    cos = (x_int8 * x_fp32).sum(1)
    return {
        "n": len(images),
        "preprocess_max_abs": float(np.abs(ours - theirs).max()),
        "fp32_max_abs_vs_torch": float(np.abs(x_fp32 - x_torch).max()),
        "fp32_codes_equal": float((c_fp32 == c_torch).all(1).mean()),
        "int8_min_cosine_vs_fp32": float(cos.min()),
        "int8_mean_cosine_vs_fp32": float(cos.mean()),
        "int8_max_abs_vs_fp32": float(np.abs(x_int8 - x_fp32).max()),
        "int8_codes_equal": float((c_int8 == c_fp32).all(1).mean()),
        "int8_code_bytes_equal": float((c_int8 == c_fp32).mean()),
    }


def batch_sweep(model: str, files: list[Path], threads: int, sizes=(8, 16, 32, 64)) -> dict:
    """images/s of the fp32 ONNX session alone per run batch size (preprocessed pixels)."""
    from semdb.clip.onnx import model as onnx_model
    from semdb.images import load_image

    enc = onnx_model.load(model, None, threads).image_encoder
    pixels = np.stack([enc.preprocess(load_image(p, draft_size=enc.image_size)) for p in files[:128]])
    enc.encode_images(pixels[:8], batch_size=8)  # warm up
    out = {}
    for size in sizes:
        t0 = time.perf_counter()
        enc.encode_images(pixels, batch_size=size)
        out[size] = round(len(pixels) / (time.perf_counter() - t0), 2)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", help="folder of photos (default: Caltech-101 test JPEGs from --caltech-tar)")
    ap.add_argument("--caltech-tar", default=DEFAULT_TAR)
    ap.add_argument("--model", default="vit-b-32", help="tiny | vit-b-32 (random init) | any semdb model string")
    ap.add_argument("--limit", type=int, default=320)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args(argv)

    from semdb.clip.embedder import Embedder
    from semdb.codec import Codec
    from semdb.images import discover, load_image

    tmp = Path(tempfile.mkdtemp(prefix="semdb_towers_bench_"))
    os.environ["SEMDB_CACHE_DIR"] = str(tmp / "cache")  # a machine without the export
    try:
        root = Path(args.images) if args.images else extract(args.caltech_tar, tmp / "photos")
        files = sorted(discover([root]))[: args.limit]
        photos = tmp / "subset"
        photos.mkdir()
        for i, f in enumerate(files):
            os.symlink(f, photos / f"{i:05d}{f.suffix}")
        files = sorted(photos.iterdir())
        (tmp / "files.json").write_text(json.dumps([str(f) for f in files]))
        model, desc = resolve_model_arg(args.model, tmp)
        log(f"{len(files)} photos, model {desc}, {args.threads} threads, load {os.getloadavg()[0]:.2f}")

        emb = Embedder(model, threads=args.threads)
        X = np.concatenate(
            [
                emb.encode_images([load_image(p, draft_size=emb.image_size) for p in files[i : i + 64]])
                for i in range(0, len(files), 64)
            ]
        )
        codec = Codec.train(X, 256, model_id=emb.model_id)
        codec.save(tmp / "codec.bin")
        del emb

        def ingest(name: str, n: int) -> dict:
            env, int8 = VARIANTS[name]
            code = INGEST.format(
                store=str(tmp / f"store-{n}-{name}"),
                model=model,
                threads=args.threads,
                photos=str(photos),
                codec=str(tmp / "codec.bin"),
                int8=int8,
                batch=args.batch_size,
            )
            return run(code, env)

        first = {name: ingest(name, 0) for name in ("onnx fp32", "onnx int8")}  # pays the export
        log(f"first ingest without the export: {json.dumps(first)}")
        runs = {name: [] for name in [*VARIANTS, "bare open_clip"]}
        for r in range(1, args.rounds + 1):
            for name in runs:
                if name == "bare open_clip":
                    code = BARE.format(
                        threads=args.threads, files=str(tmp / "files.json"), model=model, batch=args.batch_size
                    )
                    out = run(code, {})
                else:
                    out = ingest(name, r)
                runs[name].append(out)
                log(f"round {r} {name:<15} {out['img_s']:7.2f} img/s  peak RSS {out['peak_rss_mb']:7.1f} MiB  {out}")
        best = {name: max(o["img_s"] for o in outs) for name, outs in runs.items()}
        median = {name: statistics.median(o["img_s"] for o in outs) for name, outs in runs.items()}
        rss = {name: max(o["peak_rss_mb"] for o in outs) for name, outs in runs.items()}
        agree = agreement(model, files, args.threads, codec)
        sweep = batch_sweep(model, files, args.threads)
        ratios = {
            f"{name} / {ref}": round(median[name] / median[ref], 3)
            for name in ("onnx fp32", "onnx int8")
            for ref in ("torch", "bare open_clip")
        }
        log("\nmedian img/s: " + ", ".join(f"{k} {v:.2f}" for k, v in median.items()))
        log("ratios (medians): " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
        log("peak RSS MiB: " + ", ".join(f"{k} {v:.0f}" for k, v in rss.items()))
        log(f"agreement: {agree}")
        log(f"ONNX run batch size sweep (img/s): {sweep}")
        result = {
            "model": desc,
            "n_images": len(files),
            "threads": args.threads,
            "first_ingest": first,
            "runs": runs,
            "median_img_s": median,
            "best_img_s": best,
            "ratios": ratios,
            "peak_rss_mb": rss,
            "agreement": agree,
            "batch_sweep": sweep,
            "load_avg_end": os.getloadavg(),
        }
        print(json.dumps(result), flush=True)
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
