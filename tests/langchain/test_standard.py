"""LangChain's own conformance suites (langchain-tests), unmodified, run against semdb:
the vector store (sync and async), its as_retriever(), and the store's CLIP embeddings."""

import pytest

pytest.importorskip("langchain_tests")

from langchain_core.documents import Document
from langchain_tests.integration_tests import (
    EmbeddingsIntegrationTests,
    RetrieversIntegrationTests,
    VectorStoreIntegrationTests,
)

from semdb.langchain import SemdbClipEmbeddings, SemdbVectorStore


class TestSemdbVectorStore(VectorStoreIntegrationTests):
    @pytest.fixture()
    def vectorstore(self, tmp_path):
        store = SemdbVectorStore(str(tmp_path / "store"), self.get_embeddings())
        try:
            yield store
        finally:
            store.close()

    @property
    def has_async(self) -> bool:
        return True


TEXTS = ["a red bicycle", "a blue car", "a green tree", "a yellow boat", "a black cat", "a white dog"]


def _retriever(k: int = 4):
    """as_retriever() of a store holding TEXTS (the store a test class made)."""
    return TestSemdbRetriever.store.as_retriever(search_kwargs={"k": k})


class TestSemdbRetriever(RetrieversIntegrationTests):
    store: SemdbVectorStore

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _store(cls, tmp_path_factory):
        store = SemdbVectorStore(
            str(tmp_path_factory.mktemp("retriever") / "store"), VectorStoreIntegrationTests.get_embeddings()
        )
        store.add_documents([Document(page_content=t, metadata={"n": i}) for i, t in enumerate(TEXTS)])
        cls.store = store
        yield
        store.close()

    @property
    def retriever_constructor(self):
        return _retriever

    @property
    def retriever_query_example(self) -> str:
        return "a red bicycle"


class TestSemdbClipEmbeddings(EmbeddingsIntegrationTests):
    model_name: str

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _model(cls, tiny_model):
        cls.model_name = tiny_model

    @property
    def embeddings_class(self):
        return SemdbClipEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model": self.model_name}
