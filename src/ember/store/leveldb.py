"""LevelDB backend through plyvel (``pip install plyvel``)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from ember.errors import StoreCorruptError, StoreError, StoreLockedError, StoreReadOnlyError
from ember.store.base import ensure_writable_dir

_ENTRY = b"e:"
_META = b"m:"


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

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        plyvel = _plyvel()
        self.path = Path(path)
        self.readonly = readonly
        if not readonly:
            ensure_writable_dir(self.path)
        elif not (self.path / "CURRENT").exists():
            raise StoreError(f"no LevelDB store at {self.path}: fill it first, or check the path")
        try:
            self.db = plyvel.DB(str(self.path), create_if_missing=not readonly)
        except plyvel.IOError as exc:
            if "lock" in str(exc).lower():
                raise StoreLockedError(
                    f"the LevelDB store at {self.path} is open in another process ({exc}). LevelDB allows one "
                    "process at a time: wait for it to finish, or use the lmdb backend for concurrent readers."
                ) from exc
            raise StoreReadOnlyError(f"cannot open the LevelDB store at {self.path}: {exc}") from exc
        except plyvel.CorruptionError as exc:
            raise StoreCorruptError(f"the LevelDB store at {self.path} is corrupt ({exc}); delete it and fill again") from exc
        self._pid = os.getpid()

    def _check_pid(self) -> None:
        if self._pid != os.getpid():
            raise StoreError(
                f"the LevelDB store at {self.path} was opened in another process; a LevelDB handle cannot be used "
                "after fork. Use num_workers=0 for DataLoaders over it, or the lmdb backend (many reader processes)."
            )

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        self._check_pid()
        snap = self.db.snapshot()
        return [snap.get(_ENTRY + k) for k in keys]

    def has_many(self, keys: Sequence[bytes]) -> list[bool]:
        return [v is not None for v in self.get_many(keys)]

    def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        self._check_pid()
        if self.readonly:
            raise StoreReadOnlyError(f"the store at {self.path} was opened read-only")
        with self.db.write_batch(sync=True) as wb:  # one atomic batch per call
            for k, v in items:
                wb.put(_ENTRY + k, v)

    def keys(self) -> Iterator[bytes]:
        n = len(_ENTRY)
        return iter([k[n:] for k in self.db.iterator(prefix=_ENTRY, include_value=False)])

    def __len__(self) -> int:
        return sum(1 for _ in self.db.iterator(prefix=_ENTRY, include_value=False))

    def get_meta(self, name: str) -> str | None:
        v = self.db.get(_META + name.encode())
        return None if v is None else v.decode()

    def set_meta(self, name: str, value: str) -> None:
        if self.readonly:
            raise StoreReadOnlyError(f"the store at {self.path} was opened read-only")
        self.db.put(_META + name.encode(), value.encode(), sync=True)

    def close(self) -> None:
        if not self.db.closed:
            self.db.close()
