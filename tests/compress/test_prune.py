"""Pruning: structured pruning slices matrices (every family), unstructured pruning follows the cubic schedule."""

from __future__ import annotations

import pytest
import torch
from tiny import filled_teacher, labelled, one_thread, tiny_teacher  # noqa: F401  (autouse fixture)

from ember.compress import (
    DistillConfig,
    MagnitudePruneConfig,
    MovementPruneConfig,
    StructuredPruneConfig,
    every_other,
    load_compressed,
    prune,
    save_compressed,
    select_layers,
    shrink,
)
from ember.compress.errors import CompressConfigError, PruneError
from ember.compress.slicing import ffn_width, num_heads
from ember.compress.sparsity import cubic_sparsity, sparsity
from ember.models import find_parts

from conftest import FAMILIES


def _reference_without_heads(model, tokenizer, texts, layer_heads):
    """The model's logits with some heads' value rows zeroed: what removing them must compute."""
    import copy

    from ember.compress.families import layer_shape, submodule

    m = copy.deepcopy(model)
    parts = find_parts(m)
    row = layer_shape(parts)
    size = parts.layers[0].get_submodule(row.attention).attention_head_size
    with torch.no_grad():
        for layer, heads in zip(parts.layers, layer_heads, strict=True):
            out = submodule(layer, row.output)
            for h in range(getattr(submodule(layer, row.attention), row.heads_attr)):
                if h not in heads:
                    out.weight[:, h * size : (h + 1) * size] = 0  # the head's contribution to the output is gone
    return m(**tokenizer(texts, padding=True, return_tensors="pt")).logits


@pytest.mark.parametrize("family", FAMILIES)
def test_removing_heads_and_neurons_computes_what_masking_them_does(family, tokenizer):
    model = tiny_teacher(family)
    texts = labelled(1)[0]
    keep = [[0, 3], [1, 2], [0, 1], [2, 3]]
    want = _reference_without_heads(model, tokenizer, texts, keep)
    shrink(model, heads=keep)
    got = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    assert torch.allclose(got, want, atol=1e-5)
    parts = find_parts(model)
    assert num_heads(parts, 0) == 2
    q = parts.layers[0].get_submodule("attention.q_lin" if family == "distilbert" else "attention.self.query")
    assert tuple(q.weight.shape) == (16, 32)  # 2 heads x 8, hidden 32: physically smaller
    shrink(model, neurons=[list(range(0, 64, 4))] * 4)
    assert ffn_width(parts, 0) == 16 and model.config.attention_head_size == 8


def test_a_layer_left_with_no_heads_is_refused(tokenizer):
    with pytest.raises(PruneError, match="layer 2 would keep none of its 4 attention heads; a layer needs at least one: remove fewer heads"):
        shrink(tiny_teacher(), heads=[[0], [1], [], [2]])
    with pytest.raises(PruneError, match=r"removing 90% of 4 attention heads leaves 0 per layer.*heads= below 0.750"):
        prune(tiny_teacher(), StructuredPruneConfig(heads=0.9, importance="magnitude"))


def test_uneven_head_counts_are_refused():
    with pytest.raises(PruneError, match="every layer must keep the same number of heads"):
        shrink(tiny_teacher(), heads=[[0], [1, 2], [0], [1]])


@pytest.mark.parametrize("name, kwargs", [
    ("heads", {"heads": 1.0}), ("ffn", {"ffn": -0.1}), ("heads", {"heads": 2}),
])
def test_fractions_outside_zero_one_are_refused(name, kwargs):
    with pytest.raises(CompressConfigError, match=rf"{name}=.* is outside \[0, 1\)"):
        StructuredPruneConfig(**kwargs)


def test_sparsity_outside_zero_one_is_refused():
    with pytest.raises(CompressConfigError, match=r"sparsity=1.0 is outside \[0, 1\)"):
        MagnitudePruneConfig(sparsity=1.0)
    with pytest.raises(CompressConfigError, match="initial=0.5 is above sparsity=0.3"):
        MovementPruneConfig(sparsity=0.3, initial=0.5)


def test_taylor_pruning_keeps_the_important_units_and_recovers_by_distilling(tokenizer):
    teacher = filled_teacher(tokenizer)
    student = select_layers(teacher.outputs.model, every_other())
    result = prune(student, StructuredPruneConfig(heads=0.5, ffn=0.5, batches=2), source=teacher.source(),
                   train=DistillConfig(epochs=1, batch_size=8), progress=False)
    assert (result.heads, result.ffn) == (2, 32)
    assert result.params_after < 0.6 * result.params_before
    assert result.report is not None and result.report.steps == 3
    assert student.config.num_attention_heads == 2 and student.config.intermediate_size == 32


def test_taylor_importance_needs_data():
    with pytest.raises(CompressConfigError, match="importance='taylor' ranks heads and neurons by gradients on training data"):
        prune(tiny_teacher(), StructuredPruneConfig())


def test_a_pruned_model_saves_and_loads_back_exactly(tokenizer, tmp_path):
    model = tiny_teacher("roberta")
    shrink(model, heads=[[1, 3]] * 4, neurons=[list(range(20))] * 4)
    save_compressed(model, tmp_path / "m", tokenizer)
    again, tok = load_compressed(tmp_path / "m")
    batch = tokenizer(labelled(1)[0], padding=True, return_tensors="pt")
    assert torch.equal(model(**batch).logits, again(**batch).logits)


def test_the_cubic_schedule():
    config = MagnitudePruneConfig(sparsity=0.8, initial=0.0, start=10, steps=100)
    assert cubic_sparsity(5, 1000, config) == 0.0
    assert cubic_sparsity(10, 1000, config) == 0.0
    assert cubic_sparsity(60, 1000, config) == pytest.approx(0.8 - 0.8 * 0.5**3)
    assert cubic_sparsity(500, 1000, config) == pytest.approx(0.8)


@pytest.mark.parametrize("config", [MagnitudePruneConfig(sparsity=0.75, every=1), MovementPruneConfig(sparsity=0.75, every=1)],
                         ids=["magnitude", "movement"])
def test_unstructured_pruning_reaches_its_sparsity_and_leaves_plain_weights(config, tokenizer):
    teacher = filled_teacher(tokenizer)
    student = select_layers(teacher.outputs.model, every_other())
    result = prune(student, config, source=teacher.source(), train=DistillConfig(epochs=2, batch_size=8), progress=False)
    assert result.sparsity == pytest.approx(0.75, abs=0.01) and sparsity(student) == result.sparsity
    assert result.params_after == result.params_before  # same shapes: zeros, not smaller matrices
    lin = find_parts(student).layers[0].get_submodule("attention.self.query")
    assert type(lin) is torch.nn.Linear and not hasattr(lin, "weight_mask") and not hasattr(lin, "parametrizations")


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_a_pruned_model_goes_through_onnx_runtime_with_its_attention_fused(family, tokenizer):
    pytest.importorskip("onnxruntime")
    from ember.optimize import optimize, preset

    model = tiny_teacher(family)
    shrink(model, heads=[[0, 2]] * 4, neurons=[list(range(32))] * 4)
    art = optimize(model, preset("onnx"), tokenizer=tokenizer, sample=labelled(1)[0])
    assert art.fidelity.mean_cosine > 0.9999
    if family == "bert":  # ONNX Runtime's BERT fusion reads the pruned width from config.attention_head_size
        assert art.fusion_stats.get("attention") == 4


def test_a_pruned_model_goes_through_openvino(tokenizer):
    pytest.importorskip("openvino")
    from ember.optimize import optimize, preset

    model = tiny_teacher("roberta")
    shrink(model, heads=[[1, 3]] * 4)
    art = optimize(model, preset("openvino"), tokenizer=tokenizer, sample=labelled(1)[0])
    assert art.fidelity.mean_cosine > 0.9999
