"""Reading a store (semdb/store/reading.py, store.py): the model binding check, info, the
in-memory lookups seen by another process, damaged item segments, many items at once, the
segments a commit rewrote."""

import random

import numpy as np
import pytest
from storekit import CB, code_for, code_map, new_item, run_py

from semdb.errors import StoreError
from semdb.store import DEFAULT_MAP_SIZE, SCHEMA_VERSION, segments


def test_check_model(store):
    mid = {"name": "ViT-B-32", "pretrained": "laion2b", "digest": "abc123", "dim": 512}
    store.check_model(mid)  # unbound store accepts any model
    with store.write() as w:
        w.set_meta("model_id", mid)
    assert store.model_id() == mid
    store.check_model(dict(mid))
    for other in ({**mid, "digest": "fff"}, {**mid, "dim": 768}):
        with pytest.raises(
            StoreError, match="was built with CLIP model ViT-B-32/laion2b .*--model ViT-B-32 .*or use a new --store"
        ):
            store.check_model(other)
    store.check_model({**mid, "digest": None})  # unknown digest: same name/tag/dim is enough


def test_info(store):
    with store.write() as w:
        w.add_item(new_item("/a.jpg"), code=code_for(1))
    info = store.info()
    assert info["items"] == 1 and info["coded"] == 1 and info["staging"] == 0
    assert info["segments"] == 1 and info["code_bytes"] == CB and info["codec_id"] == "codec-1"
    assert info["bytes_on_disk"] > 0 and info["map_size"] >= DEFAULT_MAP_SIZE


def test_info_reports_bytes_per_item(store):
    with store.write() as w:
        for i in range(50):
            w.add_item(new_item(f"/p/{i}.jpg"), code=code_for(i))
    info = store.info()
    assert info["schema"] == SCHEMA_VERSION and info["item_segments"] == 1
    assert info["bytes_per_item"] == round((store.path / "data.mdb").stat().st_size / 50, 1)


LOOKER = """
    import sys
    from semdb.store import Store
    s = Store(sys.argv[1], readonly=True)
    for line in sys.stdin:  # one path per line: print the id stored for it
        it = s.item_by_path(line[:-1])
        print(it.id if it else None, flush=True)
"""


def test_another_process_sees_a_writers_commits(store):
    with store.write() as w:
        a = w.add_item(new_item("/a.jpg"), code=code_for(1))
    reader = run_py(LOOKER, store.path)
    try:
        reader.stdin.write("/a.jpg\n")
        reader.stdin.flush()
        assert reader.stdout.readline().strip() == str(a)  # its lookups are built now
        moved = store.get_item(a)
        moved.path = "/moved.jpg"
        with store.write() as w:
            w.update_item(moved)
            b = w.add_item(new_item("/b.jpg"), code=code_for(2))
        for p, want in (("/a.jpg", None), ("/moved.jpg", a), ("/b.jpg", b)):
            reader.stdin.write(p + "\n")
            reader.stdin.flush()
            assert reader.stdout.readline().strip() == str(want)
    finally:
        reader.stdin.close()
        reader.wait(timeout=30)


def test_a_damaged_item_segment_is_corruption(store):
    with store.write() as w:
        ids = [w.add_item(new_item(f"/d/{i}.jpg"), code=code_for(i)) for i in range(100)]
    env, db = store.lmdb.env, store.lmdb.dbs["itemsegs"]
    with env.begin(write=True) as txn:
        key, raw = next(iter(txn.cursor(db=db)))
        raw = bytearray(raw)
        raw[40] ^= 0x10
        txn.put(bytes(key), bytes(raw), db=db)
    store.drop_caches()
    with pytest.raises(StoreError, match="is corrupt \\(item segment .*checksum.*restore it from a backup"):
        store.get_item(ids[3])
    with pytest.raises(StoreError, match="is corrupt"):
        list(store.iter_items())
    assert any(p.startswith(f"item segment {ids[0]}: ") and "checksum" in p for p in store.verify())
    assert code_map(store)  # codes (what a query reads) are not in item segments


def test_many_items_at_once_match_one_by_one(tmp_path):
    """Store.items of many ids (one decode per item segment) gives what get_item gives for each,
    in the order asked, None for deleted and unknown ids."""
    from semdb.store import Item, Store

    with Store(tmp_path / "s", create=True) as s:
        for start in range(0, 3000, 700):  # several batches: several item segments
            with s.write() as w:
                for i in range(start, min(start + 700, 3000)):
                    w.add_item(Item.new(f"/p/{i}.jpg", i, i, f"{i:032x}", 1, 1), embedding=np.ones(4, np.float32))
        with s.write() as w:
            for i in range(1, 3001, 7):
                w.delete_item(i)
        ids = random.Random(0).sample(range(0, 3100), 1500) + [5, 5]
        got = s.items(ids)
        assert got == [s.get_item(i) for i in ids]
        assert sum(x is None for x in got) > 100 and got[-1] == got[-2] == s.get_item(5)


def test_changed_item_segments_decodes_only_what_a_commit_rewrote(store):
    with store.write() as w:
        for i in range(2 * segments.ITEMSEG_MAX + 10):
            w.add_item(new_item(f"/p/{i:05d}.jpg"), code=code_for(i))
    tags, fresh = store.changed_item_segments({})
    assert len(tags) == 3 and fresh.keys() == tags.keys()
    assert sum(len(c) for c in fresh.values()) == 2 * segments.ITEMSEG_MAX + 10
    assert store.changed_item_segments(tags) == (tags, {})  # nothing committed: headers only
    first = store.item_by_path("/p/00003.jpg")
    with store.write() as w:
        w.add_item(new_item("/p/new.jpg"), code=code_for(9999))  # fills the last segment
        w.delete_item(first.id)  # rewrites the first
    tags2, fresh2 = store.changed_item_segments(tags)
    first_key, middle_key, last_key = list(tags)
    assert tags2.keys() == tags.keys() and set(fresh2) == {first_key, last_key}
    assert len(fresh2[first_key]) == segments.ITEMSEG_MAX - 1 and len(fresh2[last_key]) == 11
