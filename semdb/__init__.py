"""semdb: a compressed semantic vector database for image collections.

import semdb
with semdb.open("photos.semdb") as db:
    db.ingest(["./photos"])
    for hit in db.search("a red bicycle", k=5, under="./photos/2023"):
        print(hit.score, hit.path)
"""

from .api import Database, Hit, open
from .codec import Codec
from .errors import SemdbError
from .request import SearchRequest

__all__ = ["Codec", "Database", "Hit", "SearchRequest", "SemdbError", "open"]
__version__ = "0.1.0"
