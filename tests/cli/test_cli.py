"""The installed `semdb` console script, run in subprocesses as a user would run it, and its
error paths in this process (typer's CliRunner: kit.semdb_app)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from kit import semdb_app
from kit import semdb_cli as run  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "search_app.py"


def test_console_script_ingest_query_info(photos, tmp_path, tiny_model):
    store = tmp_path / "store"
    summary = json.loads(
        run(
            "ingest",
            "--train-now",
            photos,
            "--store",
            store,
            "--model",
            tiny_model,
            "--bits",
            "128",
            "--threads",
            "1",
            "--json",
        ).stdout
    )
    assert summary["new"] == 12 and summary["items"] == 12 and summary["failures"] == []
    info = json.loads(run("info", "--store", store, "--json").stdout)
    assert info["items"] == 12 and info["staging"] == 0 and info["bits_per_item"] == 128
    hits = json.loads(run("query", "--image", photos / "astronaut.jpg", "--store", store, "-k", "3", "--json").stdout)
    assert [sorted(h) for h in hits] == [["id", "path", "score"]] * 3 and hits[0]["path"].endswith("astronaut.jpg")
    paths = run("query", "a rocket", "--store", store, "-k", "4", "--paths-only").stdout.splitlines()
    assert len(paths) == 4 and all(Path(p).exists() for p in paths)
    table = run("query", "a rocket", "--store", store, "-k", "2").stdout
    assert "score" in table and "path" in table
    again = json.loads(run("ingest", "--train-now", photos, "--store", store, "--json").stdout)
    assert again["unchanged"] == 12 and again["embedded"] == 0


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["query", "   "], 2, "empty query text"),
        (["query"], 2, "exactly one of TEXT or --image"),
        (["query", "--image", "/nonexistent.jpg"], 2, "query image not found"),
    ],
)
def test_bad_queries_exit_with_one_line(photos, tmp_path, tiny_model, args, code, message):
    store = tmp_path / "store"
    semdb_app(
        "ingest",
        "--train-now",
        photos / "chelsea.jpg",
        photos / "coffee.jpg",
        "--store",
        store,
        "--model",
        tiny_model,
        "--json",
    )
    proc = semdb_app(*args, "--store", store, check=False)
    assert proc.returncode == code and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_not_a_store_and_missing_model(tmp_path, photos):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("hello")
    proc = semdb_app("query", "a cat", "--store", tmp_path / "junk", check=False)
    assert proc.returncode == 4 and "is not a semdb store" in proc.stderr
    proc = semdb_app(
        "ingest",
        "--train-now",
        photos,
        "--store",
        tmp_path / "s",
        "--model",
        "local-dir:" + str(tmp_path / "nomodel"),
        check=False,
    )
    assert proc.returncode == 3 and "local-dir" in proc.stderr and "Traceback" not in proc.stderr


def test_example_app_answers_queries_from_stdin(photos, tmp_path, tiny_model):
    proc = subprocess.run(
        [sys.executable, EXAMPLE, photos, "--store", tmp_path / "app", "--model", tiny_model, "-k", "2"],
        input=f"a cat\n\nimage:{photos / 'chelsea.jpg'}\nimage:/missing.jpg\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines[0] == {"indexed": 12, "new": 12}
    assert len(lines[1]["hits"]) == 2
    assert lines[2]["hits"][0]["path"].endswith("chelsea.jpg")
    assert "not found" in lines[3]["error"]


def test_bench_command_on_embeddings_and_bad_input(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 32)).astype(np.float32) + 1.0
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    T = X + 0.3 * rng.standard_normal(X.shape).astype(np.float32)
    np.savez(tmp_path / "e.npz", image_emb=X, text_emb=T / np.linalg.norm(T, axis=1, keepdims=True))
    proc = semdb_app(
        "bench",
        "--embeddings",
        tmp_path / "e.npz",
        "--bits",
        "64",
        "--methods",
        "semdb,pq",
        "--json",
        "--out",
        tmp_path / "r.parquet",
        "--plot",
        tmp_path / "r.png",
    )
    rows = {r["method"]: r for r in json.loads(proc.stdout) if r["status"] == "ok"}
    assert rows["semdb"]["bits"] == 64 and 0 < rows["semdb"]["t2i_recall_1"] <= 1 and "PQ8x8" in rows
    assert (tmp_path / "r.parquet").stat().st_size > 0 and (tmp_path / "r.png").stat().st_size > 0
    np.savez(tmp_path / "bad.npz", text_emb=X)
    proc = semdb_app("bench", "--embeddings", tmp_path / "bad.npz", check=False)
    assert proc.returncode == 2 and "image_emb" in proc.stderr and "Traceback" not in proc.stderr
