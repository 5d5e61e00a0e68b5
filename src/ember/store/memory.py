"""In-memory backend: same interface as the on-disk ones, for tests and throw-away runs."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path


class MemoryStore:
    """A dict behind the :class:`~ember.store.base.KVStore` interface."""

    backend = "memory"  # its name in ember.store.registry

    @classmethod
    def open(cls, path: Path | None = None, *, readonly: bool = False, **options) -> MemoryStore:
        """The registry's constructor: a new, empty store (``path`` and ``readonly`` do not apply)."""
        if options:
            raise TypeError(f"the memory backend takes no options, got {sorted(options)}")
        return cls()

    def __init__(self) -> None:
        self.path: Path | None = None
        self.readonly = False
        self._data: dict[bytes, bytes] = {}
        self._meta: dict[str, str] = {}
        self._lock = threading.Lock()

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return [self._data.get(k) for k in keys]

    def has_many(self, keys: Sequence[bytes]) -> list[bool]:
        return [k in self._data for k in keys]

    def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        with self._lock:
            self._data.update(items)

    def keys(self) -> Iterator[bytes]:
        return iter(list(self._data))

    def items(self, start: bytes = b"", limit: int = 1024) -> list[tuple[bytes, bytes]]:
        """Up to ``limit`` entries in key order from the first key ``>= start`` (a store walk's page)."""
        with self._lock:
            keys = sorted(k for k in self._data if k >= start)[:limit]
            return [(k, self._data[k]) for k in keys]

    def __len__(self) -> int:
        return len(self._data)

    def get_meta(self, name: str) -> str | None:
        return self._meta.get(name)

    def set_meta(self, name: str, value: str) -> None:
        self._meta[name] = value

    def close(self) -> None:
        pass
