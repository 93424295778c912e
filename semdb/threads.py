"""The numeric libraries' thread pools (OpenBLAS and OpenMP, numpy's, FAISS's and torch's).

A sum split over threads rounds differently on a different thread count, and k-means and beam
searches turn one flipped near-tie into another codec (of another accuracy: the same images and
seed train a different codec on 2 threads than on one, docs/notes/FIGURES.md). Codec training
therefore runs on one thread (`Codec.train`), so a store's codec depends on its training
embeddings, shape and seed, not on the core count of the machine that happened to train it.

OpenBLAS's thread count is one setting for the whole process, so blocks in different threads
take turns (one lock): otherwise one block's exit would restore the count while another's
training still runs, and the last to exit could leave the process capped for good. Only one
thread at a time can set it (threadpoolctl's rule): while another thread of the process holds
a threadpoolctl limit of its own, that limit is the one numpy's BLAS keeps.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from . import lazy

_lock = threading.RLock()  # re-entrant: a capped bench trains capped codecs in the same thread


@contextmanager
def limited(n: int | None) -> Iterator[None]:
    """Cap every BLAS and OpenMP pool at n threads inside the block (None: leave them)."""
    if n is None:
        yield
        return
    lazy.faiss()  # threadpoolctl caps only the libraries already loaded: FAISS's OpenMP and OpenBLAS
    from threadpoolctl import threadpool_limits  # noqa: PLC0415 - only training caps the pools

    with _lock, threadpool_limits(limits=int(n)):
        yield


def single_threaded(fn):
    """Run fn with every pool capped at one thread (see the module docstring for why)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with limited(1):
            return fn(*args, **kwargs)

    return wrapper
