"""Parquet export and import: `semdb export`, `semdb import`, Database.to_arrow/import_arrow."""

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from kit import semdb_app as run
from kit import semdb_cli, store_items

import semdb
from semdb import arrow
from semdb.codec import Codec
from semdb.errors import CodecError, InputError, StoreError
from semdb.store import Item


def snapshot(db) -> list:
    return store_items(db, ids=False)


QUERIES = ["a cat", "a rocket on the launch pad", "coffee", "colourful shapes", "an astronaut"]


def synthetic_export(path, n: int, seed: int = 0, dim: int = 32) -> Codec:
    """A Parquet export of n made-up items (no files needed) and the codec it carries."""
    rng = np.random.default_rng(seed)
    codec = Codec.train(rng.standard_normal((512, dim)).astype(np.float32), bits=64, seed=seed)
    codes = codec.encode(rng.standard_normal((n, dim)).astype(np.float32))
    items = [
        Item(i + 1, f"/data/img_{i:06d}.jpg", 1000 + i, 10**18 + i, f"{i:032x}", 640, 480, 1.7e9, 1.7e9)
        for i in range(n)
    ]
    meta = arrow.make_meta(codec.id, codec.code_bytes, None, codec.to_bytes())
    pq.write_table(
        pa.Table.from_batches(
            [arrow.to_batch(items, codes, codec.code_bytes)], schema=arrow.schema(codec.code_bytes, meta)
        ),
        path,
    )
    return codec


@pytest.fixture()
def built(photos, tmp_path, tiny_model):
    with semdb.open(tmp_path / "a", model=tiny_model, threads=1) as db:
        db.ingest([photos], train_now=True)
    return tmp_path / "a"


def test_round_trip_gives_identical_query_results(built, tmp_path):
    with semdb.open(built, readonly=True, threads=1) as db:
        table = db.to_arrow()
        db.export(tmp_path / "a.parquet")
        before = snapshot(db)
        hits = [db.search(q, k=12) for q in QUERIES]
        codec_id = db.codec.id
    columns = ["id", "path", "path_bytes", "size", "mtime", "hash", "width", "height", "added", "updated", "code"]
    later = ["taken", "frame_ms", "duration_ms", "codec", "embedding", "document"]
    assert table.num_rows == 12 and table.column_names == [*columns, *later]  # in order
    meta = arrow.read_meta(pq.read_schema(tmp_path / "a.parquet"), "file")
    assert (
        meta["codec_id"] == codec_id
        and meta["model_id"]["dim"] == 64
        and Codec.from_bytes(meta["codec"]).id == codec_id
    )
    for source, name in ((table, "b"), (tmp_path / "a.parquet", "c")):
        with semdb.open(tmp_path / name, threads=1) as db:
            summary = db.import_arrow(source) if name == "b" else db.import_parquet([source])
            assert (summary["added"], summary["updated"], summary["unchanged"], summary["items"]) == (12, 0, 0, 12)
            assert snapshot(db) == before and db.codec.id == codec_id
            got = [db.search(q, k=12) for q in QUERIES]
            # same paths, ids and order; scores to float precision (the first text query of a
            # model runs its torch text tower and caches the ONNX export the later ones use)
            assert [[(h.path, h.id) for h in g] for g in got] == [[(h.path, h.id) for h in g] for g in hits]
            np.testing.assert_allclose(
                [[h.score for h in g] for g in got], [[h.score for h in g] for g in hits], rtol=0, atol=1e-5
            )
            assert db.store.verify() == []


def test_import_twice_adds_nothing_and_leaves_the_store_unchanged(built, tmp_path):
    with semdb.open(built, readonly=True) as db:
        db.export(tmp_path / "a.parquet")
    with semdb.open(tmp_path / "b") as db:
        db.import_parquet([tmp_path / "a.parquet"])
        first = list(db.store.iter_items())
        again = db.import_parquet([tmp_path / "a.parquet", tmp_path / "a.parquet"])
        assert (again["added"], again["updated"], again["unchanged"]) == (0, 0, 24)
        assert list(db.store.iter_items()) == first  # not even timestamps change


def test_import_merges_new_items_and_updates_changed_ones(built, photos, tmp_path, tiny_model):
    with semdb.open(built) as db:
        db.codec.save(tmp_path / "codec.safetensors")
    other = tmp_path / "other"
    other.mkdir()
    (other / "rocket2.jpg").write_bytes((photos / "rocket.jpg").read_bytes())
    (other / "coffee.jpg").write_bytes((photos / "coffee.jpg").read_bytes())
    with semdb.open(tmp_path / "b", model=tiny_model, threads=1) as db:  # same codec, other files
        db.ingest([other], codec=tmp_path / "codec.safetensors", train_now=True)
        table = db.to_arrow()
    with semdb.open(built, threads=1) as db:
        summary = db.import_arrow(table)
        assert (summary["added"], summary["updated"], summary["items"]) == (2, 0, 14)
        assert {h.path for h in db.search(image=photos / "rocket.jpg", k=2)} == {
            str(photos / "rocket.jpg"),
            str(other / "rocket2.jpg"),
        }
        # the same path with new content and code: the item keeps its id, takes the new row
        old = db.store.item_by_path(str(photos / "coffee.jpg"))
        row = table.filter(pc.equal(table["path"], str(other / "coffee.jpg")))
        row = row.set_column(1, "path", pa.array([str(photos / "chelsea.jpg")]))
        cat = db.store.item_by_path(str(photos / "chelsea.jpg"))
        summary = db.import_arrow(row)
        assert (summary["added"], summary["updated"]) == (0, 1)
        now = db.store.item_by_path(str(photos / "chelsea.jpg"))
        assert now.id == cat.id and now.hash == old.hash and now.added == cat.added
        assert db.codes()[cat.id].tobytes() == row["code"][0].as_py()
        assert db.store.verify() == []


def test_non_utf8_paths_survive_the_round_trip(tmp_path, tiny_model, photos):
    folder = os.fsencode(tmp_path / "odd")
    os.mkdir(folder)
    for name in (b"caf\xe9 \xff.jpg", b"plain.jpg"):
        with open(folder + b"/" + name, "wb") as fh:
            fh.write(
                (photos / "coffee.jpg").read_bytes() if name == b"plain.jpg" else (photos / "chelsea.jpg").read_bytes()
            )
    with semdb.open(tmp_path / "a", model=tiny_model, threads=1) as db:
        db.ingest([os.fsdecode(folder)], train_now=True)
        table = db.to_arrow()
        paths = sorted(it.path for it in db.store.iter_items())
    assert table["path_bytes"].null_count == 1 and "\ufffd" in "".join(table["path"].to_pylist())
    with semdb.open(tmp_path / "b") as db:
        db.import_arrow(table)
        assert sorted(it.path for it in db.store.iter_items()) == paths
        assert all(os.path.exists(p) for p in paths)


def test_codec_mismatch_and_bad_files_fail_clearly_and_change_nothing(built, tmp_path, photos, tiny_model):
    synthetic_export(tmp_path / "other.parquet", 10)
    (tmp_path / "junk.parquet").write_text("not parquet")
    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "plain.parquet")
    with semdb.open(built, readonly=True) as db:
        db.export(tmp_path / "a.parquet")
    broken = pq.read_table(tmp_path / "a.parquet").drop_columns(["hash"])
    pq.write_table(broken, tmp_path / "nohash.parquet")
    data = (built / "data.mdb").read_bytes()
    cases = [
        ([tmp_path / "other.parquet"], 6, "holds codes of codec"),
        ([tmp_path / "a.parquet", tmp_path / "junk.parquet"], 2, "not a Parquet file"),
        ([tmp_path / "plain.parquet"], 2, "not a semdb export"),
        ([tmp_path / "nohash.parquet"], 2, "no 'hash' column"),
        ([tmp_path / "missing.parquet"], 2, "no such file"),
    ]
    for files, code, message in cases:
        proc = run("import", *files, "--store", built, check=False)
        assert proc.returncode == code and message in proc.stderr, (files, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert (built / "data.mdb").read_bytes() == data
    with semdb.open(tmp_path / "two") as db:  # files with different codecs, into a new store
        with pytest.raises(CodecError, match="the first file holds codec"):
            db.import_parquet([tmp_path / "a.parquet", tmp_path / "other.parquet"])
        assert db.store.count() == 0 and db.codec is None
    with semdb.open(tmp_path / "staged", model=tiny_model, threads=1) as db:  # one image: no codec yet
        db.ingest([photos / "coffee.jpg"], train_now=True)
        with pytest.raises(StoreError, match="no codec yet"):
            db.to_arrow()
    with semdb.open(tmp_path / "plain") as db:
        with pytest.raises(InputError, match="not a semdb export"):
            db.import_arrow(pa.table({"x": [1]}))


def test_cli_export_import_and_a_killed_import_resumes(tmp_path):
    codec = synthetic_export(tmp_path / "big.parquet", 10_000)
    store = tmp_path / "s"
    proc = semdb_cli(
        "import", tmp_path / "big.parquet", "--store", store, check=False, env={"SEMDB_FAULT_POINT": "import_txn:2"}
    )  # SIGKILL inside the second transaction
    assert proc.returncode == -9
    with semdb.open(store, readonly=True) as db:
        assert db.store.count() == 4096 and db.store.verify() == []  # the first batch, whole
    summary = json.loads(run("import", tmp_path / "big.parquet", "--store", store, "--json").stdout)
    assert (summary["added"], summary["unchanged"], summary["items"]) == (10_000 - 4096, 4096, 10_000)
    out = json.loads(run("export", "--store", store, "--out", tmp_path / "again.parquet", "--json").stdout)
    assert out["items"] == 10_000 and out["bytes"] == (tmp_path / "again.parquet").stat().st_size
    proc = run("export", "--store", store, "--out", tmp_path / "nowhere" / "x.parquet", check=False)
    assert proc.returncode == 2 and "does not exist" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    a, b = pq.read_table(tmp_path / "big.parquet"), pq.read_table(tmp_path / "again.parquet")
    assert a.drop_columns(["id"]).equals(b.drop_columns(["id"]))
    assert arrow.read_meta(b.schema, "b")["codec_id"] == codec.id
    table = run("info", "--store", store).stdout
    assert "10000" in table
