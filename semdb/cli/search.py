"""Commands that search a store: query, duplicates, tag."""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import typer
from rich.text import Text

from ..api import Database
from ..cluster import Cluster
from ..errors import InputError, display_path
from ..search.hit import Hit
from ..search.request import DEFAULT_K, MAX_K, SearchRequest
from ..serve.client import query_server
from ..store import default_store_path
from . import listing
from .base import (
    ModelOverrideOption,
    PretrainedOption,
    StoreOption,
    ThreadsOption,
    app,
    err,
    examples,
    exclusive,
    json_option,
    out,
    print_columns,
    print_json,
    say,
    shard_list,
    user_errors,
)


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
    store: StoreOption = None,
    k: int = typer.Option(DEFAULT_K, "-k", help=f"Number of results (at most {MAX_K:,})."),
    min_score: float | None = typer.Option(None, "--min-score", help="Drop results scoring below this."),
    model: ModelOverrideOption = None,
    pretrained: PretrainedOption = None,
    as_json: json_option('Print [{"path", "score", "id"}, ...] as JSON.') = False,
    paths_only: bool = typer.Option(False, "--paths-only", help="Print one path per line."),
    frames: bool = typer.Option(False, "--frames", help="Every matching video frame (default: a video's best)."),
    threads: ThreadsOption = None,
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
        help="Comma-separated stores of one model: search them as one on Ray Serve "
        "(TEXT only; docs/SCALE.md#sharded-search).",
    ),
    ray_address: str | None = typer.Option(
        None,
        "--ray-address",
        help="With --shards: the Ray cluster to run on (default: the one `ray start` runs here, else a new local one).",
    ),
    allow_partial: bool = typer.Option(
        False,
        "--allow-partial",
        help="With --shards: if a shard does not answer, print the others' hits (flagged partial) instead of failing.",
    ),
):
    """Find the stored images closest to TEXT (or --image), and/or more like a stored item (--like), filtered."""
    with user_errors():
        exclusive(("--json", as_json), ("--paths-only", paths_only))
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
            with Cluster.start(shard_list(shards), address=ray_address, threads=threads or 1) as cluster:
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
            say(_why_no_results(store, request))
    _print_hits(hits, as_json, paths_only)


def _why_no_results(store, request: SearchRequest) -> str:
    """The line an empty result prints instead of an empty table: why, when the store tells."""
    under = request.where.under
    with Database(store, readonly=True) as db:
        stored = db.count()
        stored_under = stored if under is None else db.count(under=under)
    if not stored:
        return "no results: the store is empty (add photos with `semdb ingest PATH`)"
    if not stored_under:
        return f"no results: nothing stored under {display_path(under)}"
    if request.like is not None and stored == 1:
        return "no results: the store holds only that item"
    return "no results: no stored item passes the filters (--under, --after, --before, --min-score, --within)"


def _print_hits(hits: Sequence[Hit], as_json: bool, paths_only: bool) -> None:
    if as_json:
        print_json([h.to_json() for h in hits])
    elif paths_only:
        listing.print_paths(h.path for h in hits)
    elif hits:
        print_columns(
            ("rank", "score", "id", "path"),
            [(rank, f"{h.score:.4f}", h.id, listing.place(h)) for rank, h in enumerate(hits, 1)],
        )


@app.command(epilog=examples("semdb duplicates", "semdb duplicates --threshold 0.98 --json"))
def duplicates(
    store: StoreOption = None,
    threshold: float | None = typer.Option(
        None,
        "--threshold",
        help="Cosine above which two images are near-duplicates (default: 0.95 less the codec's quantisation noise).",
    ),
    as_json: json_option("Print the groups as JSON.") = False,
):
    """Groups of near-duplicate images, found from the codes (exact copies are flagged)."""
    with user_errors():
        with Database(store, readonly=True) as db:
            found = db.duplicates(threshold)
    if as_json:
        print_json(found)
        return
    for n, group in enumerate(found["groups"], 1):
        kind = "exact copies" if group["exact"] else f"similarity >= {group['min_similarity']:.3f}"
        out.print(Text(f"group {n} ({len(group['ids'])} images, {kind}):"))
        copy_of = {id_: same[0] for same in group["copies"] for id_ in same[1:]}
        for id_, path in zip(group["ids"], group["paths"]):
            copy = f"\t(exact copy of {copy_of[id_]})" if id_ in copy_of and not group["exact"] else ""
            out.print(Text(f"  {id_}\t{display_path(path)}{copy}"))
    n = len(found["groups"])
    err.print(Text(f"{n} group{'' if n == 1 else 's'} at threshold {found['threshold']}"))


@app.command(epilog=examples('semdb tag --labels "cat,dog,car" --csv > labels.csv'))
def tag(
    labels: str = typer.Option(..., "--labels", help='Comma-separated labels, e.g. "cat,dog,car".'),
    prompt: str = typer.Option("a photo of a {}.", "--prompt", help="Template each label is put into."),
    store: StoreOption = None,
    as_json: json_option("Print JSON rows.") = False,
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV: id,path,label,score."),
    threads: ThreadsOption = None,
):
    """Zero-shot classification of every item: its best label and score."""
    with user_errors():
        exclusive(("--json", as_json), ("--csv", as_csv))
        with Database(store, readonly=True, threads=threads) as db:
            rows = db.classify(labels, prompt)
    if as_json:
        print_json(rows)
    elif as_csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(["id", "path", "label", "score"])
        for r in rows:
            writer.writerow([r["id"], display_path(r["path"]), r["label"], r["score"]])
    else:
        print_columns(
            ("id", "label", "score", "path"),
            [(r["id"], r["label"], f"{r['score']:.4f}", display_path(r["path"])) for r in rows],
        )
