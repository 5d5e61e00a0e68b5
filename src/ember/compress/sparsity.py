"""Unstructured pruning during fine-tuning: magnitude masks on the cubic schedule, and movement pruning.

Masks are applied with ``torch.nn.utils.prune`` (a ``weight_mask`` buffer and a forward pre-hook per Linear)
and ``torch.nn.utils.parametrize`` (movement scores); ``finish()`` bakes the zeros into the weights and removes
both, leaving a plain model. A dense engine runs such a model exactly as fast as the dense one: the zeros are
still multiplied (BENCHMARKS.md measures it). Only structured pruning (``ember.compress.prune`` with
:class:`~ember.compress.StructuredPruneConfig`) makes the matrices smaller.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils import prune as torch_prune

from ember.compress.config import MagnitudePruneConfig, MovementPruneConfig
from ember.models.families import find_parts


def cubic_sparsity(step: int, total: int, config: MagnitudePruneConfig) -> float:
    """``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))^3`` (Zhu & Gupta 2017), held at ``s_f`` after.

    Args:
        step: the current step ``t``.
        total: steps of the whole run (``n * dt`` defaults to the first two thirds of it).

    Example:
        >>> cubic_sparsity(100, 100, MagnitudePruneConfig(sparsity=0.9))
        0.9
    """
    span = config.steps if config.steps is not None else max(1, (2 * total) // 3)
    if step < config.start:
        return config.initial if step >= 0 else 0.0
    progress = min(1.0, (step - config.start) / span)
    return config.sparsity + (config.initial - config.sparsity) * (1.0 - progress) ** 3


def encoder_linears(model: nn.Module) -> list[nn.Linear]:
    """The Linear layers of the encoder's transformer layers (embeddings, pooler and head are not pruned)."""
    return [m for m in find_parts(model).layers.modules() if isinstance(m, nn.Linear)]


def sparsity(model: nn.Module) -> float:
    """Fraction of zeros among the encoder layers' Linear weights."""
    weights = [m.weight.detach() for m in encoder_linears(model)]
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / max(total, 1)


class MagnitudePruner:
    """Zero the smallest weights of each encoder Linear, more of them every ``every`` steps (a training hook).

    Example:
        >>> pruner = MagnitudePruner(student, MagnitudePruneConfig(sparsity=0.9))  # doctest: +SKIP
        >>> distill(student, source, config, hooks=[pruner]); pruner.finish()    # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, config: MagnitudePruneConfig) -> None:
        self.model, self.config = model, config
        self.linears = encoder_linears(model)
        for lin in self.linears:
            torch_prune.identity(lin, "weight")  # registers weight_orig and a weight_mask of ones
        self.current = 0.0
        self._set(cubic_sparsity(0, 1, config) if config.start == 0 else 0.0)

    def param_groups(self) -> list[dict]:
        return []

    def _set(self, level: float) -> None:
        self.current = level
        for lin in self.linears:
            w = lin.weight_orig.detach().abs()  # (out, in)
            k = int(round(level * w.numel()))
            mask = torch.ones_like(w)
            if k > 0:
                threshold = w.flatten().kthvalue(k).values
                mask = (w > threshold).to(w.dtype)
            lin.weight_mask.copy_(mask)

    def on_step(self, step: int, total: int) -> None:
        if step >= self.config.start and (step - self.config.start) % self.config.every == 0:
            self._set(cubic_sparsity(step, total, self.config))

    def finish(self) -> nn.Module:
        """Set the final sparsity, bake the zeros into the weights and remove the masks; returns the model."""
        self._set(self.config.sparsity)
        for lin in self.linears:
            torch_prune.remove(lin, "weight")
        return self.model


class _TopK(torch.autograd.Function):
    """Mask of the largest ``keep`` fraction of scores; the gradient passes straight through to the scores."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, keep: float) -> torch.Tensor:
        k = max(1, int(round(keep * scores.numel())))
        threshold = scores.flatten().kthvalue(scores.numel() - k + 1).values
        return (scores >= threshold).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class _MovementMask(nn.Module):
    """Parametrization ``W -> W * TopK(S)`` with learned scores ``S`` (Sanh et al. 2020)."""

    def __init__(self, shape: torch.Size, owner: MovementPruner, device, dtype) -> None:
        super().__init__()
        self.scores = nn.Parameter(torch.zeros(shape, device=device, dtype=dtype))
        self.owner = [owner]  # a list, so the pruner is not registered as a submodule

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * _TopK.apply(self.scores, 1.0 - self.owner[0].current)


class MovementPruner:
    """Movement pruning as a training hook: scores learn which weights move away from zero; the top ``1 - s_t``
    of them are kept (straight-through), ``s_t`` on the cubic schedule.

    Example:
        >>> pruner = MovementPruner(student, MovementPruneConfig(sparsity=0.9))  # doctest: +SKIP
        >>> distill(student, source, config, hooks=[pruner]); pruner.finish()  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, config: MovementPruneConfig) -> None:
        self.model, self.config = model, config
        self.linears = encoder_linears(model)
        self.current = 0.0
        self.masks = []
        for lin in self.linears:
            mask = _MovementMask(lin.weight.shape, self, lin.weight.device, lin.weight.dtype)
            parametrize.register_parametrization(lin, "weight", mask)
            self.masks.append(mask)

    def param_groups(self) -> list[dict]:
        return [{"params": [m.scores for m in self.masks], "lr": self.config.score_lr, "weight_decay": 0.0}]

    def on_step(self, step: int, total: int) -> None:
        self.current = cubic_sparsity(step, total, self.config)

    def finish(self) -> nn.Module:
        """Apply the final sparsity and make it permanent (plain Linear weights with zeros); returns the model."""
        self.current = self.config.sparsity
        for lin in self.linears:
            parametrize.remove_parametrizations(lin, "weight", leave_parametrized=True)
        return self.model
