"""Documents with their own embeddings, stored as items: what the LangChain vector store
(semdb/langchain/) writes through.

    [(Document, image file or None)] + embeddings (n, D) --validated whole, before any write-->
    ONE transaction: each document's item (added, or the item its id already names, updated),
    its code or staged embedding, its document record (store/documents.py) --> the codec
    trained when due, the IVF kept up, as after any ingest

An image document is an item of its file (size, mtime, content hash, size in pixels, date
taken: a later `semdb ingest` of its folder finds it unchanged). A document without a file is
an item too, with the path `doc:ID` (no file: no size, no date taken); `ingest --prune` keeps it.
"""

from __future__ import annotations

import hashlib
import os
import time

import numpy as np

from ..context import StoreContext
from ..errors import InputError, StoreError, display_path
from ..images import content_hash, read_header
from ..store import Item
from ..store.documents import PATHLESS, Document, pack
from . import ivf_upkeep
from .commit import count_drift, stored_rows, stored_vector
from .encode import codec_set
from .records import Vectors
from .training import CodecPolicy, train_if_due


def add_documents(
    ctx: StoreContext,
    docs: list[tuple[Document, str | None]],
    embeddings,
    model_id: dict,
    policy: CodecPolicy = CodecPolicy(),  # noqa: B008  (frozen: one shared default is safe)
    known: dict[str, int] | None = None,
) -> list[int]:
    """Store documents (each with its image file, or None) and their embeddings (n, D) in one
    transaction; returns their item ids. A document whose id is stored replaces that one (same
    item id). `model_id` ({name, pretrained, digest, dim}) names what made the embeddings: a
    store holds one model's. `known`: the store's {document id: item id} when the caller keeps
    it (else read here). InputError, before anything is written, for what cannot be stored."""
    store = ctx.store
    if store.readonly:
        raise StoreError(f"{ctx.path} is open read-only")
    X = _unit_rows(embeddings, len(docs))
    model = {**model_id, "dim": X.shape[1]}
    store.check_model(model)
    if len({doc.id for doc, _ in docs}) != len(docs):
        raise InputError("the same document id is given twice in one call")
    records = [pack(doc) for doc, _ in docs]
    items = [_item(doc, path) for doc, path in docs]
    if len({it.path for it in items}) != len(items):
        raise InputError("the same image file is given twice in one call: one document per file")
    stored = stored_rows(Vectors(embeddings=X), codec_set(ctx, policy))
    by_id = store.document_ids() if known is None else known
    ids = []
    with ctx.write() as w:  # new codes get their IVF lists in this transaction
        if not store.model_id():
            w.set_meta("model_id", model)
        for i, ((doc, _), item, record) in enumerate(zip(docs, items, records)):
            vector = stored_vector(stored, i)
            old = w.get_item(by_id[doc.id]) if doc.id in by_id else w.item_by_path(item.path)
            if old is None:
                id_ = w.add_item(item, **vector)
            else:
                id_ = old.id
                w.update_item(Item(id_, *_fields(item, old)))
                if "code" in vector:
                    w.set_code(id_, vector["code"], vector["codec"])
                else:
                    w.set_embedding(id_, vector["embedding"])
            w.set_document(id_, record)
            ids.append(id_)
        count_drift(w, stored)
    train_if_due(ctx, policy, ingest_ended=True, progress=None)
    ivf_upkeep.maintain(ctx, None)
    return ids


def _fields(item: Item, old: Item) -> tuple:
    """An updated item's fields after its id: the new file's, the old item's `added`."""
    it = item
    return (it.path, it.size, it.mtime_ns, it.hash, it.width, it.height, old.added, it.updated, it.taken)


def _unit_rows(embeddings, n: int) -> np.ndarray:
    X = np.asarray(embeddings, np.float32)
    if X.ndim != 2 or len(X) != n or not X.shape[1]:
        raise InputError(f"expected {n} embeddings (n, D), got an array of shape {X.shape}")
    norms = np.linalg.norm(X, axis=1)
    bad = np.flatnonzero(~np.isfinite(norms) | (norms < 1e-12))
    if len(bad):
        raise InputError(f"embedding {int(bad[0])} is NaN, infinite or all zeros")
    return X / norms[:, None]


def _item(doc: Document, path) -> Item:
    now = time.time()
    if path is None:
        digest = hashlib.blake2b(doc.page_content.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
        return Item.new(PATHLESS + doc.id, 0, 0, "doc:" + digest, 0, 0, now)
    path = os.path.abspath(os.fsdecode(path))
    try:
        st = os.stat(path)
    except OSError as e:
        raise InputError(f"{display_path(path)}: cannot read ({e.strerror})") from None
    header = read_header(path)
    if header is None:
        raise InputError(f"{display_path(path)}: not an image semdb can read")
    taken = header.taken if header.taken is not None else st.st_mtime_ns / 1e9
    return Item.new(path, st.st_size, st.st_mtime_ns, content_hash(path), header.width, header.height, now, taken)
