"""benchmarks/compression.py's bookkeeping (no training, no timing): the out-of-scope AUROC, the breakdown as trained
and calibrated, and the summary's "best" (the fastest row within a point of the teacher)."""

from types import SimpleNamespace

import pytest
import torch
from bench_scripts import script_module

from ember.data import Examples

from conftest import TEXTS, make_model


@pytest.fixture(scope="module")
def compression():
    yield from script_module("compression.py", "compression_script")


@pytest.mark.parametrize("seed", range(4))
def test_the_auroc_counts_the_pairs_it_orders(compression, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(40, 4, generator=g)
    gold = torch.randint(0, 4, (40,), generator=g).tolist()
    gold[0], gold[1] = 3, 0  # both groups present
    others = logits.clone()
    others[:, 3] = float("-inf")
    margin = logits[:, 3] - others.max(-1).values
    pos = [m for m, y in zip(margin.tolist(), gold, strict=True) if y == 3]
    neg = [m for m, y in zip(margin.tolist(), gold, strict=True) if y != 3]
    pairs = sum(p > n for p in pos for n in neg) / (len(pos) * len(neg))
    assert compression._oos_auroc(logits, gold, 3) == pytest.approx(pairs)


def test_the_breakdown_reports_each_model_as_trained_and_calibrated(compression, tokenizer, capsys):
    names = ["a", "b", "oos"]
    model = make_model("bert", num_labels=3)
    with torch.no_grad():
        model.classifier.weight.mul_(50.0)
    texts = list(TEXTS)
    labels = [names[i % 3] for i in range(len(texts))]
    val = test = Examples(texts, labels)
    args = SimpleNamespace(oos_label="oos", calibrate="balanced", max_length=None)
    out = compression.breakdown(args, None, model, tokenizer, val, test, names, {"student": (model, 1.0), "s-qat": (model, 1.0)})
    assert set(out) == {"teacher as trained", "teacher calibrated (balanced)", "student as trained",
                        "student calibrated (balanced)"}  # QAT models are left out: their float twin is there
    trained, calibrated = out["student as trained"], out["student calibrated (balanced)"]
    assert trained["oos_bias"] == 0.0 and trained["oos_auroc"] == calibrated["oos_auroc"]
    # chosen on the same texts here, so the calibrated balance is at least the trained one
    assert (calibrated["in_scope_accuracy"] + calibrated["oos_recall"]) >= (trained["in_scope_accuracy"] + trained["oos_recall"]) - 1e-9
    assert "calibrated (balanced)" in capsys.readouterr().out
    none = compression.breakdown(SimpleNamespace(oos_label="oos", calibrate="none", max_length=None), None, model,
                                 tokenizer, val, test, names, {})
    assert set(none) == {"teacher as trained"}


def _row(name, p50, accuracy, size):
    return SimpleNamespace(name=name, p50=p50, accuracy=accuracy, size_mb=size, throughput=100.0, error=None)


def test_best_is_the_fastest_row_within_a_point(compression):
    ref = _row("teacher", 10.0, 0.90, 90.0)
    rows = [ref, _row("fast but wrong", 0.5, 0.85, 5.0), _row("close", 1.0, 0.895, 9.0), _row("slower", 2.0, 0.91, 30.0)]
    summary = compression.summarize(SimpleNamespace(reference=ref, results=rows), None)
    assert summary["best"]["variant"] == "close"
    assert summary["best"]["latency_speedup_vs_teacher"] == pytest.approx(10.0)
    assert summary["targets"] == {"speedup_10x": True, "within_1_point": True, "size_8x": True}
