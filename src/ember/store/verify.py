"""Check a whole store, as SQLite's ``PRAGMA integrity_check`` does: every entry, every record, every count.

An LMDB store is walked in a child process (``python -m ember.store.verify PATH``): some damage (a zeroed leaf
page) makes LMDB abort the process on an assertion inside its C code, which no ``except`` can catch. The child
reports its progress line by line, so when it dies the parent still says where the walk stopped.

What is checked:
- the store opens (its data file is whole, its format and fingerprint are readable);
- every entry read by a walk in key order passes its checksum and decodes, keys come in strictly increasing
  order (LevelDB and LMDB keep them sorted), and a lookup of each key finds it (a damaged branch page sends
  lookups to the wrong leaf: the entry is there but "missing", and a fill would write it twice);
- the number of entries walked equals the count the store keeps;
- every recorded split decodes and each key its ``states`` column lists is stored; label names are readable.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from ember.errors import StoreError
from ember.store.activations import ActivationStore
from ember.store.integrity import VerifyReport, verify_in_child, verify_open, walk
from ember.store.registry import backend_spec, stores_at

__all__ = ["VerifyReport", "verify_open", "verify_store", "walk"]


def verify_store(path: str | Path, backend: str | None = None, *, timeout: float | None = None) -> VerifyReport:
    """Check the store at ``path`` (its backend found from its files when not given).

    Args:
        path: the store's folder.
        backend: ``lmdb`` or ``leveldb``; ``None`` finds it.
        timeout: seconds the walk may take (a child process), ``None`` for no limit.

    Returns:
        a :class:`VerifyReport`; problems are reported, not raised.

    Example:
        >>> verify_store("states").ok  # doctest: +SKIP
        True
    """
    path = Path(path)
    if backend is None:
        found = stores_at(path)
        if not found:
            raise StoreError(f"no store at {path}: none of the files a store keeps is there; check the path")
        backend = found[0]
    spec = backend_spec(backend)
    if spec.concurrent_readers:
        return verify_in_child(path, backend, timeout)
    return _verify_here(path, backend)


def _verify_here(path: Path, backend: str, progress: Callable[[int, bytes], None] | None = None) -> VerifyReport:
    report = VerifyReport(str(path), backend)
    try:
        store = ActivationStore.open(path, None, backend=backend, readonly=True)  # type: ignore[arg-type]
    except StoreError as exc:
        report.add(f"the store cannot be opened: {exc}")
        return report
    with store:
        walk(store, report, progress)
    return report


def _main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ember.store.verify", description="check every entry of a store")
    parser.add_argument("path")
    parser.add_argument("--backend", default=None)
    args = parser.parse_args(argv)

    def progress(entries: int, last: bytes) -> None:
        print(json.dumps({"checked": entries, "last": last.hex()}), flush=True)

    path = Path(args.path)
    report = _verify_here(path, args.backend or (stores_at(path) or ["lmdb"])[0], progress)
    print(json.dumps({"report": report.to_dict()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
