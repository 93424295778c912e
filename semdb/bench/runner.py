"""The benchmark runner: plan (method, budget) jobs, train on the training split, encode the
held-out split, measure, and return one result dict per job (schema: docs/notes/BENCH.md)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..progress import report
from ..threads import limited
from . import metrics as M
from .data import BenchData, load_embeddings, ood_split, source_shift, split_indices
from .methods import (
    FAMILIES,
    QUERY_FAMILIES,
    REFERENCE_FAMILIES,
    CodecMethod,
    Method,
    MethodSkipped,
    Planned,
    VariantMethod,
    fits_anything,
    plan_budget,
    plan_reference,
)

SCHEMA_VERSION = 2  # 2: knn_recall_1, shift_share; protocols shift and transfer
DEFAULT_BITS = (64, 128, 256, 400, 512)
DEFAULT_BPP_PIXELS = (224, 224)
KNN_KS = (1, 10)
PROTOCOLS = ("held-out", "ood", "shift", "transfer")
RECALL_KS = (1, 5, 10)

#: Every result row has exactly these keys, in this order (None where not applicable).
ROW_KEYS = (
    "schema_version",
    "dataset",
    "dim",
    "protocol",
    "shift_share",
    "split_seed",
    "train_fraction",
    "n_train",
    "n_eval",
    "budget",
    "method",
    "family",
    "status",
    "note",
    "scoring",
    "bits",
    "entropy_bits",
    "bpp",
    "entropy_bpp",
    "bpp_convention",
    "mean_cosine",
    "t2i_recall_1",
    "t2i_recall_5",
    "t2i_recall_10",
    "knn_recall_1",
    "knn_recall_10",
    "zeroshot_top1",
    "zeroshot_top5",
    "nn1_accuracy",
    "encode_us_per_item",
    "train_seconds",
    "size_bytes",
)


def _check_bits(bits) -> list[int]:
    if isinstance(bits, str):
        bits = [b.strip() for b in bits.split(",") if b.strip()]
    elif isinstance(bits, (int, np.integer)):
        bits = [bits]
    out = []
    for b in bits:
        try:
            v = int(b.strip()) if isinstance(b, str) else int(b)
        except (TypeError, ValueError):
            raise InputError(f"--bits {b!r}: not an integer; give bit budgets per item like 64,128,256") from None
        if (not isinstance(b, str) and v != b) or v <= 0:
            raise InputError(f"--bits {b!r}: must be a positive whole number of bits per item")
        out.append(v)
    if not out:
        raise InputError("--bits: give at least one budget (bits per item), e.g. 64,128,256")
    return sorted(set(out))


def check_methods(methods, codec_given: bool, has_pairs: bool = True) -> list[str]:
    if methods is None:
        if codec_given:
            return list(REFERENCE_FAMILIES)
        return [f for f in FAMILIES if has_pairs or f not in QUERY_FAMILIES]
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    out = []
    for m in methods:
        key = str(m).strip().lower()
        if key not in FAMILIES:
            raise InputError(f"--methods {m!r}: unknown method; choose from {', '.join(FAMILIES)}")
        if key not in out:
            out.append(key)
    if not out:
        raise InputError(f"--methods: give at least one of {', '.join(FAMILIES)}")
    return [f for f in FAMILIES if f in out]


def check_options(methods=None, bits=DEFAULT_BITS, bpp_pixels=DEFAULT_BPP_PIXELS, protocol="held-out") -> None:
    """InputError for a bad option, before any data is loaded or any image embedded (run_bench
    checks them again, with the data and the codec)."""
    check_methods(methods, codec_given=False)
    _check_bits(bits)
    _check_pixels(bpp_pixels)
    _check_protocol(protocol)


def _check_protocol(protocol) -> None:
    if protocol not in PROTOCOLS:
        raise InputError(f"--protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")


def _check_pixels(bpp_pixels) -> tuple[int, int]:
    if isinstance(bpp_pixels, str):
        parts = bpp_pixels.lower().replace("*", "x").split("x")
    else:
        parts = list(bpp_pixels)
    try:
        w, h = (int(p) for p in parts)
    except (TypeError, ValueError):
        raise InputError(f"--bpp-pixels {bpp_pixels!r}: expected WIDTHxHEIGHT, e.g. 224x224") from None
    if w <= 0 or h <= 0:
        raise InputError(f"--bpp-pixels {bpp_pixels!r}: width and height must be positive")
    return w, h


def _block_rows(n_cols: int) -> int:
    # keep each (block, n) score matrix and its argsort under ~100 MB
    return int(max(1, min(2048, 4_000_000 // max(n_cols, 1))))


def _evaluate(method: Method, codes, ev: BenchData) -> dict[str, Any]:
    """Accuracy metrics of one encoded evaluation set (``ev``: its rows, in code order)."""
    out: dict[str, Any] = {}
    X = ev.image_emb
    n = X.shape[0]
    if method.decodes:
        xh = method.decode(codes)
        if xh is not None:
            out["mean_cosine"] = M.mean_cosine(X, xh)
    score = method.scorer(codes)
    step = _block_rows(n)

    if ev.text_emb is not None:
        T = ev.text_emb
        ranks = np.concatenate(
            [M.target_ranks(score(T[i : i + step]), np.arange(i, min(i + step, n))) for i in range(0, n, step)]
        )
        for k in RECALL_KS:
            out[f"t2i_recall_{k}"] = float((ranks < k).mean()) if k < n else None

    knn_ks = [k for k in KNN_KS if n > k]
    want_nn1 = ev.label is not None and n > 1
    if knn_ks or want_nn1:
        hits = dict.fromkeys(knn_ks, 0.0)
        nn_correct = 0
        for i in range(0, n, step):
            rows = np.arange(i, min(i + step, n))
            S_apx = score(X[rows])
            if knn_ks:
                S_true = X[rows] @ X.T
                for k in knn_ks:
                    hits[k] += M.knn_recall(S_true, S_apx, k, rows) * len(rows)
            if want_nn1:
                nn_correct += M.nn1_accuracy(S_apx, ev.label, rows) * len(rows)
        for k in knn_ks:
            out[f"knn_recall_{k}"] = hits[k] / n
        if want_nn1:
            out["nn1_accuracy"] = nn_correct / n

    if ev.class_text_emb is not None and ev.label is not None:
        S = score(ev.class_text_emb)  # (C, n)
        zs = M.zero_shot(S, ev.label, (1, 5))
        out["zeroshot_top1"] = zs[1]
        out["zeroshot_top5"] = zs[5] if ev.class_text_emb.shape[0] > 5 else None
    return out


@dataclasses.dataclass(frozen=True)
class Split:
    """What the methods train on and what they are evaluated on."""

    train: BenchData
    eval: BenchData
    protocol: str
    shift_share: float | None = None  # the evaluation set's spread inside the training subspace


def make_split(
    data: BenchData,
    protocol: str,
    *,
    eval_data: BenchData | None = None,
    train_fraction: float = 0.5,
    seed: int = 0,
    groups: int = 10,
    shift: float = 0.5,
) -> Split:
    """The protocol's split (docs/notes/BENCH.md):

    - held-out: a seeded random split of ``data``;
    - ood: whole classes or k-means clusters train, the others evaluate;
    - shift: the held-out split, with the evaluation side rotated so that only ``shift`` of its
      spread stays in the training set's principal subspace (:func:`source_shift`);
    - transfer: all of ``data`` trains, all of ``eval_data`` evaluates (another collection).

    1-NN label accuracy needs labels; ood, without them, takes its clusters as the labels."""
    _check_protocol(protocol)
    if (protocol == "transfer") != (eval_data is not None):
        raise InputError("--eval FILE goes with --protocol transfer (train on one collection, score another)")
    if protocol == "transfer":
        if eval_data.dim != data.dim:
            raise InputError(
                f"--eval: {eval_data.dim}-d embeddings, but the training file has {data.dim}-d; use the same model"
            )
        return Split(data, eval_data, "transfer")
    if protocol == "ood":
        train_idx, eval_idx, group, kind = ood_split(data, train_fraction, seed, groups)
        if data.label is None:  # the clusters are the labels 1-NN accuracy is measured on
            data = dataclasses.replace(data, label=group)
        return Split(data.take(train_idx), data.take(eval_idx), kind)
    train_idx, eval_idx = split_indices(data.n, train_fraction, seed)
    train, ev = data.take(train_idx), data.take(eval_idx)
    if protocol == "held-out":
        return Split(train, ev, protocol)
    rotation = source_shift(train.image_emb, ev.image_emb, shift, seed)
    ev = ev.transformed(rotation.apply)
    return Split(train, ev, protocol, rotation.share(ev.image_emb))


def run_bench(
    data: BenchData | str | Path,
    *,
    bits: Sequence[int] | int | str = DEFAULT_BITS,
    methods: Sequence[str] | str | None = None,
    train_fraction: float = 0.5,
    seed: int = 0,
    codec=None,
    bpp_pixels: tuple[int, int] | str = DEFAULT_BPP_PIXELS,
    max_train_seconds: float | None = 60.0,
    threads: int | None = 1,
    protocol: str = "held-out",
    ood_groups: int = 10,
    shift: float = 0.5,
    eval_data: BenchData | str | Path | None = None,
    progress=None,
    on_message: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Run the rate-accuracy benchmark and return one row dict per (method, budget).

    data: a :class:`BenchData` (e.g. from :func:`load_embeddings` or the image-folder loader) or
        the path of a .npz / .parquet embeddings file.
    bits: bit budgets per item (or "64,128"); each method runs where it has a configuration of exactly that
        size (float32/fp16/int8 are references, reported once regardless of budget).
    methods: families to run (default all, see ``FAMILIES``; "semdb-paired" / "semdb-unpaired",
        semdb trained with the training split's texts as queries, only when the data has text_emb).
    train_fraction, seed: split ``default_rng(seed).permutation(n)``; methods train on the first
        ``int(n * train_fraction)`` rows and are evaluated on the rest.
    codec: a trained ``Codec``: evaluate it on ALL rows (no training, no split). Other
        methods run only if ``methods`` names them (references by default); they then train on
        the same rows they are evaluated on, and their rows say so.
    bpp_pixels: (width, height) of the bits-per-pixel convention: bpp = bits / (w*h).
    max_train_seconds: skip a fit whose time, predicted from the same method's previous
        (smaller) budget, exceeds this (None: never skip). semdb's codec is never skipped.
    threads: BLAS and OpenMP threads during the run (numpy's, FAISS's; None: leave them, all
        cores). Default 1: the same figures on any machine (a sum split over threads rounds
        differently, and k-means turns that into another quantizer; semdb/threads.py), and the
        training sets are small while FAISS's OpenMP loops slow down several-fold (measured
        6-10x on 2 cores) when other processes compete for the cores.
    protocol: "held-out" (the seeded random split), "ood" (whole classes or ``ood_groups``
        k-means clusters train, the others evaluate), "shift" (the held-out split with the
        evaluated items rotated until ``shift`` of their spread stays in the training set's
        principal subspace) or "transfer" (``data`` trains, ``eval_data`` evaluates); see
        :func:`make_split`.
    shift: with protocol "shift", the share of the evaluated items' spread left inside the
        training set's top principal directions (about 0.75 in distribution; 0.5 was measured
        on unfamiliar web photos).
    eval_data: with protocol "transfer", the collection (BenchData or file) to evaluate on.
    progress: ``progress(stage, done, total)`` (semdb.progress), one stage per job such as
        "semdb @ 256 bits", 3 steps each (train, encode, evaluate).
    on_message: called with one line per skipped/failed method.

    Raises InputError for bad arguments and data (one line naming it).
    """
    if not isinstance(data, BenchData):
        data = load_embeddings(data)
    if eval_data is not None and not isinstance(eval_data, BenchData):
        eval_data = load_embeddings(eval_data)
    codec_given = codec is not None
    if codec_given and protocol != "held-out":
        raise InputError(f"--protocol {protocol} trains on one part and evaluates on another; not with --codec")
    families = check_methods(methods, codec_given, data.has_pairs)
    budgets = _check_bits(bits)
    w, h = _check_pixels(bpp_pixels)
    pixels = float(w * h)
    if max_train_seconds is not None and max_train_seconds <= 0:
        raise InputError(f"max_train_seconds {max_train_seconds}: must be positive (or None for no limit)")
    if threads is not None and int(threads) < 1:
        raise InputError(f"--threads {threads}: must be >= 1")

    dim = data.dim
    if codec_given:
        cdim = getattr(codec, "dim", dim)
        if cdim != dim:
            raise InputError(f"--codec: codec is for {cdim}-d embeddings but image_emb has {dim} dims")
        split = Split(data, data, "given-codec")
    else:
        split = make_split(
            data,
            protocol,
            eval_data=eval_data,
            train_fraction=train_fraction,
            seed=seed,
            groups=ood_groups,
            shift=shift,
        )
    train, ev = split.train, split.eval

    # ---- plan
    jobs: list[Planned] = []
    trained = [f for f in families if f not in REFERENCE_FAMILIES]
    if trained:
        for b in budgets:
            baselines = [f for f in trained if f not in ("semdb", "pqvae-paper")]
            # semdb's codec decides itself which budgets it accepts (an error row if not)
            if baselines and not fits_anything(b, dim, baselines):
                raise InputError(
                    f"--bits {b}: no method among {', '.join(baselines)} fits {b} bits per item at D={dim}; "
                    f"use a multiple of 8 up to {8 * dim} or a sign-bit budget up to {dim}"
                )
            for f in trained:
                p = plan_budget(f, b, dim, seed=seed)
                if p is not None:
                    jobs.append(p)
    if codec_given:
        cid = getattr(codec, "id", None)
        name = f"codec:{cid}" if cid else "codec"
        jobs.insert(
            0, Planned("codec", int(codec.bits), name, lambda: CodecMethod("codec", dim, int(codec.bits), codec=codec))
        )
    for f in families:
        if f in REFERENCE_FAMILIES:
            jobs.append(plan_reference(f, dim))
    for v in ev.variants:
        jobs.append(Planned(v.family, None, v.name, lambda v=v: VariantMethod(v)))

    n_eval = ev.n
    base = {
        "schema_version": SCHEMA_VERSION,
        "dataset": data.name if split.protocol != "transfer" else f"{data.name} -> {ev.name}",
        "dim": dim,
        "protocol": split.protocol,
        "shift_share": split.shift_share,
        "split_seed": None if codec_given else int(seed),
        "train_fraction": float(train_fraction) if split.protocol in ("held-out", "ood", "shift") else None,
        "n_eval": n_eval,
    }
    X_train = train.image_emb
    X_eval = ev.image_emb
    say = on_message or (lambda msg: None)
    last_fit: dict[str, tuple[int, float, str]] = {}  # family -> (size_param, seconds, name)
    rows: list[dict[str, Any]] = []

    def new_row(p: Planned, status: str, note: str | None) -> dict[str, Any]:
        r = dict.fromkeys(ROW_KEYS)
        r.update(base)
        r.update(
            budget=p.budget,
            method=p.name,
            family=p.family,
            status=status,
            note=note,
            n_train=None,
            bpp_convention=f"{w}x{h}",
        )
        return r

    with limited(threads):
        for p in jobs:
            label = f"{p.name}" + (f" @ {p.budget} bits" if p.budget else "")
            if p.skip:
                rows.append(new_row(p, "skipped", p.skip))
                say(f"{label}: skipped: {p.skip}")
                report(progress, label, 3, 3)
                continue
            report(progress, label, 0, 3)
            try:
                method = p.make()
                if isinstance(method, VariantMethod):
                    row = _run_variant(method, ev, new_row(p, "ok", method.note))
                else:
                    prev = last_fit.get(p.family)
                    if (
                        prev is not None
                        and max_train_seconds is not None
                        and method.cost_exponent > 0
                        and method.size_param > prev[0]
                    ):
                        predicted = prev[1] * (method.size_param / prev[0]) ** method.cost_exponent
                        if predicted > max_train_seconds:
                            raise MethodSkipped(
                                f"predicted training time ~{predicted:.0f}s exceeds the {max_train_seconds:.0f}s limit "
                                f"({prev[2]} took {prev[1]:.1f}s)"
                            )
                    if isinstance(method, CodecMethod) and method.paired is not None:
                        method.queries = train.text_emb
                    t0 = time.perf_counter()
                    method.fit(X_train)  # a given codec does not train
                    train_s = time.perf_counter() - t0
                    last_fit[p.family] = (method.size_param, train_s, method.name)
                    report(progress, label, 1, 3)
                    t0 = time.perf_counter()
                    codes = method.encode(X_eval)
                    enc_s = time.perf_counter() - t0
                    report(progress, label, 2, 3)
                    row = new_row(p, "ok", method.note)
                    if codec_given and p.family != "codec":
                        row["note"] = "; ".join(filter(None, [method.note, "trained on the evaluated items"]))
                    untrained = p.family in ("codec", "float32", "fp16")
                    row["n_train"] = 0 if untrained else int(X_train.shape[0])
                    row["scoring"] = method.scoring
                    row["bits"] = float(method.bits)
                    row["entropy_bits"] = float(method.entropy_bits(codes))
                    row["bpp"] = row["bits"] / pixels
                    row["entropy_bpp"] = row["entropy_bits"] / pixels
                    row["encode_us_per_item"] = enc_s / n_eval * 1e6
                    row["train_seconds"] = train_s
                    row["size_bytes"] = int(method.size_bytes)
                    row.update(_evaluate(method, codes, ev))
            except MethodSkipped as exc:
                row = new_row(p, "skipped", str(exc))
                say(f"{label}: skipped: {exc}")
            except InputError:
                raise
            except Exception as exc:  # a failing method must not lose the whole report
                msg = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                row = new_row(p, "error", msg)
                say(f"{label}: failed: {msg}")
            rows.append(row)
            report(progress, label, 3, 3)
    return sort_rows(rows)


def _run_variant(method: VariantMethod, ev: BenchData, row: dict) -> dict:
    """A pre-computed variant over the evaluated rows (``ev.variants`` hold just those rows)."""
    eval_idx = np.arange(ev.n)
    codes = method.encode_rows(eval_idx)
    v = method.variant
    row["scoring"] = method.scoring
    row["n_train"] = 0
    row["bits"] = method.mean_bits(eval_idx)
    row["entropy_bits"] = row["bits"]
    row["bpp"] = method.bpp(eval_idx)
    row["entropy_bpp"] = row["bpp"]
    row["bpp_convention"] = "actual"
    if v.encode_seconds is not None:
        row["encode_us_per_item"] = v.encode_seconds / ev.n * 1e6
    row["train_seconds"] = 0.0
    row["size_bytes"] = 0
    row.update(_evaluate(method, codes, ev))
    return row


def _family_rank(family: str) -> int:
    return FAMILIES.index(family) if family in FAMILIES else (-1 if family == "codec" else len(FAMILIES))


def sort_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Budget rows first (ascending budget, then method family order), then references and
    image-codec variants by bits."""

    def key(r):
        if r["budget"] is not None:
            return (0, r["budget"], _family_rank(r["family"]), r["method"])
        return (1, r["bits"] if r["bits"] is not None else float("inf"), _family_rank(r["family"]), r["method"])

    return sorted(rows, key=key)
