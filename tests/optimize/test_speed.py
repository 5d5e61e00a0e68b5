"""Speed as well as fidelity: the timing, the policy on injected figures (never a wall-clock threshold), CPU
families forced through EMBER_CPU_FEATURES, and an engine that refuses the CPU."""

from __future__ import annotations

import warnings

import pytest

from ember.errors import EmberWarning, SpeedError, UnsupportedCPUError
from ember.hardware import detect
from ember.optimize import (
    BF16Config,
    Int8DynamicConfig,
    OnnxRuntimeConfig,
    OpenVINOConfig,
    available_presets,
    load,
    optimize,
    preset,
    unavailable,
)
from ember.optimize import core as optimize_core
from ember.optimize.core import enforce_speed
from ember.optimize.cpu import better_preset, cannot_be_fast, refused_cpu, serving_order
from ember.optimize.speed import MIN_ROUNDS, SpeedReport, measure_speed, slower_parts, timing_inputs

from conftest import make_model


@pytest.fixture(scope="module")
def classifier():
    return make_model("bert")


def slow_report(**kw) -> SpeedReport:
    """An artifact 2x slower than the original at batch 1 and 1.25x slower on the batch, in every round."""
    d = dict(cpu="Test CPU (avx512-bf16: avx2)", threads=2, batch1_ms={"original": 6.35, "artifact": 12.99},
             batch_ms={"original": 40.0, "artifact": 50.0}, speedup_batch1=0.49, speedup_batch=0.8,
             slower_share_batch1=1.0, slower_share_batch=1.0, n_single=8, batch_size=32, rounds=7)
    return SpeedReport(**{**d, **kw})


# ---- the verdict, on injected figures ---------------------------------------------------------------------------

@pytest.mark.parametrize("objective, parts", [("latency", ["batch1"]), ("throughput", ["batch"]),
                                               ("both", ["batch1", "batch"])])
def test_slower_is_judged_at_the_objective_the_artifact_was_built_for(objective, parts):
    assert slower_parts(slow_report(), objective) == parts
    faster_batch = slow_report(speedup_batch=1.8, slower_share_batch=0.0)
    assert slower_parts(faster_batch, objective) == [p for p in parts if p == "batch1"]


@pytest.mark.parametrize("speedup, share, slower", [
    (0.99, 1.0, False),  # within the noise margin: a tie, not a regression
    (0.80, 0.6, False),  # slower at the median, but not in 3 of 4 rounds
    (0.80, 0.75, True),
    (1.20, 0.0, False),
])
def test_a_tie_or_an_inconsistent_loss_is_not_called_slower(speedup, share, slower):
    assert slow_report(speedup_batch1=speedup, slower_share_batch1=share).slower("batch1") is slower


def test_a_slower_artifact_warns_with_the_figures_and_the_preset_that_serves_better(monkeypatch):
    monkeypatch.setenv("EMBER_CPU_FEATURES", "avx512-bf16")
    with pytest.warns(EmberWarning) as w:
        enforce_speed(slow_report(), preset("bf16"))
    msg = str(w[0].message)
    assert "BF16Config (bf16) built an artifact slower than the original model at its objective (both)" in msg
    assert "batch 1: 12.99 ms vs 6.35 ms for the original (x0.49 speed)" in msg
    assert "batch of 32: 50.00 ms vs 40.00 ms for the original (x0.80 speed)" in msg
    assert "median of 7 interleaved rounds on Test CPU (avx512-bf16: avx2), 2 threads" in msg
    assert "On this CPU ember expects preset 'openvino-bf16' to serve the faithful tier better" in msg
    assert msg.endswith("or pass on_slower='ignore' to keep this one")


def test_on_slower_raise_refuses_and_ignore_says_nothing(monkeypatch):
    monkeypatch.setenv("EMBER_CPU_FEATURES", "avx2")
    with pytest.raises(SpeedError, match=r"Int8DynamicConfig \(torchao-int8\) built an artifact slower .* "
                                         r"preset 'onnx-int8' to serve the int8 tier better"):  # no VNNI: not OpenVINO's
        enforce_speed(slow_report(), Int8DynamicConfig(on_slower="raise"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enforce_speed(slow_report(), Int8DynamicConfig(on_slower="ignore"))
        enforce_speed(slow_report(speedup_batch1=2.0, slower_share_batch1=0.0), BF16Config(objective="latency"))


def test_a_sample_too_small_to_time_says_so(tokenizer):
    reason = timing_inputs(tokenizer, ["play music", "hi"], ("input_ids", "attention_mask"), 48)
    assert reason == ("the verification sample has 2 sentences; timing the artifact against the original needs at "
                      "least 4 (single inputs and a batch): pass more sentences as sample=, or on_slower='ignore' to "
                      "skip the speed check")
    with pytest.warns(EmberWarning, match=r"^OnnxRuntimeConfig \(onnxruntime\): the artifact's speed was not checked "
                                          r"against the original: the verification sample has 2 sentences"):
        enforce_speed(SpeedReport(skipped=reason), OnnxRuntimeConfig())
    with pytest.raises(SpeedError, match="needs at least 4"):
        enforce_speed(SpeedReport(skipped=reason), OnnxRuntimeConfig(on_slower="raise"))


# ---- the timing, with a fake clock --------------------------------------------------------------------------------

class FakeClock:
    """Time that moves only when a fake model runs: each call costs what the model says."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def model(self, ms_single: float, ms_batch: float):
        def run(input_ids, attention_mask=None):
            self.now += (ms_single if input_ids.shape[0] == 1 else ms_batch) / 1000
        return run


def test_measure_speed_reports_medians_and_paired_ratios(tokenizer, texts):
    clock = FakeClock()
    singles, batch = timing_inputs(tokenizer, texts, ("input_ids", "attention_mask"), 48)
    r = measure_speed(clock.model(8.0, 40.0), clock.model(2.0, 10.0), singles, batch, cpu="Test CPU", threads=2,
                      clock=clock)
    assert (r.n_single, r.batch_size, r.cpu, r.threads) == (8, 8, "Test CPU", 2)
    assert r.batch1_ms == pytest.approx({"original": 8.0, "artifact": 2.0})
    assert r.batch_ms == pytest.approx({"original": 40.0, "artifact": 10.0})
    assert (r.speedup_batch1, r.speedup_batch) == (pytest.approx(4.0), pytest.approx(4.0))
    assert (r.slower_share_batch1, r.slower_share_batch) == (0.0, 0.0)
    assert r.rounds == MIN_ROUNDS  # a clear verdict stops at the minimum
    assert r.throughput() == pytest.approx(800.0) and r.throughput("original") == pytest.approx(200.0)
    assert SpeedReport.from_dict(r.to_dict()) == r


def test_an_unclear_verdict_takes_more_rounds(tokenizer, texts):
    clock = FakeClock()
    singles, batch = timing_inputs(tokenizer, texts, ("input_ids", "attention_mask"), 48)
    r = measure_speed(clock.model(2.0, 10.0), clock.model(2.02, 10.1), singles, batch, cpu="", clock=clock)
    assert r.rounds > MIN_ROUNDS and not r.slower("batch1")


# ---- through optimize(), save and load -------------------------------------------------------------------------

def test_optimize_records_the_speed_and_saves_it(classifier, tokenizer, texts, tmp_path, monkeypatch):
    monkeypatch.setattr(optimize_core, "measure_speed", lambda *a, **k: slow_report(speedup_batch1=3.0,
                                                                                 slower_share_batch1=0.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmberWarning)  # faster at batch 1 but slower on the batch: latency only
        art = optimize(classifier, OnnxRuntimeConfig(threads=1, objective="latency"), tokenizer=tokenizer, sample=texts)
    assert art.speed.speedup_batch1 == 3.0
    back = load(art.save(tmp_path / "a"))
    assert back.speed == art.speed and back.optimize_config.objective == "latency"


def test_optimize_warns_about_a_slower_artifact(classifier, tokenizer, texts, monkeypatch):
    monkeypatch.setattr(optimize_core, "measure_speed", lambda *a, **k: slow_report())
    with pytest.warns(EmberWarning, match=r"OnnxRuntimeConfig \(onnxruntime\) built an artifact slower than the "
                                          r"original model at its objective \(both\): batch 1: 12.99 ms"):
        art = optimize(classifier, OnnxRuntimeConfig(threads=1), tokenizer=tokenizer, sample=texts)
    assert art.speed.slower("batch1")


def test_optimize_times_for_real_without_judging_the_figures(classifier, tokenizer, texts):
    art = optimize(classifier, OnnxRuntimeConfig(threads=1, on_slower="warn"), tokenizer=tokenizer, sample=texts)
    s = art.speed
    assert s.rounds >= MIN_ROUNDS and s.n_single == 8 and s.batch_size == 8 and s.batch1_ms["artifact"] > 0
    assert s.cpu == detect().summary()
    assert optimize(classifier, OnnxRuntimeConfig(threads=1, on_slower="ignore"), tokenizer=tokenizer, sample=texts).speed is None


# ---- CPU families, forced ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("family, bf16, dot, amx", [
    ("amx", True, True, True), ("avx512-bf16", True, True, False), ("avx512-vnni", False, True, False),
    ("avx2", False, False, False), ("arm", False, True, False), ("arm-bf16", True, True, False),
])
def test_forced_families_have_their_features(family, bf16, dot, amx):
    cpu = detect(force=family)
    assert (cpu.family, cpu.native_bf16, cpu.int8_dot, cpu.amx) == (family, bf16, dot, amx)
    assert f"forced by EMBER_CPU_FEATURES={family}" in cpu.summary()


def test_a_bad_forced_feature_names_the_known_ones(monkeypatch):
    monkeypatch.setenv("EMBER_CPU_FEATURES", "warp-drive")
    with pytest.raises(ValueError, match=r"^EMBER_CPU_FEATURES='warp-drive' names no CPU family or flag ember knows; "
                                         r"give a family \(amx, avx512-bf16, .*or unset it to detect the CPU$"):
        detect()


def test_without_avx512_the_bf16_presets_say_why_they_are_left_out(monkeypatch):
    monkeypatch.setenv("EMBER_CPU_FEATURES", "avx2")
    for name in ("bf16", "openvino-bf16", "compile-bf16"):
        assert unavailable(name) == "this CPU has no AVX512-BF16 or AMX"
    assert unavailable("int8") == ("this CPU has no int8 dot-product instructions (VNNI, AMX): torch int8 matmuls "
                                   "are not faster here")
    names = set(available_presets())
    assert {"onnx", "openvino", "onnx-int8"} <= names and not names & {"bf16", "int8", "openvino-bf16"}
    # 7-bit weights where ONNX Runtime's int8 kernels can saturate (QAT models fell to cosine ~0.93 without, on a Zen 3)
    assert preset("onnx-int8").reduce_range


def test_without_int8_dot_products_the_slow_int8_presets_say_why_and_onnx_int8_serves(monkeypatch):
    # measured on an AVX2-only Zen 3 (peers run 7): OpenVINO's int8 and MatMulNBits slower than fp32 at batch 32
    monkeypatch.setenv("EMBER_CPU_FEATURES", "avx2")
    assert unavailable("openvino-int8") == ("this CPU has no int8 dot-product instructions (VNNI, AMX): OpenVINO's "
                                            "int8 was measured slower than the fp32 original at batch 32 on such a "
                                            "CPU (use onnx-int8)")
    assert unavailable("onnx-int8-block").startswith("this CPU has no int8 dot-product instructions (VNNI, AMX): "
                                                     "ONNX Runtime's MatMulNBits was measured slower")
    assert unavailable("onnx-int8") is None and unavailable("openvino") is None
    assert "openvino-int8" not in available_presets() and "onnx-int8-block" not in available_presets()
    assert serving_order(detect(), "int8")[0] == "onnx-int8"
    assert better_preset(preset("openvino-int8"), detect()) == "onnx-int8"
    # faithful: ONNX Runtime fp32 (unfused LayerNorms) led OpenVINO f32 at batch 1 there (peers runs 10-11)
    assert serving_order(detect(), "faithful") == ("onnx", "openvino")
    assert better_preset(preset("openvino"), detect()) == "onnx"
    assert cannot_be_fast("onnx-int8", preset("onnx-int8"), detect()) is None
    for family in ("avx512-vnni", "avx512-bf16", "amx", "arm"):  # int8 dot products (or ARM): they stay
        monkeypatch.setenv("EMBER_CPU_FEATURES", family)
        assert unavailable("openvino-int8") is None and unavailable("onnx-int8-block") is None, family
    monkeypatch.setenv("EMBER_CPU_FEATURES", "avx512-vnni")
    assert serving_order(detect(), "int8")[0] == "openvino-int8"
    assert serving_order(detect(), "faithful")[0] == "openvino"  # not measured without VNNI's family: unchanged


def test_presets_follow_the_cpu_family(monkeypatch):
    monkeypatch.setenv("EMBER_CPU_FEATURES", "amx")
    assert preset("int8").compile and not preset("onnx-int8").reduce_range and preset("bf16").mode == "weights"
    assert preset("openvino-int8").precision == "bf16"  # what stays in float runs on the AMX tiles
    assert preset("openvino-int8").batch_precision is None  # batches too
    assert unavailable("bf16") is None and unavailable("int8") is None
    assert serving_order(detect(), "faithful")[0] == "openvino-bf16"
    assert better_preset(preset("bf16"), detect()) == "openvino-bf16"
    assert better_preset(preset("openvino-bf16"), detect()) == "openvino"  # not itself
    assert cannot_be_fast("int8", Int8DynamicConfig(), detect()).startswith("eager torchao int8")
    monkeypatch.setenv("EMBER_CPU_FEATURES", "avx512-bf16")
    assert preset("openvino-int8").precision == "bf16"  # measured faster at batch 1 on the Zen 4, same cosine
    assert preset("openvino-int8").batch_precision is None  # batch 32 within noise of fp32 (0.94x Zen 4, 1.04x Zen 5)
    monkeypatch.setenv("EMBER_CPU_FEATURES", "avx512-vnni")
    assert preset("openvino-int8").precision == "f32"  # bf16 would be emulated: slower than fp32
    assert preset("openvino-int8").batch_precision is None
    monkeypatch.setenv("EMBER_CPU_FEATURES", "arm")
    assert serving_order(detect(), "int8")[0] == "onnx-int8" and unavailable("bf16") == "this CPU has no BF16 instructions"


# ---- an engine that refuses the CPU ----------------------------------------------------------------------------

class RefusingCore:
    """An OpenVINO core whose CPU plugin refuses the precision, as OpenVINO does on a CPU without it."""

    def __init__(self, real) -> None:
        self.real = real

    def compile_model(self, *a, **k):
        raise RuntimeError("Exception from src/plugins/intel_cpu/src/config.cpp:224:\n[CPU] Wrong value bf16 for "
                           "property key INFERENCE_PRECISION_HINT: bf16 is not supported on the platform")

    def read_model(self, *a, **k):
        return self.real.read_model(*a, **k)


def test_an_engine_that_refuses_the_cpu_is_named_with_what_to_use(classifier, tokenizer, texts, monkeypatch, tmp_path):
    from ember.optimize.backends import openvino as ov_backend

    monkeypatch.setenv("EMBER_CPU_FEATURES", "avx2")
    saved = optimize(classifier, OpenVINOConfig(threads=1, on_slower="ignore", static_shapes=()), tokenizer=tokenizer,
                     sample=texts).save(tmp_path / "ov")
    refusing = RefusingCore(ov_backend.shared_core())
    monkeypatch.setattr(ov_backend, "shared_core", lambda: refusing)
    expected = (r"^OpenVINO refused this CPU \(.*avx2.*forced by EMBER_CPU_FEATURES=avx2\)\) while {} OpenVINOConfig: "
                r"\[CPU\] Wrong value bf16 .*bf16 is not supported on the platform\. Use preset 'onnx' \(ember optimize "
                r"--list shows what runs here\)$")
    with pytest.raises(UnsupportedCPUError, match=expected.format("building")):
        optimize(classifier, OpenVINOConfig(precision="bf16", threads=1), tokenizer=tokenizer, sample=texts)
    with pytest.raises(UnsupportedCPUError, match=expected.format("loading")):
        load(saved)


def test_other_build_errors_are_not_taken_for_a_cpu_refusal():
    assert refused_cpu(RuntimeError("out of memory"), OnnxRuntimeConfig(), detect(force="avx2")) is None
    err = refused_cpu(RuntimeError("This CPU doesn't support AVX2"), OnnxRuntimeConfig(), detect(force="x86-64"))
    assert str(err).startswith("ONNX Runtime refused this CPU") and "Use preset 'openvino'" in str(err)


@pytest.mark.parametrize("rounds", [[0.98, 0.99, 0.97, 1.01], [0.80, 0.85, 1.02, 1.05, 0.82], [0.80, 0.85, 0.90, 1.05],
                                    [1.2, 1.3, 1.1, 1.25], []])
def test_per_round_speedups_are_judged_by_the_same_rule_as_the_report(rounds):
    from statistics import median

    from ember.optimize.speed import clearly_slower

    report = slow_report(speedup_batch1=median(rounds) if rounds else None,
                         slower_share_batch1=sum(x < 1 for x in rounds) / len(rounds) if rounds else None)
    assert clearly_slower(rounds) is report.slower("batch1")
    assert clearly_slower(rounds) is (rounds == [0.80, 0.85, 0.90, 1.05])


def test_the_cpu_and_speed_module_examples_hold():
    import doctest

    from ember.optimize import cpu, speed

    assert doctest.testmod(cpu).failed == 0 and doctest.testmod(speed).failed == 0
