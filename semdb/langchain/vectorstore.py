"""`SemdbVectorStore`: a semdb store as a LangChain `VectorStore`, a thin layer over `Database`.

    add_texts / add_documents / add_images / add_embeddings --the Embeddings object-->
        vectors --Database.add_documents: one transaction per call--> items (codes,
        or staged until the store trains its codec) + their documents (store/documents.py)
    similarity_search* / max_marginal_relevance_search* / as_retriever() --the Embeddings
        object--> query vector --Database.search_vectors (the store's own filters)--> hits
        --their documents, the metadata filter--> LangChain Documents

Every call holds the Database's lock (shared by every vector store over it): LangChain's async
methods run these in threads, and a semdb store has one writer (and a Store is not thread-safe).
"""

from __future__ import annotations

import threading
import uuid
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from langchain_core.vectorstores.utils import maximal_marginal_relevance

from ..api import Database
from ..ingest import CodecPolicy
from ..search.request import MAX_K
from ..store.documents import Document as StoredDocument
from .embeddings import SemdbClipEmbeddings

STORE_FILTERS = ("under", "after", "before")  # filter keys the store answers; others: metadata equality
FETCH_GROWTH = 4  # a metadata filter fetches this many hits per one asked for, then this many times more
_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # Database -> the lock its vector stores share
_LOCKS_GUARD = threading.Lock()


def _lock_of(db: Database) -> threading.RLock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(db, threading.RLock())


class SemdbVectorStore(VectorStore):
    """A LangChain vector store over the semdb store `db` (a Database, or a path to open or
    create). `embedding`: any LangChain Embeddings (default: the store's own CLIP model,
    SemdbClipEmbeddings); a store keeps one model's vectors. `model`: the CLIP model to open a
    new store with (as `semdb.open` takes it). `policy`: when the codec is trained (default:
    once 500 items are staged). Search `filter`: `under` (a folder), `after`, `before` (dates
    taken) are the store's; any other key must equal the document's metadata value."""

    def __init__(
        self,
        db: Database | str | Any = None,
        embedding: Embeddings | None = None,
        *,
        model: str | None = None,
        policy: CodecPolicy | None = None,
    ):
        self.db = db if isinstance(db, Database) else Database(db, model=model)
        self.embedding = embedding if embedding is not None else SemdbClipEmbeddings(db=self.db)
        self.policy = policy or CodecPolicy()
        self._lock = _lock_of(self.db)  # vector stores over one Database share it
        self._ids: tuple | None = None  # (store generation, {document id: item id})

    @property
    def embeddings(self) -> Embeddings:
        return self.embedding

    def close(self) -> None:
        self.db.close()

    # --- add ---------------------------------------------------------------------------------
    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict] | None = None,
        *,
        ids: list[str | None] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed `texts` and store them as documents (ids generated where None); a stored id is
        replaced. One transaction: all of them or none."""
        texts = list(texts)
        return self.add_embeddings(zip(texts, self.embedding.embed_documents(texts)), metadatas, ids=ids)

    def add_images(
        self, uris: Sequence[str], metadatas: list[dict] | None = None, *, ids: list[str | None] | None = None
    ) -> list[str]:
        """Store image files as documents, embedded by the embedding's image tower (`embed_image`,
        e.g. SemdbClipEmbeddings'); a document's page_content is its file's path. The item is
        the file's (a later `semdb ingest` of its folder finds it unchanged)."""
        embed_image = getattr(self.embedding, "embed_image", None)
        if embed_image is None:
            raise ValueError(f"{type(self.embedding).__name__} has no embed_image: use SemdbClipEmbeddings")
        uris = [str(u) for u in uris]
        return self.add_embeddings(zip(uris, embed_image(uris)), metadatas, ids=ids, files=uris)

    def add_embeddings(
        self,
        text_embeddings: Iterable[tuple[str, Sequence[float]]],
        metadatas: list[dict] | None = None,
        *,
        ids: list[str | None] | None = None,
        files: Sequence[str | None] | None = None,
    ) -> list[str]:
        """Store (page_content, embedding) pairs computed elsewhere (of this store's model);
        `files`: each one's image file (None: none)."""
        pairs = list(text_embeddings)
        n = len(pairs)
        metadatas = list(metadatas) if metadatas is not None else [{} for _ in range(n)]
        ids = [i or str(uuid.uuid4()) for i in ids] if ids is not None else [str(uuid.uuid4()) for _ in range(n)]
        files = list(files) if files is not None else [None] * n
        if not len(metadatas) == len(ids) == len(files) == n:
            raise ValueError(f"{n} texts but {len(metadatas)} metadatas, {len(ids)} ids and {len(files)} files")
        if not n:
            return []
        docs = [(StoredDocument(i, text, dict(m or {})), f) for (text, _), m, i, f in zip(pairs, metadatas, ids, files)]
        X = np.asarray([v for _, v in pairs], np.float32)
        with self._lock:
            known, first_new = self._item_ids(), self.db.store.meta().get("next_id")
            items = self.db.add_documents(docs, X, self._model_id(), self.policy, known)
            moved = {d: i for d, i in zip(ids, items) if known.get(d) != i}
            known.update(moved)
            # a stored file's item given a new document id may have had another: read the map again
            self._carry_ids(None if any(i < first_new for i in moved.values()) else known)
        return ids

    def _model_id(self) -> dict:
        if isinstance(self.embedding, SemdbClipEmbeddings):
            return self.embedding.model_id
        kind = type(self.embedding)
        return {"name": f"langchain:{kind.__module__}.{kind.__qualname__}", "pretrained": None, "digest": None}

    # --- read, delete ------------------------------------------------------------------------
    def _item_ids(self) -> dict[str, int]:
        """{document id: item id}, read once and then kept up to date by this store's own writes."""
        generation = self.db.store.meta().get("generation")
        if self._ids is None or self._ids[0] != generation:
            self._ids = (generation, self.db.store.document_ids())
        return self._ids[1]

    def _carry_ids(self, known: dict[str, int] | None) -> None:
        """`known` is the map after this store's own write (None: read it again next time). This
        process holds the store's one writer: only its own writes change the map."""
        self._ids = None if known is None else (self.db.store.meta().get("generation"), known)

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The stored documents with these ids, in that order; unknown ids are left out."""
        with self._lock:
            known = self._item_ids()
            items = [known[i] for i in ids if i in known]
            return [self._document(i, d) for i, d in zip(items, self.db.store.documents(items))]

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Remove the documents with these ids (unknown ids are ignored), their items too: one
        transaction."""
        if ids is None:
            raise ValueError("give the ids of the documents to delete")
        with self._lock:
            known = self._item_ids()
            items = sorted({known[i] for i in ids if i in known})
            if items:
                self.db.rm(items)
                for doc_id in ids:
                    known.pop(doc_id, None)
                self._carry_ids(known)
        return True

    def _document(self, item_id: int, doc: StoredDocument | None) -> Document:
        """A LangChain Document of a stored item: its document, else (an item a `semdb ingest`
        added) its path, with the path and item id as metadata."""
        if doc is not None:
            return Document(id=doc.id, page_content=doc.page_content, metadata=doc.metadata)
        item = self.db.item(item_id)
        path = item.path if item else ""
        return Document(page_content=path, metadata={"path": path, "item_id": item_id})

    # --- search ------------------------------------------------------------------------------
    def similarity_search(self, query: str, k: int = 4, filter: dict | None = None, **kwargs: Any) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: dict | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """The k documents nearest `query`, best first, with their cosine similarity."""
        return self.similarity_search_with_score_by_vector(self.embedding.embed_query(query), k, filter, **kwargs)

    def similarity_search_by_vector(
        self, embedding: Sequence[float], k: int = 4, filter: dict | None = None, **kwargs: Any
    ) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score_by_vector(embedding, k, filter, **kwargs)]

    def similarity_search_with_score_by_vector(
        self, embedding: Sequence[float], k: int = 4, filter: dict | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """`kwargs`: Database.search_vectors' options (nprobe, min_score, within)."""
        return [(doc, score) for _, doc, score in self._search(embedding, k, filter, kwargs)]

    def _search(self, embedding, k: int, filter: dict | None, options: dict) -> list[tuple[int, Document, float]]:
        """(item id, Document, score) of the k best hits that pass `filter`."""
        q = np.asarray(embedding, np.float32)[None, :]
        store_filter = {key: v for key, v in (filter or {}).items() if key in STORE_FILTERS}
        equal = {key: v for key, v in (filter or {}).items() if key not in STORE_FILTERS}
        with self._lock:
            total = self.db.count()
            if not total or k <= 0:
                return []
            fetch = min(k * (FETCH_GROWTH if equal else 1), total, MAX_K)
            while True:
                hits = self.db.search_vectors(q, k=fetch, **store_filter, **options)[0]
                docs = self.db.store.documents([h.id for h in hits])
                found = [(h.id, self._document(h.id, d), h.score) for h, d in zip(hits, docs)]
                found = [f for f in found if all(f[1].metadata.get(key) == v for key, v in equal.items())]
                if len(found) >= k or len(hits) < fetch or fetch >= min(total, MAX_K):
                    return found[:k]
                fetch = min(fetch * FETCH_GROWTH, total, MAX_K)

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        return lambda score: min(max((1.0 + score) / 2.0, 0.0), 1.0)  # cosine similarity -> [0, 1]

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        return self.max_marginal_relevance_search_by_vector(
            self.embedding.embed_query(query), k, fetch_k, lambda_mult, filter, **kwargs
        )

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: Sequence[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """The fetch_k nearest, then k of them chosen for relevance and diversity, from the
        vectors the store keeps (decoded codes, or staged embeddings)."""
        with self._lock:
            found = self._search(embedding, max(fetch_k, k), filter, kwargs)
            if not found:
                return []
            vectors = self._stored_vectors([f[0] for f in found])
        q = np.asarray(embedding, np.float32)
        picked = maximal_marginal_relevance(q / max(np.linalg.norm(q), 1e-12), vectors, lambda_mult, k)
        return [found[i][1] for i in picked]

    def _stored_vectors(self, item_ids: list[int]) -> np.ndarray:
        codec = self.db.codec
        if codec is not None:
            ids, codes = self.db.store.load_codes()
            rows = {i: r for r, i in enumerate(ids.tolist())}
            return codec.decode(np.asarray(codes)[[rows[i] for i in item_ids]])
        wanted, out = set(item_ids), {}
        for ids, X in self.db.store.iter_staging():
            out.update((i, x) for i, x in zip(ids.tolist(), X.astype(np.float32)) if i in wanted)
        return np.stack([out[i] for i in item_ids])

    # --- construct ---------------------------------------------------------------------------
    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict] | None = None,
        *,
        ids: list[str] | None = None,
        path=None,
        **kwargs: Any,
    ) -> SemdbVectorStore:
        """A store at `path` (default: $SEMDB_STORE, else the user's data folder) holding `texts`.
        `kwargs`: the constructor's (model, policy)."""
        store = cls(path, embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store
