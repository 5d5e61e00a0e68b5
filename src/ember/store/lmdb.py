"""LMDB backend (default): memory-mapped, one writer and many reader processes, crash-safe commits."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import lmdb

from ember.errors import StoreCorruptError, StoreError, StoreLockedError, StoreReadOnlyError
from ember.fixes import READ_COMMITTED
from ember.store.disk import (
    DISK_MARGIN,
    as_full_disk,
    damaged_store,
    ensure_writable_dir,
    free_bytes,
    full_disk_error,
    full_disk_on_open,
    means_full_disk,
    write_size,
)
from ember.store.lmdbfile import check_data_file
from ember.store.registry import marker_path

_INITIAL_MAP = 1 << 30  # 1 GiB of address space; the file itself grows only with data (sparse)
REFILL = "Delete it and fill it again (rerun the fill: it computes everything)."
# lmdb's errors that mean the file's pages are damaged (the other lmdb.Error are I/O, locks, limits)
_DAMAGE = (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.InvalidError)


class LMDBStore:
    """An LMDB environment holding two named databases, ``entries`` and ``meta``.

    A writer takes an exclusive advisory lock (``writer.lock``) so that a second writer gets a clear
    error instead of blocking; readers take no lock and see only committed transactions.

    Args:
        path: directory of the store (created for writers).
        readonly: open for reading only.
        max_size: upper bound in bytes for the data file; a fill that needs more raises
            :class:`~ember.errors.StoreFullError` with everything committed so far intact.
    """

    backend = "lmdb"  # its name in ember.store.registry

    def __init__(self, path: Path, *, readonly: bool = False, max_size: int | None = None) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.max_size = max_size
        self._lock_file = None
        if readonly:
            if not self._data.exists():
                raise StoreError(
                    f"no store at {self.path}: it has not been filled yet. Fill it first (a fill creates it), or "
                    "check the path."
                )
        else:
            ensure_writable_dir(self.path)
            self._check_room(lock=True)  # before the lock file too: writing the pid into a new one fails alike
            self._take_writer_lock()
        self._open()

    @classmethod
    def open(cls, path: Path, *, readonly: bool = False, **options) -> LMDBStore:
        """The registry's constructor (see :func:`ember.store.base.open_kv`)."""
        return cls(path, readonly=readonly, **options)

    @property
    def _data(self) -> Path:
        return marker_path(self.path, "lmdb")  # data.mdb

    # -- life cycle -------------------------------------------------------------------------------------
    def _take_writer_lock(self) -> None:
        f = open(self.path / "writer.lock", "a+")  # noqa: SIM115 - held for the store's lifetime
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise StoreLockedError(
                f"the store at {self.path} is being written by another process (pid {holder}). Wait for it "
                f"to finish, {READ_COMMITTED}, or use another store path.", fixes=[READ_COMMITTED]
            ) from exc
        try:
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
        except OSError as exc:
            f.close()  # gives the lock back
            if exc.errno == errno.ENOSPC:
                raise full_disk_on_open(self.path, exc) from exc
            raise
        self._lock_file = f

    def _check_room(self, lock: bool) -> None:
        """Refuse to create a store, or the lock file LMDB keeps beside one (``lock``), on a disk that is full.

        LMDB initialises its lock file through a memory map: on a full disk that is a SIGBUS that kills the
        process, not an error. An existing store opens whatever the space left (only writes need it).
        """
        creates = not self._data.exists() or (lock and not (self.path / "lock.mdb").exists())
        if creates:
            free = free_bytes(self.path)
            if free is not None and free < DISK_MARGIN:
                raise full_disk_on_open(self.path, free=free)

    def _open(self) -> None:
        self._pid = os.getpid()
        size = _INITIAL_MAP if self.max_size is None else min(_INITIAL_MAP, self.max_size)
        lock = not self.readonly or os.access(self.path, os.W_OK)
        self._check_room(lock)
        data = self._data
        new = not data.exists()
        if not new:
            check_data_file(self.path, data, REFILL)  # before mapping it: a file cut short is a SIGBUS, not an error
        try:
            if not new:
                size = max(size, data.stat().st_size)
            self.env = lmdb.open(
                str(self.path),
                map_size=size,
                max_dbs=2,
                readonly=self.readonly,
                lock=lock,
                readahead=False,  # random reads of small values: readahead wastes page cache
                meminit=False,
            )
            self._entries = self.env.open_db(b"entries", create=not self.readonly)
            self._meta = self.env.open_db(b"meta", create=not self.readonly)
        except _DAMAGE as exc:  # header, or pages past it
            raise StoreCorruptError(f"{self.path} is not a readable LMDB store ({exc}). {REFILL}") from exc
        except lmdb.ReadonlyError as exc:
            raise StoreReadOnlyError(f"cannot open {self.path} for writing: {exc}") from exc
        except lmdb.NotFoundError as exc:
            raise StoreCorruptError(
                f"{self.path} is an LMDB environment without ember's databases ({exc}); it was not made by "
                "ember. Use another path."
            ) from exc
        except lmdb.Error as exc:
            if means_full_disk(exc, self.path):
                if new and data.exists() and data.stat().st_size == 0:
                    data.unlink()  # made by this open and empty: left there, it would pass for a store
                raise full_disk_on_open(self.path, exc) from exc
            raise StoreError(f"cannot open the LMDB store at {self.path}: {exc}") from exc

    def _check_pid(self) -> None:
        # An LMDB environment must not be used across fork(): DataLoader workers close the inherited handle
        # (that touches neither the parent's locks nor its reader slots, which are keyed by pid) and reopen
        # the store read-only.
        if self._pid != os.getpid():
            with contextlib.suppress(lmdb.Error):
                self.env.close()
            self.readonly = True
            self._lock_file = None
            self._open()

    def close(self) -> None:
        if getattr(self, "env", None) is not None and self._pid == os.getpid():
            self.env.close()
        self.env = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # -- reads ------------------------------------------------------------------------------------------
    def _read(self, which: str, fn):
        """Run ``fn(txn)`` in a read transaction of database ``which``; adopt a map the writer has grown."""
        self._check_pid()  # may reopen the environment: resolve the database handle after it
        for attempt in (0, 1):
            try:
                with self.env.begin(db=getattr(self, which)) as txn:
                    return fn(txn)
            except lmdb.MapResizedError:
                if attempt:
                    raise
                self.env.set_mapsize(0)  # 0 = take the current size of the file the writer grew
            except _DAMAGE as exc:
                raise damaged_store(self.path, f"LMDB: {exc}") from exc
            except lmdb.Error as exc:
                raise StoreError(f"reading the store at {self.path} failed: {exc}") from exc

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return self._read("_entries", lambda txn: [txn.get(k) for k in keys])

    def has_many(self, keys: Sequence[bytes]) -> list[bool]:
        def look(txn):
            cur = txn.cursor()
            return [cur.set_key(k) for k in keys]

        return self._read("_entries", look)

    def keys(self) -> Iterator[bytes]:
        return iter(self._read("_entries", lambda txn: list(txn.cursor().iternext(keys=True, values=False))))

    def items(self, start: bytes = b"", limit: int = 1024) -> list[tuple[bytes, bytes]]:
        """Up to ``limit`` entries in key order from the first key ``>= start`` (a store walk's page)."""

        def page(txn):
            cur = txn.cursor()
            if not cur.set_range(start):
                return []
            out = []
            for item in cur.iternext(keys=True, values=True):
                out.append(item)
                if len(out) == limit:
                    break
            return out

        return self._read("_entries", page)

    def __len__(self) -> int:
        return self._read("_entries", lambda txn: txn.stat(self._entries)["entries"])

    def get_meta(self, name: str) -> str | None:
        v = self._read("_meta", lambda txn: txn.get(name.encode()))
        return None if v is None else bytes(v).decode()

    # -- pickling (DataLoader workers started with spawn/forkserver) ----------------------------------------
    def __getstate__(self) -> dict:
        return {"path": self.path, "max_size": self.max_size}

    def __setstate__(self, state: dict) -> None:
        # A copy in another process only reads: the writer lock stays with the original.
        self.path, self.max_size, self.readonly, self._lock_file = state["path"], state["max_size"], True, None
        self._open()

    # -- writes -----------------------------------------------------------------------------------------
    def set_meta(self, name: str, value: str) -> None:
        self._write(self._meta, [(name.encode(), value.encode())])

    def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        self._write(self._entries, items)

    def _write(self, db, items: Sequence[tuple[bytes, bytes]]) -> None:
        if self.readonly:
            raise StoreReadOnlyError(f"the store at {self.path} was opened read-only; open it for writing to add entries")
        while True:
            try:
                # One transaction per call: a crash or error leaves all of it or none of it.
                with self.env.begin(write=True, db=db) as txn:
                    for k, v in items:
                        txn.put(k, v)
                return
            except lmdb.MapFullError as exc:
                self._grow(exc)
            except _DAMAGE as exc:
                raise damaged_store(self.path, f"LMDB: {exc}") from exc
            except lmdb.Error as exc:
                full = as_full_disk(exc, self.path, write_size(items), self.__len__)
                if full is not None:
                    raise full from exc
                raise StoreError(f"writing the store at {self.path} failed: {exc}") from exc
            except OSError as exc:
                full = as_full_disk(exc, self.path, write_size(items), self.__len__)
                if full is not None:
                    raise full from exc
                raise

    def _grow(self, exc: Exception) -> None:
        current = self.env.info()["map_size"]
        new = current * 2
        if self.max_size is not None:
            if current >= self.max_size:
                raise full_disk_error(self.path, exc, len(self)) from exc
            new = min(new, self.max_size)
        self.env.set_mapsize(new)
