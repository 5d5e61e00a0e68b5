"""Disk helpers the on-disk backends share: a writable folder, free space, and full-disk errors.

Kept apart from :mod:`ember.store.base` so that each backend module imports only this and ``ember.errors``
(no import back into the module that picks backends).
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from ember.errors import StoreCorruptError, StoreFullError, StoreReadOnlyError
from ember.fixes import FREE_DISK, WRITABLE_LOCATION


def ensure_writable_dir(path: Path) -> None:
    """Create ``path`` and prove it can be written, with an error that names the fix otherwise."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".ember-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise StoreReadOnlyError(
                f"cannot write the store at {path}: {exc.strerror}. {WRITABLE_LOCATION}.", fixes=[WRITABLE_LOCATION]
            ) from exc
        if exc.errno == errno.ENOSPC:
            raise full_disk_on_open(path, exc) from exc
        raise


def error_text(exc: BaseException) -> str:
    """``str(exc)`` for a message, with a bytes reason decoded: plyvel's errors carry bytes, which ``str`` shows
    as ``b'IO error: ...'``.

    Example:
        >>> error_text(OSError(b"IO error: /s/LOCK: already held by process"))
        'IO error: /s/LOCK: already held by process'
    """
    if len(exc.args) == 1 and isinstance(exc.args[0], bytes | bytearray):
        return bytes(exc.args[0]).decode("utf-8", "replace")
    return str(exc)


def full_disk_on_open(path: Path, exc: BaseException | None = None, free: int | None = None) -> StoreFullError:
    """The error raised when a store cannot be created or opened because its disk is full (``free`` bytes left,
    read from the disk when not given; ``exc`` the failure, if one happened)."""
    free = free_bytes(path) if free is None else free
    detail = "; ".join(
        part for part in ("" if free is None else f"{free / 2**20:.1f} MiB free", "" if exc is None else error_text(exc)) if part
    )
    return StoreFullError(
        f"cannot open the store at {path}: the disk holding it is full ({detail}), and creating a store (or the lock "
        "file LMDB keeps beside one) writes to it. Free disk space, or point the store at a folder on another disk, "
        "and rerun; a store already there keeps every entry committed."
    )


def full_disk_error(path: Path | None, exc: BaseException, committed: int, *, disk: bool = False,
                    free: int | None = None) -> StoreFullError:
    """The error raised when a write hits a full disk (``disk``, with the bytes ``free`` when known) or the
    store's size limit; nothing committed is lost."""
    if not disk:
        return StoreFullError(
            f"the store at {path} is full ({error_text(exc)}). The {committed} entries committed before stay valid and "
            f"nothing half-written was kept; {FREE_DISK} and rerun the same command: "
            "it computes only what is missing.", fixes=[FREE_DISK]
        )
    left = "" if free is None else f"{free / 2**20:.1f} MiB free; "
    return StoreFullError(
        f"the disk holding the store at {path} is full ({left}the write failed with {error_text(exc)}). The {committed} "
        "entries committed before stay valid and nothing half-written was kept; free disk space, or point the "
        "store at a folder on another disk, and rerun the same command: it computes only what is missing."
    )


def as_full_disk(exc: BaseException, path: Path, needed: int, committed: Callable[[], int]) -> StoreFullError | None:
    """The :class:`StoreFullError` to raise when ``exc``, from a write of ``needed`` bytes, means the disk is full;
    else None (the caller raises its own error).

    ENOSPC says so itself. A commit that fills a tmpfs fails with EIO instead (LMDB): that one is a full
    disk only when the disk has too little free for the write (under ``needed`` or :data:`DISK_MARGIN`);
    any other I/O error keeps its own message, not mislabelled.
    ``committed`` counts the entries committed before, for the message.
    """
    if not means_full_disk(exc, path, needed):
        return None
    return full_disk_error(path, exc, committed(), disk=True, free=free_bytes(path))


def means_full_disk(exc: BaseException, path: Path, needed: int = 0) -> bool:
    """Whether ``exc``, from a write of ``needed`` bytes to the store at ``path``, says its disk is full (see
    :func:`as_full_disk`)."""
    code = getattr(exc, "errno", None) or getattr(exc, "code", None)  # OSError, lmdb.Error
    text = error_text(exc)
    if code == errno.ENOSPC or "No space left" in text:
        return True
    if code == errno.EIO or "Input/output error" in text:
        free = free_bytes(path)
        return free is not None and free < max(needed, DISK_MARGIN)
    return False


def write_size(items: Sequence[tuple[bytes, bytes]]) -> int:
    """Bytes of the keys and values of ``items``: the least a write of them needs on disk."""
    return sum(len(k) + len(v) for k, v in items)


DISK_MARGIN = 1 << 20  # bytes: a disk with less free than this (or than the write) is full for a store


def free_bytes(path: Path) -> int | None:
    """Bytes free on the disk holding ``path``, or that would hold it (its nearest existing folder); None when
    that cannot be read."""
    path = Path(path)
    try:
        while not path.exists() and path.parent != path:
            path = path.parent
        return shutil.disk_usage(path).free
    except OSError:
        return None


def damaged_store(path: Path | None, detail: str) -> StoreCorruptError:
    """The error a backend raises when its own files turn out damaged while reading or writing (``detail``: the
    backend's words). It names the store and the fix; the store's users share it, so it names no fill command.

    Example:
        >>> str(damaged_store(Path("s"), "LMDB: page not found"))[:60]
        'the store at s is damaged (LMDB: page not found). Run `ember'
    """
    return StoreCorruptError(
        f"the store at {path} is damaged ({detail}). Run `ember store verify {path}` to list the damage, then delete "
        "the store and fill it again (rerun the fill: it computes everything)."
    )
