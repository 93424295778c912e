"""`semdb bench`: what each bit buys, against FAISS quantizers."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import typer
from rich.console import Console

from ..codec import Codec
from ..errors import InputError
from ..ingest.training import MIN_TRAIN
from .base import (
    MODEL_HELP,
    PretrainedOption,
    app,
    err,
    examples,
    json_option,
    out,
    progress_display,
    user_errors,
)


@app.command(
    epilog=examples(
        "semdb bench --embeddings emb.npz --plot rate.png",
        "semdb bench --images ./classes --bits 128,256",
        "semdb bench --protocol stream --embeddings a.npz --then b.npz --bits 256 --interleave 50",
    )
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
    pretrained: PretrainedOption = None,
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
        "others; shift: held-out photos turned to vary where the training photos did not (see --shift); "
        "stream: a store fed collection A, then B (--then FILE, or A's other half turned by --shift), "
        "scored over the mixed store against FAISS trained on A and on A+B.",
    ),
    shift: float = typer.Option(
        0.5, "--shift", help="--protocol shift and stream: spread left in the training subspace."
    ),
    then: Path | None = typer.Option(None, "--then", help="--protocol stream: collection B (same model as A)."),
    interleave: int = typer.Option(
        0, "--interleave", min=0, help="--protocol stream: after A's codec, A and B in alternating batches of N."
    ),
    min_train: int = typer.Option(
        MIN_TRAIN, "--min-train", help="--protocol stream: the store's training threshold; A and B each train on N."
    ),
    eval_items: int | None = typer.Option(
        None, "--eval-items", help="--protocol stream: items of A and of B scored (default: the rest)."
    ),
    ood_groups: int = typer.Option(
        10, "--ood-groups", min=2, help="k-means clusters of the ood protocol when the data has no labels."
    ),
    codec: Path | None = typer.Option(None, "--codec", help="Evaluate this codec on all items (no training)."),
    bpp_pixels: str = typer.Option(
        "224x224", "--bpp-pixels", help="Pixels per image in the bits-per-pixel convention."
    ),
    as_json: json_option("Print the result rows as JSON (schema: docs/notes/BENCH.md).") = False,
    out_file: Path | None = typer.Option(None, "--out", help="Also write the rows to this Parquet file."),
    plot: Path | None = typer.Option(None, "--plot", help="Also plot accuracy against bits to this PNG."),
):
    """Rate-accuracy benchmark: semdb's codec against FAISS quantizers at each bit budget."""
    from .. import bench as B  # noqa: PLC0415 (faiss and the benchmark's methods: loaded only to run it)

    if protocol == "stream":
        given = dict(images=images, train=train_file, codec=codec, out=out_file, plot=plot)
        _stream(embeddings, then, given, shift, interleave, min_train, eval_items, bits, methods, seed, as_json)
        return
    with user_errors():
        if then is not None or interleave or eval_items is not None:
            raise InputError("--then, --interleave and --eval-items go with --protocol stream")
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
            from ..bench.images import DEFAULT_PROMPTS, load_image_folder  # noqa: PLC0415 (as above)
            from ..clip.embedder import Embedder  # noqa: PLC0415 (torch: loaded only to embed)

            def qualities(text, flag):
                try:
                    return [int(q) for q in text.split(",") if q.strip()]
                except ValueError:
                    raise InputError(f"{flag} {text!r}: expected comma-separated integers") from None

            embed_progress, update = progress_display(enabled=not as_json)
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
        progress, update = progress_display(enabled=not as_json)
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
    elif out.is_terminal:
        B.print_table(rows, console=out)
    else:
        _print_to_file(B.make_table(rows))


def _print_to_file(table) -> None:
    """The table as a file or pipe should get it: its title and notes as whole lines (rich wraps
    them to the table's width), the table at its own width, no padding spaces at line ends."""
    title, caption = table.title, table.caption
    table.title = table.caption = None
    console = Console(width=10_000, color_system=None, file=io.StringIO())
    console.print(table)
    lines = [str(title or ""), *console.file.getvalue().splitlines(), *str(caption or "").splitlines()]
    sys.stdout.write("".join(line.rstrip() + "\n" for line in lines if line.strip()))


def _stream(embeddings, then, given, shift, interleave, min_train, eval_items, bits, methods, seed, as_json):
    """`semdb bench --protocol stream`: semdb.bench.run_stream. `given`: the options it does not take."""
    from .. import bench as B  # noqa: PLC0415 (as in bench)

    with user_errors():
        if embeddings is None or any(given[k] is not None for k in ("images", "train", "codec")):
            raise InputError("--protocol stream takes --embeddings FILE (collection A), and --then FILE or --shift")
        if given["out"] is not None or given["plot"] is not None:
            raise InputError("--out and --plot are not for --protocol stream; use --json")
        B.check_stream_options(bits, methods, interleave, min_train)
        progress, update = progress_display(enabled=not as_json)
        with progress:
            rows = B.run_stream(
                embeddings,
                then=then,
                shift=shift,
                seed=seed,
                bits=bits,
                methods=methods,
                min_train=min_train,
                eval_items=eval_items,
                interleave=interleave or None,
                progress=update,
                on_message=lambda line: err.print(f"[yellow]{line}[/yellow]", highlight=False),
            )
    if as_json:
        sys.stdout.write(B.stream_json(rows) + "\n")
    else:
        B.print_stream_table(rows, console=out if out.is_terminal else Console(width=10_000))
