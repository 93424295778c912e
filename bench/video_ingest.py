"""Video ingest: frames per second of `semdb ingest` on videos against a bare loop, and what
the sampling keeps per video-hour.

    python bench/video_ingest.py [--model vit-b-32|tiny|MODEL] [--seconds 60] [--size 640x360]
                                 [--fps 30] [--threads 2] [--rounds 2]

Three generated videos (libx264, semdb.video.synthetic): "static" (4 still shots), "cuts" (a
hard cut every 1.5 s), "pan" (one shot, a pattern moving 3 px a frame). Side by side in one
run, round by round, each variant in its own process with --threads threads for CLIP:

  semdb onnx   `Database.ingest` of the folder (the default ONNX image tower), into a store
               with a 256-bit codec trained beforehand, so every frame is embedded, encoded,
               compared with the last kept one and committed
  semdb torch  the same with SEMDB_ONNX=0 (open_clip's torch tower, as the bare loop)
  bare         PyAV decode of each video (the same threading), the very frames semdb samples
               converted at the same reduced size, open_clip's preprocess and encode_image in
               batches of 32 under torch.inference_mode: no scene detection, hashing, codes,
               de-duplication or store

frames/s = frames through CLIP / wall time, model loading excluded (each process loads its
model and ingests a one-second video before the timed part). Then, per video, the frames kept
(after de-duplication) per video-hour and their codes' bytes per video-hour (32 B a frame at
256 bits; each item's metadata adds tens of bytes, docs/STORE.md). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_speed import log, resolve_model_arg  # noqa: E402
from ingest_towers import run  # noqa: E402 - each variant in its own process

SEMDB = """
import json, time, semdb
with semdb.open({store!r}, model={model!r}, threads={threads}) as db:
    db.ingest([{warm!r}], codec={codec!r})  # loads the model (and the ONNX session)
    t0 = time.perf_counter()
    s = db.ingest([{videos!r}])
    seconds = time.perf_counter() - t0
    frames = {{}}
    for it in db.store.iter_items():
        frames[it.path] = frames.get(it.path, 0) + 1
    info = db.info()
print(json.dumps({{"frames_s": s["embedded"] / seconds, "embedded": s["embedded"], "seconds": seconds,
                  "image_model": s["image_model"], "kept": frames, "code_bytes": info["bits_per_item"] // 8,
                  "failed": s["failed"]}}))
"""

BARE = """
import json, time, av, torch, open_clip
torch.set_num_threads({threads})
wanted = json.load(open({wanted!r}))
model, _, preprocess = open_clip.create_model_and_transforms({model!r})
model.eval()

def frames(path, times):
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        start, base = stream.start_time or 0, stream.time_base
        for frame in container.decode(stream):
            ms = round(float((frame.pts - start) * base) * 1000)
            if ms in times:
                scale = min(1.0, {size} / min(frame.width, frame.height))
                yield frame.to_image(width=round(frame.width * scale), height=round(frame.height * scale),
                                     interpolation="AREA")

def run(items):
    n, batch = 0, []
    with torch.inference_mode():
        for path, times in items:
            for img in frames(path, set(times)):
                batch.append(preprocess(img))
                if len(batch) == 32:
                    model.encode_image(torch.stack(batch)); n += len(batch); batch = []
        if batch:
            model.encode_image(torch.stack(batch)); n += len(batch)
    return n

run([(p, t) for p, t in wanted.items() if p.endswith("warm.mp4")])
t0 = time.perf_counter()
n = run([(p, t) for p, t in wanted.items() if not p.endswith("warm.mp4")])
seconds = time.perf_counter() - t0
print(json.dumps({{"frames_s": n / seconds, "embedded": n, "seconds": seconds}}))
"""


def make_videos(folder: Path, seconds: float, size: tuple[int, int], fps: int) -> dict[str, Path]:
    from semdb.video.synthetic import Scene, write_video

    rng = np.random.default_rng(0)

    def color():
        return tuple(int(c) for c in rng.integers(0, 256, 3))

    shapes = ("square", "disc", "bars")
    kinds = {
        "static": [Scene(seconds / 4, color(), shapes[i % 3]) for i in range(4)],
        "cuts": [Scene(1.5, color(), shapes[i % 3]) for i in range(int(seconds / 1.5))],
        "pan": [Scene(seconds, color(), "bars", pan=3)],
    }
    folder.mkdir(parents=True)
    out = {}
    for name, scenes in kinds.items():
        out[name] = folder / f"{name}.mp4"
        write_video(out[name], scenes, fps=fps, size=size)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="vit-b-32", help="tiny | vit-b-32 (random init) | any semdb model string")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    size = tuple(int(v) for v in args.size.split("x"))

    from semdb.clip.embedder import Embedder
    from semdb.codec import Codec
    from semdb.video.frames import sample
    from semdb.video.synthetic import Scene, write_video

    tmp = Path(tempfile.mkdtemp(prefix="semdb_video_bench_"))
    os.environ["SEMDB_CACHE_DIR"] = str(tmp / "cache")
    try:
        model, desc = resolve_model_arg(args.model, tmp)
        videos = make_videos(tmp / "videos", args.seconds, size, args.fps)
        (tmp / "warm").mkdir()
        write_video(tmp / "warm" / "warm.mp4", [Scene(1, (10, 20, 30))], fps=args.fps, size=size)
        emb = Embedder(model, threads=args.threads)
        wanted, images = {}, []
        for path in [*videos.values(), tmp / "warm" / "warm.mp4"]:
            frames = list(sample(str(path), emb.image_size)[1])
            wanted[str(path)] = [f.ms for f in frames]
            images += [f.image for f in frames]
        (tmp / "wanted.json").write_text(json.dumps(wanted))
        X = emb.encode_images(images)
        noisy = np.repeat(X, 2048 // len(X) + 1, 0)[:2048]
        noisy = noisy + np.random.default_rng(0).normal(0, 0.05, noisy.shape).astype(np.float32)
        Codec.train(noisy, 256, model_id=emb.model_id).save(tmp / "codec.bin")
        del emb
        n_frames = sum(len(t) for p, t in wanted.items() if "warm" not in p)
        log(
            f"model {desc}, {args.threads} threads, {args.seconds:g} s a video at {args.size} {args.fps} fps, "
            f"{n_frames} sampled frames, load {os.getloadavg()[0]:.2f}"
        )

        def semdb_run(name: str, r: int) -> dict:
            code = SEMDB.format(
                store=str(tmp / f"store-{name}-{r}"),
                model=model,
                threads=args.threads,
                warm=str(tmp / "warm"),
                codec=str(tmp / "codec.bin"),
                videos=str(tmp / "videos"),
            )
            return run(code, {"SEMDB_ONNX": "0"} if name == "semdb torch" else {})

        runs = {"semdb onnx": [], "semdb torch": [], "bare": []}
        for r in range(1, args.rounds + 1):
            for name in runs:
                if name == "bare":
                    code = BARE.format(threads=args.threads, wanted=str(tmp / "wanted.json"), model=model, size=224)
                    out = run(code, {})
                else:
                    out = semdb_run(name, r)
                runs[name].append(out)
                took = f"({out['embedded']} in {out['seconds']:.1f} s)"
                log(f"round {r} {name:<12} {out['frames_s']:7.2f} frames/s  {took}")
        median = {name: statistics.median(o["frames_s"] for o in outs) for name, outs in runs.items()}
        ratios = {f"{name} / bare": round(median[name] / median["bare"], 3) for name in ("semdb onnx", "semdb torch")}
        last = runs["semdb onnx"][-1]
        per_hour = {}
        for kind, path in videos.items():
            kept = last["kept"][str(path)]
            frames_h = kept * 3600 / args.seconds
            per_hour[kind] = {
                "sampled": len(wanted[str(path)]),
                "kept": kept,
                "frames_per_hour": round(frames_h),
                "code_bytes_per_hour": round(frames_h * last["code_bytes"]),
            }
        log("median frames/s: " + ", ".join(f"{k} {v:.2f}" for k, v in median.items()))
        log("ratios: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
        for kind, row in per_hour.items():
            log(f"{kind:<7} {row}")
        print(
            json.dumps(
                {
                    "model": desc,
                    "threads": args.threads,
                    "seconds_per_video": args.seconds,
                    "size": args.size,
                    "fps": args.fps,
                    "runs": runs,
                    "median_frames_s": median,
                    "ratios": ratios,
                    "per_video_hour": per_hour,
                    "load_avg_end": os.getloadavg(),
                }
            ),
            flush=True,
        )
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
