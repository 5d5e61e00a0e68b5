"""``torch.compile`` (inductor, dynamic shapes), optionally under bf16 autocast."""

from __future__ import annotations

import torch
from torch import nn

from ember.optimize.artifact import ModelFacts
from ember.optimize.backends.torch_common import TorchArtifact, make_loader, weight_bytes
from ember.optimize.config import CompileConfig
from ember.optimize.registry import register


def _rebuild(model: nn.Module, config: CompileConfig, facts: ModelFacts, tokenizer) -> TorchArtifact:
    compiled = torch.compile(model, mode=config.mode, dynamic=True)
    art = TorchArtifact(compiled, model, config, facts, tokenizer, autocast=torch.bfloat16 if config.bf16 else None)
    art.size_bytes = weight_bytes(model)
    return art


@register(CompileConfig, load=make_loader(_rebuild))
def build(model: nn.Module, config: CompileConfig, ctx) -> TorchArtifact:
    return _rebuild(model, config, ctx.facts, ctx.tokenizer)
