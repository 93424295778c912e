"""semdb: a compressed semantic vector database for image collections.

import semdb
with semdb.open("photos.semdb") as db:
    db.ingest(["./photos"])
    for hit in db.search("a red bicycle", k=5, under="./photos/2023"):
        print(hit.score, hit.path)
"""

import importlib

__all__ = ["Codec", "Database", "Hit", "SearchRequest", "SemdbError", "open"]
__version__ = "0.1.0"

# Loaded on first use, so that importing one layer (semdb.codec, semdb.search) loads only it.
_HOMES = {
    "Codec": "semdb.codec",
    "Database": "semdb.api",
    "Hit": "semdb.search",
    "SearchRequest": "semdb.search",
    "SemdbError": "semdb.errors",
    "open": "semdb.api",
}


def __getattr__(name):
    if name not in _HOMES:
        raise AttributeError(f"module 'semdb' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)


def __dir__():
    return sorted([*globals(), *__all__])
