"""Is the optimised model faster? ``optimize`` times the artifact against the original on the verification inputs.

An "optimised" model that is slower than the one it replaces is a silent regression: torch's bf16 autocast ran 2.1x
slower than fp32 at batch 1 on an AMX Xeon, torchao's dynamic int8 4.1x (issue #19). So every artifact carries a
:class:`SpeedReport` beside its fidelity report, and the config's ``on_slower`` policy warns about (or refuses) one
that is slower than the original at its ``objective``.

How it is timed (the host is shared and moves 30-50% within the hour, so one timing of each is not evidence):

    verification sentences ─▶ up to 8 single inputs (batch 1) + one padded batch of up to 32
    warm-up: every input through both models, twice (lazy initialisation, compiles, caches)
    rounds: original and artifact in turn, the order flipped every round; per round, each one's mean time per
            batch-1 call and its time for the batch; the ratio original / artifact per round (pairs cancel drift)
    at least 5 rounds; more (up to 40, or ~2 s) only while the verdict is unclear
    reported: medians over rounds, and how often the artifact was the slower one

"Slower" needs both a median speed-up under 0.97 and the artifact slower in at least 3 of 4 rounds, so noise on a
tie does not read as a regression. Never a wall-clock threshold in a test: the policy is tested on injected figures.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import torch

Objective = Literal["latency", "throughput", "both"]
OnSlower = Literal["raise", "warn", "ignore"]

MIN_TEXTS = 4  # fewer verification sentences than this are too few to time a batch against the original
MAX_SINGLES = 8  # batch-1 inputs timed per round
MAX_BATCH = 32  # the batch timed per round
MIN_ROUNDS, MAX_ROUNDS = 5, 40
BUDGET_S = 2.0  # extra rounds (past MIN_ROUNDS) only while the verdict is unclear and this much time is not spent
NOISE = 0.03  # a median speed-up within 3% of 1 is a tie
CONSISTENT = 0.75  # "slower" also needs the artifact slower in this share of rounds
# the rule in words, for reports that judge by it (kept beside the numbers it spells)
SLOWER_RULE = f"median speed-up under {1 - NOISE:.2f}x and slower in at least {CONSISTENT:.0%} of the rounds"

_PARTS = {"latency": ("batch1",), "throughput": ("batch",), "both": ("batch1", "batch")}


@dataclass
class SpeedReport:
    """The artifact timed against the original, side by side, on the same inputs.

    Attributes:
        cpu: the CPU it was measured on (:meth:`ember.hardware.CpuFeatures.summary`).
        threads: torch's threads during the timing (engines run on their configured threads).
        batch1_ms: median ms per batch-1 call, ``{"original": ..., "artifact": ...}``.
        batch_ms: median ms per call on the batch of ``batch_size`` sentences, the same keys.
        speedup_batch1, speedup_batch: median over rounds of original time / artifact time (> 1: faster).
        slower_share_batch1, slower_share_batch: share of rounds in which the artifact was the slower one.
        n_single, batch_size, rounds, seconds: what was timed, how often, and how long it took.
        skipped: why nothing was timed (then every figure is ``None``).

    Example:
        >>> r = SpeedReport(cpu="AMD EPYC", threads=2, batch1_ms={"original": 8.0, "artifact": 2.0}, speedup_batch1=4.0)
        >>> r.slower("batch1")
        False
    """

    cpu: str = ""
    threads: int | None = None
    batch1_ms: dict[str, float] | None = None
    batch_ms: dict[str, float] | None = None
    speedup_batch1: float | None = None
    speedup_batch: float | None = None
    slower_share_batch1: float | None = None
    slower_share_batch: float | None = None
    n_single: int = 0
    batch_size: int = 0
    rounds: int = 0
    seconds: float = 0.0
    skipped: str | None = None

    def slower(self, part: str) -> bool:
        """Whether the artifact is clearly slower at ``part`` (``"batch1"`` or ``"batch"``)."""
        speedup, share = getattr(self, f"speedup_{part}"), getattr(self, f"slower_share_{part}")
        return _is_slower(speedup, share)

    def throughput(self, who: str = "artifact") -> float | None:
        """Sentences/s on the timed batch (``who``: ``"artifact"`` or ``"original"``)."""
        ms = (self.batch_ms or {}).get(who)
        return self.batch_size * 1000.0 / ms if ms else None

    def describe(self, part: str) -> str:
        """``batch 1: 13.00 ms vs 6.35 ms for the original (x0.49)``: one part's figures."""
        ms, speedup = getattr(self, f"{part}_ms") or {}, getattr(self, f"speedup_{part}")
        what = "batch 1" if part == "batch1" else f"batch of {self.batch_size}"
        if not ms:
            return f"{what}: not timed"
        return (f"{what}: {ms['artifact']:.2f} ms vs {ms['original']:.2f} ms for the original "
                f"(x{speedup:.2f} speed)")

    def summary(self) -> str:
        """One line with both parts, the rounds and the CPU."""
        if self.skipped:
            return f"speed not timed: {self.skipped}"
        return (f"{self.describe('batch1')}; {self.describe('batch')}; median of {self.rounds} interleaved rounds "
                f"on {self.cpu}, {self.threads} threads")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> SpeedReport:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


def _is_slower(speedup: float | None, slower_share: float | None) -> bool:
    """The one rule for "slower": a median speed-up under ``1 - NOISE`` and the artifact slower in at least
    ``CONSISTENT`` of the rounds."""
    return speedup is not None and speedup < 1.0 - NOISE and (slower_share or 0.0) >= CONSISTENT


def clearly_slower(speedups: Sequence[float]) -> bool:
    """Whether per-round speed-ups (original time / artifact time, or artifact rate / original rate: > 1 is faster),
    each from one round that timed both side by side, say the artifact is slower by ``optimize()``'s rule.

    Example:
        >>> clearly_slower([0.98, 1.01, 0.97, 0.99])  # within noise: a tie
        False
        >>> clearly_slower([0.90, 0.92, 1.01, 0.91])
        True
    """
    return bool(speedups) and _is_slower(*_median_and_share(speedups))


def _median_and_share(speedups: Sequence[float]) -> tuple[float, float]:
    """The median speed-up over rounds and the share of rounds in which the artifact was the slower one."""
    return statistics.median(speedups), sum(x < 1 for x in speedups) / len(speedups)


def slower_parts(report: SpeedReport, objective: Objective) -> list[str]:
    """The parts of ``objective`` (``batch1`` for latency, ``batch`` for throughput) at which the artifact is slower.

    Example:
        >>> slower_parts(SpeedReport(speedup_batch=0.5, slower_share_batch=1.0), "throughput")
        ['batch']
    """
    return [p for p in _PARTS[objective] if report.slower(p)]


def timing_inputs(tokenizer, texts: Sequence[str], input_names: Sequence[str], max_length: int
                  ) -> tuple[list[dict], dict] | str:
    """Up to 8 single inputs and one padded batch of up to 32 from ``texts``, or why ``texts`` are too few.

    Example:
        >>> timing_inputs(tok, ["one", "two"], ("input_ids", "attention_mask"), 128)  # doctest: +SKIP
        'the verification sample has 2 sentences; timing needs at least 4 ...'
    """
    if len(texts) < MIN_TEXTS:
        return (f"the verification sample has {len(texts)} sentence{'s' * (len(texts) != 1)}; timing the artifact "
                f"against the original needs at least {MIN_TEXTS} (single inputs and a batch): pass more sentences "
                "as sample=, or on_slower='ignore' to skip the speed check")
    kw = {"truncation": True, "max_length": max_length, "return_tensors": "pt"}

    def feeds(enc) -> dict:
        return {k: enc[k] for k in input_names if k in enc}

    singles = [feeds(tokenizer([t], **kw)) for t in texts[:MAX_SINGLES]]
    batch = feeds(tokenizer(list(texts[:MAX_BATCH]), padding=True, **kw))
    return singles, batch


def measure_speed(original: Callable, artifact: Callable, singles: Sequence[dict], batch: dict, *, cpu: str,
                  threads: int | None = None, clock: Callable[[], float] = time.perf_counter) -> SpeedReport:
    """Time ``artifact`` against ``original`` in interleaved rounds (see the module's docstring).

    Args:
        original, artifact: called as ``fn(**inputs)``.
        singles: batch-1 inputs; batch: one padded batch.
        cpu: the CPU's description, recorded with the figures.
        threads: recorded with the figures (torch's when ``None``).
        clock: the timer (tests pass a fake one).

    Returns:
        A :class:`SpeedReport`.
    """
    fns = {"original": original, "artifact": artifact}
    start = clock()
    with torch.inference_mode():
        for fn in fns.values():
            for _ in range(2):
                for s in singles:
                    fn(**s)
                fn(**batch)
        times: dict[str, dict[str, list[float]]] = {n: {"batch1": [], "batch": []} for n in fns}
        rounds = 0
        while rounds < MAX_ROUNDS:
            order = list(fns) if rounds % 2 == 0 else list(reversed(fns))
            for name in order:
                b1, bt = _one_round(fns[name], singles, batch, clock)
                times[name]["batch1"].append(b1)
                times[name]["batch"].append(bt)
            rounds += 1
            if rounds >= MIN_ROUNDS and (clock() - start > BUDGET_S or _clear(times)):
                break
    report = _summarise(times, rounds, len(singles), int(next(iter(batch.values())).shape[0]))
    report.cpu, report.seconds = cpu, clock() - start
    report.threads = threads if threads is not None else torch.get_num_threads()
    return report


def _one_round(fn: Callable, singles: Sequence[dict], batch: dict, clock: Callable[[], float]) -> tuple[float, float]:
    """Mean ms per batch-1 call over ``singles``, and ms for ``batch``."""
    t0 = clock()
    for s in singles:
        fn(**s)
    t1 = clock()
    fn(**batch)
    t2 = clock()
    return (t1 - t0) * 1000.0 / len(singles), (t2 - t1) * 1000.0


def _ratios(times: dict, part: str) -> list[float]:
    return [o / a if a > 0 else float("inf") for o, a in zip(times["original"][part], times["artifact"][part], strict=True)]


def _clear(times: dict) -> bool:
    """Whether every part's verdict is settled: the artifact faster (or slower) in every round so far, by more than
    the noise margin at the median."""
    for part in ("batch1", "batch"):
        r = _ratios(times, part)
        if abs(statistics.median(r) - 1.0) < 3 * NOISE or 0 < sum(x < 1 for x in r) < len(r):
            return False
    return True


def _summarise(times: dict, rounds: int, n_single: int, batch_size: int) -> SpeedReport:
    out = SpeedReport(n_single=n_single, batch_size=batch_size, rounds=rounds)
    for part in ("batch1", "batch"):
        r = _ratios(times, part)
        setattr(out, f"{part}_ms", {n: statistics.median(times[n][part]) for n in ("original", "artifact")})
        speedup, share = _median_and_share(r)
        setattr(out, f"speedup_{part}", speedup)
        setattr(out, f"slower_share_{part}", share)
    return out
