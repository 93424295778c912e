"""Commands that fill and keep a store: ingest, retrain, info, export, import, ls, rm."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import typer
from rich.text import Text

from ..api import Database
from ..errors import InputError
from ..images import check_paths
from ..ingest import IngestOptions
from ..ingest.training import MIN_TRAIN
from . import listing
from .base import (
    BatchSizeOption,
    CaptionsOption,
    ModelOption,
    PretrainedOption,
    StoreOption,
    ThreadsOption,
    WaitOption,
    WorkersOption,
    app,
    bits_option,
    counted,
    err,
    examples,
    exclusive,
    json_option,
    media,
    print_columns,
    print_json,
    print_summary,
    progress_display,
    say,
    user_errors,
)


@app.command(epilog=examples("semdb ingest ~/Pictures", "semdb ingest ~/Pictures --store photos.semdb --prune"))
def ingest(
    paths: list[Path] | None = typer.Argument(
        None, metavar="PATHS", help="Image files or folders (searched recursively)."
    ),
    store: StoreOption = None,
    model: ModelOption = None,
    pretrained: PretrainedOption = None,
    bits: int | None = bits_option(
        "Bits per image of the codec a new store trains (a multiple of 4, at most 4096; default 256, "
        "recorded: later ingests keep it)."
    ),
    codec: Path | None = typer.Option(None, "--codec", help="Use this codec file instead of training one."),
    train_now: bool = typer.Option(
        False,
        "--train-now",
        help="Train the codec on what is staged, however few (default: wait for enough images); "
        "without PATHS: on what the store holds.",
    ),
    captions: CaptionsOption = None,
    embeddings: Path | None = typer.Option(
        None,
        "--embeddings",
        help="Store precomputed CLIP image embeddings instead of PATHS: a clip-retrieval folder (img_emb/, "
        "metadata/), a .npz (image_emb + image_path) or a .npy with --paths.",
    ),
    paths_file: Path | None = typer.Option(
        None, "--paths", help="With --embeddings FILE.npy: the image paths, one per line, row-aligned."
    ),
    batch_size: BatchSizeOption = 32,
    workers: WorkersOption = None,
    max_megapixels: float = typer.Option(100.0, "--max-megapixels", min=0, help="Refuse larger images (0: no limit)."),
    prune: bool = typer.Option(False, "--prune", help="Remove items whose files are gone."),
    retry_failed: bool = typer.Option(
        False, "--retry-failed", help="Try again the files that failed before (skipped while unchanged)."
    ),
    wait: WaitOption = False,
    threads: ThreadsOption = None,
    engine: str = typer.Option(
        "local",
        "--engine",
        help="local, or ray: hash, decode, embed and encode on a Ray cluster (pip install 'semdb[ray]').",
    ),
    ray_address: str | None = typer.Option(
        None,
        "--ray-address",
        help="Ray cluster address (default: the cluster `ray start` runs on this machine, else a new local one).",
    ),
    ray_shards: Path | None = typer.Option(
        None,
        "--ray-shards",
        help="Folder for the Ray workers' Parquet shards; shared by every node (default: STORE/ray-shards).",
    ),
    int8: bool = typer.Option(
        False, "--int8", help="Embed with the int8 ONNX image tower: faster on a CPU, slightly different embeddings."
    ),
    as_json: json_option("Print the summary as JSON (with peak_rss_mb).") = False,
):
    """Embed, compress and store the images under PATHS (re-runs skip unchanged files)."""
    if train_now and not paths and embeddings is None:
        return _train_staged(store, bits, captions, wait, threads, as_json)
    with user_errors():
        if bool(paths) == (embeddings is not None):
            raise InputError("give image PATHS, or --embeddings SOURCE (not both), or --train-now alone")
        check_paths(paths or ())  # before the store is made and the model loads
        # imported embeddings name their model (recorded by name, bound when first loaded): not loaded here
        chosen = {"model": model, "pretrained": pretrained} if embeddings is None else {}
        progress, update = progress_display(enabled=not as_json)
        with Database(store, wait=wait, threads=threads, **chosen) as db, progress:
            if embeddings is not None:
                summary = db.add_embeddings(
                    embeddings,
                    paths_file,
                    model=model,
                    pretrained=pretrained,
                    bits=bits,
                    train_now=train_now,
                    progress=update,
                )
            else:
                options = IngestOptions.of(
                    bits=bits,
                    codec=codec,
                    batch_size=batch_size,
                    workers=workers,
                    prune=prune,
                    max_megapixels=max_megapixels or None,
                    engine=engine,
                    ray_address=ray_address,
                    ray_shards=ray_shards,
                    train_now=train_now,
                    captions=captions,
                    int8=int8,
                    retry_failed=retry_failed,
                )
                summary = db.ingest(paths, options, progress=update)
            trained_bits = db.codec.bits if summary["codec_trained"] else None
    if not as_json:
        for failure in summary["failures"]:
            err.print(
                Text.assemble(("failed:", "yellow"), f" {failure['path']}: {failure['reason']}"),
                highlight=False,
                soft_wrap=True,
            )
        if summary["missing"]:
            gone = summary["missing"]
            say(
                f"note: the {'file' if gone == 1 else 'files'} of {counted(gone, 'stored item')} "
                f"{'is' if gone == 1 else 'are'} gone; run this ingest again with --prune to remove "
                f"{'it' if gone == 1 else 'them'}"
            )
        if summary.get("failed_before"):
            err.print(
                Text.assemble(
                    ("note:", "yellow"),
                    f" skipped {counted(summary['failed_before'], 'file')} that failed before and "
                    f"{'is' if summary['failed_before'] == 1 else 'are'} unchanged (`--retry-failed` to try again)",
                ),
                soft_wrap=True,
            )
        if trained_bits:
            _say_compressed(summary["items"], trained_bits)
        for path in summary["no_images"]:
            err.print(Text.assemble(("note:", "yellow"), f" no images found in {path}"), soft_wrap=True)
        _print_codec_notes(summary, store)
    print_summary(
        summary,
        as_json,
        "ingest",
        keys=(
            "new",
            "changed",
            "unchanged",
            "moved",
            "duplicate",
            "failed",
            "failed_before",
            "pruned",
            "missing",
            "items",
            "staged",
            "seconds",
            *(["images_per_second"] if summary["images_per_second"] else []),
        ),
    )


def _train_staged(store, bits, captions, wait, threads, as_json) -> None:
    """`semdb ingest --train-now` without PATHS: compress what the store holds now, which is
    the retrain of a store that has no codec yet."""
    with user_errors():
        progress, update = progress_display(enabled=not as_json)
        with Database(store, wait=wait, threads=threads, create=False) as db, progress:
            if db.codec is not None:
                raise InputError(f"{db.path} is compressed already (codec {db.codec.id}): `semdb retrain` trains anew")
            summary = db.retrain(bits=bits, captions=captions, progress=update)
            trained_bits = db.codec.bits
    if not as_json:
        _say_compressed(summary["trained_on"], trained_bits)
    print_summary(summary, as_json, "train")


def _say_compressed(items: int, bits: int) -> None:
    say(f"compressed: the codec is trained; the store's {counted(items, 'item')} now take {bits} bits each")


def _print_codec_notes(facts: dict, store) -> None:
    """What the user should know about the store's codec: not trained yet, or due a retrain."""
    where = f" --store {store}" if store else ""
    if facts.get("staged"):
        err.print(
            Text(
                f"note: {media(facts['staged'], facts.get('staged_frames', 0))} "
                f"{'is' if facts['staged'] == 1 else 'are'} stored uncompressed (searched exactly) until the store "
                f"holds {MIN_TRAIN}; `semdb ingest --train-now{where}` compresses "
                f"{'it' if facts['staged'] == 1 else 'them'} now"
            ),
            soft_wrap=True,
        )
    if facts.get("retrain_advice"):
        err.print(
            Text.assemble(("note:", "yellow"), f" {facts['retrain_advice']}: run `semdb retrain{where}`"),
            soft_wrap=True,
        )


@app.command(epilog=examples("semdb retrain", "semdb retrain --bits 128 --captions searches.txt"))
def retrain(
    store: StoreOption = None,
    bits: int | None = bits_option("Bits per image of the new codec (default: the current codec's)."),
    sample: int | None = typer.Option(
        None, "--sample", min=2, help="Stored files re-embedded to train on (default 20000)."
    ),
    batch_size: BatchSizeOption = 32,
    workers: WorkersOption = None,
    threads: ThreadsOption = None,
    wait: WaitOption = False,
    captions: CaptionsOption = None,
    as_json: json_option("Print the summary as JSON.") = False,
):
    """Train a new codec on what the store holds now and re-encode every item (resumable)."""
    with user_errors():
        progress, update = progress_display(enabled=not as_json)
        with Database(store, wait=wait, threads=threads, create=False) as db, progress:
            summary = db.retrain(
                bits=bits, sample=sample, batch_size=batch_size, workers=workers, progress=update, captions=captions
            )
    print_summary(summary, as_json, "retrain")


@app.command(epilog=examples("semdb info", "semdb info --store photos.semdb --json"))
def info(
    store: StoreOption = None,
    as_json: json_option("Print as JSON.") = False,
):
    """Items, bits per item (fixed and entropy-coded), size on disk, model and codec."""
    with user_errors():
        with Database(store, readonly=True) as db:
            facts = db.info()
    if as_json:
        print_json(facts)
        return
    model = facts["model"] or {}
    codec = facts["codec"] or {}
    rows = [
        ("path", facts["path"]),
        ("items", facts["items"]),
        ("staging embeddings", facts["staging"]),
        ("bits per item", facts["bits_per_item"]),
        ("entropy-coded bits per item", facts["entropy_bits_per_item"]),
        ("bytes on disk", f"{facts['bytes_on_disk']:,}"),
        ("bytes per item on disk", facts["bytes_per_item"]),
        (
            "model",
            f"{model.get('name')} {model.get('pretrained') or ''} (dim {model.get('dim')}, "
            f"digest {model.get('digest')})"
            if model
            else "-",
        ),
        (
            "codec",
            f"{codec.get('id')} {codec.get('arch')} M={codec.get('m')} K={codec.get('k')} d={codec.get('d')}, "
            f"trained on {codec.get('trained_on')}"
            if codec
            else f"none yet: not compressed until the store holds {facts['codec_trains_at']} items "
            f"(or `semdb ingest --train-now --store {shlex.quote(facts['path'])}`)",
        ),
        *(
            (
                f"codec {n + 1} of {len(facts['codecs'])}",
                f"{c['id']}: {c['items']} items, trained on {c['trained_on']}"
                + (f" at {_when(c['trained_at'])}" if c["trained_at"] else "")
                + (f", shift ratio {c['shift_ratio']}" if c["shift_ratio"] is not None else "")
                + (f", IVF of {c['ivf']['nlist']} lists" if c["ivf"] else ""),
            )
            for n, c in enumerate(facts["codecs"])
            if len(facts["codecs"]) > 1
        ),
        *(
            [
                (
                    "waiting for a codec",
                    f"{facts['waiting']} photos unlike every codec, searched exactly until {MIN_TRAIN} wait",
                )
            ]
            if facts["waiting"]
            else []
        ),
        ("encoded since training", codec.get("encoded_since")),
        ("drift ratio", codec.get("drift_ratio")),
        ("shift ratio", codec.get("shift_ratio")),
        ("retrain", _retrain_state(facts)),
    ]
    print_columns(None, [(key, "-" if value is None else value) for key, value in rows])


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def _retrain_state(facts: dict) -> str:
    pending, sample = facts["retrain_pending"], facts["retrain_sample"]
    if pending:
        return f"in progress: {pending['recoded']} of {pending['items']} re-encoded; run `semdb retrain` to finish"
    if sample:
        return f"interrupted while training; `semdb retrain` resumes from its re-embedded sample ({sample})"
    return facts["retrain_advice"] or "not needed"


@app.command("export", epilog=examples("semdb export --out photos.parquet"))
def export_(
    out_path: str = typer.Option(..., "--out", help="Parquet file to write (replaced atomically)."),
    store: StoreOption = None,
    as_json: json_option("Print the summary as JSON.") = False,
):
    """Write every item (metadata and packed code) to a Parquet file, with the codec and model."""
    with user_errors():
        progress, update = progress_display(enabled=not as_json)
        with Database(store, readonly=True) as db, progress:
            summary = db.export(out_path, progress=update)
    print_summary(summary, as_json, "export")


@app.command("import", epilog=examples("semdb import photos.parquet --store copy.semdb"))
def import_(
    files: list[Path] = typer.Argument(..., metavar="FILES", help="Parquet files written by `semdb export`."),
    store: StoreOption = None,
    wait: WaitOption = False,
    as_json: json_option("Print the summary as JSON.") = False,
):
    """Merge Parquet exports into a store (same codec; a new store takes theirs). Idempotent."""
    with user_errors():
        Database.check_exports(files)  # before the store is opened: a wrong file leaves no new store behind
        progress, update = progress_display(enabled=not as_json)
        with Database(store, wait=wait) as db, progress:
            summary = db.import_parquet(files, progress=update)
    print_summary(summary, as_json, "import")


@app.command("ls", epilog=examples("semdb ls -n 20", "semdb ls --under ~/Pictures/2024 --json"))
def ls_(
    under: Path | None = typer.Option(None, "--under", help="Only items whose file is under this folder."),
    after: str | None = typer.Option(None, "--after", help="Only photos taken on or after this date (YYYY-MM-DD)."),
    before: str | None = typer.Option(None, "--before", help="Only photos taken before this date (YYYY-MM-DD)."),
    limit: int | None = typer.Option(None, "-n", "--limit", help="At most this many items (default: all)."),
    offset: int = typer.Option(0, "--offset", help="Skip this many items first (the next page)."),
    store: StoreOption = None,
    as_json: json_option('Print [{"id", "path", "taken", "size", ...}] as JSON.') = False,
    paths_only: bool = typer.Option(False, "--paths-only", help="Print one path per line."),
):
    """List the stored items, newest first (by date taken): id, date taken, size, path."""
    with user_errors():
        exclusive(("--json", as_json), ("--paths-only", paths_only))
        with Database(store, readonly=True) as db:
            items = db.ls(under, after, before, offset=offset, limit=limit)
    listing.print_items(items, as_json, paths_only, listing.nothing(under, after, before, offset))


@app.command(epilog=examples("semdb rm 12 40", "semdb rm --under ~/Pictures/old --dry-run"))
def rm(
    targets: list[str] | None = typer.Argument(None, help="Item ids, or paths of stored files or folders."),
    under: Path | None = typer.Option(None, "--under", help="Every item whose file is under this folder."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be removed; remove nothing."),
    store: StoreOption = None,
    wait: WaitOption = False,
    as_json: json_option('Print {"dry_run", "removed": [...]} as JSON.') = False,
):
    """Remove items from the store, in one step (the files stay): by id, by path, or all under a folder."""
    with user_errors():
        with Database(store, wait=wait, create=False) as db:
            removed = db.rm([int(t) if t.isdigit() else t for t in targets or ()], under=under, dry_run=dry_run)
    listing.print_removed(removed, as_json, dry_run, listing.nothing(under) + ": nothing removed")
