"""The rate-accuracy benchmark behind ``semdb bench``.

>>> from semdb.bench import load_embeddings, run_bench, print_table
>>> rows = run_bench(load_embeddings("pairs.npz"), bits=[128, 256])   # doctest: +SKIP
>>> print_table(rows)                                                  # doctest: +SKIP

``run_bench`` returns a list of row dicts (schema: docs/notes/BENCH.md, keys ``ROW_KEYS``);
``report`` turns them into a rich table, JSON, Parquet and a plot. ``run_stream`` (stream.py)
measures a store fed one collection, then another, against FAISS (docs/notes/BENCH.md).
"""

from .data import (
    BenchData,
    Shift,
    Variant,
    load_embeddings,
    ood_split,
    save_embeddings,
    source_shift,
    split_indices,
    validate,
)
from .methods import FAMILIES, FAMILY_LABELS, QUERY_FAMILIES, REFERENCE_FAMILIES, Method, MethodSkipped
from .report import header, make_table, print_table, to_json, to_records, write_json, write_parquet, write_plot
from .runner import (
    DEFAULT_BITS,
    DEFAULT_BPP_PIXELS,
    PROTOCOLS,
    ROW_KEYS,
    SCHEMA_VERSION,
    Split,
    check_options,
    make_split,
    run_bench,
    sort_rows,
)
from .stream import FAISS_FAMILIES, STREAM_ROW_KEYS, Stream, check_stream_options, make_stream, run_stream
from .stream_report import make_stream_table, print_stream_table, stream_json

__all__ = [
    "FAISS_FAMILIES",
    "STREAM_ROW_KEYS",
    "Stream",
    "check_stream_options",
    "make_stream",
    "make_stream_table",
    "print_stream_table",
    "run_stream",
    "stream_json",
    "BenchData",
    "DEFAULT_BITS",
    "DEFAULT_BPP_PIXELS",
    "FAMILIES",
    "FAMILY_LABELS",
    "Method",
    "MethodSkipped",
    "PROTOCOLS",
    "QUERY_FAMILIES",
    "REFERENCE_FAMILIES",
    "ROW_KEYS",
    "SCHEMA_VERSION",
    "Shift",
    "Split",
    "Variant",
    "check_options",
    "header",
    "load_embeddings",
    "make_split",
    "make_table",
    "ood_split",
    "print_table",
    "run_bench",
    "save_embeddings",
    "sort_rows",
    "source_shift",
    "split_indices",
    "to_json",
    "to_records",
    "validate",
    "write_json",
    "write_parquet",
    "write_plot",
]
