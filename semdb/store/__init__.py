"""The LMDB store: per-item metadata and fixed-length packed codes, nothing else. It stores
what it is given (items, codes, staged embeddings, the codec's bytes, IVF centroids and
lists); it never runs the codec. docs/notes/STORE-FORMAT.md describes the on-disk layout.

    format         database names, keys, the item record, code segments, IVF list rows
    opening        the LMDB environment (one sparse 1 TiB map), writer.lock, LMDB errors -> StoreError
    migration      the schema check; schema 1 converted, its freed pages reclaimed
    reading        View / ReadView: reads through one transaction, the in-memory lookups
    store          Store: open, read, verify, write()
    batch          WriteBatch: one write transaction
    writer         Writer: items, codes, codec, meta (the operations of a batch)
    item_writes    the item segments a batch rewrites
    code_segments  the code segments a batch writes; reports each one it writes or deletes
    ivf_rows       the IVF list rows: react to the code segments written; load, verify
    recoding       a retrain's pending codec and recode rows, and the switch
    documents      documents kept beside items (a LangChain store's id, text, metadata)
    verify         Store.verify's checks
"""

from .format import SCHEMA_VERSION, Item
from .ivf_rows import AssignLists, StoredIvf
from .opening import DEFAULT_MAP_SIZE, default_store_path
from .store import LmdbHandles, Store
from .writer import Writer

__all__ = [
    "DEFAULT_MAP_SIZE",
    "SCHEMA_VERSION",
    "AssignLists",
    "Item",
    "LmdbHandles",
    "Store",
    "StoredIvf",
    "Writer",
    "default_store_path",
]
