"""The `semdb` Typer app and what its commands share: option help, errors as one line and an
exit code, progress on stderr, plain columns and JSON on stdout."""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from .. import __version__
from ..codec import bits_problem
from ..errors import InputError, SemdbError
from .help import HELP_OPTIONS, OneLineUsageGroup, examples

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
THREADS_HELP = "Threads of torch and onnxruntime for CLIP (default: theirs; 1 is fastest on a busy machine)."
CAPTIONS_HELP = (
    "Texts like the store's queries (one per line; captions, past searches): "
    "the codec is trained to rank well for them."
)

# The options several commands take, each declared once (as sqlite-utils shares its output
# options): a command's parameter `store: StoreOption = None` is its --store.
StoreOption = Annotated[Path | None, typer.Option("--store", help=STORE_HELP)]
ModelOption = Annotated[str | None, typer.Option("--model", help=MODEL_HELP)]
ModelOverrideOption = Annotated[
    str | None, typer.Option("--model", help="Override the store's model (must be the same weights).")
]
PretrainedOption = Annotated[str | None, typer.Option("--pretrained", help=PRETRAINED_HELP)]
ThreadsOption = Annotated[
    int | None,
    typer.Option("--threads", min=1, help=THREADS_HELP),
]
WaitOption = Annotated[bool, typer.Option("--wait", help="Wait for another writer on this store instead of failing.")]
BatchSizeOption = Annotated[int, typer.Option("--batch-size", min=1, help="Images per CLIP batch and per commit.")]
WorkersOption = Annotated[int | None, typer.Option("--workers", min=1, help="Image decoding threads.")]
CaptionsOption = Annotated[Path | None, typer.Option("--captions", help=CAPTIONS_HELP)]


def json_option(prints: str):
    """The --json flag of a command whose JSON output is `prints` (its help)."""
    return Annotated[bool, typer.Option("--json", help=prints)]


def _checked_bits(bits: int | None) -> int | None:
    problem = None if bits is None else bits_problem(bits)
    if problem:
        raise typer.BadParameter(problem)
    return bits


def bits_option(help: str):
    """The --bits option of a command that trains a store's codec: a bad budget is a usage
    error before any work."""
    return typer.Option(None, "--bits", help=help, callback=_checked_bits)


@contextmanager
def user_errors():
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


def exclusive(*flags: tuple[str, bool]) -> None:
    """InputError if more than one of these (name, given) options is given."""
    given = [name for name, on in flags if on]
    if len(given) > 1:
        raise InputError(f"{' and '.join(given)} do not go together: give one")


RATED_STAGES = {"embedding", "re-embedding sample", "re-encoding", "adding embeddings"}  # shown with img/s


def say(line: str) -> None:
    """A line for the user on stderr, printed as it is (no markup)."""
    err.print(Text(line), highlight=False, soft_wrap=True)


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """ "1 image", "2 images" (`plural` when adding an s will not do)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def media(n: int, frames: int = 0) -> str:
    """n items of which `frames` are video frames: "8 images", or "5 photos and 3 video frames"."""
    if not frames:
        return counted(n, "image")
    return (
        f"{counted(n - frames, 'photo')} and {counted(frames, 'video frame')}"
        if n > frames
        else counted(n, "video frame")
    )


def print_json(obj) -> None:
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


def progress_display(enabled: bool):
    """A rich progress display and a callback (stage, done, total) for the API; when stderr
    is not a terminal (a log, a pipe), plain full lines instead (PlainProgress)."""
    if enabled and not err.is_terminal:
        return nullcontext(), PlainProgress()
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


class PlainProgress:
    """Progress as whole lines for a log: "embedding: 402/402 (12.3 img/s)" when a stage ends, and
    every LOG_SECONDS while a long one runs. A bar redrawn in place makes no sense in a file,
    and rich's final render of one is cut to 80 columns there."""

    LOG_SECONDS = 30.0

    def __init__(self):
        self.started, self.logged, self.ended = {}, {}, set()

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        start = self.started.setdefault(stage, now)
        if stage in self.ended or (done < total and now - self.logged.get(stage, start) < self.LOG_SECONDS):
            return
        if done >= total:
            self.ended.add(stage)
        self.logged[stage] = now
        rate = f", {done / (now - start):.1f} img/s" if stage in RATED_STAGES and now > start else ""
        say(f"{stage}: {done}/{total} ({now - start:.0f} s{rate})")


def print_columns(header, rows) -> None:
    """Rows as plain lines (under a header, unless None), each column padded to its widest cell
    but the last (a path, a message), which is never cut or wrapped, so it can be copied whole."""
    lines = rows if header is None else [header, *rows]
    widths = [max(len(str(cell)) for cell in column) for column in zip(*lines)][:-1]
    for row in lines:
        sys.stdout.write("  ".join([*(str(c).ljust(w) for c, w in zip(row, widths)), str(row[-1])]) + "\n")


def print_summary(summary: dict, as_json: bool, title: str, keys=None) -> None:
    """The whole summary as JSON, or `keys` of it (default: all) as a table."""
    if as_json:
        print_json(summary)
        return
    table = Table(title=f"{title} summary", show_header=False)
    for key in keys or summary:
        table.add_row(key.replace("_", " "), Text(str(summary[key])))
    out.print(table)


def shard_list(shards: str) -> list[str]:

    stores = [s.strip() for s in shards.split(",") if s.strip()]
    if not stores:
        raise InputError("--shards: give store folders separated by commas")
    return stores
