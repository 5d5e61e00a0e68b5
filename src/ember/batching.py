"""Length-aware batching: sort by length so batches carry little padding, then restore input order.

Padding alone wastes ~40% of the work at batch 32 on short-sentence data; every throughput path
(fill, bench, optimised serving) batches through here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def length_buckets(lengths: Sequence[int], batch_size: int, *, sort: bool = True) -> list[list[int]]:
    """Index batches of at most ``batch_size``; with ``sort`` the indices are ordered by length first.

    Example:
        >>> length_buckets([5, 1, 4, 2], 2)
        [[1, 3], [2, 0]]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i]) if sort else list(range(len(lengths)))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def map_in_buckets(
    items: Sequence[T],
    fn: Callable[[list[T]], Sequence[R]],
    batch_size: int,
    *,
    length: Callable[[T], int] = len,  # type: ignore[assignment]
    sort: bool = True,
) -> list[R]:
    """Apply ``fn`` to length-sorted batches of ``items``; results come back in input order.

    Example:
        >>> map_in_buckets(["ccc", "a", "bb"], lambda b: [s.upper() for s in b], 2)
        ['CCC', 'A', 'BB']
    """
    out: list[R | None] = [None] * len(items)
    for idx in length_buckets([length(x) for x in items], batch_size, sort=sort):
        results = fn([items[i] for i in idx])
        if len(results) != len(idx):
            raise ValueError(f"fn returned {len(results)} results for a batch of {len(idx)}")
        for i, r in zip(idx, results, strict=True):
            out[i] = r
    return out  # type: ignore[return-value]


def grouped_batches(lengths: Sequence[int], batch_size: int, *, seed: int = 0, group: int = 50) -> list[list[int]]:
    """Shuffled training batches of similar lengths (a fresh order per ``seed``).

    Indices are shuffled, cut into groups of ``group * batch_size``, each group sorted by length and cut
    into batches, and the batches shuffled again: every example is seen once per epoch, the order stays
    random, and each batch carries little padding.

    Example:
        >>> sorted(i for b in grouped_batches([3, 1, 2, 5, 4], 2) for i in b)
        [0, 1, 2, 3, 4]
    """
    import random

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    size = batch_size * max(1, group)
    batches = []
    for g in range(0, len(order), size):
        chunk = sorted(order[g : g + size], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


class GroupedBatchSampler:
    """A DataLoader ``batch_sampler`` over :func:`grouped_batches`, reshuffled every epoch."""

    def __init__(self, lengths: Sequence[int], batch_size: int, *, seed: int = 0, group: int = 50) -> None:
        self.lengths, self.batch_size, self.seed, self.group = list(lengths), batch_size, seed, group
        self.epoch = 0

    def __iter__(self):
        batches = grouped_batches(self.lengths, self.batch_size, seed=self.seed + self.epoch, group=self.group)
        self.epoch += 1
        return iter(batches)

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size
