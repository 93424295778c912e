"""Opening a store: the LMDB environment (one per directory and process), writer.lock, the map,
and the translation of LMDB failures into one-line StoreErrors.

A writable Store holds an exclusive flock on writer.lock for its lifetime: one writer at a
time. Readers never block: readonly Stores open LMDB read-only, so even opening the named
databases takes a read transaction, never the LMDB writer mutex a writing process may hold.
LMDB forbids opening one environment twice in a process: Stores on one directory share it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import threading
import time
from pathlib import Path

import lmdb
import platformdirs

from ..errors import StoreError, StoreLockedError
from .format import DBS, LATER_DBS, MAX_DBS, SCHEMA_VERSION, CorruptValue
from .migration import check_schema, migrate

# The LMDB map: address space, not disk (data.mdb grows with what is written, as LMDB writes
# pages without MDB_WRITEMAP). Large enough never to grow, so no write batch is ever redone and
# no map is ever moved under the readers of this process (zarr's LMDBStore does the same).
DEFAULT_MAP_SIZE = 1 << 40 if sys.maxsize > 1 << 32 else 1 << 30


def default_store_path() -> Path:
    """$SEMDB_STORE, else <user data dir>/semdb/store."""
    if os.environ.get("SEMDB_STORE"):
        return Path(os.environ["SEMDB_STORE"]).expanduser()
    return Path(platformdirs.user_data_dir("semdb")) / "store"


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


class OldSchema(Exception):
    """A read-only open met a store of an older schema (it must be migrated by a writable open)."""


class Environment:
    """One LMDB environment and its named databases, shared by this process's Stores on one
    directory, with the process's caches of what was read through it."""

    def __init__(self, env, dbs: dict, readonly: bool, key: str):
        self.env, self.dbs, self.readonly, self.key, self.users = env, dbs, readonly, key, 0
        self.codes_cache = None  # (generation, ids, codes, slot slices): load_codes skips unchanged stores
        # (generation, ItemIndex) and (generation, KeyMultimap id -> code segment): built when
        # first needed, carried forward by this process's own commits, rebuilt after others'
        self.item_index = None
        self.code_loc = None
        self.item_segment_cache: dict = {}  # (key, crc, ...) -> decoded item segment; insertion order = age

    def reset(self) -> None:
        self.codes_cache = self.item_index = self.code_loc = None
        self.item_segment_cache = {}


_ENVS: dict[str, Environment] = {}
_ENVS_LOCK = threading.Lock()


def attach(path: Path, readonly: bool, map_size: int) -> Environment:
    """The process's environment on `path`, opened (or reopened read-write) as needed."""
    key = os.path.realpath(path)
    with _ENVS_LOCK, guard(path):
        shared = _ENVS.get(key)
        if shared is None:
            shared = _ENVS[key] = Environment(*open_environment(path, readonly, map_size), readonly, key)
        elif shared.readonly and not readonly:
            # Readonly Stores of this process share a read-only environment: reopen it
            # read-write in place (they reach it through `shared`, and hold no txn now).
            shared.env.close()
            shared.env, shared.dbs = open_environment(path, False, map_size)
            shared.readonly = False
            shared.reset()
        shared.users += 1
        return shared


def detach(shared: Environment) -> None:
    with _ENVS_LOCK:
        shared.users -= 1
        if shared.users == 0:
            _ENVS.pop(shared.key, None)
            shared.env.close()


def lock_writer(path: Path, wait: bool) -> int:
    """Take writer.lock (waiting for it if `wait`); returns the fd that holds the flock."""
    fd = os.open(path / "writer.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StoreLockedError(
            f"{path} is being written by another semdb process (pid {pid}); wait for it or stop it "
            f"(--wait: queue behind it)"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def migrate_for_reading(path: Path, schema: int, map_size: int) -> None:
    """A read-only open of an older store: migrate it through a short writable open (as any
    writing command would). If that cannot be done now (another process is writing it, or no
    write access) say so in one line."""
    try:
        fd = lock_writer(path, wait=False)
        try:
            with guard(path):
                env, _ = open_environment(path, False, map_size)
            env.close()
        finally:
            os.close(fd)
    except (StoreError, OSError) as e:
        raise StoreError(
            f"{path} uses store schema {schema}; semdb converts it to schema "
            f"{SCHEMA_VERSION} the first time it opens it for writing, and that failed "
            f"now ({one_line(e)}): run `semdb import` or `semdb ingest` on it when "
            f"nothing else is writing it, with write access to {path}"
        ) from None


def open_environment(path: Path, readonly: bool, map_size: int) -> tuple:
    """(env, dbs) of the store in `path`: created if empty and writable, migrated to this
    schema if writable. OldSchema if read-only and older."""
    try:
        env = lmdb.open(
            str(path),
            map_size=map_size,
            subdir=True,
            max_dbs=MAX_DBS,
            readonly=readonly,
            create=not readonly,
            lock=not readonly or os.access(path / "lock.mdb", os.W_OK),
        )
    except lmdb.MemoryError:
        raise StoreError(
            f"{path}: cannot reserve the store's {map_size >> 30} GiB of address space (is `ulimit -v` "
            f"set?); raise the limit, or in Python open the store with a smaller map_size"
        ) from None
    except lmdb.Error as e:
        raise StoreError(
            f"{path} is corrupt or not a semdb store ({one_line(e)}); restore it from a backup or pass a new --store"
        ) from None
    try:
        # LMDB maps the file and trusts its header: reading a page past the end of a
        # truncated file kills the process with SIGBUS. Writers extend the file before
        # they commit a header naming the new pages, so a shorter file is damage.
        size = (path / "data.mdb").stat().st_size
        need = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
        if size < need:
            raise StoreError(
                f"{path} is corrupt (data.mdb is truncated: {size} bytes, its "
                f"header needs {need}); restore it from a backup or rebuild it "
                f"with `semdb ingest` into a new --store"
            )
        if not readonly:
            env.set_mapsize(0)  # adopt the size the file was last grown to...
            if env.info()["map_size"] < map_size:
                env.set_mapsize(map_size)  # ...or the requested one if larger
        with env.begin() as txn:
            names = {bytes(k) for k, _ in txn.cursor()}
        if not names and not readonly:
            return env, _initialise(env)
        if not names:
            raise StoreError(f"no semdb store at {path} (empty); run `semdb ingest` first")
        if b"meta" not in names:
            raise StoreError(
                f"{path} is not a semdb store (an LMDB environment without "
                f"semdb meta); pass a new or empty directory to create one"
            )
        if not readonly:
            return migrate(env, path)
        meta_db = env.open_db(b"meta", create=False)
        with env.begin() as txn:
            schema = check_schema(txn.get(b"schema", db=meta_db), path)
        if schema < SCHEMA_VERSION:
            raise OldSchema(schema)
        return env, {
            n: env.open_db(n.encode(), create=False) if n not in LATER_DBS or n.encode() in names else None for n in DBS
        }
    except BaseException:
        env.close()
        raise


def _initialise(env) -> dict:
    with env.begin(write=True) as txn:  # all databases and meta appear in one commit
        dbs = {n: env.open_db(n.encode(), txn=txn) for n in DBS}
        meta = {
            "schema": SCHEMA_VERSION,
            "created": time.time(),
            "generation": 0,
            "next_id": 1,
            "next_segment": 0,
            "code_bytes": None,
            "codec_id": None,
            "dim": None,
            "model_id": None,
        }
        for k, v in meta.items():
            txn.put(k.encode(), json.dumps(v).encode(), db=dbs["meta"])
    return dbs


@contextlib.contextmanager
def guard(path: Path):
    """Turn LMDB failures and undecodable values into one-line StoreErrors."""
    try:
        yield
    except CorruptValue as e:
        raise StoreError(
            f"{path} is corrupt ({e}); restore it from a backup or rebuild it with `semdb ingest` into a new --store"
        ) from None
    except (
        lmdb.CorruptedError,
        lmdb.InvalidError,
        lmdb.PageNotFoundError,
        lmdb.BadValsizeError,
        lmdb.IncompatibleError,
        lmdb.VersionMismatchError,
        lmdb.BadTxnError,
    ) as e:  # BAD_TXN: LMDB met a damaged page earlier in this txn
        raise StoreError(
            f"{path} is corrupt ({one_line(e)}); restore it from a backup "
            f"or rebuild it with `semdb ingest` into a new --store"
        ) from None
    except lmdb.MapFullError:
        raise StoreError(
            f"{path} is full: the store has used up its LMDB map; nothing of this write was "
            f"stored (open it with a larger map_size to go on)"
        ) from None
    except lmdb.MapResizedError:
        raise
    except lmdb.Error as e:
        raise StoreError(f"{path}: storage error ({one_line(e)})") from None


def begin(env, write: bool = False):
    """A transaction on `env`; a map another process grew is adopted first."""
    try:
        return env.begin(write=write, buffers=True)
    except lmdb.MapResizedError:  # another process grew the file: adopt its size
        env.set_mapsize(0)
        return env.begin(write=write, buffers=True)
