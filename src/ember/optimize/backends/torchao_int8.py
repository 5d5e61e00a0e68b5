"""torchao int8 dynamic quantisation of Linear layers (``torch.ao.quantization`` is deprecated)."""

from __future__ import annotations

import copy

from torch import nn

from ember.models.size import weight_bytes
from ember.optimize.artifact import ModelFacts
from ember.optimize.backends.torch_common import TorchArtifact, make_loader
from ember.optimize.config import Int8DynamicConfig
from ember.optimize.registry import register

INSTALL = "pip install 'ember[torchao]'  (torchao==0.18.0)"


def quantize_linears(model: nn.Module, config: Int8DynamicConfig) -> nn.Module:
    """A copy of ``model`` whose eligible Linear layers hold int8 weights (per row) and quantise activations."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    q = copy.deepcopy(model)

    def eligible(module: nn.Module, name: str) -> bool:
        return (isinstance(module, nn.Linear) and module.in_features >= config.min_features
                and not any(s in name for s in config.skip))

    quantize_(q, Int8DynamicActivationInt8WeightConfig(), filter_fn=eligible)
    return q


def count_int8_linears(model: nn.Module) -> int:
    """How many Linear layers carry a quantised (tensor-subclass) weight."""
    return sum(1 for m in model.modules() if isinstance(m, nn.Linear) and type(m.weight).__name__ not in ("Parameter", "Tensor"))


def _rebuild(model: nn.Module, config: Int8DynamicConfig, facts: ModelFacts, tokenizer) -> TorchArtifact:
    q = quantize_linears(model, config)
    size = weight_bytes(q)
    context = None
    if config.compile:  # inductor fuses the per-token quantisation around the int8 matmul (see Int8DynamicConfig)
        from ember.optimize.backends.compile import compile_model

        for p in q.parameters():
            p.requires_grad_(False)
        q, context = compile_model(q)
    art = TorchArtifact(q, model, config, facts, tokenizer, context=context)
    art.size_bytes = size
    return art


@register(Int8DynamicConfig, load=make_loader(_rebuild), requires=(("torchao", INSTALL),))
def build(model: nn.Module, config: Int8DynamicConfig, ctx) -> TorchArtifact:
    return _rebuild(model, config, ctx.facts, ctx.tokenizer)
