"""The folders and dates a filtered search reads (semdb/search/filters.py): after a commit, only
the item segments it rewrote are read again, and every change a commit makes is seen."""

import dataclasses

import numpy as np
import pytest

from semdb.context import StoreContext
from semdb.search.request import SearchRequest
from semdb.search.searcher import Searcher
from semdb.store import Store, segments
from semdb.store.format import Item

DIM = 16
STORED = 3 * segments.ITEMSEG_MAX + 100  # several item segments
T0 = 1.6e9
DAY = 86400.0


def _items(store, paths, first_day=0):
    """Store items at `paths` (staged embeddings: no codec needed), taken one day apart."""
    rng = np.random.default_rng(len(paths))
    with store.write() as w:
        for i, path in enumerate(paths):
            item = Item(0, path, 1, 1, f"{i:032x}", 8, 8, T0, T0, T0 + (first_day + i) * DAY)
            w.add_item(item, embedding=rng.standard_normal(DIM).astype(np.float32))


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "store", create=True)
    _items(s, [f"/photos/{'ab'[i % 2]}/{i:05d}.jpg" for i in range(STORED)])
    yield s
    s.close()


def _under(searcher, folder, **dates):
    hits = searcher.search(SearchRequest.of(vector=np.ones(DIM), k=10_000, under=folder, **dates))[0]
    return sorted(h.path for h in hits)


def test_a_filtered_search_after_a_commit_reads_the_batch_not_the_store(store):
    s = Searcher(StoreContext(store))
    assert len(_under(s, "/photos/a")) == STORED // 2
    assert s.filter_facts.rows_read == STORED
    _items(store, [f"/photos/new/{i}.jpg" for i in range(200)])
    assert _under(s, "/photos/new") == sorted(f"/photos/new/{i}.jpg" for i in range(200))
    # the batch filled the last segment: that segment is read again, no other
    assert s.filter_facts.rows_read - STORED <= 200 + segments.ITEMSEG_MAX
    before = s.filter_facts.rows_read
    assert len(_under(s, "/photos/b")) == STORED // 2  # no commit in between: nothing read
    assert s.filter_facts.rows_read == before


def test_moved_redated_and_deleted_items_are_seen_by_the_next_filtered_search(store):
    s = Searcher(StoreContext(store))
    assert len(_under(s, "/photos/a")) == STORED // 2
    moved, redated, deleted = (store.item_by_path(f"/photos/a/{i:05d}.jpg") for i in (2, 4, 6))
    with store.write() as w:
        w.update_item(dataclasses.replace(moved, path="/photos/a/sub/moved.jpg"))
        w.update_item(dataclasses.replace(redated, taken=T0 - 1000 * DAY))
        w.delete_item(deleted.id)
    assert _under(s, "/photos/a/sub") == ["/photos/a/sub/moved.jpg"]  # a folder inside the folder
    assert _under(s, "/photos/a/su") == []  # a folder, not a prefix of a name
    assert len(_under(s, "/photos/a")) == STORED // 2 - 1
    assert _under(s, "/photos", before="2020-01-01") == [redated.path]
    assert s.filter_facts.rows_read < 2 * STORED  # one segment read again, not the store
