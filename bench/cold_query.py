"""Cold `semdb query "text"` against a bare open_clip script, side by side (issue 13, Acceptance).

    python bench/cold_query.py [--model vit-b-32|tiny|MODEL] [--repeats 5] [--images 40]

One run, on this machine, each measurement a fresh process (wall seconds and peak RSS from
wait4), interleaved round by round so a shared machine's load hits all alike:

- bare: `python -c "open_clip.create_model(model) (random init, then the weights loaded by
  open_clip); get_tokenizer; encode_text one text under inference_mode"`;
- semdb: `python -m semdb.cli query TEXT --store S -k 10 --json` on a small store built once
  (`--images` generated photos, `ingest --train-now`, so the query runs the real ADC search
  over codes). Two variants: the default path (the cached ONNX text tower run by
  onnxruntime, no torch) and `SEMDB_ONNX=0` (torch, text
  tower only, cached digest).
- The first query after the ingest is reported on its own: it loads the text tower with torch
  and caches the ONNX export.

Model `vit-b-32` (default): open_clip's ViT-B-32 config with random-init weights, saved as a
local-dir folder (no download). The model cache (digests, ONNX export) goes to a temp dir, so
every run starts cold; page cache is warm for all variants alike (each file is read before the
timed rounds). The last output line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

QUERY = "a red bicycle"

BARE = """
import sys, torch, open_clip
name, text = sys.argv[1], sys.argv[2]
model = open_clip.create_model(name)
model.eval()
tokenizer = open_clip.get_tokenizer(name)
with torch.inference_mode():
    features = model.encode_text(tokenizer([text]))
print(tuple(features.shape))
"""


def log(*args):
    print(*args, flush=True)


def run_measured(cmd, env) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, stdout) of one fresh process (its own rusage, by wait4)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out = proc.stdout.read()  # small outputs: no pipe deadlock
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, cmd[:5]))} exited {proc.returncode}: {err.decode(errors='replace')[-2000:]}"
        )
    return wall, usage.ru_maxrss / 1024, out.decode()


SETUP = """
import sys
from pathlib import Path
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import numpy as np
from PIL import Image, ImageDraw
from ingest_speed import resolve_model_arg

tmp, n = Path(sys.argv[3]), int(sys.argv[5])
model, desc = resolve_model_arg(sys.argv[4], tmp)
folder = tmp / "photos"
folder.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
for i in range(n):
    img = Image.new("RGB", (320, 240), tuple(int(c) for c in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x, y = (int(v) for v in rng.integers(0, 280, 2))
        draw.ellipse([x, y, x + 60, y + 40], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    img.save(folder / f"photo_{i:03d}.jpg", quality=90)
print(model)
print(desc)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--model", default="vit-b-32", help="vit-b-32 (random init, default), tiny, or a semdb model string"
    )
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--images", type=int, default=40, help="generated photos in the store")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="semdb-cold-") as tmp:
        tmp = Path(tmp)
        load = os.getloadavg()
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "HF_HUB_OFFLINE": "1",
            "SEMDB_STORE": "",
            "SEMDB_CACHE_DIR": str(tmp / "cache"),
            "COLUMNS": "200",
        }
        store = tmp / "store"
        # model folder and photos made in a child: this process stays small, because a child's
        # peak RSS (wait4) starts from its parent's RSS at fork
        _, _, out = run_measured(
            [
                sys.executable,
                "-c",
                SETUP,
                str(ROOT),
                str(Path(__file__).resolve().parent),
                str(tmp),
                args.model,
                str(args.images),
            ],
            env,
        )
        model, desc = out.strip().splitlines()[-2:]
        photos = tmp / "photos"
        semdb = [sys.executable, "-m", "semdb.cli"]
        t0 = time.perf_counter()
        run_measured(
            semdb + ["ingest", str(photos), "--store", str(store), "--model", model, "--train-now", "--json"], env
        )
        log(f"model: {desc}; store of {args.images} generated photos built in {time.perf_counter() - t0:.1f} s")

        bare = [sys.executable, "-c", BARE, model, QUERY]
        query = semdb + ["query", QUERY, "--store", str(store), "-k", "10", "--json"]
        onnx = os.environ.get("SEMDB_ONNX", "") not in ("0",)
        first_wall, first_rss, first_out = run_measured(query, env)
        exported = list((tmp / "cache" / "onnx").glob("*/text.onnx")) if (tmp / "cache" / "onnx").exists() else []
        log(
            f"first query after ingest (torch text tower; caches the ONNX export: {bool(exported)}): "
            f"{first_wall:.2f} s, {first_rss:.0f} MB"
        )
        onnx = onnx and bool(exported)

        variants = {"bare": (bare, env), "torch": (query, {**env, "SEMDB_ONNX": "0"})}
        if onnx:
            variants["onnx"] = (query, env)
        results = {name: {"wall": [], "rss": []} for name in variants}
        hits = {}
        for r in range(args.repeats):
            for name, (cmd, e) in variants.items():
                wall, rss, out = run_measured(cmd, e)
                results[name]["wall"].append(wall)
                results[name]["rss"].append(rss)
                if name != "bare":
                    hits[name] = [(h["id"], h["score"]) for h in json.loads(out)]
            log(
                f"round {r + 1}: "
                + ", ".join(f"{n} {results[n]['wall'][-1]:.2f} s / {results[n]['rss'][-1]:.0f} MB" for n in variants)
            )
        if onnx:
            assert [i for i, _ in hits["onnx"]] == [i for i, _ in hits["torch"]], "ONNX and torch hits differ"

        med = {
            n: {"wall_s": round(statistics.median(v["wall"]), 3), "max_rss_mb": round(max(v["rss"]), 1)}
            for n, v in results.items()
        }
        summary = {
            "model": desc,
            "images": args.images,
            "repeats": args.repeats,
            "cpus": os.cpu_count(),
            "load_avg_start": [round(x, 2) for x in load],
            "load_avg_end": [round(x, 2) for x in os.getloadavg()],
            "bare": med["bare"],
            "semdb_torch": med["torch"],
            "first_query_after_ingest": {"wall_s": round(first_wall, 3), "max_rss_mb": round(first_rss, 1)},
            "ratio_torch": round(med["torch"]["wall_s"] / med["bare"]["wall_s"], 3),
            "rss_ratio_torch": round(med["torch"]["max_rss_mb"] / med["bare"]["max_rss_mb"], 3),
        }
        if onnx:
            summary.update(
                {
                    "semdb_onnx": med["onnx"],
                    "ratio_onnx": round(med["onnx"]["wall_s"] / med["bare"]["wall_s"], 3),
                    "rss_ratio_onnx": round(med["onnx"]["max_rss_mb"] / med["bare"]["max_rss_mb"], 3),
                    "onnx_mb": round(sum(p.stat().st_size for p in exported[0].parent.iterdir()) / 1e6, 1),
                }
            )
        log("\nsummary (median wall, max RSS)")
        log(f"  bare open_clip text encode : {med['bare']['wall_s']:.2f} s, {med['bare']['max_rss_mb']:.0f} MB")
        log(
            f"  semdb query, torch text    : {med['torch']['wall_s']:.2f} s, {med['torch']['max_rss_mb']:.0f} MB "
            f"(ratio {summary['ratio_torch']:.2f}, memory {summary['rss_ratio_torch']:.2f})"
        )
        if onnx:
            log(
                f"  semdb query, ONNX text     : {med['onnx']['wall_s']:.2f} s, {med['onnx']['max_rss_mb']:.0f} MB "
                f"(ratio {summary['ratio_onnx']:.2f}, memory {summary['rss_ratio_onnx']:.2f}; target <= 0.3)"
            )
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
