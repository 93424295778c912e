"""Reports of benchmark rows: a rich table, JSON, Parquet and a rate-accuracy plot."""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from rich import box
from rich.console import Console
from rich.table import Table

from .methods import FAMILY_LABELS
from .runner import ROW_KEYS, sort_rows

#: (row key, table header, format) of the table's columns; metric columns that are None in
#: every row are left out.
TABLE_COLUMNS = (
    ("budget", "budget", "budget"),
    ("method", "method", "str"),
    ("bits", "bits", "bits"),
    ("entropy_bits", "ent.bits", "bits"),
    ("bpp", "bpp", "sci"),
    ("mean_cosine", "cos", "f3"),
    ("t2i_recall_1", "R@1", "f3"),
    ("t2i_recall_5", "R@5", "f3"),
    ("t2i_recall_10", "R@10", "f3"),
    ("knn_recall_10", "kNN@10", "f3"),
    ("zeroshot_top1", "ZS@1", "f3"),
    ("zeroshot_top5", "ZS@5", "f3"),
    ("nn1_accuracy", "1-NN", "f3"),
    ("encode_us_per_item", "enc µs", "us"),
    ("size_bytes", "size", "bytes"),
    ("train_seconds", "train s", "f1"),
)

#: Accuracy metrics plotted, one panel each, when the data has them.
PLOT_METRICS = (
    ("t2i_recall_1", "text→image recall@1"),
    ("knn_recall_10", "kNN recall@10 vs float"),
    ("zeroshot_top1", "zero-shot top-1"),
)


#: Fixed colour and marker per family, so plots of different runs read alike.
FAMILY_STYLE = {
    "semdb": ("black", "o"),
    "semdb-paired": ("black", "*"),
    "semdb-unpaired": ("gray", "d"),
    "codec": ("black", "o"),
    "pqvae-paper": ("dimgray", "s"),
    "pq": ("tab:blue", "o"),
    "pqfs": ("tab:orange", "s"),
    "opq": ("tab:green", "D"),
    "rq": ("tab:red", "^"),
    "lsq": ("tab:purple", "v"),
    "rabitq": ("tab:brown", "P"),
    "sign": ("tab:pink", "<"),
    "int8": ("tab:olive", "X"),
    "fp16": ("tab:cyan", "h"),
    "JPEG": ("darkgoldenrod", "*"),
    "WebP": ("teal", "p"),
}


def _fmt(value, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if kind == "budget":
        return str(value)
    if kind == "str":
        return str(value)
    if kind == "bits":
        return f"{value:.0f}" if value >= 100 or float(value).is_integer() else f"{value:.1f}"
    if kind == "sci":
        return f"{value:.2e}"
    if kind == "f3":
        return f"{value:.3f}"
    if kind == "f1":
        return f"{value:.1f}"
    if kind == "us":
        return f"{value:.1f}" if value < 100 else f"{value:.0f}"
    if kind == "bytes":
        for unit, div in (("MB", 1 << 20), ("kB", 1 << 10)):
            if value >= div:
                return f"{value / div:.1f} {unit}"
        return f"{int(value)} B"
    return str(value)


def header(rows: Sequence[dict[str, Any]]) -> str:
    """One line describing the run (dataset, split, bpp convention)."""
    ok = [r for r in rows if r["status"] == "ok"] or list(rows)
    if not ok:
        return "semdb bench: no results"
    r = ok[0]
    if r["protocol"] == "given-codec":
        split = f"all {r['n_eval']} items (given codec; no split)"
    elif r["protocol"].startswith("ood"):
        n_train = max((x["n_train"] or 0) for x in ok)
        groups = "classes" if r["protocol"] == "ood-class" else "k-means clusters"
        split = (
            f"out of distribution: train {n_train} rows of some {groups} / evaluate {r['n_eval']} of the "
            f"others (seed {r['split_seed']}, group fraction {r['train_fraction']})"
        )
    else:
        n_train = max((x["n_train"] or 0) for x in ok)
        split = f"train {n_train} / held-out {r['n_eval']} (seed {r['split_seed']}, fraction {r['train_fraction']})"
    conv = next((x["bpp_convention"] for x in ok if x["bpp_convention"] != "actual"), None)
    bpp = f"bpp = bits / {conv.replace('x', '*')} pixels" if conv else "bpp = real bits per pixel"
    if conv and any(x["bpp_convention"] == "actual" for x in ok):
        bpp += " (image-codec rows: real bits per pixel of the originals)"
    return f"{r['dataset']}: D={r['dim']}, {split}; {bpp}"


def make_table(rows: Sequence[dict[str, Any]], title: str | None = None):
    """A rich Table of the 'ok' rows, sorted by budget then method; skipped and failed
    methods are listed in the caption."""

    rows = sort_rows(list(rows))
    ok = [r for r in rows if r["status"] == "ok"]
    cols = [c for c in TABLE_COLUMNS if c[2] in ("budget", "str") or any(r.get(c[0]) is not None for r in ok)]
    table = Table(
        title=title or header(rows), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1)
    )
    for _, head, kind in cols:
        table.add_column(head, justify="left" if kind == "str" else "right", no_wrap=True)
    prev_budget = object()
    for r in ok:
        budget = r["budget"] if r["budget"] is not None else "ref"
        if budget != prev_budget and prev_budget is not object():
            table.add_section()
        prev_budget = budget
        cells = []
        for key, _, kind in cols:
            if key == "budget":
                cells.append(str(budget))
            else:
                cells.append(_fmt(r.get(key), kind))
        table.add_row(*cells)
    notes = [
        f"{r['method']}" + (f" @ {r['budget']}" if r["budget"] else "") + f": {r['status']}: {r['note']}"
        for r in rows
        if r["status"] != "ok"
    ]
    if notes:
        table.caption = "\n".join(notes)
        table.caption_justify = "left"
    return table


def print_table(
    rows: Sequence[dict[str, Any]], console=None, title: str | None = None, width: int | None = None
) -> None:
    """Print the table (to ``console``, or a new rich Console of ``width`` columns)."""

    (console or Console(width=width)).print(make_table(rows, title))


def _clean(v):
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if hasattr(v, "item"):  # numpy scalar
        return v.item()
    return v


def to_records(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows restricted to the documented keys, in schema order, JSON-safe values."""
    return [{k: _clean(r.get(k)) for k in ROW_KEYS} for r in rows]


def to_json(rows: Iterable[dict[str, Any]], indent: int | None = 2) -> str:
    return json.dumps(to_records(rows), indent=indent, ensure_ascii=False)


def write_json(rows: Iterable[dict[str, Any]], path: str | Path) -> Path:
    p = Path(path)
    p.write_text(to_json(rows) + "\n", encoding="utf-8")
    return p


def arrow_schema():

    types = {
        "schema_version": pa.int32(),
        "dataset": pa.string(),
        "dim": pa.int32(),
        "protocol": pa.string(),
        "split_seed": pa.int64(),
        "train_fraction": pa.float64(),
        "n_train": pa.int64(),
        "n_eval": pa.int64(),
        "budget": pa.int64(),
        "method": pa.string(),
        "family": pa.string(),
        "status": pa.string(),
        "note": pa.string(),
        "scoring": pa.string(),
        "bpp_convention": pa.string(),
        "size_bytes": pa.int64(),
    }
    return pa.schema([(k, types.get(k, pa.float64())) for k in ROW_KEYS])


def write_parquet(rows: Iterable[dict[str, Any]], path: str | Path) -> Path:

    p = Path(path)
    table = pa.Table.from_pylist(to_records(rows), schema=arrow_schema())
    pq.write_table(table, p)
    return p


def write_plot(rows: Sequence[dict[str, Any]], path: str | Path, title: str | None = None) -> Path:
    """Accuracy against bits per item (log x), one panel per available accuracy metric, one
    line per method family, float32 as a dashed horizontal reference."""
    # a bare Figure renders with Agg and leaves pyplot's global backend alone

    ok = [r for r in rows if r["status"] == "ok"]
    panels = [(k, t) for k, t in PLOT_METRICS if any(r.get(k) is not None for r in ok)]
    if not panels:
        panels = [("mean_cosine", "mean cosine to float")]
    fig = Figure(figsize=(5.2 * len(panels) + 1.8, 4.4))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    families: list[str] = []
    for r in sort_rows(ok):
        if r["family"] != "float32" and r["family"] not in families:
            families.append(r["family"])
    cmap = colormaps["tab10"]
    spare = iter(range(10))
    style = {}
    for f in families:
        main = f in ("semdb", "semdb-paired", "semdb-unpaired", "codec")
        color, marker = FAMILY_STYLE.get(f, (None, "o"))
        style[f] = dict(
            color=color or cmap(next(spare, 0)),
            marker=marker,
            linewidth=2.4 if main else 1.3,
            markersize=6 if main else 4.5,
        )
    handles = {}
    for ax, (key, label) in zip(axes, panels):
        for f in families:
            pts = sorted((r["bits"], r[key]) for r in ok if r["family"] == f and r.get(key) is not None and r["bits"])
            if not pts:
                continue
            xs, ys = zip(*pts)
            (h,) = ax.plot(xs, ys, label=FAMILY_LABELS.get(f, f), **style[f])
            handles.setdefault(FAMILY_LABELS.get(f, f), h)
        ref = [r for r in ok if r["family"] == "float32" and r.get(key) is not None]
        if ref:
            h = ax.axhline(ref[0][key], color="gray", linestyle="--", linewidth=1.2)
            handles.setdefault(f"float32 ({ref[0]['bits']:.0f} bits)", h)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
        ax.set_xlabel("bits per item (fixed-length)")
        ax.set_title(label)
        ax.grid(True, which="major", alpha=0.3)
        ax.set_ylim(top=min(1.02, ax.get_ylim()[1] + 0.02))
    fig.legend(
        handles.values(),
        handles.keys(),
        loc="center left",
        bbox_to_anchor=(0.995 - 1.75 / fig.get_figwidth(), 0.5),
        fontsize=8,
        frameon=False,
    )
    text = textwrap.fill(title or header(rows), width=int(fig.get_figwidth() * 12))
    fig.suptitle(text, fontsize=10)
    lines = text.count("\n") + 1
    fig.tight_layout(rect=(0, 0, 1 - 1.8 / fig.get_figwidth(), 1.0 - 0.035 * (lines - 1)))
    p = Path(path)
    fig.savefig(p, dpi=120)
    return p
