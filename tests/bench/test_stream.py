"""The stream protocol (semdb/bench/stream.py): a real store fed collection A, then B, scored
out of sample against real FAISS quantizers; on synthetic CLIP-like data, through the CLI, and
on the shared evaluation data (skipped when it is absent)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from kit import clip_like_embeddings, semdb_cli

from semdb.bench import STREAM_ROW_KEYS, make_stream, run_stream, save_embeddings, validate
from semdb.bench.stream import feed_plan
from semdb.errors import InputError

DATA = Path(os.environ.get("SEMDB_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
FLICKR = DATA / "embeddings" / "flickr8k_openai_vitb32_images.npz"


def _synthetic(n=680, seed=0):
    d = clip_like_embeddings(n=n, dim=64, seed=seed)
    return validate(d["image_emb"], d["text_emb"], name="synthetic")


def _row(rows, method, trained_on, scope, bits=64):
    (row,) = [
        r
        for r in rows
        if r["method"] == method and r["trained_on"] == trained_on and r["scope"] == scope and r["bits"] == bits
    ]
    return row


def test_the_stream_is_split_out_of_sample_and_fed_in_order():
    s = make_stream(_synthetic(), shift=0.5, seed=0, min_train=300)
    assert (s.a_train.n, s.a_eval.n, s.b_train.n, s.b_eval.n) == (300, 40, 300, 40)
    assert s.shift_share == pytest.approx(0.5, abs=0.02) and s.b_source == "shift 0.5"
    everything = np.concatenate([s.a_train.image_emb, s.a_eval.image_emb])
    assert len(np.unique(everything.round(6), axis=0)) == 340  # A's parts do not overlap
    assert [p for p, *_ in feed_plan(s)] == ["a_train", "a_eval", "b_train", "b_eval"]
    plan = feed_plan(s, interleave=25)
    assert plan[:4] == [("a_train", 0, 300), ("a_eval", 0, 25), ("b_train", 0, 25), ("a_eval", 25, 40)]
    assert [p for p, *_ in plan[4:]] == ["b_train"] * 11 + ["b_eval"] * 2
    assert sum(j - i for _, i, j in plan) == 680  # every item once
    assert [p for p, *_ in feed_plan(s, interleave=25, with_b=False)] == ["a_train", "a_eval", "a_eval"]


def test_stream_rows_through_the_store_and_faiss():
    rows = run_stream(_synthetic(), shift=0.5, seed=0, bits=[64], methods="pq,pqfs", min_train=300)
    assert all(set(r) == set(STREAM_ROW_KEYS) for r in rows)
    for scope in ("A", "B", "all"):
        floats = _row(rows, "float32", None, scope, bits=None)
        assert floats["knn_recall_1"] == floats["knn_recall_10"] == floats["t2i_recall_1"] == 1.0
        for method, trained_on in [("semdb store", "stream"), ("PQ8x8", "A"), ("PQ8x8", "A+B"), ("best FAISS", "A")]:
            r = _row(rows, method, trained_on, scope)
            assert r["status"] == "ok" and r["n_a_eval"] == r["n_b_eval"] == 40
            assert all(0.0 <= r[m] <= 1.0 for m in ("knn_recall_1", "knn_recall_10", "t2i_recall_1"))
    alone = [r for r in rows if r["method"] == "semdb store without B"]
    assert [r["scope"] for r in alone] == ["A alone"] and 0.2 < alone[0]["knn_recall_10"] <= 1.0
    # FAISS trained on A keeps A's codes when B arrives: scored among A alone too, not when trained on A+B
    assert _row(rows, "PQ8x8", "A", "A alone")["knn_recall_10"] > 0.2
    assert not [r for r in rows if r["trained_on"] == "A+B" and r["scope"] == "A alone"]
    store = _row(rows, "semdb store", "stream", "A")
    assert store["codecs"] >= 1 and 0 <= store["a_staged"] <= 40 and store["seconds"] > 0
    # a FAISS user who retrains on B finds B's neighbours better than one who does not
    on_a, on_ab = _row(rows, "best FAISS", "A", "B"), _row(rows, "best FAISS", "A+B", "B")
    assert on_ab["knn_recall_10"] >= on_a["knn_recall_10"]
    best = _row(rows, "best FAISS", "A+B", "all")
    fits = [_row(rows, m, "A+B", "all") for m in ("PQ8x8", "PQ16x4fs")]
    assert best["knn_recall_10"] == max(r["knn_recall_10"] for r in fits) and "kNN@10 PQ" in best["note"]


def test_stream_refuses_bad_options_before_any_work():
    data = _synthetic(n=200)
    for kwargs, message in [
        (dict(min_train=100), "need 106 items in each of A and B, which have 100 and 100"),
        (dict(methods="semdb"), "--methods 'semdb'"),
        (dict(interleave=-1), "--interleave -1"),
        (dict(then=validate(np.eye(8, 32, dtype=np.float32) + 0.1)), "--then: 32-d"),
    ]:
        with pytest.raises(InputError, match=message):
            run_stream(data, bits=[64], **kwargs)


def test_stream_from_the_command_line(tmp_path):
    d = _synthetic()
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    save_embeddings(a, image_emb=d.image_emb[:340], text_emb=d.text_emb[:340])
    save_embeddings(b, image_emb=d.image_emb[340:][:, ::-1].copy(), text_emb=d.text_emb[340:][:, ::-1].copy())
    args = ("bench", "--protocol", "stream", "--embeddings", a, "--then", b, "--bits", "64", "--min-train", "300")
    rows = json.loads(semdb_cli(*args, "--methods", "pqfs", "--interleave", "20", "--json").stdout)
    assert rows[0]["dataset"] == "a then b" and rows[0]["protocol"] == "stream interleaved 20"
    assert {r["method"] for r in rows} == {"float32", "semdb store", "semdb store without B", "PQ16x4fs", "best FAISS"}
    bad = semdb_cli(*args, "--plot", tmp_path / "x.png", check=False)
    assert bad.returncode != 0 and "--out and --plot are not for --protocol stream" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    elsewhere = semdb_cli("bench", "--embeddings", a, "--then", b, check=False)
    assert elsewhere.returncode != 0 and "go with --protocol stream" in elsewhere.stderr


@pytest.mark.skipif(not FLICKR.exists(), reason="the shared evaluation data is absent (it lives outside the repo)")
def test_stream_on_flickr8k():
    rows = run_stream(FLICKR, shift=0.5, seed=0, bits=[128], methods="pq", min_train=400)
    store = _row(rows, "semdb store", "stream", "B", bits=128)
    assert store["n_a_eval"] == store["n_b_eval"] == 100 and store["shift_share"] == pytest.approx(0.5, abs=0.02)
    assert store["t2i_recall_1"] is None  # Flickr8k's file has no text embeddings
    # turned photos: PQ trained on them too finds their neighbours better than PQ trained on A alone
    assert _row(rows, "PQ16x8", "A+B", "B", 128)["knn_recall_10"] > _row(rows, "PQ16x8", "A", "B", 128)["knn_recall_10"]
