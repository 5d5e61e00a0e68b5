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


def test_rounds_in_blocks_take_turns_block_by_block_with_untimed_rewarm_calls(tokenizer):
    model = make_model("bert-base")
    log: list[str] = []
    batches: dict[str, int] = {"a": 0, "b": 0}

    class Counted(Logged):
        def __call__(self, **batch):
            if batch["input_ids"].shape[0] > 1:
                batches[self.name] += 1
            return super().__call__(**batch)

    cfg = BenchConfig(batch_size=2, latency_samples=4, warmup=0, throughput_examples=8, repeats=1, threads=1,
                      interleave=True, blocks=2)
    assert cfg.rewarm_calls == 2 and BenchConfig(interleave=True).rewarm_calls == 0
    variants = [Variant(n, Counted(n, model, log), reference=n == "a") for n in ("a", "b")]
    report = PerformanceBenchmark(tokenizer, TEXTS, config=cfg, progress=False).run(variants)
    # two blocks of 2 timed calls, each after 2 untimed ones; the second block starts one place on
    assert log == ["a"] * 4 + ["b"] * 4 + ["b"] * 4 + ["a"] * 4
    # fidelity's one batch of 8, two warm-up batches, then each of the 4 bucketed and 4 dataset-order batches once
    assert batches == {"a": 1 + 2 + 8, "b": 1 + 2 + 8}
    for r in report.results:
        assert r.passed and r.latency_ms["p50"] > 0 and r.throughput > 0 and r.throughput_unbucketed > 0


class SlowSpell:
    """A stand-in for time.perf_counter on a host whose speed changes: each model call moves the clock on by 1 s,
    a batch-1 call by 3 s while the spell lasts (the first ``length`` batch-1 calls of the run, over every variant)."""

    def __init__(self, length: int) -> None:
        self.now, self.calls, self.length = 0.0, 0, length

    def __call__(self) -> float:
        return self.now

    def wrap(self, model):
        def run(**batch):
            if batch["input_ids"].shape[0] == 1:
                self.calls += 1
                self.now += 3.0 if self.calls <= self.length else 1.0
            else:
                self.now += 1.0  # batches: not in the spell
            return model(**batch)
        return run


@pytest.mark.parametrize("blocks", [1, 4])
def test_blocks_share_a_slow_spell_that_whole_turns_give_to_one_variant(tokenizer, monkeypatch, blocks):
    import ember.bench.measure as measure

    # no batch-1 call but the timed ones (and the rewarm calls): the spell covers a's and b's first two blocks
    clock = SlowSpell(length=40)
    monkeypatch.setattr(measure.time, "perf_counter", clock)
    model = make_model("bert-base")
    cfg = BenchConfig(batch_size=4, latency_samples=32, warmup=0, throughput_examples=8, repeats=1, threads=1,
                      interleave=True, blocks=blocks)
    variants = [Variant(n, clock.wrap(model), reference=n == "a") for n in ("a", "b")]
    report = PerformanceBenchmark(tokenizer, TEXTS * 4, config=cfg, progress=False).run(variants)
    assert [r.error for r in report.results] == [None, None]
    a, b = (report.result(n).latency_ms for n in ("a", "b"))
    if blocks == 1:  # whole turns: a's 32 calls all in the spell, 8 of b's
        assert (a["p50"], a["mean"], b["p50"], b["mean"]) == (3000.0, 3000.0, 1000.0, 1500.0)
    else:  # blocks of 8 calls after 2 untimed ones (a, b, then b, a): 16 of each variant's 32 in the spell
        assert a == b and a["mean"] == 2000.0


def test_wait_for_quiet_waits_while_the_process_still_spins_and_gives_up_at_its_limit():
    from ember.bench.timing import wait_for_quiet

    class Host:  # a stand-in clock, CPU counter and sleep: threads spin (a full core) for ``busy`` seconds
        def __init__(self, busy: float) -> None:
            self.now, self.used, self.busy = 0.0, 0.0, busy

        def sleep(self, s: float) -> None:
            self.used += max(0.0, min(s, self.busy - self.now))
            self.now += s

    host = Host(busy=0.05)  # spinning for 50 ms, as ONNX Runtime's threads after a call
    waited = wait_for_quiet(clock=lambda: host.now, cpu=lambda: host.used, sleep=host.sleep)
    assert waited == pytest.approx(0.06)  # five busy windows of 10 ms, then the first quiet one
    host = Host(busy=10.0)  # never quiet: stops at max_s
    assert wait_for_quiet(max_s=0.2, clock=lambda: host.now, cpu=lambda: host.used, sleep=host.sleep) == pytest.approx(0.2)
    host = Host(busy=0.0)
    assert wait_for_quiet(clock=lambda: host.now, cpu=lambda: host.used, sleep=host.sleep) == pytest.approx(0.01)
