"""Sharded search (semdb.cluster) on a real local multi-node Ray cluster (head + 2 workers, one
CPU each): 3 stores that share one codec, searched as one, give the hits of one store holding
every item; so do shards that hold codec sets, beside one of another codec; a shard of another
model is refused; a shard that is down gives an error or, asked for, partial results flagged
as such."""

import json
import socket
import subprocess
import sys
import urllib.parse
import urllib.request

import numpy as np
import pytest

pytest.importorskip("ray.serve", reason="sharded search needs Ray Serve (the [ray] extra)")

import semdb  # noqa: E402
from semdb.cluster import Cluster  # noqa: E402
from semdb.errors import InputError, ShardError  # noqa: E402
from semdb.search import Hit  # noqa: E402

N, SHARDS = 600, 3
FOLDERS = ("/photos/beach", "/photos/city", "/photos/forest")
DAY = 86400.0
T0 = 1_577_836_800.0  # 2020-01-01 UTC


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def stores(tmp_path_factory, tiny_model):
    """One store of N items ("full") and SHARDS stores holding disjoint, interleaved subsets of
    the same items under the same codec: one export of the full store, imported row subsets
    (an import into a new store takes the codec the file carries). Items have folders and
    dates, for the filters. Also a store with another codec ("odd") and one of another model
    ("alien": its photos staged, no codec)."""
    import pyarrow as pa

    root = tmp_path_factory.mktemp("cluster")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, 64)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    paths = [f"{FOLDERS[i % 3]}/img_{i:04d}.jpg" for i in range(N)]
    with semdb.open(root / "seed", model=tiny_model) as db:
        db.add_embeddings(paths, X, model=tiny_model, bits=64)
        db.embedder  # noqa: B018 (reading it binds the weights digest, which the export carries)
        table = db.to_arrow()
    taken = pa.array([(T0 + i * DAY) * 1e6 for i in range(N)], pa.timestamp("us", tz="UTC"))
    table = table.set_column(table.schema.get_field_index("taken"), table.schema.field("taken"), taken)
    table = table.replace_schema_metadata(db_meta := table.schema.metadata)
    full = root / "full"
    with semdb.open(full) as db:
        db.import_arrow(table)
    shards = []
    for j in range(SHARDS):
        rows = [i for i in range(N) if (i * 7) % SHARDS == j]
        with semdb.open(root / f"shard{j}") as db:
            db.import_arrow(table.take(rows).replace_schema_metadata(db_meta))
        shards.append(root / f"shard{j}")
    with semdb.open(root / "odd", model=tiny_model) as db:
        db.add_embeddings(paths[:550], X[::-1][:550].copy(), model=tiny_model, bits=64)
    with semdb.open(root / "alien") as db:
        db.add_embeddings(paths[:40], rng.normal(size=(40, 512)).astype(np.float32), model="ViT-B-32")
    return {"full": full, "shards": shards, "odd": root / "odd", "alien": root / "alien", "X": X}


@pytest.fixture(scope="module")
def set_stores(tmp_path_factory, tiny_model):
    """A store fed photos of two sources ("mixed": its first codec learns the home photos, a
    second one the turned photos of another source, a few photos between the two wait staged)
    and two shards of its items (an export's rows split in two: each shard holds both codecs)."""
    from kit import clip_like_embeddings

    from semdb.bench import source_shift  # here, not at the top: the bench package loads matplotlib

    root = tmp_path_factory.mktemp("sets")
    X = clip_like_embeddings(n=1200, dim=64, seed=5)["image_emb"]
    home, other = X[:600], X[600:]
    turned = source_shift(home, other, 0.5, seed=1).apply(other).astype(np.float32)
    between = (turned[:30] + home[:30]) / 2
    with semdb.open(root / "mixed") as db:
        db.add_embeddings([f"/home/{i}.jpg" for i in range(600)], home, model=tiny_model)
        db.add_embeddings([f"/new/{i}.jpg" for i in range(600)], turned)
        db.add_embeddings([f"/between/{i}.jpg" for i in range(30)], between)
        assert len(db.store.codec_ids()) == 2 and db.store.staging_count() >= 10
        table = db.to_arrow()
    shards = [root / "set0", root / "set1"]
    for j, shard in enumerate(shards):
        with semdb.open(shard) as db:
            db.import_arrow(
                table.take(list(range(j, table.num_rows, 2))).replace_schema_metadata(table.schema.metadata)
            )
    return {"mixed": root / "mixed", "shards": shards, "home": home, "turned": turned, "between": between}


@pytest.fixture(scope="module")
def ray_cluster():
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster as RayCluster

    nodes = RayCluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for _ in range(2):
        nodes.add_node(num_cpus=1)
    ray.init(address=nodes.address, include_dashboard=False, log_to_driver=False)
    yield nodes
    serve.shutdown()
    ray.shutdown()
    nodes.shutdown()


@pytest.fixture(scope="module")
def cluster(ray_cluster, stores):
    port = _free_port()
    c = Cluster.start(stores["shards"], name="t", http_port=port, timeout=10)
    c.port = port
    yield c
    c.close()


def one_store(stores):
    from semdb.context import StoreContext
    from semdb.search.searcher import Searcher
    from semdb.store import Store

    return Searcher(StoreContext(Store(stores["full"], readonly=True)))


def same(sharded: tuple, single: list) -> None:
    assert [h.path for h in sharded] == [h.path for h in single]
    np.testing.assert_allclose([h.score for h in sharded], [h.score for h in single], rtol=0, atol=1e-5)


FILTERS = [
    {},
    {"under": "/photos/city"},
    {"after": "2020-03-01", "before": "2020-09-01"},
    {"under": "/photos/beach", "after": "2020-06-01"},
]


@pytest.mark.parametrize("k", [5, 40])
def test_text_queries_give_the_hits_of_one_store(cluster, stores, k):
    with semdb.open(stores["full"], readonly=True) as db:
        for text in ("a photo of a cat", "2:red car - blue sky"):
            for where in FILTERS:
                got = cluster.search(text, k=k, **where)
                assert not got.partial and len(got.hits) == k
                same(got.hits, db.search(text, k=k, files=False, **where))
                assert {h.shard for h in got.hits} <= set(range(SHARDS))
                for h in got.hits:  # a hit names its shard and its id there
                    assert isinstance(h, Hit) and h.store == str(stores["shards"][h.shard])
        same(
            cluster.search("a photo of a cat", k=k, min_score=0.1).hits,
            db.search("a photo of a cat", k=k, min_score=0.1),
        )
        same(cluster.search("a photo of a cat", k=k, within=0.05).hits, db.search("a photo of a cat", k=k, within=0.05))


def test_vector_queries_give_the_hits_of_one_store(cluster, stores):
    from semdb.search.request import SearchRequest

    single = one_store(stores)
    Q = np.random.default_rng(1).normal(size=(4, 64)).astype(np.float32)
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    Q[3] = stores["X"][17]  # a stored item's own embedding: it comes first
    for q in Q:
        for where in FILTERS:
            (expected,) = single.search(SearchRequest.of(vector=q, k=10, **where))
            same(cluster.search(vector=q, k=10, **where).hits, expected)
    assert cluster.search(vector=Q[3], k=1).hits[0].path.endswith("img_0017.jpg")
    with pytest.raises(InputError, match="values"):
        cluster.search(vector=Q[0][:10], k=3)
    with pytest.raises(InputError, match="at least one"):
        cluster.search("cat", k=0)
    with pytest.raises(InputError, match="empty query") as err:  # raised by the encoder, inside Ray
        cluster.search("   ")
    assert "\n" not in str(err.value)


def test_one_search_request_is_carried_to_the_router_and_the_shards(cluster, stores):
    """One SearchRequest record: the cluster (driver -> router -> shards), its HTTP ingress (the
    record as a query string) and one store answer it alike; a bad k is refused in the same words."""
    from semdb.search.request import MAX_K, SearchRequest
    from semdb.serve.params import query_params

    request = SearchRequest.of(
        "2:red car - blue sky", files=False, k=7, under="/photos/city", after="2020-03-01", within=0.5, nprobe=4
    )
    with semdb.open(stores["full"], readonly=True) as db:
        want = db.search(request)
        same(cluster.search(request).hits, want)
        url = f"http://127.0.0.1:{cluster.port}/api/search?" + urllib.parse.urlencode(query_params(request))
        assert [h["path"] for h in json.loads(urllib.request.urlopen(url, timeout=60).read())["hits"]] == [
            h.path for h in want
        ]
        with pytest.raises(InputError) as local:
            db.search("cat", k=MAX_K + 1)
    with pytest.raises(InputError) as sharded:
        cluster.search("cat", k=MAX_K + 1)
    assert str(sharded.value) == str(local.value) == f"k={MAX_K + 1}: at most {MAX_K} results per query"
    with pytest.raises(InputError, match="no image, no like"):
        cluster.search(like=3)


def test_shards_are_placed_across_nodes(cluster):
    assert len({s.node for s in cluster.specs}) >= 2
    assert sum(s.items for s in cluster.specs) == N


def test_http_ingress_answers_like_the_api(cluster, stores):
    url = f"http://127.0.0.1:{cluster.port}/api/search?q=a+photo+of+a+cat&k=7&under=/photos/forest"
    body = json.loads(urllib.request.urlopen(url, timeout=60).read())
    want = cluster.search("a photo of a cat", k=7, under="/photos/forest").hits
    assert [h["path"] for h in body["hits"]] == [h.path for h in want] and body["partial"] is False
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{cluster.port}/api/search?q=cat&k=0", timeout=60)
    assert err.value.code == 400
    with pytest.raises(urllib.error.HTTPError) as err:  # refused by the encoder, inside Ray
        urllib.request.urlopen(f"http://127.0.0.1:{cluster.port}/api/search?q=cat+%2B", timeout=60)
    message = json.loads(err.value.read())["error"]
    assert err.value.code == 400 and "no term beside it" in message and "\n" not in message
    with pytest.raises(urllib.error.HTTPError) as err:  # like= is not a sharded search's: refused, not ignored
        urllib.request.urlopen(f"http://127.0.0.1:{cluster.port}/api/search?q=cat&like=3", timeout=60)
    assert err.value.code == 400 and "unknown parameter 'like'" in json.loads(err.value.read())["error"]


def test_a_shard_that_goes_down_gives_an_error_or_flagged_partial_hits(cluster, stores):
    """On the module's cluster, which it takes down: the last test here that uses `cluster`."""
    import ray
    from ray import serve

    cluster.timeout = 5  # seconds before a shard counts as down
    with semdb.open(stores["full"], readonly=True) as db:
        everything = db.search("a photo of a cat", k=N, files=False)
    assert [h.path for h in cluster.search("a photo of a cat", k=10).hits] == [h.path for h in everything[:10]]

    serve.delete("t-shard1")  # shard 1 is gone
    with pytest.raises(ShardError) as err:
        cluster.search("a photo of a cat", k=10)
    assert "\n" not in str(err.value) and "shard 1" in str(err.value) and "allow_partial" in str(err.value)
    got = cluster.search("a photo of a cat", k=10, allow_partial=True)
    assert got.partial and [m.shard for m in got.missing] == [1]
    assert got.missing[0].store == str(stores["shards"][1])
    same(got.hits, [h for h in everything if not _in_shard(h.path, 1)][:10])

    # a killed replica: Serve restarts it; meanwhile the shard is missing (never wrong)
    (replica,) = [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith("SERVE_REPLICA::t-shard2#")
    ]
    ray.kill(ray.get_actor(replica, namespace="serve"), no_restart=True)
    got = cluster.search("a photo of a cat", k=10, allow_partial=True)
    missing = {m.shard for m in got.missing}
    assert 1 in missing and missing <= {1, 2}
    expected = [h for h in everything if not any(_in_shard(h.path, j) for j in missing)][:10]
    same(got.hits, expected)


def test_a_shard_of_another_model_is_refused_in_one_line(ray_cluster, stores):
    with pytest.raises(ShardError) as err:
        Cluster.start([stores["shards"][0], stores["alien"]], name="alien")
    message = str(err.value)
    assert "\n" not in message and "shard 1" in message and "alien" in message and "one model" in message
    from ray import serve

    assert not any(name.startswith("alien-") for name in serve.status().applications)  # nothing left deployed
    with pytest.raises(ShardError, match="no semdb store"):
        Cluster.start([stores["shards"][0], stores["full"].parent / "nowhere"], name="gone")


def _in_shard(path: str, j: int) -> bool:
    i = int(path.rsplit("_", 1)[1].split(".")[0])
    return (i * 7) % SHARDS == j


def test_import_semdb_does_not_import_ray():
    code = "import sys, semdb, semdb.cluster; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_query_shards_on_a_running_cluster(ray_cluster, stores):
    """`semdb query --shards A,B,C TEXT --ray-address HEAD`: a thin layer over Cluster.start +
    search (its own Serve applications, removed when it exits; the cluster stays up)."""
    from kit import semdb_app, semdb_cli
    from ray import serve

    shards = ",".join(str(s) for s in stores["shards"])
    proc = semdb_cli(
        "query",
        "a photo of a cat",
        "--shards",
        shards,
        "--ray-address",
        ray_cluster.address,
        "-k",
        "4",
        "--under",
        "/photos/city",
        "--json",
        timeout=600,
    )
    hits = json.loads(proc.stdout)
    with semdb.open(stores["full"], readonly=True) as db:
        want = db.search("a photo of a cat", k=4, under="/photos/city", files=False)
    assert [h["path"] for h in hits] == [h.path for h in want]
    assert all(list(h) == ["path", "score", "id", "shard", "store"] for h in hits)  # Hit.to_json's form
    assert not any(name.startswith("semdb-") for name in serve.status().applications)
    # refused: exit 4 and the odd shard named (in this process: the exit code of a real one is above)
    alien = f"{stores['shards'][0]},{stores['alien']}"
    proc = semdb_app("query", "cat", "--shards", alien, "--ray-address", ray_cluster.address, check=4)
    assert "shard 1" in proc.stderr and "one model" in proc.stderr
    assert not any(name.startswith("semdb-") for name in serve.status().applications)


def test_the_start_up_check_names_the_odd_shard_in_one_line():
    from semdb.cluster import ShardSpec, check_specs

    model = {"name": "m", "digest": "d" * 64, "dim": 64}
    good = [ShardSpec(i, f"/s{i}", ("c1",), model, "ivf1", 10) for i in range(3)]
    check_specs(good)
    cases = [
        (replace_at(good, 1, model={**model, "digest": "e" * 64}), "shard 1 (/s1) was built with model m"),
        (replace_at(good, 1, model={**model, "dim": 32}), "shard 1 (/s1) was built with model"),
        (replace_at(good, 2, ivf_id=None), "shard 2 (/s2) has IVF centroids None"),
        (replace_at(good, 0, model=None), "shard 0 (/s0) holds no photos yet"),
        (replace_at(good, 1, error="corrupt"), "shard 1 (/s1): corrupt"),
    ]
    for specs, message in cases:
        with pytest.raises(ShardError) as err:
            check_specs(specs)
        assert str(err.value).startswith(message) and "\n" not in str(err.value)
    check_specs(replace_at(good, 1, model={**model, "digest": None}))  # not bound yet: the name decides
    # each shard's codecs are its own (exact and scan scores rank together across codecs); so
    # is a shard whose photos all wait staged, searched exactly
    plain = [ShardSpec(i, f"/s{i}", ("c1",), model, None, 10) for i in range(3)]
    check_specs(replace_at(replace_at(plain, 1, codecs=("c2", "c3")), 2, codecs=()))
    with pytest.raises(ShardError, match="shard 1"):
        check_specs(replace_at(good, 1, model={**model, "digest": None, "name": "other"}))


def replace_at(specs, i, **changes):
    from dataclasses import replace

    return [replace(s, **changes) if j == i else s for j, s in enumerate(specs)]


def test_merge_cuts_the_shortlists_union_then_ranks_exactly_with_ties_by_shard_then_id():
    from semdb.cluster import ShardAnswer, merge

    def answer(shard, rows, complete=False, dropped=()):  # rows: (path, approx, exact, id); dropped: (approx, id)
        return ShardAnswer(
            shard,
            tuple(Hit(p, e, i, shard=shard, store="AB"[shard]) for p, _, e, i in rows),
            tuple(a for _, a, _, _ in rows),
            complete,
            tuple(sorted([(a, i) for _, a, _, i in rows] + list(dropped), key=lambda c: (-c[0], c[1]))),
        )

    a = answer(0, [("/a1", 0.8, 0.9, 5), ("/a2", 0.4, 0.5, 2), ("/c1", 0.8, 0.9, 4)])  # same shard: ties by id
    b = answer(1, [("/b1", 0.8, 0.9, 1), ("/b2", 0.7, 0.7, 3)])
    assert [h.path for h in merge([b, a], 4)] == ["/c1", "/a1", "/b1", "/b2"]
    assert [h.path for h in merge([a, b], 10, within=0.25)] == ["/c1", "/a1", "/b1", "/b2"]
    assert [h.path for h in merge([a, b], 10, min_score=0.8)] == ["/c1", "/a1", "/b1"]
    assert merge([answer(0, [], True), answer(1, [], True)], 3) == ()
    # Past the shortlist (shortlist_size(1) = 65), the union is cut by scan score first: an item
    # with the best exact score but a scan score below 65 others is not a hit, as in one store.
    many = answer(0, [(f"/x{i}", 0.5 + i / 1000, 0.5, 100 + i) for i in range(70)])
    late = answer(1, [("/late", 0.1, 0.99, 1)])
    assert merge([many, late], 1)[0].path != "/late"
    # Candidates a shard did not send as hits (may_be_hits ruled them out) still hold their
    # places in the cut: "/late" stays outside it.
    filled = answer(0, [("/x0", 0.9, 0.9, 1)], dropped=[(0.8, 100 + i) for i in range(70)])
    assert [h.path for h in merge([filled, late], 2)] == ["/x0"]
    from semdb.cluster import may_be_hits  # k others before it in both orders: never a hit

    mask = may_be_hits(np.array([0.9, 0.8, 0.7, 0.7]), np.array([0.5, 0.9, 0.4, 0.95]), np.array([1, 2, 3, 4]), 1)
    assert mask.tolist() == [True, True, False, True]  # 4: after 1, 2, 3 in the cut, before them by score
    assert may_be_hits(np.array([0.9, 0.8, 0.7]), np.array([0.5, 0.9, 0.4]), np.array([1, 2, 3]), 2).tolist() == [
        True,
        True,
        False,
    ]
    assert (
        merge(
            [
                answer(0, many.hits and [(f"/x{i}", 0.5, 0.5, i) for i in range(3)], True),
                answer(1, [("/late", 0.1, 0.99, 1)], True),
            ],
            1,
        )[0].path
        == "/late"
    )  # complete: no cut


def test_candidates_merged_give_one_stores_hits_past_the_shortlist(tmp_path, tiny_model):
    """Without Ray: 3 shards of 1,500 items against one store of 4,500 (the shortlist, 74 for
    k = 10, is a small part of each), 300 random query vectors: the merge of the shards'
    Searcher.candidates, less those may_be_hits rules out, gives exactly one store's hits."""
    from semdb.cluster import merge
    from semdb.search.request import SearchRequest

    n, rng = 4500, np.random.default_rng(1)
    X = rng.normal(size=(n, 64)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    with semdb.open(tmp_path / "full", model=tiny_model) as db:
        db.add_embeddings([f"/p/{i:05d}.jpg" for i in range(n)], X, model=tiny_model, bits=256)
        table = db.to_arrow()
    for j in range(3):
        with semdb.open(tmp_path / f"s{j}") as db:
            db.import_arrow(table.take(list(range(j, n, 3))).replace_schema_metadata(table.schema.metadata))
    single, shards = searcher_of(tmp_path / "full"), [searcher_of(tmp_path / f"s{j}") for j in range(3)]
    Q = rng.normal(size=(300, 64)).astype(np.float32)
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    want = single.search(SearchRequest(vector=Q, k=10))
    sent = 0
    for i, q in enumerate(Q):
        answers = answers_of(shards, q, 10)
        sent += sum(len(a.hits) for a in answers)
        assert [h.path for h in merge(answers, 10)] == [h.path for h in want[i]], f"query {i}"
    assert sent < 0.5 * 3 * 74 * len(Q)  # most candidates cannot be hits and stay on their shard


def searcher_of(path):
    from semdb.context import StoreContext
    from semdb.search.searcher import Searcher
    from semdb.store import Store

    return Searcher(StoreContext(Store(path, readonly=True)))


def answers_of(searchers, q, k, **where):
    """What each shard's replica would answer to the query vector `q` (searched here, without Ray)."""
    from semdb.cluster import ShardQuery, shard_answer
    from semdb.search.request import SearchRequest

    query = ShardQuery(SearchRequest.of(vector=q, k=k, **where), np.asarray(q, np.float32).reshape(1, -1))
    return [shard_answer(j, str(s.ctx.path), s, query) for j, s in enumerate(searchers)]


def one_index_of(searchers):
    """What one store holding every shard's codes and staged photos searches: one SetIndex over
    the shards' parts (each codec's codes, the staged rows); and each row's (shard, path)."""
    from semdb.search.index import SetIndex

    parts, rows = [], []
    for j, s in enumerate(searchers):
        ids, index = s.index()
        parts += index.parts if isinstance(index, SetIndex) else [index]
        rows += [(j, it.path) for it in s.ctx.store.items(ids)]
    return SetIndex(parts), rows


def test_shards_of_codec_sets_and_of_another_codec_merge_into_one_stores_hits(set_stores, stores):
    """Without Ray: the two shards of a two-codec store (each with both codecs and staged
    photos) merge into that store's hits; beside them a shard of another codec, trained on
    other photos, merges into the hits of one index over all three shards' codes."""
    from semdb.cluster import merge
    from semdb.search.request import SearchRequest

    rng = np.random.default_rng(3)
    home, turned, between = set_stores["home"], set_stores["turned"], set_stores["between"]
    Q = np.concatenate([home[::6], turned[::6], between, stores["X"][::12], rng.normal(size=(40, 64))])
    Q = (Q + 0.025 * rng.normal(size=Q.shape)).astype(np.float32)  # near stored photos, not on them
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    mixed, sets = searcher_of(set_stores["mixed"]), [searcher_of(p) for p in set_stores["shards"]]
    assert all(len(s.ctx.store.codec_ids()) == 2 and s.ctx.store.staging_count() for s in sets)
    for k in (1, 10):
        want = mixed.search(SearchRequest(vector=Q, k=k))
        for i, q in enumerate(Q):
            assert [h.path for h in merge(answers_of(sets, q, k), k)] == [h.path for h in want[i]], f"k {k}, query {i}"
    three = [*sets, searcher_of(stores["odd"])]
    whole, rows = one_index_of(three)
    found, _ = whole.search(Q, 10)
    for i, q in enumerate(Q):
        assert [(h.shard, h.path) for h in merge(answers_of(three, q, 10), 10)] == [rows[r] for r in found[i]]


def test_shards_sharing_ivf_centroids_give_the_hits_of_one_store(ray_cluster, stores, tmp_path):
    """An IVF (built here on small copies: nlist 8) shared with share_ivf: the same nprobe lists
    in every shard. Shards with centroids of their own are refused."""
    import shutil

    from semdb.cluster import share_ivf
    from semdb.context import StoreContext
    from semdb.ingest import ivf_upkeep
    from semdb.search.ivf import IvfIndex
    from semdb.search.searcher import Searcher
    from semdb.store import Store

    full = tmp_path / "full"
    shutil.copytree(stores["full"], full)
    shards = [shutil.copytree(s, tmp_path / s.name) for s in stores["shards"]]
    with Store(full) as store:
        ivf_upkeep.build(StoreContext(store), nlist=8)
    info = share_ivf(full, shards)
    with Store(shards[1], readonly=True) as store:
        assert store.ivf_meta()["id"] == info["id"]
        assert isinstance(Searcher(StoreContext(store)).index()[1], IvfIndex)  # searched through the IVF
    with Cluster.start(shards, name="ivf") as c, semdb.open(full, readonly=True) as db:
        for nprobe in (2, 8):
            for where in ({}, {"under": "/photos/beach"}):
                same(
                    c.search("a photo of a cat", k=5, nprobe=nprobe, **where).hits,
                    db.search("a photo of a cat", k=5, nprobe=nprobe, files=False, **where),
                )
    with Store(shards[2]) as store:  # centroids of its own
        ivf_upkeep.build(StoreContext(store), nlist=8, seed=1)
    with pytest.raises(ShardError, match="shard 2 .* has IVF centroids"):
        Cluster.start(shards, name="ivf2")


def test_a_cluster_of_codec_sets_beside_another_codec_gives_one_stores_hits(ray_cluster, stores, set_stores):
    """On Ray: the two shards of a two-codec store and a shard of another codec (other photos,
    other bits) start as one cluster; text and vector queries get the hits of one index over all
    their codes; filtered ones the best of every shard's own (exact) filtered search."""
    from semdb.search.request import SearchRequest

    searchers = [searcher_of(p) for p in set_stores["shards"]] + [searcher_of(stores["odd"])]
    whole, rows = one_index_of(searchers)
    rng = np.random.default_rng(4)
    parts = (set_stores["turned"][:3], set_stores["home"][:3], set_stores["between"][:2], stores["X"][:2])
    Q = np.concatenate([*parts, rng.normal(size=(3, 64))]).astype(np.float32)
    Q = Q + 0.025 * rng.normal(size=Q.shape).astype(np.float32)
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    text = searchers[0].encode(SearchRequest(text="2:red car - blue sky"))[0]  # the encoder's model: shard 0's
    with Cluster.start([*set_stores["shards"], stores["odd"]], name="sets") as c:
        assert [len(s.codecs) for s in c.specs] == [2, 2, 1] and c.specs[2].codecs[0] not in c.specs[0].codecs
        for q, got in [(q, c.search(vector=q, k=10)) for q in Q] + [(text, c.search("2:red car - blue sky", k=10))]:
            found, scores = whole.search(q[None], 10)
            assert [(h.shard, h.path) for h in got.hits] == [rows[r] for r in found[0]]
            np.testing.assert_allclose([h.score for h in got.hits], scores[0], rtol=0, atol=1e-5)
        for where in ({"under": "/new"}, {"under": "/photos/beach"}):
            for q in Q[::3]:
                local = [
                    (-h.score, j, h.id, h.path)
                    for j, s in enumerate(searchers)
                    for h in s.search(SearchRequest.of(vector=q, k=5, **where))[0]
                ]
                assert [h.path for h in c.search(vector=q, k=5, **where).hits] == [p for *_, p in sorted(local)[:5]]
        # a stored photo's own embedding finds it first, through the codec that wrote it
        assert c.search(vector=stores["X"][N - 1 - 3], k=1).hits[0].path == "/photos/beach/img_0003.jpg"
