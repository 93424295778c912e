"""The Python retrieval backend; the CLI is a thin layer over it.

    import semdb
    with semdb.open("photos.semdb", model="local-dir:/models/clip") as db:
        summary = db.ingest(["./photos"])
        hits = db.query("a red bicycle", k=10)        # [Hit(path, score, id), ...]

A `Database` wraps one store (`store.py`), the CLIP model it was built with (`embed.py`,
loaded on first use) and the codec kept inside the store (`codec/`).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

import numpy as np

from .codec import Codec
from .errors import CodecError, ImageError, InputError, StoreError
from .faults import fault_point
from .images import DEFAULT_MAX_MEGAPIXELS, content_hash, discover, display_path, load_image
from .search import FlatIndex
from .store import Item, Store, default_store_path

DEFAULT_BITS = 256
TRAIN_AT = 50_000  # staged embeddings that trigger codec training during a long first ingest
MIN_TRAIN = 2  # the codec needs at least this many embeddings to learn from

Progress = Callable[[str, int, int], None]  # (stage, done, total)


class Hit(NamedTuple):
    path: str
    score: float
    id: int


@dataclass
class IngestSummary:
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    moved: int = 0
    duplicate: int = 0
    failed: int = 0
    pruned: int = 0
    missing: int = 0  # items whose files are gone (removed with --prune)
    embedded: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0
    items: int = 0
    codec_trained: bool = False
    failures: list = field(default_factory=list)  # [{"path", "reason"}]

    def to_dict(self) -> dict:
        return asdict(self)


def open(path=None, model: str | None = None, pretrained: str | None = None, **kwargs) -> "Database":  # noqa: A001
    """Open (or create) the store at `path` (default: $SEMDB_STORE or the user data dir)."""
    return Database(path, model=model, pretrained=pretrained, **kwargs)


class Database:
    """A semdb store plus its model and codec. Use as a context manager, or call close()."""

    def __init__(self, path=None, model: str | None = None, pretrained: str | None = None,
                 readonly: bool = False, wait: bool = False, device: str = "cpu",
                 map_size: int | None = None, threads: int | None = None):
        self.path = Path(os.path.abspath(Path(path).expanduser() if path else default_store_path()))
        self.readonly = readonly
        self._model_args = (model, pretrained)
        self._device = device
        self._threads = threads  # torch intra-op threads (None: torch's default)
        if readonly and not (self.path / "data.mdb").exists():
            raise StoreError(f"{self.path}: no semdb store here yet; run `semdb ingest PATH --store {self.path}` first")
        self.store = Store(self.path, create=not readonly, readonly=readonly, wait=wait,
                           **({"map_size": map_size} if map_size else {}))  # initial LMDB map; grows
        self._embedder = None
        self._codec = None
        self._index = None  # (generation, ids, search index)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- model and codec ------------------------------------------------------------------
    @property
    def embedder(self):
        """The CLIP model: the one named at open(), else the store's, else the default."""
        if self._embedder is None:
            from .embed import Embedder

            model, pretrained = self._model_args
            stored = self.store.model_id()
            if model is None and stored:
                model, pretrained = stored["name"], stored.get("pretrained")
            emb = Embedder(model, pretrained, device=self._device, threads=self._threads)
            self.store.check_model(emb.model_id)
            self._embedder = emb
        return self._embedder

    @property
    def codec(self) -> Codec | None:
        # Called on every batch and query: compare the recorded id first, and read and parse the
        # codec bytes only when the store's codec is not the one already loaded.
        recorded = self.store.meta().get("codec_id")
        if recorded is None:
            return None
        if self._codec is None or self._codec.id != recorded:
            raw = self.store.codec_bytes()
            # Codec.id digests the codec's config and weights: a codec whose bytes were damaged
            # on disk no longer matches the id recorded when it was installed.
            advice = "restore it from a backup or rebuild it with `semdb ingest` into a new --store"
            try:
                codec = Codec.from_bytes(raw, source=f"{self.path} (codec)")
            except CodecError as e:
                raise StoreError(f"{self.path} is corrupt (its codec does not load: {e}); {advice}") from None
            if codec.id != recorded:
                raise StoreError(f"{self.path} is corrupt (its codec's digest {codec.id} is not the "
                                 f"recorded {recorded}); {advice}")
            self._codec = codec
        return self._codec

    def _install_codec(self, codec: Codec) -> None:
        """Bind the store to `codec` and turn every staged embedding into codes, in ONE
        transaction: readers and a re-run after a crash see either staged embeddings and no
        codec, or the codec and codes only (never a codec with the items still staged)."""
        fault_point("trained")
        self.store.finish_staging(codec.encode, codec=(codec.to_bytes(), codec.id, codec.code_bytes))
        self._codec = codec

    def _train_codec(self, bits: int, progress: Progress | None) -> Codec:
        X = np.concatenate([emb.astype(np.float32) for _, emb in self.store.iter_staging()])
        if progress:
            progress("training codec", 0, 1)
        fault_point("train")
        codec = Codec.train(X, bits=bits, seed=0, model_id=self.store.model_id())
        if progress:
            progress("training codec", 1, 1)
        return codec

    # --- ingest ---------------------------------------------------------------------------
    def ingest(self, paths: Iterable, *, bits: int = DEFAULT_BITS, codec=None, batch_size: int = 32,
               prune: bool = False, workers: int | None = None,
               max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS, progress: Progress | None = None,
               engine: str = "local", ray_address: str | None = None, ray_shards=None) -> dict:
        """Add new and changed images under `paths`; skip unchanged ones; return the summary.

        Every batch commits atomically, so an interrupted ingest resumes where it stopped.
        `codec`: a Codec or a codec file for a new store (default: train one, `bits` per item,
        on this ingest's embeddings). `prune`: remove items whose files are gone.
        `engine="ray"`: hash, decode, embed and encode on a Ray cluster (`ray_address`, default
        a local instance); shards go to `ray_shards` (default STORE/ray-shards), see ray_ingest.py.
        """
        if self.readonly:
            raise StoreError(f"{self.path} is open read-only")
        if engine not in ("local", "ray"):
            raise InputError(f"engine {engine!r}: use 'local' or 'ray'")
        start = time.perf_counter()
        summary = IngestSummary()
        if not self.store.model_id() or codec is not None or self._model_args[0]:
            self._bind_model()  # otherwise the model loads only if some file needs embedding
        self._bind_codec(codec)
        if self.codec is not None and self.store.staging_count():
            self.store.finish_staging(self.codec.encode)  # resume an ingest killed mid-switch

        def failed(path, reason):
            summary.failures.append({"path": display_path(path), "reason": reason})

        files = [Path(os.path.abspath(p)) for p in discover(paths, exclude=[self.path], on_error=failed)]
        seen = {os.fsdecode(p) for p in files}
        todo = self._skip_unchanged(files, summary, failed)
        if engine == "ray":
            from .ray_ingest import RayRunner

            ray = RayRunner(Path(ray_shards or self.path / "ray-shards"), ray_address, self._threads,
                            clean=not ray_shards)
            try:
                jobs = self._classify(todo, seen, summary, failed, progress, ray.hashes([p for p, _, _ in todo]))
                self._embed_on_ray(ray, jobs, bits, batch_size, max_megapixels, summary, failed, progress)
            finally:
                ray.close()
        else:
            jobs = self._classify(todo, seen, summary, failed, progress)
            self._embed_and_store(jobs, bits, batch_size, workers, max_megapixels, summary, failed, progress)
        if self.codec is None and self.store.staging_count() >= MIN_TRAIN:
            self._install_codec(self._train_codec(bits, progress))
            summary.codec_trained = True
        self._prune(seen, prune, summary)
        summary.failed = len(summary.failures)
        summary.items = self.store.count()
        summary.seconds = round(time.perf_counter() - start, 3)
        if summary.embedded:
            summary.images_per_second = round(summary.embedded / summary.seconds, 2)
        return summary.to_dict()

    def _bind_model(self) -> None:
        emb = self.embedder  # loading it checks it against the store's model
        if not self.store.model_id():
            with self.store.write() as w:
                w.set_meta("model_id", emb.model_id)

    def _bind_codec(self, codec) -> None:
        if codec is None:
            return
        dim = self.embedder.dim
        if not isinstance(codec, Codec):
            codec = Codec.load(codec, dim=dim)
        if codec.dim != dim:
            raise CodecError(f"codec {codec.id} is for {codec.dim}-d embeddings, but the model gives {dim}-d")
        mid = codec.model_id or {}
        if mid.get("digest") and mid["digest"] != self.embedder.model_id["digest"]:
            raise CodecError(f"codec {codec.id} was trained for CLIP model {mid.get('name')}, not "
                             f"{self.embedder.model_id['name']}; use a codec trained for this model")
        current = self.store.meta().get("codec_id")
        if current and current != codec.id:
            raise StoreError(f"{self.path} already uses codec {current}; ingest without --codec, or use a new --store")
        if not current:
            self._install_codec(codec)

    def _skip_unchanged(self, files, summary, failed) -> list:
        """Files whose path, size and mtime match the store are skipped without reading them."""
        todo = []
        for path in files:
            try:
                st = path.stat()
            except OSError as err:
                failed(path, err.strerror or str(err))
                continue
            item = self.store.item_by_path(os.fsdecode(path))
            if item and item.size == st.st_size and item.mtime_ns == st.st_mtime_ns:
                summary.unchanged += 1
            else:
                todo.append((path, st, item))
        return todo

    def _classify(self, todo, seen, summary, failed, progress, hashes=None) -> list:
        """Hash candidate files; settle touched, moved and duplicate files without embedding.
        `hashes`: their content hashes (or ImageErrors) when computed elsewhere (on Ray).

        Returns the jobs that need CLIP: (path, stat, hash, existing item or None, [duplicate
        (path, stat)]) with one job per distinct new content. Metadata-only changes are
        written in batches of `batch` per transaction.
        """
        jobs, by_hash, pending = [], {}, []  # pending: (item, code or None) to write
        codes = None
        now = time.time()

        def flush():
            with self.store.write() as w:
                for item, code in pending:
                    w.update_item(item) if code is None else w.add_item(item, code=code)
                fault_point("classify_txn")
            pending.clear()

        with ThreadPoolExecutor(max_workers=4) as pool:  # hashing is I/O: a few threads overlap it
            if hashes is None:
                hashes = pool.map(_try_hash, [p for p, _, _ in todo])
            for n, ((path, st, item), h) in enumerate(zip(todo, hashes)):
                if progress:
                    progress("hashing", n + 1, len(todo))
                if isinstance(h, ImageError):  # unreadable, or gone since it was listed
                    failed(path, str(h).removeprefix(display_path(path) + ": "))
                    continue
                spath = os.fsdecode(path)
                same = self.store.items_by_hash(h) if item is None else []
                gone = [it for it in same if it.path not in seen and not os.path.lexists(it.path)]
                if item is not None and item.hash == h:  # touched, same content: refresh metadata
                    pending.append((Item(item.id, spath, st.st_size, st.st_mtime_ns, h, item.width,
                                         item.height, item.added, now), None))
                    summary.unchanged += 1
                elif gone:  # the file moved: keep its code, change its path
                    it = gone[0]
                    pending.append((Item(it.id, spath, st.st_size, st.st_mtime_ns, h, it.width, it.height,
                                         it.added, now), None))
                    seen.add(it.path)  # one moved file claims one missing item
                    summary.moved += 1
                elif same and (codes := codes or self._codes_by_id()).get(same[0].id) is not None:
                    # a copy of a stored image: reuse its code, no CLIP needed
                    pending.append((Item.new(spath, st.st_size, st.st_mtime_ns, h, same[0].width,
                                             same[0].height), np.array(codes[same[0].id])))
                    summary.duplicate += 1
                elif item is None and h in by_hash:  # a copy of an image new in this run
                    by_hash[h][4].append((spath, st))
                else:
                    by_hash[h] = (spath, st, h, item, [])
                    jobs.append(by_hash[h])
                if len(pending) >= 512:
                    flush()
        if pending:
            flush()
        return jobs

    def _codes_by_id(self) -> dict:
        ids, codes = self.store.load_codes()
        return dict(zip(ids.tolist(), codes))

    def _embed_and_store(self, jobs, bits, batch_size, workers, max_megapixels, summary, failed, progress):
        if not jobs:
            return
        self._bind_model()
        emb = self.embedder

        def prepare(job):  # runs in a worker thread: file read, decode, resize (GIL released)
            return prepare_image(emb, job[0], max_megapixels)

        done = 0
        for batch, prepared in _prefetch(jobs, prepare, batch_size, workers or min(4, os.cpu_count() or 1)):
            good = [t for t, _ in prepared if not isinstance(t, Exception)]
            vectors = None
            if good:
                import torch

                vectors = emb.encode_images(torch.stack(good))
                fault_point("embedded")
                vectors = self.codec.encode(vectors) if self.codec is not None else vectors.astype(np.float16)
            done += len(batch)
            if progress:
                progress("embedding", done, len(jobs))
            self._commit_batch(batch, [size for _, size in prepared], vectors, bits, summary, failed, progress)

    def _embed_on_ray(self, ray, jobs, bits, batch_size, max_megapixels, summary, failed, progress):
        """The Ray twin of _embed_and_store: the same batches, embedded (and encoded) on the
        cluster, committed here by _commit_batch. Without a codec, batches are embedded as
        floats until the codec is trained from them, as a local ingest does."""
        if not jobs:
            return
        self._bind_model()
        model_id = self.embedder.model_id
        batches = [jobs[i:i + batch_size] for i in range(0, len(jobs), batch_size)]
        done, i = 0, 0
        while i < len(batches):
            codec = self.codec
            # with no codec: a sample just big enough to reach TRAIN_AT; then all the rest
            n = len(batches) if codec else max(1, -(-(TRAIN_AT - self.store.staging_count()) // batch_size))
            for batch, sizes, vectors in ray.embed(batches[i:i + n], model_id, codec, max_megapixels):
                if codec is None and self.codec is not None:  # copies in the sample reached TRAIN_AT early
                    vectors = self.codec.encode(vectors.astype(np.float32))
                done += len(batch)
                if progress:
                    progress("embedding", done, len(jobs))
                self._commit_batch(batch, sizes, vectors, bits, summary, failed, progress)
            i += n

    def _commit_batch(self, batch, sizes, vectors, bits, summary, failed, progress) -> None:
        """Write one batch: `sizes[j]` is job j's (width, height), or why it failed; `vectors`
        holds codes (or, before the codec, float16 embeddings) of the jobs that did not fail.
        Trains the codec once TRAIN_AT embeddings are staged."""
        good = []
        for job, size in zip(batch, sizes):
            if isinstance(size, str):
                for path in [job[0], *(cpath for cpath, _ in job[4])]:  # byte-identical copies fail alike
                    failed(path, size)
            else:
                good.append((job, size))
        if good:
            self._write_batch(good, vectors, summary)
            fault_point("batch_committed")
            summary.embedded += len(good)
        if self.codec is None and self.store.staging_count() >= TRAIN_AT:
            self._install_codec(self._train_codec(bits, progress))
            summary.codec_trained = True

    def _write_batch(self, good, vecs, summary) -> None:
        """One transaction: every item of the batch with its code (or staged embedding)."""
        codec = self.codec
        key = "code" if codec is not None else "embedding"
        now = time.time()
        with self.store.write() as w:
            for (job, (width, height)), vec in zip(good, vecs):
                spath, st, h, item, copies = job
                if item is not None:  # same path, new content: re-encoded
                    w.update_item(Item(item.id, spath, st.st_size, st.st_mtime_ns, h, width, height, item.added, now))
                    (w.set_code if codec is not None else w.set_embedding)(item.id, vec)
                    summary.changed += 1
                else:
                    w.add_item(Item.new(spath, st.st_size, st.st_mtime_ns, h, width, height, now), **{key: vec})
                    summary.new += 1
                for cpath, cst in copies:
                    w.add_item(Item.new(cpath, cst.st_size, cst.st_mtime_ns, h, width, height, now), **{key: vec})
                    summary.duplicate += 1
            fault_point("batch_txn")

    def _prune(self, seen, prune: bool, summary) -> None:
        gone = [it.id for it in self.store.iter_items() if it.path not in seen and not os.path.lexists(it.path)]
        if prune and gone:
            with self.store.write() as w:
                for id_ in gone:
                    w.delete_item(id_)
                fault_point("prune_txn")
            summary.pruned = len(gone)
        else:
            summary.missing = len(gone)

    # --- export and import (Arrow / Parquet) -----------------------------------------------
    def export_batches(self, batch_size: int = 65536):
        """The store as Arrow record batches in id order: (schema, iterator of batches).
        The schema's metadata carries the codec, its id and the model identity."""
        from . import arrow

        codec = self.codec
        if codec is None:
            raise StoreError(f"{self.path} has no codec yet (it holds {self.store.staging_count()} staged "
                             f"embeddings): ingest at least {MIN_TRAIN} images before exporting")
        sch = arrow.schema(codec.code_bytes, arrow.make_meta(codec.id, codec.code_bytes, self.store.model_id(),
                                                             codec.to_bytes()))
        ids, codes = self.store.load_codes()
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]

        def batch(items):
            want = np.array([it.id for it in items], np.uint64)
            pos = np.minimum(np.searchsorted(sorted_ids, want), max(len(sorted_ids) - 1, 0))
            coded = sorted_ids[pos] == want if len(sorted_ids) else np.zeros(len(want), bool)
            # an item without a code in the snapshot was added after it: left out
            return arrow.to_batch([it for it, ok in zip(items, coded) if ok], codes[order[pos[coded]]],
                                  codec.code_bytes)

        def batches():
            chunk = []
            for item in self.store.iter_items(batch=4096):
                chunk.append(item)
                if len(chunk) == batch_size:
                    yield batch(chunk)
                    chunk = []
            if chunk:
                yield batch(chunk)

        return sch, batches()

    def to_arrow(self):
        """Every item as a pyarrow Table (columns and metadata: docs/INTERFACES.md#parquet-export)."""
        import pyarrow as pa

        sch, batches = self.export_batches()
        return pa.Table.from_batches(list(batches), schema=sch)

    def export(self, out, progress: Progress | None = None) -> dict:
        """Write every item to the Parquet file `out` (replaced atomically); return a summary."""
        import pyarrow.parquet as pq

        start = time.perf_counter()
        out = Path(out)
        if not out.parent.is_dir():
            raise InputError(f"{display_path(out)}: folder {display_path(out.parent)} does not exist")
        sch, batches = self.export_batches()
        total, done = self.store.count(), 0
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        try:
            with pq.ParquetWriter(tmp, sch, compression="zstd") as writer:
                for batch in batches:
                    writer.write_batch(batch)
                    done += batch.num_rows
                    if progress:
                        progress("exporting", done, total)
            os.replace(tmp, out)  # a reader never sees half a file
        except OSError as e:
            raise InputError(f"{display_path(out)}: cannot write ({e.strerror or e})") from None
        finally:
            tmp.unlink(missing_ok=True)
        return {"path": os.fspath(out), "items": done, "bytes": out.stat().st_size,
                "seconds": round(time.perf_counter() - start, 3)}

    def import_arrow(self, table, progress: Progress | None = None) -> dict:
        """Merge a table written by to_arrow()/export() into this store; see import_parquet."""
        from . import arrow

        meta = arrow.read_meta(table.schema, "table")
        arrow.check_columns(table.schema, meta["code_bytes"], "table")
        self._accept_codec([(meta, "table")])
        return self._import([(table.to_batches(max_chunksize=4096), table.num_rows)], meta["code_bytes"], progress)

    def import_parquet(self, paths, progress: Progress | None = None) -> dict:
        """Merge Parquet exports into this store, rows in file order.

        Every file must hold codes of this store's codec (a new store takes the codec the
        files carry). A row whose path is new adds an item; a row for a stored path whose
        file differs (size, mtime, content hash, dimensions) replaces that item's metadata and
        code. Importing the same file twice adds nothing. Returns {"added", "updated", "unchanged", "items", "seconds"}."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from . import arrow

        files = []
        for path in paths:  # check every file before writing anything
            source = display_path(path)
            try:
                pf = pq.ParquetFile(path)
            except FileNotFoundError:
                raise InputError(f"{source}: no such file") from None
            except (OSError, pa.ArrowException) as e:
                raise InputError(f"{source}: not a Parquet file ({str(e).splitlines()[0]})") from None
            meta = arrow.read_meta(pf.schema_arrow, source)
            arrow.check_columns(pf.schema_arrow, meta["code_bytes"], source)
            files.append((pf, meta, source))
        if not files:
            raise InputError("no Parquet files given to import")
        self._accept_codec([(meta, source) for _, meta, source in files])
        return self._import([(pf.iter_batches(batch_size=4096), pf.metadata.num_rows) for pf, _, _ in files],
                            files[0][1]["code_bytes"], progress)

    def _accept_codec(self, metas) -> None:
        """Check that the files' model and codec fit this store; a store without a codec takes
        the one the files carry (all files must then share it)."""
        if self.readonly:
            raise StoreError(f"{self.path} is open read-only")
        current = self.store.meta().get("codec_id")
        want = current or metas[0][0]["codec_id"]
        for meta, source in metas:
            self.store.check_model(meta.get("model_id"))
            if meta["codec_id"] != want:
                where = f"{self.path} uses codec {want}" if current else f"the first file holds codec {want}"
                raise CodecError(f"{source} holds codes of codec {meta['codec_id']}, but {where}: import it "
                                 f"into a new --store (or one built with codec {meta['codec_id']})")
        if current:
            return
        raw = next((meta["codec"] for meta, _ in metas if meta.get("codec")), None)
        if raw is None:
            raise CodecError(f"{self.path} has no codec and {metas[0][1]} does not carry one: import a file "
                             f"written by `semdb export` first")
        codec = Codec.from_bytes(raw, source=metas[0][1])
        if codec.id != want:
            raise CodecError(f"{metas[0][1]}: the codec it carries ({codec.id}) is not the one its codes use ({want})")
        if not self.store.model_id() and metas[0][0].get("model_id"):
            with self.store.write() as w:
                w.set_meta("model_id", metas[0][0]["model_id"])
        self._install_codec(codec)

    def _import(self, sources, code_bytes: int, progress: Progress | None) -> dict:
        """Write rows in transactions of one batch (up to 4096 rows): an interrupted import
        keeps what it committed, and re-running it adds only the rest."""
        from . import arrow

        start = time.perf_counter()
        counts = {"added": 0, "updated": 0, "unchanged": 0}
        total, done = sum(n for _, n in sources), 0
        for batches, _ in sources:
            for batch in batches:
                with self.store.write() as w:
                    for item, code in arrow.to_items(batch, code_bytes):
                        old = w.item_by_path(item.path)
                        if old is None:
                            w.add_item(item, code=code)
                            counts["added"] += 1
                        elif (old.size, old.mtime_ns, old.hash, old.width, old.height) == \
                                (item.size, item.mtime_ns, item.hash, item.width, item.height):
                            counts["unchanged"] += 1  # the same file: its stored code stays
                        else:
                            w.update_item(Item(old.id, old.path, item.size, item.mtime_ns, item.hash, item.width,
                                               item.height, old.added, item.updated))
                            w.set_code(old.id, code)
                            counts["updated"] += 1
                    fault_point("import_txn")
                done += batch.num_rows
                if progress:
                    progress("importing", done, total)
        return {**counts, "items": self.store.count(), "seconds": round(time.perf_counter() - start, 3)}

    # --- query ----------------------------------------------------------------------------
    def query(self, text: str, k: int = 10, min_score: float | None = None) -> list[Hit]:
        """The k items closest to a text query, best first."""
        if not isinstance(text, str) or not text.strip():
            raise InputError("empty query text: give some words to search for")
        return self.query_vectors(self.embedder.encode_texts([text]), k, min_score)[0]

    def query_image(self, path, k: int = 10, min_score: float | None = None) -> list[Hit]:
        """The k items closest to an image file (which need not be in the store)."""
        if not os.path.exists(path):
            raise InputError(f"{display_path(path)}: query image not found")
        emb = self.embedder
        img = load_image(path, draft_size=emb.image_size)
        return self.query_vectors(emb.encode_images([img]), k, min_score)[0]

    def query_vectors(self, Q, k: int = 10, min_score: float | None = None) -> list[list[Hit]]:
        """Batched search with precomputed (nq, D) query embeddings of the store's model."""
        if k <= 0:
            raise InputError(f"k={k}: ask for at least one result")
        ids, index = self._search_index()
        if index is None:
            return [[] for _ in range(len(Q))]
        rows, scores = index.search(np.asarray(Q, np.float32), k)
        results = []
        for row, score in zip(rows, scores):
            keep = (row >= 0) & (score >= (min_score if min_score is not None else -np.inf))
            item_ids = ids[row[keep]]
            items = self.store.items(item_ids)
            results.append([Hit(it.path, float(s), int(it.id)) for it, s in zip(items, score[keep]) if it is not None])
        return results

    def _search_index(self):
        """(item ids, index) over the last committed codes; rebuilt only after a commit."""
        generation = self.store.meta().get("generation")
        if self._index is not None and self._index[0] == generation:
            return self._index[1], self._index[2]
        codec = self.codec
        if codec is None:  # fewer than MIN_TRAIN items: search their staged embeddings exactly
            staged = list(self.store.iter_staging())
            if self.store.codec_bytes() is not None:
                # The codec (and with it every code) was committed while staging was read, in
                # chunks: search the codes instead of a part of the staged rows.
                return self._search_index()
            ids = np.concatenate([i for i, _ in staged]) if staged else np.empty(0, np.uint64)
            index = FlatIndex(np.concatenate([e for _, e in staged]).astype(np.float32)) if staged else None
        else:
            ids, codes = self.store.load_codes()
            index = codec.index(np.asarray(codes)) if len(ids) else None
        self._index = (generation, ids, index)
        return ids, index

    # --- info -----------------------------------------------------------------------------
    def info(self) -> dict:
        """Counts, rate, size on disk, model and codec of the store."""
        raw = self.store.info()
        codec = self.codec
        out = {
            "path": raw["path"],
            "items": raw["items"],
            "staging": raw["staging"],
            "bytes_on_disk": raw["bytes_on_disk"],
            "schema": raw["schema"],
            "model": raw["model_id"],
            "codec": None,
            "bits_per_item": None,
            "entropy_bits_per_item": None,
        }
        if codec is not None:
            _, codes = self.store.load_codes()
            out["codec"] = {"id": codec.id, "arch": codec.arch, "bits": codec.bits, "m": codec.m, "k": codec.k,
                            "d": codec.config.get("d"), "trained_on": codec.config.get("n_train")}
            out["bits_per_item"] = codec.bits
            out["entropy_bits_per_item"] = round(codec.entropy_bits(np.asarray(codes)), 2) if len(codes) else None
        return out


def prepare_image(emb, path, max_megapixels):
    """(preprocessed tensor, (width, height)) of one image file, or (ImageError, reason)."""
    try:
        fault_point("decode")
        img = load_image(path, draft_size=emb.image_size, max_megapixels=max_megapixels)
        return emb.preprocess(img), img.size
    except ImageError as err:  # reads "PATH: reason"; keep the reason
        return err, str(err).removeprefix(display_path(path) + ": ")


def _try_hash(path):
    try:
        return content_hash(path)  # raises ImageError("PATH: reason") when the file cannot be read
    except ImageError as err:
        return err


def _prefetch(jobs, prepare, batch_size: int, workers: int):
    """Yield (jobs, [prepare(job) for each]) batch by batch, decoding ahead in worker threads.

    Decoding (threads, GIL released in Pillow) overlaps CLIP inference on the caller's thread;
    at most two batches are in flight so memory stays bounded.
    An exception in the producer is re-raised in the caller (else the caller would wait for
    the next batch forever); when the caller stops early, the producer stops too.
    """
    if not jobs:
        return
    out: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def put(value) -> bool:
        while not stop.is_set():
            try:
                out.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def producer():
        try:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for i in range(0, len(jobs), batch_size):
                    batch = jobs[i:i + batch_size]
                    if not put((batch, list(pool.map(prepare, batch)))):
                        return
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            put(e)
            return
        put(None)

    thread = threading.Thread(target=producer, daemon=True)
    thread.start()
    try:
        while (batch := out.get()) is not None:
            if isinstance(batch, BaseException):
                raise batch
            yield batch
    finally:
        stop.set()
    thread.join()
