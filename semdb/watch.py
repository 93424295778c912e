"""Keep a store current with folders as files arrive: `semdb watch DIR` and `semdb serve --watch DIR`.

    watchfiles (inotify; polling with `poll`) --changed paths--> pending, each until its size
    and mtime hold still for `settle` seconds (a file being copied is not read half written)
    --settled, `batch_files` at a time--> Database.ingest(those paths): the ingest pipeline
    as it is (scan, classify: touched / moved / duplicate, decode, CLIP, one transaction per
    `batch_size`, failures remembered, videos) --then, once nothing is pending--> deleted
    paths that are still gone: their items removed (catalog.remove, what `semdb rm` does)

A full rescan (ingest of the folders, then the items under them whose files are gone
removed) runs at start, so a watcher stopped by kill -9 or a power cut catches up by itself,
and every `rescan` seconds for what no event reports (a network mount written by another
machine). A folder that is missing or empty while the store holds items under it is not
pruned: an unmounted disk looks like that, and its items are kept until it is back.

The store is opened for writing only while there is work (the writer lock is free in between,
so `semdb ingest` or `semdb rm` can run beside a watcher); when another process holds it the
watcher waits for it, as `semdb ingest --wait` does. A stop (the `stop` event: Ctrl-C, SIGTERM,
the server stopping) is seen between two committed batches: the batch in hand is either
committed whole or abandoned (each is one transaction), and the next start catches up.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import watchfiles

from . import catalog
from .errors import InputError, StoreLockedError, display_path
from .images import IMAGE_EXTENSIONS, discover
from .store import Store
from .video.files import VIDEO_EXTENSIONS

WATCHED_EXTENSIONS = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
TICK_MS = 1000  # how often the loop wakes without events: settle checks, the rescan clock, the stop
POLL_DELAY_MS = 2000  # between two walks of the folders with `poll`
FAILURES_SAID = 5  # failures named per batch (all are remembered in the store)
RETRY_AFTER = 30.0  # seconds before the files of a failed round are tried again
LOCK_RETRY = 1.0  # seconds between two tries of a store another process writes


@dataclass(frozen=True)
class WatchOptions:
    rescan: float = 300.0  # seconds between full rescans (0: at start only)
    poll: bool = False  # poll the folders instead of inotify (network mounts, some containers)
    settle: float = 2.0  # seconds a file's size and mtime must hold before it is read
    debounce_ms: int = 1000  # watchfiles groups the events of a burst over this long
    batch_files: int = 256  # settled files per ingest call (each commits every batch_size)
    batch_size: int = 32  # images per CLIP batch and per commit (as `semdb ingest`)
    workers: int | None = None  # decoding threads
    max_megapixels: float | None = 100.0

    def __post_init__(self):
        if self.rescan < 0 or self.settle < 0:
            raise InputError("--rescan and --settle are seconds, 0 or more")
        if self.batch_files < 1 or self.batch_size < 1:
            raise InputError("--batch-files and --batch-size are 1 or more")


@dataclass
class WatchStatus:
    """What the watcher is doing (read by the server's /api/status)."""

    state: str = "starting"  # starting, scanning, indexing, waiting (for another writer), idle, stopped
    pending: int = 0  # files seen changed that are not in the store yet
    added: int = 0  # files added or updated since the start
    removed: int = 0  # items removed since the start
    failed: int = 0  # files that could not be read (remembered: retried when they change)
    rescans: int = 0
    error: str | None = None  # the last cycle's error, if it failed (it is tried again)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class Stopped(Exception):
    """The stop event was set: raised between two commits to leave an ingest early."""


@dataclass
class _Pending:
    size: int
    mtime_ns: int
    since: float  # when size and mtime were last seen to change


@dataclass
class _Changes:
    """Paths seen changed, waiting to settle; paths seen deleted, waiting for the adds."""

    waiting: dict = field(default_factory=dict)  # path -> _Pending
    deleted: set = field(default_factory=set)

    def note(self, changes, now: float) -> None:
        for change, path in changes:
            if change == watchfiles.Change.deleted and not os.path.lexists(path):
                self.waiting.pop(path, None)
                self.deleted.add(path)
            elif os.path.isdir(path):  # a folder moved or copied in: the files in it so far wait
                if change != watchfiles.Change.added:
                    continue  # (a folder's own change: its files have their own events)
                with contextlib.suppress(InputError):  # (gone again); later ones have their own events
                    for f in discover([path]):
                        self.deleted.discard(os.fsdecode(f))
                        self.waiting.setdefault(os.fsdecode(f), _Pending(-1, -1, now))
            else:
                self.deleted.discard(path)
                self.waiting.setdefault(path, _Pending(-1, -1, now))

    def retry(self, paths, at: float) -> None:
        """Wait for `paths` again, to be ready from `at` (after a failed round)."""
        for path in paths:
            self.waiting.setdefault(path, _Pending(-1, -1, at))

    def settled(self, now: float, settle: float, limit: int) -> list[str]:
        """Up to `limit` waiting paths whose size and mtime held for `settle` seconds, oldest
        first; the ones gone meanwhile become deletions."""
        ready = []
        for path, p in list(self.waiting.items()):
            try:
                st = os.stat(path)
            except OSError:
                del self.waiting[path]
                self.deleted.add(path)
                continue
            if (st.st_size, st.st_mtime_ns) != (p.size, p.mtime_ns):
                p.size, p.mtime_ns, p.since = st.st_size, st.st_mtime_ns, max(now, p.since)
            elif now - p.since >= settle and len(ready) < limit:
                ready.append(path)
        for path in ready:
            del self.waiting[path]
        return ready


def wanted(change, path: str) -> bool:
    """An image or video file by its extension, or a folder (a folder moved in brings files no
    event names; a folder deleted takes its items along); never a hidden name (a copy tool's
    temporary file), as ingest skips them. (A deleted folder whose name has a dot in it is left
    to the next rescan.)"""
    name = os.path.basename(path)
    if name.startswith("."):
        return False
    ext = os.path.splitext(name)[1][1:].lower()
    if ext in WATCHED_EXTENSIONS:
        return True
    if change == watchfiles.Change.deleted:
        return not ext
    return os.path.isdir(path)


class Watcher:
    """Watches `folders` and keeps the store at `store` current with them (see the module).

    open() once (it waits for the store's writer lock, creates a new store and binds its
    model), then run(stop) until `stop` is set; status is readable from any thread."""

    def __init__(
        self,
        store,
        folders,
        options: WatchOptions = WatchOptions(),
        *,
        model: str | None = None,
        pretrained: str | None = None,
        threads: int | None = None,
        say=lambda line: None,
    ):
        self.folders = [Path(os.path.abspath(os.path.expanduser(f))) for f in folders]
        if not self.folders:
            raise InputError("give the folders to watch")
        for folder in self.folders:
            if not folder.is_dir():
                raise InputError(f"{display_path(folder)}: not a folder (watch folders, not files)")
        self.store_path = store
        self.options = options
        self.status = WatchStatus()
        self.embedder = None  # the CLIP model, loaded once and handed to each cycle's Database
        self._model = (model, pretrained, threads)
        self._say = say
        self._keep: Store | None = None  # holds the LMDB environment (and its caches) between cycles
        self._changes = _Changes()
        self._last_rescan = None

    # --- the store, opened for each cycle of work -----------------------------------------------
    @contextlib.contextmanager
    def _database(self, stop: threading.Event | None):
        from .api import Database  # noqa: PLC0415 - api imports the ingest pipeline: a cycle needs it, import semdb does not

        model, pretrained, threads = self._model
        state, waited = self.status.state, False
        while True:
            try:
                db = Database(
                    self.store_path, model=model, pretrained=pretrained, threads=threads, embedder=self.embedder
                )
                break
            except StoreLockedError as e:
                if not waited:
                    self._say(f"watch: {e}")
                    self.status.state, waited = "waiting", True
                if stop is None:
                    time.sleep(LOCK_RETRY)
                elif stop.wait(LOCK_RETRY):
                    raise Stopped from None
        self.status.state = state
        try:
            if self._keep is None:  # the environment stays open (read-write) between cycles
                self._keep = Store(db.path, readonly=True)
            yield db
            if db.model_loaded:
                self.embedder = db.embedder
        finally:
            db.close()

    def open(self) -> None:
        """Open the store once (creating it, waiting for another writer), and load and bind
        its model: a server opened after this shares the environment and the model."""
        with self._database(None) as db:
            if not db.store.model_id():
                db.ingest([])  # a new store: records its model (and nothing else)
            self.embedder = db.embedder

    def close(self) -> None:
        if self._keep is not None:
            self._keep.close()
            self._keep = None

    # --- the loop ---------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Watch until `stop` is set: the rescan first, then events, rescans when due."""
        if self._keep is None:
            self.open()
        try:
            events = watchfiles.watch(
                *self.folders,
                watch_filter=wanted,
                debounce=self.options.debounce_ms,
                stop_event=stop,
                rust_timeout=TICK_MS,
                yield_on_timeout=True,
                force_polling=self.options.poll,
                poll_delay_ms=POLL_DELAY_MS,
                raise_interrupt=False,
                ignore_permission_denied=True,
            )
            for changes in events:  # (the first: armed before the rescan, so nothing is missed)
                self._changes.note(changes, time.monotonic())
                due = self._last_rescan is None or (
                    self.options.rescan and time.monotonic() - self._last_rescan >= self.options.rescan
                )
                self._cycle(stop, rescan=due)
                if stop.is_set():
                    break
        except Stopped:
            pass
        finally:
            self.status.state = "stopped"

    def _cycle(self, stop: threading.Event, rescan: bool) -> None:
        """One round of work; an error is reported and the round is tried again later."""
        try:
            if rescan:
                self.rescan(stop)
            self._ingest_settled(stop)
            self._remove_deleted(stop)
            self.status.error = None
        except (Stopped, KeyboardInterrupt):
            raise Stopped from None
        except Exception as e:  # e.g. a full disk: keep watching, say why, try again
            self.status.error = f"{type(e).__name__}: {e}"
            self._say(f"watch: {self.status.error} (tried again at the next change or rescan)")
            self._last_rescan = time.monotonic() if rescan else self._last_rescan
        finally:
            self.status.pending = len(self._changes.waiting)
            self.status.state = "idle"

    def rescan(self, stop: threading.Event) -> None:
        """Ingest the folders whole (unchanged files cost a stat), then prune under them."""
        self.status.state = "scanning"
        with self._database(stop) as db:
            present = [f for f in self.folders if f.is_dir()]
            summary = db.ingest(present, **self._ingest_options(stop)) if present else {}
            self._counted(summary)
            self._said(summary, "rescan")
            for folder in self.folders:
                self._prune_under(db, folder)
        self._last_rescan = time.monotonic()
        self.status.rescans += 1

    def _prune_under(self, db, folder: Path) -> None:
        """Remove the items under `folder` whose files are gone, unless the folder itself is
        missing or empty (unmounted?): then say so and keep them."""
        items = db.ls(under=str(folder))
        gone = [it.id for it in items if not os.path.lexists(it.path)]
        if not gone:
            return
        if len(gone) == len(items) and (not folder.is_dir() or not any(os.scandir(folder))):
            self._say(f"watch: {display_path(folder)} is missing or empty: its {len(items)} items are kept")
            return
        catalog.remove(db.store, gone)
        self.status.removed += len(gone)
        self._say(f"watch: removed {len(gone)} items whose files are gone")

    def _ingest_settled(self, stop: threading.Event) -> None:
        while True:
            ready = self._changes.settled(time.monotonic(), self.options.settle, self.options.batch_files)
            self.status.pending = len(ready) + len(self._changes.waiting)
            if not ready:
                return
            self.status.state = "indexing"
            started = time.perf_counter()
            try:
                with self._database(stop) as db:
                    summary = self._ingest_present(db, ready, stop)
            except Exception:  # (the error is said by _cycle) these files are tried again later
                self._changes.retry(ready, time.monotonic() + RETRY_AFTER)
                raise
            self._counted(summary)
            self._said(summary, "indexed", time.perf_counter() - started)

    def _said(self, summary: dict, what: str, seconds: float | None = None) -> None:
        """One line on what an ingest call did, and its first failures (when it did anything)."""
        if not any(summary.get(k) for k in ("new", "changed", "moved", "failed")):
            return  # (a new folder, say, whose files come with their own events)
        took = "" if seconds is None else f" in {seconds:.1f} s"
        self._say(
            f"watch: {what}: {summary.get('new', 0) + summary.get('changed', 0)} new or changed files, "
            f"{summary.get('moved', 0)} moved, {summary.get('failed', 0)} failed{took}; "
            f"{len(self._changes.waiting)} waiting"
        )
        for failure in summary.get("failures", [])[:FAILURES_SAID]:
            self._say(f"watch: {failure['path']}: {failure['reason']}")

    def _ingest_present(self, db, paths: list[str], stop) -> dict:
        """db.ingest(paths) of those still there (a file may go between its event and now)."""
        for _ in range(3):
            present = [p for p in paths if os.path.lexists(p)]
            self._changes.deleted.update(set(paths) - set(present))
            if not present:
                return {}
            try:
                return db.ingest(present, **self._ingest_options(stop))
            except InputError:  # one vanished during the call: again, without it
                paths = present
        return {}

    def _remove_deleted(self, stop: threading.Event) -> None:
        """Remove the items of deleted paths once nothing waits to be ingested (a moved file's
        new path is ingested first, so its item keeps its code)."""
        if self._changes.waiting or not self._changes.deleted:
            return
        gone = [p for p in self._changes.deleted if not os.path.lexists(p)]
        self._changes.deleted.clear()
        if not gone:
            return
        with self._database(stop) as db:
            ids, folders = set(), []
            for path in gone:
                found = db.store.items_by_path(path)
                ids.update(it.id for it in found)
                if not found:
                    folders.append(os.path.join(path, ""))
            if folders:  # folders (or files never stored): one pass over the items
                prefixes = tuple(folders)
                ids.update(it.id for it in db.store.iter_items() if it.path.startswith(prefixes))
            if ids:
                catalog.remove(db.store, sorted(ids))
                self.status.removed += len(ids)
                self._say(f"watch: removed {len(ids)} items whose files were deleted")

    def _ingest_options(self, stop: threading.Event) -> dict:
        def progress(stage, done, total):
            if stop.is_set():
                raise Stopped
            if stage == "embedding":  # what is left of this call, and what waits to settle
                self.status.state = "indexing"
                self.status.pending = total - done + len(self._changes.waiting)

        o = self.options
        return dict(
            batch_size=o.batch_size,
            workers=o.workers,
            max_megapixels=o.max_megapixels,
            progress=progress,
            count_missing=False,  # a stat of every item per batch: deletions are this module's
        )

    def _counted(self, summary: dict) -> None:
        self.status.added += sum(summary.get(kind, 0) for kind in ("new", "changed", "moved", "duplicate"))
        self.status.failed += summary.get("failed", 0)
