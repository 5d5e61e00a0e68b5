"""Backend name -> backend: adding a storage backend adds a module and one registered entry, nothing else.

Each entry says where the backend's class lives (imported on first use, so ``plyvel`` is needed only by whoever
opens a LevelDB store) and which file an existing store of it keeps in its folder: that marker is defined here
and only here; everything that asks "is there a store at this path?" asks :func:`store_exists`.

Example:
    >>> backend_names()
    ('lmdb', 'leveldb', 'memory')
    >>> backend_spec("lmdb").marker
    'data.mdb'
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from ember.errors import StoreError


@dataclass(frozen=True)
class BackendSpec:
    """One storage backend.

    Args:
        name: what users pass as ``backend=`` / ``--backend``.
        module: the module holding its class (imported on first use).
        cls: the class name; it has ``open(path, *, readonly=False, **options)`` returning a
            :class:`~ember.store.base.KVStore`.
        marker: the file an existing store keeps in its folder; ``None`` for a backend that keeps nothing on disk.
        concurrent_readers: whether reader processes may open the store while a writer has it (LMDB: yes).
    """

    name: str
    module: str
    cls: str
    marker: str | None
    concurrent_readers: bool = False

    def __post_init__(self) -> None:
        if not self.name or not self.module or not self.cls:
            raise ValueError(f"a backend needs a name, a module and a class, got {self!r}")

    @property
    def on_disk(self) -> bool:
        return self.marker is not None

    def load(self) -> type:
        """The backend's class (its module imported now)."""
        return getattr(importlib.import_module(self.module), self.cls)


_SPECS: dict[str, BackendSpec] = {}


def register_backend(spec: BackendSpec) -> BackendSpec:
    """Add ``spec`` (replacing one of the same name) and return it."""
    _SPECS[spec.name] = spec
    return spec


register_backend(BackendSpec("lmdb", "ember.store.lmdb", "LMDBStore", marker="data.mdb", concurrent_readers=True))
register_backend(BackendSpec("leveldb", "ember.store.leveldb", "LevelDBStore", marker="CURRENT"))
register_backend(BackendSpec("memory", "ember.store.memory", "MemoryStore", marker=None))


def backend_names() -> tuple[str, ...]:
    """The registered backends' names, in registration order."""
    return tuple(_SPECS)


def backend_spec(name: object) -> BackendSpec:
    """The entry of backend ``name``; ``ValueError`` naming the registered ones otherwise."""
    spec = _SPECS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(f"backend {name!r} is not one of {', '.join(map(repr, _SPECS))}")
    return spec


def store_exists(path: str | Path | None, backend: str) -> bool:
    """Whether ``path`` holds a store of ``backend`` (its marker file is there); False for in-memory backends.

    Example:
        >>> store_exists("/nonexistent", "lmdb"), store_exists(None, "memory")
        (False, False)
    """
    spec = backend_spec(backend)
    return path is not None and spec.marker is not None and (Path(path) / spec.marker).exists()


def stores_at(path: str | Path) -> list[str]:
    """The backends whose store ``path`` holds (usually none or one)."""
    return [name for name in _SPECS if store_exists(path, name)]


def marker_path(path: str | Path, backend: str) -> Path:
    """The marker file of a ``backend`` store at ``path`` (LMDB: its data file)."""
    spec = backend_spec(backend)
    if spec.marker is None:
        raise ValueError(f"backend {backend!r} keeps nothing on disk")
    return Path(path) / spec.marker


def check_not_a_store(path: str | Path | None, what: str) -> None:
    """Refuse ``path`` as ``what`` (a folder that holds stores in sub-folders, such as an encoder cache's
    ``save_dir``) when it is itself a store's folder: writing beside another store's files would mix the two.

    Raises:
        StoreError: naming the store found there and the fix.
    """
    if path is None:
        return
    found = stores_at(path)
    if found:
        raise StoreError(
            f"{path} is itself a {found[0]} store (it holds {backend_spec(found[0]).marker}: a recycling store, "
            f"say), so it cannot be {what}, which keeps its own stores in sub-folders. Pass another folder: a new "
            "one, or one this kind of cache was saved to."
        )
