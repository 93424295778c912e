"""A store's codec set: codes of several codecs, each code segment keyed by the codec that wrote
it; a store of one codec is written exactly as before codec sets."""

import numpy as np
import pytest
from storekit import CB, code_for, emb_for, new_item, raw_segments

from semdb.errors import InputError
from semdb.store import Store
from semdb.store.format import SLOT_SHIFT, segment_slot


def _fill(store, n, start=0, codec=None):
    with store.write() as w:
        return [w.add_item(new_item(f"/p/{i}.jpg"), code=code_for(i), codec=codec) for i in range(start, start + n)]


def test_one_codec_keeps_slot_zero_keys_and_no_set(store):
    _fill(store, 5)
    assert all(segment_slot(seg) == 0 for seg in raw_segments(store))
    assert "codec_set" not in store.meta() and store.codec_ids() == ["codec-1"]


def test_codes_of_two_codecs_live_in_their_own_segments(store):
    a = _fill(store, 4)
    with store.write() as w:
        w.add_codec(b"second-codec", "codec-2", CB)
    b = _fill(store, 3, start=4, codec="codec-2")
    assert store.codec_ids() == ["codec-1", "codec-2"] and store.codec_bytes("codec-2") == b"second-codec"
    assert {segment_slot(seg) for seg in raw_segments(store)} == {0, 1}
    groups = store.load_code_groups()
    assert groups["codec-1"][0].tolist() == a and groups["codec-2"][0].tolist() == b
    assert [bytes(c) for c in groups["codec-2"][1]] == [code_for(i) for i in range(4, 7)]
    assert store.verify() == []
    # an item moves between codecs, or to staging and back
    with store.write() as w:
        w.set_code(a[0], code_for(99), codec="codec-2")
        w.set_embedding(b[0], emb_for(1))
    groups = store.load_code_groups()
    assert a[0] in groups["codec-2"][0].tolist() and b[0] not in groups["codec-2"][0].tolist()
    assert store.staging_count() == 1 and store.verify() == []


def test_compaction_merges_each_codecs_segments_apart(store):
    for i in range(3):
        _fill(store, 2, start=10 * i)
    with store.write() as w:
        w.add_codec(b"second-codec", "codec-2", CB)
    for i in range(3):
        _fill(store, 2, start=100 + 10 * i, codec="codec-2")
    before = store.load_code_groups()
    store.compact()
    segs = raw_segments(store)
    assert sorted(segment_slot(seg) for seg in segs) == [0, 1]  # one merged segment per codec
    after = store.load_code_groups()
    for codec_id in before:
        assert sorted(before[codec_id][0].tolist()) == sorted(after[codec_id][0].tolist())
    assert store.verify() == []


def test_bad_codec_changes_are_refused_before_anything_changes(store):
    with pytest.raises(InputError, match="no codec codec-9"):
        with store.write() as w:
            w.add_item(new_item("/x.jpg"), code=code_for(1), codec="codec-9")
    with pytest.raises(InputError, match="writes 4-byte codes"):
        with store.write() as w:
            w.add_codec(b"narrow", "codec-2", 4)
    with pytest.raises(InputError, match="first codec"):
        with store.write() as w:
            w.drop_codec("codec-1")
    assert store.count() == 0 and store.codec_ids() == ["codec-1"]


def test_a_dropped_codec_frees_its_slot_and_its_bytes(store):
    with store.write() as w:
        w.add_codec(b"second-codec", "codec-2", CB)
    ids = _fill(store, 2, codec="codec-2")
    with store.write() as w:
        w.delete_items(ids)
        w.drop_codec("codec-2")
    assert store.codec_ids() == ["codec-1"] and store.codec_bytes("codec-2") is None
    assert store.verify() == []


def test_verify_names_codes_of_a_codec_the_set_does_not_hold(store):
    _fill(store, 2)
    env, dbs = store.lmdb
    with env.begin(write=True) as txn:  # a segment keyed to slot 3, written behind the store's back
        seg = next(iter(raw_segments(store).values()))
        txn.put(((3 << SLOT_SHIFT) | 77).to_bytes(8, "big"), seg, db=dbs["codes"])
    problems = store.verify(structure=False)
    assert any("codec slot 3" in p for p in problems)


def test_a_retrain_switch_leaves_one_codec_and_no_staged_rows(store):
    a = _fill(store, 3)
    with store.write() as w:
        w.add_codec(b"second-codec", "codec-2", CB)
        w.add_item(new_item("/staged.jpg"), embedding=emb_for(5))
    b = _fill(store, 2, start=10, codec="codec-2")
    staged = store.item_by_path("/staged.jpg").id
    ids = [*a, *b, staged]
    with store.write() as w:
        w.set_pending_codec(b"new-codec", "codec-3", CB)
        w.set_recodes(ids, np.stack([np.frombuffer(code_for(i, 1), np.uint8) for i in ids]))
    with store.write() as w:
        w.switch_codec()
    assert store.codec_ids() == ["codec-3"] and store.staging_count() == 0
    assert list(store.load_code_groups()) == ["codec-3"] and store.codec_bytes("codec-2") is None
    assert store.verify() == []


def test_a_store_reopened_reads_its_set(path):
    with Store(path, create=True) as s:
        with s.write() as w:
            w.add_codec(b"first", "codec-1", CB)
            w.add_codec(b"second", "codec-2", CB)
            w.add_item(new_item("/a.jpg"), code=code_for(1), codec="codec-2")
    with Store(path, readonly=True) as s:
        assert s.codec_ids() == ["codec-1", "codec-2"] and s.codec_bytes() == b"first"
        assert list(s.load_code_groups()) == ["codec-2"] and s.verify() == []
