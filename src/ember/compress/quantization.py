"""Quantisation-aware training with torchao: ``quantize_(m, QATConfig(..., step="prepare"))``, distil, convert.

What is exportable, measured with torch 2.13 / torchao 0.18 (see BENCHMARKS.md): a model converted with
torchao's int8 config (``QATConfig(base, step="convert")``, weights become ``IntxUnpackedToInt8Tensor``) serves
in PyTorch, but the TorchScript tracer behind ember's ONNX export and OpenVINO's converter stops on the tensor
subclass (``iter->isIntList() INTERNAL ASSERT FAILED``), and the dynamo exporter decomposes it into float
arithmetic (Round/Clip/Cast around fp32 weights, a larger graph that does not run in int8). So for the engines
ember serves int8 with, the route is: fake-quantise as the engine will compute (weights per output channel,
symmetric int8; activations per tensor, asymmetric 8-bit, as ONNX Runtime's dynamic quantisation and NNCF's
static scheme do), train, convert back to plain ``nn.Linear`` layers holding the trained weights
(``QATConfig(step="convert")`` without a base config), and let ``ember.optimize`` quantise them
(``onnx-int8``/``openvino-int8``), whose fidelity check then measures the int8 model against the float one.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ember.compress.config import QATConfig
from ember.compress.distillation import DistillReport, distill
from ember.compress.sources import TeacherSource
from ember.errors import BackendNotInstalledError

INSTALL = "pip install 'ember[compress]'  (torchao==0.18.0)"


def require_torchao():
    """The ``torchao`` module, or :class:`BackendNotInstalledError` with the install line."""
    try:
        import torchao.quantization  # noqa: F401
        import torchao.quantization.qat as qat
    except ImportError as exc:
        raise BackendNotInstalledError(
            f"quantisation-aware training uses torchao, which is not installed: {INSTALL}. Without it, serve the "
            "model in int8 by post-training quantisation: ember.optimize(model, preset('onnx-int8'), ...)"
        ) from exc
    return qat


def _eligible(config: QATConfig):
    def check(module: nn.Module, name: str) -> bool:
        return isinstance(module, nn.Linear) and not any(s in name for s in config.skip)

    return check


def _per_tensor_8bit(module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: fake-quantise the input to 8 bits with one range per call (asymmetric, zero exact), as
    ONNX Runtime's ``DynamicQuantizeLinear`` does at run time. torchao's activation fake quantiser offers per-token
    and per-group ranges only, so this is torch's own ``fake_quantize_per_tensor_affine`` (straight-through
    gradient inside the range)."""
    x = args[0]
    lo = x.detach().amin().clamp(max=0.0)
    hi = x.detach().amax().clamp(min=0.0)
    scale = ((hi - lo) / 255.0).clamp(min=1e-8).float()
    zero = torch.round(-lo / scale).clamp(0, 255).to(torch.int32)
    return (torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 255), *args[1:])


def prepare(model: nn.Module, config: QATConfig) -> list:
    """Swap eligible Linear layers for torchao's fake-quantised ones, in place; returns the hooks added."""
    qat = require_torchao()
    from torchao.quantization import quantize_

    if config.target == "torchao":
        quantize_(model, qat.QATConfig(_torchao_base(), step="prepare"), filter_fn=_eligible(config))
        return []
    weights = qat.IntxFakeQuantizeConfig(torch.int8, "per_channel", is_symmetric=True)
    quantize_(model, qat.QATConfig(weight_config=weights, step="prepare"), filter_fn=_eligible(config))
    return [m.register_forward_pre_hook(_per_tensor_8bit) for m in model.modules() if isinstance(m, qat.FakeQuantizedLinear)]


def _torchao_base():
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, PerAxis

    return Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0))


def convert(model: nn.Module, config: QATConfig, hooks: list) -> nn.Module:
    """Undo the fake quantisation in place: plain Linear layers with the trained weights (``onnx``/``openvino``), or
    torchao's int8 model (``torchao``)."""
    qat = require_torchao()
    from torchao.quantization import quantize_

    for h in hooks:
        h.remove()
    base = _torchao_base() if config.target == "torchao" else None
    quantize_(model, qat.QATConfig(base, step="convert"), filter_fn=lambda m, name: isinstance(m, qat.FakeQuantizedLinear))
    return model


def count_fake_quantized(model: nn.Module) -> int:
    """How many Linear layers carry torchao fake quantisation now."""
    return sum(type(m).__name__ == "FakeQuantizedLinear" for m in model.modules())


@dataclass
class QATResult:
    """A quantisation-aware trained model and its training run.

    Attributes:
        model: for ``target="onnx"``/``"openvino"``, a float model of plain Linear layers whose weights were
            trained under int8 fake quantisation: serve it with ``ember.optimize(model, preset("onnx-int8"), ...)``
            (or ``openvino-int8``). For ``"torchao"``, torchao's int8 model (PyTorch serving only).
        report: the distillation run under fake quantisation.
        target: the engine it was trained for.
        fake_quantized: Linear layers that were fake-quantised.
    """

    model: nn.Module
    report: DistillReport
    target: str
    fake_quantized: int


def qat(model: nn.Module, source: TeacherSource, config: QATConfig | None = None, *, inplace: bool = False,
        progress: bool = True) -> QATResult:
    """Quantisation-aware distillation: fake-quantise, distil from the teacher's stored outputs, convert.

    Args:
        model: the (distilled) student to make robust to int8.
        source: the teacher's outputs (``teacher.source("train")``).
        config: target engine, the training run and the layers left in float.
        inplace: train ``model`` itself instead of a copy.

    Returns:
        a :class:`QATResult`.

    Raises:
        BackendNotInstalledError: torchao is not installed (the message has the pip line).

    Example:
        >>> result = qat(student, teacher.source("train"), QATConfig(target="onnx"))  # doctest: +SKIP
        >>> fast = optimize(result.model, preset("onnx-int8"), tokenizer=tok, sample=texts)  # doctest: +SKIP
    """
    config = QATConfig() if config is None else config
    if not isinstance(config, QATConfig):
        raise TypeError(f"config must be an ember.compress.QATConfig, got {type(config).__name__}")
    require_torchao()
    model = model if inplace else copy.deepcopy(model)
    hooks = prepare(model, config)
    n = count_fake_quantized(model)
    try:
        report = distill(model, source, config.distill, progress=progress)
    finally:
        convert(model, config, hooks)
    model.eval()
    return QATResult(model=model, report=report, target=config.target, fake_quantized=n)
