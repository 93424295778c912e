"""`semdb` command line: each command is a thin layer over `semdb.api`.

Results go to stdout (a rich table, or JSON with --json); progress bars and errors go to
stderr. A SemdbError prints one line and exits with its code (see docs/CLI.md: exit codes).
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from . import __version__, listing
from .api import Database
from .clihelp import HELP_OPTIONS, OneLineUsageGroup, examples
from .cluster import Cluster
from .codec import Codec
from .errors import InputError, SemdbError
from .images import display_path
from .ingest.training import MIN_TRAIN
from .request import DEFAULT_K, MAX_K, SearchRequest
from .serve.client import query_server
from .serve.server import is_loopback, run
from .store import default_store_path
from .video.timecode import format_time

app = typer.Typer(
    cls=OneLineUsageGroup,  # usage errors: one line, exit 2
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,  # click's plain help: flags shown as flags, no boxes
    context_settings=HELP_OPTIONS,
    help="semdb: a compressed semantic vector database for image collections.",
    epilog=examples('semdb ingest ~/Pictures && semdb query "a dog on a beach"', "semdb query -h"),
)
out = Console(soft_wrap=True)
err = Console(stderr=True)


def _print_version(wanted: bool) -> None:
    if wanted:
        sys.stdout.write(f"semdb {__version__}\n")
        raise typer.Exit()


@app.callback()
def _app_options(
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version, help="Print semdb's version and exit."
    ),
) -> None:
    pass


STORE_HELP = "Store directory (default: $SEMDB_STORE, else the user data dir)."
MODEL_HELP = "open_clip model name, local-dir:PATH or hf-hub:ORG/REPO (default: $SEMDB_MODEL or ViT-B-32)."
PRETRAINED_HELP = "open_clip pretrained tag or weights file (default: $SEMDB_PRETRAINED or laion2b_s34b_b79k)."
CAPTIONS_HELP = (
    "Texts like the store's queries (one per line; captions, past searches): "
    "the codec is trained to rank well for them."
)


@contextmanager
def _errors():
    """Turn semdb's errors into one line on stderr and the error's exit code."""
    try:
        yield
    except SemdbError as e:
        # Text, not markup: paths in messages may hold "[...]" that rich would parse (or choke on)
        err.print(Text.assemble(("error:", "red"), f" {e}"), highlight=False, soft_wrap=True)
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        err.print("interrupted: committed batches are kept; run the same command again to resume")
        raise typer.Exit(130) from None


def _exclusive(*flags: tuple[str, bool]) -> None:
    """InputError if more than one of these (name, given) options is given."""
    given = [name for name, on in flags if on]
    if len(given) > 1:
        raise InputError(f"{' and '.join(given)} do not go together: give one")


RATED_STAGES = {"embedding", "re-embedding sample", "re-encoding", "adding embeddings"}  # shown with img/s


def _say(line: str) -> None:
    """A line for the user on stderr, printed as it is (no markup)."""
    err.print(Text(line), highlight=False, soft_wrap=True)


def _print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


class _ShownFromItsFirstTask(Progress):
    """A Progress that starts its display with its first task: a command that fails before any
    prints its error alone, not after an empty progress line."""

    def start(self) -> None:
        pass

    def add_task(self, *args, **kwargs):
        if not self.disable and not self.live.is_started:
            self.live.start(refresh=True)
        return super().add_task(*args, **kwargs)

    def stop(self) -> None:
        if self.live.is_started:
            super().stop()


def _progress(enabled: bool):
    """A rich progress display and a callback (stage, done, total) for the API."""
    progress = _ShownFromItsFirstTask(
        TextColumn("{task.description:>16}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not enabled,
        transient=False,
    )
    tasks = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=total, rate="")
        task = progress.tasks[tasks[stage]]
        rate = f"{task.speed:.1f} img/s" if stage in RATED_STAGES and task.speed else ""
        progress.update(tasks[stage], completed=done, total=total, rate=rate)

    return progress, update


@app.command(epilog=examples("semdb ingest ~/Pictures", "semdb ingest ~/Pictures --store photos.semdb --prune"))
def ingest(
    paths: list[Path] | None = typer.Argument(
        None, metavar="PATHS", help="Image files or folders (searched recursively)."
    ),
    store: Path | None = typer.Option(None, "--store", help=STORE_HELP),
    model: str | None = typer.Option(None, "--model", help=MODEL_HELP),
    pretrained: str | None = typer.Option(None, "--pretrained", help=PRETRAINED_HELP),
    bits: int = typer.Option(256, "--bits", help="Bits per image for a new store's codec (a multiple of 4)."),
    codec: Path | None = typer.Option(None, "--codec", help="Use this codec file instead of training one."),
    train_now: bool = typer.Option(
        False,
        "--train-now",
        help="Train the codec on what is staged, however few (default: wait for enough images); "
        "without PATHS: on what the store holds.",
    ),
    captions: Path | None = typer.Option(None, "--captions", help=CAPTIONS_HELP),
    embeddings: Path | None = typer.Option(
        None,
        "--embeddings",
        help="Store precomputed CLIP image embeddings instead of PATHS: a clip-retrieval folder (img_emb/, "
        "metadata/), a .npz (image_emb + image_path) or a .npy with --paths.",
    ),
    paths_file: Path | None = typer.Option(
        None, "--paths", help="With --embeddings FILE.npy: the image paths, one per line, row-aligned."
    ),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per CLIP batch and per commit."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Image decoding threads."),
    max_megapixels: float = typer.Option(100.0, "--max-megapixels", help="Refuse larger images (0: no limit)."),
    prune: bool = typer.Option(False, "--prune", help="Remove items whose files are gone."),
    retry_failed: bool = typer.Option(
        False, "--retry-failed", help="Try again the files that failed before (skipped while unchanged)."
    ),
    wait: bool = typer.Option(False, "--wait", help="Wait for another ingest on this store instead of failing."),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="torch threads for CLIP (default: torch's; 1 is fastest on a busy machine)."
    ),
    engine: str = typer.Option(
        "local",
        "--engine",
        help="local, or ray: hash, decode, embed and encode on a Ray cluster (pip install 'semdb[ray]').",
    ),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="Ray cluster address (default: start a local Ray instance)."
    ),
    ray_shards: Path | None = typer.Option(
        None,
        "--ray-shards",
        help="Folder for the Ray workers' Parquet shards; shared by every node (default: STORE/ray-shards).",
    ),
    int8: bool = typer.Option(
        False, "--int8", help="Embed with the int8 ONNX image tower: faster on a CPU, slightly different embeddings."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON (with peak_rss_mb)."),
):
    """Embed, compress and store the images under PATHS (re-runs skip unchanged files)."""
    if train_now and not paths and embeddings is None:
        return _train_staged(store, bits, captions, wait, threads, as_json)
    with _errors():
        if bool(paths) == (embeddings is not None):
            raise InputError("give image PATHS, or --embeddings SOURCE (not both), or --train-now alone")
        progress, update = _progress(enabled=not as_json)
        with Database(store, model=model, pretrained=pretrained, wait=wait, threads=threads) as db, progress:
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
                summary = db.ingest(
                    paths,
                    bits=bits,
                    codec=codec,
                    batch_size=batch_size,
                    workers=workers,
                    prune=prune,
                    max_megapixels=max_megapixels or None,
                    progress=update,
                    engine=engine,
                    ray_address=ray_address,
                    ray_shards=ray_shards,
                    train_now=train_now,
                    captions=captions,
                    int8=int8,
                    retry_failed=retry_failed,
                )
    if not as_json:
        for failure in summary["failures"]:
            err.print(
                Text.assemble(("failed:", "yellow"), f" {failure['path']}: {failure['reason']}"),
                highlight=False,
                soft_wrap=True,
            )
        if summary["missing"]:
            err.print(
                Text(
                    f"note: the files of {summary['missing']} stored images are gone; "
                    f"run this ingest again with --prune to remove them"
                ),
                soft_wrap=True,
            )
        if summary.get("failed_before"):
            err.print(
                Text.assemble(
                    ("note:", "yellow"),
                    f" skipped {summary['failed_before']} files that failed before and are unchanged "
                    "(`--retry-failed` to try again)",
                ),
                soft_wrap=True,
            )
        for path in summary["no_images"]:
            err.print(Text.assemble(("note:", "yellow"), f" no images found in {path}"), soft_wrap=True)
        _print_codec_notes(summary, store)
    _print_summary(
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
    with _errors():
        progress, update = _progress(enabled=not as_json)
        with Database(store, wait=wait, threads=threads) as db, progress:
            if db.codec is not None:
                raise InputError(f"{db.path} is compressed already (codec {db.codec.id}): `semdb retrain` trains anew")
            summary = db.retrain(bits=bits, captions=captions, progress=update)
    _print_summary(summary, as_json, "train")


def _print_codec_notes(facts: dict, store) -> None:
    """What the user should know about the store's codec: not trained yet, or due a retrain."""
    where = f" --store {store}" if store else ""
    if facts.get("staged"):
        err.print(
            Text(
                f"note: {facts['staged']} images are stored uncompressed (searched exactly) until the store "
                f"holds {MIN_TRAIN}; `semdb ingest --train-now{where}` compresses them now"
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
    store: Path | None = typer.Option(None, "--store", help=STORE_HELP),
    bits: int | None = typer.Option(
        None, "--bits", help="Bits per image of the new codec (default: the current codec's)."
    ),
    sample: int | None = typer.Option(
        None, "--sample", min=2, help="Stored files re-embedded to train on (default 20000)."
    ),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per CLIP batch and per commit."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Image decoding threads."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="torch threads for CLIP."),
    wait: bool = typer.Option(False, "--wait", help="Wait for another writer on this store instead of failing."),
    captions: Path | None = typer.Option(None, "--captions", help=CAPTIONS_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
):
    """Train a new codec on what the store holds now and re-encode every item (resumable)."""
    with _errors():
        progress, update = _progress(enabled=not as_json)
        with Database(store, wait=wait, threads=threads) as db, progress:
            summary = db.retrain(
                bits=bits, sample=sample, batch_size=batch_size, workers=workers, progress=update, captions=captions
            )
    _print_summary(summary, as_json, "retrain")


@app.command(
    epilog=examples(
        'semdb query "a dog on a beach" -k 5',
        "semdb query --image ./cat.jpg --paths-only | xargs -d '\\n' feh",
        "semdb query --like 1234 --under ~/Pictures/2023 --json",
    )
)
def query(
    text: list[str] | None = typer.Argument(
        None, metavar="TEXT", help='What to look for, in words; rclip\'s arithmetic works: "2:cat" + ./x.jpg - dog.'
    ),
    image: Path | None = typer.Option(None, "--image", help="Search with an image instead of text."),
    like: str | None = typer.Option(
        None, "--like", help="More like this stored item (its id or path), from its stored code."
    ),
    under: Path | None = typer.Option(None, "--under", help="Only items whose file is under this folder."),
    after: str | None = typer.Option(
        None, "--after", help="Only photos taken on or after this date (YYYY-MM-DD; EXIF, else file time)."
    ),
    before: str | None = typer.Option(None, "--before", help="Only photos taken before this date (YYYY-MM-DD)."),
    within: float | None = typer.Option(None, "--within", help="Keep hits within this much of the best score."),
    store: Path | None = typer.Option(None, "--store", help=STORE_HELP),
    k: int = typer.Option(DEFAULT_K, "-k", help=f"Number of results (at most {MAX_K:,})."),
    min_score: float | None = typer.Option(None, "--min-score", help="Drop results scoring below this."),
    model: str | None = typer.Option(None, "--model", help="Override the store's model (must be the same weights)."),
    pretrained: str | None = typer.Option(None, "--pretrained", help=PRETRAINED_HELP),
    as_json: bool = typer.Option(False, "--json", help='Print [{"path", "score", "id"}, ...] as JSON.'),
    paths_only: bool = typer.Option(False, "--paths-only", help="Print one path per line."),
    frames: bool = typer.Option(False, "--frames", help="Every matching video frame (default: a video's best)."),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="torch threads for CLIP (default: torch's; 1 is fastest on a busy machine)."
    ),
    nprobe: int | None = typer.Option(
        None,
        "--nprobe",
        help="IVF lists to scan in a large store (default nlist/4; more: slower, closer to exhaustive).",
    ),
    no_server: bool = typer.Option(
        False, "--no-server", help="Search in this process even when a `semdb serve` runs for the store."
    ),
    shards: str | None = typer.Option(
        None,
        "--shards",
        help="Comma-separated stores that share one codec: search them as one on Ray Serve "
        "(TEXT only; docs/SCALE.md#sharded-search).",
    ),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="With --shards: the Ray cluster to run on (default: a local instance)."
    ),
    allow_partial: bool = typer.Option(
        False,
        "--allow-partial",
        help="With --shards: if a shard does not answer, print the others' hits (flagged partial) instead of failing.",
    ),
):
    """Find the stored images closest to TEXT (or --image), and/or more like a stored item (--like), filtered."""
    with _errors():
        _exclusive(("--json", as_json), ("--paths-only", paths_only))
        if shards is not None and (not text or image is not None or like is not None or store is not None):
            raise InputError("--shards searches with TEXT only (no --image, --like or --store)")
        if bool(text) == (image is not None) and not (like is not None and image is None):
            # (an image joins a text query inside TEXT: "cat + ./x.jpg")
            raise InputError("give exactly one of TEXT or --image PATH (or --like ID_OR_PATH)")
        request = SearchRequest.of(
            " ".join(text) if text else None,
            image=image,
            like=int(like) if like is not None and like.isdigit() else like,
            files=shards is None,  # a cluster's nodes read every term as text
            k=k,
            under=under,
            after=after,
            before=before,
            within=within,
            min_score=min_score,
            nprobe=nprobe,
            frames=frames,
        )
        if shards is not None:
            with Cluster.start(_shard_list(shards), address=ray_address, threads=threads or 1) as cluster:
                result = cluster.search(request, allow_partial=allow_partial)
            for m in result.missing:
                err.print(Text(f"partial: shard {m.shard} ({m.store}) is missing: {m.reason}"), highlight=False)
            _print_hits(result.hits, as_json, paths_only)
            return
        hits = None
        if not no_server and model is None and pretrained is None:
            hits = query_server(os.path.abspath(Path(store).expanduser() if store else default_store_path()), request)
        if hits is None:
            with Database(store, model=model, pretrained=pretrained, readonly=True, threads=threads) as db:
                hits = db.search(request)
        if not hits and not as_json:
            err.print(Text(_why_no_results(store, request)), highlight=False, soft_wrap=True)
    _print_hits(hits, as_json, paths_only)


def _why_no_results(store, request: SearchRequest) -> str:
    """The line an empty result prints instead of an empty table: why, when the store tells."""
    with Database(store, readonly=True) as db:
        paths = [it.path for it in db.store.iter_items()]
    under = request.where.under
    if not paths:
        return "no results: the store is empty (add photos with `semdb ingest PATH`)"
    if under is not None and not any(p.startswith(os.path.join(under, "")) for p in paths):
        return f"no results: nothing stored under {display_path(under)}"
    if request.like is not None and len(paths) == 1:
        return "no results: the store holds only that item"
    return "no results: no stored item passes the filters (--under, --after, --before, --min-score, --within)"


def _shard_list(shards: str) -> list[str]:

    stores = [s.strip() for s in shards.split(",") if s.strip()]
    if not stores:
        raise InputError("--shards: give store folders separated by commas")
    return stores


def _print_hits(hits, as_json: bool, paths_only: bool) -> None:

    if as_json:  # a sharded search's hits also name their shard
        _print_json(
            [
                {
                    "path": h.path,
                    "score": round(h.score, 6),
                    "id": h.id,
                    **({"time": h.frame_ms / 1000} if getattr(h, "frame_ms", None) is not None else {}),
                    **({"shard": h.shard} if hasattr(h, "shard") else {}),
                }
                for h in hits
            ]
        )
    elif paths_only:  # the file names' own bytes, for `| xargs -d '\n'` (escaped only if they hold a newline)
        sys.stdout.flush()
        for h in hits:
            sys.stdout.buffer.write((display_path(h.path).encode() if "\n" in h.path else os.fsencode(h.path)) + b"\n")
    elif hits:
        _print_columns(
            ("rank", "score", "id", "path"),
            [(rank, f"{h.score:.4f}", h.id, _hit_place(h)) for rank, h in enumerate(hits, 1)],
        )


def _print_columns(header, rows) -> None:
    """Rows as plain lines (under a header, unless None), each column padded to its widest cell
    but the last (a path, a message), which is never cut or wrapped, so it can be copied whole."""
    lines = rows if header is None else [header, *rows]
    widths = [max(len(str(cell)) for cell in column) for column in zip(*lines)][:-1]
    for row in lines:
        sys.stdout.write("  ".join([*(str(c).ljust(w) for c, w in zip(row, widths)), str(row[-1])]) + "\n")


def _hit_place(hit) -> str:
    """The hit's path; a video frame's with its time: `path @ 01:23`."""
    frame_ms = getattr(hit, "frame_ms", None)
    return display_path(hit.path) + ("" if frame_ms is None else f" @ {format_time(frame_ms)}")


@app.command(epilog=examples("semdb duplicates", "semdb duplicates --threshold 0.98 --json"))
def duplicates(
    store: Path | None = typer.Option(None, "--store", help=STORE_HELP),
    threshold: float | None = typer.Option(
        None,
        "--threshold",
        help="Cosine above which two images are near-duplicates (default: 0.95 less the codec's quantisation noise).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the groups as JSON."),
):
    """Groups of near-duplicate images, found from the codes (exact copies are flagged)."""
    with _errors():
        with Database(store, readonly=True) as db:
            found = db.duplicates(threshold)
    if as_json:
        _print_json(found)
        return
    for n, group in enumerate(found["groups"], 1):
        kind = "exact copies" if group["exact"] else f"similarity >= {group['min_similarity']:.3f}"
        out.print(Text(f"group {n} ({len(group['ids'])} images, {kind}):"))
        copy_of = {id_: same[0] for same in group["copies"] for id_ in same[1:]}
        for id_, path in zip(group["ids"], group["paths"]):
            copy = f"\t(exact copy of {copy_of[id_]})" if id_ in copy_of and not group["exact"] else ""
            out.print(Text(f"  {id_}\t{display_path(path)}{copy}"))
    err.print(Text(f"{len(found['groups'])} groups at threshold {found['threshold']}"))


@app.command(epilog=examples('semdb tag --labels "cat,dog,car" --csv > labels.csv'))
def tag(
    labels: str = typer.Option(..., "--labels", help='Comma-separated labels, e.g. "cat,dog,car".'),
    prompt: str = typer.Option("a photo of a {}.", "--prompt", help="Template each label is put into."),
    store: Path | None = typer.Option(None, "--store", help=STORE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON rows."),
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV: id,path,label,score."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="torch threads for CLIP."),
):
    """Zero-shot classification of every item: its best label and score."""
    with _errors():
        _exclusive(("--json", as_json), ("--csv", as_csv))
        with Database(store, readonly=True, threads=threads) as db:
            rows = db.classify(labels, prompt)
    if as_json:
        _print_json(rows)
    elif as_csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(["id", "path", "label", "score"])
        for r in rows:
            writer.writerow([r["id"], display_path(r["path"]), r["label"], r["score"]])
    else:
        _print_columns(
            ("id", "label", "score", "path"),
            [(r["id"], r["label"], f"{r['score']:.4f}", display_path(r["path"])) for r in rows],
        )


@app.command(epilog=examples("semdb serve", "semdb serve --store photos.semdb --port 0"))
def serve(
    store: Path | None = typer.Option(None, "--store", help=STORE_HELP),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (not loopback: asks for the key)."),
    port: int = typer.Option(
        8765, "--port", help="TCP port (0: any free port; the one chosen is printed and written to STORE/serve.json)."
    ),
    require_key: bool = typer.Option(
        False, "--require-key", help="Ask for the access key on loopback too (behind a reverse proxy: docs/SERVE.md)."
    ),
    new_key: bool = typer.Option(False, "--new-key", help="Replace the access key: earlier keys and sessions end."),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="Serve HTTPS with this certificate (PEM)."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="The --tls-cert's private key (PEM)."),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="With --shards: allow a network --host (no key)."),
    model: str | None = typer.Option(None, "--model", help="Override the store's model (must be the same weights)."),
    pretrained: str | None = typer.Option(None, "--pretrained", help=PRETRAINED_HELP),
    threads: int | None = typer.Option(None, "--threads", min=1, help="torch threads for CLIP."),
    access_log: bool = typer.Option(False, "--access-log", help="Log every request on stderr."),
    shards: str | None = typer.Option(
        None, "--shards", help="Stores sharing one codec: GET /api/search over them on Ray Serve (docs/SCALE.md)."
    ),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="With --shards: the Ray cluster to run on (default: a local instance)."
    ),
):
    """Search the store from a web page and a JSON API, model and index kept warm (docs/SERVE.md)."""
    with _errors():
        if shards is not None:
            if any(v is not None for v in (store, model, pretrained, tls_cert, tls_key)) or require_key or new_key:
                raise InputError("--shards serves the stores it names, with their own model, without a key or TLS")
            _serve_shards(_shard_list(shards), host, port, allow_remote, ray_address, threads)
            return
        if allow_remote:
            err.print("note: --allow-remote is no longer needed: a network --host asks for the access key")
        run(
            store,
            host,
            port,
            require_key=require_key,
            new_key=new_key,
            tls_cert=str(tls_cert) if tls_cert else None,
            tls_key=str(tls_key) if tls_key else None,
            model=model,
            pretrained=pretrained,
            threads=threads,
            access_log=access_log,
            say=lambda line: err.print(Text(line), highlight=False, soft_wrap=True),
        )


def _serve_shards(stores, host, port, allow_remote, ray_address, threads) -> None:
    """`semdb serve --shards`: Cluster.start with Serve's HTTP proxy, until Ctrl-C or SIGTERM."""
    if not is_loopback(host) and not allow_remote:
        raise InputError(f"--host {host} would expose the shards' search to the network: pass --allow-remote as well")
    with Cluster.start(stores, address=ray_address, threads=threads or 1, http_host=host, http_port=port) as cluster:
        items = sum(s.items for s in cluster.specs)
        err.print(
            Text(
                f"semdb serve: http://{host}:{port}/api/search?q=...  ({len(stores)} shards, {items} items, "
                f"Ray Serve); Ctrl-C to stop"
            ),
            highlight=False,
            soft_wrap=True,
        )

        def stop(*_):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop)  # like Ctrl-C: remove the deployments, then exit
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


@app.command(epilog=examples("semdb info", "semdb info --store photos.semdb --json"))
def info(
    store: Path | None = typer.Option(None, "--store", help=STORE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
):
    """Items, bits per item (fixed and entropy-coded), size on disk, model and codec."""
    with _errors():
        with Database(store, readonly=True) as db:
            facts = db.info()
    if as_json:
        _print_json(facts)
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
            else f"none yet: not compressed until the store holds {facts['codec_trains_at']} images "
            f"(or `semdb ingest --train-now --store {shlex.quote(facts['path'])}`)",
        ),
        ("encoded since training", codec.get("encoded_since")),
        ("drift ratio", codec.get("drift_ratio")),
        ("shift ratio", codec.get("shift_ratio")),
        (
            "retrain",
            facts["retrain_advice"]
            or (
                f"in progress: {facts['retrain_pending']['recoded']} of {facts['retrain_pending']['items']} "
                f"re-encoded; "
                f"run `semdb retrain` to finish"
                if facts["retrain_pending"]
                else "not needed"
            ),
        ),
    ]
    _print_columns(None, [(key, "-" if value is None else value) for key, value in rows])


@app.command("export", epilog=examples("semdb export --out photos.parquet"))
def export_(
    out_path: str = typer.Option(..., "--out", help="Parquet file to write (replaced atomically)."),
    store: Path | None = typer.Option(None, "--store", help=STORE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
):
    """Write every item (metadata and packed code) to a Parquet file, with the codec and model."""
    with _errors():
        progress, update = _progress(enabled=not as_json)
        with Database(store, readonly=True) as db, progress:
            summary = db.export(out_path, progress=update)
    _print_summary(summary, as_json, "export")


@app.command("import", epilog=examples("semdb import photos.parquet --store copy.semdb"))
def import_(
    files: list[Path] = typer.Argument(..., metavar="FILES", help="Parquet files written by `semdb export`."),
    store: Path | None = typer.Option(None, "--store", help=STORE_HELP),
    wait: bool = typer.Option(False, "--wait", help="Wait for another writer on this store instead of failing."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
):
    """Merge Parquet exports into a store (same codec; a new store takes theirs). Idempotent."""
    with _errors():
        Database.check_exports(files)  # before the store is opened: a wrong file leaves no new store behind
        progress, update = _progress(enabled=not as_json)
        with Database(store, wait=wait) as db, progress:
            summary = db.import_parquet(files, progress=update)
    _print_summary(summary, as_json, "import")


def _print_summary(summary: dict, as_json: bool, title: str, keys=None) -> None:
    """The whole summary as JSON, or `keys` of it (default: all) as a table."""
    if as_json:
        _print_json(summary)
        return
    table = Table(title=f"{title} summary", show_header=False)
    for key in keys or summary:
        table.add_row(key.replace("_", " "), Text(str(summary[key])))
    out.print(table)


@app.command("ls", epilog=examples("semdb ls -n 20", "semdb ls --under ~/Pictures/2024 --json"))
def ls_(
    under: Path | None = typer.Option(None, "--under", help="Only items whose file is under this folder."),
    after: str | None = typer.Option(None, "--after", help="Only photos taken on or after this date (YYYY-MM-DD)."),
    before: str | None = typer.Option(None, "--before", help="Only photos taken before this date (YYYY-MM-DD)."),
    limit: int | None = typer.Option(None, "-n", "--limit", help="At most this many items (default: all)."),
    offset: int = typer.Option(0, "--offset", help="Skip this many items first (the next page)."),
    store: Path | None = typer.Option(None, "--store", help=STORE_HELP),
    as_json: bool = typer.Option(False, "--json", help='Print [{"id", "path", "taken", "size", ...}] as JSON.'),
    paths_only: bool = typer.Option(False, "--paths-only", help="Print one path per line."),
):
    """List the stored items, newest first (by date taken): id, date taken, size, path."""
    with _errors():
        _exclusive(("--json", as_json), ("--paths-only", paths_only))
        with Database(store, readonly=True) as db:
            items = db.ls(under, after, before, offset=offset, limit=limit)
    listing.print_items(items, as_json, paths_only, _say, listing.nothing(under, after, before, offset))


@app.command(epilog=examples("semdb rm 12 40", "semdb rm --under ~/Pictures/old --dry-run"))
def rm(
    targets: list[str] | None = typer.Argument(None, help="Item ids, or paths of stored files or folders."),
    under: Path | None = typer.Option(None, "--under", help="Every item whose file is under this folder."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be removed; remove nothing."),
    store: Path | None = typer.Option(None, "--store", help=STORE_HELP),
    wait: bool = typer.Option(False, "--wait", help="Wait for another writer on this store instead of failing."),
    as_json: bool = typer.Option(False, "--json", help='Print {"dry_run", "removed": [...]} as JSON.'),
):
    """Remove items from the store, in one step (the files stay): by id, by path, or all under a folder."""
    with _errors():
        with Database(store, wait=wait, create=False) as db:
            removed = db.rm([int(t) if t.isdigit() else t for t in targets or ()], under=under, dry_run=dry_run)
    listing.print_removed(removed, as_json, dry_run, _say, listing.nothing(under) + ": nothing removed")


@app.command(
    epilog=examples("semdb bench --embeddings emb.npz --plot rate.png", "semdb bench --images ./classes --bits 128,256")
)
def bench(
    embeddings: Path | None = typer.Option(
        None, "--embeddings", help=".npz/.parquet with image_emb (+ text_emb, label, class_text_emb)."
    ),
    images: Path | None = typer.Option(
        None, "--images", help="A folder with one sub-folder of images per class (zero-shot)."
    ),
    train_file: Path | None = typer.Option(None, "--train", help="With --eval: train on this embeddings file."),
    eval_file: Path | None = typer.Option(None, "--eval", help="With --train: the collection to score on."),
    model: str | None = typer.Option(None, "--model", help=MODEL_HELP + " (with --images)"),
    pretrained: str | None = typer.Option(None, "--pretrained", help=PRETRAINED_HELP),
    prompt: list[str] | None = typer.Option(
        None, "--prompt", help='Class prompt template, e.g. "a photo of a {}." (repeatable; averaged).'
    ),
    jpeg_quality: str = typer.Option(
        "", "--jpeg-quality", help="JPEG qualities for the image-codec baseline, e.g. 5,10,20."
    ),
    webp_quality: str = typer.Option("", "--webp-quality", help="WebP qualities for the image-codec baseline."),
    bits: str = typer.Option("64,128,256,400,512", "--bits", help="Comma-separated bit budgets per item."),
    methods: str | None = typer.Option(None, "--methods", help="Comma-separated method families (default: all)."),
    train_fraction: float = typer.Option(0.5, "--train-fraction", help="Share of items the codecs train on."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random split and of training."),
    protocol: str = typer.Option(
        "held-out",
        "--protocol",
        help="held-out (random split); ood: train on some classes (label) or k-means clusters, evaluate on the "
        "others; shift: held-out photos turned to vary where the training photos did not (see --shift).",
    ),
    shift: float = typer.Option(0.5, "--shift", help="--protocol shift: spread left in the training subspace."),
    ood_groups: int = typer.Option(
        10, "--ood-groups", min=2, help="k-means clusters of the ood protocol when the data has no labels."
    ),
    codec: Path | None = typer.Option(None, "--codec", help="Evaluate this codec on all items (no training)."),
    bpp_pixels: str = typer.Option(
        "224x224", "--bpp-pixels", help="Pixels per image in the bits-per-pixel convention."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result rows as JSON (schema: docs/BENCH.md)."),
    out_file: Path | None = typer.Option(None, "--out", help="Also write the rows to this Parquet file."),
    plot: Path | None = typer.Option(None, "--plot", help="Also plot accuracy against bits to this PNG."),
):
    """Rate-accuracy benchmark: semdb's codec against FAISS quantizers at each bit budget."""
    from . import bench as B  # noqa: PLC0415 (faiss and the benchmark's methods: loaded only to run it)

    with _errors():
        if (train_file is None) != (eval_file is None):
            raise InputError("--train FILE and --eval FILE go together: train on one collection, score on the other")
        if (embeddings is not None) + (images is not None) + (train_file is not None) != 1:
            raise InputError("give exactly one of --embeddings FILE, --images DIR or --train FILE --eval FILE")
        B.check_options(methods, bits, bpp_pixels, protocol)  # before minutes of loading or embedding
        eval_data = None
        if train_file is not None:
            data, eval_data = B.load_embeddings(train_file), B.load_embeddings(eval_file)
            protocol = "transfer"
        elif embeddings is not None:
            data = B.load_embeddings(embeddings)
        else:
            from .bench.images import DEFAULT_PROMPTS, load_image_folder  # noqa: PLC0415 (as above)
            from .embed import Embedder  # noqa: PLC0415 (torch: loaded only to embed)

            def qualities(text, flag):
                try:
                    return [int(q) for q in text.split(",") if q.strip()]
                except ValueError:
                    raise InputError(f"{flag} {text!r}: expected comma-separated integers") from None

            embed_progress, update = _progress(enabled=not as_json)
            with embed_progress:
                data = load_image_folder(
                    images,
                    Embedder(model, pretrained),
                    prompts=prompt or DEFAULT_PROMPTS,
                    jpeg_quality=qualities(jpeg_quality, "--jpeg-quality"),
                    webp_quality=qualities(webp_quality, "--webp-quality"),
                    progress=update,
                )
        given = None
        if codec is not None:
            given = Codec.load(codec, dim=data.dim)
        progress, update = _progress(enabled=not as_json)
        with progress:
            rows = B.run_bench(
                data,
                bits=bits,
                methods=methods,
                train_fraction=train_fraction,
                seed=seed,
                codec=given,
                bpp_pixels=bpp_pixels,
                protocol=protocol,
                ood_groups=ood_groups,
                shift=shift,
                eval_data=eval_data,
                progress=update,
                on_message=lambda line: err.print(f"[yellow]{line}[/yellow]", highlight=False),
            )
        if out_file:
            B.write_parquet(rows, out_file)
        if plot:
            B.write_plot(rows, plot)
    if as_json:
        sys.stdout.write(B.to_json(rows) + "\n")
    else:
        # A table this wide wraps badly at 80 columns: use the terminal's width, or 200 in a pipe.
        B.print_table(rows, console=out if out.is_terminal else Console(width=200))


if __name__ == "__main__":  # pragma: no cover
    app()
