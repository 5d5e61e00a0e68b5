"""The one preset sweep (ember bench, autotune, benchmarks/bench_default.py): rows in preset order with failed
builds in their place, each artifact let go before the next is built, the best kept when asked."""

from __future__ import annotations

import copy
import gc
import weakref

import pytest

from ember.bench import BenchConfig, PerformanceBenchmark, Variant
from ember.bench.harness import BenchError
from ember.bench.sweep import BASELINE, PresetPlan, sweep
from ember.fidelity import Tolerance

from conftest import make_model

CFG = BenchConfig(batch_size=4, latency_samples=3, warmup=1, throughput_examples=8, repeats=1, max_length=48, threads=1)
TEXTS = ["book a flight to paris", "what is my balance", "play music", "set alarm for seven am", "order pizza",
         "is it going to rain tomorrow", "call mom", "tell me a joke"]


@pytest.fixture(scope="module")
def model():
    return make_model("bert-base")


def bench(tokenizer) -> PerformanceBenchmark:
    return PerformanceBenchmark(tokenizer, TEXTS, config=CFG, progress=False)


def plan(name: str, model, alive: dict, size: int = 1000, fails: bool = False) -> PresetPlan:
    """A stand-in preset: a copy of the model (tracked in ``alive`` by a weak reference) or an error."""

    def build(step) -> Variant:
        step("copying")
        gc.collect()
        alive["at build of " + name] = sorted(n for n, ref in alive.items() if isinstance(ref, weakref.ref) and ref())
        if fails:
            raise RuntimeError(f"{name} cannot be built here")
        copy_ = copy.deepcopy(model)
        alive[name] = weakref.ref(copy_)
        return Variant(name, copy_, size_bytes=size, tolerance=Tolerance(min_mean_cosine=0.999))

    return PresetPlan(name, build, "test")


def test_rows_follow_the_presets_with_failed_builds_in_their_place(tokenizer, model):
    alive: dict = {}
    plans = [plan("a", model, alive), plan("broken", model, alive, fails=True), plan("b", model, alive)]
    res = sweep(bench(tokenizer), Variant(BASELINE, model, reference=True), plans)
    assert [r.name for r in res.report.results] == [BASELINE, "a", "broken", "b"]
    broken = res.report.result("broken")
    assert broken.error == "build failed: RuntimeError: broken cannot be built here" and not broken.passed
    assert res.failed == {"broken": "RuntimeError: broken cannot be built here"}
    assert res.report.result("b").passed and res.report.result("b").fidelity.mean_cosine == pytest.approx(1.0)
    assert res.kept is None and res.kept_name is None


def test_a_builds_steps_show_on_its_bar(tokenizer, model, monkeypatch):
    from ember.bench.bars import VariantTask

    shown: list[tuple[str, str]] = []
    monkeypatch.setattr(VariantTask, "phase", lambda self, what: shown.append((self.name, what)))
    sweep(bench(tokenizer), Variant(BASELINE, model, reference=True), [plan("a", model, {})])
    steps = [what for name, what in shown if name == "a"]
    assert steps[:2] == ["building", "building: copying"]  # the stand-in's step, on the bar it was building under


def test_each_artifact_is_let_go_before_the_next_is_built(tokenizer, model):
    """`ember bench` held every engine's copy of the model until the end (2.8-3.5 GB for a 90 MB model)."""
    alive: dict = {}
    plans = [plan(n, model, alive) for n in ("a", "b", "c")]
    res = sweep(bench(tokenizer), Variant(BASELINE, model, reference=True), plans)
    assert alive["at build of b"] == [] and alive["at build of c"] == []
    gc.collect()
    assert all(alive[n]() is None for n in ("a", "b", "c"))
    assert [m.name for m in res.memory] == [BASELINE, "a", "b", "c"]
    assert all(m.after_release is not None and m.run_peak is not None for m in res.memory[1:])


def test_keep_best_keeps_the_winner_only(tokenizer, model):
    alive: dict = {}
    plans = [plan("big", model, alive, size=3000), plan("small", model, alive, size=10),
             plan("medium", model, alive, size=500)]
    res = sweep(bench(tokenizer), Variant(BASELINE, model, reference=True), plans, keep_best="size")
    assert res.report.best("size").name == "small" == res.kept_name
    gc.collect()
    assert res.kept is alive["small"]() and alive["big"]() is None and alive["medium"]() is None
    assert alive["at build of medium"] == ["small"]  # the best so far stays; the one it beat went


def test_a_reference_measured_late_is_refused(tokenizer, model):
    with bench(tokenizer).session() as s:
        s.measure(Variant("first", model))
        with pytest.raises(BenchError, match=r"^'late' is flagged as the reference but was measured after another"):
            s.measure(Variant("late", model, reference=True))
