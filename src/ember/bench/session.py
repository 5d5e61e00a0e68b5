"""One benchmark run in progress: variants measured as they come, into one report.

:meth:`PerformanceBenchmark.run <ember.bench.harness.PerformanceBenchmark.run>` measures a list of variants
through a session; a sweep over presets (:mod:`ember.bench.sweep`) builds each variant, measures it and lets it
go before building the next, so only the reference and one variant are ever alive.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from ember.bench import measure as m
from ember.bench.bars import ProgressBars, VariantTask
from ember.bench.config import BenchConfig
from ember.bench.inputs import BenchInputs
from ember.bench.machine import MachineInfo
from ember.bench.memory import peak_rss_mb, reset_peak
from ember.bench.report import BenchReport, VariantResult
from ember.bench.timing import parts, wait_for_quiet
from ember.bench.variant import Variant, estimate_size_bytes
from ember.fidelity import FidelityReport, Tolerance, compare


class RunSettings(Protocol):
    """What a session reads of the benchmark that opened it (:class:`~ember.bench.harness.PerformanceBenchmark`)."""

    config: BenchConfig
    texts: list[str]
    labels: list[int] | None
    label_names: list[str] | None
    model_name: str
    data_name: str


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()


def _violations(tol: Tolerance, fid: FidelityReport | None, have_ref: bool) -> list[str]:
    if fid is None:
        why = "the reference variant failed" if not have_ref else "no fidelity figures"
        return [f"fidelity not verified: {why}"]
    return tol.violations(fid)


@dataclass
class _Timed:
    """A variant being timed in interleaved rounds: its model, row, bar and the figures so far."""

    model: object
    result: VariantResult
    task: VariantTask
    latency: list[float]
    bucketed: list[float]
    unbucketed: list[float]


class BenchSession:
    """Measure variants one at a time into one report; the first variant measured is the reference.

    Made by :meth:`PerformanceBenchmark.session <ember.bench.harness.PerformanceBenchmark.session>`, which
    sets the threads, tokenizes the inputs and shows the progress bars for as long as the session is open.

    Example:
        >>> with bench.session() as s:                          # doctest: +SKIP
        ...     s.measure(Variant("fp32", model, reference=True))
        ...     s.measure(Variant("int8", quantized))
        >>> s.report().best("latency").name                      # doctest: +SKIP
    """

    def __init__(self, bench: RunSettings, inputs: BenchInputs, machine: MachineInfo,
                 bars: ProgressBars) -> None:
        self.bench, self.inputs, self.machine, self.bars = bench, inputs, machine, bars
        self.results: list[VariantResult] = []
        self._ref_outputs: list | None = None
        self._measured = 0
        self._tasks: dict[str, VariantTask] = {}  # bars opened before their variant is measured

    # -- rows ----------------------------------------------------------------------------------------
    def measure(self, v: Variant) -> VariantResult:
        """Measure ``v`` in full (fidelity, accuracy, latency, throughput) and add its row.

        Raises:
            BenchError: ``v`` is flagged as the reference but another variant was measured first.
        """
        r, task, ok = self._check(v)
        if ok:
            try:
                self._time_alone(v.model, r, task)
            except Exception as exc:  # a failing variant is a row, not the end of the report
                r.error = _error(exc)
                if r.reference:
                    self._ref_outputs = None
        r.peak_rss_mb = peak_rss_mb()
        return self._finish(r, task)

    def measure_interleaved(self, variants: Sequence[Variant]) -> list[VariantResult]:
        """Check every variant, then time them side by side in ``config.repeats`` rounds (see ``BenchConfig.interleave``)."""
        timed: list[_Timed] = []
        for v in variants:
            r, task, ok = self._check(v)
            r.peak_rss_mb = peak_rss_mb()  # while its checks ran: in rounds, every variant is alive at once
            if ok:
                timed.append(_Timed(v.model, r, task, [], [], []))
            else:
                self._finish(r, task)
        cfg = self.bench.config
        for t in timed:
            self._guard(t, lambda t=t: (m.warm_latency(t.model, self.inputs, cfg.warmup, t.task),
                                        m.warm_batches(t.model, self.inputs, t.task)))
        for k in range(cfg.repeats):
            if cfg.blocks > 1:
                self._round_in_blocks(timed, k)
            else:
                for t in self._turns(timed, k):
                    self._guard(t, lambda t=t: self._one_round(t))
        for t in timed:
            if t.result.error is None:
                self._summarise(t)
            self._finish(t.result, t.task)
        return [t.result for t in timed]

    def building(self, name: str, step: str | None = None) -> None:
        """Show that variant ``name`` is being built (its bar, until it is measured or added); ``step``: what the
        build is doing now, shown on the same bar."""
        task = self._tasks.get(name)
        if task is None:
            task = self._tasks[name] = self._task(name)
        task.phase(f"building: {step}" if step else "building")

    def add(self, result: VariantResult) -> None:
        """Add a row measured elsewhere (say, a preset that failed to build)."""
        self.results.append(result)
        task = self._tasks.pop(result.name, None)
        if task is not None:
            self.bars.finish(task, result)

    def report(self) -> BenchReport:
        """The report of every row so far, in the order they were measured or added."""
        b = self.bench
        return BenchReport(
            machine=self.machine, config=b.config, results=list(self.results),
            created=datetime.now(UTC).isoformat(timespec="seconds"), n_examples=len(b.texts),
            labelled=b.labels is not None, label_names=b.label_names, model=b.model_name, data=b.data_name,
        )

    # -- one variant ---------------------------------------------------------------------------------
    def _check(self, v: Variant) -> tuple[VariantResult, VariantTask, bool]:
        """The untimed part: a new row with size and build time, fidelity and accuracy; False if it failed."""
        is_ref = self._measured == 0
        if v.reference and not is_ref:
            raise m.BenchError(f"{v.name!r} is flagged as the reference but was measured after another variant; "
                             "measure the reference first")
        self._measured += 1
        size = v.size_bytes if v.size_bytes is not None else estimate_size_bytes(v.model)
        build = v.build_seconds if v.build_seconds is not None else getattr(v.model, "build_seconds", None)
        r = VariantResult(name=v.name, reference=is_ref, size_mb=None if size is None else size / 1e6,
                          build_seconds=build if isinstance(build, int | float) else None)
        task = self._tasks.pop(v.name, None) or self._task(v.name)
        reset_peak()
        try:
            self._check_outputs(v, r, task)
        except Exception as exc:  # a failing variant is a row, not the end of the report
            r.error = _error(exc)
            if is_ref:
                self._ref_outputs = None
        return r, task, r.error is None

    def _task(self, name: str) -> VariantTask:
        return self.bars.start(name, self.inputs.steps(self.bench.config, self.bench.labels is not None))

    def _check_outputs(self, v: Variant, r: VariantResult, task: VariantTask) -> None:
        task.phase("fidelity")
        outputs = m.fidelity_outputs(v.model, self.inputs, task)
        have_ref = r.reference or self._ref_outputs is not None
        if r.reference:
            self._ref_outputs = outputs
            r.fidelity = compare(outputs, outputs, self.inputs.fidelity_masks)
        elif self._ref_outputs is not None:
            r.fidelity = compare(self._ref_outputs, outputs, self.inputs.fidelity_masks)
        del outputs  # a variant's outputs are compared, not kept (the reference's are, for the next ones)
        if v.tolerance is not None:
            r.violations = _violations(v.tolerance, r.fidelity, have_ref)
        if self.bench.labels is not None:
            task.phase("accuracy")
            r.accuracy, r.macro_f1 = m.accuracy(v.name, v.model, self.inputs, self.bench.labels, task)

    def _time_alone(self, model, r: VariantResult, task: VariantTask) -> None:
        cfg, inputs = self.bench.config, self.inputs
        task.phase("latency")
        m.warm_latency(model, inputs, cfg.warmup, task)
        r.latency_ms = m.percentiles(m.latency_block(model, inputs, task))
        task.phase("throughput")
        m.warm_batches(model, inputs, task)
        bucketed, unbucketed = [], []
        for _ in range(cfg.repeats):  # interleaved, so drift hits both modes alike
            unbucketed.append(m.throughput_pass(model, inputs.unbucketed, inputs.n_throughput, task))
            bucketed.append(m.throughput_pass(model, inputs.bucketed, inputs.n_throughput, task))
        ub, bk = statistics.median(unbucketed), statistics.median(bucketed)
        r.throughput, r.throughput_unbucketed = (bk if cfg.bucketing else ub), ub

    def _one_round(self, t: _Timed) -> None:
        inputs = self.inputs
        t.task.phase("timing (interleaved)")
        t.latency += m.latency_block(t.model, inputs, t.task)
        t.unbucketed.append(m.throughput_pass(t.model, inputs.unbucketed, inputs.n_throughput, t.task))
        t.bucketed.append(m.throughput_pass(t.model, inputs.bucketed, inputs.n_throughput, t.task))

    def _round_in_blocks(self, timed: list[_Timed], k: int) -> None:
        """One round with every variant's timed work cut into ``config.blocks`` blocks, the variants taking turns
        block by block (see ``BenchConfig.blocks``): first the batch-1 calls, then both throughput passes."""
        inputs, cfg = self.inputs, self.bench.config
        for t in timed:
            t.task.phase("timing (interleaved blocks)")
        spent = {id(t): {"bucketed": 0.0, "unbucketed": 0.0} for t in timed}
        for b, part in enumerate(parts(len(inputs.latency), cfg.blocks)):
            for t in self._turns(timed, k + b):
                self._guard(t, lambda t=t, part=part: t.latency.extend(
                    m.latency_block(t.model, inputs, t.task, part, cfg.rewarm_calls)))
        for mode in ("unbucketed", "bucketed"):
            batches = getattr(inputs, mode)
            for b, part in enumerate(parts(len(batches), cfg.blocks)):
                for t in self._turns(timed, k + b):
                    def block(t=t, part=part, mode=mode, batches=batches):
                        spent[id(t)][mode] += m.batches_seconds(t.model, batches[part], t.task)
                    self._guard(t, block)
        for t in timed:
            if t.result.error is None:
                t.unbucketed.append(inputs.n_throughput / spent[id(t)]["unbucketed"])
                t.bucketed.append(inputs.n_throughput / spent[id(t)]["bucketed"])

    @staticmethod
    def _turns(timed: list[_Timed], k: int) -> list[_Timed]:
        """The variants still timed, the first ``k`` places on (so none always follows the same neighbour)."""
        alive = [t for t in timed if t.result.error is None]
        shift = k % len(alive) if alive else 0
        return alive[shift:] + alive[:shift]

    def _guard(self, t: _Timed, work) -> None:
        if t.result.error is not None:
            return
        wait_for_quiet()  # the last variant's thread pools idle first: their spinning would slow this one's turn
        try:
            work()
        except Exception as exc:  # drops out of the later rounds; its row says why
            t.result.error = _error(exc)

    def _summarise(self, t: _Timed) -> None:
        ub, bk = statistics.median(t.unbucketed), statistics.median(t.bucketed)
        t.result.latency_ms = m.percentiles(t.latency)
        t.result.throughput, t.result.throughput_unbucketed = (bk if self.bench.config.bucketing else ub), ub

    def _finish(self, r: VariantResult, task: VariantTask) -> VariantResult:
        r.passed = r.error is None and not r.violations
        self.results.append(r)
        self.bars.finish(task, r)
        return r
