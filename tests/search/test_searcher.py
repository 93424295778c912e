"""The Searcher (semdb/search/searcher.py) over a real small store: query vectors, a stored item
to find more like, where filters, refinements, the index read once per commit, a store without
a codec yet. Its stores hold CLIP-like embeddings (no CLIP runs: a request's vectors or stored
items are its terms; the tiny model is named as the one they come from)."""

import dataclasses
import datetime
import shutil

import numpy as np
import pytest
from kit import clip_like_embeddings

import semdb
from semdb.context import StoreContext
from semdb.errors import InputError
from semdb.search.request import SearchRequest, Term
from semdb.search.searcher import Hit, Searcher, best_per_file

N = 240
DAY = 86400.0
T0 = 1.6e9


def _paths(n):
    return [f"/photos/{'ab'[i % 2]}/{i:03d}.jpg" for i in range(n)]


@pytest.fixture(scope="module")
def data():
    return clip_like_embeddings(n=N, dim=64, seed=3)["image_emb"]


@pytest.fixture(scope="module")
def coded_store(tmp_path_factory, data, tiny_model):
    """N coded items under /photos/a and /photos/b, each taken on day i % 10 after T0 (every
    9th: no date); built once, copied by the tests that write."""
    path = tmp_path_factory.mktemp("searcher") / "store"
    with semdb.open(path) as db:
        db.add_embeddings(_paths(N), data, model=tiny_model, bits=64, train_now=True)
        with db.store.write() as w:
            for it in list(db.store.iter_items()):
                taken = None if it.id % 9 == 0 else T0 + (it.id % 10) * DAY
                w.update_item(dataclasses.replace(it, taken=taken))
    return path


@pytest.fixture
def searcher(coded_store):
    with semdb.open(coded_store, readonly=True) as db:
        yield Searcher(StoreContext(db.store)), db.store


def _id(store, i):
    return store.item_by_path(_paths(N)[i]).id


def test_a_stored_items_vector_finds_it_first_best_first(searcher, data):
    s, store = searcher
    [hits] = s.search(SearchRequest.of(vector=data[17], k=5))
    assert len(hits) == 5 and all(isinstance(h, Hit) for h in hits)
    assert hits[0].path == _paths(N)[17] and hits[0].id == _id(store, 17)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True) and 0.8 < scores[0] <= 1.0 + 1e-5
    assert all(store.get_item(h.id).path == h.path and h.frame_ms is None for h in hits)


def test_one_list_of_hits_per_query_row(searcher, data):
    s, store = searcher
    results = s.search(SearchRequest.of(vector=data[[3, 50, 99]], k=2))
    assert [r[0].id for r in results] == [_id(store, i) for i in (3, 50, 99)]
    assert all(len(r) == 2 for r in results)
    assert s.search(SearchRequest.of(vector=data[3], k=N + 10))[0].__len__() == N  # k beyond the store: all


def test_like_searches_from_the_stored_code_and_never_returns_the_item(searcher, data):
    s, store = searcher
    target = _id(store, 40)
    by_id = s.search(SearchRequest.of(like=target, k=6))[0]
    by_path = s.search(SearchRequest.of(like=_paths(N)[40], k=6))[0]
    assert by_id == by_path and target not in {h.id for h in by_id} and len(by_id) == 6
    decoded = s.item_vector(target)
    assert decoded.shape == (1, 64) and float(decoded[0] @ data[40]) > 0.8  # its code, decoded
    assert s.stored_id(_paths(N)[40]) == s.stored_id(target) == target
    for missing in (10_000, "/photos/nope.jpg"):
        with pytest.raises(InputError, match="not an item of"):
            s.search(SearchRequest.of(like=missing))


def test_a_like_search_scans_as_a_search_of_its_vector_does_and_drops_the_item(searcher):
    s, store = searcher
    target = _id(store, 40)
    [like] = s.candidates(SearchRequest.of(like=target, k=5))
    [vector] = s.candidates(SearchRequest.of(vector=s.item_vector(target), k=5))
    # not an exact pass over every other row: the same shortlist, less the item itself
    assert target in vector.rows and set(like.rows.tolist()) == set(vector.rows.tolist()) - {target}
    assert like.complete == vector.complete and len(like.rows) < N - 1
    [hits] = s.search(SearchRequest.of(like=target, k=5))
    assert [h.id for h in hits] == [i for i in vector.rows[np.argsort(-vector.exact)].tolist() if i != target][:5]


def test_weighted_item_terms_add_up_and_terms_that_cancel_are_refused(searcher, data):
    s, store = searcher
    a, b = _id(store, 5), _id(store, 6)
    q = s.vector([Term("item", a, 2.0), Term("item", b, 1.0)])
    assert q.shape == (1, 64) and abs(float(np.linalg.norm(q)) - 1) < 1e-5
    expected = 2 * s.item_vector(a) + s.item_vector(b)
    np.testing.assert_allclose(q, expected / np.linalg.norm(expected), atol=1e-5)
    with pytest.raises(InputError, match="cancel out"):
        s.vector([Term("item", a, 1.0), Term("item", a, -1.0)])
    with pytest.raises(InputError, match="empty query"):
        s.vector([])


def test_where_keeps_hits_under_a_folder_and_in_a_date_range(searcher, data):
    s, store = searcher
    under = s.search(SearchRequest.of(vector=data[:4], k=N, under="/photos/a"))
    assert all(len(r) == N // 2 and all(h.path.startswith("/photos/a/") for h in r) for r in under)
    assert s.search(SearchRequest.of(vector=data[0], under="/photos/a/0"))[0] == []  # a folder, not a prefix
    after, before = T0 + 2 * DAY, T0 + 4 * DAY
    dates = {"after": datetime.datetime.fromtimestamp(after), "before": datetime.datetime.fromtimestamp(before)}
    dated = s.search(SearchRequest.of(vector=data[0], k=N, **dates))[0]
    expected = {it.id for it in store.iter_items() if it.taken is not None and after <= it.taken < before}
    assert {h.id for h in dated} == expected and len(expected) > 10  # undated items never pass a date filter
    both = s.search(SearchRequest.of(vector=data[0], k=N, under="/photos/b", **dates))[0]
    assert {h.id for h in both} == {i for i in expected if store.get_item(i).path.startswith("/photos/b/")}


def test_min_score_and_within_refine_the_hits(searcher, data):
    s, _ = searcher
    [every] = s.search(SearchRequest.of(vector=data[8], k=50))
    cut = every[10].score
    [above] = s.search(SearchRequest.of(vector=data[8], k=50, min_score=cut))
    assert above == [h for h in every if h.score >= cut]
    [close] = s.search(SearchRequest.of(vector=data[8], k=50, within=0.05))
    assert close == [h for h in every if h.score >= every[0].score - 0.05] and close[0] == every[0]
    assert s.search(SearchRequest.of(vector=data[8], min_score=2.0))[0] == []


def test_candidates_are_the_searchs_two_stages_in_item_ids(searcher, data):
    s, store = searcher
    [c] = s.candidates(SearchRequest.of(vector=data[12], k=5))
    ids = {it.id for it in store.iter_items()}
    assert set(c.rows.tolist()) <= ids and len(c.rows) >= 5 and len(c.rows) == len(c.exact) == len(c.approx)
    best = c.rows[np.argsort(-c.exact)[:5]].tolist()
    assert best == [h.id for h in s.search(SearchRequest.of(vector=data[12], k=5))[0]]
    [none] = s.candidates(SearchRequest.of(vector=data[12], under="/elsewhere"))
    assert len(none.rows) == 0 and none.complete


def test_the_index_is_read_once_per_commit(coded_store, tmp_path, data):
    shutil.copytree(coded_store, tmp_path / "s")
    with semdb.open(tmp_path / "s") as db:
        s = Searcher(StoreContext(db.store))
        ids, index = s.index()
        assert s.index()[1] is index and len(ids) == N
        with db.store.write() as w:
            w.delete_item(_id(db.store, 17))
        ids2, index2 = s.index()
        assert index2 is not index and len(ids2) == N - 1
        [hits] = s.search(SearchRequest.of(vector=data[17], k=3))
        assert _paths(N)[17] not in {h.path for h in hits}


def test_a_store_without_a_codec_is_searched_exactly_on_its_staged_embeddings(tmp_path, data, tiny_model):
    with semdb.open(tmp_path / "staged") as db:
        db.add_embeddings(_paths(30), data[:30], model=tiny_model)
        assert db.codec is None and db.store.staging_count() == 30
        s = Searcher(StoreContext(db.store))
        [hits] = s.search(SearchRequest.of(vector=data[7], k=3))
        assert hits[0].path == _paths(30)[7] and abs(hits[0].score - 1.0) < 1e-3  # float16 rows, exactly scored
        exact = np.sort(data[:30].astype(np.float16).astype(np.float32) @ data[7])[::-1][:3]
        np.testing.assert_allclose([h.score for h in hits], exact, atol=1e-3)
        like = s.search(SearchRequest.of(like=hits[0].id, k=2))[0]
        assert hits[0].id not in {h.id for h in like} and like[0].id == hits[1].id


def test_an_empty_store_has_no_hits(tmp_path):
    with semdb.open(tmp_path / "empty") as db:
        s = Searcher(StoreContext(db.store))
        assert s.search(SearchRequest.of(vector=np.ones(64), k=3)) == [[]]
        assert len(s.candidates(SearchRequest.of(vector=np.ones(64)))[0].rows) == 0


def test_a_videos_best_frame_stands_for_it():
    hits = [Hit("/v.mp4", 0.9, 1, 0), Hit("/a.jpg", 0.8, 2), Hit("/v.mp4", 0.7, 3, 500), Hit("/b.jpg", 0.6, 4)]
    assert best_per_file(hits) == [hits[0], hits[1], hits[3]]
