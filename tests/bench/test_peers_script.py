"""benchmarks/peers.py's bookkeeping (no timing): each row's share of its precision's peak, and a run whose peak was
measured low (a row above 100%) counting no peak target."""

import pytest
from bench_scripts import script_module


@pytest.fixture(scope="module")
def peers():
    yield from script_module("peers.py", "peers_script")


def _rows(peers, fp32_throughput: float):
    Row = peers.Row
    return [Row("pytorch-fp32", "fp32", "short", p50_ms=10.0, throughput=fp32_throughput, cosine=1.0),
            Row("ember-openvino-bf16", "bf16", "short", p50_ms=2.0, throughput=1000.0, cosine=0.99999),
            Row("openvino", "bf16", "short", p50_ms=3.0, throughput=700.0, cosine=0.99999),
            Row("ember-openvino-int8", "int8", "short", p50_ms=1.5, throughput=1500.0, cosine=0.997),
            Row("optimum-int8-avx512vnni", "int8", "short", p50_ms=2.5, throughput=900.0, cosine=0.993)]


def test_fractions_use_each_rows_precision(peers):
    rows = _rows(peers, 300.0)
    over = peers.apply_peaks(rows, {"fp32": 150.0, "bf16": 400.0, "int8": 800.0}, {"short": 0.2})
    assert over == []
    assert rows[0].peak_fraction == pytest.approx(300 * 0.2 / 150)
    assert rows[1].peak_fraction == pytest.approx(1000 * 0.2 / 400)
    assert rows[3].peak_fraction == pytest.approx(1500 * 0.2 / 800)


def test_a_row_above_its_peak_is_named(peers):
    rows = _rows(peers, 900.0)  # fp32 at 120% of a peak measured in a contended moment
    over = peers.apply_peaks(rows, {"fp32": 150.0, "bf16": 400.0, "int8": 800.0}, {"short": 0.2})
    assert over == ["short/pytorch-fp32 120% fp32"]


def test_summary_meets_the_peak_target_only_against_its_limit(peers):
    rows = _rows(peers, 300.0)
    peaks = {"fp32": 150.0, "bf16": 400.0, "int8": 800.0}
    peers.apply_peaks(rows, peaks, {"short": 0.2})
    summary = peers.summarise(rows, peaks, 0.2, defaults=["openvino-bf16", "openvino-int8"])
    faithful, int8 = summary["faithful"], summary["int8"]
    assert faithful["fraction_of_limit"] == pytest.approx(1000 * 0.2 / 400, abs=1e-3)  # 0.5: met
    assert faithful["target_peak_met"] and faithful["target_throughput_met"]
    assert int8["fraction_of_limit"] == pytest.approx(1500 * 0.2 / 800, abs=1e-3)  # 0.375: not met
    assert not int8["target_peak_met"]
    assert summary["default_presets_slower_than_fp32"] == []


def test_openvino_peers_follow_the_cpus_default_precision(peers):
    import openvino as ov

    hint = str(ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT"))
    expected = "bf16" if "bf16" in hint or "bfloat16" in hint else "fp32"
    assert peers.row_tier("openvino") == expected
    assert peers.row_tier("ember-openvino") == "fp32"  # ember sets f32 explicitly for this preset
    assert peers.row_tier("ember-openvino-bf16") == "bf16"
    assert peers.row_tier("st-onnx-int8") == "int8"
