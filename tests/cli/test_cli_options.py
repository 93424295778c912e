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


def one_line_usage_error(result, says: str) -> None:
    lines = result.stderr.splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and says in lines[0], result.output


@pytest.mark.parametrize("bits", ["7", "0", "-4", "4100"])
def test_bad_bits_are_a_usage_error_before_the_store_is_made(tmp_path, photos, bits):
    store = tmp_path / "s"
    result = invoke("ingest", photos, "--store", store, "--bits", bits)
    one_line_usage_error(result, "Invalid value for '--bits'")
    assert "give a multiple of 4 from 4 to 4096" in result.stderr
    assert not store.exists()


def test_retrain_with_bad_bits_fails_before_any_work(tmp_path):
    store = tmp_path / "s"
    store.mkdir()
    (store / "keep").write_text("not a store")  # were the store opened, it would say so
    result = invoke("retrain", "--store", store, "--bits", "13")
    one_line_usage_error(result, "Invalid value for '--bits': 13 bits per image")
    assert sorted(p.name for p in store.iterdir()) == ["keep"]


@pytest.mark.parametrize("value", ["-1", "-0.5"])
def test_negative_max_megapixels_is_a_usage_error(tmp_path, photos, value):
    result = invoke("ingest", photos, "--store", tmp_path / "s", "--max-megapixels", value)
    one_line_usage_error(result, "Invalid value for '--max-megapixels'")
    assert not (tmp_path / "s").exists()
