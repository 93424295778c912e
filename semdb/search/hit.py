"""One search result, from one store (Searcher), a running server (serve/client.py) or a sharded
search (semdb/cluster.py), and its one JSON form (`semdb query --json`, GET /api/search, the
cluster's GET /api/search):

    {"path", "score", "id"}          always, in this order
    + "time"                         a video frame's: seconds into the video
    + "shard", "store"               a sharded search's: which store the item is in
"""

from __future__ import annotations

from typing import NamedTuple


class Hit(NamedTuple):
    """One search result: the item's `path`, its `score` (cosine between the query and the
    item's reconstruction from its code; higher is closer) and its `id` in its store. A video
    frame's hit carries the video's path and `frame_ms`, the frame's time in the video (None for
    a photo); a sharded search's, the `shard` and `store` holding the item."""

    path: str
    score: float
    id: int  # the item's id in its store (ids are store-local)
    frame_ms: int | None = None  # a video frame's time in its video (path: the video's)
    shard: int | None = None  # a sharded search's: index of the item's store in the shard list
    store: str | None = None  # that store's path

    def to_json(self) -> dict:
        """{"path", "score", "id"} (the score rounded to 6 decimals), + "time" (seconds) for a
        video frame, + "shard", "store" for a sharded search's hit."""
        record = {"path": self.path, "score": round(float(self.score), 6), "id": int(self.id)}
        if self.frame_ms is not None:
            record["time"] = self.frame_ms / 1000
        if self.shard is not None:
            record.update(shard=self.shard, store=self.store)
        return record

    @classmethod
    def from_json(cls, record: dict) -> Hit:
        """The hit to_json wrote (KeyError, TypeError or ValueError for anything else)."""
        seconds = record.get("time")
        shard = record.get("shard")
        return cls(
            str(record["path"]),
            float(record["score"]),
            int(record["id"]),
            None if seconds is None else round(float(seconds) * 1000),
            None if shard is None else int(shard),
            None if shard is None else str(record["store"]),
        )
