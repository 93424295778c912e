"""SemdbVectorStore beyond LangChain's suites: documents in the store (verify, rm, export and
import), image documents by the store's CLIP model, filters, MMR, concurrent async calls, and
the ShopSphere pairs searched on codes."""

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("langchain_core")

from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings

import semdb
from semdb.langchain import SemdbClipEmbeddings, SemdbVectorStore

DATA = Path(os.environ.get("SEMDB_SHARED_DATA") or Path(__file__).resolve().parents[3] / "shared" / "data")
SHOPSPHERE = DATA / "embeddings" / "shopsphere_fashionclip_pairs.npz"


def fake_store(path) -> SemdbVectorStore:
    return SemdbVectorStore(str(path), DeterministicFakeEmbedding(size=16))


def test_documents_live_beside_items_and_go_with_them(tmp_path):
    store = fake_store(tmp_path / "s")
    ids = store.add_texts(["one", "two", "three"], [{"n": 1}, {"n": 2}, {"n": 3}], ids=["a", "b", "c"])
    assert ids == ["a", "b", "c"]
    db = store.db
    assert db.count() == 3 and db.store.verify() == []
    assert sorted(it.path for it in db.ls()) == ["doc:a", "doc:b", "doc:c"]
    item_b = db.store.document_ids()["b"]
    db.rm([item_b])  # semdb's own rm removes the document with its item
    assert store.get_by_ids(["a", "b", "c"]) == [
        Document(id="a", page_content="one", metadata={"n": 1}),
        Document(id="c", page_content="three", metadata={"n": 3}),
    ]
    assert db.store.verify() == []
    store.add_texts(["three again"], [{"n": 33}], ids=["c"])  # replaces: the same item
    assert db.count() == 2 and store.get_by_ids(["c"])[0].page_content == "three again"
    store.close()


def test_bad_input_is_one_error_and_changes_nothing(tmp_path):
    store = fake_store(tmp_path / "s")
    store.add_texts(["kept"], ids=["k"])
    with pytest.raises(semdb.errors.InputError, match="not JSON"):
        store.add_texts(["x", "y"], [{"ok": 1}, {"bad": object()}])
    with pytest.raises(semdb.errors.InputError, match="twice"):
        store.add_texts(["x", "y"], ids=["same", "same"])
    assert store.db.count() == 1 and store.db.store.verify() == []
    other = SemdbVectorStore(store.db, DeterministicFakeEmbedding(size=8))  # another dimension
    with pytest.raises(semdb.errors.StoreError):
        other.add_texts(["z"])
    store.close()


def test_metadata_and_store_filters(tmp_path):
    store = fake_store(tmp_path / "s")
    texts = [f"text {i}" for i in range(40)]
    store.add_texts(texts, [{"colour": "red" if i % 10 == 0 else "blue", "i": i} for i in range(40)])
    red = store.similarity_search("text 5", k=10, filter={"colour": "red"})
    assert sorted(d.metadata["i"] for d in red) == [0, 10, 20, 30]  # all four, though 36 blue are nearer
    assert store.similarity_search("text 5", k=3, filter={"colour": "green"}) == []
    assert store.similarity_search("text 5", k=3, filter={"under": str(tmp_path)}) == []  # no file under it
    scored = store.similarity_search_with_relevance_scores("text 7", k=2)
    assert scored[0][0].page_content == "text 7" and 0.99 <= scored[0][1] <= 1.0
    store.close()


def test_mmr_picks_diverse_documents(tmp_path):
    class Fixed(Embeddings):
        vectors = {"q": [1, 0, 0], "a": [1, 0, 0], "a2": [0.99, 0.14, 0], "b": [0.7, 0, 0.71]}

        def embed_documents(self, texts):
            return [self.vectors[t] for t in texts]

        def embed_query(self, text):
            return self.vectors[text]

    store = SemdbVectorStore(str(tmp_path / "s"), Fixed())
    store.add_texts(["a", "a2", "b"], ids=["a", "a2", "b"])
    assert [d.id for d in store.similarity_search("q", k=2)] == ["a", "a2"]
    assert [d.id for d in store.max_marginal_relevance_search("q", k=2, fetch_k=3, lambda_mult=0.3)] == ["a", "b"]
    store.close()


def test_concurrent_async_calls_share_the_one_writer(tmp_path):
    store = fake_store(tmp_path / "s")

    async def work():
        adds = [
            store.aadd_texts([f"doc {i} {j}" for j in range(5)], ids=[f"{i}-{j}" for j in range(5)]) for i in range(8)
        ]
        searches = [store.asimilarity_search("doc 1 1", k=3) for _ in range(8)]
        return await asyncio.gather(*adds, *searches)

    asyncio.run(work())
    assert store.db.count() == 40 and store.db.store.verify() == []
    assert store.similarity_search("doc 3 2", k=1)[0].id == "3-2"
    store.close()


def test_images_by_the_store_clip_model(tmp_path, photos, tiny_model):
    store = SemdbVectorStore(str(tmp_path / "s"), model=tiny_model)
    files = sorted(str(p) for p in photos.iterdir())
    ids = store.add_images(files, [{"name": Path(f).stem} for f in files])
    assert store.db.count() == len(files)
    emb = store.embeddings
    assert isinstance(emb, SemdbClipEmbeddings)
    (hit,) = store.similarity_search_by_vector(emb.embed_image([files[2]])[0], k=1)
    assert hit == Document(id=ids[2], page_content=files[2], metadata={"name": Path(files[2]).stem})
    assert len(store.as_retriever(search_kwargs={"k": 3}).invoke("a cat")) == 3  # text finds images
    store.add_images(files[:1], ids=["renamed"])  # the file's item, under another document id
    assert [d.id for d in store.get_by_ids([ids[0], "renamed"])] == ["renamed"] and store.db.count() == len(files)
    store.add_texts(["a note without a file"], ids=["note"])
    summary = store.db.ingest([photos], prune=True)
    assert summary["unchanged"] == len(files) and not summary.get("pruned")  # the items are the files'
    assert store.get_by_ids(["note"])[0].page_content == "a note without a file"  # kept by prune
    store.close()


def test_export_and_import_carry_documents(tmp_path):
    store = fake_store(tmp_path / "s")
    store.add_texts([f"t{i}" for i in range(30)], [{"i": i} for i in range(30)], ids=[f"d{i}" for i in range(30)])
    from semdb.ingest import CodecPolicy

    store.policy = CodecPolicy(bits=64, train_now=True)
    store.add_texts(["t30"], ids=["d30"])
    assert store.db.codec is not None
    out = tmp_path / "x.parquet"
    store.db.export(out)
    with semdb.open(tmp_path / "copy") as db:
        db.import_parquet([out])
        copy = SemdbVectorStore(db, DeterministicFakeEmbedding(size=16))
        assert copy.get_by_ids(["d3", "d30"]) == store.get_by_ids(["d3", "d30"])
        assert copy.similarity_search("t7", k=1)[0].id == "d7"
    store.close()


@pytest.mark.slow
def test_shopsphere_text_to_image_recall_equals_search_vectors(tmp_path):
    if not SHOPSPHERE.exists():
        pytest.skip("ShopSphere pairs not present")
    z = np.load(SHOPSPHERE)
    images, texts, captions, names = z["image_emb"], z["text_emb"], [str(t) for t in z["text"]], z["image_id"]

    class Captions(Embeddings):
        """The pairs' own text embeddings (FashionCLIP's text tower, computed beforehand)."""

        by_text = dict(zip(captions, texts.tolist()))

        def embed_documents(self, items):
            return [self.by_text[t] for t in items]

        def embed_query(self, text):
            return self.by_text[text]

    store = SemdbVectorStore(str(tmp_path / "s"), Captions())
    ids = [str(n) for n in names]
    store.add_embeddings(zip(ids, images.tolist()), [{"image_id": i} for i in ids], ids=ids)
    assert store.db.codec is not None and store.db.store.staging_count() == 0  # searched on codes
    retriever = store.as_retriever(search_kwargs={"k": 1})
    via_retriever = np.mean([retriever.invoke(c)[0].id == i for c, i in zip(captions, ids)])
    item_of = store.db.store.document_ids()
    hits = store.db.search_vectors(texts, k=1)
    via_search = np.mean([h[0].id == item_of[i] for h, i in zip(hits, ids)])
    print(f"ShopSphere text->image R@1: retriever {via_retriever:.4f}, search_vectors {via_search:.4f}")
    assert via_retriever == via_search and via_retriever > 0.2
    store.close()


@pytest.mark.slow
def test_example_retrieves_photos_with_their_metadata(photos, tmp_path, tiny_model):
    import subprocess
    import sys

    example = Path(__file__).resolve().parents[2] / "examples" / "langchain_rag.py"
    command = [sys.executable, example, photos, "a cat", "--store", tmp_path / "rag", "--model", tiny_model, "-k", "2"]
    for _ in range(2):  # the second run adds nothing twice
        proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    hits = [line for line in proc.stdout.splitlines() if line.startswith(str(photos))]
    assert len(hits) == 2 and all("'taken':" in line for line in hits) and "Photos that answer 'a cat'" in proc.stdout
    with semdb.open(tmp_path / "rag") as db:
        assert db.count() == len(list(photos.iterdir())) and db.store.verify() == []


def test_from_texts_and_every_retriever_search_type(tmp_path):
    store = SemdbVectorStore.from_texts(
        ["alpha", "beta", "gamma"], DeterministicFakeEmbedding(size=16), [{"g": 1}, {"g": 2}, {"g": 1}], path=tmp_path
    )
    assert [d.page_content for d in store.as_retriever(search_kwargs={"k": 1}).invoke("beta")] == ["beta"]
    mmr = store.as_retriever(search_type="mmr", search_kwargs={"k": 2, "fetch_k": 3, "filter": {"g": 1}})
    assert sorted(d.page_content for d in mmr.invoke("alpha")) == ["alpha", "gamma"]
    threshold = store.as_retriever(search_type="similarity_score_threshold", search_kwargs={"score_threshold": 0.99})
    assert [d.page_content for d in threshold.invoke("gamma")] == ["gamma"]
    with pytest.raises(ValueError):
        store.delete()
    store.close()
