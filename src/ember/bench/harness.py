"""One benchmark harness for every variant of a model: accuracy or fidelity, latency, throughput, size, memory.

Every figure comes from the same inputs, in one process, side by side:

    texts ─tokenize once─▶ batch-1 inputs ─▶ latency p50/p90/p99 (after warm-up)
                        └▶ batches of B (dataset order | length-bucketed) ─▶ examples/s, median of repeats
                        └▶ mixed-length padded batches ─▶ fidelity vs the reference (ember.fidelity)
                        └▶ length-bucketed batches over all texts ─▶ accuracy, macro-F1 (when labelled)

Variants are measured one after another (``BenchConfig.interleave=False``: each in full, so only one needs to
be alive at a time, see :meth:`PerformanceBenchmark.session`) or side by side in rounds (``interleave=True``:
a slow spell of a shared machine falls on every variant alike; ``blocks`` cuts each round into shorter turns). Work that is not a model call on texts
(training steps, phases of a step, epochs) is timed with :mod:`ember.bench.timing`.

A variant that raises, or whose outputs cannot be read, becomes a failed row with the reason; the
others are still measured and the report is still produced.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from ember.bench.bars import ProgressBars
from ember.bench.config import BenchConfig
from ember.bench.inputs import BenchInputs
from ember.bench.machine import MachineInfo
from ember.bench.measure import BenchError, macro_f1
from ember.bench.report import BenchReport, VariantResult
from ember.bench.session import BenchSession
from ember.bench.variant import Variant, estimate_size_bytes
from ember.errors import DataError
from ember.models.checks import check_pad_token

__all__ = ["Variant", "BenchConfig", "PerformanceBenchmark", "VariantResult", "BenchReport", "MachineInfo", "BenchError",
           "BenchSession", "estimate_size_bytes", "macro_f1"]


def _checked_data(texts: Sequence[str], labels: Sequence[int] | None) -> tuple[list[str], list[int] | None]:
    """The texts and labels as lists, refused with the reason when they cannot be benchmarked."""
    texts = list(texts)
    if not texts:
        raise DataError("the benchmark got an empty dataset (0 texts); pass at least one text, or use "
                        "ember.data.sample.sample_sentences()")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise DataError(f"texts must be strings; item {bad[0]} is {type(texts[bad[0]]).__name__}")
    if labels is None:
        return texts, None
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
    return texts, labels


def _checked_variants(variants: Sequence[Variant]) -> list[Variant]:
    variants = list(variants)
    if not variants:
        raise BenchError("no variants to benchmark; pass at least one Variant(name, model)")
    names = [v.name for v in variants]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise BenchError(f"variant names must be unique; {dupes} appear more than once")
    return variants


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
        self.texts, self.labels = _checked_data(texts, labels)
        self.tokenizer = tokenizer
        self.config = config
        self.label_names = list(label_names) if label_names is not None else None
        self.progress = progress
        self.model_name = model_name
        self.data_name = data_name

    def run(self, variants: Sequence[Variant]) -> BenchReport:
        """Measure every variant; returns the report (failed variants are rows with ``error`` set), rows in the
        order given. The reference (the flagged variant, else the first) is measured first.

        Raises:
            BenchError: no variants, or two with the same name.
        """
        variants = _checked_variants(variants)
        ref_index = next((i for i, v in enumerate(variants) if v.reference), 0)
        order = [variants[ref_index], *[v for i, v in enumerate(variants) if i != ref_index]]
        with self.session() as s:
            if self.config.interleave:
                s.measure_interleaved(order)
            else:
                for v in order:
                    s.measure(v)
        report = s.report()
        by_name = {r.name: r for r in report.results}
        report.results = [by_name[v.name] for v in variants]
        return report

    @contextmanager
    def session(self) -> Iterator[BenchSession]:
        """Open a run: threads set, inputs tokenized, progress bars shown; variants are measured as they come.

        Use it instead of :meth:`run` when each variant should be built only after the previous one was
        measured and let go (a sweep over presets keeps one engine's copy of the model alive, not all of them).

        Example:
            >>> with bench.session() as s:                                  # doctest: +SKIP
            ...     s.measure(Variant("fp32", model, reference=True))
            ...     for name, build in builders.items():
            ...         s.measure(Variant(name, build()))
            >>> report = s.report()                                          # doctest: +SKIP
        """
        old_threads = torch.get_num_threads()
        if self.config.threads is not None:
            torch.set_num_threads(self.config.threads)
        try:
            machine = MachineInfo.detect(threads=torch.get_num_threads())
            inputs = BenchInputs(self.tokenizer, self.texts, self.config)
            with ProgressBars(self.progress) as bars:
                yield BenchSession(self, inputs, machine, bars)
        finally:
            torch.set_num_threads(old_threads)
