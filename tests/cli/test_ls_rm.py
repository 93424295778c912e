"""`semdb ls` / Database.ls and count, `semdb rm` / Database.rm (a store stays valid, a kill -9
loses nothing), ids kept by export and import, and export/import refusing wrong paths before
writing anything."""

import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from kit import SEMDB, cli_env, semdb_cli
from kit import semdb_app as run
from test_transfer import synthetic_export

import semdb
from semdb.context import StoreContext
from semdb.errors import InputError, StoreError
from semdb.ingest import ivf_upkeep
from semdb.search.request import parse_date
from semdb.store import Item

DAY = 86400.0
T0 = 1.7e9  # 2023-11-14


def staged_store(path, n: int = 30):
    """A store of n made-up items (no files, no codec): /p/a and /p/b, dates taken T0 + i % 5
    days, every 7th unknown."""
    with semdb.open(path) as db, db.store.write() as w:
        for i in range(n):
            taken = None if i % 7 == 0 else T0 + (i % 5) * DAY
            item = Item.new(f"/p/{'ab'[i % 2]}/{i:03d}.jpg", 1000 * i, 0, f"{i:032x}", 4, 3, taken=taken)
            w.add_item(item, embedding=np.random.default_rng(i).standard_normal(16))
    return path


def newest_first(items):
    return sorted(items, key=lambda it: (it.taken is not None, it.taken or 0, it.id), reverse=True)


def test_ls_lists_newest_first_with_search_filters_and_pages(tmp_path):
    with semdb.open(staged_store(tmp_path / "s"), readonly=True) as db:
        every = list(db.store.iter_items())
        listed = db.ls()
        assert [it.id for it in listed] == [it.id for it in newest_first(every)] and db.count() == 30
        assert listed[-1].taken is None and listed[0].taken == T0 + 4 * DAY
        assert [it.id for it in db.ls(offset=5, limit=7)] == [it.id for it in listed[5:12]]
        assert db.ls(offset=40) == [] and db.ls(limit=0) == []
        under_a = [it for it in listed if it.path.startswith("/p/a/")]
        assert db.ls(under="/p/a") == under_a and db.count(under="/p/a/") == len(under_a) == 15
        day2 = "2023-11-16"  # T0 + 2 days, local midnight: compare with the same parsing
        after = parse_date(day2, "after")
        want = [it for it in under_a if it.taken is not None and after <= it.taken < after + 2 * DAY]
        got = db.ls(under="/p/a", after=day2, before="2023-11-18")
        assert got == want and db.count(under="/p/a", after=day2, before="2023-11-18") == len(want) > 0
        assert db.ls(under="/p/nope") == [] and db.count(under="/p/nope") == 0
        assert db.ls(under="/p/a", limit=3) == under_a[:3]  # the page of the filtered list
        for bad in ({"offset": -1}, {"limit": -2}, {"limit": 1.5}):
            with pytest.raises(InputError, match="whole number"):
                db.ls(**bad)
        with pytest.raises(InputError, match="not a date"):
            db.ls(after="yesterday")


def test_cli_ls_table_json_paths_and_a_line_when_nothing_matches(tmp_path):
    store = staged_store(tmp_path / "s", 12)
    with semdb.open(store) as db, db.store.write() as w:  # a name that is not UTF-8
        w.add_item(
            Item.new("/p/b/caf\udce9.jpg", 2_400_000, 0, "e" * 32, 4, 3, taken=T0 + 9 * DAY), embedding=[1.0] * 16
        )
    lines = run("ls", "--store", store, "-n", "3").stdout.splitlines()
    assert lines[0].split() == ["id", "taken", "size", "path"] and len(lines) == 4
    assert lines[1].split()[0] == "13" and lines[1].endswith("/p/b/caf\\xe9.jpg") and "2.4 MB" in lines[1]
    rows = json.loads(run("ls", "--store", store, "--json", "--under", "/p/a").stdout)
    assert [r["id"] for r in rows] == [it.id for it in semdb.open(store, readonly=True).ls(under="/p/a")]
    assert set(rows[0]) == {"id", "path", "taken", "size", "width", "height"}
    raw = semdb_cli("ls", "--store", store, "--paths-only", "-n", "1", text=False).stdout
    assert raw == b"/p/b/caf\xe9.jpg\n"  # the file system's own bytes: xargs opens the file
    paths = run("ls", "--store", store, "--paths-only", "--offset", "1", "--limit", "2").stdout.splitlines()
    assert len(paths) == 2 and all(p.startswith("/p/") for p in paths)
    empty = run("ls", "--store", store, "--under", "/p/nope")
    assert empty.stdout == "" and empty.stderr.strip() == "no items under /p/nope"
    assert json.loads(run("ls", "--store", store, "--json", "--after", "2030-01-01").stdout) == []
    fresh = tmp_path / "fresh"
    semdb.open(fresh).close()
    assert run("ls", "--store", fresh).stderr.strip() == "no items"
    for args, message in (
        (("--json", "--paths-only"), "--json and --paths-only"),
        (("-n", "-1"), "--limit -1"),
        (("--after", "soon"), "not a date"),
    ):
        proc = run("ls", "--store", store, *args, check=2)
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, args


def test_rm_by_id_path_and_folder_keeps_the_store_valid(photos, tmp_path, tiny_model):
    (photos / "more").mkdir()
    for name in ("chelsea.jpg", "coffee.jpg"):
        shutil.copy(photos / name, photos / "more" / ("copy_" + name))
    with semdb.open(tmp_path / "s", model=tiny_model, threads=1) as db:
        db.ingest([photos], train_now=True)
        total, coded = db.count(), len(db.store.load_codes()[0])
        assert db.codec is not None and coded == total == 14
        astronaut = db.store.item_by_path(str(photos / "astronaut.jpg"))
        before = {it.id for it in db.store.iter_items()}
        listed = db.ls(under=photos)  # the order ls keeps for paging must not outlive the rm below
        planned = db.rm([astronaut.id, str(photos / "rocket.jpg"), photos / "more"], dry_run=True)
        assert len(planned) == 4 and db.count() == total  # a dry run removes nothing
        removed = db.rm([astronaut.id, str(photos / "rocket.jpg"), photos / "more"])
        assert [it.id for it in removed] == [it.id for it in planned] == sorted(it.id for it in planned)
        gone = {it.id for it in removed}
        assert [it.id for it in db.ls(under=photos)] == [it.id for it in listed if it.id not in gone]
        assert {it.id for it in db.store.iter_items()} == before - gone and db.count() == total - 4
        assert set(db.codes()) == before - gone and db.store.verify() == []
        assert db.store.item_by_path(str(photos / "rocket.jpg")) is None and db.item(astronaut.id) is None
        hits = db.search("an astronaut", k=20)
        assert len(hits) == total - 4 and not gone & {h.id for h in hits}
        assert db.info()["items"] == total - 4
        with pytest.raises(InputError, match="like"):
            db.search(like=astronaut.id)
        with pytest.raises(InputError, match="no item 9999"):
            db.rm([9999, str(photos / "chelsea.jpg")])
        with pytest.raises(InputError, match="no stored item"):
            db.rm([str(photos / "nope")])
        with pytest.raises(InputError, match="give item ids"):
            db.rm([])
        assert db.count() == total - 4  # a bad target removes nothing, not even the good ones
        assert db.rm(under=tmp_path / "elsewhere") == []
        # ingest sees the removed files as new again, and --prune removes through the same path
        again = db.ingest([photos])
        assert again["new"] + again["duplicate"] == 4 and db.count() == total
        (photos / "shapes_0.png").unlink()
        assert db.ingest([photos], prune=True)["pruned"] == 1 and db.store.verify() == []
        db.rm(under=photos)
        assert db.count() == 0 and db.store.verify() == [] and db.search("a cat") == []
        assert db.store.load_codes()[0].size == 0


def test_cli_rm_prints_what_it_removes_and_never_creates_a_store(tmp_path):
    store = staged_store(tmp_path / "s", 10)
    proc = run("rm", "--store", store, "3", "/p/b/001.jpg", "--dry-run")
    assert "would remove 2 items" in proc.stderr and len(proc.stdout.splitlines()) == 3
    assert semdb.open(store, readonly=True).count() == 10
    proc = run("rm", "--store", store, "3", "/p/b/001.jpg")  # id 3 is /p/a/002.jpg
    assert "removed 2 items" in proc.stderr and proc.stdout.count("/p/") == 2
    assert "/p/a/002.jpg" in proc.stdout and "/p/b/001.jpg" in proc.stdout
    out = json.loads(run("rm", "--store", store, "--under", "/p/b", "--json").stdout)
    assert out["dry_run"] is False and [r["id"] for r in out["removed"]] == [4, 6, 8, 10]
    proc = run("rm", "--store", store, "--under", "/p/b")
    assert proc.stderr.strip() == "no items under /p/b: nothing removed"
    for args, code, message in (
        (("3",), 2, "no item 3"),
        (("/p/zzz",), 2, "no stored item"),
        ((), 2, "give item ids"),
    ):
        proc = run("rm", "--store", store, *args, check=code)
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, args
    missing = tmp_path / "missing"
    proc = run("rm", "--store", missing, "1", check=4)
    assert "no semdb store" in proc.stderr and not missing.exists()
    with semdb.open(store, readonly=True) as db:
        assert db.count() == 4 and db.store.verify() == []


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    """A store of 60,000 imported items with codes and an IVF, under /data."""
    folder = tmp_path_factory.mktemp("big")
    synthetic_export(folder / "big.parquet", 60_000)
    run("import", folder / "big.parquet", "--store", folder / "s")
    with semdb.open(folder / "s") as db:
        ivf_upkeep.build(StoreContext(db.store), nlist=64)
    return folder / "s"


def test_rm_of_scattered_ids_keeps_codes_and_ivf_lists(big_store, tmp_path):
    store = tmp_path / "s"
    shutil.copytree(big_store, store)
    query = np.random.default_rng(0).standard_normal(32).astype(np.float32)
    with semdb.open(store) as db:
        kept_lists = dict(zip(db.store.load_codes()[0].tolist(), db.store.load_ivf()[3].tolist()))
        start = time.perf_counter()
        assert len(db.rm(list(range(1, 60_001, 3)))) == 20_000  # every third item: every segment touched
        took = time.perf_counter() - start
        assert db.count() == 40_000 and db.store.verify() == []
        ids, lists = db.store.load_codes()[0].tolist(), db.store.load_ivf()[3].tolist()
        assert len(ids) == 40_000 and all(i % 3 != 1 for i in ids)
        assert lists == [kept_lists[i] for i in ids]  # each kept code keeps its IVF list
        hits = db.search(vector=query, k=50, nprobe=64)
        assert len(hits) == 50 and all(h.id % 3 != 1 for h in hits)
    assert took < 30, took  # 1.4 s here: one read and one rewrite per segment, not per item


def test_a_killed_rm_loses_nothing(big_store, tmp_path):
    """SIGKILL inside rm's one transaction, and at moments spread over a large rm: the store
    opens, verifies, and holds every item or none of those being removed."""
    store = tmp_path / "s"
    shutil.copytree(big_store, store)
    proc = semdb_cli("rm", "--store", store, "--under", "/data", check=-9, env={"SEMDB_FAULT_POINT": "rm_txn:1"})
    assert proc.returncode == -9
    with semdb.open(store, readonly=True) as db:
        assert db.count() == 60_000 and db.store.verify() == []
    start = time.perf_counter()
    semdb_cli("rm", "--store", store, "--under", "/data", "--json")
    took = time.perf_counter() - start
    with semdb.open(store, readonly=True) as db:
        assert db.count() == 0 and db.store.verify() == []
    seen = set()
    for fraction in (0.2, 0.4, 0.6, 0.8, 0.9, 0.97):
        shutil.rmtree(store)
        shutil.copytree(big_store, store)
        child = subprocess.Popen(
            [SEMDB, "rm", "--store", str(store), "--under", "/data"],
            env=cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(took * fraction)
        child.send_signal(signal.SIGKILL)
        child.wait()
        with semdb.open(store, readonly=True) as db:
            count = db.count()
            assert count in (0, 60_000) and db.store.verify() == [], fraction
            assert len(db.store.load_codes()[0]) == count
        seen.add(count)
    assert 60_000 in seen  # at least one kill landed before the commit


def test_export_then_import_keeps_ids(tmp_path, photos, tiny_model):
    """Saved `--like ID` and /api/item/ID links survive an export and an import into a new store."""
    with semdb.open(tmp_path / "a", model=tiny_model, threads=1) as db:
        db.ingest([photos], train_now=True)
        db.rm([1, 2])  # gaps, as a store that lived has
        db.ingest([photos])  # the two files come back with new ids
        ids = {it.path: it.id for it in db.store.iter_items()}
        like = db.search(like=ids[str(photos / "chelsea.jpg")], k=5)
    assert min(ids.values()) > 2 and max(ids.values()) > len(ids)
    run("export", "--store", tmp_path / "a", "--out", tmp_path / "a.parquet")
    run("import", tmp_path / "a.parquet", "--store", tmp_path / "b")
    with semdb.open(tmp_path / "b", model=tiny_model, threads=1) as db:
        assert {it.path: it.id for it in db.store.iter_items()} == ids
        assert db.search(like=ids[str(photos / "chelsea.jpg")], k=5) == like
        assert db.store.verify() == []
        assert db.ingest([photos])["unchanged"] == len(ids)  # the files are the items imported
    out = json.loads(
        run("query", "--like", str(ids[str(photos / "coffee.jpg")]), "--store", tmp_path / "b", "--json").stdout
    )
    assert str(photos / "coffee.jpg") not in [h["path"] for h in out] and len(out) == 10


def test_import_into_a_store_with_items_keeps_ids_above_its_own(tmp_path):
    """A merge: a row keeps its id when that is above every id the store has used, else it takes
    the next free id; ids never collide."""
    synthetic_export(tmp_path / "x.parquet", 100)  # ids 1..100, /data/img_000000.jpg ...
    table = pq.read_table(tmp_path / "x.parquet")
    top = table.slice(60)  # ids 61..100
    pq.write_table(table.slice(0, 10), tmp_path / "low.parquet")
    pq.write_table(top, tmp_path / "top.parquet")
    with semdb.open(tmp_path / "s") as db:
        db.import_parquet([tmp_path / "low.parquet"])  # ids 1..10 kept: a new store
        assert [it.id for it in db.store.iter_items()] == list(range(1, 11))
        db.import_parquet([tmp_path / "top.parquet"])  # 61..100: above 10, kept
        assert [it.id for it in db.store.iter_items()] == [*range(1, 11), *range(61, 101)]
        db.rm(list(range(61, 101)))
        db.import_parquet([tmp_path / "x.parquet"])  # 1..10 are there; 11..100 are below 101: renumbered
        got = {it.path: it.id for it in db.store.iter_items()}
        assert len(got) == 100 and got["/data/img_000009.jpg"] == 10 and got["/data/img_000010.jpg"] == 101
        assert sorted(got.values()) == [*range(1, 11), *range(101, 191)] and db.store.verify() == []


def test_export_to_a_folder_fails_before_writing(tmp_path):
    store = tmp_path / "s"
    synthetic_export(tmp_path / "x.parquet", 50)
    run("import", tmp_path / "x.parquet", "--store", store)
    (tmp_path / "out").mkdir()
    for target in (tmp_path / "out", str(tmp_path / "out") + "/", str(tmp_path / "new") + "/"):
        proc = run("export", "--store", store, "--out", target, check=2)
        assert "is a folder" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, target
    assert os.listdir(tmp_path / "out") == [] and not (tmp_path / "new").exists()
    assert sorted(os.listdir(tmp_path)) == ["out", "s", "x.parquet"]
    with semdb.open(store, readonly=True) as db:
        with pytest.raises(InputError, match="is a folder"):
            db.export(str(tmp_path / "out") + os.sep)


def test_import_of_a_file_that_is_not_an_export_leaves_no_store(tmp_path):
    (tmp_path / "notes.txt").write_text("shopping: milk, eggs\n")
    new = tmp_path / "new"
    proc = run("import", tmp_path / "notes.txt", "--store", new, check=2)
    assert "not a Parquet file" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not new.exists()
    proc = run("import", tmp_path, "--store", new, check=2)  # a folder
    assert len(proc.stderr.strip().splitlines()) == 1 and not new.exists()
    synthetic_export(tmp_path / "x.parquet", 20)
    run("import", tmp_path / "x.parquet", "--store", tmp_path / "s")
    before = (tmp_path / "s" / "data.mdb").read_bytes()
    run("import", tmp_path / "notes.txt", "--store", tmp_path / "s", check=2)
    assert (tmp_path / "s" / "data.mdb").read_bytes() == before
    with semdb.open(tmp_path / "s", readonly=True) as db:
        assert db.count() == 20 and db.store.verify() == []
    with pytest.raises(StoreError, match="no semdb store"):
        semdb.open(tmp_path / "other", create=False)
    assert not (tmp_path / "other").exists()
