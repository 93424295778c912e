"""IVF list rows (semdb/store/ivf_rows.py): a write batch given an assignment function writes
the lists of its new codes in the same transaction; rewritten and merged code segments keep
their rows' lists; without the function (or when it declines) a segment has no row until
filled. The function here is a stand-in for the codec's (list = first code byte mod nlist):
the store only stores what it is given."""

import numpy as np
from storekit import CB, code_for, new_item, raw_segments

from semdb.store import code_segments
from semdb.store.format import code_segment_head, int_key, pack_list_row, segment_slot

NLIST = 4
INFO = {"nlist": NLIST, "dim": 8, "codec_id": "codec-1", "built_on": 0, "id": "ivf-1"}


def by_first_byte(codes, ivf):
    return codes[:, 0] % ivf.info["nlist"]


def lists_match_codes(store) -> np.ndarray:
    """The stored lists; every valid one is its code's."""
    _, codes = store.load_codes()
    lists = store.load_ivf()[3]
    valid = lists >= 0
    assert (lists[valid] == codes[valid, 0] % NLIST).all()
    return lists


def test_new_codes_get_their_lists_in_their_commit_and_keep_them(store):
    with store.write() as w:
        w.set_ivf(np.eye(NLIST, 8, dtype=np.float32), INFO, [], [])
    asked = []

    def assign(codes, ivf):
        asked.append((ivf.codec_id, ivf.info["id"], ivf.centroids().shape, len(codes)))
        return by_first_byte(codes, ivf)

    with store.write(assign_ivf=assign) as w:
        ids = [w.add_item(new_item(f"/{i}.jpg"), code=code_for(i)) for i in range(20)]
    assert asked == [("codec-1", "ivf-1", (NLIST, 8), 20)]
    assert (lists_match_codes(store) >= 0).all() and store.verify() == []
    with store.write() as w:  # a rewritten segment keeps the lists of its remaining codes
        w.delete_item(ids[3])
        w.delete_item(ids[7])
    assert len(lists_match_codes(store)) == 18 and (lists_match_codes(store) >= 0).all()

    with store.write() as w:  # no function: the new segment has no row
        more = [w.add_item(new_item(f"/more/{i}.jpg"), code=code_for(100 + i)) for i in range(5)]
    with store.write(assign_ivf=lambda codes, ivf: None) as w:  # declined: no row either
        w.add_item(new_item("/declined.jpg"), code=code_for(200))
    assert (lists_match_codes(store) < 0).sum() == 6 and store.verify() == []

    store.compact()  # merged with segments without rows: the merged segment has none
    assert (lists_match_codes(store) < 0).all() and store.verify() == []
    ids_now, codes = store.load_codes()
    with store.write() as w:
        w.fill_ivf(ids_now, codes[:, 0] % NLIST)
    assert (lists_match_codes(store) >= 0).all()
    with store.write(assign_ivf=by_first_byte) as w:
        w.add_item(new_item("/last.jpg"), code=code_for(300))
        w.delete_item(more[0])
    store.compact()  # every merged segment has its row: the lists are concatenated
    assert (lists_match_codes(store) >= 0).all() and store.verify() == []

    ids_now, codes = store.load_codes()
    with store.write() as w:  # a new codec: the IVF's lists belonged to the old codes
        w.set_pending_codec(b"new-codec", "codec-2", codes.shape[1])
        w.set_recodes(ids_now, np.asarray(codes))
        w.switch_codec()
    assert store.load_ivf() is None and store.ivf_meta() is None and store.verify() == []


def test_without_an_ivf_the_function_is_not_asked(store):
    asked = []
    with store.write(assign_ivf=lambda codes, ivf: asked.append(ivf)) as w:
        w.add_item(new_item("/a.jpg"), code=code_for(1))
    assert asked == [] and store.load_ivf() is None


def test_merged_segments_split_across_their_sources_keep_every_list(store, monkeypatch):
    monkeypatch.setattr(code_segments, "CODE_SEGMENT_MAX", 8)  # merged rows cut into segments of 8
    with store.write() as w:
        w.set_ivf(np.eye(NLIST, 8, dtype=np.float32), INFO, [], [])
    for b in range(7):  # segments of 3: a merged segment takes rows of three or four of them
        with store.write(assign_ivf=by_first_byte) as w:
            for i in range(3):
                w.add_item(new_item(f"/{b}/{i}.jpg"), code=code_for(10 * b + i))
    before = store.codes_by_id()
    store.compact()
    assert store.info()["segments"] == 3 and store.codes_by_id().keys() == before.keys()
    assert (lists_match_codes(store) >= 0).all() and store.verify() == []


def test_each_codec_of_a_set_keeps_an_ivf_of_its_own(store):
    """Slot 0 keeps meta `ivf` and b"centroids" (a store of one codec is written as before);
    the codec in slot s: meta `ivf/s`, b"centroids/s"; list rows are keyed by their segment."""
    with store.write() as w:
        w.set_ivf(np.eye(NLIST, 8, dtype=np.float32), INFO, [], [])
    with store.write(assign_ivf=by_first_byte) as w:
        w.add_item(new_item("/one.jpg"), code=code_for(1))
    assert not any(k.startswith("ivf/") for k in store.meta())  # one codec: the format of before
    assert _ivf_keys(store) == [b"centroids"]

    other = {"nlist": 3, "dim": 8, "codec_id": "codec-2", "built_on": 0, "id": "ivf-2"}
    asked = []

    def assign(codes, ivf):
        asked.append((ivf.codec_id, ivf.info["id"], ivf.centroids().shape))
        return codes[:, 0] % ivf.info["nlist"]

    with store.write() as w:
        w.add_codec(b"second-codec", "codec-2", CB)
        w.set_ivf(np.eye(3, 8, dtype=np.float32), other, [], [], codec="codec-2")
    with store.write(assign_ivf=assign) as w:
        for i in range(6):
            w.add_item(new_item(f"/a/{i}.jpg"), code=code_for(10 + i))
            w.add_item(new_item(f"/b/{i}.jpg"), code=code_for(20 + i), codec="codec-2")
    assert sorted(asked) == [("codec-1", "ivf-1", (NLIST, 8)), ("codec-2", "ivf-2", (3, 8))]
    assert store.ivf_meta() == INFO and store.ivf_meta("codec-2") == other
    assert _ivf_keys(store) == [b"centroids", b"centroids/1"]
    for codec_id, nlist in (("codec-1", NLIST), ("codec-2", 3)):
        _, codes = store.load_code_groups()[codec_id]
        assert np.array_equal(store.load_ivf(codec_id)[3], codes[:, 0] % nlist)
    assert store.verify() == []

    with store.write() as w:  # a codec with no items left goes, and its IVF with it
        w.delete_items([store.item_by_path(f"/b/{i}.jpg").id for i in range(6)])
        w.drop_codec("codec-2")
    assert not store.meta().get("ivf/1") and _ivf_keys(store) == [b"centroids"] and store.verify() == []
    with store.write() as w:  # a codec taking its freed slot starts without one
        w.add_codec(b"third-codec", "codec-3", CB)
        w.add_item(new_item("/c.jpg"), code=code_for(30), codec="codec-3")
    assert store.ivf_meta("codec-3") is None and store.load_ivf("codec-3") is None and store.verify() == []


def test_a_retrain_switch_drops_every_codecs_ivf(store):
    with store.write() as w:
        w.add_codec(b"second-codec", "codec-2", CB)
        w.set_ivf(np.eye(NLIST, 8, dtype=np.float32), INFO, [], [])
        w.set_ivf(np.eye(NLIST, 8, dtype=np.float32), dict(INFO, codec_id="codec-2"), [], [], codec="codec-2")
    with store.write(assign_ivf=by_first_byte) as w:
        ids = [w.add_item(new_item(f"/{i}.jpg"), code=code_for(i), codec=f"codec-{1 + i % 2}") for i in range(6)]
    assert len(_ivf_keys(store)) == 2 and store.verify() == []
    with store.write() as w:
        w.set_pending_codec(b"new-codec", "codec-9", CB)
        w.set_recodes(ids, np.stack([np.frombuffer(code_for(i), np.uint8) for i in ids]))
        w.switch_codec()
    assert store.ivf_meta() is None and not store.meta().get("ivf/1") and _ivf_keys(store) == []
    assert store.verify() == []


def test_verify_names_a_list_row_of_a_codec_without_an_ivf(store):
    with store.write() as w:
        w.add_codec(b"second-codec", "codec-2", CB)
        w.set_ivf(np.eye(NLIST, 8, dtype=np.float32), INFO, [], [])
    with store.write(assign_ivf=by_first_byte) as w:
        w.add_item(new_item("/a.jpg"), code=code_for(1))
        w.add_item(new_item("/b.jpg"), code=code_for(2), codec="codec-2")
    env, dbs = store.lmdb
    with env.begin(write=True) as txn:  # codec-2's segment given a row behind the store's back
        key, raw = next((k, v) for k, v in raw_segments(store).items() if segment_slot(k) == 1)
        txn.put(int_key(key), pack_list_row(np.zeros(1, np.uint32), code_segment_head(raw)[2]), db=dbs["ivf"])
    assert any("whose codec has no IVF" in p for p in store.verify(structure=False))


def _ivf_keys(store) -> list[bytes]:
    """db `ivf`'s keys but list rows (8-byte segment keys)."""
    env, dbs = store.lmdb
    with env.begin(db=dbs["ivf"]) as txn:
        return [bytes(k) for k in txn.cursor().iternext(values=False) if len(k) != 8]
