"""Timing for callables that are not models (bench/timing.py) and the harness's interleaved rounds."""

from __future__ import annotations

import pytest

from ember.bench import BenchConfig, Laps, PerformanceBenchmark, TimingStats, Variant, interleave
from ember.bench.timing import quantile

from conftest import make_model

TEXTS = ["book a flight to paris", "what is my balance", "play music", "set alarm for seven am", "order pizza",
         "is it going to rain tomorrow", "call mom", "tell me a joke"]


def test_laps_drop_warm_up_laps_and_summarise():
    laps = Laps(warmup=1)
    for s in (9.0, 1.0, 3.0, 2.0):
        laps.add("step", s)
    assert laps.seconds("step") == [1.0, 3.0, 2.0]
    stats = laps.stats()["step"]
    assert stats == TimingStats(n=3, median_s=2.0, p90_s=quantile([1.0, 3.0, 2.0], 0.9), mean_s=2.0, min_s=1.0, total_s=6.0)
    assert laps.medians_ms() == {"step": 2000.0}
    with pytest.raises(KeyError, match=r"no laps named 'epoch'; timed: \['step'\]"):
        laps.seconds("epoch")
    with pytest.raises(ValueError, match=r"Laps\(warmup=\) must be an integer >= 0, got -1"):
        Laps(warmup=-1)


def test_interleave_runs_every_item_through_every_task_in_rotating_order():
    calls: list[tuple[str, int]] = []
    tasks = {n: (lambda i, n=n: calls.append((n, i))) for n in ("a", "b", "c")}
    laps = interleave(tasks, range(3))
    assert calls == [("a", 0), ("b", 0), ("c", 0), ("b", 1), ("c", 1), ("a", 1), ("c", 2), ("a", 2), ("b", 2)]
    assert [len(laps.seconds(n)) for n in "abc"] == [3, 3, 3]


def test_quantile_interpolates_as_numpy_does():
    assert quantile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
    assert quantile([1.0, 2.0, 3.0, 4.0, 5.0], 0.9) == pytest.approx(4.6)
    with pytest.raises(ValueError):
        TimingStats.of([])


class Logged:
    """A model that logs which variant ran each batch-1 call."""

    def __init__(self, name, model, log):
        self.name, self.model, self.log = name, model, log

    def __call__(self, **batch):
        if batch["input_ids"].shape[0] == 1:
            self.log.append(self.name)
        return self.model(**batch)


def test_interleaved_rounds_rotate_the_variants_and_report_every_figure(tokenizer):
    model = make_model("bert-base")
    log: list[str] = []
    cfg = BenchConfig(batch_size=4, latency_samples=2, warmup=0, throughput_examples=8, repeats=2, threads=1,
                      interleave=True)
    variants = [Variant(n, Logged(n, model, log), reference=n == "a") for n in ("a", "b", "c")]
    report = PerformanceBenchmark(tokenizer, TEXTS, config=cfg, progress=False).run(variants)
    runs = [n for k, n in enumerate(log) if k == 0 or log[k - 1] != n]  # blocks of batch-1 calls, in order
    assert runs == ["a", "b", "c", "b", "c", "a"]  # round 1 from a, round 2 one place on
    assert [r.name for r in report.results] == ["a", "b", "c"] and report.config.interleave
    for r in report.results:
        assert r.latency_ms["p50"] > 0 and r.throughput > 0 and r.throughput_unbucketed > 0 and r.passed


def test_a_variant_failing_in_the_rounds_becomes_a_row_and_leaves_the_rounds(tokenizer):
    model = make_model("bert-base")
    calls = {"n": 0}

    def flaky(**batch):
        calls["n"] += 1
        if calls["n"] > len(TEXTS) // 2 + 4:  # after the fidelity checks: in the timing rounds
            raise RuntimeError("engine died")
        return model(**batch)

    cfg = BenchConfig(batch_size=4, latency_samples=2, warmup=1, throughput_examples=8, repeats=3, threads=1,
                      interleave=True)
    report = PerformanceBenchmark(tokenizer, TEXTS, config=cfg, progress=False).run(
        [Variant("ref", model, reference=True), Variant("flaky", flaky)])
    assert report.result("ref").passed and report.result("flaky").error == "RuntimeError: engine died"
    assert report.result("flaky").fidelity is not None  # measured before it died
