"""PerformanceBenchmark on tiny random models: the numbers, the failed rows, the bad inputs."""

from __future__ import annotations

import copy

import pytest
import torch

from ember.bench import BenchConfig, BenchError, PerformanceBenchmark, Variant
from ember.bench.harness import estimate_size_bytes, macro_f1
from ember.errors import DataError
from ember.fidelity import Tolerance, check, mixed_length_batches

from conftest import make_model

CFG = BenchConfig(batch_size=4, latency_samples=6, warmup=2, throughput_examples=16, repeats=2, max_length=48, threads=1)


def noisy(model, scale: float):
    """A copy of ``model`` with Gaussian noise on every weight: a variant whose outputs really differ."""
    m = copy.deepcopy(model)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return m


@pytest.fixture(scope="module")
def setup(tokenizer):
    model = make_model("bert", num_labels=3)
    texts = [
        "book a flight to paris", "what is my balance", "play music", "how do i reset my password please tell me",
        "is it going to rain tomorrow", "set alarm", "order pizza", "transfer money to mom", "call mom",
        "tell me a joke", "translate hello into spanish", "cancel reservation at the restaurant",
    ]
    labels = [i % 3 for i in range(len(texts))]
    return model, texts, labels


@pytest.fixture(scope="module")
def report(setup, tokenizer):
    model, texts, labels = setup
    bench = PerformanceBenchmark(tokenizer, texts, labels, CFG, label_names=["a", "b", "c"], progress=False)
    return bench.run([
        Variant("fp32", model, reference=True),
        Variant("noisy", noisy(model, 0.002), tolerance=Tolerance(min_mean_cosine=0.5)),
        Variant("very-noisy", noisy(model, 1.0), tolerance=Tolerance(min_mean_cosine=0.9999)),
    ])


def test_accuracy_matches_a_direct_evaluation(setup, tokenizer, report):
    model, texts, labels = setup
    with torch.inference_mode():
        preds = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.argmax(-1).tolist()
    ref = report.result("fp32")
    assert ref.accuracy == pytest.approx(sum(p == t for p, t in zip(preds, labels, strict=True)) / len(labels))
    assert ref.macro_f1 == pytest.approx(macro_f1(labels, preds))
    assert report.labelled and report.n_examples == 12 and report.label_names == ["a", "b", "c"]


def test_fidelity_is_ember_fidelity_against_the_reference(setup, tokenizer, report):
    model, texts, _ = setup
    ref, cand = report.result("fp32"), report.result("noisy")
    assert ref.reference and not cand.reference
    assert ref.fidelity.mean_cosine == pytest.approx(1.0, abs=1e-6)
    direct = check(model, report_model(report, "noisy", setup), mixed_length_batches(tokenizer, texts, 8, 48))
    assert cand.fidelity.mean_cosine == pytest.approx(direct.mean_cosine, abs=1e-6)
    assert cand.fidelity.mean_cosine < 0.99999
    assert cand.fidelity.n == len(texts)
    assert cand.passed and cand.status == "ok"


def report_model(report, name, setup):
    # rebuild the same noisy copy (seeded) to compare through ember.fidelity.check directly
    return noisy(setup[0], 0.002)


def test_variant_outside_its_tolerance_is_marked_failed(report):
    r = report.result("very-noisy")
    assert not r.passed and r.error is None
    assert r.violations and r.violations[0].startswith("mean cosine ")
    assert r.violations[0].endswith("< allowed 0.999900")
    assert r.status.startswith("failed fidelity: mean cosine")
    assert r.latency_ms is not None  # still measured: the row shows how fast the wrong answer is
    assert not report.passed


def test_timing_memory_size_and_machine(setup, report):
    model = setup[0]
    for r in report.results:
        lat = r.latency_ms
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
        assert r.throughput > 0 and r.throughput_unbucketed > 0
        assert r.peak_rss_mb > 10
    expected = sum(p.numel() * p.element_size() for p in model.parameters()) + sum(
        b.numel() * b.element_size() for b in model.buffers()
    )
    assert estimate_size_bytes(model) == expected
    assert report.result("fp32").size_mb == pytest.approx(expected / 1e6)
    assert report.machine.threads == 1  # the configured thread count is recorded
    assert report.machine.cpu_model and report.machine.torch_version == torch.__version__
    assert report.speedup(report.result("fp32")) == pytest.approx(1.0)


def test_threads_are_restored_after_the_run(setup, tokenizer):
    model, texts, _ = setup
    before = torch.get_num_threads()
    PerformanceBenchmark(tokenizer, texts[:4], config=CFG, progress=False).run([Variant("fp32", model)])
    assert torch.get_num_threads() == before


def test_unlabelled_texts_give_fidelity_only(setup, tokenizer):
    _, texts, _ = setup
    model = make_model("bert-base")  # an encoder without a head: mean-pooled hidden states are compared
    rep = PerformanceBenchmark(tokenizer, texts, [0] * len(texts), config=CFG, progress=False).run(
        [Variant("a", model), Variant("b", noisy(model, 0.05))]
    )
    assert all(r.accuracy is None for r in rep.results)  # labels but no head: no accuracy, no failure
    rep = PerformanceBenchmark(tokenizer, texts, config=CFG, progress=False).run(
        [Variant("a", model), Variant("b", noisy(model, 0.05))]
    )
    assert not rep.labelled
    assert all(r.accuracy is None and r.macro_f1 is None for r in rep.results)
    assert rep.results[0].reference  # the first variant is the reference when none is flagged
    assert 0 < rep.results[1].fidelity.mean_cosine < 1


def test_failing_variants_become_rows_and_the_rest_is_measured(setup, tokenizer, tmp_path):
    model, texts, labels = setup

    def breaks_on_long(input_ids, attention_mask, token_type_ids=None):
        if input_ids.shape[1] > 8:
            raise RuntimeError(f"sequence of {input_ids.shape[1]} tokens is too long")
        return model(input_ids=input_ids, attention_mask=attention_mask)

    def no_mask(input_ids):  # does not accept the tokenizer's outputs
        return model(input_ids=input_ids)

    def says_hello(**batch):
        return "hello"

    rep = PerformanceBenchmark(tokenizer, texts, labels, CFG, progress=False).run([
        Variant("fp32", model, reference=True),
        Variant("breaks", breaks_on_long),
        Variant("no-mask", no_mask),
        Variant("text-out", says_hello),
    ])
    assert rep.result("fp32").passed and rep.result("fp32").accuracy is not None
    assert rep.result("breaks").error.startswith("RuntimeError: sequence of ")
    assert rep.result("no-mask").error.startswith("TypeError: ")
    assert "no_mask() got an unexpected keyword argument" in rep.result("no-mask").error
    assert rep.result("text-out").error == (
        "TypeError: cannot compare an output of type str: it has neither logits nor last_hidden_state"
    )
    assert [r.passed for r in rep.results] == [True, False, False, False]
    paths = rep.write(tmp_path)
    md = paths["markdown"].read_text()
    assert "| breaks | " in md and "error: RuntimeError: sequence of" in md
    assert paths["plot"].stat().st_size > 1000


def test_labels_the_head_does_not_know_fail_the_row(setup, tokenizer):
    model, texts, _ = setup
    labels = [5] + [0] * (len(texts) - 1)
    rep = PerformanceBenchmark(tokenizer, texts, labels, CFG, progress=False).run([Variant("fp32", model)])
    assert rep.results[0].error == (
        "BenchError: the labels go up to 5 but 'fp32' has a head with 3 outputs; use a model trained on these "
        "labels, or map the labels to its classes"
    )


def test_reference_failure_leaves_others_unverified(setup, tokenizer):
    model, texts, _ = setup

    def broken(**batch):
        raise ValueError("boom")

    rep = PerformanceBenchmark(tokenizer, texts, config=CFG, progress=False).run(
        [Variant("ref", broken, reference=True), Variant("cand", model, tolerance=Tolerance())]
    )
    assert rep.result("ref").error == "ValueError: boom"
    assert rep.result("cand").violations == ["fidelity not verified: the reference variant failed"]


def test_bad_inputs_raise_clear_errors(setup, tokenizer):
    model, texts, _ = setup
    with pytest.raises(DataError) as e:
        PerformanceBenchmark(tokenizer, [])
    assert str(e.value) == (
        "the benchmark got an empty dataset (0 texts); pass at least one text, or use "
        "ember.data.sample.sample_sentences()"
    )
    with pytest.raises(DataError, match="^3 texts but 2 labels; pass one label per text$"):
        PerformanceBenchmark(tokenizer, texts[:3], [0, 1])
    with pytest.raises(DataError, match="^labels must be integer class ids, got 'pos'"):
        PerformanceBenchmark(tokenizer, texts[:1], ["pos"])
    bench = PerformanceBenchmark(tokenizer, texts[:2], config=CFG, progress=False)
    with pytest.raises(BenchError, match=r"^no variants to benchmark; pass at least one Variant\(name, model\)$"):
        bench.run([])
    with pytest.raises(BenchError, match=r"^variant names must be unique; \['x'\] appear more than once$"):
        bench.run([Variant("x", model), Variant("x", model)])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "BenchConfig.batch_size must be a positive integer, got 0"),
        ({"repeats": 1.5}, "BenchConfig.repeats must be a positive integer, got 1.5"),
        ({"blocks": 0}, "BenchConfig.blocks must be a positive integer, got 0"),
        ({"warmup": -1}, "BenchConfig.warmup must be an integer >= 0, got -1"),
        ({"threads": 0}, "BenchConfig.threads must be None or a positive integer, got 0"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError) as e:
        BenchConfig(**kwargs)
    assert str(e.value) == message


def test_macro_f1():
    assert macro_f1([0, 0, 1, 1], [0, 1, 1, 1]) == pytest.approx((2 / 3 + 0.8) / 2)
    assert macro_f1([0, 1, 2], [0, 1, 2]) == 1.0
