"""`Store`: one store directory, opened for reading or (holding writer.lock) for writing.

Each read uses its own short LMDB read transaction and sees the last committed state; writes
go through `write()`, one atomic batch (Writer). A Store is not thread-safe.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import StoreError
from . import documents, recoding, segments, verify
from .codec_set import slot_of
from .format import (
    CorruptValue,
    Item,
    codec_key,
    codec_slots,
    decode_item_segment,
    int_key,
    items_of,
    ivf_meta_key,
    key_int,
)
from .ivf_rows import AssignLists, load_lists
from .opening import (
    DEFAULT_MAP_SIZE,
    OldSchema,
    attach,
    begin,
    default_store_path,
    detach,
    guard,
    lock_writer,
    migrate_for_reading,
)
from .reading import ReadView
from .writer import Writer


class LmdbHandles(NamedTuple):
    """A store's LMDB environment and named databases, for inspection and repair tools (and
    tests that damage a store on purpose): writing through them bypasses every check."""

    env: object
    dbs: dict


class Store:
    """Open (or create) the store in directory `path` (default: default_store_path())."""

    def __init__(
        self,
        path=None,
        create: bool = False,
        readonly: bool = False,
        wait: bool = False,
        map_size: int = DEFAULT_MAP_SIZE,
    ):
        self.path = Path(path).expanduser() if path is not None else default_store_path()
        self.readonly = readonly
        self._lock_fd = None
        self._environment = None
        self._writer = None
        data = self.path / "data.mdb"
        if not data.exists():
            if self.path.is_dir() and any(p.name not in ("writer.lock", "lock.mdb") for p in self.path.iterdir()):
                raise StoreError(
                    f"{self.path} is not a semdb store (no data.mdb); pass a new or empty directory to create one"
                )
            if self.path.exists() and not self.path.is_dir():
                raise StoreError(f"{self.path} is a file, not a semdb store directory")
            if readonly or not create:
                raise StoreError(f"no semdb store at {self.path}; run `semdb ingest` first")
            self.path.mkdir(parents=True, exist_ok=True)
        try:
            if not readonly:
                self._lock_fd = lock_writer(self.path, wait)
            try:
                self._environment = attach(self.path, readonly, map_size)
            except OldSchema as old:
                migrate_for_reading(self.path, old.args[0], map_size)
                self._environment = attach(self.path, readonly, map_size)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._writer is not None:
            self._writer.abort()
        if self._environment is not None:
            detach(self._environment)
            self._environment = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _open_environment(self):
        if self._environment is None:
            raise StoreError(f"{self.path}: store is closed")
        return self._environment

    @property
    def lmdb(self) -> LmdbHandles:
        environment = self._open_environment()
        return LmdbHandles(environment.env, environment.dbs)

    def drop_caches(self) -> None:
        """Forget what this process decoded or built from the store (codes, lookups, item
        segments); the next reads read it again."""
        self._open_environment().reset()

    @contextlib.contextmanager
    def _read(self):
        environment = self._open_environment()
        with guard(self.path):
            txn = begin(environment.env)
            try:
                yield ReadView(txn, environment)
            finally:
                txn.abort()

    # -- items -------------------------------------------------------------------------------

    def get_item(self, id: int) -> Item | None:
        with self._read() as v:
            return v.get_item(id)

    def item_by_path(self, path) -> Item | None:
        with self._read() as v:
            return v.item_by_path(path)

    def holds_frames(self) -> bool:
        """Whether the store holds video frames."""
        with self._read() as v:
            return v.holds_frames()

    def items_by_path(self, path) -> list[Item]:
        """Every item of the file: a photo's one, a video's frames in time order."""
        with self._read() as v:
            return v.items_by_path(path)

    def items_by_hash(self, h: str) -> list[Item]:
        with self._read() as v:
            return v.items_by_hash(h)

    def items(self, ids: Iterable[int]) -> list[Item | None]:
        ids = [int(i) for i in ids]
        with self._read() as v:
            return v.items(ids) if len(ids) > 16 else [v.get_item(i) for i in ids]

    def iter_items(self, batch: int = 1024) -> Iterator[Item]:
        """Every item in id order. Short read transactions of about `batch` items (whole
        segments): a long-lived one would keep LMDB from reusing the pages the caller's writes
        free meanwhile, and the file would grow."""
        start = b""
        while True:
            got: list[Item] = []
            with self._read() as v:
                cur = v.txn.cursor(db=v.dbs["itemsegs"])
                more = cur.set_range(start)
                while more and len(got) < batch:
                    key = bytes(cur.key())
                    got += items_of(v.item_segment(key))
                    start = int_key(key_int(key) + 1)
                    more = cur.next()
            yield from got
            if not more:
                return

    def iter_columns(self, batch: int = 64) -> Iterator[segments.Columns]:
        """Every item segment decoded as columns (ids, paths as bytes, sizes, dates taken...), in
        id order: what a scan of all items reads without building an Item per row. Short read
        transactions of `batch` segments, as iter_items; the process's segment cache is left alone."""
        start = b""
        while True:
            got: list[segments.Columns] = []
            with self._read() as v:
                cur = v.txn.cursor(db=v.dbs["itemsegs"])
                more = cur.set_range(start)
                while more and len(got) < batch:
                    key = bytes(cur.key())
                    got.append(decode_item_segment(cur.value()))
                    start = int_key(key_int(key) + 1)
                    more = cur.next()
            yield from got
            if not more:
                return

    def changed_item_segments(self, known: dict) -> tuple[dict, dict]:
        """Every item segment's tag, and the segments whose tag differs from `known` decoded
        (ReadView.changed_item_segments), in one read snapshot."""
        with self._read() as v:
            return v.changed_item_segments(known)

    def count(self) -> int:
        with self._read() as v:
            return v.item_count()

    # -- meta, model, codec ---------------------------------------------------------------------

    def meta(self) -> dict:
        with self._read() as v:
            return v.read_meta()

    def model_id(self) -> dict | None:
        return self.meta().get("model_id")

    def check_model(self, model_id: dict | None) -> None:
        """StoreError unless the store is unbound or bound to this CLIP model."""
        stored = self.model_id()
        if not stored or not model_id:
            return
        d1, d2 = stored.get("digest"), model_id.get("digest")
        same = stored.get("dim") == model_id.get("dim") and (
            d1 == d2
            if d1 and d2
            else (stored.get("name"), stored.get("pretrained")) == (model_id.get("name"), model_id.get("pretrained"))
        )
        if not same:
            name, tag = stored.get("name"), stored.get("pretrained")
            raise StoreError(
                f"{self.path} was built with CLIP model {name}{'/' + tag if tag else ''} (digest "
                f"{(d1 or '?')[:16]}, dim {stored.get('dim')}); open it with --model {name}"
                f"{' --pretrained ' + tag if tag else ''} or use a new --store"
            )

    def codec_bytes(self, codec_id: str | None = None) -> bytes | None:
        """The bytes of codec `codec_id` of the store's set (None: its first codec)."""
        with self._read() as v:
            slots = codec_slots(v.read_meta())
            if codec_id is not None and codec_id not in slots:
                return None
            return v.get(codec_key(0 if codec_id is None else slots.index(codec_id)), "codec")

    def codec_ids(self) -> list[str]:
        """The store's codecs, first codec first ([] before it has one)."""
        return [c for c in codec_slots(self.meta()) if c]

    def training_queries(self) -> np.ndarray | None:
        """Text query embeddings (float16 (n, dim)) recorded for training the codec, or None."""
        with self._read() as v:
            raw, shape = v.get(b"queries", "codec"), v.meta_get("training_queries")
        return None if raw is None or not shape else np.frombuffer(raw, np.float16).reshape(shape)

    def pending_codec_bytes(self) -> bytes | None:
        """The codec an unfinished retrain is moving the store to (None: no retrain pending)."""
        with self._read() as v:
            return v.get(b"pending", "codec")

    def recoded_ids(self) -> np.ndarray:
        """Ids (uint64, ascending) that already have a code under the pending codec."""
        with self._read() as v:
            return recoding.recoded_ids(v)

    def documents(self, ids: Iterable[int]) -> list[documents.Document | None]:
        """The documents kept beside items `ids` (None: the item has none), one snapshot."""
        with self._read() as v:
            return documents.read(v, [int(i) for i in ids])

    def document_ids(self) -> dict[str, int]:
        """{document id: item id} of every stored document, one snapshot."""
        with self._read() as v:
            return documents.id_map(v)

    # -- staging, codes, IVF ------------------------------------------------------------------------

    def staging_count(self) -> int:
        with self._read() as v:
            return v.txn.stat(v.dbs["staging"])["entries"]

    def iter_staging(self, batch: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Chunks of (ids uint64 (n,), float16 embeddings (n, dim)) in id order, each read in one
        short transaction with the dim of that snapshot (set by the commit that stages the
        first row: a writer may commit between two chunks)."""
        start = b""
        while True:
            with self._read() as v:
                cur = v.txn.cursor(db=v.dbs["staging"])
                rows = []
                if cur.set_range(start):
                    for k, val in cur:
                        rows.append((bytes(k), bytes(val)))
                        if len(rows) == batch:
                            break
                dim = v.meta_get("dim")
                if rows and (not dim or any(len(val) != 2 * dim for _, val in rows)):
                    raise CorruptValue(f"staging row width differs from dim {dim}")
            if rows:
                ids = np.array([key_int(k) for k, _ in rows], np.uint64)
                yield ids, np.frombuffer(b"".join(val for _, val in rows), np.float16).reshape(len(rows), dim)
            if len(rows) < batch:
                return
            start = rows[-1][0] + b"\0"  # smallest key after the last one

    def load_codes(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids uint64 (n,), codes uint8 (n, code_bytes)) of every coded item, one snapshot.

        Cached per process until the next commit (keyed by the meta generation counter);
        the arrays are read-only because they are shared between calls."""
        with self._read() as v:
            return v.load_codes()

    def load_code_groups(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{codec id: (ids, codes)} of every codec that holds codes, one snapshot (views of
        load_codes(), whose rows they split)."""
        with self._read() as v:
            ids, codes = v.load_codes()
            slices, slots = v.code_slices(), codec_slots(v.read_meta())
        return {slots[slot]: (ids[rows], codes[rows]) for slot, rows in slices.items()}

    def codes_by_id(self) -> dict:
        """{item id: packed code (a row of load_codes)} of every coded item, one snapshot."""
        ids, codes = self.load_codes()
        return dict(zip(ids.tolist(), codes))

    def ivf_meta(self, codec: str | None = None) -> dict | None:
        """The meta record of codec `codec`'s IVF (None: the store's first codec's), or None."""
        meta = self.meta()
        return meta.get(ivf_meta_key(slot_of(meta, codec, self.path)))

    def load_ivf(self, codec: str | None = None):
        """(generation, ivf meta, centroids float32 (nlist, dim), lists int64 aligned with the
        codes of codec `codec` (None: the store's first) in load_code_groups() of that
        generation, -1 where a code segment has no valid list row), or None without that IVF."""
        with self._read() as v:
            return load_lists(v, slot_of(v.read_meta(), codec, self.path))

    # -- the whole store ---------------------------------------------------------------------------

    def info(self) -> dict:
        with self._read() as v:
            meta = v.read_meta()
            counts = {
                "items": v.item_count(),
                "staging": v.txn.stat(v.dbs["staging"])["entries"],
                "coded": v.coded_count(),
                "segments": v.txn.stat(v.dbs["codes"])["entries"],
                "item_segments": v.txn.stat(v.dbs["itemsegs"])["entries"],
            }
        files = [self.path / "data.mdb", self.path / "lock.mdb"]
        data = files[0].stat().st_size if files[0].exists() else 0
        return {
            "path": str(self.path),
            **counts,
            "schema": meta.get("schema"),
            "code_bytes": meta.get("code_bytes"),
            "codec_id": meta.get("codec_id"),
            "codec_ids": [c for c in codec_slots(meta) if c],
            "model_id": meta.get("model_id"),
            "generation": meta.get("generation"),
            "created": meta.get("created"),
            "bytes_on_disk": sum(f.stat().st_size for f in files if f.exists()),
            "bytes_per_item": round(data / counts["items"], 1) if counts["items"] else None,
            "map_size": self._open_environment().env.info()["map_size"],
        }

    def verify(self, structure: bool = True) -> list[str]:
        """Every problem found, one line each; [] means the store is sound.

        With structure=True and a writable Store (which holds writer.lock, so the file is at
        rest) the LMDB file's pages are checked first, and a store whose pages are damaged is
        reported without being read through LMDB. Then the databases are checked against each
        other (semdb/store/verify.py)."""
        if structure and not self.readonly:
            damaged = verify.check_pages(self.path)
            if damaged:
                return damaged
        with self._read() as v:
            return verify.check_databases(v)

    # -- writes ------------------------------------------------------------------------------------

    def write(self, assign_ivf: AssignLists | None = None) -> Writer:
        """One atomic write batch; use as ``with store.write() as w:``. `assign_ivf` gives new
        codes their IVF lists in the same transaction (StoreContext.write passes its own);
        without it their list rows are left out, to be filled later."""
        if self.readonly:
            raise StoreError(f"{self.path} is open read-only")
        if self._writer is not None:
            raise StoreError(f"{self.path}: a write batch is already open on this store")
        self._writer = Writer(self._open_environment(), self.path, assign_ivf, on_close=self._writer_closed)
        return self._writer

    def _writer_closed(self) -> None:
        self._writer = None

    def compact(self) -> None:
        """Merge all small code segments into segments of up to CODE_SEGMENT_MAX items, and
        adjacent small item segments (one transaction)."""
        with self.write() as w:
            w.compact()
