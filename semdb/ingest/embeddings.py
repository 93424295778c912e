"""Bring your own embeddings: CLIP image embeddings computed elsewhere, stored like an ingest's.

    source (clip-retrieval folder, .npz, or .npy + paths file) --read_embeddings-->
    EmbeddingSet(paths, embeddings) --validated whole, before any write--> batches of
    4096 --commit (codes, or staged until the codec is due)--> store

clip-retrieval's layout: DIR/img_emb/img_emb_N.npy beside DIR/metadata/metadata_N.parquet
(an `image_path` column), row-aligned. A .npz holds an embeddings array (`image_emb`,
`img_emb`, `embeddings` or `emb`) and a paths array (`image_path`, `paths` or `path`).
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..context import StoreContext
from ..errors import InputError, StoreError, display_path
from ..progress import Progress, report
from . import ivf_upkeep
from .commit import commit_batch
from .encode import codec_set
from .records import DecodedImage, EmbeddedBatch, EmbedJob, FileState, IngestSummary, Vectors
from .training import CodecPolicy, retrain_advice, train_if_due

BATCH = 4096  # embeddings per transaction
EMBEDDING_KEYS = ("image_emb", "img_emb", "embeddings", "emb")
PATH_KEYS = ("image_path", "paths", "path")


@dataclass(frozen=True)
class EmbeddingSet:
    paths: list[str]
    embeddings: np.ndarray  # float32 (n, D), unit rows


def read_embeddings(source, paths_file=None) -> EmbeddingSet:
    """Read and validate embeddings and their image paths (one-line InputError otherwise)."""
    source = Path(source)
    shown = display_path(source)
    if not source.exists():
        raise InputError(f"{shown}: no such file or folder")
    if source.is_dir():
        paths, X = _clip_retrieval(source)
    elif source.suffix == ".npz":
        with np.load(source, allow_pickle=False) as z:
            emb_key = next((k for k in EMBEDDING_KEYS if k in z.files), None)
            path_key = next((k for k in PATH_KEYS if k in z.files), None)
            if emb_key is None or (path_key is None and paths_file is None):
                raise InputError(
                    f"{shown}: expected arrays {'/'.join(EMBEDDING_KEYS)} and {'/'.join(PATH_KEYS)} "
                    f"(it has {', '.join(z.files) or 'none'})"
                )
            X = z[emb_key]
            paths = [str(p) for p in z[path_key]] if path_key else None
    elif source.suffix == ".npy":
        X = np.load(source, allow_pickle=False)
        paths = None
    else:
        raise InputError(f"{shown}: give a clip-retrieval folder (img_emb/, metadata/), a .npz or a .npy")
    if paths_file is not None:
        try:
            paths = Path(paths_file).read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise InputError(f"{display_path(paths_file)}: cannot read ({e.strerror})") from None
    if paths is None:
        raise InputError(f"{shown}: a .npy holds no paths; give --paths FILE (one image path per line)")
    return validated(paths, X, shown)


def _clip_retrieval(folder: Path) -> tuple[list[str], np.ndarray]:
    import pyarrow.parquet as pq  # noqa: PLC0415  (pyarrow: only for a clip-retrieval folder)

    number = lambda p: int(re.findall(r"(\d+)", p.stem)[-1]) if re.findall(r"(\d+)", p.stem) else -1  # noqa: E731
    embs = sorted((folder / "img_emb").glob("img_emb_*.npy"), key=number)
    if not embs:
        raise InputError(f"{display_path(folder)}: no img_emb/img_emb_N.npy (clip-retrieval's layout)")
    paths, parts = [], []
    for emb in embs:
        meta = folder / "metadata" / f"metadata_{number(emb)}.parquet"
        if not meta.exists():
            raise InputError(f"{display_path(emb)}: its metadata file {display_path(meta)} is missing")
        try:
            column = pq.read_table(meta, columns=["image_path"]).column("image_path").to_pylist()
        except Exception as e:  # noqa: BLE001 - pyarrow raises many types for bad files
            raise InputError(f"{display_path(meta)}: no readable image_path column ({type(e).__name__})") from None
        X = np.load(emb, allow_pickle=False)
        if len(X) != len(column):
            raise InputError(f"{display_path(emb)} has {len(X)} rows but {display_path(meta)} has {len(column)}")
        paths += column
        parts.append(X)
    return paths, np.concatenate(parts) if len(parts) > 1 else parts[0]


def validated(paths: Sequence, X, shown: str) -> EmbeddingSet:
    X = np.asarray(X)
    if X.ndim != 2 or not len(X) or not np.issubdtype(X.dtype, np.floating):
        raise InputError(f"{shown}: expected a non-empty (n, D) float array of embeddings, got {X.dtype} {X.shape}")
    if len(paths) != len(X):
        raise InputError(f"{shown}: {len(X)} embeddings but {len(paths)} paths; they must be row-aligned")
    X = X.astype(np.float32)
    norms = np.linalg.norm(X, axis=1)
    bad = np.flatnonzero(~np.isfinite(norms) | (norms < 1e-12))
    if len(bad):
        raise InputError(f"{shown}: row {int(bad[0])} is NaN, infinite or all zeros ({len(bad)} such rows)")
    paths = [os.path.abspath(os.fsdecode(p)) if p else "" for p in paths]
    if "" in paths:
        raise InputError(f"{shown}: row {paths.index('')} has an empty path")
    if len(set(paths)) != len(paths):
        seen = set()
        dup = next(p for p in paths if p in seen or seen.add(p))
        raise InputError(f"{shown}: path {display_path(dup)} appears twice")
    return EmbeddingSet(paths, X / norms[:, None])


def add_embeddings(
    ctx: StoreContext,
    data: EmbeddingSet,
    model_id: dict | None = None,
    policy: CodecPolicy = CodecPolicy(),  # noqa: B008  (frozen: one shared default is safe)
    progress: Progress | None = None,
) -> IngestSummary:
    """Store precomputed CLIP image embeddings. `model_id` names the CLIP model they come from
    ({"name", "pretrained"}; its weights digest is recorded by the first write that loads the
    model: here when open() named it, else an ingest or retrain); a
    store that already has a model must be given embeddings of that model. Paths already in
    the store are left as they are."""
    store = ctx.store
    if store.readonly:
        raise StoreError(f"{ctx.path} is open read-only")
    start = time.perf_counter()
    dim = data.embeddings.shape[1]
    stored = store.model_id()
    model = {"name": None, "pretrained": None, "digest": None, **(model_id or {}), "dim": dim}
    if stored:
        if model_id is None:
            model = {**stored, "dim": dim}
        store.check_model(model)
    elif not model["name"]:
        raise InputError(
            "name the CLIP model the embeddings come from (--model, --pretrained): the store uses it for text queries"
        )
    summary = IngestSummary()
    todo = []
    for path, x in zip(data.paths, data.embeddings):
        if store.item_by_path(path) is not None:
            summary.unchanged += 1
        else:
            todo.append((path, x))
    if todo and not stored:
        with store.write() as w:
            w.set_meta("model_id", model)
    if todo and ctx.model_named:
        ctx.bind_model()  # the model named at open(): record its weights digest now
    for i in range(0, len(todo), BATCH):
        part = todo[i : i + BATCH]
        jobs = tuple(
            EmbedJob(_file_state(path), "path:" + hashlib.blake2b(os.fsencode(path), digest_size=16).hexdigest())
            for path, _ in part
        )
        batch = EmbeddedBatch(
            jobs, tuple(DecodedImage(None) for _ in part), Vectors(embeddings=np.stack([x for _, x in part]))
        )
        commit_batch(ctx, batch, codec_set(ctx, policy), summary)
        report(progress, "adding embeddings", i + len(part), len(todo))
        summary.codec_trained |= train_if_due(ctx, policy, ingest_ended=False, progress=progress)
    summary.codec_trained |= train_if_due(ctx, policy, ingest_ended=True, progress=progress)
    ivf_upkeep.maintain(ctx, progress)
    summary.items, summary.staged = store.count(), store.staging_count()
    summary.retrain_advice = retrain_advice(store.meta(), summary.items)
    summary.seconds = round(time.perf_counter() - start, 3)
    return summary


def _file_state(path: str) -> FileState:
    """The file's size and mtime if it is here (a later `semdb ingest` then skips it), else 0."""
    try:
        st = os.stat(path)
        return FileState(path, st.st_size, st.st_mtime_ns, None)
    except OSError:
        return FileState(path, 0, 0, None)
