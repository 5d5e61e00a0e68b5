"""Benchmark results as data: per-variant rows, the whole report, JSON round trip and a Markdown table."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from ember.bench.config import BenchConfig
from ember.bench.machine import MachineInfo
from ember.fidelity import FidelityReport

Objective = Literal["latency", "throughput", "accuracy", "fidelity", "size", "memory"]


@dataclass
class VariantResult:
    """Everything measured for one variant. ``error`` is set (and ``passed`` False) when it could not run.

    ``latency_ms`` holds ``p50``/``p90``/``p99``/``mean`` of batch-1 calls; ``throughput`` is examples/s at
    the configured batch size (length-bucketed when the config says so), ``throughput_unbucketed`` the
    same over batches in dataset order. ``peak_rss_mb`` is the process's peak resident memory seen while
    this variant ran: the process also holds what else is alive then (in a preset sweep, the reference and this
    variant alone; with ``PerformanceBenchmark.run``, every variant passed to it).
    """

    name: str
    reference: bool = False
    accuracy: float | None = None
    macro_f1: float | None = None
    fidelity: FidelityReport | None = None
    violations: list[str] = field(default_factory=list)
    latency_ms: dict[str, float] | None = None
    throughput: float | None = None
    throughput_unbucketed: float | None = None
    size_mb: float | None = None
    peak_rss_mb: float | None = None
    build_seconds: float | None = None
    error: str | None = None
    passed: bool = True

    @property
    def status(self) -> str:
        """``ok``, ``failed: <violations>`` or ``error: <reason>``."""
        if self.error:
            return f"error: {self.error}"
        if self.violations:
            return "failed fidelity: " + "; ".join(self.violations)
        return "ok"

    @property
    def p50(self) -> float | None:
        return None if not self.latency_ms else self.latency_ms.get("p50")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fidelity"] = None if self.fidelity is None else self.fidelity.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> VariantResult:
        known = set(cls.__dataclass_fields__)
        kw = {k: v for k, v in d.items() if k in known}
        if kw.get("fidelity") is not None:
            kw["fidelity"] = FidelityReport.from_dict(kw["fidelity"])
        return cls(**kw)


def _cosine(r: VariantResult) -> float | None:
    return None if r.fidelity is None else r.fidelity.mean_cosine


def _size(r: VariantResult) -> float | None:
    return r.size_mb


def _neg(f: Callable[[VariantResult], float | None]) -> Callable[[VariantResult], float | None]:
    return lambda r: None if f(r) is None else -f(r)  # type: ignore[operator]


# objective -> key to maximise
OBJECTIVES: dict[str, Callable[[VariantResult], float | None]] = {
    "latency": _neg(lambda r: r.p50),
    "throughput": lambda r: r.throughput,
    "accuracy": lambda r: r.accuracy,
    "fidelity": _cosine,
    "size": _neg(_size),
    "memory": _neg(lambda r: r.peak_rss_mb),
}


@dataclass
class BenchReport:
    """A whole benchmark: machine, settings, one row per variant.

    Example:
        >>> report = PerformanceBenchmark(tok, texts).run(variants)  # doctest: +SKIP
        >>> report.write("ember-bench")                                # doctest: +SKIP
        >>> report.best("latency").name                                # doctest: +SKIP
        'onnx-int8'
    """

    machine: MachineInfo
    config: BenchConfig
    results: list[VariantResult]
    created: str
    n_examples: int = 0
    labelled: bool = False
    label_names: list[str] | None = None
    model: str = ""
    data: str = ""

    # -- queries -----------------------------------------------------------------------------------
    @property
    def reference(self) -> VariantResult | None:
        return next((r for r in self.results if r.reference), None)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def result(self, name: str) -> VariantResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(f"no variant named {name!r}; the report has {[r.name for r in self.results]}")

    def speedup(self, r: VariantResult) -> float | None:
        """Reference p50 latency / this variant's p50 (>1 is faster)."""
        ref = self.reference
        if ref is None or ref.p50 is None or r.p50 is None or r.p50 <= 0:
            return None
        return ref.p50 / r.p50

    def best(self, objective: Objective = "latency") -> VariantResult:
        """The passing variant that is best on ``objective`` (lowest latency/size/memory, highest rest).

        Raises:
            ValueError: unknown objective, or no passing variant has that figure.
        """
        if objective not in OBJECTIVES:
            raise ValueError(f"objective {objective!r} is not one of {sorted(OBJECTIVES)}")
        key = OBJECTIVES[objective]
        scored = [(key(r), r) for r in self.results if r.passed and key(r) is not None]
        if not scored:
            raise ValueError(f"no passing variant has a {objective} figure; statuses: {[r.status for r in self.results]}")
        return max(scored, key=lambda t: t[0])[1]  # type: ignore[arg-type,return-value]

    # -- serialisation -----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "machine": self.machine.to_dict(),
            "config": self.config.to_dict(),
            "results": [r.to_dict() for r in self.results],
            "created": self.created,
            "n_examples": self.n_examples,
            "labelled": self.labelled,
            "label_names": self.label_names,
            "model": self.model,
            "data": self.data,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> BenchReport:
        return cls(
            machine=MachineInfo.from_dict(d["machine"]),
            config=BenchConfig.from_dict(d["config"]),
            results=[VariantResult.from_dict(r) for r in d["results"]],
            created=d["created"],
            n_examples=d.get("n_examples", 0),
            labelled=d.get("labelled", False),
            label_names=d.get("label_names"),
            model=d.get("model", ""),
            data=d.get("data", ""),
        )

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> BenchReport:
        return cls.from_dict(json.loads(text))

    def to_markdown(self) -> str:
        return to_markdown(self)

    def write(self, out_dir: str | Path, *, plot: bool = True) -> dict[str, Path]:
        """Write ``report.md``, ``report.json`` and (with ``plot``) ``plot.png`` into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"markdown": out / "report.md", "json": out / "report.json"}
        paths["json"].write_text(self.to_json() + "\n", encoding="utf-8")
        paths["markdown"].write_text(self.to_markdown(), encoding="utf-8")
        if plot:
            from ember.bench.plot import plot_report

            paths["plot"] = plot_report(self, out / "plot.png")
        return paths


# -- Markdown ---------------------------------------------------------------------------------------
# (column title, value getter, format). The tests parse the table back and compare with the JSON.
def _f(fmt: str) -> Callable[[float | None], str]:
    return lambda v: "—" if v is None else format(v, fmt)


def _columns(report: BenchReport) -> list[tuple[str, Callable[[VariantResult], float | None], Callable]]:
    cols: list[tuple[str, Callable[[VariantResult], float | None], Callable]] = []
    if report.labelled:
        cols += [("accuracy", lambda r: r.accuracy, _f(".4f")), ("macro-F1", lambda r: r.macro_f1, _f(".4f"))]
    cols += [
        ("cosine vs ref", _cosine, _f(".6f")),
        ("label agreement", lambda r: None if r.fidelity is None else r.fidelity.label_agreement, _f(".4f")),
        ("p50 ms", lambda r: r.p50, _f(".2f")),
        ("p90 ms", lambda r: None if not r.latency_ms else r.latency_ms.get("p90"), _f(".2f")),
        ("p99 ms", lambda r: None if not r.latency_ms else r.latency_ms.get("p99"), _f(".2f")),
        ("speed-up p50", report.speedup, lambda v: "—" if v is None else f"{v:.2f}x"),
        ("ex/s bucketed" if report.config.bucketing else "ex/s", lambda r: r.throughput, _f(".1f")),
        ("ex/s unbucketed", lambda r: r.throughput_unbucketed, _f(".1f")),
        ("size MB", _size, _f(".1f")),
        ("peak RSS MB", lambda r: r.peak_rss_mb, _f(".0f")),
        ("build s", lambda r: r.build_seconds, _f(".2f")),
    ]
    if not any(r.fidelity and r.fidelity.label_agreement is not None for r in report.results):
        cols = [c for c in cols if c[0] != "label agreement"]
    return cols


def table_rows(report: BenchReport) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells (shared by the Markdown and the rich table)."""
    cols = _columns(report)
    header = ["variant", *[c[0] for c in cols], "status"]
    rows = []
    for r in report.results:
        name = f"{r.name} (ref)" if r.reference else r.name
        rows.append([name, *[fmt(get(r)) for _, get, fmt in cols], r.status])
    return header, rows


def to_markdown(report: BenchReport) -> str:
    """The report as Markdown: a heading with machine and settings, then one table row per variant."""
    c, m = report.config, report.machine
    header, rows = table_rows(report)
    esc = [[cell.replace("|", "\\|") for cell in row] for row in rows]
    lines = [
        "# ember bench",
        "",
        f"- created: {report.created}",
        f"- machine: {m.summary()}",
        f"- model: {report.model or '—'}",
        f"- data: {report.data or '—'} ({report.n_examples} examples, {'labelled' if report.labelled else 'unlabelled'})",
        f"- settings: batch {c.batch_size}, latency over {c.latency_samples} inputs at batch 1 after {c.warmup} "
        f"warm-up calls, throughput median of {c.repeats} runs, max length {c.max_length}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *["| " + " | ".join(row) + " |" for row in esc],
        "",
    ]
    return "\n".join(lines)
