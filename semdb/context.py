"""`StoreContext`: one store with the CLIP model it was built with and the codec kept inside it.

Ingest, query, transfer and info all work through one context (the `Database` facade owns it):
the model loads on first use (a re-run that finds nothing to embed never loads it), and the
codec is read from the store only when the store's recorded codec id changes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .codec import Codec
from .errors import CodecError, StoreError
from .faults import fault_point
from .search import ivf
from .store import Store, StoredIvf, Writer

# store meta: {trained_on, train_error, encoded, error_sum, outside_baseline, outside_recent} of its
# first codec (drift and shift: semdb/ingest/training.py), and {codec id: the same} of the others
STATS_KEY = "codec_stats"
SET_STATS_KEY = "codec_set_stats"
ASSIGNERS_KEPT = 8  # one per codec of a full set


def codec_stats(meta: dict, codec_id: str) -> dict | None:
    """The stats a store keeps of its codec `codec_id`."""
    if codec_id == meta.get("codec_id"):
        return meta.get(STATS_KEY)
    return (meta.get(SET_STATS_KEY) or {}).get(codec_id)


def put_codec_stats(w, codec_id: str, stats: dict | None) -> None:
    """Record (None: forget) the stats of codec `codec_id` in write batch `w`."""
    meta = w.meta()
    if codec_id == meta.get("codec_id"):
        w.set_meta(STATS_KEY, stats)
        return
    others = {k: v for k, v in (meta.get(SET_STATS_KEY) or {}).items() if k != codec_id}
    if stats is not None:
        others[codec_id] = stats
    w.set_meta(SET_STATS_KEY, others or None)


class StoreContext:
    def __init__(
        self,
        store: Store,
        model: str | None = None,
        pretrained: str | None = None,
        device: str = "cpu",
        threads: int | None = None,
        embedder=None,
    ):
        self.store = store
        self.model_args = (model, pretrained)
        self.device = device
        self.threads = threads  # torch intra-op threads (None: torch's default)
        self._embedder = embedder
        self._text_encoder = None
        if embedder is not None:
            store.check_model(embedder.model_id)
        self._codec: Codec | None = None
        self._others: dict[str, Codec] = {}  # the set's other codecs, loaded by id
        self._assigners: dict[tuple, ivf.Assigner] = {}  # (codec id, ivf id) -> its Assigner

    def write(self) -> Writer:
        """A write batch of the store whose new codes get their IVF lists in the same
        transaction (assign_ivf_lists); use as ``with ctx.write() as w:``."""
        return self.store.write(assign_ivf=self.assign_ivf_lists)

    def assign_ivf_lists(self, codes: np.ndarray, stored: StoredIvf) -> np.ndarray | None:
        """The IVF lists (uint32) of `codes` in their codec's IVF `stored`, or None when that
        codec is not loaded here (their list rows are then left out, filled by the next ingest)."""
        codec, info = self._loaded(stored.codec_id), stored.info
        if codec is None or info.get("codec_id") != codec.id or not ivf.supported(codec):
            return None
        key = (codec.id, info.get("id"))
        if key not in self._assigners:
            if len(self._assigners) >= ASSIGNERS_KEPT:
                self._assigners.pop(next(iter(self._assigners)))
            self._assigners[key] = ivf.Assigner(codec, stored.centroids())
        return self._assigners[key](codes)

    def _loaded(self, codec_id: str) -> Codec | None:
        """Codec `codec_id` if this context has loaded it (inside a write batch: read nothing)."""
        if self._codec is not None and self._codec.id == codec_id:
            return self._codec
        return self._others.get(codec_id)

    @property
    def path(self):
        return self.store.path

    @property
    def embedder(self):
        """The CLIP model: the one given or named at open(), else the store's, else the default.
        On a CPU, its cached ONNX export when there is one (semdb.clip.onnx: no torch imported);
        else loaded with torch, text tower first: its image tower loads when an image is first
        encoded, so a text query never reads or holds it. Reading it never writes the store:
        bind_model() records the model."""
        if self._embedder is None:
            stored = self.store.model_id()
            if not stored and self.store.readonly and self.model_args[0] is None:
                # a new store whose first ingest is still loading its model: not the default model
                raise StoreError(
                    f"{self.path} has no CLIP model yet: its first ingest records it once the model is loaded "
                    f"(query again then), or pass --model"
                )
            emb = self._onnx_model(stored or {})
            if emb is None:
                from .clip.embedder import Embedder  # noqa: PLC0415 - imports torch and open_clip: only the torch path loads them

                model, pretrained = self.model_args
                if model is None and stored:
                    model, pretrained = stored["name"], stored.get("pretrained")
                emb = Embedder(model, pretrained, device=self.device, threads=self.threads, text_only=True)
            self.store.check_model(emb.model_id)
            self._embedder = emb
        return self._embedder

    def _onnx_model(self, stored: dict):
        from .clip import onnx as onnxclip  # noqa: PLC0415 - PIL and the tokenizer: only loading a model needs them

        named = self._named_source(stored)
        if self.device != "cpu" or named is None or not onnxclip.enabled():
            return None
        from .clip.onnx import model  # noqa: PLC0415 - PIL and the tokenizer: only loading a model needs them

        return model.load(*named, threads=self.threads)

    @property
    def text_encoder(self):
        """What encodes text queries, the cheapest that gives the model's embeddings: the
        loaded model if there is one; else the cached ONNX export of the store's text tower
        (semdb.clip.onnx: no torch imported), else the model, text tower only (and then its
        ONNX export is cached for the next cold query, when onnxruntime is installed)."""
        if self._embedder is not None:
            return self._embedder
        if self._text_encoder is None:
            from .clip import onnx as onnxclip  # noqa: PLC0415 - PIL and the tokenizer: only loading a model needs them
            from .clip.onnx import text as onnxtext  # noqa: PLC0415 - PIL and the tokenizer: only loading a model needs them

            if self.device == "cpu" and onnxclip.enabled():
                stored = self.store.model_id() or {}
                named = self._named_source(stored)
                if named is not None and stored.get("digest"):
                    enc = onnxtext.load(*named, threads=self.threads)
                    if enc is not None and enc.model_id["digest"] == stored["digest"] and enc.dim == stored.get("dim"):
                        self._text_encoder = enc
                        return enc
            emb = self.embedder
            onnxtext.export(emb)
            return emb
        return self._text_encoder

    def _named_source(self, stored: dict):
        """(model, pretrained) as the model would be resolved, when that needs no open_clip
        (the store's model, or a model given with its weights); else None."""
        model, pretrained = self.model_args
        if model is None:
            return (stored["name"], stored.get("pretrained")) if stored.get("name") else None
        if model.startswith(("local-dir:", "hf-hub:")):
            return model, None
        return (model, pretrained) if pretrained else None

    @property
    def model_loaded(self) -> bool:
        return self._embedder is not None

    @property
    def model_named(self) -> bool:
        """Whether the caller chose the model (given, or named at open())."""
        return self._embedder is not None or self.model_args[0] is not None

    def bind_model(self) -> None:
        """Load the model (checked against the store's) and record it in a store that has none,
        or that knows it by name only (built from imported embeddings): its weights digest."""
        emb = self.embedder
        stored = self.store.model_id()
        if not stored or (not stored.get("digest") and not self.store.readonly):
            with self.store.write() as w:
                w.set_meta("model_id", emb.model_id)

    @property
    def codec(self) -> Codec | None:
        """The store's first codec (None before it has one)."""
        # Called on every batch and query: compare the recorded id first, and read and parse the
        # codec bytes only when the store's codec is not the one already loaded.
        recorded = self.store.meta().get("codec_id")
        if recorded is None:
            return None
        if self._codec is None or self._codec.id != recorded:
            self._codec = self._load_codec(recorded, first=True)
        return self._codec

    @property
    def codecs(self) -> dict[str, Codec]:
        """{codec id: Codec} of the store's whole set, its first codec first."""
        first = self.codec
        if first is None:
            return {}
        found = {first.id: first}
        for codec_id in self.store.codec_ids()[1:]:
            if codec_id not in self._others:
                self._others[codec_id] = self._load_codec(codec_id)
            found[codec_id] = self._others[codec_id]
        return found

    def _load_codec(self, codec_id: str, first: bool = False) -> Codec:
        raw = self.store.codec_bytes(None if first else codec_id)
        # Codec.id digests the codec's config and weights: a codec whose bytes were damaged
        # on disk no longer matches the id recorded when it was installed.
        advice = "restore it from a backup or rebuild it with `semdb ingest` into a new --store"
        try:
            codec = Codec.from_bytes(raw, source=f"{self.path} (codec)")
        except CodecError as e:
            raise StoreError(f"{self.path} is corrupt (its codec does not load: {e}); {advice}") from None
        if codec.id != codec_id:
            raise StoreError(
                f"{self.path} is corrupt (its codec's digest {codec.id} is not the recorded {codec_id}); {advice}"
            )
        return codec

    def stored_vectors(self, ids) -> np.ndarray:
        """(n, D) float32: what the store keeps of items `ids` (stored ones), as vectors: each
        code decoded by the codec that wrote it, a staged row as it is. No file is read."""
        ids = np.asarray(ids, np.uint64)
        out = np.zeros((len(ids), self.store.meta().get("dim") or self.codec.dim), np.float32)
        found = np.zeros(len(ids), bool)
        for codec_id, (coded_ids, codes) in self.store.load_code_groups().items():
            rows, at = _positions(ids, coded_ids)
            if len(rows):
                out[rows] = self.codecs[codec_id].decode(np.asarray(codes)[at])
                found[rows] = True
        if not found.all():
            for chunk_ids, embeddings in self.store.iter_staging():
                rows, at = _positions(ids, chunk_ids)
                out[rows] = embeddings[at]
                found[rows] = True
        if not found.all():
            raise StoreError(f"{self.path} keeps no vector of item {int(ids[~found][0])}")
        return out

    def install_codec(self, codec: Codec, stats: Callable[[np.ndarray], dict] | None = None) -> None:
        """Add `codec` to the store's set (its first codec, or one more) and turn every staged
        embedding into its code, in ONE transaction: readers and a re-run after a crash see
        either the staged embeddings and no such codec, or the codec and its codes (never the
        codec with its photos still staged). `stats(codes of the staged rows, in id order)`:
        the codec's stats to record with it."""
        fault_point("trained")
        ids, codes = [np.empty(0, np.uint64)], [np.empty((0, codec.code_bytes), np.uint8)]
        for chunk_ids, embeddings in self.store.iter_staging():  # chunk by chunk: only codes accumulate
            ids.append(chunk_ids)
            codes.append(codec.encode(embeddings.astype(np.float32)))
        ids, codes = np.concatenate(ids), np.concatenate(codes)
        with self.store.write() as w:
            w.add_codec(codec.to_bytes(), codec.id, codec.code_bytes)
            if len(ids):
                w.set_codes(ids, codes, codec=codec.id)
            put_codec_stats(w, codec.id, stats(codes) if stats else {"trained_on": codec.config.get("n_train")})
            fault_point("finish_staging_txn")
        if self._codec is None:
            self._codec = codec
        else:
            self._others[codec.id] = codec


def _positions(wanted: np.ndarray, held: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows of `wanted` that `held` holds, their positions in `held`)."""
    order = np.argsort(held, kind="stable")
    at = np.searchsorted(held, wanted, sorter=order).clip(0, max(len(held) - 1, 0))
    if not len(held):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    pos = order[at]
    rows = np.flatnonzero(held[pos] == wanted)
    return rows, pos[rows]
