"""Backends are picked through the registry; each backend module stands alone."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ember.store as store_pkg
from ember.errors import StoreError
from ember.store import open_kv
from ember.store.registry import (
    BackendSpec,
    backend_names,
    backend_spec,
    register_backend,
    store_exists,
    stores_at,
)

STORE = Path(store_pkg.__file__).parent


def test_each_backend_is_one_registry_entry_with_its_marker(tmp_path):
    assert backend_names() == ("lmdb", "leveldb", "memory")
    assert [backend_spec(n).marker for n in backend_names()] == ["data.mdb", "CURRENT", None]
    assert not store_exists(tmp_path / "s", "lmdb") and stores_at(tmp_path) == []
    open_kv(tmp_path / "s").close()
    assert store_exists(tmp_path / "s", "lmdb") and stores_at(tmp_path / "s") == ["lmdb"]
    assert not store_exists(None, "memory")
    from ember.store.base import STORE_MARKERS  # the old table, derived from the registry for its callers

    assert STORE_MARKERS == {"lmdb": "data.mdb", "leveldb": "CURRENT"}


def test_a_registered_backend_opens_through_open_kv():
    spec = register_backend(BackendSpec("scratch", "ember.store.memory", "MemoryStore", marker=None))
    try:
        kv = open_kv(None, "scratch")
        kv.put_many([(b"k", b"v")])
        assert kv.get_many([b"k"]) == [b"v"]
    finally:
        from ember.store import registry

        registry._SPECS.pop(spec.name)
    with pytest.raises(ValueError, match="backend 'scratch' is not one of 'lmdb', 'leveldb', 'memory'"):
        open_kv(None, "scratch")


def test_backend_modules_import_neither_base_nor_each_other():
    """lmdb.py and leveldb.py imported their disk helpers back from base.py, which picks them: an import circle."""
    for name in ("lmdb", "leveldb", "memory", "disk", "registry", "lmdbfile", "codec"):
        tree = ast.parse((STORE / f"{name}.py").read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not imported & {"ember.store.base", "ember.store.activations", "ember.store.lmdb", "ember.store.leveldb"}, name


def test_another_backends_folder_is_refused(tmp_path):
    open_kv(tmp_path / "s", "leveldb").close()
    with pytest.raises(StoreError, match=r"holds a leveldb store, not a lmdb one; open it with backend='leveldb'"):
        open_kv(tmp_path / "s", "lmdb")
