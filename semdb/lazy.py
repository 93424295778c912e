"""Heavy libraries imported on first use: `import semdb` (and every command that needs none of
them) must not pay for them."""

from __future__ import annotations


def faiss():
    """The faiss module (about 0.2 s to import; it also loads its OpenMP and BLAS pools)."""
    import faiss  # noqa: PLC0415

    return faiss
