"""IVF list rows (semdb/store/ivf_rows.py): a write batch given an assignment function writes
the lists of its new codes in the same transaction; rewritten and merged code segments keep
their rows' lists; without the function (or when it declines) a segment has no row until
filled. The function here is a stand-in for the codec's (list = first code byte mod nlist):
the store only stores what it is given."""

import numpy as np
from storekit import code_for, new_item

from semdb.store import code_segments

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
