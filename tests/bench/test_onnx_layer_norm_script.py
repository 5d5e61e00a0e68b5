"""benchmarks/onnx_layer_norm.py's per-node profile (no timing asserted): ONNX Runtime's profiler, summed per op type,
shows the ops each build really runs."""

import pytest
from bench_scripts import script_module

from ember.optimize import optimize
from ember.optimize.config import OnnxRuntimeConfig

from conftest import WORDS, make_model


@pytest.fixture(scope="module")
def script():
    yield from script_module("onnx_layer_norm.py", "onnx_layer_norm_script")


@pytest.mark.parametrize("fused", [False, True])
def test_the_profile_names_the_ops_each_build_runs(script, tokenizer, fused):
    model = make_model("bert-base")
    art = optimize(model, OnnxRuntimeConfig(threads=1, skip_layer_norm=fused), tokenizer=tokenizer)
    texts = [" ".join(WORDS[i:i + 3 + i % 7]) for i in range(40)]
    prof = script.op_profile(art, tokenizer, texts, batch=8, passes=1, threads=1)
    assert prof and all(ms >= 0 for ms in prof.values())
    assert "Attention" in prof and "MatMul" in prof
    if fused:
        assert "SkipLayerNormalization" in prof and "LayerNormalization" not in prof
    else:
        assert "LayerNormalization" in prof and "SkipLayerNormalization" not in prof
