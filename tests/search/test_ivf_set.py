"""An IVF per codec of a codec set (semdb/ingest/ivf_upkeep.py, semdb/store/ivf_rows.py): each codec
past MIN_ITEMS of its codes gets its own, a codec below it is scanned whole; the search over the
set finds what the exhaustive scan of every codec finds; new codes get their own codec's lists in
their commit; rm, compaction, a dropped codec and verify keep the lists right."""

import numpy as np
import pytest
from kit import clip_like_embeddings, semdb_cli

import semdb
from semdb.context import StoreContext
from semdb.ingest import ivf_upkeep
from semdb.search.adc import AdcIndex, FlatIndex
from semdb.search.index import SetIndex, codec_index
from semdb.search.ivf import Assigner, IvfIndex
from semdb.store import Item

THRESHOLD = 650  # MIN_ITEMS here: the home codec (700 photos) passes it at once, the other source's later


@pytest.fixture(scope="module")
def sources():
    """Home photos and photos of another source, turned so that half their spread lies outside
    the home subspace (they get a codec of their own)."""
    from semdb.bench import source_shift  # here, not at the top: the bench package loads matplotlib

    X = clip_like_embeddings(n=1800, dim=64, seed=5)["image_emb"]
    home, other = X[:800], X[800:]
    return home, source_shift(home[:600], other, 0.5, seed=1).apply(other).astype(np.float32)


def _add(db, prefix, X, start, **kw):
    db.add_embeddings([f"/{prefix}/{i}.jpg" for i in range(start, start + len(X))], X, **kw)


def _flat(db) -> SetIndex:
    """The set's exhaustive index: every codec's codes scanned whole, the staged rows exactly (the
    searcher's row order)."""
    codecs, parts = db._ctx.codecs, []
    for codec_id, (_, codes) in db.store.load_code_groups().items():
        parts.append(codec_index(codecs[codec_id], np.asarray(codes)))
    staged = list(db.store.iter_staging())
    if staged:
        parts.append(FlatIndex(np.concatenate([e for _, e in staged])))
    return SetIndex(parts)


def _lists_are_their_codecs(db) -> None:
    """Every code of a codec with an IVF has a list row, and it is the list its own codec's
    centroids give it."""
    codecs = db._ctx.codecs
    for codec_id, (_, codes) in db.store.load_code_groups().items():
        got = db.store.load_ivf(codec_id)
        if got is None:
            continue
        _, info, C, lists = got
        assert info["codec_id"] == codec_id and (lists >= 0).all()
        assert np.array_equal(lists, Assigner(codecs[codec_id], C)(np.asarray(codes)))


def test_each_codec_past_the_threshold_gets_its_own_ivf(tmp_path, monkeypatch, sources):
    monkeypatch.setattr(ivf_upkeep, "MIN_ITEMS", THRESHOLD)
    home, turned = sources
    with semdb.open(tmp_path / "s") as db:
        _add(db, "home", home[:700], 0, model="ViT-B-32")
        _add(db, "new", turned[:600], 0)
        home_id, new_id = [c["id"] for c in db.info()["codecs"]]
        ivfs = {c["id"]: c["ivf"] for c in db.info()["codecs"]}
        assert ivfs[home_id]["built_on"] >= THRESHOLD and ivfs[new_id] is None  # ~600 codes: scanned whole
        kinds = [type(p) for p in db._searcher.index()[1].parts]
        assert kinds[:2] == [IvfIndex, AdcIndex]

        _add(db, "new", turned[600:800], 600)  # the other source passes the threshold: its own IVF
        info = db.info()
        assert [c["ivf"] is not None for c in info["codecs"]] == [True, True]
        assert info["ivf"] == info["codecs"][0]["ivf"]  # the first codec's, as in a store of one
        assert set(db.store.meta()) >= {"ivf", "ivf/1"}
        _lists_are_their_codecs(db)
        assert db.store.verify() == []

        ids, index = db._searcher.index()
        assert isinstance(index, SetIndex) and [type(p) for p in index.parts[:2]] == [IvfIndex, IvfIndex]
        Q = np.concatenate([home[::20], turned[::25]])
        every_list = max(p.nlist for p in index.parts[:2])
        got, _ = index.search(Q, 10, nprobe=every_list)
        ref, _ = _flat(db).search(Q, 10)
        assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, ref)]) >= 0.98
        hits = db.search_vectors(turned[600:700:5], k=1)  # the default nprobe: each finds itself
        assert sum(h[0].path == f"/new/{600 + 5 * i}.jpg" for i, h in enumerate(hits)) >= 18
        nlists = [c["ivf"]["nlist"] for c in info["codecs"]]
    lines = [line for line in semdb_cli("info", "--store", tmp_path / "s").stdout.splitlines() if " of 2 " in line]
    assert len(lines) == 2 and all(line.rstrip().endswith(f"IVF of {n} lists") for line, n in zip(lines, nlists))


def test_new_codes_get_their_own_codecs_lists_and_rm_keeps_them(tmp_path, monkeypatch, sources):
    monkeypatch.setattr(ivf_upkeep, "MIN_ITEMS", 500)
    home, turned = sources
    with semdb.open(tmp_path / "s") as db:
        _add(db, "home", home[:700], 0, model="ViT-B-32")
        _add(db, "new", turned[:600], 0)
        home_id, new_id = db.store.codec_ids()
        before = {c: db.store.ivf_meta(c) for c in (home_id, new_id)}
        assert all(before.values())

        ctx = StoreContext(db.store)  # a writer of its own: its commits assign new codes' lists
        codecs = ctx.codecs
        with ctx.write() as w:
            for i, x in enumerate(home[700:750]):
                w.add_item(Item.new(f"/more/home{i}.jpg", 1, 1, f"h{i}", 1, 1), code=codecs[home_id].encode(x[None])[0])
            for i, x in enumerate(turned[800:850]):
                w.add_item(
                    Item.new(f"/more/new{i}.jpg", 1, 1, f"n{i}", 1, 1),
                    code=codecs[new_id].encode(x[None])[0],
                    codec=new_id,
                )
        assert all((db.store.load_ivf(c)[3] >= 0).all() for c in (home_id, new_id))  # no fill needed
        _lists_are_their_codecs(db)
        assert ivf_upkeep.maintain(ctx) == {}  # nothing to build, rebuild or fill
        assert {c: db.store.ivf_meta(c) for c in (home_id, new_id)} == before

        gone = [it.path for it in db.store.iter_items() if it.path.startswith("/new/")][::3]
        db.rm(gone)  # each codec's rewritten segments keep their remaining codes' lists
        _lists_are_their_codecs(db)
        db.store.compact()
        _lists_are_their_codecs(db)
        assert db.store.verify() == []

        db.rm(db.store.load_code_groups()[new_id][0].tolist())  # the codec goes, and its IVF with it
        assert db.store.codec_ids() == [home_id]
        assert not any(k.startswith("ivf/") and v for k, v in db.store.meta().items())
        env, dbs = db.store.lmdb
        with env.begin(db=dbs["ivf"]) as txn:
            assert [k for k in txn.cursor().iternext(values=False) if len(k) != 8] == [b"centroids"]
        _lists_are_their_codecs(db)
        assert db.store.verify() == []
