"""benchmarks/fp32_floor.py: the floor computes exactly the model's dense multiply-adds, the same product in every
kernel library and in both precisions, and the arithmetic turns issue #19's faithful targets into budgets (no timing
asserted)."""

import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from bench_scripts import script_module
from transformers import BertConfig

from conftest import WORDS


@pytest.fixture(scope="module")
def floor():
    yield from script_module("fp32_floor.py", "fp32_floor_script")


CONFIG = BertConfig(hidden_size=32, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4)


def test_the_chain_is_the_models_dense_multiply_adds(floor):
    # the "% of peak" cells' count (peers.flop_per_token) is the chain's: Q, K, V and output projections (4·H²) and
    # the FFN (2·H·I) per layer
    h, i, layers = CONFIG.hidden_size, CONFIG.intermediate_size, CONFIG.num_hidden_layers
    assert 2 * sum(k * n for k, n in floor.dense_shapes(CONFIG)) == 2 * layers * (4 * h * h + 2 * h * i)
    peers = sys.modules["peers"]  # the module fp32_floor.py imported its workloads and peers from
    assert peers.flop_per_token(CONFIG) == 2 * layers * (4 * h * h + 2 * h * i)
    shapes = floor.dense_shapes(CONFIG)
    assert all(a[1] == b[0] for a, b in zip(shapes, shapes[1:], strict=False))  # each product feeds the next


def test_every_library_computes_the_same_chain_on_the_engines_token_count(floor):
    weights = floor.chain_weights(CONFIG)
    ids = torch.zeros(3, 7, dtype=torch.long)
    outs = {lib: make(weights, 1)(input_ids=ids, attention_mask=torch.ones_like(ids))
            for lib, make in floor.FLOORS["fp32"].items()}
    expected = floor.floor_input(CONFIG.hidden_size)[:21]
    for w in weights:
        expected = expected @ w
    for lib, out in outs.items():
        assert tuple(out.shape) == (3, 7, CONFIG.hidden_size), lib
        assert np.allclose(out.reshape(21, -1).numpy(), expected, rtol=1e-3, atol=1e-4), lib
        assert np.isfinite(out.numpy()).all() and float(out.abs().mean()) > 1e-3, lib  # no overflow, no denormals


@pytest.mark.parametrize("lib", ["torch", "openvino"])
def test_the_bf16_floors_compute_the_same_chain_in_bf16(floor, lib):
    if lib == "openvino":
        pytest.importorskip("openvino")
    assert set(floor.FLOORS["bf16"]) == {"torch", "openvino"}  # ONNX Runtime's CPU provider has no bf16 MatMul
    weights = floor.chain_weights(CONFIG)
    ids = torch.zeros(3, 7, dtype=torch.long)
    out = floor.FLOORS["bf16"][lib](weights, 1)(input_ids=ids, attention_mask=torch.ones_like(ids))
    exact = floor.FLOORS["fp32"][lib](weights, 1)(input_ids=ids, attention_mask=torch.ones_like(ids)).reshape(21, -1)
    assert tuple(out.shape) == (3, 7, CONFIG.hidden_size) and out.dtype == torch.float32  # fp32 out, as engines give
    got = out.reshape(21, -1)
    assert float(torch.nn.functional.cosine_similarity(got, exact, dim=1).min()) > 0.99  # the same chain, every row
    assert np.isfinite(got.numpy()).all() and float(got.abs().mean()) > 1e-3
    from ember.hardware import detect

    if lib == "torch" or detect().native_bf16:  # OpenVINO runs its bf16 hint in f32 on a CPU without bf16
        assert not torch.allclose(got, exact, rtol=1e-5, atol=1e-6), "computed in fp32, not bf16"


def test_a_batch_over_the_floors_input_is_refused(floor):
    fn = floor.torch_floor(floor.chain_weights(CONFIG), 1)
    with pytest.raises(ValueError, match="lower --batch"):
        fn(input_ids=torch.zeros(1, floor.MAX_TOKENS + 1, dtype=torch.long))


def _results(floor_p50: float, floor_tp: float) -> dict:
    return {"dense-matmuls-torch": {"p50_ms": floor_p50 + 1, "sent_s": floor_tp - 10},
            "dense-matmuls-onnxruntime": {"p50_ms": floor_p50, "sent_s": floor_tp},
            "optimum-ort-O2": {"p50_ms": 20.0, "sent_s": 60.0},
            "openvino": {"p50_ms": 22.0, "sent_s": 64.0},
            "ember-onnx": {"p50_ms": 19.0, "sent_s": 63.0}}


def test_a_floor_above_the_target_is_out_of_reach(floor):
    b = floor.budgets(_results(17.0, 68.0), ["optimum-ort-O2", "openvino"], ["ember-onnx"])
    assert b["floor"] == {"p50_ms": 17.0, "sent_s": 68.0, "p50_library": "onnxruntime", "throughput_library": "onnxruntime"}
    one, tp = b["batch1"], b["throughput"]
    assert one["peer"] == "optimum-ort-O2" and one["target_p50_ms"] == pytest.approx(16.0)
    assert one["budget_ms"] == pytest.approx(-1.0) and not one["reachable"]
    assert one["overhead_ms"]["ember-onnx"] == pytest.approx(2.0)
    assert tp["peer"] == "openvino" and tp["target_sent_s"] == pytest.approx(70.4)
    assert tp["budget_ms_per_sentence"] == pytest.approx(1000 / 70.4 - 1000 / 68) and not tp["reachable"]
    assert "no fp32 engine on these kernels can meet it" in floor.describe(b, ["ember-onnx"])[0]


def test_the_verdict_names_the_floors_precision(floor):
    b = floor.budgets(_results(17.0, 68.0), ["optimum-ort-O2", "openvino"], ["ember-onnx"])
    lines = floor.describe(b, ["ember-onnx"], "bf16")
    assert all(line.endswith(" -> no bf16 engine on these kernels can meet it") for line in lines)
    assert not any("fp32" in line for line in lines)


def test_a_floor_under_the_target_leaves_a_budget(floor):
    b = floor.budgets(_results(12.0, 90.0), ["optimum-ort-O2", "openvino"], ["ember-onnx"])
    assert b["batch1"]["reachable"] and b["batch1"]["budget_ms"] == pytest.approx(4.0)
    assert b["throughput"]["reachable"] and b["throughput"]["overhead_ms_per_sentence"]["ember-onnx"] == pytest.approx(
        1000 / 63 - 1000 / 90)
    assert all("reachable only by cutting that work" in line for line in floor.describe(b, ["ember-onnx"]))


def test_the_arithmetic_needs_a_floor_and_a_peer(floor):
    with pytest.raises(ValueError, match="at least one floor and one peer"):
        floor.budgets(_results(12.0, 90.0), ["st-openvino"], ["ember-onnx"])


def test_an_unknown_peer_is_refused(floor, capsys):
    with pytest.raises(SystemExit):
        floor.parse(["--peers", "openvino,tensorrt"])
    assert "tensorrt not one of" in capsys.readouterr().err


def test_the_defaults_follow_the_precision(floor, monkeypatch):
    monkeypatch.setenv("EMBER_CPU_FEATURES", "avx512-bf16")
    fp32 = floor.parse([])
    assert (fp32.precision, fp32.presets, fp32.peers) == ("fp32", "onnx,openvino", ",".join(floor.PEERS))
    bf16 = floor.parse(["--precision", "bf16"])
    assert (bf16.presets, bf16.peers) == ("openvino-bf16,compile-bf16", "openvino,st-openvino")
    asked = floor.parse(["--precision", "bf16", "--presets", "", "--peers", "optimum-ort-O2"])
    assert (asked.presets, asked.peers) == ("", "optimum-ort-O2")  # asked for, kept ('' for none too)
    from ember.optimize import preset
    from ember.optimize.cpu import tier_of, uses_bf16

    for name in bf16.presets.split(","):  # ember's faithful bf16 presets, by their real names
        assert uses_bf16(preset(name)) and tier_of(preset(name)) == "faithful", name


def test_bf16_is_refused_on_a_cpu_without_it(floor, monkeypatch, capsys):
    monkeypatch.setenv("EMBER_CPU_FEATURES", "avx2")
    assert floor.parse([]).precision == "fp32"
    with pytest.raises(SystemExit):
        floor.parse(["--precision", "bf16"])
    err = capsys.readouterr().err
    assert "this CPU lacks bf16" in err and "forced by EMBER_CPU_FEATURES=avx2" in err and "use --precision fp32" in err


@pytest.mark.parametrize("precision, preset", [("fp32", "onnx"), ("bf16", "openvino-bf16")])
def test_a_small_run_end_to_end(floor, tmp_path, capsys, precision, preset):
    """The packaged MiniLM, a CSV of a few sentences, one ember preset and the OpenVINO peer (no side venv)."""
    from ember.hardware import detect

    if precision == "bf16" and not detect().native_bf16:
        pytest.skip("this CPU has no bf16 (the refusal has its own test)")
    data = tmp_path / "rows.csv"
    data.write_text("body\n" + "\n".join(" ".join(WORDS[i:i + 4 + i % 9]) for i in range(24)) + "\n")
    floor.main(["--data", str(data), "--text-column", "body", "--n", "16", "--batch", "8", "--latency-samples", "3",
                "--rounds", "1", "--presets", preset, "--peers", "openvino", "--threads", "1", "--precision", precision])
    printed = capsys.readouterr().out.strip().splitlines()
    out = json.loads(printed[-1])
    ours = f"ember-{preset}"
    assert set(out["results"]) == {"pytorch-fp32", ours, "openvino",
                                   *(f"dense-matmuls-{lib}" for lib in floor.FLOORS[precision])}
    assert out["results"][ours]["cosine"] > 0.9999 and out["results"]["dense-matmuls-torch"]["cosine"] is None
    assert out["arithmetic"]["batch1"]["peer"] == "openvino" and ours in out["arithmetic"]["batch1"]["overhead_ms"]
    assert out["n"] == 16 and out["precision"] == precision
    verdicts = [line for line in printed if line.startswith(("batch 1:", "throughput:"))]
    assert len(verdicts) == 2 and not any(("fp32" if precision == "bf16" else "bf16") in line for line in verdicts)


def test_a_preset_whose_build_fails_is_reported_and_the_rest_still_run(floor, monkeypatch, tmp_path, capsys):
    def ember_engine(model, tok, name, sample, threads):
        if name == "compile-bf16":
            raise RuntimeError("inductor: no C++ compiler")
        return lambda **b: None

    monkeypatch.setattr(floor, "ember_engine", ember_engine)
    args = floor.parse(["--presets", "compile-bf16,onnx", "--peers", "", "--threads", "1"])
    engines, peers, ours = floor.build_engines(args, SimpleNamespace(config=CONFIG), None, [], tmp_path)
    assert ours == ["ember-onnx"] and "ember-onnx" in engines and "ember-compile-bf16" not in engines
    assert any(n.startswith(floor.FLOOR_PREFIX) for n in engines) and peers == []
    assert "ember-compile-bf16 not run: its build failed (RuntimeError: inductor: no C++ compiler)" in capsys.readouterr().out
