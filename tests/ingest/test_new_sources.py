"""A store that learns every source it is given: photos unlike its codecs wait staged, then get a
codec of their own; the home photos keep their codec and their codes."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from kit import clip_like_embeddings

import semdb
from semdb.ingest import ivf_upkeep

ROOT = Path(__file__).resolve().parents[2]


def _sources(seed=5):
    """Home photos (600 to train on, 100 more) and photos of another source (600 + 100): the
    other half of the collection turned so that half its spread lies outside the home subspace."""
    from semdb.bench import source_shift  # here, not at the top: the bench package loads matplotlib

    X = clip_like_embeddings(n=1400, dim=64, seed=seed)["image_emb"]
    home, other = X[:700], X[700:]
    turned = source_shift(home[:600], other, 0.5, seed=1).apply(other).astype(np.float32)
    return home, turned


def _feed(db, home, turned, model=None):
    db.add_embeddings([f"/home/{i}.jpg" for i in range(600)], home[:600], **({"model": model} if model else {}))
    db.add_embeddings([f"/home/{i}.jpg" for i in range(600, 700)], home[600:])
    db.add_embeddings([f"/new/{i}.jpg" for i in range(600)], turned[:600])
    db.add_embeddings([f"/new/{i}.jpg" for i in range(600, 700)], turned[600:])


def _codec_of(db) -> dict[str, str]:
    """{path: the id of the codec its code was written by, None for a staged photo}."""
    out = {it.path: None for it in db.store.iter_items()}
    for codec_id, (ids, _) in db.store.load_code_groups().items():
        for it in db.store.items(ids.tolist()):
            out[it.path] = codec_id
    return out


def test_another_source_gets_a_codec_of_its_own_and_the_home_codes_do_not_change(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setattr(ivf_upkeep, "MIN_ITEMS", 500)  # each codec past 500 codes gets an IVF of its own
    home, turned = _sources()
    with semdb.open(tmp_path / "mixed") as db:
        _feed(db, home, turned, tiny_model)
        info = db.info()
        assert db.store.ivf_meta()["built_on"] == 600  # the home codec's, built before the other source came
        assert all((c["ivf"] is not None) == (c["items"] >= 500) for c in info["codecs"])
        of = _codec_of(db)
        first = db.codec.id
        mixed_codes = {it.path: bytes(c) for it, c in zip(db.store.iter_items(), _codes_in_order(db))}
        assert len(info["codecs"]) == 2 and info["waiting"] <= 5 and info["retrain_advice"] is None
        second = info["codecs"][1]["id"]
        assert sum(of[f"/home/{i}.jpg"] == first for i in range(700)) >= 0.97 * 700
        assert sum(of[f"/new/{i}.jpg"] == second for i in range(600, 700)) >= 90
        # searched as one: each new photo finds itself, through its codec's ADC table
        hits = db.search_vectors(turned[600:650], k=1)
        assert sum(h[0].path == f"/new/{600 + i}.jpg" for i, h in enumerate(hits)) >= 45
        assert db.store.verify() == []
    with semdb.open(tmp_path / "home") as db:  # the same home photos, no other source
        db.add_embeddings([f"/home/{i}.jpg" for i in range(600)], home[:600], model=tiny_model)
        db.add_embeddings([f"/home/{i}.jpg" for i in range(600, 700)], home[600:])
        home_codes = {it.path: bytes(c) for it, c in zip(db.store.iter_items(), _codes_in_order(db))}
        assert db.codec.id == first
    same = [p for p, c in home_codes.items() if of[p] == first]
    assert same and all(mixed_codes[p] == home_codes[p] for p in same)


def _codes_in_order(db):
    codes = db.store.codes_by_id()
    return [codes.get(it.id, b"") for it in db.store.iter_items()]


def test_fewer_unfamiliar_photos_than_a_codec_needs_wait_and_are_found_exactly(tmp_path, tiny_model):
    home, turned = _sources(seed=6)
    with semdb.open(tmp_path / "s") as db:
        db.add_embeddings([f"/home/{i}.jpg" for i in range(600)], home[:600], model=tiny_model)
        db.add_embeddings([f"/new/{i}.jpg" for i in range(120)], turned[:120])
        info = db.info()
        assert len(info["codecs"]) == 1 and info["waiting"] >= 110
        hits = db.search_vectors(turned[:20], k=1)
        assert all(h[0].path == f"/new/{i}.jpg" for i, h in enumerate(hits) if _codec_of(db)[f"/new/{i}.jpg"] is None)
        assert abs(hits[0][0].score - 1.0) < 1e-2  # staged: scored on the float16 embedding itself


def test_removing_every_photo_of_a_codec_drops_it_and_export_import_keeps_the_set(tmp_path, tiny_model):
    home, turned = _sources(seed=7)
    with semdb.open(tmp_path / "s") as db:
        _feed(db, home, turned, tiny_model)
        db.add_embeddings([f"/late/{i}.jpg" for i in range(30)], (turned[:30] + home[:30]) / 2)  # some may wait
        before = {p: c for p, c in _codec_of(db).items()}
        db.export(tmp_path / "all.parquet")
        hits = [h.path for h in db.search_vectors(turned[650:651], k=5)[0]]
    with semdb.open(tmp_path / "copy") as db:
        db.import_parquet([tmp_path / "all.parquet"])
        assert _codec_of(db) == before and db.store.verify() == []
        assert [h.path for h in db.search_vectors(turned[650:651], k=5)[0]] == hits
    with semdb.open(tmp_path / "s") as db:
        second = db.info()["codecs"][1]["id"]
        db.rm([p for p, c in before.items() if c == second])
        assert [c["id"] for c in db.info()["codecs"]] == [db.codec.id] and db.store.verify() == []


SEQUENCE = textwrap.dedent(
    """
    import sys, numpy as np
    sys.path[:0] = [sys.argv[2], str(__import__('pathlib').Path(sys.argv[2]).parent)]
    from test_new_sources import _feed
    import semdb
    sources = np.load(sys.argv[4])
    with semdb.open(sys.argv[1]) as db:
        _feed(db, sources["home"], sources["turned"], sys.argv[3])
    """
)


@pytest.mark.parametrize("fault", ["train:2", "trained:2", "finish_staging_txn:2", "batch_txn:3"])
def test_kill_9_while_the_second_codec_is_trained_loses_nothing(tmp_path, tiny_model, fault):
    """SIGKILL while the other source's photos are staged or their codec is being added; the
    store verifies, every photo is stored once, and feeding the same photos again finishes."""
    store = tmp_path / "s"
    env = {**os.environ, "SEMDB_FAULT_POINT": fault, "PYTHONPATH": str(ROOT)}
    home, turned = _sources()
    np.savez(tmp_path / "sources.npz", home=home, turned=turned)
    run = [sys.executable, "-c", SEQUENCE, str(store), str(Path(__file__).parent), tiny_model, tmp_path / "sources.npz"]
    killed = subprocess.run(run, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    with semdb.open(store) as db:
        assert db.store.verify() == []
        paths = [it.path for it in db.store.iter_items()]
        assert len(paths) == len(set(paths))
        assert db.store.count() == db.store.info()["coded"] + db.store.staging_count()
    env.pop("SEMDB_FAULT_POINT")
    again = subprocess.run(run, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-2000:]
    with semdb.open(store) as db:
        info = db.info()
        assert db.store.verify() == [] and info["items"] == 1400 and len(info["codecs"]) == 2
        assert json.loads(json.dumps(info))["waiting"] <= 5
