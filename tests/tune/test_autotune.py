"""autotune (ember.tune): the preset sweep of ember bench, keeping the fastest config within a fidelity budget.

Moved from tests/optimize/test_optimize.py with autotune itself (ember.optimize.autotune -> ember.tune)."""

from __future__ import annotations

import pytest

from ember.fidelity import Tolerance
from ember.optimize import BF16Config, Int8DynamicConfig, OnnxRuntimeConfig

from conftest import make_model

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def tok(tokenizer):
    return tokenizer


@pytest.fixture(scope="module")
def classifier():
    return make_model("bert")


def test_autotune_measures_every_config_and_picks_a_faithful_winner(classifier, tok, texts):
    from ember.bench.harness import BenchConfig
    from ember.tune import autotune

    configs = {"int8": Int8DynamicConfig(), "bf16": BF16Config(), "onnx-int8": OnnxRuntimeConfig(quantize="dynamic")}
    budget = Tolerance(min_mean_cosine=0.9999)
    small = BenchConfig(batch_size=4, latency_samples=4, warmup=1, throughput_examples=8, repeats=1, threads=1,
                        fidelity_examples=8)
    res = autotune(classifier, tok, texts, budget=budget, objective="throughput", configs=configs, bench_config=small)
    names = [r.name for r in res.report.results]
    assert names[0] == "pytorch-fp32" and set(names) >= {"int8", "bf16"}
    winner = res.report.result(res.best)
    assert winner.passed and (winner.fidelity is None or winner.fidelity.mean_cosine >= 0.9999)
    assert all(r.throughput <= winner.throughput for r in res.report.results if r.passed)
    assert (res.artifact is None) == (res.best == "pytorch-fp32")
    d = res.to_dict()
    assert d["objective"] == "throughput" and d["budget"]["min_mean_cosine"] == 0.9999
    assert "best by throughput" in res.table()


def test_the_autotune_winner_keeps_its_config_s_on_violation(classifier, tok, texts, monkeypatch):
    """Candidates are built with on_violation="warn" so each can be measured; the winner's saved config (what
    `ember optimize --config DIR` rebuilds from) must raise past the budget again, as its preset does."""
    from ember.bench.harness import BenchConfig
    from ember.bench.report import BenchReport
    from ember.tune import autotune

    def bf16_wins(self, objective):  # whatever is fastest here; autotune ranks the rows as they are measured
        return self.result("bf16") if "bf16" in [r.name for r in self.results] else self.results[0]

    monkeypatch.setattr(BenchReport, "best", bf16_wins)
    small = BenchConfig(batch_size=4, latency_samples=4, warmup=1, throughput_examples=8, repeats=1, threads=1,
                        fidelity_examples=8)
    budget = Tolerance(min_mean_cosine=0.999)
    res = autotune(classifier, tok, texts, budget=budget, configs={"bf16": BF16Config()}, bench_config=small)
    assert res.best == "bf16" and res.artifact.optimize_config.on_violation == "raise"
    assert res.artifact.optimize_config.tolerance == budget  # verified against the budget, which it keeps
    assert res.to_dict()["config"]["on_violation"] == "raise"


def test_autotune_refuses_an_unknown_objective(classifier, tok, texts):
    from ember.tune import autotune

    with pytest.raises(ValueError, match="objective='speed' is not one of 'latency', 'throughput'"):
        autotune(classifier, tok, texts, objective="speed")  # type: ignore[arg-type]


def test_autotune_takes_a_number_as_the_minimum_mean_cosine(classifier, tok, texts):
    from ember.tune import autotune

    res = autotune(classifier, tok, texts, budget=0.999, configs={"onnx": OnnxRuntimeConfig(threads=1)}, threads=1)
    assert res.skipped == {} and res.budget == Tolerance(min_mean_cosine=0.999)  # was: onnx skipped, a TypeError
    assert "onnx" in {r["name"] for r in res.to_dict()["report"]["results"]}
    with pytest.raises(TypeError, match="budget must be an ember Tolerance or a minimum mean cosine, got str"):
        autotune(classifier, tok, texts, budget="0.999")  # type: ignore[arg-type]


def test_autotune_moved_out_of_optimize_with_a_message_naming_its_home():
    """optimize sits below the benchmark autotune measures with, so autotune cannot live (or be re-exported) there."""
    with pytest.raises(ImportError, match=r"^autotune moved from ember.optimize to ember.tune: from ember.tune import autotune$"):
        from ember.optimize import autotune  # noqa: F401
