"""The one small interface every storage backend implements (LMDB, LevelDB, memory), and ``open_kv``.

Backends are picked through :mod:`ember.store.registry`; their shared disk helpers live in
:mod:`ember.store.disk`, so no backend module imports this one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from ember.errors import StoreError
from ember.store.disk import ensure_writable_dir, full_disk_error  # noqa: F401  (their former home; callers import them here)
from ember.store.registry import backend_names, backend_spec, stores_at

# The registered backends' names for type checkers; the registry is what open_kv consults.
Backend = Literal["lmdb", "leveldb", "memory"]
BACKENDS: tuple[str, ...] = backend_names()


def check_backend(backend: object) -> None:
    """Raise ``ValueError`` naming the backends when ``backend`` is not one of them."""
    backend_spec(backend)


@runtime_checkable
class KVStore(Protocol):
    """A byte-keyed, byte-valued embedded store.

    ``put_many`` is atomic: after a crash either every item of the call is there or none is.
    Metadata (fingerprint, label names) lives beside the entries, not among them.
    """

    path: Path | None
    readonly: bool

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]: ...

    def has_many(self, keys: Sequence[bytes]) -> list[bool]: ...

    def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> None: ...

    def keys(self) -> Iterator[bytes]: ...

    def __len__(self) -> int: ...

    def get_meta(self, name: str) -> str | None: ...

    def set_meta(self, name: str, value: str) -> None: ...

    def close(self) -> None: ...


def open_kv(path: str | Path | None, backend: Backend = "lmdb", *, readonly: bool = False, **options) -> KVStore:
    """Open (or create) a backend store at ``path``.

    Args:
        path: directory of the store; ignored (may be None) for ``memory``.
        backend: ``lmdb`` (default), ``leveldb`` (needs ``pip install plyvel``) or ``memory``
            (any backend registered in :mod:`ember.store.registry`).
        readonly: open without taking the writer lock; writes raise.
        **options: backend options such as ``max_size`` (bytes) for LMDB.

    Example:
        >>> kv = open_kv(None, "memory")
        >>> kv.put_many([(b"k", b"v")]); kv.get_many([b"k"])
        [b'v']
    """
    spec = backend_spec(backend)
    if spec.on_disk:
        if path is None:
            raise ValueError(f"backend {backend!r} stores on disk and needs a path")
        path = Path(path)
        _check_folder(path, backend)
    return spec.load().open(path, readonly=readonly, **options)


def _check_folder(path: Path, backend: str) -> None:
    """Refuse a path that is a file, or a folder that holds another backend's store (opening it would make
    a second, empty store beside the first, and every example would be computed again)."""
    if path.is_file():
        raise StoreError(f"{path} is a file, not a store folder; pass a folder (a new one is created)")
    found = stores_at(path)
    if found and backend not in found:
        other = found[0]
        raise StoreError(
            f"{path} holds a {other} store, not a {backend} one; open it with backend={other!r} "
            f"(CLI: --backend {other}), or pass another folder for a new {backend} store"
        )


def __getattr__(name: str):
    # STORE_MARKERS, the old table of marker files: each backend's marker is now its registry entry.
    if name == "STORE_MARKERS":
        return {n: backend_spec(n).marker for n in backend_names() if backend_spec(n).on_disk}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
