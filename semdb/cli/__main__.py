"""`python -m semdb.cli`: the `semdb` command."""

from . import app

app()
