"""``torch.compile`` (inductor, dynamic shapes, weights frozen as constants by default), optionally under bf16
autocast."""

from __future__ import annotations

import torch
from torch import nn

from ember.optimize.artifact import ModelFacts
from ember.optimize.backends.torch_common import TorchArtifact, make_loader, weight_bytes
from ember.optimize.config import CompileConfig
from ember.optimize.registry import register


def _rebuild(model: nn.Module, config: CompileConfig, facts: ModelFacts, tokenizer) -> TorchArtifact:
    # torch.compile takes a mode or an options dict, not both: the mode's own options, plus freezing.
    options = {**torch._inductor.list_mode_options(config.mode, dynamic=True), "freezing": config.freezing}
    compiled = torch.compile(model, dynamic=True, options=options)
    art = TorchArtifact(compiled, model, config, facts, tokenizer, autocast=torch.bfloat16 if config.bf16 else None)
    art.size_bytes = weight_bytes(model)
    return art


@register(CompileConfig, load=make_loader(_rebuild))
def build(model: nn.Module, config: CompileConfig, ctx) -> TorchArtifact:
    return _rebuild(model, config, ctx.facts, ctx.tokenizer)
