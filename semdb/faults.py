"""Fault injection for the reliability tests (tests/ingest/test_reliability.py, docs/notes/RELIABILITY.md).

semdb calls ``fault_point(name)`` at the stage boundaries of an ingest. Unless the environment
variable SEMDB_FAULT_POINT is set, that is one dict lookup and nothing happens. The variable
holds comma-separated entries:

    NAME:N          SIGKILL this process the N-th time point NAME is reached (kill -9: no
                    cleanup, no finally blocks, no atexit; exactly what a crash or an OOM kill does)
    NAME:delay=S    sleep S seconds every time NAME is reached (to hold a stage open, e.g. a
                    write transaction, while another process runs)

Points (where they are called):
    decode              ingest/decode: a worker thread is decoding one image
    embedded            ingest/encode: a batch has been through CLIP, before its transaction begins
    batch_txn           ingest/commit: inside a batch's write transaction, after its writes, before commit
    batch_committed     ingest/commit: right after a batch's commit, before the next batch
    classify_txn        ingest/commit: inside the transaction that records moved/duplicate/touched files
    video_txn           ingest/videos: inside a video's transaction (its old items deleted, every kept
                        frame added), before commit
    train               ingest/training: the staged embeddings are read, the codec is being trained
    trained             context: the codec is trained, not yet installed
    finish_staging_txn  context: inside install_codec's transaction (codec installed, codes
                        written, staging deleted), before commit
    prune_txn           ingest/commit: inside the prune transaction, before commit
    rm_txn              catalog: inside `rm`'s one transaction (every removal done), before commit
    import_txn          transfer: inside an import transaction (up to 4096 rows), before commit
    pending_txn         ingest/retrain: inside the transaction that commits the new (pending)
                        codec and its training sample's codes
    recode_txn          ingest/retrain: inside a batch of codes under the pending codec
    switch_txn          ingest/retrain: inside the switch to the pending codec
    migrate_txn         store: inside the transaction converting a schema-1 store, before commit
    reclaim_copied      store: the compacted copy of data.mdb is written and synced, not yet
                        renamed over data.mdb
"""

from __future__ import annotations

import os
import signal
import threading
import time

ENV = "SEMDB_FAULT_POINT"

_lock = threading.Lock()
_counts: dict[str, int] = {}
_parsed: tuple[str, dict] = ("", {})


def fault_point(name: str) -> None:
    """Kill or delay this process here if SEMDB_FAULT_POINT names `name` (see module doc)."""
    spec = os.environ.get(ENV)
    if spec:
        _hit(spec, name)


def _plan(spec: str) -> dict:
    global _parsed
    if _parsed[0] != spec:
        plan = {}
        for entry in filter(None, (e.strip() for e in spec.split(","))):
            point, _, arg = entry.partition(":")
            if arg.startswith("delay="):
                plan[point] = ("delay", float(arg[len("delay=") :]))
            else:
                plan[point] = ("kill", int(arg or 1))
        _parsed = (spec, plan)
    return _parsed[1]


def _hit(spec: str, name: str) -> None:
    action = _plan(spec).get(name)
    if action is None:
        return
    kind, arg = action
    if kind == "delay":
        time.sleep(arg)
        return
    with _lock:  # decode runs in several threads
        _counts[name] = n = _counts.get(name, 0) + 1
    if n == arg:
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)  # the signal is delivered asynchronously; never run past the point


def reset() -> None:
    """Forget hit counts (for a process forked from one that already counted hits)."""
    with _lock:
        _counts.clear()
