"""A store's bytes per item with and without LangChain documents, and text->image R@1 through the
LangChain retriever against Database.search_vectors on the same store.

    python bench/langchain_store.py [--data ../shared/data/embeddings/shopsphere_fashionclip_pairs.npz]

The 1,126 ShopSphere (FashionCLIP) image embeddings are stored three ways: plain items
(Database.add_embeddings), documents whose page_content is the image's name, and documents whose
page_content is its caption (metadata {"image_id"} both). Past 500 items each store trains its
codec: everything is searched on codes. Size: data.mdb after a compacting copy (LMDB keeps the
pages staging freed), per item. R@1: each caption's own text embedding as the query, its image
as the answer. The last output line is JSON.
"""

import argparse
import json
import os
import tempfile
from pathlib import Path

import lmdb
import numpy as np
from langchain_core.embeddings import Embeddings

import semdb
from semdb.langchain import SemdbVectorStore

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "embeddings" / "shopsphere_fashionclip_pairs.npz"


class Captions(Embeddings):
    """The pairs' own text embeddings, looked up by caption."""

    def __init__(self, captions, vectors):
        self.by_text = dict(zip(captions, vectors.tolist()))

    def embed_documents(self, texts):
        return [self.by_text[t] for t in texts]

    def embed_query(self, text):
        return self.by_text[text]


def compacted_bytes(path: str) -> int:
    env = lmdb.open(path, readonly=True, lock=False, max_dbs=32)
    out = tempfile.mkdtemp()
    env.copy(out, compact=True)
    env.close()
    return os.path.getsize(os.path.join(out, "data.mdb"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    args = parser.parse_args()
    z = np.load(args.data)
    images, texts = z["image_emb"], z["text_emb"]
    captions, names = [str(t) for t in z["text"]], [str(n) for n in z["image_id"]]
    work = tempfile.mkdtemp()
    result = {"items": len(names)}
    with semdb.open(os.path.join(work, "plain")) as db:
        db.add_embeddings([f"/photos/{n}" for n in names], images, model="fashion-clip")
        result["recall_at_1_search_vectors_plain"] = float(
            np.mean([h[0].path == f"/photos/{n}" for h, n in zip(db.search_vectors(texts, k=1), names)])
        )
    result["bytes_per_item_plain"] = round(compacted_bytes(os.path.join(work, "plain")) / len(names), 1)
    for kind, contents in (("names", names), ("captions", captions)):
        store = SemdbVectorStore(os.path.join(work, kind), Captions(captions, texts))
        store.add_embeddings(zip(contents, images.tolist()), [{"image_id": n} for n in names], ids=names)
        retriever = store.as_retriever(search_kwargs={"k": 1})
        item_of = store.db.store.document_ids()
        hits = store.db.search_vectors(texts, k=1)
        result[f"recall_at_1_retriever_{kind}"] = float(
            np.mean([retriever.invoke(c)[0].id == n for c, n in zip(captions, names)])
        )
        result[f"recall_at_1_search_vectors_{kind}"] = float(
            np.mean([h[0].id == item_of[n] for h, n in zip(hits, names)])
        )
        result["coded"] = store.db.store.staging_count() == 0 and store.db.codec is not None
        store.close()
        result[f"bytes_per_item_documents_{kind}"] = round(compacted_bytes(os.path.join(work, kind)) / len(names), 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
