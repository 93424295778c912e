"""What the commands write to a file or a pipe: progress as whole plain lines, tables at their
own width with whole title lines and no padding (in-process: typer's CliRunner gives the app
files, not terminals)."""

import re

import numpy as np
from kit import clip_like_embeddings
from typer.testing import CliRunner

from semdb.cli import app

runner = CliRunner()
NARROW = {"HF_HUB_OFFLINE": "1", "SEMDB_STORE": "", "COLUMNS": "80"}  # what a pipe gets by default


def test_progress_to_a_file_is_whole_plain_lines(tmp_path, photos, tiny_model):
    store = tmp_path / "a store whose path is long enough to push a progress bar past eighty columns"
    args = ["ingest", str(photos), "--store", str(store), "--model", tiny_model, "--threads", "1"]
    result = runner.invoke(app, args, env=NARROW)
    assert result.exit_code == 0, result.output
    progress = [line for line in result.stderr.splitlines() if re.match(r"^[a-z][a-z0-9 @]*: \d+/\d+ \(", line)]
    assert "hashing: 12/12 (" in "\n".join(progress) and "embedding: 12/12 (" in "\n".join(progress)
    assert "━" not in result.stderr and "…" not in result.stderr


def test_bench_to_a_file_keeps_its_title_whole_and_pads_nothing(tmp_path):
    data = tmp_path / "a_collection_of_clip_like_embeddings_with_a_long_name_for_its_title.npz"
    np.savez(data, **clip_like_embeddings(n=200))
    result = runner.invoke(app, ["bench", "--embeddings", str(data), "--bits", "32", "--methods", "semdb"], env=NARROW)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(data.stem + ": D=64, train 100 / held-out 100") and lines[0].endswith("pixels")
    assert not [line for line in lines if line != line.rstrip()]
