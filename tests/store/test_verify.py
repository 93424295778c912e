"""Store.verify (semdb/store/verify.py): each kind of inconsistency is reported."""

import numpy as np
from storekit import code_for, emb_for, new_item, raw_segments

from semdb.store import segments
from semdb.store.format import int_key


def test_verify_reports_each_kind_of_inconsistency(store):
    with store.write() as w:
        a = w.add_item(new_item("/a.jpg"), code=code_for(1))
        b = w.add_item(new_item("/b.jpg"), code=code_for(2))
        c = w.add_item(new_item("/c.jpg"), embedding=emb_for(3))
    assert store.verify() == []
    with store.write() as w:
        d = w.add_item(new_item("/d.jpg"), code=code_for(4))  # its own code segment
    env, dbs = store.lmdb
    k = int_key
    seg_d = max(raw_segments(store))
    with env.begin(write=True) as txn:  # damage the store behind its back
        txn.delete(k(seg_d), db=dbs["codes"])  # d loses its code
        txn.put(k(a), np.zeros(16, np.float16).tobytes(), db=dbs["staging"])  # a: code and staging
        txn.put(k(77), np.zeros(16, np.float16).tobytes(), db=dbs["staging"])
        # a segment whose ids run past next_id and whose path repeats item b's
        row = segments.Row(90, b"/b.jpg", "sha256:zzz", 1, 2, 3, 4, 5.0, 6.0, None)
        txn.put(k(90), segments.encode([row]), db=dbs["itemsegs"])
    problems = "\n".join(store.verify())
    assert f"item {d}: neither a code nor a staging row" in problems
    assert f"item {a}: both a code and a staging row" in problems
    assert "staging row for missing item 77" in problems
    assert "item segment 90: ids [90]..[90] outside [90, 5)" in problems
    assert f"item 90: path '/b.jpg' is also item {b}" in problems
    assert c  # still sound: staged, no code
