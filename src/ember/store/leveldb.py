"""LevelDB backend through plyvel (``pip install plyvel``)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ember.errors import StoreCorruptError, StoreError, StoreFullError, StoreLockedError, StoreReadOnlyError
from ember.store.disk import (
    as_full_disk,
    damaged_store,
    ensure_writable_dir,
    error_text,
    free_bytes,
    write_size,
)
from ember.store.registry import store_exists

_ENTRY = b"e:"
_META = b"m:"
_ENTRY_END = b"e;"  # the first key past every entry key (":" + 1)


def _plyvel():
    try:
        import plyvel
    except ImportError as exc:
        raise ImportError("the LevelDB backend needs plyvel: pip install 'ember[leveldb]' (or pip install plyvel)") from exc
    return plyvel


class LevelDBStore:
    """A LevelDB database; entries and metadata share it under two key prefixes.

    LevelDB allows one process at a time, readers included; a second one gets a clear error.
    """

    backend = "leveldb"  # its name in ember.store.registry

    @classmethod
    def open(cls, path: Path, *, readonly: bool = False, **options) -> LevelDBStore:
        """The registry's constructor (see :func:`ember.store.base.open_kv`)."""
        return cls(path, readonly=readonly, **options)

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        plyvel = _plyvel()
        self.path = Path(path)
        self.readonly = readonly
        if not readonly:
            ensure_writable_dir(self.path)
        elif not store_exists(self.path, "leveldb"):
            raise StoreError(f"no LevelDB store at {self.path}: fill it first, or check the path")
        try:
            self.db = plyvel.DB(str(self.path), create_if_missing=not readonly)
        except plyvel.IOError as exc:
            reason = error_text(exc)  # plyvel's reasons are bytes
            if "No space left" in reason:  # opening writes: LevelDB turns its log into a table file
                free = free_bytes(self.path)
                raise StoreFullError(
                    f"cannot open the LevelDB store at {self.path}: the disk holding it is full "
                    f"({'' if free is None else f'{free / 2**20:.1f} MiB free; '}{reason}), and LevelDB writes when it "
                    "opens a store, even to read it. Free disk space and rerun: the entries committed are kept."
                ) from exc
            if "lock" in reason.lower():
                raise StoreLockedError(
                    f"the LevelDB store at {self.path} is open in another process ({reason}). LevelDB allows one "
                    "process at a time: wait for it to finish, or use the lmdb backend for concurrent readers."
                ) from exc
            raise StoreReadOnlyError(f"cannot open the LevelDB store at {self.path}: {reason}") from exc
        except plyvel.CorruptionError as exc:
            raise StoreCorruptError(
                f"the LevelDB store at {self.path} is corrupt ({error_text(exc)}); delete it and fill again"
            ) from exc
        except plyvel.Error as exc:  # any other refusal (a folder LevelDB cannot use as a store …)
            raise StoreError(f"cannot open the LevelDB store at {self.path}: {error_text(exc)}") from exc
        self._pid = os.getpid()

    def _check_pid(self) -> None:
        if self._pid != os.getpid():
            raise StoreError(
                f"the LevelDB store at {self.path} was opened in another process; a LevelDB handle cannot be used "
                "after fork. Use num_workers=0 for DataLoaders over it, or the lmdb backend (many reader processes)."
            )

    def __getstate__(self) -> dict:
        # A copy for another process (a DataLoader worker started with spawn/forkserver) cannot open the store
        # while this process holds it: say so, as a forked copy does, rather than fail to pickle the handle.
        raise StoreError(
            f"the LevelDB store at {self.path} cannot be sent to another process: LevelDB allows one process at a "
            "time. Use num_workers=0 for DataLoaders over it, or the lmdb backend (many reader processes)."
        )

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        self._check_pid()

        def read() -> list[bytes | None]:
            snap = self.db.snapshot()
            return [snap.get(_ENTRY + k, verify_checksums=True) for k in keys]

        return self._read(read)

    def _read(self, read: Callable):
        """Run ``read()``; LevelDB's own errors (a damaged block fails its checksum) become ember's."""
        plyvel = _plyvel()
        try:
            return read()
        except plyvel.CorruptionError as exc:
            raise damaged_store(self.path, f"LevelDB: {error_text(exc)}") from exc
        except plyvel.Error as exc:
            raise StoreError(f"reading the LevelDB store at {self.path} failed: {error_text(exc)}") from exc

    def has_many(self, keys: Sequence[bytes]) -> list[bool]:
        return [v is not None for v in self.get_many(keys)]

    def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        self._check_pid()
        if self.readonly:
            raise StoreReadOnlyError(f"the store at {self.path} was opened read-only")
        def write() -> None:
            with self.db.write_batch(sync=True) as wb:  # one atomic batch per call
                for k, v in items:
                    wb.put(_ENTRY + k, v)

        self._write(write, write_size(items))

    def keys(self) -> Iterator[bytes]:
        n = len(_ENTRY)
        return iter(self._read(lambda: [k[n:] for k in self.db.iterator(prefix=_ENTRY, include_value=False)]))

    def items(self, start: bytes = b"", limit: int = 1024) -> list[tuple[bytes, bytes]]:
        """Up to ``limit`` entries in key order from the first key ``>= start`` (a store walk's page)."""
        n = len(_ENTRY)

        def page() -> list[tuple[bytes, bytes]]:
            it = self.db.iterator(start=_ENTRY + start, stop=_ENTRY_END, verify_checksums=True)
            return [(k[n:], v) for k, v in itertools.islice(it, limit)]

        return self._read(page)

    def __len__(self) -> int:
        return self._read(lambda: sum(1 for _ in self.db.iterator(prefix=_ENTRY, include_value=False)))

    def get_meta(self, name: str) -> str | None:
        v = self._read(lambda: self.db.get(_META + name.encode(), verify_checksums=True))
        return None if v is None else v.decode()

    def set_meta(self, name: str, value: str) -> None:
        if self.readonly:
            raise StoreReadOnlyError(f"the store at {self.path} was opened read-only")
        key, data = _META + name.encode(), value.encode()
        self._write(lambda: self.db.put(key, data, sync=True), len(key) + len(data))

    def _write(self, write: Callable[[], None], needed: int) -> None:
        """Run ``write`` (one atomic LevelDB write of ``needed`` bytes); a full disk raises ``StoreFullError``."""
        plyvel = _plyvel()
        try:
            write()
        except plyvel.IOError as exc:
            full = as_full_disk(exc, self.path, needed, self.__len__)
            if full is not None:
                raise full from exc
            raise StoreError(f"writing the LevelDB store at {self.path} failed: {error_text(exc)}") from exc

    def close(self) -> None:
        if not self.db.closed:
            self.db.close()
