"""Search over a store's codes, top to bottom:

    request.py   SearchRequest: what is asked (terms, vectors, like, filters, k), checked once
    searcher.py  Searcher: a request -> one query vector -> the index -> Hits
    hit.py       Hit: one result (one store's, a server's or a sharded search's) and its JSON form
    index.py     codec_index: the search structure over one codec's codes
    adc.py       ADC scan kernels (FAISS fast-scan / exact LUT) and the exact rerank
    ivf.py       IVF over the codes: scan the nearest lists instead of every code

numpy in, numpy out below the Searcher; the codec knows nothing of indexes or the store.
"""

from .adc import AdcIndex, Candidates, FlatIndex
from .hit import Hit
from .index import codec_index
from .ivf import IvfIndex
from .request import DEFAULT_K, MAX_K, SearchRequest, Term, Where
from .searcher import Searcher

__all__ = [
    "AdcIndex",
    "Candidates",
    "DEFAULT_K",
    "FlatIndex",
    "Hit",
    "IvfIndex",
    "MAX_K",
    "SearchRequest",
    "Searcher",
    "Term",
    "Where",
    "codec_index",
]
