"""Ingest on Ray against the local engine, side by side, on this machine (issue 6, "Acceptance").

    python bench/ray_ingest.py [--caltech-tar PATH | --images DIR] [--model tiny|vit-b-32|MODEL]
                               [--limit N] [--cpus 2] [--import-rows 200000]

1. The same folder (default: the 2,893 Caltech-101 test JPEGs) is ingested into two fresh
   stores: `engine="local"` (torch threads = --cpus) and `engine="ray"` on a local Ray instance
   started with ray.init(num_cpus=--cpus) before the clock starts (one actor per CPU, one torch
   thread each; the driver keeps torch's default threads for codec training). Reported: wall seconds, images/s and
their ratio. Each first ingest includes
   codec training. (That both engines build the same store is tested in tests/ingest/test_ray.py,
   with one torch thread in both; here local uses --cpus threads, its fastest setting.)
2. The Ray run's stages are timed separately (hashing, embedding + shard import, training) to
   say what each costs; the fixed part (Ray Data start, actor start, model load per actor) is
   the Ray time of a 32-image folder.
3. Import (the driver's share of a Ray ingest at scale): --import-rows made-up items written as
   a Parquet export, imported into a fresh store, and exported again: rows/s of each.
The last output line is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from ingest_speed import DEFAULT_TAR, extract, log, resolve_model_arg  # noqa: E402

import semdb  # noqa: E402
from semdb import arrow  # noqa: E402
from semdb.codec import Codec  # noqa: E402
from semdb.images import discover  # noqa: E402
from semdb.store import Item  # noqa: E402


class StageClock:
    """Wall seconds of the stages of one Ray ingest, by wrapping RayEngine's two calls and the
    codec training: hashes (Ray tasks), embed until its first shard (Ray Data + actor start,
    model load, first batches), the rest of embed split into waiting for shards and the
    driver's commits; training; the rest is the driver's discover, stat and classify."""

    def __init__(self):
        import semdb.ingest.run as ingest_run
        from semdb.ingest.ray import RayEngine

        self.seconds = {
            "ray hashing": 0.0,
            "embed: first shard": 0.0,
            "embed: waiting for shards": 0.0,
            "driver: commit batches": 0.0,
            "driver: codec training": 0.0,
        }
        hashes, embed = RayEngine.hashes, RayEngine.embed
        clock = self

        def timed_hashes(runner, files):
            t = time.perf_counter()
            try:
                return hashes(runner, files)
            finally:
                clock.seconds["ray hashing"] += time.perf_counter() - t

        def timed_embed(runner, *a, **kw):
            t, first = time.perf_counter(), True
            for out in embed(runner, *a, **kw):
                now = time.perf_counter()
                clock.seconds["embed: first shard" if first else "embed: waiting for shards"] += now - t
                first = False
                yield out
                t = time.perf_counter()
                clock.seconds["driver: commit batches"] += t - now

        train = ingest_run.train_if_due

        def timed_train(*a, **kw):
            t = time.perf_counter()
            try:
                return train(*a, **kw)
            finally:
                clock.seconds["driver: codec training"] += time.perf_counter() - t

        RayEngine.hashes, RayEngine.embed, ingest_run.train_if_due = timed_hashes, timed_embed, timed_train


def ingest(store: Path, folder: Path, model: str, engine: str, threads: int | None) -> dict:
    with semdb.open(store, model=model, threads=threads) as db:
        _ = db.embedder  # model load is not part of the measured ingest (as in bench/ingest_speed.py)
        start = time.perf_counter()
        summary = db.ingest([folder], engine=engine)
        summary["wall"] = time.perf_counter() - start
    return summary


def import_rates(tmp: Path, n: int) -> dict:
    rng = np.random.default_rng(0)
    codec = Codec.train(rng.standard_normal((4096, 512)).astype(np.float32), bits=256, seed=0)
    codes = codec.encode(rng.standard_normal((n, 512)).astype(np.float32))
    items = [
        Item(
            i + 1,
            f"/photos/2026/{i // 1000:04d}/img_{i:07d}.jpg",
            2_000_000 + i,
            1_700_000_000 * 10**9 + i,
            f"{i:032x}",
            4000,
            3000,
            1.7e9,
            1.7e9,
        )
        for i in range(n)
    ]
    meta = arrow.make_meta(codec.id, codec.code_bytes, None, codec.to_bytes())
    src = tmp / "synthetic.parquet"
    pq.write_table(
        pa.Table.from_batches(
            [arrow.to_batch(items, codes, codec.code_bytes)], schema=arrow.schema(codec.code_bytes, meta)
        ),
        src,
    )
    with semdb.open(tmp / "imported") as db:
        t = time.perf_counter()
        db.import_parquet([src])
        t_import = time.perf_counter() - t
        t = time.perf_counter()
        again = db.import_parquet([src])
        t_again = time.perf_counter() - t
        t = time.perf_counter()
        db.export(tmp / "again.parquet")
        t_export = time.perf_counter() - t
    assert again["unchanged"] == n
    return {
        "rows": n,
        "parquet_bytes": src.stat().st_size,
        "import_rows_per_s": round(n / t_import),
        "reimport_rows_per_s": round(n / t_again),
        "export_rows_per_s": round(n / t_export),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--images", help="folder of photos (used in place)")
    src.add_argument("--caltech-tar", default=DEFAULT_TAR)
    ap.add_argument("--model", default="tiny", help="tiny | vit-b-32 (random init) | any semdb model string")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N images (a folder of links)")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--import-rows", type=int, default=200_000)
    args = ap.parse_args(argv)
    import ray

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        folder = Path(args.images) if args.images else extract(args.caltech_tar, tmp / "photos")
        if args.limit:
            files = list(discover([folder]))[: args.limit]
            folder = tmp / "subset"
            folder.mkdir()
            for i, f in enumerate(files):
                (folder / f"{i:05d}_{f.name}").symlink_to(f)
        model, label = resolve_model_arg(args.model, tmp)
        n = len(list(discover([folder])))
        log(f"{n} images, model {label}, {args.cpus} CPUs")
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        result = {"images": n, "model": label, "cpus": args.cpus}
        clock = StageClock()
        local = ingest(tmp / "local", folder, model, "local", args.cpus)
        local_train = clock.seconds["driver: codec training"]
        clock.seconds = dict.fromkeys(clock.seconds, 0.0)
        log(f"local: {local['wall']:.1f} s, {n / local['wall']:.1f} img/s (codec training {local_train:.1f} s)")
        # threads=None: the actors get one torch thread each, the driver keeps torch's default
        # (one torch thread would also make the driver's codec training single-threaded)
        on_ray = ingest(tmp / "ray", folder, model, "ray", None)
        ray_train = clock.seconds["driver: codec training"]
        stages = {k: round(v, 2) for k, v in clock.seconds.items()}  # of this run, not the next
        stages["driver: other (discover, stat, classify)"] = round(on_ray["wall"] - sum(clock.seconds.values()), 2)
        log(f"ray:   {on_ray['wall']:.1f} s, {n / on_ray['wall']:.1f} img/s, stages {stages}")
        small = tmp / "small"
        small.mkdir()
        for f in list(discover([folder]))[:32]:
            (small / f.name).symlink_to(f.resolve())
        overhead = ingest(tmp / "overhead", small, model, "ray", None)["wall"]
        ray.shutdown()
        result.update(
            {
                "local_seconds": round(local["wall"], 2),
                "local_images_per_s": round(n / local["wall"], 2),
                "ray_seconds": round(on_ray["wall"], 2),
                "ray_images_per_s": round(n / on_ray["wall"], 2),
                "ray_over_local": round(local["wall"] / on_ray["wall"], 3),
                "local_codec_training_seconds": round(local_train, 2),
                "ray_over_local_without_training": round(
                    (local["wall"] - local_train) / (on_ray["wall"] - ray_train), 3
                ),
                "ray_stage_seconds": stages,
                "codec_trained_in_both": local["codec_trained"] and on_ray["codec_trained"],
                "ray_seconds_for_32_images": round(overhead, 2),
            }
        )
        log(f"ray/local speed {result['ray_over_local']}")
        result["import"] = import_rates(tmp, args.import_rows)
        log(f"import/export: {result['import']}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
