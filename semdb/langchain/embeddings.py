"""`SemdbClipEmbeddings`: a semdb store's own CLIP model as a LangChain `Embeddings`, both
towers: texts (`embed_documents`, `embed_query`) and image files (`embed_image`, as
LangChain's OpenCLIP embeddings name it), in one space, so a text finds images."""

from __future__ import annotations

import threading

from langchain_core.embeddings import Embeddings

from ..images import load_image


class SemdbClipEmbeddings(Embeddings):
    """CLIP embeddings of `model` (a name, `local-dir:FOLDER` or `hf-hub:REPO`, as `semdb.open`
    takes), or of a store's model (`db`: a semdb Database), or of a loaded semdb Embedder
    (`embedder`). Unit vectors; the model loads on first use."""

    def __init__(self, model: str | None = None, pretrained: str | None = None, *, db=None, embedder=None):
        if sum(x is not None for x in (model, db, embedder)) > 1:
            raise ValueError("give one of model, db or embedder")
        self._model, self._pretrained, self._db, self._embedder = model, pretrained, db, embedder
        self._lock = threading.Lock()  # one load, and torch models are used by one thread at a time

    @property
    def embedder(self):
        """The semdb Embedder (loaded on first use)."""
        if self._embedder is None:
            if self._db is not None:
                self._embedder = self._db.embedder
            else:
                from ..clip.embedder import Embedder  # noqa: PLC0415 (torch and open_clip: loaded on first use)

                self._embedder = Embedder(self._model, self._pretrained)
        return self._embedder

    @property
    def model_id(self) -> dict:
        """The model's identity (name, pretrained, weights digest, dim): what a store binds to."""
        with self._lock:
            return dict(self.embedder.model_id)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        with self._lock:
            return self.embedder.encode_texts(list(texts)).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]

    def embed_image(self, uris: list[str]) -> list[list[float]]:
        """Embeddings of image files (paths), by the image tower."""
        with self._lock:
            emb = self.embedder
            images = [load_image(u, draft_size=emb.image_size) for u in uris]
            return emb.encode_images(images).tolist() if images else []
