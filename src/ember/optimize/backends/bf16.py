"""bf16 / fp16: autocast (fp32 weights, half-precision matmuls) or a cast of the weights."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ember.optimize.artifact import ModelFacts
from ember.optimize.backends.torch_common import TorchArtifact, make_loader, weight_bytes
from ember.optimize.config import BF16Config
from ember.optimize.registry import register


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls natively (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _rebuild(model: nn.Module, config: BF16Config, facts: ModelFacts, tokenizer) -> TorchArtifact:
    if config.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("BF16Config(device='cuda') needs a CUDA device; none is available (use device='cpu')")
    dtype = getattr(torch, config.dtype)
    run = model
    if config.mode == "cast" or config.device == "cuda":
        run = copy.deepcopy(model).to(config.device)
        if config.mode == "cast":
            run = run.to(dtype)
    art = TorchArtifact(run, model, config, facts, tokenizer, autocast=dtype if config.mode == "autocast" else None)
    art.size_bytes = weight_bytes(run)
    return art


@register(BF16Config, load=make_loader(_rebuild))
def build(model: nn.Module, config: BF16Config, ctx) -> TorchArtifact:
    return _rebuild(model, config, ctx.facts, ctx.tokenizer)
