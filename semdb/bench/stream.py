"""The stream protocol: a store fed one collection, then another, searched over the mixed store.

A store meets collection A first, then B (another file of the same model, or A's other half
turned by :func:`source_shift`). Each collection is split into a training part (the store's
training threshold) and an evaluation part the store never trains on; the store is fed, in
order, A_train, A_eval, B_train, B_eval (or, interleaved, A_train then A_eval and B alternating
in batches) through ``Database.add_embeddings``. The evaluation items are then scored out of
sample among themselves, through the store's own search on its codes: kNN@1 and kNN@10 against
the float neighbours, text->image R@1 where the data has texts, for A's items, B's items and
all. FAISS quantizers at the same bits, trained on A_train (a user who never retrains) and on
A_train + B_train (one who retrains everything), encode the same evaluation items and are
scored on them the same way. Scope ``A alone`` ranks A's items among themselves (a store without
B; FAISS on A: the same codes), so that each method's A figures show what B's arrival costs them.

Only the public API is used (``semdb.open``, ``add_embeddings``, ``search_vectors``, ``codes``,
``info``, ``item``), so the same protocol measures a store with one codec or with several.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..ingest.training import MIN_TRAIN
from ..progress import report
from ..threads import limited
from . import metrics as M
from .data import BenchData, load_embeddings, source_shift
from .methods import MethodSkipped, plan_budget
from .runner import _check_bits

STREAM_SCHEMA_VERSION = 1
#: FAISS families the store is compared with (equal bits; the best of them per metric is "best FAISS").
FAISS_FAMILIES = ("pq", "pqfs", "opq", "rq", "lsq")
KNN_K = 10
SCOPES = ("A", "B", "all")
#: A's items ranked among themselves alone, as in a collection B never joined: what B costs them.
ALONE = "A alone"
PARTS = ("a_train", "a_eval", "b_train", "b_eval")
EVAL_ROOT = "/stream/eval"  # every evaluated item's path is under it: the search's `under` filter
STORE_MODEL = ("stream-bench", "precomputed")  # the model the store records (no weights are loaded)

STREAM_ROW_KEYS = (
    "schema_version",
    "dataset",
    "protocol",
    "b_source",
    "shift_share",
    "seed",
    "interleave",
    "min_train",
    "n_a_eval",
    "n_b_eval",
    "bits",
    "method",
    "family",
    "trained_on",
    "scope",
    "status",
    "note",
    "knn_recall_1",
    "knn_recall_10",
    "t2i_recall_1",
    "a_staged",
    "a_other_codec",
    "codecs",
    "staged",
    "seconds",
)


@dataclass(frozen=True)
class Stream:
    """The two collections, each split into the part a store trains on and the part it is scored on."""

    a_train: BenchData
    a_eval: BenchData
    b_train: BenchData
    b_eval: BenchData
    dataset: str  # e.g. "flickr8k then flickr8k turned"
    b_source: str  # "FILE" or "shift 0.5"
    shift_share: float | None  # B's spread inside A_train's principal subspace, when B is turned

    def part(self, name: str) -> BenchData:
        return getattr(self, name)

    @property
    def has_texts(self) -> bool:
        return self.a_eval.has_pairs and self.b_eval.has_pairs


def make_stream(
    data: BenchData,
    then: BenchData | None = None,
    *,
    shift: float = 0.5,
    seed: int = 0,
    min_train: int = MIN_TRAIN,
    eval_items: int | None = None,
) -> Stream:
    """A and B: ``data`` and ``then`` each in a seeded random order, or, without ``then``, the two
    halves of ``data`` in a seeded random order with B turned until ``shift`` of its spread lies
    in A_train's principal subspace. Each gives ``min_train`` training items and ``eval_items``
    evaluated ones (default: the rest of the smaller collection)."""
    rng = np.random.default_rng(seed)
    if then is None:
        perm, half = rng.permutation(data.n), data.n // 2
        a, b = data.take(perm[:half]), data.take(perm[half : 2 * half])
    else:
        if then.dim != data.dim:
            raise InputError(
                f"--then: {then.dim}-d embeddings, but the first file has {data.dim}-d; use the same model"
            )
        a, b = data.take(rng.permutation(data.n)), then.take(rng.permutation(then.n))
    if int(min_train) < 2:
        raise InputError(f"--min-train {min_train}: a codec needs at least 2 training items")
    n_eval = int(eval_items) if eval_items is not None else min(a.n, b.n) - int(min_train)
    if n_eval < 6 or a.n < min_train + n_eval or b.n < min_train + n_eval:
        raise InputError(
            f"--min-train {min_train} and {n_eval} evaluated items per collection need {min_train + max(n_eval, 6)} "
            f"items in each of A and B, which have {a.n} and {b.n}; lower --min-train or --eval-items"
        )
    train, ev = np.arange(min_train), np.arange(min_train, min_train + n_eval)
    share = None
    if then is None:
        rotation = source_shift(a.take(train).image_emb, b.image_emb, shift, seed)
        b = b.transformed(rotation.apply)
        share = rotation.share(b.image_emb)
        dataset, b_source = f"{data.name} then {data.name} turned", f"shift {shift:g}"
    else:
        dataset, b_source = f"{data.name} then {then.name}", then.name
    return Stream(a.take(train), a.take(ev), b.take(train), b.take(ev), dataset, b_source, share)


def feed_plan(stream: Stream, interleave: int | None = None, with_b: bool = True) -> list[tuple[str, int, int]]:
    """The batches the store is fed, in order: (part, start, stop). A_train comes first and whole
    (A's codec is trained on it); then A_eval, B_train, B_eval, one call each, or A_eval and
    B (B_train, then B_eval) alternating in batches of ``interleave``."""
    plan = [("a_train", 0, stream.a_train.n)]
    a_rest = [("a_eval", 0, stream.a_eval.n)]
    b_rest = [("b_train", 0, stream.b_train.n), ("b_eval", 0, stream.b_eval.n)] if with_b else []
    if not interleave:
        return plan + a_rest + b_rest

    def batches(parts):
        return [(p, i, min(i + interleave, stop)) for p, start, stop in parts for i in range(start, stop, interleave)]

    a_batches, b_batches = batches(a_rest), batches(b_rest)
    for i in range(max(len(a_batches), len(b_batches))):
        plan += a_batches[i : i + 1] + b_batches[i : i + 1]
    return plan


def item_path(part: str, i: int) -> str:
    kind, source = part.split("_")[1], part[0]
    return f"/stream/{kind}/{source}/{i:06d}.jpg"


@dataclass
class StoreResult:
    """What the store returned for the evaluated items (``got``: per query, the eval indices of its
    best hits among the evaluated items, itself left out, -1 past the end) and what it holds."""

    got: np.ndarray  # (n_eval, KNN_K)
    text_top1: np.ndarray | None  # (n_eval,) eval index of each text query's first hit (-1: none)
    a_staged: int  # A_eval items left staged (no code) at the end
    a_other_codec: int | None  # A_eval items coded by another codec than A_train's (None: the store does not say)
    codecs: int
    staged: int
    seconds: float


def _codec_of(db, items) -> list:
    """The id of the codec of the store's set that wrote each item's code (None: staged)."""
    wrote = {int(i): codec_id for codec_id, (ids, _) in db.store.load_code_groups().items() for i in ids.tolist()}
    return [wrote.get(int(it.id)) for it in items]


def _codec_count(info: dict) -> int:
    codecs = info.get("codecs")
    if isinstance(codecs, (list, tuple, dict)):
        return len(codecs)
    return 1 if info.get("codec") else 0


def run_store(
    stream: Stream,
    bits: int,
    *,
    min_train: int,
    interleave: int | None = None,
    with_b: bool = True,
    workdir: str | Path | None = None,
) -> StoreResult:
    """Feed a new store (in a temporary folder) the stream's batches with ``add_embeddings``, then
    search it for every evaluated item (its float embedding; its text) among the evaluated items."""
    import semdb  # noqa: PLC0415 (the store: loaded only by this protocol)
    from semdb.ingest import CodecPolicy  # noqa: PLC0415

    evaluated = ("a_eval", "b_eval") if with_b else ("a_eval",)
    paths = {p: [item_path(p, i) for i in range(stream.part(p).n)] for p in PARTS}
    eval_paths = [path for p in evaluated for path in paths[p]]
    index_of = {path: j for j, path in enumerate(eval_paths)}
    X = np.concatenate([stream.part(p).image_emb for p in evaluated])
    policy = CodecPolicy(bits=int(bits), min_train=int(min_train))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="semdb-stream-", dir=workdir) as tmp, semdb.open(Path(tmp) / "s") as db:
        for part, i, j in feed_plan(stream, interleave, with_b):
            db.add_embeddings(
                paths[part][i:j],
                stream.part(part).image_emb[i:j],
                model=STORE_MODEL[0],
                pretrained=STORE_MODEL[1],
                policy=policy,
            )
        seconds = time.perf_counter() - start

        def top(queries, k):
            hits = db.search_vectors(queries, k=k, under=EVAL_ROOT)
            return [[index_of[h.path] for h in row] for row in hits]

        got = np.full((len(X), KNN_K), -1, dtype=np.int64)
        for q, row in enumerate(top(X, min(KNN_K + 1, len(X)))):
            kept = [j for j in row if j != q][:KNN_K]
            got[q, : len(kept)] = kept
        text_top1 = None
        if all(stream.part(p).has_pairs for p in evaluated):
            T = np.concatenate([stream.part(p).text_emb for p in evaluated])
            text_top1 = np.array([row[0] if row else -1 for row in top(T, 1)], dtype=np.int64)
        stored = {it.path: it for it in db.ls(under="/stream")}
        a_items, train_items = [stored[p] for p in paths["a_eval"]], [stored[p] for p in paths["a_train"]]
        coded = db.codes()
        a_codecs, train_codecs = _codec_of(db, a_items), _codec_of(db, train_items)
        home = Counter(train_codecs).most_common(1)[0][0]  # A's codec: the one most of A_train is coded by
        other = sum(1 for it, c in zip(a_items, a_codecs) if it.id in coded and c != home)
        info = db.info()
        return StoreResult(
            got=got,
            text_top1=text_top1,
            a_staged=sum(1 for it in a_items if it.id not in coded),
            a_other_codec=other,
            codecs=_codec_count(info),
            staged=int(info.get("staging") or 0),
            seconds=seconds,
        )


# --------------------------------------------------------------------------------------------
# scoring


def _hits(true_top: np.ndarray, got: np.ndarray, text_hit: np.ndarray | None) -> dict[str, np.ndarray]:
    """Per query: the share of its true k nearest neighbours among the k it got, for k = 1 and
    KNN_K, and whether its text found it first (None: no texts)."""
    out = {}
    for k in (1, KNN_K):
        out[f"knn_recall_{k}"] = np.array([len(set(t[:k]) & set(g[:k])) / k for t, g in zip(true_top, got)])
    out["t2i_recall_1"] = None if text_hit is None else text_hit.astype(np.float64)
    return out


def _store_hits(true_top: np.ndarray, result: StoreResult) -> dict[str, np.ndarray]:
    text_hit = None if result.text_top1 is None else result.text_top1 == np.arange(len(result.text_top1))
    return _hits(true_top, result.got, text_hit)


def _faiss_hits(score, X: np.ndarray, T: np.ndarray | None, true_top: np.ndarray, columns=slice(None)):
    """Rank the encoded items (those of ``columns``; query i's own is column i) for each query
    of X and each text of T by a fitted method's ``score``."""
    own = np.arange(len(X))
    got = M.topk_excluding_self(score(X)[:, columns], KNN_K, own)
    text_hit = None if T is None else M.target_ranks(score(T)[:, columns], own) == 0
    return _hits(true_top, got, text_hit)


def _means(hits: dict[str, np.ndarray | None], n_a: int) -> dict[str, dict[str, float | None]]:
    """Scope -> metric -> mean over that scope's queries (A's: the first n_a)."""
    scopes = {"A": slice(0, n_a), "B": slice(n_a, None), "all": slice(None)}
    return {
        s: {m: None if v is None or not len(v[rows]) else float(v[rows].mean()) for m, v in hits.items()}
        for s, rows in scopes.items()
    }


# --------------------------------------------------------------------------------------------
# the run


def check_stream_options(bits, methods=None, interleave=None, min_train=MIN_TRAIN) -> tuple[list[int], list[str]]:
    """InputError for a bad option, before any data is loaded: (budgets, FAISS families)."""
    budgets = _check_bits(bits)
    if methods is None:
        families = [f for f in FAISS_FAMILIES if f != "lsq"]  # LSQ: minutes per fit past 128 bits
    else:
        names = [m.strip().lower() for m in (methods.split(",") if isinstance(methods, str) else methods)]
        unknown = [m for m in names if m and m not in FAISS_FAMILIES]
        if unknown:
            raise InputError(f"--methods {unknown[0]!r}: the stream protocol compares with {', '.join(FAISS_FAMILIES)}")
        families = [f for f in FAISS_FAMILIES if f in names]
    if interleave is not None and int(interleave) < 0:
        raise InputError(f"--interleave {interleave}: a batch size (photos), or 0 for none")
    if int(min_train) < 2:
        raise InputError(f"--min-train {min_train}: a codec needs at least 2 training items")
    return budgets, families


def run_stream(
    data: BenchData | str | Path,
    *,
    then: BenchData | str | Path | None = None,
    shift: float = 0.5,
    seed: int = 0,
    bits: Sequence[int] | int | str = (128, 256, 512),
    methods: Sequence[str] | str | None = None,
    min_train: int = MIN_TRAIN,
    eval_items: int | None = None,
    interleave: int | None = None,
    max_train_seconds: float | None = 60.0,
    threads: int | None = 1,
    progress=None,
    on_message: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """The stream protocol (module docstring): one row per (bits, method, training set, scope).

    Rows: ``semdb store`` (the mixed store; its rows also say how many A_eval items the store
    left staged or coded by another codec than A's, its codecs and staged items at the end),
    ``semdb store without B`` (a store of A alone: scope ``A alone``), each FAISS
    quantizer trained on ``A`` (also in scope ``A alone``: A's codes ranked among themselves) and
    on ``A+B``, ``best FAISS`` (per metric, the best of them; its
    note names which) and ``float32`` (the float embeddings themselves: 1.0). A FAISS fit
    predicted, from the same family's previous budget, to take over ``max_train_seconds`` of CPU
    time is skipped (its rows say so). ``threads``: as :func:`run_bench`'s (one: the same figures on any
    machine)."""
    budgets, families = check_stream_options(bits, methods, interleave, min_train)
    data = data if isinstance(data, BenchData) else load_embeddings(data)
    if then is not None and not isinstance(then, BenchData):
        then = load_embeddings(then)
    stream = make_stream(data, then, shift=shift, seed=seed, min_train=min_train, eval_items=eval_items)
    run = _Run(stream, seed, interleave, min_train, max_train_seconds, progress, on_message or (lambda msg: None))
    run.steps = len(budgets) * (2 + 2 * len(families))
    run.add(None, "float32", "float32", None, run.means(_hits(run.true_top, run.true_top, run.text_own)))
    with limited(threads):
        for b in budgets:
            run.store_rows(b)
            for trained_on in ("A", "A+B"):
                run.faiss_rows(b, families, trained_on)
    report(progress, "done", run.steps, run.steps)
    return run.rows


class _Run:
    """One stream run: the evaluated items and their float neighbours, and the rows so far."""

    def __init__(self, stream: Stream, seed, interleave, min_train, max_train_seconds, progress, say):
        self.stream, self.seed, self.interleave, self.min_train = stream, int(seed), interleave, int(min_train)
        self.max_train_seconds, self.progress, self.say = max_train_seconds, progress, say
        self.n_a = stream.a_eval.n
        self.X = np.concatenate([stream.a_eval.image_emb, stream.b_eval.image_emb])
        self.T = np.concatenate([stream.a_eval.text_emb, stream.b_eval.text_emb]) if stream.has_texts else None
        own = np.arange(len(self.X))
        self.text_own = None if self.T is None else np.ones(len(own), dtype=bool)
        self.true_top = M.topk_excluding_self(self.X @ self.X.T, KNN_K, own)
        XA = self.X[: self.n_a]
        self.true_top_a = M.topk_excluding_self(XA @ XA.T, KNN_K, own[: self.n_a])
        self.fit_sets = {
            "A": stream.a_train.image_emb,
            "A+B": np.concatenate([stream.a_train.image_emb, stream.b_train.image_emb]),
        }
        self.last_fit: dict[tuple[str, str], tuple[int, float]] = {}  # (family, trained on) -> (bits, CPU seconds)
        self.steps = self.done = 0
        self.base = dict.fromkeys(STREAM_ROW_KEYS)
        self.base.update(
            schema_version=STREAM_SCHEMA_VERSION,
            dataset=stream.dataset,
            protocol="stream" + (f" interleaved {interleave}" if interleave else ""),
            b_source=stream.b_source,
            shift_share=stream.shift_share,
            seed=self.seed,
            interleave=int(interleave) if interleave else None,
            min_train=self.min_train,
            n_a_eval=self.n_a,
            n_b_eval=stream.b_eval.n,
            status="ok",
        )
        self.rows: list[dict[str, Any]] = []

    def means(self, hits):
        return _means(hits, self.n_a)

    def step(self, label: str) -> None:
        report(self.progress, label, self.done, self.steps)
        self.done += 1

    def add(self, bits, method, family, trained_on, means, scopes=SCOPES, **extra) -> None:
        for s in scopes:
            row = {**self.base, "bits": bits, "method": method, "family": family, "trained_on": trained_on}
            self.rows.append({**row, "scope": s, **(means[s] if means else {}), **extra})

    def store_rows(self, bits: int) -> None:
        """The mixed store, and a store of A alone (scope A)."""
        self.step(f"semdb store @ {bits} bits")
        got = run_store(self.stream, bits, min_train=self.min_train, interleave=self.interleave)
        stats = dict(a_staged=got.a_staged, a_other_codec=got.a_other_codec, codecs=got.codecs, staged=got.staged)
        stats["seconds"] = got.seconds
        self.add(bits, "semdb store", "semdb", "stream", self.means(_store_hits(self.true_top, got)), **stats)
        self.step(f"semdb store without B @ {bits} bits")
        alone = run_store(self.stream, bits, min_train=self.min_train, interleave=self.interleave, with_b=False)
        means = self.means(_store_hits(self.true_top_a, alone))
        self.add(bits, "semdb store without B", "semdb", "A", {ALONE: means["all"]}, (ALONE,), seconds=alone.seconds)

    def faiss_rows(self, bits: int, families: Sequence[str], trained_on: str) -> None:
        """Each FAISS family at ``bits``, trained on ``trained_on``; then the best of them per metric."""
        scopes = SCOPES + (ALONE,) if trained_on == "A" else SCOPES
        best: dict[str, dict[str, tuple[float, str]]] = {s: {} for s in scopes}
        for family in families:
            planned = plan_budget(family, bits, self.X.shape[1], seed=self.seed)
            self.step(f"{family} on {trained_on} @ {bits} bits")
            if planned is None:
                continue
            try:
                method = self._method(planned, bits, trained_on)
                t0, cpu0 = time.perf_counter(), time.process_time()
                method.fit(self.fit_sets[trained_on])
                score = method.scorer(method.encode(self.X))
                means = self.means(_faiss_hits(score, self.X, self.T, self.true_top))
                if trained_on == "A":  # A's codes are the same without B: rank them among themselves
                    TA = None if self.T is None else self.T[: self.n_a]
                    alone = _faiss_hits(score, self.X[: self.n_a], TA, self.true_top_a, slice(0, self.n_a))
                    means[ALONE] = self.means(alone)["all"]
                seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            except MethodSkipped as exc:
                self.say(f"{planned.name} on {trained_on} @ {bits} bits: skipped: {exc}")
                self.add(bits, planned.name, family, trained_on, None, status="skipped", note=str(exc))
                continue
            self.last_fit[(family, trained_on)] = (bits, cpu)  # CPU time: the same skips on a busy machine
            self.add(bits, planned.name, family, trained_on, means, scopes, note=method.note, seconds=seconds)
            for s in scopes:
                for metric, value in means[s].items():
                    if value is not None and value > best[s].get(metric, (-1.0, ""))[0]:
                        best[s][metric] = (value, planned.name)
        if not any(plan_budget(f, bits, self.X.shape[1]) for f in families):
            self.say(f"{bits} bits: none of {', '.join(families)} has a configuration of exactly {bits} bits")
        if any(best.values()):
            notes = {s: "; ".join(f"{_SHORT[m]} {name}" for m, (_, name) in best[s].items()) for s in scopes}
            values = {s: {m: v for m, (v, _) in best[s].items()} for s in scopes}
            for s in scopes:
                self.add(bits, "best FAISS", "faiss", trained_on, values, (s,), note=notes[s])

    def _method(self, planned, bits: int, trained_on: str):
        if planned.skip is not None:
            raise MethodSkipped(planned.skip)
        method = planned.make()
        prev = self.last_fit.get((planned.family, trained_on))
        if prev is not None and self.max_train_seconds is not None:
            predicted = prev[1] * (bits / prev[0]) ** max(method.cost_exponent, 1.0)
            if predicted > self.max_train_seconds:
                raise MethodSkipped(
                    f"predicted training time ~{predicted:.0f} CPU s exceeds the {self.max_train_seconds:.0f} s limit "
                    f"({prev[0]} bits took {prev[1]:.1f} s)"
                )
        return method


_SHORT = {"knn_recall_1": "kNN@1", "knn_recall_10": "kNN@10", "t2i_recall_1": "R@1"}
