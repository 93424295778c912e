"""IVF over the stored codes (semdb/search/ivf.py): the same results as the exhaustive scan when every
list is probed, reasonable recall at the default nprobe, persisted list assignments kept up to
date by commits, rebuilt by retrain, filters, and stores from before the IVF."""

import lmdb
import numpy as np
import pytest

import semdb
from semdb import Codec
from semdb.context import StoreContext
from semdb.errors import InputError
from semdb.ingest import CodecPolicy, ivf_upkeep
from semdb.search import ivf as search_ivf
from semdb.search.index import codec_index
from semdb.search.ivf import Assigner, IvfIndex, nlist_for, train_centroids
from semdb.search.searcher import Searcher
from semdb.store import Item

DIM = 64


def clustered(n, seed=0, centers=40, spread=0.35, dim=DIM):
    """Unit vectors around `centers` random directions (photo collections are clustered)."""
    rng = np.random.default_rng(seed)
    C = np.random.default_rng(123).standard_normal((centers, dim))
    X = C[rng.integers(0, centers, n)] + spread * rng.standard_normal((n, dim)) * np.sqrt(dim / 8)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32)


@pytest.fixture(scope="module")
def coded():
    X = clustered(6000)
    codec = Codec.train(X[:2000], bits=64, seed=0)  # 64 bits: full-dimension residual stages
    return codec, codec.encode(X), clustered(30, seed=7)


def _ivf(codec, codes, nlist):
    C = train_centroids(codec, codes, nlist)
    return codec_index(codec, codes, ivf=(C, Assigner(codec, C)(codes)))


def test_assignment_is_the_nearest_centroid_of_the_decoded_code(coded):
    codec, codes, _ = coded
    assert codec.residual
    X = clustered(2000)
    coarse = Codec.train(X, bits=64, seed=0, coarse=True)  # a coarse first slot + PCA slots
    for c, cc in ((codec, codes), (coarse, coarse.encode(X))):
        C = train_centroids(c, cc, 16)
        brute = np.argmin(((c.decode_additive(cc[:500])[:, None, :] - C[None]) ** 2).sum(-1), axis=1)
        assert (Assigner(c, C)(cc[:500]) == brute).mean() > 0.999  # float ties aside


def test_every_list_probed_gives_the_exhaustive_results(coded):
    codec, codes, Q = coded
    index = _ivf(codec, codes, 32)
    exhaustive = codec_index(codec, codes)
    got_ids, got_scores = index.search(Q, 10, nprobe=32)
    ref_ids, ref_scores = exhaustive.search(Q, 10)
    assert np.array_equal(got_ids, ref_ids)
    np.testing.assert_allclose(got_scores, ref_scores, rtol=1e-6)
    # FAISS's IVF scores of its candidates are the flat fast-scan's scores of the same codes
    import faiss

    q = Q[:1]
    Dq, Iq = index.quantizer.search(q, 32)
    params = faiss.SearchParametersIVF()
    params.nprobe = index.index.nprobe = 32
    D, Ids = np.empty((1, 50), np.float32), np.empty((1, 50), np.int64)
    index.index.search_preassigned_c(
        1,
        faiss.swig_ptr(q),
        50,
        faiss.swig_ptr(Iq),
        faiss.swig_ptr(Dq),
        faiss.swig_ptr(D),
        faiss.swig_ptr(Ids),
        False,
        params,
    )
    prepared = exhaustive.prepare(q)
    flat_D, flat_I = exhaustive.scan(prepared, 50)
    # its candidates' scan scores, <q, b> included, are the flat index's (they compare across codecs)
    (found,) = index.candidates(q, 10, nprobe=32)
    scanned = dict(zip(flat_I[0].tolist(), flat_D[0].tolist()))
    assert all(abs(scanned[i] - a) < 1e-5 for i, a in zip(found.rows.tolist(), found.approx.tolist()) if i in scanned)
    flat_D -= prepared.offset[:, None]  # FAISS's own IVF scan scores leave out <q, b>
    flat = dict(zip(flat_I[0].tolist(), flat_D[0].tolist()))
    shared = [i for i in Ids[0].tolist() if i in flat]
    assert len(shared) >= 40
    assert all(abs(flat[i] - d) < 1e-6 for i, d in zip(Ids[0].tolist(), D[0].tolist()) if i in flat)


def test_default_nprobe_recall(coded):
    codec, codes, Q = coded
    index = _ivf(codec, codes, nlist_for(len(codes)))
    ref, _ = codec_index(codec, codes).search(Q, 10)
    got, _ = index.search(Q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ref, got)])
    assert recall >= 0.9
    assert index.nprobe < index.nlist


@pytest.mark.parametrize("exact_max", [search_ivf.FILTER_EXACT_MAX, 0])
def test_filters_through_ivf(coded, monkeypatch, exact_max):
    """A filter small enough is scored exactly; a larger one goes through FAISS's IDSelector."""
    monkeypatch.setattr(search_ivf, "FILTER_EXACT_MAX", exact_max)
    codec, codes, Q = coded
    index = _ivf(codec, codes, 32)
    rows = np.arange(1, len(codes), 3)
    got, _ = index.search(Q, 10, rows=rows, nprobe=32)
    assert np.isin(got, rows).all()
    ref, _ = codec_index(codec, codes).search(Q, 10, rows=rows)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ref, got)]) >= 0.97
    got, _ = index.search(Q, 10, rows=rows)  # default nprobe: still only those rows
    assert np.isin(got[got >= 0], rows).all()


def _paths(n, start=0):
    return [f"/photos/{'a' if i % 2 else 'b'}/img{i:05d}.jpg" for i in range(start, start + n)]


# the IVF indexes one codec's codes: these stores keep one (every photo coded, none staged)
ONE_CODEC = CodecPolicy(bits=64, max_codecs=1)


def _db(path):
    return semdb.open(path)


def test_store_builds_keeps_and_updates_the_ivf(tmp_path, monkeypatch):
    monkeypatch.setattr(ivf_upkeep, "MIN_ITEMS", 1500)
    X = clustered(2400, seed=1)
    with _db(tmp_path / "s") as db:
        db.add_embeddings(_paths(1000), X[:1000], model="ViT-B-32", policy=ONE_CODEC)
        assert db.info()["ivf"] is None  # below the threshold: exhaustive
        db.add_embeddings(_paths(1000, 1000), X[1000:2000], policy=ONE_CODEC)
        info = db.info()["ivf"]
        assert info and info["built_on"] == 2000 and info["nlist"] == nlist_for(2000)
        assert db.store.verify() == []
    with semdb.open(tmp_path / "s", readonly=True) as db:  # persisted: a reader uses it as it is
        ids, index = db._searcher.index()
        assert isinstance(index, IvfIndex)
        assert (db.store.load_ivf()[3] >= 0).all()
        hits = db.search_vectors(X[5:6], k=3)[0]
        assert hits[0].path == _paths(1, 5)[0]
        assert db.search_vectors(X[5:6], k=3, nprobe=index.nlist)[0][0].id == hits[0].id
    with _db(tmp_path / "s") as db:  # incremental: new items get their list in their own commit
        db.add_embeddings(_paths(400, 2000), X[2000:], policy=ONE_CODEC)
        got = db.store.load_ivf()
        assert got[1]["built_on"] == 2000 and (got[3] >= 0).all() and len(got[3]) == 2400
        found = [db.search_vectors(X[i : i + 1], k=1)[0][0].path for i in range(2000, 2400, 40)]
        assert found == [_paths(1, i)[0] for i in range(2000, 2400, 40)]
        gone = [db.store.item_by_path(p).id for p in _paths(50, 2000)]
        with db.store.write() as w:
            for i in gone:
                w.delete_item(i)
        assert not {h.id for h in db.search_vectors(X[2000:2050], k=5, nprobe=1000)[0]} & set(gone)
        assert (db.store.load_ivf()[3] >= 0).all() and db.store.verify() == []
        db.store.compact()  # merged segments keep their lists
        assert (db.store.load_ivf()[3] >= 0).all() and db.store.verify() == []
        # filters (folder) through the IVF
        hits = db.search(like=db.store.item_by_path(_paths(1, 3)[0]).id, under="/photos/a", k=10)
        assert hits and all(h.path.startswith("/photos/a/") for h in hits)
        with pytest.raises(InputError):
            db.search_vectors(X[:1], nprobe=0)


def test_codes_written_without_an_assigner_are_assigned_when_read_and_filled_later(tmp_path):
    X = clustered(1200, seed=2)
    with _db(tmp_path / "s") as db:
        db.add_embeddings(_paths(1000), X[:1000], model="ViT-B-32", policy=ONE_CODEC)
        ctx = StoreContext(db.store)
        ivf_upkeep.build(ctx, nlist=16)
        codes = db.codec.encode(X[1000:])
        with db.store.write() as w:  # no assign_ivf: e.g. a writer that does not know the IVF
            for path, code in zip(_paths(200, 1000), codes):
                w.add_item(Item.new(path, 1, 1, "h" + path, 1, 1), code=code)
        assert (db.store.load_ivf()[3] < 0).sum() == 200 and db.store.verify() == []
        assert db.search_vectors(X[1100:1101], k=1)[0][0].path == _paths(1, 1100)[0]
        assert ivf_upkeep.maintain(ctx) == {db.codec.id: "filled"}
        assert (db.store.load_ivf()[3] >= 0).all() and db.store.verify() == []


def test_growth_rebuilds_the_ivf(tmp_path, monkeypatch):
    monkeypatch.setattr(ivf_upkeep, "MIN_ITEMS", 600)
    X = clustered(2600, seed=3)
    with _db(tmp_path / "s") as db:
        db.add_embeddings(_paths(600), X[:600], model="ViT-B-32", policy=ONE_CODEC)
        assert db.info()["ivf"]["built_on"] == 600
        db.add_embeddings(_paths(2000, 600), X[600:], policy=ONE_CODEC)
        assert db.info()["ivf"]["built_on"] == 2600  # grown 4x: new centroids, every code reassigned


def test_retrain_rebuilds_the_ivf(tmp_path, tiny_model):
    from kit import write_photos

    photos = write_photos(tmp_path / "photos", n_generated=20)
    with semdb.open(tmp_path / "s", model=tiny_model) as db:
        db.ingest([photos], train_now=True, bits=64)
        ivf_upkeep.build(StoreContext(db.store), nlist=4)
        old = db.store.ivf_meta()
        assert old["codec_id"] == db.codec.id
        db.retrain(bits=64)
        new = db.store.ivf_meta()
        assert new and new["codec_id"] == db.codec.id  # (the switch dropped the old IVF: this is a new one)
        assert (db.store.load_ivf()[3] >= 0).all() and db.store.verify() == []
        assert isinstance(db._searcher.index()[1], IvfIndex)
        assert len(db.search("a cat", k=3)) == 3


def test_a_store_from_before_the_ivf_still_reads(tmp_path):
    X = clustered(800, seed=4)
    with _db(tmp_path / "s") as db:
        db.add_embeddings(_paths(800), X, model="ViT-B-32", policy=ONE_CODEC)
        ref = [h.id for h in db.search_vectors(X[:1], k=5)[0]]
    env = lmdb.open(str(tmp_path / "s"), max_dbs=16)  # what a store written before the ivf db looks like
    with env.begin(write=True) as txn:
        txn.drop(env.open_db(b"ivf", txn=txn), delete=True)
    env.close()
    with semdb.open(tmp_path / "s", readonly=True) as db:
        assert db.store.load_ivf() is None and db.store.verify() == []
        assert [h.id for h in db.search_vectors(X[:1], k=5)[0]] == ref
    with _db(tmp_path / "s") as db:  # the first writable open creates it
        ctx = StoreContext(db.store)
        ivf_upkeep.build(ctx, nlist=8)
        assert isinstance(Searcher(ctx).index()[1], IvfIndex) and db.store.verify() == []


def test_two_level_assignment_and_plane_ranking(coded, monkeypatch):
    codec, codes, Q = coded
    C = train_centroids(codec, codes, 64)
    exact = Assigner(codec, C)(codes)
    monkeypatch.setattr(Assigner, "EXACT_NLIST", 8)
    assert (Assigner(codec, C)(codes) == exact).mean() > 0.9  # nearly always the nearest list
    X = clustered(3000, seed=5, dim=256)
    plain = Codec.train(X[:1500], bits=160, seed=0)  # no coarse slot, 80 < 256 coordinates: k-means and
    Q = clustered(30, seed=8, dim=256)  # list ranking on z
    pc = plain.encode(X)
    Cz = train_centroids(plain, pc, 32)
    index = codec_index(plain, pc, ivf=(Cz, Assigner(plain, Cz)(pc)))
    assert index.ranks_in_plane
    Dq, Iq = index.quantizer.search(Q, 8)
    Dp, Ip = index.rank_lists(Q, 8)
    assert (Ip == Iq).mean() > 0.99
    np.testing.assert_allclose(Dp, Dq, atol=1e-5)
    assert np.array_equal(index.search(Q, 10, nprobe=32)[0], codec_index(plain, pc).search(Q, 10)[0])
