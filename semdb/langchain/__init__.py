"""semdb for LangChain (`pip install 'semdb[langchain]'`): a store as a `VectorStore` and
retriever, and its CLIP model as `Embeddings`.

    from semdb.langchain import SemdbVectorStore
    store = SemdbVectorStore("photos.semdb")                 # the store's own CLIP model
    store.add_images(["a.jpg", "b.jpg"], [{"album": "x"}, {"album": "y"}])
    store.as_retriever(search_kwargs={"k": 3}).invoke("a red bicycle")
"""

try:
    import langchain_core  # noqa: F401  (the optional dependency, checked first)
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("semdb.langchain needs langchain-core: pip install 'semdb[langchain]'") from e

from .embeddings import SemdbClipEmbeddings
from .vectorstore import SemdbVectorStore

__all__ = ["SemdbClipEmbeddings", "SemdbVectorStore"]
