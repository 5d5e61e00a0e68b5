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
