"""Timing for work that is not one model call on texts: named stretches (laps), and tasks run side by side.

:class:`~ember.bench.harness.PerformanceBenchmark` times models on texts. Training steps, epochs, the phases
of one step, store reads and fills are timed here, by the same rules: warm-up laps are not counted, every
contender runs in turn on the same items (so a slow spell of a shared machine falls on all of them alike),
medians are reported, and the figures are data (:class:`TimingStats`).

Example:
    >>> laps = Laps(warmup=1)
    >>> for _ in range(3):
    ...     with laps.lap("sleep"):
    ...         pass
    >>> laps.stats()["sleep"].n
    2
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TypeVar

T = TypeVar("T")


def quantile(seconds: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) with linear interpolation between neighbours, as numpy's default.

    Example:
        >>> quantile([1.0, 2.0, 3.0, 4.0], 0.5)
        2.5
    """
    if not seconds:
        raise ValueError("quantile of no figures")
    xs = sorted(seconds)
    pos = q * (len(xs) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def parts(n: int, blocks: int) -> list[slice]:
    """``n`` items cut into ``min(blocks, n)`` contiguous slices of near-equal size (at least one, even for 0 items).

    Example:
        >>> parts(5, 2)
        [slice(0, 2, None), slice(2, 5, None)]
    """
    k = max(1, min(blocks, n))
    edges = [i * n // k for i in range(k + 1)]
    return [slice(a, b) for a, b in zip(edges, edges[1:], strict=False)]


def wait_for_quiet(max_s: float = 1.0, window_s: float = 0.01, share: float = 0.1, *,
                   clock: Callable[[], float] = time.perf_counter, cpu: Callable[[], float] = time.process_time,
                   sleep: Callable[[float], None] = time.sleep) -> float:
    """Wait until this process's threads are idle: a ``window_s`` stretch in which they used under ``share`` of
    it in CPU time (or ``max_s`` passed). Returns the seconds waited.

    Why: engines' thread pools keep spinning after a call returns, and steal the cores from whatever runs next.
    Measured on MiniLM-L6 (2 threads, a Zen 4, ``benchmarks/engine_switch.py``, BENCHMARKS.md): ONNX Runtime's
    threads spun ~50 ms after each call, PyTorch's ~20 ms, OpenVINO's under 10; an OpenVINO batch of 32 started
    right after an ONNX Runtime call ran x1.15 (paragraphs) to x1.69 (intents) slower than after its own (x1.8–2.6 at
    batch 1), and within 2.4% of it once this returned. Timing
    engines side by side in short turns (``BenchConfig.blocks``) would otherwise charge that to whichever engine
    follows an ONNX Runtime one.

    Example:
        >>> wait_for_quiet(window_s=0.001) < 1.5
        True
    """
    start = clock()
    while True:
        w0, c0 = clock(), cpu()
        sleep(window_s)
        w1, c1 = clock(), cpu()
        if c1 - c0 < share * (w1 - w0) or w1 - start >= max_s:
            return w1 - start


@dataclass(frozen=True)
class TimingStats:
    """Summary of repeated timings of one thing, in seconds.

    Example:
        >>> TimingStats.of([0.002, 0.004, 0.003]).median_ms
        3.0
    """

    n: int
    median_s: float
    p90_s: float
    mean_s: float
    min_s: float
    total_s: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> TimingStats:
        """Summarise ``seconds`` (at least one figure)."""
        if not seconds:
            raise ValueError("no timings to summarise; was every lap a warm-up lap?")
        return cls(len(seconds), quantile(seconds, 0.5), quantile(seconds, 0.9), sum(seconds) / len(seconds),
                   min(seconds), sum(seconds))

    @property
    def median_ms(self) -> float:
        return 1000.0 * self.median_s

    def to_dict(self) -> dict:
        return asdict(self)


class Laps:
    """Wall time of named stretches of work, recorded as they run.

    Args:
        warmup: the first ``warmup`` laps of each name are run but not counted.

    Example:
        >>> laps = Laps()
        >>> with laps.lap("epoch"):
        ...     pass
        >>> len(laps.seconds("epoch"))
        1
    """

    def __init__(self, warmup: int = 0) -> None:
        if not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"Laps(warmup=) must be an integer >= 0, got {warmup!r}")
        self.warmup = warmup
        self._seen: dict[str, int] = {}
        self._seconds: dict[str, list[float]] = {}

    @contextmanager
    def lap(self, name: str) -> Iterator[None]:
        """Time the ``with`` block as one lap of ``name``."""
        start = time.perf_counter()
        yield
        self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        """Record a lap timed elsewhere (a warm-up lap while fewer than ``warmup`` of ``name`` were seen)."""
        seen = self._seen.get(name, 0)
        self._seen[name] = seen + 1
        counted = self._seconds.setdefault(name, [])
        if seen >= self.warmup:
            counted.append(seconds)

    @property
    def names(self) -> list[str]:
        """Names in the order their first lap ran."""
        return list(self._seconds)

    def seconds(self, name: str) -> list[float]:
        """The counted laps of ``name``, in order."""
        if name not in self._seconds:
            raise KeyError(f"no laps named {name!r}; timed: {self.names}")
        return list(self._seconds[name])

    def stats(self) -> dict[str, TimingStats]:
        """Name -> summary of its counted laps (names with none counted yet are left out)."""
        return {n: TimingStats.of(s) for n, s in self._seconds.items() if s}

    def medians_ms(self) -> dict[str, float]:
        """Name -> median lap in milliseconds."""
        return {n: s.median_ms for n, s in self.stats().items()}


def interleave(tasks: Mapping[str, Callable[[T], object]], items: Iterable[T], *, laps: Laps | None = None,
               rotate: bool = True) -> Laps:
    """Run every item through every task in turn and time each call: side by side, on the same items.

    With ``rotate`` the task that goes first moves one place on from item to item, so none always runs
    right after the same neighbour (whose cache use or heat it would inherit).

    Args:
        tasks: name -> callable taking one item (a batch, a round number ...).
        items: what each task is called with, in order.
        laps: where to record (default: a new ``Laps()``); give ``Laps(warmup=1)`` to drop each task's first call.

    Returns:
        The laps, one per task per item.

    Example:
        >>> laps = interleave({"a": lambda i: i + 1, "b": lambda i: i * 2}, range(3))
        >>> [len(laps.seconds(n)) for n in ("a", "b")]
        [3, 3]
    """
    laps = laps if laps is not None else Laps()
    order = list(tasks.items())
    for k, item in enumerate(items):
        shift = k % len(order) if rotate and order else 0
        for name, task in order[shift:] + order[:shift]:
            with laps.lap(name):
                task(item)
    return laps
