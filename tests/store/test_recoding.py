"""A retrain's rows (semdb/store/recoding.py): the pending codec, recode rows that a change of
the item drops, and the switch that installs both in one transaction."""

import numpy as np
import pytest
from storekit import code_for, new_item

from semdb.errors import InputError


def test_pending_codec_recodes_and_switch(store):
    with store.write() as w:
        ids = [w.add_item(new_item(f"/{i}.jpg"), code=code_for(i)) for i in range(6)]
    with store.write() as w:
        w.set_pending_codec(b"new-codec", "codec-2", 4)
    assert store.pending_codec_bytes() == b"new-codec" and len(store.recoded_ids()) == 0
    with store.write() as w:
        w.set_recodes(ids[:4], np.full((4, 4), 7, np.uint8))
    assert store.recoded_ids().tolist() == ids[:4] and store.verify() == []
    with pytest.raises(InputError, match="2 of 6 items have no code under the pending codec yet"):
        with store.write() as w:
            w.switch_codec()
    with store.write() as w:  # a changed item loses its recode: it is encoded again
        w.set_code(ids[0], code_for(50))
    assert store.recoded_ids().tolist() == ids[1:4]
    assert store.load_codes()[1].shape[1] == 8 and store.codec_bytes() == b"codec-bytes"  # queries: old codec
    with store.write() as w:
        w.set_recodes([ids[0], *ids[4:]], np.full((3, 4), 9, np.uint8))
    with store.write() as w:
        w.switch_codec()
    meta = store.meta()
    assert (meta["codec_id"], meta["code_bytes"], meta["pending_codec"]) == ("codec-2", 4, None)
    assert store.codec_bytes() == b"new-codec" and store.pending_codec_bytes() is None
    codes = store.codes_by_id()
    assert sorted(codes) == ids and codes[ids[0]].tolist() == [9] * 4 and codes[ids[1]].tolist() == [7] * 4
    assert len(store.recoded_ids()) == 0 and store.verify() == []


def test_recodes_need_a_pending_codec(store):
    with store.write() as w:
        a = w.add_item(new_item("/a.jpg"), code=code_for(1))
    with pytest.raises(InputError, match="no pending codec"):
        with store.write() as w:
            w.set_recodes([a], np.zeros((1, 4), np.uint8))
