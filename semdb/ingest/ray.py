"""The Ray engine of ingest: `Database.ingest(..., engine="ray")`, `semdb ingest --engine ray`.

Needs the optional extra: pip install 'semdb[ray]'. Who does what (docs/notes/SCALE.md):

    driver   discover + stat (skip unchanged files), look hashes up in the store (moved,
             touched, duplicate files need no CLIP), write results into the store
    cluster  content hashes (Ray Data tasks); decode + CLIP + codec encode (Ray Data actors,
             one per GPU, else one per `threads` CPUs); each actor writes a Parquet shard of
             codes per block of ingest batches

The actors run the stages a local ingest runs (decode_ahead, decode_image, embed_and_encode);
the driver reads every shard as it is finished, in order, hands its batches to ingest's commit
stage (one transaction per batch), then deletes the shard. Before a store has a codec, ingest
asks for float embeddings of a training sample, trains the codec on the driver, then asks for
codes. Batches are formed exactly as a local ingest forms them, so both build the same store.
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import ImageError, InputError, ModelError, SemdbError, StoreError
from .records import DecodedImage, EmbeddedBatch, EmbedJob, FileState, Vectors

BATCHES_PER_SHARD = 8  # at most this many ingest batches per Ray row, actor call and Parquet shard


def _ray():
    try:
        import ray  # noqa: PLC0415 - Ray is optional and slow to import
        import ray.data  # noqa: PLC0415 - Ray is optional and slow to import
    except ImportError:
        raise InputError("--engine ray needs Ray: pip install 'semdb[ray]' (or pip install 'ray[data]')") from None
    return ray


class RayEngine:
    """One Ray connection for one ingest: started here unless Ray is already initialised.

    `address`: a cluster address ("auto", "ray://head:10001"); None starts a local instance.
    `shards`: the folder shards are written to (in a sub-folder of this run, removed at the
    end); every node and the driver must see it when the cluster has several nodes.
    `clean`: first remove the run folders that killed runs left in `shards` (only when no other
    ingest can be using it: the store's own folder, under its writer lock). `threads`: torch
    threads per CPU actor. `actors`: how many embedding actors (default: one per GPU, else
    CPUs / threads).
    """

    def __init__(
        self,
        shards: Path,
        address: str | None = None,
        threads: int | None = None,
        max_megapixels=None,
        actors: int | None = None,
        clean: bool = False,
    ):
        ray = _ray()
        self.max_megapixels = max_megapixels
        self._started = not ray.is_initialized()
        if self._started:
            _check_reachable(address)
            try:
                ray.init(address=address, logging_level=logging.WARNING, include_dashboard=False, log_to_driver=False)
            except ConnectionError as e:
                raise InputError(f"cannot reach the Ray cluster at {address}: {e}") from None
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        data_ctx = ray.data.DataContext.get_current()
        data_ctx.execution_options.preserve_order = True  # results come back in job order
        data_ctx.enable_progress_bars = False  # the ingest's own progress bar reports
        resources = ray.cluster_resources()
        self.gpus = int(resources.get("GPU", 0))
        self.threads = threads or 1
        self.actors = actors or self.gpus or max(1, int(resources.get("CPU", 1)) // self.threads)
        if clean:  # left by killed runs: their batches were not committed, they are redone
            for old in Path(shards).glob("semdb-*"):
                shutil.rmtree(old, ignore_errors=True)
        self.shards = Path(shards) / f"semdb-{uuid.uuid4().hex}"

    def __enter__(self) -> RayEngine:
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.shards, ignore_errors=True)
        if self._started:
            _ray().shutdown()

    def hashes(self, files: list[FileState]) -> list:
        """content_hash of each file (or the ImageError), computed by Ray tasks, in order."""
        if not files:
            return []
        ray = _ray()
        ds = ray.data.from_items([{"path": os.fsencode(f.path)} for f in files])
        ds = ds.map_batches(_hash_rows, batch_size=256, batch_format="pyarrow")
        out = []
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=4096):
            for path, h, err in zip(*(batch[c].to_pylist() for c in ("path", "hash", "error"))):
                out.append(h if err is None else ImageError(os.fsdecode(path), err))
        return out

    def embed(self, batches: list[list[EmbedJob]], codecs, embedder) -> Iterator[EmbeddedBatch]:
        """Each batch decoded, embedded and encoded by the store's set `codecs` on the cluster, in order.
        The actors load `embedder`'s model themselves and check they got the same weights."""
        if not batches:
            return
        ray = _ray()
        model_id = embedder.model_id
        run = self.shards / uuid.uuid4().hex
        run.mkdir(parents=True, exist_ok=True)
        # rows of up to BATCHES_PER_SHARD batches, but at least 4 rows per actor when there are
        # enough batches: one long row on one actor would leave the others idle
        per_row = max(1, min(BATCHES_PER_SHARD, len(batches) // (4 * self.actors)))
        rows = [
            {"first": i, "paths": [[os.fsencode(job.path) for job in b] for b in batches[i : i + per_row]]}
            for i in range(0, len(batches), per_row)
        ]
        device = "cuda" if self.gpus else "cpu"
        ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            _EmbedActor,
            batch_size=1,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=min(self.actors, len(rows))),
            num_gpus=1 if self.gpus else 0,
            num_cpus=0 if self.gpus else self.threads,
            fn_constructor_kwargs={
                "model_id": model_id,
                "codecs": [c.to_bytes() for c in codecs.codecs],
                "stage": codecs.stage,
                "max_megapixels": self.max_megapixels,
                "threads": self.threads,
                "device": device,
                "out": str(run),
            },
        )
        import pyarrow.parquet as pq  # noqa: PLC0415 - pyarrow: only the Ray engine and exports need it

        for done in ds.iter_batches(batch_format="pyarrow", batch_size=1):
            failure = done["failure"][0].as_py()
            if failure is not None:
                raise pickle.loads(failure)  # a SemdbError of an actor, class and fields kept
            shard = Path(done["shard"][0].as_py())
            if not shard.exists():
                raise StoreError(
                    f"shard {shard}, written by a Ray worker, is not visible to this driver: "
                    f"give --ray-shards a folder that every node and the driver share"
                )
            table = pq.read_table(shard)
            rows = zip(
                *(
                    table[c].to_pylist()
                    for c in ("batch", "width", "height", "error", "vector", "drift", "outside", "taken", "codec")
                )
            )
            for k, group in itertools.groupby(rows, key=lambda row: row[0]):  # rows are in job order
                jobs, rows_of_batch = batches[k], list(group)
                images = tuple(
                    DecodedImage(None, w or 0, h or 0, None if err is None else ImageError(job.path, err), taken)
                    for job, (_, w, h, err, _, _, _, taken, _) in zip(jobs, rows_of_batch)
                )
                good = [(v, d, o, c) for *_, v, d, o, _, c in rows_of_batch if v is not None]
                yield EmbeddedBatch(tuple(jobs), images, _vectors(good, codecs, model_id["dim"]) if good else None)
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
        raise InputError(
            f"cannot reach the Ray cluster at {address} ({e.strerror or e}): start it with "
            f"`ray start --head` there, or check --ray-address"
        ) from None


def _vectors(rows: list[tuple[bytes, float | None, float | None, int]], codecs, dim: int) -> Vectors:
    """(vector bytes, reconstruction error, share outside the codec's subspace, the codec's
    index in the set or -1 for a staged float16 embedding) of a batch's decodable images -> Vectors."""
    slots = [c for *_, c in rows]
    if all(c < 0 for c in slots):
        return Vectors(embeddings=np.frombuffer(b"".join(v for v, *_ in rows), np.float16).reshape(len(rows), dim))
    width = codecs.codecs[0].code_bytes
    codes, embeddings = np.zeros((len(rows), width), np.uint8), np.zeros((len(rows), dim), np.float16)
    for i, (v, _, _, c) in enumerate(rows):
        if c < 0:
            embeddings[i] = np.frombuffer(v, np.float16)
        else:
            codes[i] = np.frombuffer(v, np.uint8)
    nan = float("nan")
    return Vectors(
        codes,
        embeddings if min(slots) < 0 else None,
        tuple(None if c < 0 else codecs.codecs[c].id for c in slots),
        np.array([nan if d is None else d for _, d, _, _ in rows], np.float64),
        np.array([nan if o is None else o for _, _, o, _ in rows], np.float64),
    )


def _hash_rows(batch):
    """Ray Data task: blake2b of each file; the error's reason when it cannot be read."""
    import pyarrow as pa  # noqa: PLC0415 - pyarrow: only the Ray engine and exports need it

    from .local import try_hash  # noqa: PLC0415 - kept lazy: loaded only on this path (a cold `import semdb` stays light)

    hashes = [try_hash(os.fsdecode(raw)) for raw in batch["path"].to_pylist()]
    return pa.table(
        {
            "path": batch["path"],
            "hash": pa.array([None if isinstance(h, ImageError) else h for h in hashes], pa.string()),
            "error": pa.array([h.reason if isinstance(h, ImageError) else None for h in hashes], pa.string()),
        }
    )


class _EmbedActor:
    """Ray Data actor: loads the store's CLIP model (and codecs) once; each call takes one row
    of ingest batches, writes their vectors to one Parquet shard and returns the shard's path.

    A semdb error (other weights, no model, ...) is returned as data, the pickled exception:
    raised, Ray would hand the driver only its traceback's text, not the error itself."""

    def __init__(self, model_id: dict, codecs: list, stage: bool, max_megapixels, threads: int, device: str, out: str):
        from ..clip.embedder import Embedder  # noqa: PLC0415 - kept lazy: loaded only on this path (a cold `import semdb` stays light)
        from ..codec import Codec  # noqa: PLC0415 - kept lazy: loaded only on this path (a cold `import semdb` stays light)
        from .encode import CodecSet  # noqa: PLC0415 - kept lazy: loaded only on this path (a cold `import semdb` stays light)

        self.failure = None
        try:
            self.emb = Embedder(model_id["name"], model_id.get("pretrained"), device=device, threads=threads)
            if self.emb.model_id["digest"] != model_id["digest"]:
                raise ModelError(
                    f"the Ray worker on {os.uname().nodename} loaded other weights for "
                    f"{model_id['name']} (digest {self.emb.model_id['digest'][:16]}, the store's is "
                    f"{model_id['digest'][:16]}): give every node the same model files"
                )
            self.codecs = CodecSet(tuple(Codec.from_bytes(raw) for raw in codecs), stage)
        except SemdbError as e:
            self.failure = e
        self.max_megapixels = max_megapixels
        self.out = Path(out)

    def __call__(self, row):
        import pyarrow as pa  # noqa: PLC0415 - pyarrow: only the Ray engine and exports need it

        if self.failure is None:
            try:
                return pa.table({"shard": [self._embed(row)], "failure": pa.array([None], pa.binary())})
            except SemdbError as e:
                self.failure = e
        return pa.table({"shard": pa.array([None], pa.string()), "failure": [pickle.dumps(self.failure)]})

    def _embed(self, row) -> str:
        import pyarrow as pa  # noqa: PLC0415 - pyarrow: only the Ray engine and exports need it
        import pyarrow.parquet as pq  # noqa: PLC0415 - pyarrow: only the Ray engine and exports need it

        from .decode import decode_ahead, decode_image  # noqa: PLC0415 - kept lazy: loaded only on this path (a cold `import semdb` stays light)
        from .encode import embed_and_encode  # noqa: PLC0415 - kept lazy: loaded only on this path (a cold `import semdb` stays light)

        first = row["first"][0].as_py()
        batches = [[os.fsdecode(p) for p in paths] for paths in row["paths"][0].as_py()]
        cols = {k: [] for k in ("batch", "width", "height", "error", "vector", "drift", "outside", "taken", "codec")}
        decoded = decode_ahead(batches, lambda path: decode_image(self.emb, path, self.max_megapixels))
        for k, (_, images) in enumerate(decoded, start=first):
            vectors = embed_and_encode(self.emb, images, self.codecs)
            ids = self.codecs.ids
            i = 0
            for img in images:
                bad = img.error is not None
                codec_id = None if bad else vectors.codec_of(i)
                cols["batch"].append(k)
                cols["width"].append(None if bad else img.width)
                cols["height"].append(None if bad else img.height)
                cols["error"].append(img.error.reason if bad else None)
                cols["codec"].append(None if bad else -1 if codec_id is None else ids.index(codec_id))
                cols["vector"].append(
                    None if bad else (vectors.embeddings[i] if codec_id is None else vectors.codes[i]).tobytes()
                )
                cols["drift"].append(None if bad or vectors.errors is None else float(vectors.errors[i]))
                cols["outside"].append(None if bad or vectors.outside is None else float(vectors.outside[i]))
                cols["taken"].append(img.taken)
                i += not bad
        shard = self.out / f"{first:09d}.parquet"
        tmp = shard.with_suffix(".tmp")
        pq.write_table(
            pa.table(
                {
                    "batch": pa.array(cols["batch"], pa.int64()),
                    "width": pa.array(cols["width"], pa.uint32()),
                    "height": pa.array(cols["height"], pa.uint32()),
                    "error": pa.array(cols["error"], pa.string()),
                    "vector": pa.array(cols["vector"], pa.binary()),
                    "drift": pa.array(cols["drift"], pa.float64()),
                    "outside": pa.array(cols["outside"], pa.float64()),
                    "taken": pa.array(cols["taken"], pa.float64()),
                    "codec": pa.array(cols["codec"], pa.int16()),
                }
            ),
            tmp,
        )
        os.replace(tmp, shard)  # the driver never reads half a shard
        return str(shard)
