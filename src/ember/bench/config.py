"""How a benchmark measures: batch size, sample counts, threads, bucketing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class BenchConfig:
    """Settings of :class:`~ember.bench.harness.PerformanceBenchmark`.

    Args:
        batch_size: batch size of the throughput runs.
        latency_samples: how many real inputs are timed one at a time (batch 1) for p50/p90/p99.
        warmup: untimed batch-1 calls before the latency samples (and warm-up batches before throughput).
        throughput_examples: examples per throughput run (at most the dataset size; no repeats of inputs).
        threads: torch intra-op threads during the run; ``None`` keeps the current setting. Recorded either way.
        bucketing: report the length-bucketed throughput as the headline ``throughput``.
        max_length: truncation length of the tokenizer.
        repeats: throughput runs per mode; the median is reported.
        fidelity_examples: texts compared against the reference variant (padded batches of mixed lengths).
        fidelity_batch_size: batch size of those comparison batches.
        interleave: time the variants side by side in ``repeats`` rounds (each round, every variant in turn runs
            its batch-1 latency block and its throughput passes, the first variant one place on each round), so
            a slow spell of a shared machine falls on all of them alike; latency pools the rounds' calls. Every
            variant is alive for the whole run. Off: each variant is measured in full before the next.
        blocks: with ``interleave``, each round's timed work of a variant (its batch-1 calls, and each of its two
            throughput passes) is cut into this many blocks, and the variants take turns block by block (the first
            one place on each block): a slow spell shorter than a round then falls on every variant in about the
            same share, where in whole turns it falls on whichever variant's turn it covers. Each batch-1 block
            starts with :attr:`rewarm_calls` untimed calls (the weights back in the caches after the other
            variants' blocks); a round's throughput is its examples over the summed time of its blocks. ``1``:
            whole turns. In either, each turn starts once the last variant's threads are idle
            (:func:`~ember.bench.timing.wait_for_quiet`).

    Example:
        >>> BenchConfig(batch_size=16, latency_samples=100).repeats
        3
    """

    batch_size: int = 32
    latency_samples: int = 300
    warmup: int = 10
    throughput_examples: int = 2000
    threads: int | None = None
    bucketing: bool = True
    max_length: int = 128
    repeats: int = 3
    fidelity_examples: int = 512
    fidelity_batch_size: int = 8
    interleave: bool = False
    blocks: int = 1

    def __post_init__(self) -> None:
        for name in ("batch_size", "latency_samples", "throughput_examples", "max_length", "repeats",
                     "fidelity_examples", "fidelity_batch_size", "blocks"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"BenchConfig.{name} must be a positive integer, got {v!r}")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"BenchConfig.warmup must be an integer >= 0, got {self.warmup!r}")
        if not isinstance(self.interleave, bool):
            raise ValueError(f"BenchConfig.interleave must be True or False, got {self.interleave!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"BenchConfig.threads must be None or a positive integer, got {self.threads!r}")

    @property
    def rewarm_calls(self) -> int:
        """Untimed batch-1 calls before each latency block: 2 when the rounds are cut into
        :attr:`blocks` (a cache emptied by another variant refills in the first call; the second makes sure),
        else 0 (the warm-up before the rounds covers a variant's single block)."""
        return 2 if self.interleave and self.blocks > 1 else 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> BenchConfig:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})
