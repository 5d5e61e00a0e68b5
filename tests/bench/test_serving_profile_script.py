"""benchmarks/serving_profile.py sums OpenVINO's per-node counters by type: the fused attention apart from the other
fused chains, the precisions the kernels ran in, and every FullyConnected kind in the matmuls' time."""

import collections
import datetime
import types

import pytest
from bench_scripts import script_module


@pytest.fixture(scope="module")
def script():
    yield from script_module("serving_profile.py", "serving_profile_script")


def info(node_type, name, exec_type, ms, status="EXECUTED"):
    """Stands in for openvino's ProfilingInfo: the fields the script reads."""
    return types.SimpleNamespace(node_type=node_type, node_name=name, exec_type=exec_type,
                                 real_time=datetime.timedelta(milliseconds=ms),
                                 status=types.SimpleNamespace(name=status))


CALL = [
    info("FullyConnected", "layer.0.output.dense/MatMul", "brgemm_avx512_I8", 4.0),
    info("FullyConnectedQuantizedLegacy", "layer.0.query/MatMul", "brgemm_avx512_i8", 1.0),
    info("Subgraph", "layer.0.attention.self/aten::scaled_dot_product_attention/ScaledDotProductAttention",
         "jit_avx512_i8", 2.0),
    info("Subgraph", "layer.0.output/aten::add/Add", "jit_avx512_f32", 0.5),
    info("Subgraph", "layer.1.attention.self/ScaledDotProductAttention", "jit_avx512_bf16", 3.0),
    info("Reorder", "Reorder_1", "jit_uni_bf16", 9.0, status="NOT_RUN"),
]


def test_attention_is_counted_apart_with_its_precisions_and_skipped_nodes_add_nothing(script):
    totals, precisions = collections.defaultdict(float), collections.defaultdict(set)
    for _ in range(2):  # two calls, averaged
        script.add_counters(CALL, totals, precisions, calls=2)
    assert totals == pytest.approx({"FullyConnected": 4.0, "FullyConnectedQuantizedLegacy": 1.0, "Attention": 5.0,
                                    "Subgraph": 0.5})
    assert precisions["Attention"] == {"i8", "bf16"}
    assert precisions["FullyConnected"] == {"i8"}  # the plugin's case ("I8") folded
    assert precisions["Subgraph"] == {"f32"}
    assert "Reorder" not in totals


def test_the_matmul_time_counts_every_fully_connected_kind(script):
    assert script.matmul_ms({"FullyConnected": 4.0, "FullyConnectedQuantizedLegacy": 1.5, "Attention": 3.0}) == 5.5
    assert script.matmul_ms({"Attention": 3.0}) == 0.0


def test_only_a_fused_scaled_dot_product_attention_is_attention(script):
    assert script.node_kind("Subgraph", "x/ScaledDotProductAttention") == "Attention"
    assert script.node_kind("ScaledAttn", "x/ScaledDotProductAttention") == "Attention"
    assert script.node_kind("Reorder", "x/ScaledDotProductAttention_bf16_f32") == "Reorder"
    assert script.node_kind("Subgraph", "x/aten::add/Add") == "Subgraph"
