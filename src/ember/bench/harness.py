"""One benchmark harness for every variant of a model: accuracy or fidelity, latency, throughput, size, memory.

Every figure comes from the same inputs, in one process, side by side:

    texts ─tokenize once─▶ batch-1 inputs ─▶ latency p50/p90/p99 (after warm-up)
                        └▶ batches of B (dataset order | length-bucketed) ─▶ examples/s, median of repeats
                        └▶ mixed-length padded batches ─▶ fidelity vs the reference (ember.fidelity)
                        └▶ length-bucketed batches over all texts ─▶ accuracy, macro-F1 (when labelled)

A variant that raises, or whose outputs cannot be read, becomes a failed row with the reason; the
others are still measured and the report is still produced.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import torch

from ember.batching import length_buckets
from ember.bench.config import BenchConfig
from ember.bench.machine import MachineInfo
from ember.bench.memory import peak_rss_mb, reset_peak
from ember.bench.report import BenchReport, VariantResult
from ember.errors import DataError, EmberError
from ember.fidelity import FidelityReport, Tolerance, comparable, compare, mixed_length_batches
from ember.models.checks import check_pad_token

__all__ = ["Variant", "BenchConfig", "PerformanceBenchmark", "VariantResult", "BenchReport", "MachineInfo", "BenchError"]


class BenchError(EmberError, ValueError):
    """The benchmark cannot run as asked (no texts, no variants, labels that do not fit)."""


@dataclass
class Variant:
    """One way of running the model, to be measured beside the others.

    Args:
        name: row name in the report (unique within a run).
        model: called as ``model(**batch)`` with the tokenizer's tensors (``input_ids``, ``attention_mask``
            and ``token_type_ids`` where the tokenizer makes them); returns a ModelOutput, dict or tensor
            with ``logits`` or ``last_hidden_state``.
        size_bytes: size of the artifact on disk; ``None`` estimates it from the parameters (nn.Module)
            or an artifact's own ``size_bytes`` attribute.
        build_seconds: time it took to build or load the variant.
        reference: fidelity is measured against this variant (the first one when none is flagged).
        tolerance: bounds from :mod:`ember.fidelity`; a variant outside them is marked failed.

    Example:
        >>> Variant("fp32", model, reference=True)  # doctest: +SKIP
    """

    name: str
    model: Callable[..., Any]
    size_bytes: int | None = None
    build_seconds: float | None = None
    reference: bool = False
    tolerance: Tolerance | None = None


def estimate_size_bytes(model: Any) -> int | None:
    """Bytes of a module's parameters and buffers (shared tensors counted once), or an artifact's ``size_bytes``."""
    own = getattr(model, "size_bytes", None)
    if isinstance(own, int):
        return own
    if not isinstance(model, torch.nn.Module):
        return None
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        key = (t.data_ptr(), t.numel(), t.dtype)
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Unweighted mean of per-class F1 over the classes present in either sequence.

    Example:
        >>> round(macro_f1([0, 0, 1, 1], [0, 1, 1, 1]), 4)
        0.7333
    """
    classes = sorted(set(y_true) | set(y_pred))
    f1s = []
    for c in classes:
        tp = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == c and p == c)
        fp = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t != c and p == c)
        fn = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == c and p != c)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return sum(f1s) / len(f1s) if f1s else 0.0


def _percentiles(seconds: Sequence[float]) -> dict[str, float]:
    t = torch.tensor(seconds, dtype=torch.float64) * 1000.0  # ms
    q = torch.quantile(t, torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64))
    return {"p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2]), "mean": float(t.mean())}


class _Inputs:
    """Every tensor the run needs, tokenized once up front so tokenization is never timed."""

    def __init__(self, tokenizer, texts: Sequence[str], config: BenchConfig) -> None:
        kw = {"truncation": True, "max_length": config.max_length, "return_tensors": "pt"}
        self.latency = [dict(tokenizer(t, **kw)) for t in texts[: config.latency_samples]]  # each (1, T_i)
        lengths = [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=config.max_length)["input_ids"]]
        self.lengths = lengths

        def batches(idx_groups: list[list[int]]) -> list[dict]:
            return [dict(tokenizer([texts[i] for i in g], padding=True, **kw)) for g in idx_groups]  # (B, T_max)

        n_tp = min(len(texts), config.throughput_examples)
        self.n_throughput = n_tp
        self.unbucketed = batches(length_buckets(lengths[:n_tp], config.batch_size, sort=False))
        self.bucketed = batches(length_buckets(lengths[:n_tp], config.batch_size, sort=True))
        self.eval_groups = length_buckets(lengths, config.batch_size, sort=True)
        self.eval = batches(self.eval_groups)
        fid_texts = list(texts[: config.fidelity_examples])
        self.fidelity = mixed_length_batches(tokenizer, fid_texts, config.fidelity_batch_size, config.max_length)
        self.fidelity_masks = [b["attention_mask"] for b in self.fidelity]

    def steps(self, config: BenchConfig, labelled: bool) -> int:
        """Model calls per variant (for the progress bar)."""
        return (
            len(self.fidelity)
            + (len(self.eval) if labelled else 0)
            + config.warmup
            + len(self.latency)
            + min(2, len(self.bucketed))
            + config.repeats * (len(self.bucketed) + len(self.unbucketed))
        )


class PerformanceBenchmark:
    """Measure model variants side by side on the same texts.

    Args:
        tokenizer: a Hugging Face tokenizer (called on lists of texts, ``return_tensors="pt"``).
        texts: the inputs, in dataset order; real sentences, not random ids.
        labels: integer class ids for accuracy and macro-F1 (``None``: fidelity only).
        config: what and how much to measure.
        label_names: names of the class ids, kept in the report.
        progress: show a rich progress bar on stderr.
        model_name, data_name: descriptions written into the report.

    Example:
        >>> bench = PerformanceBenchmark(tok, sample_sentences(), config=BenchConfig(threads=2))  # doctest: +SKIP
        >>> report = bench.run([Variant("fp32", model, reference=True), Variant("int8", q, tolerance=Tolerance())])  # doctest: +SKIP
        >>> print(report.to_markdown())  # doctest: +SKIP
    """

    def __init__(
        self,
        tokenizer,
        texts: Sequence[str],
        labels: Sequence[int] | None = None,
        config: BenchConfig = BenchConfig(),
        *,
        label_names: Sequence[str] | None = None,
        progress: bool = True,
        model_name: str = "",
        data_name: str = "",
    ) -> None:
        check_pad_token(tokenizer, "the benchmark times and compares the variants on padded batches of texts")
        texts = list(texts)
        if not texts:
            raise DataError("the benchmark got an empty dataset (0 texts); pass at least one text, or use "
                            "ember.data.sample.sample_sentences()")
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise DataError(f"texts must be strings; item {bad[0]} is {type(texts[bad[0]]).__name__}")
        if labels is not None:
            labels = list(labels)
            if len(labels) != len(texts):
                raise DataError(f"{len(texts)} texts but {len(labels)} labels; pass one label per text")
            not_int = [x for x in labels if not isinstance(x, int) or isinstance(x, bool)]
            if not_int:
                raise DataError(
                    f"labels must be integer class ids, got {not_int[0]!r}; map names to ids first "
                    "(ember.data.Examples.label_ids(model.config.id2label names))"
                )
            if min(labels) < 0:
                raise DataError(f"labels must be >= 0, got {min(labels)}")
        self.tokenizer = tokenizer
        self.texts = texts
        self.labels = labels
        self.config = config
        self.label_names = list(label_names) if label_names is not None else None
        self.progress = progress
        self.model_name = model_name
        self.data_name = data_name

    # -- public ------------------------------------------------------------------------------------
    def run(self, variants: Sequence[Variant]) -> BenchReport:
        """Measure every variant; returns the report (failed variants are rows with ``error`` set).

        Raises:
            BenchError: no variants, or two with the same name.
        """
        variants = list(variants)
        if not variants:
            raise BenchError("no variants to benchmark; pass at least one Variant(name, model)")
        names = [v.name for v in variants]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise BenchError(f"variant names must be unique; {dupes} appear more than once")
        ref_index = next((i for i, v in enumerate(variants) if v.reference), 0)

        old_threads = torch.get_num_threads()
        if self.config.threads is not None:
            torch.set_num_threads(self.config.threads)
        try:
            machine = MachineInfo.detect(threads=torch.get_num_threads())
            inputs = _Inputs(self.tokenizer, self.texts, self.config)
            order = [ref_index, *[i for i in range(len(variants)) if i != ref_index]]
            results: dict[int, VariantResult] = {}
            ref_outputs: list | None = None
            with _Progress(self.progress) as bar:
                for i in order:
                    v = variants[i]
                    task = bar.start(v.name, inputs.steps(self.config, self.labels is not None))
                    result, outputs = self._measure(v, i == ref_index, inputs, ref_outputs, task)
                    if i == ref_index:
                        ref_outputs = outputs
                    results[i] = result
                    bar.finish(task, result)
        finally:
            torch.set_num_threads(old_threads)
        return BenchReport(
            machine=machine,
            config=self.config,
            results=[results[i] for i in range(len(variants))],
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            n_examples=len(self.texts),
            labelled=self.labels is not None,
            label_names=self.label_names,
            model=self.model_name,
            data=self.data_name,
        )

    # -- one variant -------------------------------------------------------------------------------
    def _measure(self, v: Variant, is_ref: bool, inputs: _Inputs, ref_outputs: list | None, task) -> tuple[VariantResult, list | None]:
        size = v.size_bytes if v.size_bytes is not None else estimate_size_bytes(v.model)
        build = v.build_seconds if v.build_seconds is not None else getattr(v.model, "build_seconds", None)
        r = VariantResult(
            name=v.name,
            reference=is_ref,
            size_mb=None if size is None else size / 1e6,
            build_seconds=build if isinstance(build, (int, float)) else None,
        )
        reset_peak()
        outputs = None
        try:
            task.phase("fidelity")
            outputs = self._fidelity_pass(v, inputs, task)
            if is_ref:
                r.fidelity = compare(outputs, outputs, inputs.fidelity_masks)
            elif ref_outputs is not None:
                r.fidelity = compare(ref_outputs, outputs, inputs.fidelity_masks)
            if v.tolerance is not None:
                r.violations = self._violations(v.tolerance, r.fidelity, ref_outputs is not None or is_ref)
            if self.labels is not None:
                task.phase("accuracy")
                r.accuracy, r.macro_f1 = self._accuracy(v, inputs, task)
            task.phase("latency")
            r.latency_ms = self._latency(v.model, inputs, task)
            task.phase("throughput")
            r.throughput, r.throughput_unbucketed = self._throughput(v.model, inputs, task)
        except Exception as exc:  # a failing variant is a row, not the end of the report
            r.error = f"{type(exc).__name__}: {exc}".strip()
            outputs = None
        r.peak_rss_mb = peak_rss_mb()
        r.passed = r.error is None and not r.violations
        return r, outputs

    def _fidelity_pass(self, v: Variant, inputs: _Inputs, task) -> list:
        outs = []
        with torch.inference_mode():
            for b in inputs.fidelity:
                outs.append(v.model(**b))
                task.advance()
        comparable(outs[0], inputs.fidelity_masks[0])  # TypeError now if the output has no logits/hidden states
        return outs

    @staticmethod
    def _violations(tol: Tolerance, fid: FidelityReport | None, have_ref: bool) -> list[str]:
        if fid is None:
            why = "the reference variant failed" if not have_ref else "no fidelity figures"
            return [f"fidelity not verified: {why}"]
        return tol.violations(fid)

    def _accuracy(self, v: Variant, inputs: _Inputs, task) -> tuple[float | None, float | None]:
        assert self.labels is not None
        preds: list[int | None] = [None] * len(self.texts)
        with torch.inference_mode():
            for group, b in zip(inputs.eval_groups, inputs.eval, strict=True):
                _, logits = comparable(v.model(**b), b["attention_mask"])  # logits (B, C) or None
                task.advance()
                if logits is None:
                    return None, None  # an encoder without a head: fidelity only
                n_classes = logits.shape[-1]
                if max(self.labels) >= n_classes:
                    raise BenchError(
                        f"the labels go up to {max(self.labels)} but {v.name!r} has a head with {n_classes} outputs; "
                        "use a model trained on these labels, or map the labels to its classes"
                    )
                for i, p in zip(group, logits.argmax(-1).tolist(), strict=True):
                    preds[i] = p
        y_pred = [int(p) for p in preds]  # type: ignore[arg-type]
        acc = sum(int(p == t) for p, t in zip(y_pred, self.labels, strict=True)) / len(self.labels)
        return acc, macro_f1(self.labels, y_pred)

    def _latency(self, model: Callable, inputs: _Inputs, task) -> dict[str, float]:
        xs = inputs.latency
        times = []
        with torch.inference_mode():
            for k in range(self.config.warmup):
                model(**xs[k % len(xs)])
                task.advance()
            for x in xs:
                t0 = time.perf_counter()
                model(**x)
                times.append(time.perf_counter() - t0)
                task.advance()
        return _percentiles(times)

    def _throughput(self, model: Callable, inputs: _Inputs, task) -> tuple[float, float]:
        def one_pass(batches: list[dict]) -> float:
            t0 = time.perf_counter()
            for b in batches:
                model(**b)
                task.advance()
            return inputs.n_throughput / (time.perf_counter() - t0)

        with torch.inference_mode():
            for b in inputs.bucketed[:2]:  # warm the batch-size code paths (allocator, kernel choice)
                model(**b)
                task.advance()
            bucketed, unbucketed = [], []
            for _ in range(self.config.repeats):  # interleaved, so drift hits both modes alike
                unbucketed.append(one_pass(inputs.unbucketed))
                bucketed.append(one_pass(inputs.bucketed))
        ub, bk = statistics.median(unbucketed), statistics.median(bucketed)
        return (bk if self.config.bucketing else ub), ub


class _Task:
    def __init__(self, bar, task_id, name: str) -> None:
        self.bar, self.id, self.name = bar, task_id, name

    def phase(self, what: str) -> None:
        if self.bar is not None:
            self.bar.update(self.id, description=f"{self.name}: {what}")

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.advance(self.id, n)


class _Progress:
    """One rich bar per variant on stderr (stdout stays free for ``--json``); silent when disabled."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("[bold]{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=Console(stderr=True),
            )
            self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def start(self, name: str, total: int) -> _Task:
        task_id = self.bar.add_task(name, total=total) if self.bar is not None else None
        return _Task(self.bar, task_id, name)

    def finish(self, task: _Task, result: VariantResult) -> None:
        if self.bar is not None:
            done = "[green]done" if result.passed else "[red]failed"
            self.bar.update(task.id, description=f"{task.name}: {done}", completed=self.bar.tasks[task.id].total)
