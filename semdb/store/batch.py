"""`ReplayingBatch`: the transaction machinery under every write batch. One LMDB write
transaction; every operation is recorded (with immutable copies of its arguments) so that,
when the map fills up, the transaction is aborted, the map doubled and the batch replayed,
transparently. A subclass (Writer) gives the operations, the state a replay starts from
(`_reset`) and what a commit writes (`_flush`) and hands on (`_publish`).
"""

from __future__ import annotations

from typing import Self

import lmdb

from ..errors import InputError, StoreError
from ..faults import fault_point
from .opening import Environment, begin, guard
from .reading import View


class ReplayingBatch(View):
    """Operations validate before they change anything, so an InputError leaves the batch
    usable; any other failure dooms the batch to abort. `on_close`: called once it is closed."""

    def __init__(self, environment: Environment, path, on_close=None):
        self.environment, self.path, self._on_close = environment, path, on_close
        self._ops: list = []
        self._failed = self._closed = False
        with guard(path):
            self._begin()

    def _begin(self) -> None:
        self.txn = begin(self.environment.env, write=True)
        self.dbs = self.environment.dbs
        self._meta = self.read_meta()
        self._meta_dirty: set[str] = set()
        self._reset()

    def _reset(self) -> None:
        """Start the batch's own state afresh (at the start, and before a replay)."""

    def _flush(self) -> None:
        """Write what the batch holds back until its commit."""

    def _publish(self) -> None:
        """After the commit: hand on what the process may keep."""

    def _wants_commit(self) -> bool:
        return bool(self._ops)

    def _put_meta(self, key: str, value) -> None:
        self._meta[key] = value
        self._meta_dirty.add(key)

    def meta(self) -> dict:
        return dict(self._meta)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    # -- replay, commit --------------------------------------------------------------------------

    def _run(self, op, *args):
        if self._closed or self._failed:
            state = "closed" if self._closed else "failed and must be aborted"
            raise StoreError(f"{self.path}: this write batch is {state}")
        try:
            with guard(self.path):
                while True:
                    try:
                        result = op(*args)
                        break
                    except lmdb.MapFullError:
                        self._grow_and_replay()
        except InputError:
            raise
        except BaseException:
            self._failed = True
            raise
        self._ops.append((op, args))
        return result

    def _grow_and_replay(self) -> None:
        env = self.environment.env
        while True:
            self.txn.abort()
            env.set_mapsize(env.info()["map_size"] * 2)
            fault_point("map_grown")
            self._begin()
            try:
                for op, args in self._ops:
                    op(*args)
                return
            except lmdb.MapFullError:
                continue

    def commit(self) -> None:
        if self._closed:
            return
        if self._failed:
            self.abort()
            raise StoreError(f"{self.path}: write batch failed; nothing was written")
        try:
            with guard(self.path):
                while True:
                    try:
                        if not self._wants_commit():
                            self.txn.abort()
                        else:
                            self._flush()
                            self.txn.commit()
                            self._publish()
                        break
                    except lmdb.MapFullError:
                        self._grow_and_replay()
        except BaseException:
            self.abort()
            raise
        self._close()

    def abort(self) -> None:
        if not self._closed:
            self.txn.abort()
            self._close()

    def _close(self) -> None:
        self._closed = True
        if self._on_close is not None:
            self._on_close()
