"""Ingest on a Ray cluster: `Database.ingest(..., engine="ray")`, `semdb ingest --engine ray`.

Needs the optional extra: pip install 'semdb[ray]'. Who does what (docs/SCALE.md):

    driver   discover + stat (skip unchanged files), look hashes up in the store (moved,
             touched, duplicate files need no CLIP), write results into the store
    cluster  content hashes (Ray Data tasks); decode + CLIP + codec encode (Ray Data actors,
             one per GPU, else one per `threads` CPUs); each actor writes a Parquet shard of
             codes per block of ingest batches

The driver reads every shard as it is finished, in order, and writes its batches into the store
with the same code a local ingest uses (one transaction per batch), then deletes the shard.
A store without a codec first has a training sample embedded on the cluster (floats, staged
like a local ingest stages them), trains the codec on the driver, then encodes on the cluster.
Batches are formed exactly as a local ingest forms them, so both build the same store.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import shutil
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from . import errors
from .errors import InputError, ModelError, SemdbError, StoreError

BATCHES_PER_SHARD = 8  # at most this many ingest batches per Ray row, actor call and Parquet shard


def _ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise InputError("--engine ray needs Ray: pip install 'semdb[ray]' (or pip install 'ray[data]')") from None
    return ray


class RayRunner:
    """One Ray connection for one ingest: started here unless Ray is already initialised.

    `address`: a cluster address ("auto", "ray://head:10001"); None starts a local instance.
    `shards`: the folder shards are written to (in a sub-folder of this run, removed at the
    end); every node and the driver must see it when the cluster has several nodes.
    `clean`: first remove the run folders that killed runs left in `shards` (only when no other
    ingest can be using it: the store's own folder, under its writer lock). `threads`: torch
    threads per CPU actor. `actors`: how many embedding actors (default: one per GPU, else
    CPUs / threads).
    """

    def __init__(self, shards: Path, address: str | None = None, threads: int | None = None,
                 actors: int | None = None, clean: bool = False):
        ray = _ray()
        self._started = not ray.is_initialized()
        if self._started:
            _check_reachable(address)
            try:
                ray.init(address=address, logging_level=logging.WARNING, include_dashboard=False,
                         log_to_driver=False)
            except ConnectionError as e:
                raise InputError(f"cannot reach the Ray cluster at {address}: {e}") from None
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # results come back in job order
        ctx.enable_progress_bars = False  # the ingest's own progress bar reports
        resources = ray.cluster_resources()
        self.gpus = int(resources.get("GPU", 0))
        self.threads = threads or 1
        self.actors = actors or self.gpus or max(1, int(resources.get("CPU", 1)) // self.threads)
        if clean:  # left by killed runs: their batches were not committed, they are redone
            for old in Path(shards).glob("semdb-*"):
                shutil.rmtree(old, ignore_errors=True)
        self.shards = Path(shards) / f"semdb-{uuid.uuid4().hex}"

    def close(self) -> None:
        shutil.rmtree(self.shards, ignore_errors=True)
        if self._started:
            _ray().shutdown()

    def hashes(self, paths: list) -> list:
        """content_hash of each path (or the ImageError), computed by Ray tasks, in order."""
        if not paths:
            return []
        ray = _ray()
        ds = ray.data.from_items([{"path": os.fsencode(p)} for p in paths])
        ds = ds.map_batches(_hash_rows, batch_size=256, batch_format="pyarrow")
        out = []
        with _unwrapped():
            for batch in ds.iter_batches(batch_format="pyarrow", batch_size=4096):
                for path, h, err in zip(*(batch[c].to_pylist() for c in ("path", "hash", "error"))):
                    out.append(h if err is None else _image_error(path, err))
        return out

    def embed(self, batches: list[list], model_id: dict, codec, max_megapixels):
        """For each batch of jobs, in order: (batch, [(width, height) or reason], vectors),
        vectors being codes (uint8) when `codec` is given, else float16 embeddings of the
        decodable images."""
        if not batches:
            return
        ray = _ray()
        run = self.shards / uuid.uuid4().hex
        run.mkdir(parents=True, exist_ok=True)
        # rows of up to BATCHES_PER_SHARD batches, but at least 4 rows per actor when there are
        # enough batches: one long row on one actor would leave the others idle
        per_row = max(1, min(BATCHES_PER_SHARD, len(batches) // (4 * self.actors)))
        rows = [{"first": i, "paths": [[os.fsencode(job[0]) for job in b] for b in batches[i:i + per_row]]}
                for i in range(0, len(batches), per_row)]
        device = "cuda" if self.gpus else "cpu"
        ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            _EmbedActor, batch_size=1, batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=min(self.actors, len(rows))),
            num_gpus=1 if self.gpus else 0, num_cpus=0 if self.gpus else self.threads,
            fn_constructor_kwargs={"model_id": model_id, "codec": codec.to_bytes() if codec else None,
                                   "max_megapixels": max_megapixels, "threads": self.threads,
                                   "device": device, "out": str(run)})
        import pyarrow.parquet as pq

        with _unwrapped():
            for done in ds.iter_batches(batch_format="pyarrow", batch_size=1):
                shard = Path(done["shard"][0].as_py())
                if not shard.exists():
                    raise StoreError(f"shard {shard}, written by a Ray worker, is not visible to this driver: "
                                     f"give --ray-shards a folder that every node and the driver share")
                table = pq.read_table(shard)
                rows = zip(*(table[c].to_pylist() for c in ("batch", "width", "height", "error", "vector")))
                for k, group in itertools.groupby(rows, key=lambda row: row[0]):  # rows are in job order
                    group = list(group)
                    sizes = [(w, h) if err is None else err for _, w, h, err, _ in group]
                    vecs = [v for *_, v in group if v is not None]
                    yield batches[k], sizes, _vectors(vecs, codec, model_id["dim"])
                shard.unlink()


def _check_reachable(address: str | None) -> None:
    """Fail in seconds on a wrong HOST:PORT (ray.init would retry for many minutes)."""
    if not address or address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except ValueError:
        raise InputError(f"--ray-address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto") from None
    except OSError as e:
        raise InputError(f"cannot reach the Ray cluster at {address} ({e.strerror or e}): start it with "
                         f"`ray start --head` there, or check --ray-address") from None


def _vectors(raw: list[bytes], codec, dim: int) -> np.ndarray:
    if codec is not None:
        return np.frombuffer(b"".join(raw), np.uint8).reshape(len(raw), codec.code_bytes)
    return np.frombuffer(b"".join(raw), np.float16).reshape(len(raw), dim)


def _image_error(path: bytes, reason: str):
    from .errors import ImageError
    from .images import display_path

    return ImageError(f"{display_path(os.fsdecode(path))}: {reason}")


def _hash_rows(batch):
    """Ray Data task: blake2b of each file; the error's reason when it cannot be read."""
    import pyarrow as pa

    from .errors import ImageError
    from .images import content_hash, display_path

    hashes, errors = [], []
    for raw in batch["path"].to_pylist():
        path = os.fsdecode(raw)
        try:
            hashes.append(content_hash(path))
            errors.append(None)
        except ImageError as e:
            hashes.append(None)
            errors.append(str(e).removeprefix(display_path(path) + ": "))
    return pa.table({"path": batch["path"], "hash": pa.array(hashes, pa.string()),
                     "error": pa.array(errors, pa.string())})


class _EmbedActor:
    """Ray Data actor: loads the store's CLIP model (and codec) once; each call takes one row
    of ingest batches, writes their vectors to one Parquet shard and returns the shard's path."""

    def __init__(self, model_id: dict, codec: bytes | None, max_megapixels, threads: int, device: str, out: str):
        from .codec import Codec
        from .embed import Embedder

        self.emb = Embedder(model_id["name"], model_id.get("pretrained"), device=device, threads=threads)
        if self.emb.model_id["digest"] != model_id["digest"]:
            raise ModelError(f"the Ray worker on {os.uname().nodename} loaded other weights for "
                             f"{model_id['name']} (digest {self.emb.model_id['digest'][:16]}, the store's is "
                             f"{model_id['digest'][:16]}): give every node the same model files")
        self.codec = Codec.from_bytes(codec) if codec else None
        self.max_megapixels = max_megapixels
        self.out = Path(out)
        self.pool = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1))

    def __call__(self, row):
        import pyarrow as pa
        import pyarrow.parquet as pq
        import torch

        from .api import prepare_image

        first = row["first"][0].as_py()
        batches = row["paths"][0].as_py()
        # decode ahead in threads (Pillow releases the GIL) while CLIP runs, as a local ingest does
        decoded = self.pool.map(lambda p: prepare_image(self.emb, os.fsdecode(p), self.max_megapixels),
                                [p for paths in batches for p in paths])
        cols = {"batch": [], "width": [], "height": [], "error": [], "vector": []}
        for k, paths in enumerate(batches, start=first):
            prepared = [next(decoded) for _ in paths]
            good = [t for t, _ in prepared if not isinstance(t, Exception)]
            rows = iter(())
            if good:
                vectors = self.emb.encode_images(torch.stack(good))
                rows = iter(self.codec.encode(vectors) if self.codec is not None else vectors.astype(np.float16))
            for tensor, size in prepared:
                bad = isinstance(tensor, Exception)
                cols["batch"].append(k)
                cols["width"].append(None if bad else size[0])
                cols["height"].append(None if bad else size[1])
                cols["error"].append(size if bad else None)
                cols["vector"].append(None if bad else next(rows).tobytes())
        shard = self.out / f"{first:09d}.parquet"
        tmp = shard.with_suffix(".tmp")
        pq.write_table(pa.table({"batch": pa.array(cols["batch"], pa.int64()),
                                 "width": pa.array(cols["width"], pa.uint32()),
                                 "height": pa.array(cols["height"], pa.uint32()),
                                 "error": pa.array(cols["error"], pa.string()),
                                 "vector": pa.array(cols["vector"], pa.binary())}), tmp)
        os.replace(tmp, shard)  # the driver never reads half a shard
        return pa.table({"shard": [str(shard)]})


class _unwrapped:
    """Re-raise a semdb error raised inside a Ray worker as itself (one line, its exit code)."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        seen = exc
        while seen is not None:  # Ray wraps a worker's exception: RayTaskError.cause is the original
            cause = getattr(seen, "cause", None)
            if cause is None and isinstance(seen, SemdbError):
                raise seen.with_traceback(None) from None
            # an actor that failed to start (ActorDiedError) keeps only the traceback's text
            found = re.findall(r"semdb\.errors\.(\w+Error): (.+)", getattr(seen, "error_msg", None) or "")
            cls = getattr(errors, found[-1][0], None) if found else None
            if isinstance(cls, type) and issubclass(cls, SemdbError):
                raise cls(found[-1][1]) from None
            seen = cause or seen.__cause__
        return False
