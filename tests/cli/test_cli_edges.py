"""Rough edges of the `semdb` command a new user meets: advice that names a command which
works, errors that name the real problem, output that pipes. Run in this process (kit.semdb_app),
and as a user runs it where processes matter: servers, a lock held by another process, bytes
on stdout."""

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

from kit import cli_env, semdb_cli, write_photos
from kit import semdb_app as run
from serve_helpers import Server


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


def _coded_store(tmp_path, model, n_generated=2):
    import semdb

    photos = write_photos(tmp_path / "photos", n_generated=n_generated)
    with semdb.open(tmp_path / "store", model=model) as db:
        db.ingest([photos], train_now=True)
    return tmp_path / "store", photos


def test_a_second_serve_of_a_store_is_refused_and_leaves_the_first_ones_beacon(tmp_path, tiny_model_dir):
    """The model folder is removed once the first server has it: `query --image` can then only
    be answered by that server, which it is only while STORE/serve.json still names it."""
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    store, photos = _coded_store(tmp_path, "local-dir:" + str(model_dir))
    first = Server(store)
    try:
        shutil.rmtree(model_dir)
        second = semdb_cli("serve", "--store", store, "--port", "0", check=2)
        assert second.stderr.splitlines() == [
            f"error: {store} is already served at {first.base}/ (pid {first.proc.pid}): use that one, or stop it first"
        ]
        assert json.loads((store / "serve.json").read_text())["pid"] == first.proc.pid
        hits = semdb_cli("query", "--image", photos / "rocket.jpg", "--store", store, "-k", "1", "--paths-only").stdout
        assert hits.splitlines() == [str(photos / "rocket.jpg")]
    finally:
        assert first.stop() == 0, first.output()
    assert not (store / "serve.json").exists()


def test_two_serves_started_at_once_keep_one_beacon(tmp_path, tiny_model):
    store, _ = _coded_store(tmp_path, tiny_model)
    cmd = [sys.executable, "-m", "semdb.cli", "serve", "--store", str(store), "--port", "0"]
    logs = [tmp_path / f"serve{i}.log" for i in range(2)]
    procs = [subprocess.Popen(cmd, stderr=log.open("w"), env=cli_env()) for log in logs]
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not all(  # each refused, or up
            p.poll() is not None or "semdb serve:" in log.read_text() for p, log in zip(procs, logs)
        ):
            time.sleep(0.2)
        owner = json.loads((store / "serve.json").read_text())["pid"]
        other = next(i for i, p in enumerate(procs) if p.pid != owner)
        procs[other].send_signal(signal.SIGINT)
        procs[other].wait(60)
        said = logs[other].read_text()
        # refused at once, or (both loading at once) it found the other at start and left its beacon
        assert "is already served at" in said or "is also served at" in said, said
        assert json.loads((store / "serve.json").read_text())["pid"] == owner
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                p.wait(60)
    assert not (store / "serve.json").exists()


def test_serve_of_a_missing_store_on_a_busy_port_names_the_store(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        proc = semdb_cli("serve", "--store", tmp_path / "nothing", "--port", s.getsockname()[1], check=4)
    assert "no semdb store" in proc.stderr and "in use" not in proc.stderr


def test_a_store_path_that_is_a_file_is_named_as_such_by_every_command(tmp_path, photos):
    plain = tmp_path / "notes.txt"
    plain.write_text("hello")
    for args in (
        ["query", "a cat"],
        ["query", "--like", "1"],
        ["info"],
        ["duplicates"],
        ["export", "--out", tmp_path / "x.parquet"],
        ["ingest", photos],
        ["serve", "--port", "0"],
    ):
        proc = (semdb_cli if args[0] == "serve" else run)(*args, "--store", plain, check=4)
        assert proc.stderr == f"error: {plain} is a file, not a semdb store directory\n", (args, proc.stderr)
    assert plain.read_text() == "hello"


def test_a_missing_image_in_query_arithmetic_is_an_error_naming_it(tmp_path, tiny_model):
    store, photos = _coded_store(tmp_path, tiny_model)
    for term in ("./nope.jpg", "nope.JPG", "~/nope.png", str(tmp_path / "nope"), "my photos/nope.webp"):
        proc = run("query", f"a cat + {term}", "--store", store, check=2)
        assert proc.stderr.startswith(f"error: {term}: query image not found") and proc.stderr.count("\n") == 1
    for words in ("AC/DC on stage", "black and/or white", "a cat.jpg drawn in words"):  # words, not files
        assert run("query", words, "--store", store, "-k", "1", "--paths-only").stdout.count("\n") == 1
    hits = run("query", f"2:a rocket + {photos / 'rocket.jpg'} - dog", "--store", store, "-k", "1", "--paths-only")
    assert hits.stdout == f"{photos / 'rocket.jpg'}\n"


def test_ingest_names_prune_for_gone_files_and_wait_for_a_locked_store(photos, tmp_path, tiny_model):
    import semdb

    store = tmp_path / "store"
    run("ingest", photos, "--store", store, "--model", tiny_model)
    for name in ("chelsea.jpg", "coffee.jpg", "shapes_0.png"):
        (photos / name).unlink()
    again = run("ingest", photos, "--store", store)
    assert "note: the files of 3 stored items are gone; run this ingest again with --prune to remove them" in (
        again.stderr
    )
    assert json.loads(run("ingest", photos, "--store", store, "--prune", "--json").stdout)["pruned"] == 3
    with semdb.open(store):  # another writer holds the store
        locked = semdb_cli("ingest", photos, "--store", store, check=5)
    assert locked.stderr.count("\n") == 1 and "--wait" in locked.stderr


def test_conflicting_output_options_are_a_usage_error(tmp_path):
    for args, says in (
        (["query", "a cat", "--json", "--paths-only"], "--json and --paths-only do not go together"),
        (["tag", "--labels", "cat,dog", "--csv", "--json"], "--json and --csv do not go together"),
    ):
        proc = run(*args, "--store", tmp_path / "nothing", check=2)  # refused before the store is opened
        assert proc.stderr == f"error: {says}: give one\n"


def test_paths_print_whole_and_as_their_own_bytes(tmp_path, tiny_model):
    """--paths-only prints a non-UTF-8 name's bytes (so `| xargs -d '\\n'` opens it), from the
    store and through a running server; a table prints a long path whole on one line."""
    import semdb

    folder = tmp_path / ("a folder with a long name " * 4).strip()
    write_photos(folder, n_generated=1)
    latin1 = os.path.join(os.fsencode(folder), b"latin1_\xe9t\xe9.jpg")
    os.rename(folder / "chelsea.jpg", latin1)
    with semdb.open(tmp_path / "store", model=tiny_model) as db:
        db.ingest([folder], train_now=True)
    store = tmp_path / "store"

    def listed():
        lines = semdb_cli("query", "a cat", "--store", store, "-k", "5", "--paths-only", text=False).stdout.splitlines()
        assert latin1 in lines and all(os.path.exists(line) for line in lines)
        return lines

    local = listed()
    table = semdb_cli("query", "a cat", "--store", store, "-k", "5", env={"COLUMNS": "80"}).stdout.splitlines()
    assert table[0].split() == ["rank", "score", "id", "path"] and len(table) == 6
    assert all(line.endswith(".jpg") or line.endswith(".png") for line in table[1:])
    assert any(line.endswith(f"{folder}/latin1_\\xe9t\\xe9.jpg") for line in table[1:])
    server = Server(store)
    try:
        assert listed() == local
    finally:
        assert server.stop() == 0, server.output()


def test_bench_checks_its_options_before_embedding_any_image(photos, tmp_path):
    """The model named does not exist: an option checked only after embedding would fail on it."""
    nomodel = "local-dir:" + str(tmp_path / "nomodel")
    for option, says in (
        (["--methods", "nonsense"], "--methods 'nonsense': unknown method"),
        (["--bits", "abc"], "--bits"),
        (["--bpp-pixels", "224"], "224"),
        (["--protocol", "sideways"], "--protocol 'sideways'"),
    ):
        proc = run("bench", "--images", photos.parent, "--model", nomodel, *option, check=2)
        assert says in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_an_error_before_any_progress_is_one_line(tmp_path, photos):
    proc = run("ingest", photos, "--store", tmp_path / "s", "--engine", "spark", check=2)
    assert proc.stderr == "error: engine 'spark': use 'local' or 'ray'\n"
