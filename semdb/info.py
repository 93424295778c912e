"""What `semdb info` and `Database.info()` report of a store: counts, size on disk, model, its
codecs (each with its items, its drift and shift ratios and its IVF), the photos waiting for a
codec of their own, and whether a retrain is advised or under way."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .context import STATS_KEY, codec_stats
from .ingest import retrain_sample
from .ingest.training import MIN_TRAIN, drift_ratio, retrain_advice, shift_ratio
from .search.ivf import default_nprobe
from .store import Store
from .store.format import codec_slots, ivf_meta_key


def describe(store: Store, codecs: dict) -> dict:
    """Counts, rate, size on disk, model and codecs of `store`, whose codec set is `codecs`
    ({id: Codec}, its first codec first; empty before it has one)."""
    codec = next(iter(codecs.values()), None)
    raw = store.info()
    out = {
        "path": raw["path"],
        "items": raw["items"],
        "staging": raw["staging"],
        "bytes_on_disk": raw["bytes_on_disk"],
        "bytes_per_item": raw["bytes_per_item"],
        "schema": raw["schema"],
        "model": raw["model_id"],
        "codec": None,
        "bits_per_item": None,
        "entropy_bits_per_item": None,
    }
    meta = store.meta()
    if codec is not None:
        _, codes = store.load_codes()
        stats = meta.get(STATS_KEY) or {}
        ratio, shift = drift_ratio(stats), shift_ratio(stats)
        out["codec"] = {
            "id": codec.id,
            "arch": codec.arch,
            "bits": codec.bits,
            "m": codec.m,
            "k": codec.k,
            "d": codec.config.get("d"),
            "trained_on": codec.config.get("n_train"),
            "query_source": codec.config.get("query_source", "none"),
            "encoded_since": stats.get("encoded"),
            "drift_ratio": None if ratio is None else round(ratio, 3),
            "shift_ratio": None if shift is None else round(shift, 3),
        }
        out["bits_per_item"] = codec.bits
        out["entropy_bits_per_item"] = round(codec.entropy_bits(np.asarray(codes)), 2) if len(codes) else None
    groups = store.load_code_groups() if codec is not None else {}
    out["codecs"] = [_codec_entry(c, meta, len(groups.get(c.id, ((),))[0])) for c in codecs.values()]
    out["waiting"] = raw["staging"] if codec is not None else 0  # photos no codec knows yet
    out["compressed"] = codec is not None
    out["ivf"] = _ivf_entry(meta.get("ivf"))  # the first codec's (each codec's: in "codecs")
    out["codec_trains_at"] = None if codec is not None else MIN_TRAIN  # items (or `ingest --train-now`)
    out["retrain_advice"] = retrain_advice(meta, raw["items"])
    pending = meta.get("pending_codec")
    out["retrain_pending"] = (
        None if not pending else {"codec": pending["id"], "recoded": len(store.recoded_ids()), "items": raw["items"]}
    )
    # the re-embedded sample of a retrain interrupted before its new codec was trained: `semdb retrain` resumes
    sample = Path(raw["path"]) / retrain_sample.FILE
    out["retrain_sample"] = str(sample) if sample.is_file() else None
    return out


def _ivf_entry(info: dict | None) -> dict | None:
    if not info:
        return None
    return {"nlist": info["nlist"], "built_on": info["built_on"], "default_nprobe": default_nprobe(info["nlist"])}


def _codec_entry(codec, meta: dict, items: int) -> dict:
    stats = codec_stats(meta, codec.id) or {}
    slots = codec_slots(meta)
    ratio = shift_ratio(stats)
    return {
        "id": codec.id,
        "items": items,
        "trained_on": codec.config.get("n_train"),
        "trained_at": stats.get("trained_at"),
        "bits": codec.bits,
        "shift_ratio": None if ratio is None else round(ratio, 3),
        "ivf": _ivf_entry(meta.get(ivf_meta_key(slots.index(codec.id)))) if codec.id in slots else None,
    }
