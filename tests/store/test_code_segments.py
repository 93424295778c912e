"""Code segments (semdb/store/code_segments.py): load_codes, rewrites of only the segment
holding a changed item, compaction."""

import numpy as np
import pytest
from storekit import CB, code_for, code_map, emb_for, new_item, raw_segments

from semdb.store import code_segments


def test_load_codes_returns_exactly_the_coded_items_and_is_cached(store):
    expected = {}
    with store.write() as w:
        for i in range(30):
            expected[w.add_item(new_item(f"/{i}.jpg"), code=code_for(i))] = code_for(i)
        w.add_item(new_item("/staged.jpg"), embedding=emb_for(0))
    ids, codes = store.load_codes()
    assert ids.dtype == np.uint64 and codes.dtype == np.uint8 and codes.shape == (30, CB)
    assert code_map(store) == expected
    assert store.load_codes()[1] is codes  # unchanged store: served from memory
    with pytest.raises(ValueError):
        codes[0, 0] = 1  # the cached arrays are shared, so read-only
    with store.write() as w:
        w.delete_item(1)
    del expected[1]
    assert store.load_codes()[1] is not codes
    assert code_map(store) == expected


def test_empty_store_has_no_codes(store):
    ids, codes = store.load_codes()
    assert ids.shape == (0,) and codes.shape == (0, CB)


def test_delete_and_recode_rewrite_only_the_segment_holding_the_item(store):
    batches = []
    for b in range(3):
        with store.write() as w:
            batches.append([w.add_item(new_item(f"/{b}/{i}.jpg"), code=code_for(b * 10 + i)) for i in range(10)])
    before = raw_segments(store)
    assert len(before) == 3  # one segment per batch
    with store.write() as w:
        w.delete_item(batches[1][3])
        w.delete_item(batches[1][4])
    after = raw_segments(store)
    assert after.keys() == before.keys()
    assert [s for s in before if before[s] != after[s]] == [1]

    with store.write() as w:
        w.set_code(batches[2][0], code_for(7, salt=7))
    again = raw_segments(store)
    assert again[0] == after[0] and again[1] == after[1] and again[2] != after[2]
    assert len(again) == 4  # the new code went into the batch's new segment
    assert code_map(store)[batches[2][0]] == code_for(7, salt=7)

    with store.write() as w:
        for i in batches[0]:
            w.delete_item(i)
    assert 0 not in raw_segments(store)  # an emptied segment disappears
    assert store.verify() == []


def test_compaction_merges_small_segments_and_preserves_codes(store, monkeypatch):
    monkeypatch.setattr(code_segments, "COMPACT_AFTER", 4)
    monkeypatch.setattr(code_segments, "CODE_SEGMENT_MAX", 16)
    expected = {}
    for b in range(12):
        with store.write() as w:
            for i in range(3):
                expected[w.add_item(new_item(f"/{b}/{i}.jpg"), code=code_for(b * 3 + i))] = code_for(b * 3 + i)
        assert sum(len(v) < 16 * (8 + CB) for v in raw_segments(store).values()) <= 5
        assert code_map(store) == expected
    with store.write() as w:
        w.delete_item(5)
    del expected[5]
    store.compact()
    sizes = [int.from_bytes(v[:8], "little") for v in raw_segments(store).values()]
    # segments of at least half CODE_SEGMENT_MAX are left alone, the small rest merged into one
    assert sum(sizes) == 35 and max(sizes) <= 16 and sum(n < 8 for n in sizes) <= 1
    assert code_map(store) == expected
    assert store.verify() == []
