"""`WriteBatch`: the transaction machinery under every write batch, one LMDB write transaction.
A subclass (Writer) gives the operations, the state a batch starts from (`_reset`) and what a
commit writes (`_flush`) and hands on (`_publish`). The map is large and sparse (opening.py),
so a batch never needs it grown; one that fills it fails whole, with a one-line StoreError.
"""

from __future__ import annotations

from typing import Self

from ..errors import InputError, StoreError
from .opening import Environment, begin, guard
from .reading import View


class WriteBatch(View):
    """Operations validate before they change anything, so an InputError leaves the batch
    usable; any other failure dooms the batch to abort. `on_close`: called once it is closed."""

    def __init__(self, environment: Environment, path, on_close=None):
        self.environment, self.path, self._on_close = environment, path, on_close
        self._changed = self._failed = self._closed = False
        with guard(path):
            self._begin()

    def _begin(self) -> None:
        self.txn = begin(self.environment.env, write=True)
        self.dbs = self.environment.dbs
        self._meta = self.read_meta()
        self._meta_dirty: set[str] = set()
        self._reset()

    def _reset(self) -> None:
        """Start the batch's own state."""

    def _flush(self) -> None:
        """Write what the batch holds back until its commit."""

    def _publish(self) -> None:
        """After the commit: hand on what the process may keep."""

    def _wants_commit(self) -> bool:
        return self._changed

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

    # -- operations, commit ------------------------------------------------------------------------

    def _run(self, op, *args):
        if self._closed or self._failed:
            state = "closed" if self._closed else "failed and must be aborted"
            raise StoreError(f"{self.path}: this write batch is {state}")
        try:
            with guard(self.path):
                result = op(*args)
        except InputError:
            raise
        except BaseException:
            self._failed = True
            raise
        self._changed = True
        return result

    def commit(self) -> None:
        if self._closed:
            return
        if self._failed:
            self.abort()
            raise StoreError(f"{self.path}: write batch failed; nothing was written")
        try:
            with guard(self.path):
                if not self._wants_commit():
                    self.txn.abort()
                else:
                    self._flush()
                    self.txn.commit()
                    self._publish()
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
