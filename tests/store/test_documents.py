"""Documents beside items (db `docs`): written in the item's transaction, gone with it, checked
by verify, and added to a store made before documents existed."""

import pytest
from storekit import code_for, new_item

from semdb.errors import InputError
from semdb.store import Store
from semdb.store.documents import Document, pack, unpack
from semdb.store.format import int_key


def test_record_round_trips_and_rejects_what_it_cannot_store():
    doc = Document("id é", "text\x00 with odd \ud800 bytes", {"n": 1, "nested": {"a": [1, 2]}})
    assert unpack(pack(doc)) == doc
    for bad in (Document(""), Document("x", "t", {"o": object()}), Document("x", 3)):
        with pytest.raises(InputError):
            pack(bad)


def test_documents_are_written_with_their_items_and_removed_with_them(store):
    with store.write() as w:
        a = w.add_item(new_item("/p/a.jpg"), code=code_for(1))
        w.set_document(a, pack(Document("A", "first", {"k": 1})))
        b = w.add_item(new_item("/p/b.jpg"), code=code_for(2))
        with pytest.raises(InputError):  # no such item: the batch stays usable
            w.set_document(999, pack(Document("Z")))
    assert store.documents([a, b]) == [Document("A", "first", {"k": 1}), None]
    assert store.document_ids() == {"A": a} and store.verify() == []
    with store.write() as w:
        w.delete_item(a)
    assert store.document_ids() == {} and store.verify() == []


def test_verify_reports_orphan_damaged_and_duplicate_documents(store):
    with store.write() as w:
        a = w.add_item(new_item("/p/a.jpg"), code=code_for(1))
        b = w.add_item(new_item("/p/b.jpg"), code=code_for(2))
        w.set_document(a, pack(Document("A")))
        w.set_document(b, pack(Document("A")))
    env, dbs = store.lmdb
    with env.begin(write=True) as txn:
        txn.put(int_key(77), pack(Document("orphan")), db=dbs["docs"])
        txn.put(int_key(78), b"\x05\x00ab", db=dbs["docs"])
    problems = store.verify()
    assert any("names items" in p for p in problems)
    assert any("missing item 77" in p for p in problems)
    assert any("document of item 78" in p for p in problems)


def test_a_store_made_before_documents_gets_them_at_its_first_writable_open(path):
    with Store(path, create=True) as s:
        with s.write() as w:
            item = w.add_item(new_item("/p/a.jpg"), embedding=[1.0, 0.0])
        env, dbs = s.lmdb
        with env.begin(write=True) as txn:
            txn.drop(dbs["docs"], delete=True)  # as semdb wrote stores before documents
    with Store(path, readonly=True) as s:  # reads fine without it
        assert s.documents([item]) == [None] and s.document_ids() == {} and s.verify() == []
    with Store(path) as s:  # created here
        with s.write() as w:
            w.set_document(item, pack(Document("a")))
        assert s.document_ids() == {"a": item} and s.verify() == []
