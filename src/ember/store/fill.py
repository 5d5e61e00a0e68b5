"""The one fill: tokenize, skip what is stored, compute the rest length-sorted, commit per batch, record the split last.

Every writer of a store goes through here: recycling (split-layer states), the frozen-encoder cache (pooled
embeddings), teacher outputs, and the write-backs of ``record()``, ``use(write_back=True)`` and
``embed(write_back=True)``. What is computed is a :class:`Producer` (entries for a batch of id lists, plus the
fingerprint of what produced them); *where* batches are computed is an :class:`Executor` (this process by
default; Ray actors in ``ember.scale``). Killed at any moment, a rerun keeps every committed batch (each is one
atomic transaction), never sees a half-written entry and computes only what is missing.

::

    producer (states at layer k | pooled embedding | teacher logits)
       └─▶ fill_split(columns, index, split): keys ─▶ missing ─▶ length-sorted batches ─▶ executor.map(producer)
              ─▶ store.put per batch (atomic) ─▶ label names + split record written last
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable

import torch

from ember.batching import length_buckets
from ember.data.labels import encode_labels
from ember.errors import KeyCollisionError, StoreReadOnlyError
from ember.fixes import WRITABLE_COPY
from ember.progress import progress_bar
from ember.store.activations import ActivationStore, Entry, Split
from ember.store.fingerprint import Fingerprint
from ember.store.handle import StoreHandle
from ember.store.keys import KeyFn, KeyScheme, content_key

CONTENT = "content"  # the entry field that records what a custom key names (its content key), for collision checks


@runtime_checkable
class Producer(Protocol):
    """What a capability stores per example: entries computed for a batch of unpadded id lists.

    Producers are plain picklable objects holding their model, so an executor can run them in another process.
    """

    fingerprint: Fingerprint

    def entries(self, ids: list[list[int]]) -> list[Entry]:
        """One entry (named CPU tensors in the storage dtype) per id list, in order."""
        ...


class Executor(Protocol):
    """Where a fill's batches are computed: this process (:class:`LocalExecutor`) or elsewhere (Ray actors)."""

    def map(self, producer: Producer, batches: Sequence[list[list[int]]]) -> Iterator[tuple[int, list[Entry]]]:
        """Entries of each batch, as ``(batch index, entries)`` in any order; the fill commits each as it comes."""
        ...


class LocalExecutor:
    """Computes every batch in this process, in order."""

    def map(self, producer: Producer, batches: Sequence[list[list[int]]]) -> Iterator[tuple[int, list[Entry]]]:
        for i, batch in enumerate(batches):
            yield i, producer.entries(batch)


@dataclass
class FillReport:
    """What a fill did. ``keys`` are the examples' keys in input order (for building a dataset)."""

    examples: int
    unique: int
    already_stored: int
    computed: int
    seconds: float
    keys: list[bytes] = field(default_factory=list, repr=False)
    split: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("keys")
        return d


class _Compute:
    """A bare ``compute(ids) -> entries`` function as a producer (callers of :func:`fill` that have no fingerprint)."""

    fingerprint = None

    def __init__(self, fn) -> None:
        self.entries = fn


def fill(
    store: ActivationStore,
    ids: Sequence[Sequence[int]],
    compute: Producer | object,
    *,
    batch_size: int = 64,
    key_fn: KeyFn = content_key,
    keys: Sequence[bytes] | None = None,
    progress: bool = True,
    description: str = "filling store",
    executor: Executor | None = None,
    check: Callable[[list[Entry]], None] | None = None,
) -> FillReport:
    """Compute and store the entries of every example that is not stored yet.

    Args:
        store: destination; each batch is committed in one transaction.
        ids: token ids per example (unpadded, already truncated).
        compute: a :class:`Producer`, or a function mapping a batch of id lists to one entry per example.
        batch_size: examples per compute call and per commit.
        key_fn: key of one example's ids (content hash by default, never the dataset index).
        keys: the examples' keys, computed beforehand (e.g. from their texts); ``key_fn`` is then unused.
        executor: where batches are computed (default: this process).
        check: called with each batch's entries before they are committed, in this process (e.g. a shape check
            against what the store recorded); raising stops the fill with every earlier batch committed.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    producer = compute if isinstance(compute, Producer) else _Compute(compute)
    start = time.perf_counter()
    if keys is None:
        keys = [key_fn(x) for x in ids]
    elif len(keys) != len(ids):
        raise ValueError(f"{len(ids)} examples but {len(keys)} keys")
    first: dict[bytes, int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    todo = [first[k] for k in store.missing(list(first))]
    # Length-sorted batches: padding is (almost) never computed.
    groups = [[todo[j] for j in b] for b in length_buckets([len(ids[i]) for i in todo], batch_size)]
    batches = [[list(ids[i]) for i in idx] for idx in groups]
    with progress_bar(len(todo), description, enabled=progress) as advance:
        for b, entries in (executor or LocalExecutor()).map(producer, batches):
            if check is not None:
                check(entries)
            commit(store, [keys[i] for i in groups[b]], entries)
            advance(len(groups[b]))
    return FillReport(
        examples=len(ids),
        unique=len(first),
        already_stored=len(first) - len(todo),
        computed=len(todo),
        seconds=time.perf_counter() - start,
        keys=list(keys),
    )


def commit(store: ActivationStore, keys: Sequence[bytes], entries: Sequence[Entry]) -> None:
    """Write one batch of computed entries in one atomic transaction: the single point every writer goes through."""
    store.put(keys, entries)


def write_back(store: ActivationStore, keys: Sequence[bytes], entries: Sequence[Entry]) -> int:
    """Store entries computed outside a fill (``record()``, ``use(write_back=True)``, ``embed(write_back=True)``):
    one per distinct key (the first), only those the store does not hold yet, in one transaction.

    Returns:
        how many entries were written.
    """
    first: dict[bytes, Entry] = {}
    for k, e in zip(keys, entries, strict=True):
        first.setdefault(k, e)
    new = store.missing(list(first))
    if new:
        commit(store, new, [first[k] for k in new])
    return len(new)


def with_content(entries: list[Entry], ids: Sequence[Sequence[int]]) -> list[Entry]:
    """Entries that also record what their (custom) key names: the content key of their ids, as 16 uint8s."""
    for e, x in zip(entries, ids, strict=True):
        e[CONTENT] = torch.tensor(list(content_key(x)), dtype=torch.uint8)  # (16,)
    return entries


@dataclass
class Column:
    """One key column of a split: where its entries go, what computes them, and the examples' ids and keys.

    Recycling and teacher outputs have one column (their store also holds the split); the encoder cache has
    one per encoder, with the split in a separate index store.
    """

    name: str
    handle: StoreHandle
    producer: Producer
    ids: list[list[int]]
    keys: list[bytes]
    description: str = "filling store"  # the progress bar's label
    check: Callable[[list[Entry]], None] | None = None  # see fill()


@dataclass
class SplitLabels:
    """A split's labels as class ids, with the store's full list of label names (``None`` for integer labels)."""

    ids: list[int]
    names: list[str] | None

    @classmethod
    def encode(cls, labels: Sequence | None, index: ActivationStore, count: int) -> SplitLabels | None:
        """Map user labels to ids, new names appended after the ones ``index`` knows (ids never move)."""
        if labels is None:
            return None
        ids, names = encode_labels(labels, index.label_names, count=count)
        return cls(ids, names)


def fill_split(
    columns: Sequence[Column],
    index: StoreHandle,
    split: str,
    labels: SplitLabels | None = None,
    *,
    lengths: bool = False,
    why: str = "this fill",
    fix: str = "open it with readonly=False in one process to fill it",
    batch_size: int = 64,
    progress: bool = True,
    executor: Executor | None = None,
) -> dict[str, FillReport]:
    """Fill every column's store with what is missing, then record the split (keys per column, labels, lengths).

    A handle is made the writer only when something must be written there, and given back after; one that
    cannot be written (``readonly=True``, or its folder read-only) refuses the fill before anything is computed,
    naming what it would have had to write. The split record (and new label names) is written last, once every
    column is complete, so a split that exists is always whole.

    Returns:
        each column's :class:`FillReport`, by column name.
    """
    record = Split({c.name: c.keys for c in columns}, None if labels is None else labels.ids,
                   [len(x) for x in columns[0].ids] if lengths else None)
    needs = _plan(columns, index, split, labels, record)
    _refuse_unwritable(needs, why, fix)
    reports: dict[str, FillReport] = {}
    with ExitStack() as writers:
        for handle, reasons in needs.values():
            try:
                writers.enter_context(handle.writing(why))
            except StoreReadOnlyError as exc:  # its folder cannot be written (a read-only mount, another user's files)
                raise StoreReadOnlyError(
                    f"{why} needs to write {handle.what} at {handle.path} ({'; '.join(reasons)}), {WRITABLE_COPY} "
                    "(a copy of this store keeps what it holds)", fixes=[WRITABLE_COPY]
                ) from exc
        for c in columns:
            reports[c.name] = fill(c.handle.store, c.ids, c.producer, batch_size=batch_size, keys=c.keys,
                                   progress=progress, description=c.description, executor=executor,
                                   check=c.check)
            reports[c.name].split = split
        if id(index) in needs:  # written last: a split is recorded only once all its examples are committed
            if labels is not None and labels.names:
                index.store.merge_label_names(labels.names)
            if index.store.find_split(split) != record:
                index.store.add_split(split, record)
    return reports


def _plan(columns: Sequence[Column], index: StoreHandle, split: str, labels: SplitLabels | None,
          record: Split) -> dict[int, tuple[StoreHandle, list[str]]]:
    """What each store must be written for, as ``{id(handle): (handle, reasons)}`` (only handles with reasons)."""
    needs: dict[int, tuple[StoreHandle, list[str]]] = {}

    def need(handle: StoreHandle, reason: str) -> None:
        needs.setdefault(id(handle), (handle, []))[1].append(reason)

    for c in columns:
        missing = c.handle.store.missing(c.keys)
        if missing:
            need(c.handle, f"{len(missing)} of {len(set(c.keys))} distinct examples are not stored yet")
    known = index.store.label_names or []
    if labels is not None and labels.names and labels.names != known:
        need(index, f"new label names {labels.names[len(known):][:5]}")
    previous = index.store.find_split(split)
    if previous is None:
        need(index, f"split {split!r} is not recorded yet")
    elif previous != record:
        need(index, f"split {split!r} is recorded with other examples or labels")
    return needs


def _refuse_unwritable(needs: dict[int, tuple[StoreHandle, list[str]]], why: str, fix: str) -> None:
    """Raise before any work when a store that must be written cannot be."""
    for handle, reasons in needs.values():
        if handle.readonly or (handle.backend == "given" and not handle.writer):
            raise StoreReadOnlyError(handle.refusal(f"{why} needs to write {handle.what} at {handle.path} "
                                                    f"({'; '.join(reasons)})", fix))


def check_keys_unique(scheme: KeyScheme, texts: Sequence[str], ids: Sequence[Sequence[int]], keys: Sequence[bytes],
                      store: ActivationStore, owner: str) -> None:
    """A custom key must name one input: within these examples and against what ``store`` holds already.

    Content keys are the content's hash and need no check. Entries filled under a custom scheme record the
    content key of their ids (:func:`with_content`), which is what stored entries are checked against.
    """
    if not scheme.custom:
        return
    seen: dict[bytes, tuple[bytes, int]] = {}
    for i, (k, x) in enumerate(zip(keys, ids, strict=True)):
        c = content_key(x)
        j = seen.setdefault(k, (c, i))
        if j[0] != c:
            raise KeyCollisionError(
                f"the key extractor {scheme.name!r} of {owner} gave the same key to two different inputs: "
                f"{texts[j[1]]!r} (example {j[1]}) and {texts[i]!r} (example {i}); a key must identify the input "
                "itself (a dataset index collides between train and validation). Use the default content key or "
                "make the extractor unique per input."
            )
    for k, e in zip(seen, store.get(list(seen)), strict=True):
        if e is not None and CONTENT in e and bytes(e[CONTENT].tolist()) != seen[k][0]:
            i = seen[k][1]
            raise KeyCollisionError(
                f"the key extractor {scheme.name!r} of {owner} gave example {i} ({texts[i]!r}) a key that the store "
                "already holds for a different input (an index-like key reused across splits?). Make the extractor "
                "unique per input, or use the default content key."
            )
