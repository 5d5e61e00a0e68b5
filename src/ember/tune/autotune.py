"""``autotune``: build every available config, measure them all with the benchmark harness, keep the fastest
within the fidelity budget.

It runs the same preset sweep as ``ember bench`` (:func:`ember.bench.sweep.sweep`): the original first, then each
config built, measured and let go in turn, except the best so far, which is kept as the winner.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from ember.bench.config import BenchConfig
from ember.bench.harness import PerformanceBenchmark, Variant
from ember.bench.report import BenchReport
from ember.bench.sweep import BASELINE, preset_plans, sweep
from ember.fidelity import Tolerance
from ember.models.checks import check_pad_token
from ember.optimize import OptimizeConfig, OptimizedModel, available_presets


@dataclass
class AutotuneResult:
    """What ``autotune`` measured and chose.

    Attributes:
        best: name of the winning variant (``"pytorch-fp32"`` when nothing beat the original).
        artifact: the winning artifact (``None`` when the original won).
        report: the harness's ``BenchReport``: the original, then every config in order (one that could not be
            built is a failed row).
        skipped: variant name -> why it could not be built.
        objective: ``"latency"`` or ``"throughput"``.
    """

    best: str
    artifact: OptimizedModel | None
    report: BenchReport
    objective: str
    budget: Tolerance
    skipped: dict[str, str] = field(default_factory=dict)

    def table(self) -> str:
        """The measured table (Markdown), with the winner and the skipped configs underneath."""
        lines = [self.report.to_markdown(), "", f"best by {self.objective}: {self.best}"]
        lines += [f"skipped {n}: {why}" for n, why in self.skipped.items()]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "best": self.best,
            "objective": self.objective,
            "budget": dataclasses.asdict(self.budget),
            "config": self.artifact.optimize_config.to_dict() if self.artifact is not None else None,
            "skipped": self.skipped,
            "report": self.report.to_dict(),
        }


def _for_tuning(cfg: OptimizeConfig, budget: Tolerance, threads: int | None) -> OptimizeConfig:
    # the harness judges fidelity against the budget; building must not stop at the preset's own bound
    changes: dict = {"tolerance": budget, "on_violation": "warn"}
    if threads is not None and any(f.name == "threads" for f in dataclasses.fields(cfg)):
        changes["threads"] = threads
    return dataclasses.replace(cfg, **changes)


def _budget(budget: Tolerance | float) -> Tolerance:
    if isinstance(budget, int | float) and not isinstance(budget, bool):
        return Tolerance(min_mean_cosine=float(budget))  # what the CLI's --budget means
    if not isinstance(budget, Tolerance):
        raise TypeError(f"budget must be an ember Tolerance or a minimum mean cosine, got {type(budget).__name__}")
    return budget


def autotune(
    model: nn.Module,
    tokenizer,
    sample: Sequence[str],
    budget: Tolerance | float = Tolerance(min_mean_cosine=0.999),
    objective: Literal["latency", "throughput"] = "latency",
    *,
    configs: Mapping[str, OptimizeConfig] | None = None,
    threads: int | None = None,
    bench_config: BenchConfig | None = None,
) -> AutotuneResult:
    """Try each config, measure all through ``ember.bench.harness.PerformanceBenchmark`` and return the
    fastest (batch-1 p50 for ``"latency"``, bucketed sentences/s for ``"throughput"``) within ``budget``.

    Args:
        model: the original model (also measured, as the reference).
        tokenizer: its tokenizer.
        sample: real sentences: verification, calibration and timing inputs.
        budget: fidelity every candidate must meet against the original; a number is a minimum mean cosine.
        objective: what "fastest" means.
        configs: name -> config to try (default: ``available_presets()``).
        threads: threads for torch and every engine during the run.
        bench_config: a ``BenchConfig`` (default: a short run sized to the sample).

    Returns:
        ``AutotuneResult`` with the winner, its artifact and the table of everything measured.

    Example:
        >>> res = autotune(model, tok, texts, budget=Tolerance(min_mean_cosine=0.999))  # doctest: +SKIP
        >>> print(res.table())  # doctest: +SKIP
    """
    if objective not in ("latency", "throughput"):
        raise ValueError(f"objective={objective!r} is not one of 'latency', 'throughput'")
    budget = _budget(budget)
    check_pad_token(tokenizer, "autotune verifies and times every config on padded batches of texts")
    sample = list(sample)
    if not sample:
        raise ValueError("autotune needs some sentences to measure on; the sample is empty")
    configs = dict(available_presets() if configs is None else configs)
    tuned = {name: _for_tuning(cfg, budget, threads) for name, cfg in configs.items()}
    cfg = bench_config or BenchConfig(
        latency_samples=min(len(sample), 100), warmup=5, throughput_examples=min(len(sample), 512), repeats=1,
        threads=threads, fidelity_examples=min(len(sample), 256),
    )
    bench = PerformanceBenchmark(tokenizer, sample, config=cfg, progress=False)
    res = sweep(bench, Variant(BASELINE, model, reference=True), preset_plans(model, tokenizer, sample, tuned),
                keep_best=objective)
    best = res.report.best(objective).name
    winner = res.kept if res.kept_name == best else None
    if winner is not None:
        # built with on_violation="warn" so that every candidate could be measured; it met the budget, and the
        # config it is saved with (and rebuilt from: `ember optimize --config DIR`) keeps the candidate's own
        winner.optimize_config = dataclasses.replace(winner.optimize_config, on_violation=configs[best].on_violation)
    return AutotuneResult(best, winner, res.report, objective, budget, res.failed)
