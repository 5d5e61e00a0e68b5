"""One sweep over ember's presets: ``ember bench``, ``autotune`` and ``benchmarks/bench_default.py`` all run it.

    baseline (the original model, the reference) ─▶ measured
    each preset in turn: optimize() ─┬─ raises ─▶ a failed row in its place: "build failed: <error>"
                                     └─ artifact ─▶ measured ─▶ let go (unless it is the best so far and kept)

Each artifact is built only after the previous one was measured and released, so the process holds the original
model and one engine's copy of it at a time instead of every engine's (``SweepResult.memory`` says what each
step held).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ember.bench.harness import PerformanceBenchmark
from ember.bench.memory import peak_rss_mb, release_memory, reset_peak, rss_mb
from ember.bench.report import BenchReport, Objective, VariantResult
from ember.bench.session import BenchSession
from ember.bench.variant import Variant

BASELINE = "pytorch-fp32"  # the row name of the original model, the reference of every sweep


@dataclass(frozen=True)
class PresetPlan:
    """A preset that can be built on this machine: its name and how to build it (a :class:`Variant`; ``build`` is
    given a function to tell, in a few words, what it is doing as each step starts: the sweep shows it on the
    preset's bar)."""

    name: str
    build: Callable[[Callable[[str], None]], Variant]
    source: str  # where the preset comes from: "ember.optimize", or a test's stand-in


def preset_plans(model, tokenizer, sample: Sequence[str], configs: Mapping[str, Any] | None = None) -> list[PresetPlan]:
    """A plan per preset: ``configs`` (name -> ``OptimizeConfig``), by default ``ember.optimize.available_presets()``.

    Each plan builds with :func:`ember.optimize.optimize` on ``sample``; the variant's tolerance is the config's.
    A config built with ``on_violation="warn"`` builds without warnings: the measured row shows the violation.

    Example:
        >>> [p.name for p in preset_plans(model, tok, texts)][:2]  # doctest: +SKIP
        ['bf16', 'int8']
    """
    from ember.optimize import available_presets, optimize

    def plan(name: str, config) -> PresetPlan:
        def build(step: Callable[[str], None]) -> Variant:
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                if config.on_violation == "warn":
                    warnings.simplefilter("ignore")
                artifact = optimize(model, config, tokenizer=tokenizer, sample=list(sample), progress=step)
            seconds = getattr(artifact, "build_seconds", None)
            size = getattr(artifact, "size_bytes", None)
            return Variant(name, artifact, size_bytes=size if isinstance(size, int) else None,
                           build_seconds=seconds if seconds is not None else time.perf_counter() - t0,
                           tolerance=config.tolerance)
        return PresetPlan(name, build, "ember.optimize")

    chosen = available_presets() if configs is None else configs
    return [plan(name, cfg) for name, cfg in chosen.items()]


@dataclass
class MemoryRow:
    """Resident memory (MB) around one variant of a sweep.

    ``after_build`` is the process right after the build (for the baseline: after loading), ``build_peak`` the
    most it held while building, ``run_peak`` while measured, ``after_release`` once the variant was let go
    (``None`` for the baseline and a kept artifact, which stay).
    """

    name: str
    after_build: float | None = None
    build_peak: float | None = None
    run_peak: float | None = None
    after_release: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SweepResult:
    """What a sweep measured: the report (baseline first, then every preset in order, failed builds included),
    the presets that failed to build (name -> why), the artifact kept (``keep_best``) and memory per step."""

    report: BenchReport
    failed: dict[str, str] = field(default_factory=dict)
    kept_name: str | None = None
    kept: Any = None
    memory: list[MemoryRow] = field(default_factory=list)


def sweep(bench: PerformanceBenchmark, baseline: Variant, plans: Sequence[PresetPlan], *,
          keep_best: Objective | None = None, load_rss: tuple[float | None, float | None] | None = None
          ) -> SweepResult:
    """Measure ``baseline`` (the reference), then build, measure and release each plan in turn.

    Args:
        bench: the harness, with the texts, labels and settings of the run (its ``interleave`` is not used:
            only one preset is alive at a time).
        baseline: the original model, measured first as the reference.
        plans: the presets, in the order of the report.
        keep_best: keep the artifact that is best so far on this objective (as ``BenchReport.best`` ranks them)
            instead of releasing it; ``None`` keeps none.
        load_rss: (RSS after loading, peak while loading) of the baseline, for ``memory`` (default: RSS now).

    Returns:
        :class:`SweepResult`; a plan whose build raises is a failed row ``"build failed: <Type>: <message>"``.

    Example:
        >>> res = sweep(bench, Variant(BASELINE, model, reference=True), preset_plans(model, tok, texts))  # doctest: +SKIP
        >>> res.report.best("latency").name  # doctest: +SKIP
    """
    after_load, load_peak = load_rss if load_rss is not None else (rss_mb(), None)
    out = SweepResult(report=None)  # type: ignore[arg-type]
    with bench.session() as s:
        base = s.measure(baseline)
        out.memory.append(MemoryRow(baseline.name, after_load, load_peak, base.peak_rss_mb))
        _keep_if_best(out, s, base, None, keep_best)
        for plan in plans:
            out.memory.append(_build_measure_release(s, plan, out, keep_best))
    out.report = s.report()
    return out


def _build_measure_release(s: BenchSession, plan: PresetPlan, out: SweepResult, keep_best: Objective | None) -> MemoryRow:
    row = MemoryRow(plan.name)
    s.building(plan.name)
    reset_peak()
    t0 = time.perf_counter()
    try:
        variant = plan.build(lambda what: s.building(plan.name, what))
    except Exception as exc:  # e.g. FidelityError from optimize: a failed row, the sweep goes on
        why = f"{type(exc).__name__}: {exc}"
        out.failed[plan.name] = why
        s.add(VariantResult(name=plan.name, error=f"build failed: {why}", build_seconds=time.perf_counter() - t0,
                            passed=False))
        row.build_peak = peak_rss_mb()
        release_memory()
        row.after_release = rss_mb()
        return row
    row.after_build, row.build_peak = rss_mb(), peak_rss_mb()
    result = s.measure(variant)
    row.run_peak = result.peak_rss_mb
    kept = _keep_if_best(out, s, result, variant.model, keep_best)
    del variant  # the artifact (and its engine's copy of the weights) goes unless it was kept
    release_memory()
    row.after_release = None if kept else rss_mb()
    return row


def _keep_if_best(out: SweepResult, s: BenchSession, result: VariantResult, artifact: Any,
                  objective: Objective | None) -> bool:
    """Keep ``artifact`` when ``result`` is now the best row on ``objective``; True if kept."""
    if objective is None:
        return False
    try:
        best = s.report().best(objective).name
    except ValueError:  # no passing row has the figure yet
        return False
    if best != result.name:
        return False
    out.kept_name, out.kept = result.name, artifact  # the previous best (if any) is let go
    return artifact is not None
