"""semdb: a compressed semantic vector database for image collections.

import semdb
with semdb.open("photos.semdb") as db:
    db.ingest(["./photos"])
    for hit in db.query("a red bicycle", k=5):
        print(hit.score, hit.path)
"""

from .api import Database, Hit, open
from .codec import Codec
from .errors import SemdbError

__all__ = ["Codec", "Database", "Hit", "SemdbError", "open"]
__version__ = "0.1.0"
