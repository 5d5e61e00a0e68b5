"""Quantisation-aware training with torchao's QATConfig, served in int8 through ember.optimize."""

from __future__ import annotations

import builtins

import pytest
import torch
from tiny import filled_teacher, labelled, one_thread  # noqa: F401  (autouse fixture)

from ember.compress import DistillConfig, QATConfig, every_other, qat, select_layers
from ember.compress.errors import CompressConfigError
from ember.compress.quantization import count_fake_quantized, prepare
from ember.errors import BackendNotInstalledError

pytest.importorskip("torchao")


def test_qat_fake_quantises_trains_and_converts_back_to_plain_linears(tokenizer):
    teacher = filled_teacher(tokenizer)
    student = select_layers(teacher.outputs.model, every_other())
    result = qat(student, teacher.source(), QATConfig(distill=DistillConfig(epochs=1, batch_size=8)), progress=False)
    assert result.fake_quantized == 2 * 6 + 2  # Q, K, V, O, FFN in/out per layer, pooler, classifier
    assert count_fake_quantized(result.model) == 0
    assert all(type(m) is torch.nn.Linear for m in result.model.modules() if isinstance(m, torch.nn.Linear))
    assert result.report.steps == 3 and result.model is not student


def test_the_fake_quantised_model_rounds_activations_per_tensor(tokenizer):
    model = select_layers(filled_teacher(tokenizer).outputs.model, every_other())
    lin = model.bert.encoder.layer[0].attention.self.query
    hooks = prepare(model, QATConfig())
    x = torch.randn(2, 5, 32)
    seen = {}
    model.bert.encoder.layer[0].attention.self.query.register_forward_hook(lambda m, a, o: seen.setdefault("in", a[0]))
    model.bert.encoder.layer[0].attention.self.query(x)
    assert seen["in"].unique().numel() <= 256  # 8-bit: at most 256 distinct values over the whole tensor
    assert len(hooks) == count_fake_quantized(model) and lin is not model.bert.encoder.layer[0].attention.self.query


def test_qat_result_is_served_in_int8_by_optimize(tokenizer):
    pytest.importorskip("onnxruntime")
    from ember.optimize import optimize, preset

    teacher = filled_teacher(tokenizer)
    student = select_layers(teacher.outputs.model, every_other())
    model = qat(student, teacher.source(), QATConfig(distill=DistillConfig(epochs=1, batch_size=8)), progress=False).model
    art = optimize(model, preset("onnx-int8"), tokenizer=tokenizer, sample=labelled(1)[0])
    assert art.fidelity.label_agreement == 1.0


def test_without_torchao_qat_names_the_install(tokenizer, monkeypatch):
    real = builtins.__import__

    def no_torchao(name, *args, **kwargs):
        if name.startswith("torchao"):
            raise ImportError("No module named 'torchao'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torchao)
    teacher = filled_teacher(tokenizer)
    with pytest.raises(BackendNotInstalledError, match=r"uses torchao, which is not installed: pip install 'ember\[compress\]'"):
        qat(teacher.outputs.model, teacher.source())


def test_bad_qat_settings_are_refused():
    with pytest.raises(CompressConfigError, match="target='tensorrt' is not one of 'onnx', 'openvino', 'torchao'"):
        QATConfig(target="tensorrt")  # type: ignore[arg-type]
