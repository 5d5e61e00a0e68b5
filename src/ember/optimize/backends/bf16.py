"""bf16 / fp16: autocast (fp32 weights, half-precision matmuls), Linear weights converted once, or a cast of every
weight."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ember.models.size import weight_bytes
from ember.optimize.artifact import ModelFacts
from ember.optimize.backends.torch_common import TorchArtifact, make_loader
from ember.optimize.config import BF16Config
from ember.optimize.registry import register


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls natively (AVX512-BF16, AMX or ARM BF16; see :mod:`ember.hardware`)."""
    from ember.hardware import detect

    return detect().native_bf16


def half_linears(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of ``model`` whose Linear weights and biases are ``dtype``; everything else stays as it was.

    Under autocast a Linear's fp32 input is cast to ``dtype`` and its weight, already ``dtype``, is used as it is,
    so the artifact computes what autocast computes from fp32 weights without casting every weight on every call.
    LayerNorm, softmax and the embeddings stay fp32 (autocast runs them in fp32), which keeps fidelity.
    """
    run = copy.deepcopy(model)
    for module in run.modules():
        if isinstance(module, nn.Linear):
            module.to(dtype)
    for p in run.parameters():
        p.requires_grad_(False)  # a serving copy: autocast keeps no cast cache for tensors without grad
    return run


def _rebuild(model: nn.Module, config: BF16Config, facts: ModelFacts, tokenizer) -> TorchArtifact:
    if config.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("BF16Config(device='cuda') needs a CUDA device; none is available (use device='cpu')")
    dtype = getattr(torch, config.dtype)
    run = model
    if config.mode == "weights":
        run = half_linears(model, dtype).to(config.device)
    elif config.mode == "cast" or config.device == "cuda":
        run = copy.deepcopy(model).to(config.device)
        if config.mode == "cast":
            run = run.to(dtype)
    art = TorchArtifact(run, model, config, facts, tokenizer, autocast=dtype if config.mode != "cast" else None)
    art.size_bytes = weight_bytes(run)
    return art


@register(BF16Config, load=make_loader(_rebuild))
def build(model: nn.Module, config: BF16Config, ctx) -> TorchArtifact:
    return _rebuild(model, config, ctx.facts, ctx.tokenizer)
