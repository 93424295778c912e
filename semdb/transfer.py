"""Export a store to Arrow/Parquet and import such files into a store (row format: arrow.py).

store --export_batches--> Arrow record batches (schema metadata: codec, its id, model)
      --export--> Parquet file (written to a temp name, then renamed)
Parquet files / Arrow table --import--> merged into a store, one transaction per 4096 rows
"""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path

import numpy as np

from . import arrow
from .codec import Codec
from .context import StoreContext
from .errors import CodecError, InputError, StoreError, display_path
from .faults import fault_point
from .progress import Progress, report
from .store import Item

IMPORT_BATCH = 4096  # rows per import transaction


def export_batches(ctx: StoreContext, batch_size: int = 65536):
    """The store as Arrow record batches in id order: (schema, iterator of batches)."""
    codec = ctx.codec
    if codec is None:
        raise StoreError(
            f"{ctx.path} has no codec yet (it holds {ctx.store.staging_count()} staged "
            f"embeddings): ingest more images, or train it with "
            f"`semdb ingest --train-now --store {shlex.quote(str(ctx.path))}`"
        )
    others = {c.id: c.to_bytes() for c in ctx.codecs.values() if c.id != codec.id}
    sch = arrow.schema(
        codec.code_bytes, arrow.make_meta(codec.id, codec.code_bytes, ctx.store.model_id(), codec.to_bytes(), others)
    )
    groups = ctx.store.load_code_groups()
    ids = np.concatenate([g[0] for g in groups.values()] or [np.empty(0, np.uint64)])
    codes = np.concatenate([g[1] for g in groups.values()] or [np.empty((0, codec.code_bytes), np.uint8)])
    of = np.concatenate([np.full(len(g[0]), n) for n, g in enumerate(groups.values())] or [np.empty(0, int)])
    names = [None if c == codec.id else c for c in groups]
    staged = {int(i): e.tobytes() for chunk, embs in ctx.store.iter_staging() for i, e in zip(chunk, embs)}
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]

    def batch(items):
        want = np.array([it.id for it in items], np.uint64)
        pos = np.minimum(np.searchsorted(sorted_ids, want), max(len(sorted_ids) - 1, 0))
        coded = sorted_ids[pos] == want if len(sorted_ids) else np.zeros(len(want), bool)
        # an item with neither a code nor a staged row in the snapshot was added after it: left out
        kept = [k for k, (it, ok) in enumerate(zip(items, coded)) if ok or it.id in staged]
        rows = order[pos[kept]]
        return arrow.to_batch(
            [items[k] for k in kept],
            np.where(coded[kept][:, None], codes[rows], 0),
            codec.code_bytes,
            [names[of[r]] if coded[k] else None for k, r in zip(kept, rows)],
            [None if coded[k] else staged[items[k].id] for k in kept],
        )

    def batches():
        chunk = []
        for item in ctx.store.iter_items(batch=4096):
            chunk.append(item)
            if len(chunk) == batch_size:
                yield batch(chunk)
                chunk = []
        if chunk:
            yield batch(chunk)

    return sch, batches()


def export(ctx: StoreContext, out, progress: Progress | None = None) -> dict:
    import pyarrow.parquet as pq  # noqa: PLC0415  (pyarrow: only for export and import)

    start = time.perf_counter()
    if os.fspath(out).endswith(("/", os.sep)) or Path(out).is_dir():
        raise InputError(
            f"--out {display_path(out)} is a folder: give the file to write, e.g. "
            f"{display_path(Path(out) / 'photos.parquet')}"
        )
    out = Path(out)
    if not out.parent.is_dir():
        raise InputError(f"{display_path(out)}: folder {display_path(out.parent)} does not exist")
    sch, batches = export_batches(ctx)
    total, done = ctx.store.count(), 0
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with pq.ParquetWriter(tmp, sch, compression="zstd") as writer:
            for batch in batches:
                writer.write_batch(batch)
                done += batch.num_rows
                report(progress, "exporting", done, total)
        os.replace(tmp, out)  # a reader never sees half a file
    except OSError as e:
        raise InputError(f"{display_path(out)}: cannot write ({e.strerror or e})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return {
        "path": os.fspath(out),
        "items": done,
        "bytes": out.stat().st_size,
        "seconds": round(time.perf_counter() - start, 3),
    }


def import_arrow(ctx: StoreContext, table, progress: Progress | None = None) -> dict:
    meta = arrow.read_meta(table.schema, "table")
    arrow.check_columns(table.schema, meta["code_bytes"], "table")
    _accept_codec(ctx, [(meta, "table")])
    return _merge(ctx, [(table.to_batches(max_chunksize=IMPORT_BATCH), table.num_rows)], meta["code_bytes"], progress)


def import_parquet(ctx: StoreContext, paths, progress: Progress | None = None) -> dict:
    files = open_exports(paths)
    _accept_codec(ctx, [(meta, source) for _, meta, source in files])
    return _merge(
        ctx,
        [(pf.iter_batches(batch_size=IMPORT_BATCH), pf.metadata.num_rows) for pf, _, _ in files],
        files[0][1]["code_bytes"],
        progress,
    )


def open_exports(paths) -> list:
    """[(ParquetFile, semdb metadata, name to show)] of every file, each checked to be a semdb
    export (InputError, one line, otherwise): done before anything is written."""
    import pyarrow as pa  # noqa: PLC0415  (pyarrow: only for export and import)
    import pyarrow.parquet as pq  # noqa: PLC0415  (pyarrow: only for export and import)

    files = []
    for path in paths:
        source = display_path(path)
        try:
            pf = pq.ParquetFile(path)
        except FileNotFoundError:
            raise InputError(f"{source}: no such file") from None
        except IsADirectoryError:
            raise InputError(f"{source} is a folder: give the Parquet files written by `semdb export`") from None
        except (OSError, pa.ArrowException) as e:
            raise InputError(f"{source}: not a Parquet file ({str(e).splitlines()[0]})") from None
        meta = arrow.read_meta(pf.schema_arrow, source)
        arrow.check_columns(pf.schema_arrow, meta["code_bytes"], source)
        files.append((pf, meta, source))
    if not files:
        raise InputError("no Parquet files given to import")
    return files


def _accept_codec(ctx: StoreContext, metas) -> None:
    """Check that the files' model and codec fit this store; a store without a codec takes
    the one the files carry (all files must then share it)."""
    store = ctx.store
    if store.readonly:
        raise StoreError(f"{ctx.path} is open read-only")
    current = store.meta().get("codec_id")
    want = current or metas[0][0]["codec_id"]
    for meta, source in metas:
        store.check_model(meta.get("model_id"))
        if meta["codec_id"] != want:
            where = f"{ctx.path} uses codec {want}" if current else f"the first file holds codec {want}"
            raise CodecError(
                f"{source} holds codes of codec {meta['codec_id']}, but {where}: import it "
                f"into a new --store (or one built with codec {meta['codec_id']})"
            )
    if not current:
        _take_first_codec(ctx, metas, want)
    held = set(store.codec_ids())
    with store.write() as w:  # the other codecs the files' codes were written by
        for meta, _ in metas:
            for codec_id, raw in meta["codecs"].items():
                if codec_id not in held:
                    w.add_codec(raw, codec_id, meta["code_bytes"])
                    held.add(codec_id)


def _take_first_codec(ctx: StoreContext, metas, want: str) -> None:
    store = ctx.store
    raw = next((meta["codec"] for meta, _ in metas if meta.get("codec")), None)
    if raw is None:
        raise CodecError(
            f"{ctx.path} has no codec and {metas[0][1]} does not carry one: import a file "
            f"written by `semdb export` first"
        )
    codec = Codec.from_bytes(raw, source=metas[0][1])
    if codec.id != want:
        raise CodecError(f"{metas[0][1]}: the codec it carries ({codec.id}) is not the one its codes use ({want})")
    if not store.model_id() and metas[0][0].get("model_id"):
        with store.write() as w:
            w.set_meta("model_id", metas[0][0]["model_id"])
    ctx.install_codec(codec)


def _merge(ctx: StoreContext, sources, code_bytes: int, progress: Progress | None) -> dict:
    """Write rows in transactions of one batch: an interrupted import keeps what it committed,
    and re-running it adds only the rest. A stored path keeps its code when its file is the
    same (size, mtime, content hash, dimensions), else takes the row's metadata and code."""
    start = time.perf_counter()
    counts = {"added": 0, "updated": 0, "unchanged": 0}
    total, done = sum(n for _, n in sources), 0
    for batches, _ in sources:
        for batch in batches:
            with ctx.write() as w:  # new codes get their IVF lists in this transaction
                for item, vector in arrow.to_items(batch, code_bytes):
                    old = w.item_at(item.path, item.frame_ms)
                    if old is None:  # keeps its id if that is free: above every id this store used
                        w.add_item(item, keep_id=True, **vector)
                        counts["added"] += 1
                    elif (old.size, old.mtime_ns, old.hash, old.width, old.height) == (
                        item.size,
                        item.mtime_ns,
                        item.hash,
                        item.width,
                        item.height,
                    ):
                        counts["unchanged"] += 1
                    else:
                        w.update_item(
                            Item(
                                old.id,
                                old.path,
                                item.size,
                                item.mtime_ns,
                                item.hash,
                                item.width,
                                item.height,
                                old.added,
                                item.updated,
                                item.taken,
                                old.frame_ms,
                                item.duration_ms,
                            )
                        )
                        if "code" in vector:
                            w.set_code(old.id, vector["code"], vector["codec"])
                        else:
                            w.set_embedding(old.id, vector["embedding"])
                        counts["updated"] += 1
                fault_point("import_txn")
            done += batch.num_rows
            report(progress, "importing", done, total)
    return {**counts, "items": ctx.store.count(), "seconds": round(time.perf_counter() - start, 3)}
