"""Write batches (semdb/store/writer.py, batch.py, item_writes.py): items, codes, staging,
atomicity, a batch that fills the map, item segments rewritten and filled."""

import os
import re
import signal

import numpy as np
import pytest
from storekit import CB, code_for, code_map, dataclass_item, emb_for, new_item, run_py, snapshot

from semdb.errors import InputError, StoreError
from semdb.store import Store, segments


def test_add_update_delete_keep_every_index_consistent(store):
    with store.write() as w:
        a = w.add_item(new_item("/a.jpg", "H1"), code=code_for(1))
        b = w.add_item(new_item("/b.jpg", "H1"), code=code_for(2))  # duplicate content
        c = w.add_item(new_item("/c.jpg", "H2"), embedding=emb_for(3))  # staged
        assert w.get_item(a).path == "/a.jpg"  # a batch reads its own writes
        assert [it.id for it in w.items_by_hash("H1")] == [a, b]
    assert store.verify() == []
    assert [it.id for it in store.items_by_hash("H1")] == [a, b]
    assert store.count() == 3 and store.staging_count() == 1
    assert set(code_map(store)) == {a, b}

    moved = store.get_item(a)
    moved.path = "/moved/a.jpg"
    with store.write() as w:
        w.update_item(moved)
    assert store.item_by_path("/a.jpg") is None
    assert store.item_by_path("/moved/a.jpg").id == a
    assert code_map(store)[a] == code_for(1)  # a move keeps the code

    changed = store.get_item(b)
    changed.hash = "H3"
    with store.write() as w:
        w.update_item(changed)
        w.set_code(b, code_for(2, salt=1))
        w.set_code(c, code_for(3))  # staged -> coded
    assert [it.id for it in store.items_by_hash("H1")] == [a]
    assert [it.id for it in store.items_by_hash("H3")] == [b]
    assert code_map(store) == {a: code_for(1), b: code_for(2, salt=1), c: code_for(3)}
    assert store.staging_count() == 0
    assert store.verify() == []

    with store.write() as w:
        w.set_embedding(a, emb_for(1))  # coded -> staged
        w.delete_item(b)
    assert store.get_item(b) is None and store.items_by_hash("H3") == []
    assert store.item_by_path("/b.jpg") is None
    assert set(code_map(store)) == {c} and store.staging_count() == 1
    assert store.items([a, b, c])[1] is None
    assert store.verify() == []


def test_bad_calls_raise_input_error_and_leave_the_batch_usable(store):
    with store.write() as w:
        a = w.add_item(new_item("/a.jpg"), code=code_for(1))
        with pytest.raises(InputError, match="already in the store"):
            w.add_item(new_item("/a.jpg"), code=code_for(2))
        with pytest.raises(InputError, match="exactly one"):
            w.add_item(new_item("/b.jpg"))
        with pytest.raises(InputError, match="without id"):
            w.add_item(dataclass_item("/b.jpg"), code=code_for(2))
        with pytest.raises(InputError, match="bytes"):
            w.add_item(new_item("/b.jpg"), code=b"short")
        with pytest.raises(InputError, match="uint8"):
            w.set_code(a, np.zeros(CB, np.int64))
        with pytest.raises(InputError, match="no item"):
            w.delete_item(999)
        with pytest.raises(InputError, match="managed by the store"):
            w.set_meta("next_id", 5)
        with pytest.raises(InputError, match="JSON"):
            w.set_meta("x", object())
        w.add_item(new_item("/s.jpg"), embedding=emb_for(1, dim=16))
        with pytest.raises(InputError, match="shape"):
            w.add_item(new_item("/t.jpg"), embedding=emb_for(1, dim=8))
        with pytest.raises(InputError, match="NaN"):
            w.add_item(new_item("/t.jpg"), embedding=np.full(16, np.nan))
        w.set_meta("model_id", {"name": "ViT-B-32", "dim": 512})
    assert store.count() == 2 and store.meta()["model_id"]["dim"] == 512
    assert store.verify() == []


def test_codes_need_a_codec(path):
    with Store(path, create=True) as s, s.write() as w:
        with pytest.raises(InputError, match="no codec"):
            w.add_item(new_item("/a.jpg"), code=code_for(1))


def test_exception_inside_write_leaves_store_unchanged(store):
    with store.write() as w:
        for i in range(20):
            w.add_item(new_item(f"/{i}.jpg"), code=code_for(i))
        w.add_item(new_item("/staged.jpg"), embedding=emb_for(0))
    before = snapshot(store)
    with pytest.raises(RuntimeError):
        with store.write() as w:
            w.delete_item(1)
            w.set_code(2, code_for(2, salt=9))
            w.add_item(new_item("/new.jpg"), code=code_for(99))
            w.set_meta("note", "x")
            w.set_codec(b"other", "codec-2", CB)
            raise RuntimeError("boom")
    assert snapshot(store) == before
    assert store.codec_bytes() == b"codec-bytes"
    assert store.verify() == []


def test_kill_9_mid_ingest_leaves_whole_batches_only(path):
    proc = run_py(
        """
        import sys, numpy as np
        from semdb.store import Store, Item
        with Store(sys.argv[1], create=True) as s:
            with s.write() as w:
                w.set_codec(b"c", "c", 8)
            for b in range(100000):
                with s.write() as w:
                    for i in range(50):
                        it = Item.new(f"/{b}/{i}.jpg", 1, 1, f"h{b}-{i}", 1, 1)
                        if i % 2:
                            w.add_item(it, code=bytes(8))
                        else:
                            w.add_item(it, embedding=np.ones(4, np.float32) / 2)
                print("committed", b, flush=True)
        """,
        path,
    )
    for _ in range(20):  # kill it while it writes batch 21 or a later one
        assert proc.stdout.readline().startswith("committed")
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    with Store(path) as s:
        n = s.count()
        assert n > 0 and n % 50 == 0
        assert s.staging_count() == n // 2 and len(s.load_codes()[0]) == n // 2
        assert s.verify() == []


def test_a_batch_that_fills_the_map_fails_whole_and_a_larger_map_goes_on(tmp_path):
    """The map is fixed (large and sparse by default): a batch that does not fit is one
    StoreError, the batch is failed and nothing of it is stored; the batches before it stay, and
    the store opened with a larger map takes the same batch."""
    path = tmp_path / "s"
    with Store(path, create=True, map_size=1 << 20) as s:
        with s.write() as w:
            w.set_codec(b"c" * 5000, "c", CB)
        n = 0
        for b in range(30):  # many small batches fit
            with s.write() as w:
                for i in range(100):
                    w.add_item(new_item(f"/{b}/{i}.jpg"), code=code_for(n))
                    n += 1
        with pytest.raises(StoreError, match=re.escape(f"{path} is full: ") + ".*larger map_size"):
            with s.write() as w:  # one batch far larger than the map
                for i in range(5000):
                    w.add_item(new_item(f"/big/{i}.jpg"), embedding=emb_for(i, dim=64))
        with pytest.raises(StoreError, match="this write batch is closed"):
            w.add_item(new_item("/after.jpg"), code=code_for(0))
        assert s.info()["map_size"] == 1 << 20
        assert s.count() == n and len(s.load_codes()[0]) == n and s.staging_count() == 0
        assert s.item_by_path("/big/0.jpg") is None and s.verify() == []
    with Store(path, map_size=1 << 26) as s:
        with s.write() as w:
            for i in range(5000):
                w.add_item(new_item(f"/big/{i}.jpg"), embedding=emb_for(i, dim=64))
        assert s.count() == n + 5000 and s.staging_count() == 5000 and s.verify() == []


def test_the_default_map_is_sparse_address_space(tmp_path):
    """A new store maps 1 TiB (on 64-bit) but its file holds only what was written."""
    with Store(tmp_path / "s", create=True) as s:
        with s.write() as w:
            w.set_codec(b"c" * 5000, "c", CB)
            for i in range(1000):
                w.add_item(new_item(f"/{i}.jpg"), code=code_for(i))
        assert s.info()["map_size"] == 1 << 40
    st = os.stat(tmp_path / "s" / "data.mdb")
    assert st.st_size < 1 << 22 and st.st_blocks * 512 < 1 << 22


def test_codec_and_codes_of_all_staged_items_commit_in_one_batch(path):
    """The store stores what it is given: the codec and the codes of every staged item in one
    write batch (the codec itself runs in the caller: StoreContext.install_codec)."""
    with Store(path, create=True) as s:
        for b in range(3):
            with s.write() as w:
                for i in range(7):
                    w.add_item(new_item(f"/{b}/{i}.jpg"), embedding=emb_for(b * 7 + i))
        assert s.staging_count() == 21

        def encode(x):
            assert x.dtype == np.float32 and x.shape[1] == 16
            return (np.abs(x[:, :CB]) * 255).astype(np.uint8)

        staged = {int(i): e for ids, embs in s.iter_staging(batch=5) for i, e in zip(ids, embs)}
        assert len(staged) == 21
        ids = np.array(sorted(staged), np.uint64)
        X = np.stack([staged[int(i)] for i in ids]).astype(np.float32)
        with pytest.raises(InputError, match="code is"):
            with s.write() as w:
                w.set_codec(b"trained", "codec-1", CB)
                w.set_codes(ids, np.zeros((len(ids), CB + 1), np.uint8))
        assert s.staging_count() == 21 and s.codec_bytes() is None
        with s.write() as w:
            w.set_codec(b"trained", "codec-1", CB)
            w.set_codes(ids, encode(X))
        assert s.staging_count() == 0
        codes = code_map(s)
        assert set(codes) == set(staged)
        for i, e in staged.items():
            assert codes[i] == encode(e[None].astype(np.float32)).tobytes()
        assert s.verify() == []


def test_lookups_after_adds_updates_deletes_and_compaction(store, monkeypatch):
    monkeypatch.setattr(segments, "ITEMSEG_MAX", 410)  # the segment boundaries below assume it
    with store.write() as w:
        ids = [w.add_item(new_item(f"/f/{i}.jpg", f"{i % 7:032x}"), code=code_for(i)) for i in range(900)]
    # 900 items in one batch: three segments of at most ITEMSEG_MAX, in id order
    assert store.info()["item_segments"] == 3
    with store.write() as w:
        moved = w.get_item(ids[10])
        moved.path, moved.hash = "/g/moved.jpg", "NEW"
        w.update_item(moved)
        assert w.item_by_path("/g/moved.jpg").id == ids[10] and w.item_by_path("/f/10.jpg") is None
        for i in range(400, 850):  # empties most of the second segment and part of the third
            w.delete_item(ids[i])
        late = w.add_item(new_item("/f/400.jpg", "LATE"), code=code_for(1))  # a deleted path, reused
        w.delete_item(w.add_item(new_item("/tmp/gone.jpg"), code=code_for(2)))  # added and gone in one batch
    for s in (store, Store(store.path, readonly=True)):
        if s is not store:
            s.drop_caches()  # readonly: its lookups rebuilt
        assert s.item_by_path("/f/10.jpg") is None and s.item_by_path("/g/moved.jpg").id == ids[10]
        assert [it.id for it in s.items_by_hash("NEW")] == [ids[10]]
        assert s.item_by_path("/f/400.jpg").id == late and s.item_by_path("/tmp/gone.jpg") is None
        assert s.get_item(ids[500]) is None and s.get_item(ids[860]).path == "/f/860.jpg"
        assert [it.id for it in s.items_by_hash(f"{3:032x}")] == [
            i for n, i in enumerate(ids) if n % 7 == 3 and not 400 <= n < 850 and n != 10
        ]
        if s is not store:
            s.close()
    assert store.count() == 900 - 450 + 1 and store.verify() == []
    before = [(it.id, it.path) for it in store.iter_items()]
    store.compact()
    assert [(it.id, it.path) for it in store.iter_items()] == before
    assert store.info()["item_segments"] == 2  # 451 items: the small middle segments merged
    assert store.item_by_path("/f/899.jpg").id == ids[899] and store.verify() == []


def test_small_batches_fill_the_last_segment(store, monkeypatch):
    monkeypatch.setattr(segments, "ITEMSEG_MAX", 4096)
    for b in range(50):
        with store.write() as w:
            for i in range(100):
                w.add_item(new_item(f"/b{b}/{i}.jpg"), code=code_for(i))
    assert store.info()["item_segments"] == 2  # 5000 items: one full segment and the rest
    assert [it.path for it in store.iter_items(batch=10)][4095:4097] == ["/b40/95.jpg", "/b40/96.jpg"]
