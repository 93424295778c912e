"""`semdb` command line: each command is a thin layer over `semdb.api`.

Results go to stdout (plain columns, or JSON with --json); progress bars and errors go to
stderr. A SemdbError prints one line and exits with its code (see docs/CLI.md: exit codes).

    base.py        the Typer app and what every command shares (errors, progress, output)
    help.py        how it speaks when used wrongly or asked for help (one-line usage errors)
    collection.py  ingest, retrain, info, export, import, ls, rm
    search.py      query, duplicates, tag
    serving.py     serve
    benchmark.py   bench
"""

# isort: off
# importing them registers their commands, in the order `semdb -h` lists them
from . import collection, search, serving, benchmark  # noqa: F401

# isort: on
from .base import app

__all__ = ["app"]
