"""Options checked at once, before any work, and what their help says (in-process: typer's
CliRunner runs the same app the installed script runs)."""

import pytest
from typer.testing import CliRunner

from semdb.cli import app

runner = CliRunner()


def invoke(*args, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


@pytest.mark.parametrize("command", ["ingest", "retrain", "query", "serve", "tag"])
def test_threads_help_names_torch_and_onnxruntime(command):
    text = " ".join(invoke(command, "-h", env={"COLUMNS": "500"}).output.split())
    assert "Threads of torch and onnxruntime for CLIP" in text
