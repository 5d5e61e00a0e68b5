"""The one read-only policy: a store is opened for reading, and becomes the writer only while something is written.

Every capability (recycling, the encoder cache, teacher outputs) reaches its stores through a
:class:`StoreHandle`. An on-disk store that exists is opened read-only, so any number of processes (a sweep,
a serving process, a second run) read it while one of them writes; the writer lock is taken by the code that
has something to write (a fill, ``record()``, a write-back) and given back when it is done. A store that does
not exist yet is created by the writer; an in-memory store is always writable. ``readonly=True`` means
"never write": whatever would write is refused with :class:`~ember.errors.StoreReadOnlyError` before any work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

from ember.errors import StoreLockedError, StoreMismatchError, StoreReadOnlyError
from ember.store.activations import ActivationStore
from ember.store.base import Backend
from ember.store.fingerprint import Fingerprint
from ember.store.registry import backend_spec, store_exists  # noqa: F401  (store_exists: callers import it here)


class StoreHandle:
    """One store of a capability, opened read-only while it is only read and as the writer while written.

    Args:
        path: the store's folder; ``None`` for an in-memory store.
        fingerprint: what this run stores; an existing store must match it (:class:`StoreMismatchError`).
        backend: ``lmdb``, ``leveldb`` or ``memory``.
        readonly: never take the writer lock; the store must exist.
        what: how messages name this store (``"the store of encoder 'query'"``, ``"the store"``).
        opened_as: how messages say it was made read-only (``"it was opened with readonly=True"``).
        mismatch: rewords a fingerprint mismatch for this capability (gets the error, returns the one to raise).
        give_back: give the writer lock back once a write is done (the encoder cache, which many processes
            share); ``False`` keeps it once taken (the recycler, whose contexts read the store from several
            threads while a fill may write: reopening it under them would close the store they read).
        guard: a context every reopen runs in (the recycler's: a context's forwards finish first).
        options: backend options (``max_size`` for LMDB).

    Example:
        >>> h = StoreHandle(None, fp, backend="memory")                 # doctest: +SKIP
        >>> with h.writing("fill"):                                     # doctest: +SKIP
        ...     h.store.put(keys, entries)
    """

    def __init__(
        self,
        path: str | Path | None,
        fingerprint: Fingerprint | None,
        *,
        backend: Backend = "lmdb",
        readonly: bool = False,
        what: str = "the store",
        opened_as: str = "it was opened with readonly=True",
        mismatch=None,
        give_back: bool = True,
        guard: Callable[[], AbstractContextManager] | None = None,
        **options,
    ) -> None:
        self.path = None if path is None else Path(path)
        self.backend: Backend = "memory" if self.path is None else backend
        self.fingerprint, self.readonly, self.what, self.opened_as = fingerprint, readonly, what, opened_as
        self._mismatch, self._options, self.give_back, self._guard = mismatch, options, give_back, guard
        # A store that exists is read; one that does not is created by this (writable) handle. Read-only, a
        # missing store is the backend's error, which says to fill it first.
        self.store = self._open(readonly=readonly or self.exists())

    @classmethod
    def wrap(cls, store: ActivationStore, what: str = "the store", *, expect: Fingerprint | None = None,
             refusal: str = "") -> StoreHandle:
        """A handle over a store the caller opened: written as it was opened (read-only stays read-only).

        With ``expect``, a store made with another fingerprint is refused: :class:`StoreMismatchError` with
        ``refusal`` formatted with the store's ``path`` and the differing fields as ``lines``.
        """
        if expect is not None and store.fingerprint != expect:
            differences = store.fingerprint.diff(expect) if store.fingerprint else ["it has no fingerprint"]
            raise StoreMismatchError(refusal.format(path=store.path, lines="\n  ".join(differences)), differences)
        handle = cls.__new__(cls)
        handle.path, handle.backend, handle.fingerprint = store.path, "given", store.fingerprint
        handle.readonly, handle.what, handle._mismatch, handle._options = store.kv.readonly, what, None, {}
        handle.opened_as, handle.give_back, handle._guard = "it was opened with readonly=True", True, None
        handle.store = store
        return handle

    def exists(self) -> bool:
        """Whether the store is on disk already (an in-memory store never is)."""
        return store_exists(self.path, self.backend)

    @property
    def writer(self) -> bool:
        """Whether the store is open for writing now."""
        return not self.store.kv.readonly

    def take_writer(self, why: str) -> bool:
        """Reopen as the writer, for ``why`` (:class:`StoreLockedError` if another process writes); True when
        it was read-only (so the caller gives it back with :meth:`release_writer`)."""
        if self.writer:
            return False
        if self.readonly or self.backend == "given":
            raise StoreReadOnlyError(self.refusal(f"{why} needs to write {self.what} at {self.path}"))
        with self._guard() if self._guard is not None else nullcontext():
            self.store.close()
            try:
                self.store = self._open(readonly=False)
            except BaseException:
                self.store = self._open(readonly=True)
                raise
        return True

    def refusal(self, clause: str, fix: str = "open it with readonly=False in one process to write it") -> str:
        """The message refusing a write to this read-only store: ``clause``, why it is read-only, and ``fix``."""
        return f"{clause}, but {self.opened_as}; {fix}"

    def blocked(self) -> Exception | None:
        """Why this process could not write the store now (another process holds the writer lock, or its folder
        cannot be written), found by taking the writer and giving it back; ``None`` when it could."""
        if self.writer:
            return None
        try:
            self.take_writer("a probe")
        except (StoreReadOnlyError, StoreLockedError) as exc:
            return exc
        self.release_writer()
        return None

    def release_writer(self) -> None:
        """Give the writer lock back (reopen read-only); a no-op for in-memory, given or read-only stores."""
        if self.backend == "given" or not backend_spec(self.backend).on_disk or not self.writer:
            return
        with self._guard() if self._guard is not None else nullcontext():
            self.store.close()
            self.store = self._open(readonly=True)

    @contextmanager
    def writing(self, why: str, needed: bool = True) -> Iterator[ActivationStore]:
        """The store as the writer while the block runs (when ``needed``), and the writer lock given back after
        (also when this handle created the store and held it since) unless the handle keeps it (``give_back``)."""
        if not needed:
            yield self.store
            return
        self.take_writer(why)
        try:
            yield self.store
        finally:
            if self.give_back:
                self.release_writer()

    def _open(self, readonly: bool) -> ActivationStore:
        try:
            return ActivationStore.open(self.path, self.fingerprint, backend=self.backend, readonly=readonly, **self._options)
        except StoreMismatchError as exc:
            if self._mismatch is None:
                raise
            raise self._mismatch(exc) from None

    def close(self) -> None:
        self.store.close()
