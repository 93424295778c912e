"""The stream protocol's rows as a rich table and as JSON (keys: ``STREAM_ROW_KEYS``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from .report import _clean
from .stream import ALONE, SCOPES, STREAM_ROW_KEYS

#: The table's column groups: (heading, method, trained on); in the row of A alone, the store's
#: column shows the store without B.
GROUPS = (
    ("semdb store", "semdb store", "stream"),
    ("best FAISS on A", "best FAISS", "A"),
    ("best FAISS on A+B", "best FAISS", "A+B"),
)
ROWS = (ALONE, *SCOPES)
METRICS = ("knn_recall_1", "knn_recall_10", "t2i_recall_1")


def to_stream_records(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows restricted to the documented keys, in schema order, JSON-safe values."""
    return [{k: _clean(r.get(k)) for k in STREAM_ROW_KEYS} for r in rows]


def stream_json(rows: Iterable[dict[str, Any]], indent: int | None = 2) -> str:
    return json.dumps(to_stream_records(rows), indent=indent, ensure_ascii=False)


def _cell(row: dict | None, metrics: Sequence[str]) -> str:
    if row is None:
        return "-"
    return " / ".join("-" if row.get(m) is None else f"{row[m]:.3f}" for m in metrics)


def make_stream_table(rows: Sequence[dict[str, Any]]) -> Table:
    """Per budget and scope (A's items alone, then over the mixed store A's, B's, all): the store
    (without B, for A alone) and the best FAISS quantizer trained on A and on A+B; the caption
    says what the store holds at the end and which FAISS fits were skipped."""
    first = rows[0]
    metrics = [m for m in METRICS if any(r.get(m) is not None for r in rows if r["status"] == "ok")]
    names = {"knn_recall_1": "kNN@1", "knn_recall_10": "kNN@10", "t2i_recall_1": "R@1"}
    share = "" if first["shift_share"] is None else f" (share {first['shift_share']:.2f})"
    title = (
        f"{first['dataset']}: B = {first['b_source']}{share}; {first['protocol']}, seed {first['seed']}; "
        f"A and B: {first['min_train']} training + {first['n_a_eval']} / {first['n_b_eval']} evaluated items; "
        f"cells {' / '.join(names[m] for m in metrics)} among the evaluated items"
    )
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
    for head in ("bits", "items", *(g[0] for g in GROUPS)):
        table.add_column(head, justify="left" if head == "items" else "right", no_wrap=True)
    index = {(r["bits"], r["method"], r["trained_on"], r["scope"]): r for r in rows if r["status"] == "ok"}
    caption = []
    for bits in sorted({r["bits"] for r in rows if r["bits"] is not None}):
        for scope in ROWS:
            groups = [g[1:] for g in GROUPS]
            if scope == ALONE:
                groups[0] = ("semdb store without B", "A")
            cells = [_cell(index.get((bits, method, trained_on, scope)), metrics) for method, trained_on in groups]
            table.add_row(str(bits) if scope == ROWS[0] else "", scope, *cells)
        table.add_section()
        store = index.get((bits, "semdb store", "stream", "A"))
        if store is not None:
            other = "not told by the store" if store["a_other_codec"] is None else store["a_other_codec"]
            caption.append(
                f"{bits} bits: A's evaluated items staged {store['a_staged']}, coded by another codec than A's "
                f"{other}; at the end {store['codecs']} codec(s), {store['staged']} staged"
            )
    skipped = sorted({f"{r['method']} on {r['trained_on']}: {r['note']}" for r in rows if r["status"] == "skipped"})
    table.caption = "\n".join(caption + [f"skipped {s}" for s in skipped])
    table.caption_justify = "left"
    return table


def print_stream_table(rows: Sequence[dict[str, Any]], console: Console | None = None) -> None:
    (console or Console(width=200)).print(make_stream_table(rows))
