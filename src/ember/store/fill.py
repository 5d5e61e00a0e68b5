"""The one fill loop: tokenize, skip what is stored, compute the rest length-sorted, commit per batch.

Used by recycling (split-layer states), the frozen-encoder cache (pooled embeddings) and any other
producer of per-example tensors. Killed at any moment, a rerun keeps every committed batch (each is
one atomic transaction), never sees a half-written entry and computes only what is missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from ember.batching import length_buckets
from ember.progress import progress_bar
from ember.store.activations import ActivationStore, Entry
from ember.store.keys import KeyFn, content_key

Compute = Callable[[list[list[int]]], list[Entry]]


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


def fill(
    store: ActivationStore,
    ids: Sequence[Sequence[int]],
    compute: Compute,
    *,
    batch_size: int = 64,
    key_fn: KeyFn = content_key,
    keys: Sequence[bytes] | None = None,
    progress: bool = True,
    description: str = "filling store",
) -> FillReport:
    """Compute and store the entries of every example that is not stored yet.

    Args:
        store: destination; each batch is committed in one transaction.
        ids: token ids per example (unpadded, already truncated).
        compute: maps a batch of id lists to one entry dict per example (unpadded tensors).
        batch_size: examples per compute call and per commit.
        key_fn: key of one example's ids (content hash by default, never the dataset index).
        keys: the examples' keys, computed beforehand (e.g. from their texts); ``key_fn`` is then unused.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    start = time.perf_counter()
    if keys is None:
        keys = [key_fn(x) for x in ids]
    elif len(keys) != len(ids):
        raise ValueError(f"{len(ids)} examples but {len(keys)} keys")
    first: dict[bytes, int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    todo = [first[k] for k in store.missing(list(first))]
    with progress_bar(len(todo), description, enabled=progress) as advance:
        # Length-sorted batches: padding is (almost) never computed.
        for b in length_buckets([len(ids[i]) for i in todo], batch_size):
            idx = [todo[j] for j in b]
            entries = compute([list(ids[i]) for i in idx])
            store.put([keys[i] for i in idx], entries)
            advance(len(idx))
    return FillReport(
        examples=len(ids),
        unique=len(first),
        already_stored=len(first) - len(todo),
        computed=len(todo),
        seconds=time.perf_counter() - start,
        keys=list(keys),
    )
