"""Rough edges of the `semdb` command a new user meets: advice that names a command which
works, errors that name the real problem, output that pipes. Run as a user runs it."""

import json
import re
import shlex

from conftest import semdb_cli as run


def _advice(text: str) -> list[str]:
    """The `semdb ...` commands a message advises, as argument lists."""
    return [shlex.split(c)[1:] for c in re.findall(r"`(semdb [^`]*)`", text)]


def test_the_advice_to_train_a_small_store_works(photos, tmp_path, tiny_model):
    store = tmp_path / "store"
    ingested = run("ingest", photos, "--store", store, "--model", tiny_model)
    exported = run("export", "--out", tmp_path / "x.parquet", "--store", store, check=4)
    info = run("info", "--store", store).stdout
    train = ["ingest", "--train-now", "--store", str(store)]
    assert _advice(ingested.stderr) == [train] and _advice(exported.stderr) == [train] and _advice(info) == [train]
    summary = json.loads(run(*train, "--json").stdout)
    assert summary["trained_on"] == 12 and summary["codec"]
    facts = json.loads(run("info", "--store", store, "--json").stdout)
    assert facts["staging"] == 0 and facts["codec"]["id"] == summary["codec"] and facts["items"] == 12
    run("export", "--out", tmp_path / "x.parquet", "--store", store)
    again = run(*train, check=2)  # a compressed store is left as it is
    assert "compressed already" in again.stderr and "`semdb retrain`" in again.stderr


def test_a_store_whose_first_ingest_has_not_recorded_its_model_is_not_searched_with_another(tmp_path, tiny_model):
    import semdb

    store = tmp_path / "store"
    semdb.open(store).close()  # what a first ingest has made while its model loads
    proc = run("query", "a cat", "--store", store, check=4)
    assert "has no CLIP model yet" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert "ViT-B-32" not in proc.stderr
