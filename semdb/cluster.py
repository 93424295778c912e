"""Sharded search on Ray Serve: several stores of one CLIP model, searched as one. Each shard's
codecs are its own (the sources it was given): exact scores, and scan scores with each codec's
<q, mean> in them, rank together across codecs as they do inside one store's codec set.

    import semdb.cluster
    with semdb.cluster.Cluster.start(["/data/a.semdb", "/data/b.semdb"]) as cluster:
        result = cluster.search("a red bicycle", k=10, under="/photos/2024")
        for hit in result.hits:                    # Hit(path, score, id, frame_ms, shard, store)
            print(hit.score, hit.path, hit.shard)

Serve applications (one Ray actor each; docs/notes/SCALE.md#sharded-search):

    NAME-shard<i>  ShardReplica: one store opened read-only, its codes, index and metadata
                   held in RAM; answers a ShardQuery (the SearchRequest as the router got it,
                   and its query vector) with its candidates: the scan's shortlist, each with
                   its scan score, exact score, path and id (query.Searcher.candidates)
    NAME-encoder   EncoderReplica: the stores' CLIP text tower, loaded once (the same
                   StoreContext.text_encoder a one-store query uses: ONNX export or torch)
    NAME-router    Router, the ingress: takes a SearchRequest (semdb/search/request.py, built by
                   Cluster.search or from GET /api/search's query string by serve/params.py),
                   encodes its text once, fans the request and vector out to every
                   shard at once, cuts the union of their shortlists as one store's scan would
                   and ranks it by exact score (then shard index, then id): `merge`;
                   also answers HTTP GET /api/search when Serve's proxy listens

A shard that is down, unreachable or raises is named in `ShardedResult.missing`; `search`
then raises ShardError unless `allow_partial=True`, which returns the other shards' hits with
`partial` set. Nothing here imports Ray until a cluster is started (`import semdb` never does).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from .context import StoreContext
from .errors import InputError, SemdbError, ShardError, StoreError, display_path
from .ingest import ivf_upkeep
from .search.adc import shortlist_size
from .search.hit import Hit
from .search.index import SetIndex
from .search.ivf import IvfIndex
from .search.request import DEFAULT_K, SearchRequest
from .search.searcher import Searcher
from .serve.params import SEARCH_PARAMS, ApiError, search_request
from .store import Store

DEFAULT_TIMEOUT = 30.0  # seconds a shard may take to answer before it counts as down
# GET /api/search on the cluster: text queries only (no like=, no uploads)
CLUSTER_PARAMS = tuple(name for name in SEARCH_PARAMS if name != "like") + ("allow_partial",)


# --- the records passed between driver, router and shards ------------------------------------


@dataclass(frozen=True)
class ShardSpec:
    """What must agree across shards: model weights, IVF centroids; and what may differ: the
    codecs, the counts."""

    shard: int
    store: str
    codecs: tuple[str, ...] = ()  # the store's codec set, first codec first (none: every photo staged)
    model: dict | None = None  # the store's model_id: name, pretrained, digest, dim
    ivf_id: str | None = None  # digest of the coarse centroids of the IVF its search goes through, None without
    items: int = 0
    node: str = ""  # the Ray node the shard's replica runs on
    error: str | None = None  # why the shard could not be opened


@dataclass(frozen=True)
class ShardQuery:
    """One fan-out request: the SearchRequest as the router got it (its k, where and nprobe
    limit the candidates) and its query vector, encoded once by the router."""

    request: SearchRequest
    vector: np.ndarray  # (1, D) float32


@dataclass(frozen=True)
class ShardAnswer:
    """A shard's candidates for one query (query.Searcher.candidates): those that can be hits
    (may_be_hits), scored exactly, each with its scan score in `approx`; `cut`: the (scan
    score, id) of the shard's best shortlist_size(k) candidates in merge's cut order, every
    one of them, so the router finds where one store's shortlist would end; `complete`: the
    shard cut no shortlist by scan score (search.Candidates.complete)."""

    shard: int
    hits: tuple[Hit, ...]
    approx: tuple[float, ...]
    complete: bool
    cut: tuple[tuple[float, int], ...] = ()


@dataclass(frozen=True)
class ShardFailure:
    shard: int
    store: str
    reason: str  # one line


@dataclass(frozen=True)
class ShardedResult:
    hits: tuple[Hit, ...]
    missing: tuple[ShardFailure, ...] = ()  # shards that did not answer: hits are then partial

    @property
    def partial(self) -> bool:
        return bool(self.missing)


# --- checks -----------------------------------------------------------------------------------


def check_specs(specs: Sequence[ShardSpec]) -> None:
    """One-line ShardError naming the first shard that cannot be searched with shard 0: not
    open, no photos yet, other model weights or dimension, other IVF centroids. Codecs may
    differ: a shard's exact scores and scan scores estimate the same <q, x> whatever its codecs,
    as the parts of one store's codec set do. A shard searched through an IVF needs every shard
    searched through the same centroids (of one codec: semdb.ingest.ivf_upkeep.adopt), so that a
    query probes the same lists in each, as it would in one store."""
    first = specs[0]
    for s in specs:
        name = f"shard {s.shard} ({display_path(s.store)})"
        if s.error:
            raise ShardError(f"{name}: {s.error}")
        if not s.model:
            raise ShardError(f"{name} holds no photos yet (it names no model): nothing to search")
    for s in specs[1:]:
        name = f"shard {s.shard} ({display_path(s.store)})"
        than = f"shard 0 ({display_path(first.store)})"
        a, b = s.model or {}, first.model or {}
        # the weights digest when both stores have bound one (stores built from imported
        # embeddings know their model by name until it is first loaded), else the name
        same_model = (
            a["digest"] == b["digest"]
            if a.get("digest") and b.get("digest")
            else (a.get("name"), a.get("pretrained")) == (b.get("name"), b.get("pretrained"))
        )
        if a.get("dim") != b.get("dim") or not same_model:
            raise ShardError(
                f"{name} was built with model {a.get('name')} (digest {str(a.get('digest'))[:16]}), "
                f"{than} with {b.get('name')} (digest {str(b.get('digest'))[:16]}): shards must share one model"
            )
        if s.ivf_id != first.ivf_id:
            raise ShardError(
                f"{name} has IVF centroids {s.ivf_id}, {than} {first.ivf_id}: shards must share "
                f"one set of coarse centroids (or none)"
            )


def merge(
    answers: Sequence[ShardAnswer], k: int, within: float | None = None, min_score: float | None = None
) -> tuple[Hit, ...]:
    """One store's top k from its shards' candidates. One store cuts its scan at the best
    shortlist_size(k) by scan score and ranks those by exact score; the union of the shards'
    shortlists holds that cut, so the same cut of the union (found from the answers' `cut`
    keys; the hits sent are the candidates inside it that may_be_hits keeps) gives the same
    hits, unless every shard's answer is complete: then nothing was cut. Shards of other codecs
    cut together as one store's codecs do (scan scores hold each codec's <q, mean>); staged
    photos take part in the cut by their exact score, where one store ranks them all. Ties by
    (shard, id), so the order does not depend on which shard answered first. Then min_score
    and `within` of the best, as Searcher applies them."""
    pool = [(a, h) for answer in answers for a, h in zip(answer.approx, answer.hits)]
    if not all(answer.complete for answer in answers):
        order = sorted((-a, answer.shard, i) for answer in answers for a, i in answer.cut)
        edge = order[shortlist_size(k) - 1] if len(order) >= shortlist_size(k) else None  # the cut's last key
        pool = [(a, h) for a, h in pool if edge is None or (-a, h.shard, h.id) <= edge]
    hits = sorted((h for _, h in pool), key=lambda h: (-h.score, h.shard, h.id))[:k]
    if min_score is not None:
        hits = [h for h in hits if h.score >= min_score]
    if within is not None and hits:
        hits = [h for h in hits if h.score >= hits[0].score - within]
    return tuple(hits)


def cut_order(approx: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Positions of one shard's candidates in merge's cut order: scan score desc, then id."""
    return np.lexsort((np.asarray(ids, np.uint64), -np.asarray(approx, np.float64)))


def may_be_hits(approx: np.ndarray, exact: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Which of one shard's candidates can be among the merged top k (bool mask). A candidate
    that k others of its shard precede both in merge's cut order (scan score desc, then id) and
    in its ranking (exact score desc, then id) cannot: whenever it survives the cut they do
    too, and they rank before it. Scores are correlated, so few are left (a shard that scored
    all of its thousands of filtered rows exactly sends a handful)."""
    order = cut_order(approx, ids)
    keep = np.zeros(len(order), bool)
    best: list = []  # min-heap of the k best (exact, -id) among the candidates before this one
    for p in order.tolist():
        key = (float(exact[p]), -int(ids[p]))
        keep[p] = len(best) < k or key > best[0]
        if len(best) < k:
            heapq.heappush(best, key)
        elif key > best[0]:
            heapq.heapreplace(best, key)
    return keep


def shard_answer(shard: int, store: str, searcher: Searcher, query: ShardQuery) -> ShardAnswer:
    """What shard `shard` (the store `store`, searched by `searcher`) answers to `query`."""
    k = query.request.k
    (found,) = searcher.candidates(query.request, query.vector)
    may = np.flatnonzero(may_be_hits(found.approx, found.exact, found.rows, k))
    items = searcher.ctx.store.items(found.rows[may])  # paths of those only: a read each
    kept = [(p, it) for p, it in zip(may.tolist(), items) if it is not None]  # None: deleted since
    first = cut_order(found.approx, found.rows)[: shortlist_size(k)]
    return ShardAnswer(
        shard,
        tuple(Hit(it.path, float(found.exact[p]), int(it.id), it.frame_ms, shard, store) for p, it in kept),
        tuple(float(found.approx[p]) for p, _ in kept),
        found.complete,
        tuple((float(found.approx[p]), int(found.rows[p])) for p in first.tolist()),
    )


def _unwrapped(exc: BaseException) -> BaseException:
    """A semdb error raised inside a Ray actor comes back wrapped, its message holding the remote
    traceback (the wrapper also subclasses the error's class): the error itself."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def _reason(exc: BaseException) -> str:
    """One line for a shard's failure: the shard's own semdb error when it raised one (Ray wraps
    it with its traceback), else the kind of failure."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "did not answer in time (its replica is down or restarting)"
    exc = _unwrapped(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else 'no message'}"


def share_ivf(source, shards: Sequence) -> dict:
    """Give every store in `shards` the IVF coarse centroids of `source` (a store of the same
    codec that keeps an IVF, e.g. the one the shards were exported from), each shard's codes
    assigned to them: Cluster.start requires shards to share their centroids. Returns the
    IVF's meta record. Runs here, on stores this process can write."""
    with Store(source, readonly=True) as store:
        got = store.load_ivf()
    if got is None:
        raise StoreError(f"{display_path(source)} keeps no IVF to share (semdb.ingest.ivf_upkeep.build makes one)")
    _, info, C, _ = got
    for shard in shards:
        with Store(shard) as store:
            ivf_upkeep.adopt(StoreContext(store), C, info)
    return info


# --- the replicas (plain classes: wrapped with serve.deployment in Cluster.start) -------------


class ShardReplica:
    """One store, read-only. The constructor never raises: a store that cannot be opened is
    reported by describe() (Serve would otherwise retry the constructor and fail the whole
    deployment with a traceback that names no shard)."""

    def __init__(self, shard: int, store: str, threads: int | None = None):
        self.spec = ShardSpec(shard, store)
        self.searcher = None
        try:
            self.searcher = _open_searcher(store, threads)
            ctx = self.searcher.ctx
            ivf_meta = ctx.store.ivf_meta()
            _, index = self.searcher.index()  # warm: the codes and the index are in RAM before the first query
            parts = index.parts if isinstance(index, SetIndex) else [index]
            through_ivf = bool(ivf_meta) and any(isinstance(p, IvfIndex) for p in parts)  # not an IVF it keeps unused
            self.spec = ShardSpec(
                shard,
                store,
                tuple(ctx.store.codec_ids()),
                ctx.store.model_id(),
                ivf_meta.get("id") if through_ivf else None,
                ctx.store.count(),
                _node(),
            )
        except SemdbError as e:
            self.spec = replace(self.spec, error=str(e), node=_node())

    def describe(self) -> ShardSpec:
        return self.spec

    def search(self, query: ShardQuery) -> ShardAnswer:
        if self.searcher is None:
            raise StoreError(self.spec.error)
        return shard_answer(self.spec.shard, self.spec.store, self.searcher, query)


class EncoderReplica:
    """The CLIP text tower of the shards' model, loaded once, through the store context of one
    shard (its model record says which weights; the node needs that store and the model)."""

    def __init__(self, store: str, threads: int | None = None):
        self.searcher = _open_searcher(store, threads)
        self.encode(SearchRequest(text="a photo", files=False))  # warm: the model is loaded before the first query

    def encode(self, request: SearchRequest) -> np.ndarray:
        """The request's text as one query vector (1, D)."""
        return self.searcher.encode(request)


class Router:
    """The ingress: one query in, one text encoding, every shard asked at once, one merge."""

    def __init__(self, shard_apps: Sequence[str], stores: Sequence[str], encoder_app: str | None):
        from ray import serve  # noqa: PLC0415 (Ray: imported only inside a started cluster)

        self.shards = [serve.get_deployment_handle("shard", app_name=a) for a in shard_apps]
        self.stores = list(stores)
        self.encoder = serve.get_deployment_handle("encoder", app_name=encoder_app) if encoder_app else None

    async def search(self, request: SearchRequest, timeout: float = DEFAULT_TIMEOUT) -> ShardedResult:
        """Every shard's candidates for the request, merged; `timeout`: seconds a shard may take."""
        vector = request.vector
        if vector is None:
            if self.encoder is None:
                raise InputError("this cluster was started with text=False: search it with a vector")
            vector = await self.encoder.encode.remote(request)
        query = ShardQuery(request, np.asarray(vector, np.float32).reshape(1, -1))

        async def ask(handle):
            return await asyncio.wait_for(handle.search.remote(query), timeout)

        got = await asyncio.gather(*(ask(h) for h in self.shards), return_exceptions=True)
        missing = tuple(
            ShardFailure(i, self.stores[i], _reason(g)) for i, g in enumerate(got) if isinstance(g, BaseException)
        )
        answers = [g for g in got if not isinstance(g, BaseException)]
        return ShardedResult(merge(answers, request.k, request.within, request.min_score), missing)

    async def __call__(self, http_request):
        """GET /api/search?q=TEXT (k, under, after, before, within, min_score, nprobe,
        allow_partial=1): {"hits": [...], "partial", "missing"}; errors as {"error"} with 400
        (bad input) or 503 (a shard is down and partial results were not asked for)."""
        from starlette.responses import JSONResponse  # noqa: PLC0415 (starlette: only where Serve's proxy runs)

        params = http_request.query_params
        try:
            if http_request.url.path.rstrip("/") != "/api/search":
                raise ApiError(404, "not found: GET /api/search?q=TEXT")
            request = search_request(params, CLUSTER_PARAMS)
            if request.text is None:
                raise ApiError(400, "give a query: /api/search?q=TEXT")
            result = await self.search(request)
            if result.partial and params.get("allow_partial") not in ("1", "true", "yes"):
                raise ApiError(503, _missing_message(result.missing))
        except ApiError as e:
            return JSONResponse({"error": e.message}, status_code=e.status)
        except InputError as e:  # raised here, or by the encoder inside Ray (then wrapped)
            return JSONResponse({"error": str(_unwrapped(e))}, status_code=400)
        return JSONResponse(
            {
                "hits": [h.to_json() for h in result.hits],
                "partial": result.partial,
                "missing": [asdict(m) for m in result.missing],
            }
        )


def _open_searcher(store: str, threads: int | None):
    if not os.path.exists(os.path.join(store, "data.mdb")):
        raise StoreError("no semdb store here")
    return Searcher(StoreContext(Store(store, readonly=True), threads=threads))


def _check_listening(host: str, port: int) -> None:
    """Serve keeps the HTTP options it was first started with: on a cluster whose Serve already
    runs without a proxy, or on another port, nothing would answer where we say it does."""
    for _ in range(20):
        try:
            socket.create_connection((host, port), timeout=2).close()
            return
        except OSError:
            time.sleep(0.5)
    raise ShardError(
        f"nothing listens on {host}:{port}: Ray Serve already runs on this cluster with other "
        f"HTTP options (it keeps the first ones); use its port, or `serve shutdown` it first"
    )


def _node() -> str:
    import ray  # noqa: PLC0415 (Ray: imported only inside a started cluster)

    return ray.get_runtime_context().get_node_id()


def _missing_message(missing: Sequence[ShardFailure]) -> str:
    named = "; ".join(f"shard {m.shard} ({display_path(m.store)}) {m.reason}" for m in missing)
    return (
        f"{len(missing)} shard(s) did not answer, so the hits would be partial: {named}; pass allow_partial "
        f"to get the other shards' hits, flagged partial"
    )


# --- the driver's side ------------------------------------------------------------------------


@dataclass
class Cluster:
    """A sharded search deployed on Ray Serve; `Cluster.start(...)` deploys it, `close()` (or
    leaving the `with` block) removes it (and stops Ray if start() started it)."""

    name: str
    specs: list[ShardSpec]
    apps: list[str]
    router: object = field(repr=False)  # the router's DeploymentHandle
    started_ray: str = ""  # "": Ray was joined by the caller; "local": started here; "joined": connected here
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def start(
        cls,
        shards: Sequence,
        address: str | None = None,
        *,
        name: str = "semdb",
        threads: int | None = 1,
        num_cpus: float = 0.25,
        shard_resources: Sequence[dict] | None = None,
        http_host: str | None = None,
        http_port: int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        text: bool = True,
    ) -> Cluster:
        """Deploy one Serve application per shard (`shards`: store folders, as every node sees
        them), a text encoder and the router; check that the shards can be searched as one
        (ShardError naming the odd shard otherwise, and nothing is left deployed).

        `address`: a Ray cluster to connect to (None: the one this process already joined, else
        a new local instance). `threads`: torch/onnx threads per replica. `num_cpus`: CPUs each
        replica reserves (a shard mostly waits; its scan is one thread). `shard_resources`: per
        shard, Ray resources its replica needs (e.g. {"node:10.0.0.5": 0.01} to run it on the
        node whose disk holds that store). `http_host`/`http_port`: start Serve's HTTP proxy
        there (GET /api/search), when this call starts Serve. `timeout`: seconds a shard may
        take to answer before it counts as down. `text=False`: no text encoder (no model is
        loaded anywhere): vector queries only."""
        ray, serve = _ray()
        stores = [os.path.abspath(os.fsdecode(s)) for s in shards]
        if not stores:
            raise InputError("give at least one shard (a store folder)")
        if len(set(stores)) != len(stores):
            raise InputError("a store is given twice as a shard: its hits would be counted twice")
        logging.getLogger("ray.serve").setLevel(logging.WARNING)  # Serve's INFO lines would drown the results
        started = "" if ray.is_initialized() else "joined" if address else "local"
        if started:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        try:
            http = {"host": http_host or "127.0.0.1", "port": http_port} if http_port is not None else None
            # One proxy at most, on the head: on one machine (a local test cluster) proxies on
            # every node would all bind the same port.
            serve.start(proxy_location="HeadOnly" if http else "Disabled", **({"http_options": http} if http else {}))
            apps = [f"{name}-shard{i}" for i in range(len(stores))]
            targets = []
            for i, store in enumerate(stores):
                options = {"num_cpus": num_cpus, **({"resources": shard_resources[i]} if shard_resources else {})}
                dep = serve.deployment(ShardReplica, name="shard", ray_actor_options=options)
                targets.append(serve.RunTarget(dep.bind(i, store, threads), name=apps[i], route_prefix=None))
            encoder = serve.deployment(EncoderReplica, name="encoder", ray_actor_options={"num_cpus": num_cpus})
            router = serve.deployment(Router, name="router", ray_actor_options={"num_cpus": num_cpus})
            encoder_app, router_app = f"{name}-encoder", f"{name}-router"
            encoder_target = serve.RunTarget(encoder.bind(stores[0], threads), name=encoder_app, route_prefix=None)
            router_target = serve.RunTarget(
                router.bind(list(apps), stores, encoder_app if text else None),
                name=router_app,
                route_prefix="/" if http else None,
            )
            # The shards first, alone: a store that does not fit is refused before the encoder
            # loads a model for it; the router last (it asks Serve for the others' handles).
            cluster = cls(name, [], apps + ([encoder_app] if text else []) + [router_app], None, started, timeout)
            try:
                try:
                    handles = serve.run_many(targets)
                except RuntimeError as e:  # a replica's constructor crashed (not a semdb error)
                    raise ShardError(f"a shard's replica did not start: {str(e).strip().splitlines()[-1]}") from None
                specs = [h.describe.remote().result(timeout_s=timeout) for h in handles]
                check_specs(specs)
                cluster.specs = specs
                try:
                    if text:
                        serve.run_many([encoder_target])
                except RuntimeError as e:  # the encoder's constructor raised: Serve gave up on it
                    raise ShardError(
                        f"the text encoder (over {display_path(stores[0])}) did not start: "
                        f"{str(e).strip().splitlines()[-1]}"
                    ) from None
                cluster.router = serve.run_many([router_target])[0]
                if http:
                    _check_listening(http["host"], http["port"])
                return cluster
            except BaseException:
                cluster.close()
                raise
        except BaseException:
            if started and ray.is_initialized():
                ray.shutdown()
            raise

    def search(self, text=None, k: int = DEFAULT_K, *, allow_partial: bool = False, **options) -> ShardedResult:
        """The k best items of all shards, as one store holding them all would rank them.
        `text`: rclip arithmetic (every term text), or a SearchRequest (then nothing
        else but `allow_partial`); `options`: SearchRequest.of's, but for `image` and `like`:
        `vector` (a (D,) or (1, D) query embedding of the shards' model) instead of a text,
        the filters and refinements of Database.search. A shard that does not answer:
        ShardError, or with `allow_partial` the other shards' hits with `result.partial` set
        and `result.missing` naming the shards left out."""
        if isinstance(text, SearchRequest):
            if options or k != DEFAULT_K:
                raise InputError("give a SearchRequest alone, or search()'s arguments: not both")
            request = text
        else:
            request = SearchRequest.of(text, k=k, files=False, **options)
        if request.image is not None or request.like is not None:
            raise InputError("a sharded search takes a text or a vector (no image, no like)")
        if request.vector is not None:
            dim = (self.specs[0].model or {}).get("dim")
            if len(request.vector) != 1 or (dim and request.vector.shape[1] != dim):
                raise InputError(
                    f"the query vector has shape {request.vector.shape}, the shards' model gives one of {dim} values"
                )
        try:
            # the router waits `timeout` for the shards; this bounds a router that is down too
            result = self.router.search.remote(request, self.timeout).result(timeout_s=2 * self.timeout + 10)
        except TimeoutError:
            raise ShardError(
                f"the router ({self.name}-router) did not answer in {2 * self.timeout + 10:.0f} s"
            ) from None
        except Exception as e:  # e.g. a bad query text, refused by the encoder inside Ray
            own = _unwrapped(e)
            if isinstance(own, SemdbError):
                raise own from None
            raise ShardError(f"the sharded search failed: {_reason(e)}") from None
        if result.partial and not allow_partial:
            raise ShardError(_missing_message(result.missing))
        return result

    def close(self) -> None:
        ray, serve = _ray()
        if ray.is_initialized() and self.started_ray == "local":  # our own instance: stop it all
            serve.shutdown()
            ray.shutdown()
        elif ray.is_initialized():
            for app in reversed(self.apps):
                try:
                    serve.delete(app)
                except Exception:  # already gone
                    pass
            if self.started_ray:  # a cluster we connected to keeps running (and its Serve)
                ray.shutdown()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _ray():
    try:
        import ray  # noqa: PLC0415 (Ray: imported only when a cluster is started)
        from ray import serve  # noqa: PLC0415 (as above)
    except ImportError:
        raise InputError("sharded search needs Ray Serve: pip install 'semdb[ray]' (or 'ray[serve]')") from None
    return ray, serve
