"""The Python retrieval backend; the CLI is a thin layer over it.

    import semdb
    with semdb.open("photos.semdb", model="local-dir:/models/clip") as db:
        summary = db.ingest(["./photos"])
        hits = db.search("a red bicycle", k=10)       # [Hit(path, score, id), ...]

A `Database` is a facade: it owns one store with its model and codec (`context.py`) and hands
each call to the module that does the work: `ingest/`, `query.py`, `transfer.py`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from . import catalog
from .context import StoreContext
from .duplicates import find_duplicates
from .errors import InputError, StoreError
from .images import DEFAULT_MAX_MEGAPIXELS
from .info import describe
from .ingest import CodecPolicy, IngestOptions
from .ingest import ingest as run_ingest
from .ingest.documents import add_documents
from .ingest.embeddings import add_embeddings, read_embeddings, validated
from .ingest.retrain import RETRAIN_SAMPLE
from .ingest.retrain import retrain as run_retrain
from .progress import Progress
from .search.hit import Hit
from .search.request import DEFAULT_K, SearchRequest, Where
from .search.searcher import Searcher
from .store import Item, Store, default_store_path
from .tagging import classify as classify_items

__all__ = ["Database", "Hit", "Item", "SearchRequest", "open"]


def open(path=None, model: str | None = None, pretrained: str | None = None, **kwargs) -> Database:  # noqa: A001
    """Open the store at `path`, creating it if it does not exist: a `Database`.

    `path`: the store's folder (default: `$SEMDB_STORE`, else the user data folder).
    `model` / `pretrained`: the CLIP model of a new store, as `--model` / `--pretrained`
    (docs/CLI.md#models); a store remembers its model and refuses another. Keywords:
    `readonly` (beside a writer), `wait` (for another writer, rather than `StoreLockedError`),
    `device` ("cuda" for a GPU), `threads` (CPU threads for CLIP), `map_size` (the most the
    store's file may grow to, in bytes of address space; default 1 TiB), `embedder` (a loaded
    `Embedder` of the store's model), `create=False` (a missing store is a `StoreError`). The
    model loads on first use.

        with semdb.open("photos.semdb", model="local-dir:/models/clip") as db:
            db.ingest(["./photos"])
    """
    return Database(path, model=model, pretrained=pretrained, **kwargs)


def _nothing_at(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


class Database:
    """One store with its CLIP model and codec, as `semdb.open` (its arguments) returns it.
    Use it as a context manager, or call `close()`."""

    def __init__(
        self,
        path=None,
        model: str | None = None,
        pretrained: str | None = None,
        readonly: bool = False,
        wait: bool = False,
        device: str = "cpu",
        map_size: int | None = None,
        threads: int | None = None,
        embedder=None,
        create: bool = True,
    ):
        self.path = Path(os.path.abspath(Path(path).expanduser() if path else default_store_path()))
        self.readonly = readonly
        if (readonly or not create) and _nothing_at(self.path):  # (what is there but no store, the Store names)
            raise StoreError(f"{self.path}: no semdb store here yet; run `semdb ingest PATH --store {self.path}` first")
        self.store = Store(
            self.path,
            create=create and not readonly,
            readonly=readonly,
            wait=wait,
            **({"map_size": map_size} if map_size else {}),
        )
        try:
            self._ctx = StoreContext(self.store, model, pretrained, device=device, threads=threads, embedder=embedder)
        except BaseException:
            self.store.close()
            raise
        self._searcher = Searcher(self._ctx)
        self._listing = catalog.Listing(self.store)

    def close(self) -> None:
        """Close the store (and give up the writer's lock); `with semdb.open() as db:` does it."""
        self.store.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def embedder(self):
        """The CLIP model (loaded on first use): the one given or named, else the store's."""
        return self._ctx.embedder

    @property
    def model_loaded(self) -> bool:
        """Whether the CLIP model is loaded (a re-run that finds nothing to embed never loads it)."""
        return self._ctx.model_loaded

    @property
    def codec(self):
        """The store's codec, or None while its embeddings are still staged."""
        return self._ctx.codec

    # --- ingest ---------------------------------------------------------------------------
    def ingest(
        self, paths: Iterable, options: IngestOptions | None = None, *, progress: Progress | None = None, **fields
    ) -> dict:
        """Add new and changed images and videos under `paths`, as `semdb ingest`; return the
        summary `semdb ingest --json` prints. Every batch commits atomically: an interrupted
        ingest resumes where it stopped.

        `options`: an IngestOptions, or its fields as keywords, named as the command's options
        (docs/CLI.md#ingest): `bits`, `codec`, `batch_size`, `workers`, `max_megapixels`,
        `prune`, `train_now`, `captions`, `engine`, `ray_address`, `ray_shards`, `int8`,
        `retry_failed`; `policy` (a CodecPolicy: when the store trains its codec)."""
        if options is not None and fields:
            raise InputError("give IngestOptions, or its fields as keywords: not both")
        return run_ingest(self._ctx, paths, options or IngestOptions.of(**fields), progress).to_dict()

    def add_embeddings(
        self,
        paths,
        embeddings=None,
        *,
        model: str | None = None,
        pretrained: str | None = None,
        bits: int | None = None,
        train_now: bool = False,
        policy: CodecPolicy | None = None,
        progress: Progress | None = None,
    ) -> dict:
        """Store precomputed CLIP image embeddings `embeddings` (n, D) of the files `paths`, as
        `semdb ingest --embeddings` (docs/CLI.md#precomputed-embeddings); or read them from
        `paths`, a file or folder (then `embeddings` may name the paths file). `model` /
        `pretrained`: their CLIP model (default: the store's). `bits`, `train_now`, `policy`,
        `progress`: as for `ingest`, whose summary it returns.

            db.add_embeddings(["a.jpg", "b.jpg"], X, model="ViT-B-32")   # X: (2, 512) float32
        """
        if embeddings is None or isinstance(embeddings, (str, os.PathLike)):
            data = read_embeddings(paths, embeddings)
        else:
            data = validated(list(paths), embeddings, "embeddings")
        model_id = None
        if model or pretrained:
            from .clip.embedder import resolve_model  # noqa: PLC0415 (torch: loaded only when a model is named)

            name, tag = resolve_model(model, pretrained)
            model_id = {"name": name, "pretrained": tag}
        return add_embeddings(
            self._ctx, data, model_id, policy or CodecPolicy(bits=bits, train_now=train_now), progress
        ).to_dict()

    def add_documents(self, documents, embeddings, model_id: dict, policy: CodecPolicy | None = None, known=None):
        """Store documents ((semdb.store.documents.Document, image file or None) pairs) and their
        embeddings (n, D), made by the model `model_id` names, in one transaction; returns their
        item ids. semdb.langchain writes through it."""
        return add_documents(self._ctx, list(documents), embeddings, model_id, policy or CodecPolicy(), known)

    def retrain(
        self,
        bits: int | None = None,
        sample: int | None = None,
        batch_size: int = 32,
        workers: int | None = None,
        max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS,
        progress: Progress | None = None,
        captions=None,
    ) -> dict:
        """A new codec for what the store holds now, as `semdb retrain` (docs/CLI.md#retrain):
        trained on `sample` stored files embedded again (default 20,000), `bits` per item
        (default: the current codec's), `captions` as for `ingest`. Returns the command's
        `--json` summary (`items`, `trained_on`, `reembedded`, `transcoded`, `codec`, ...)."""
        return run_retrain(
            self._ctx, bits, sample or RETRAIN_SAMPLE, batch_size, workers, max_megapixels, progress, captions
        ).to_dict()

    # --- search: one vocabulary (SearchRequest, semdb/search/request.py) --------------------------
    def search(self, query=None, k: int = DEFAULT_K, **options) -> list[Hit]:
        """The `k` items closest to one query, best first: a list of `Hit`, as `semdb query`.

        `query`: a text with rclip's arithmetic ("2:cat + ./x.jpg - dog": weighted terms, image
        files by path), or a `SearchRequest` (then nothing else). `options`: those of
        `SearchRequest.of` (`image`, `like`, `vector`, `under`, `after`, `before`, `within`,
        `min_score`, `nprobe`, `frames`, `files`). A bad value raises `InputError`.

            hits = db.search("a dog on a beach", k=5, under="~/Pictures/2023", after="2023-06-01")
        """
        if isinstance(query, SearchRequest):
            if options or k != DEFAULT_K:
                raise InputError("give a SearchRequest alone, or search()'s arguments: not both")
            request = query
        else:
            request = SearchRequest.of(query, k=k, **options)
        if request.vector is not None and len(request.vector) > 1:
            raise InputError(f"search() answers one query, not {len(request.vector)}: use search_vectors()")
        return self._searcher.search(request)[0]

    def search_vectors(self, vectors, k: int = DEFAULT_K, **filters) -> list[list[Hit]]:
        """search() for each row of `vectors` (nq, D), query embeddings of the store's model, in
        one scan: a list of hits per row. `filters`: search()'s options but a query."""
        return self._searcher.search(SearchRequest.of(vector=vectors, k=k, **filters))

    def warm(self) -> None:
        """Load both CLIP towers and build the search index now rather than on the first query
        (what a server does before it answers)."""
        self.embedder.load_image_tower()
        self.embedder.encode_texts(["warm up"])
        self._searcher.index()

    def item(self, item_id: int):
        """The stored `Item` with this id (path, size, mtime, hash, width, height, taken...), or None."""
        return self.store.get_item(int(item_id))

    # --- what the store holds: list, count, remove (catalog.py) ------------------------------
    def ls(self, under=None, after=None, before=None, *, offset: int = 0, limit: int | None = None) -> list[Item]:
        """Stored `Item`s newest first, as `semdb ls`: `limit` of them (None: all) from `offset`.
        `under` a folder, `after` (inclusive) / `before` (exclusive) a date taken ("YYYY-MM-DD",
        ISO text, date or datetime)."""
        return self._listing.ls(Where.of(under, after, before), offset, limit)

    def count(self, under=None, after=None, before=None) -> int:
        """How many items ls() with these filters lists in all."""
        return self._listing.count(Where.of(under, after, before))

    def tally(self, under=None, after=None, before=None) -> dict:
        """{"photos", "frames", "videos"}: of the items ls() lists with these filters, how many
        are photos and video frames, and of how many videos."""
        return self._listing.tally(Where.of(under, after, before))

    def rm(self, targets: Iterable = (), *, under=None, dry_run: bool = False) -> list[Item]:
        """Remove items from the store in one commit, never their files, as `semdb rm`: each of
        `targets` an item id (int) or a path (a stored file, or a folder: every item under it),
        and every item `under` a folder. Returns the items removed (`dry_run`: that would be), in
        id order; `InputError`, and nothing removed, when one of `targets` names nothing stored.

            db.rm([1234, "~/Pictures/old"], dry_run=True)
        """
        items = catalog.removal(self.store, targets, under)
        if items and not dry_run:
            catalog.remove(self.store, [it.id for it in items])
        return items

    def duplicates(self, threshold: float | None = None) -> dict:
        """Near-duplicate groups, as `semdb duplicates --json`: {"threshold", "groups": [{"ids",
        "paths", "min_similarity", "exact", "copies"}, ...]}, largest first. `threshold`: the
        cosine (default 0.95 less the codec's noise); `exact`: one content; `copies`: ids
        sharing one."""
        return find_duplicates(self._ctx, self._searcher, threshold)

    def classify(self, labels, prompt: str = "a photo of a {}.") -> list[dict]:
        """Zero-shot label of every item, as `semdb tag`: [{"id", "path", "label", "score"}] in
        id order, the label whose `prompt` scores best; a video is one row (with its "time")."""
        return classify_items(self._ctx, self._searcher, labels, prompt)

    # --- export and import (Arrow / Parquet) -----------------------------------------------
    def export_batches(self, batch_size: int = 65536):
        """The store as Arrow record batches in id order: (schema, iterator of batches).
        The schema's metadata carries the codec, its id and the model identity."""
        from . import transfer  # noqa: PLC0415 (pyarrow: imported only when used)

        return transfer.export_batches(self._ctx, batch_size)

    def to_arrow(self):
        """Every item as a pyarrow Table (columns and metadata: docs/CLI.md#export-and-import)."""
        import pyarrow as pa  # noqa: PLC0415 (imported only when used)

        sch, batches = self.export_batches()
        return pa.Table.from_batches(list(batches), schema=sch)

    def export(self, out, progress: Progress | None = None) -> dict:
        """Write every item to the Parquet file `out` (replaced atomically), as `semdb export`
        (columns: docs/CLI.md); return {"path", "items", "bytes", "seconds"}."""
        from . import transfer  # noqa: PLC0415 (pyarrow: imported only when used)

        return transfer.export(self._ctx, out, progress)

    def import_arrow(self, table, progress: Progress | None = None) -> dict:
        """Merge a table written by to_arrow()/export() into this store; see import_parquet."""
        from . import transfer  # noqa: PLC0415 (pyarrow: imported only when used)

        return transfer.import_arrow(self._ctx, table, progress)

    @staticmethod
    def check_exports(paths) -> None:
        """`InputError` unless every file is a semdb export: call it before opening a new store
        to import into, so that a wrong file leaves no empty store behind."""
        from . import transfer  # noqa: PLC0415 (pyarrow: imported only when used)

        transfer.open_exports(paths)

    def import_parquet(self, paths, progress: Progress | None = None) -> dict:
        """Merge Parquet exports into this store, as `semdb import` (docs/CLI.md#export-and-import:
        which rows are added or update an item, which keep their id); the files must hold codes
        of this store's codec (a new store takes theirs). Returns {"added", "updated",
        "unchanged", "items", "seconds"}."""
        from . import transfer  # noqa: PLC0415 (pyarrow: imported only when used)

        return transfer.import_parquet(self._ctx, paths, progress)

    # --- info -----------------------------------------------------------------------------
    def codes(self) -> dict:
        """{item id: packed code (bytes)} of every coded item, from one snapshot of the store."""
        return self.store.codes_by_id()

    def info(self) -> dict:
        """What `semdb info --json` prints: `path`, `items`, `staging`, `bits_per_item`,
        `bytes_on_disk`, `bytes_per_item`, `model`, `codec`, `ivf` (the first codec's), `codec_trains_at`,
        `codecs` (the store's set, each with its `ivf`), `waiting` (photos no codec takes yet), `retrain_advice`,
        `retrain_pending`."""
        return describe(self.store, self._ctx.codecs)
