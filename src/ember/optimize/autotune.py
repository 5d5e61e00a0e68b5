"""``autotune``: build every available config, measure them all with the benchmark harness, keep the fastest
within the fidelity budget."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from ember.fidelity import Tolerance
from ember.optimize.artifact import OptimizedModel
from ember.optimize.config import OptimizeConfig

BASELINE = "pytorch-fp32"


@dataclass
class AutotuneResult:
    """What ``autotune`` measured and chose.

    Attributes:
        best: name of the winning variant (``"pytorch-fp32"`` when nothing beat the original).
        artifact: the winning artifact (``None`` when the original won).
        report: the harness's ``BenchReport`` with every variant that could be built.
        skipped: variant name -> why it could not be built.
        objective: ``"latency"`` or ``"throughput"``.
    """

    best: str
    artifact: OptimizedModel | None
    report: object  # ember.bench.report.BenchReport
    objective: str
    budget: Tolerance
    skipped: dict[str, str] = field(default_factory=dict)

    def table(self) -> str:
        """The measured table (Markdown), with the winner and the skipped configs underneath."""
        lines = [self.report.to_markdown(), "", f"best by {self.objective}: {self.best}"]  # type: ignore[attr-defined]
        lines += [f"skipped {n}: {why}" for n, why in self.skipped.items()]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "best": self.best,
            "objective": self.objective,
            "budget": dataclasses.asdict(self.budget),
            "config": self.artifact.optimize_config.to_dict() if self.artifact is not None else None,
            "skipped": self.skipped,
            "report": self.report.to_dict(),  # type: ignore[attr-defined]
        }


def _for_tuning(cfg: OptimizeConfig, budget: Tolerance, threads: int | None) -> OptimizeConfig:
    # the harness judges fidelity against the budget; building must not stop at the preset's own bound
    changes: dict = {"tolerance": budget, "on_violation": "warn"}
    if threads is not None and any(f.name == "threads" for f in dataclasses.fields(cfg)):
        changes["threads"] = threads
    return dataclasses.replace(cfg, **changes)


def autotune(
    model: nn.Module,
    tokenizer,
    sample: Sequence[str],
    budget: Tolerance | float = Tolerance(min_mean_cosine=0.999),
    objective: Literal["latency", "throughput"] = "latency",
    *,
    configs: Mapping[str, OptimizeConfig] | None = None,
    threads: int | None = None,
    bench_config=None,
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
    from ember.bench.harness import BenchConfig, PerformanceBenchmark, Variant
    from ember.models.checks import check_pad_token
    from ember.optimize import available_presets
    from ember.optimize.core import optimize

    if objective not in ("latency", "throughput"):
        raise ValueError(f"objective={objective!r} is not one of 'latency', 'throughput'")
    if isinstance(budget, int | float) and not isinstance(budget, bool):
        budget = Tolerance(min_mean_cosine=float(budget))  # what the CLI's --budget means
    if not isinstance(budget, Tolerance):
        raise TypeError(f"budget must be an ember Tolerance or a minimum mean cosine, got {type(budget).__name__}")
    check_pad_token(tokenizer, "autotune verifies and times every config on padded batches of texts")
    sample = list(sample)
    if not sample:
        raise ValueError("autotune needs some sentences to measure on; the sample is empty")
    configs = dict(available_presets() if configs is None else configs)
    variants = [Variant(BASELINE, model, reference=True)]
    artifacts: dict[str, OptimizedModel] = {}
    skipped: dict[str, str] = {}
    for name, cfg in configs.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                art = optimize(model, _for_tuning(cfg, budget, threads), tokenizer=tokenizer, sample=sample)
        except Exception as exc:  # noqa: BLE001 - one engine failing must not stop the others
            skipped[name] = f"{type(exc).__name__}: {exc}"
            continue
        artifacts[name] = art
        variants.append(Variant(name, art, size_bytes=art.size_bytes, build_seconds=art.build_seconds, tolerance=budget))
    cfg = bench_config or BenchConfig(
        latency_samples=min(len(sample), 100), warmup=5, throughput_examples=min(len(sample), 512), repeats=1,
        threads=threads, fidelity_examples=min(len(sample), 256),
    )
    report = PerformanceBenchmark(tokenizer, sample, config=cfg, progress=False).run(variants)
    best = report.best(objective).name
    winner = artifacts.get(best)
    if winner is not None:
        # built with on_violation="warn" so that every candidate could be measured; it met the budget, and the
        # config it is saved with (and rebuilt from: `ember optimize --config DIR`) keeps the candidate's own
        winner.optimize_config = dataclasses.replace(winner.optimize_config, on_violation=configs[best].on_violation)
    return AutotuneResult(best, winner, report, objective, budget, skipped)
