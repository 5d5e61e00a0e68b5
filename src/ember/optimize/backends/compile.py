"""``torch.compile`` (inductor, dynamic shapes, weights frozen as constants by default), optionally under bf16
autocast."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable

import torch
from torch import nn

from ember.models.size import weight_bytes
from ember.optimize.artifact import ModelFacts
from ember.optimize.backends.torch_common import TorchArtifact, make_loader
from ember.optimize.config import CompileConfig
from ember.optimize.registry import register

# Dynamo keeps at most `recompile_limit` compiled graphs per code object, then runs that code eagerly with only
# a logged warning. Every transformers model's forward goes through one shared wrapper (one code object), and
# each artifact needs two graphs (batch 1 and batch >= 2) per autocast setting, so the default 8 ran out with
# a few compiled artifacts in one process: they silently ran at eager speed. Raised, never lowered.
RECOMPILE_LIMIT = 64


def compile_model(model: nn.Module, mode: str = "default", freezing: bool = True
                  ) -> tuple[nn.Module, Callable[[], contextlib.AbstractContextManager]]:
    """``torch.compile`` of ``model`` (inductor, dynamic shapes), and the context every call must run in.

    Returns:
        The compiled module and a factory of the context to enter around each of its calls.
    """
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    # torch.compile takes a mode or an options dict, not both: the mode's own options, and freezing (which keeps
    # this artifact's graphs apart from those of a compile with other settings: dynamo told them apart by these).
    options = {**torch._inductor.list_mode_options(mode, dynamic=True), "freezing": freezing}
    compiled = torch.compile(model, dynamic=True, options=options)
    # Freezing is also set around every call: dynamo reads it while it traces, before inductor sees the options,
    # to take the weights as constants and guard on which tensors they are. Given only as an option, inductor
    # froze graphs that dynamo had traced with the weights as inputs: 4.5 ms a batch-1 call against 2.5 ms
    # (MiniLM-L6, bf16, measured side by side). Entering the patch costs ~17 µs a call.
    return compiled, functools.partial(torch._inductor.config.patch, freezing=freezing)


def _rebuild(model: nn.Module, config: CompileConfig, facts: ModelFacts, tokenizer) -> TorchArtifact:
    compiled, context = compile_model(model, config.mode, config.freezing)
    art = TorchArtifact(compiled, model, config, facts, tokenizer, autocast=torch.bfloat16 if config.bf16 else None,
                        context=context)
    art.size_bytes = weight_bytes(model)
    return art


@register(CompileConfig, load=make_loader(_rebuild))
def build(model: nn.Module, config: CompileConfig, ctx) -> TorchArtifact:
    return _rebuild(model, config, ctx.facts, ctx.tokenizer)
