"""``prune``: one verb, dispatched on the config's type through a registry.

- :class:`StructuredPruneConfig`: remove whole heads and feed-forward neurons by importance and slice the
  matrices (the model gets smaller and faster in every engine); optionally distil afterwards.
- :class:`MagnitudePruneConfig` / :class:`MovementPruneConfig`: unstructured sparsity learned while distilling
  (the model keeps its shapes: dense engines run it no faster).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ember.compress.config import (
    DistillConfig,
    MagnitudePruneConfig,
    MovementPruneConfig,
    StructuredPruneConfig,
)
from ember.compress.distillation import DistillReport, distill
from ember.compress.errors import CompressConfigError, PruneError
from ember.compress.importance import magnitude_importance, taylor_importance
from ember.compress.slicing import ffn_width, num_heads, shrink
from ember.compress.sparsity import MagnitudePruner, MovementPruner, sparsity
from ember.models.families import find_parts

PruneConfig = StructuredPruneConfig | MagnitudePruneConfig | MovementPruneConfig


@dataclass
class PruneResult:
    """What pruning did.

    Attributes:
        model: the pruned model (the one given, changed in place).
        method: ``structured``, ``magnitude`` or ``movement``.
        params_before, params_after: parameters of the encoder layers (structured pruning lowers the count;
            unstructured pruning zeroes weights instead: see ``sparsity``).
        heads, ffn: heads and feed-forward neurons per layer after pruning.
        sparsity: fraction of zero weights in the encoder layers' Linear layers.
        report: the distillation run, when there was one.
    """

    model: nn.Module = field(repr=False)
    method: str
    params_before: int
    params_after: int
    heads: int
    ffn: int
    sparsity: float
    report: DistillReport | None = None

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("model", "report")}
        return {**d, "report": None if self.report is None else self.report.to_dict()}


def _layer_params(model: nn.Module) -> int:
    return sum(p.numel() for p in find_parts(model).layers.parameters())


def _kept(count: int, fraction: float, what: str, flag: str) -> int:
    keep = int(round(count * (1.0 - fraction)))
    if keep < 1:
        most = (count - 1) / count
        raise PruneError(
            f"removing {fraction:.0%} of {count} {what} leaves {keep} per layer; a layer needs at least one. Pass "
            f"{flag} below {most:.3f} (at most {count - 1} of {count})"
        )
    return keep


def choose(scores: list[torch.Tensor], keep: int) -> list[list[int]]:
    """Per layer, the indices of the ``keep`` highest scores (ascending order).

    Example:
        >>> choose([torch.tensor([0.1, 0.9, 0.5])], 2)
        [[1, 2]]
    """
    return [sorted(s.topk(keep).indices.tolist()) for s in scores]


def _structured(model: nn.Module, config: StructuredPruneConfig, source, train: DistillConfig | None,
                progress: bool) -> PruneResult:
    parts = find_parts(model)
    before = _layer_params(model)
    if config.importance == "taylor":
        if source is None:
            raise CompressConfigError(
                "importance='taylor' ranks heads and neurons by gradients on training data, so it needs source= (the "
                "teacher's stored outputs: teacher.source('train')); pass one, or importance='magnitude'"
            )
        heads, neurons = taylor_importance(model, source, config.batches, train)
    else:
        heads, neurons = magnitude_importance(model)
    keep_h = _kept(num_heads(parts, 0), config.heads, "attention heads", "heads=")
    keep_f = _kept(ffn_width(parts, 0), config.ffn, "feed-forward neurons", "ffn=")
    shrink(model, heads=choose(heads, keep_h), neurons=choose(neurons, keep_f))
    report = None
    if train is not None:
        if source is None:
            raise CompressConfigError("distilling after pruning needs source= (teacher.source('train'))")
        report = distill(model, source, train, progress=progress)
    return PruneResult(model, "structured", before, _layer_params(model), keep_h, keep_f, sparsity(model), report)


def _unstructured(pruner_cls) -> Callable:
    def run(model: nn.Module, config: MagnitudePruneConfig, source, train: DistillConfig | None,
            progress: bool) -> PruneResult:
        if source is None:
            raise CompressConfigError(
                f"{type(config).__name__} prunes while training on the teacher's outputs; pass source= "
                "(teacher.source('train')) and train=DistillConfig(...)"
            )
        parts = find_parts(model)
        before = _layer_params(model)
        pruner = pruner_cls(model, config)
        try:
            report = distill(model, source, train or DistillConfig(), hooks=[pruner], progress=progress)
        finally:
            pruner.finish()
        method = "movement" if isinstance(config, MovementPruneConfig) else "magnitude"
        return PruneResult(model, method, before, _layer_params(model), num_heads(parts, 0), ffn_width(parts, 0),
                           sparsity(model), report)

    return run


PRUNERS: dict[type, Callable] = {
    StructuredPruneConfig: _structured,
    MagnitudePruneConfig: _unstructured(MagnitudePruner),
    MovementPruneConfig: _unstructured(MovementPruner),
}


def prune(model: nn.Module, config: PruneConfig, *, source=None, train: DistillConfig | None = None,
          progress: bool = True) -> PruneResult:
    """Prune ``model`` in place as ``config`` says.

    Args:
        model: a student (or any supported classifier).
        config: :class:`StructuredPruneConfig` (heads and neurons removed, matrices sliced),
            :class:`MagnitudePruneConfig` or :class:`MovementPruneConfig` (unstructured, during training).
        source: the teacher's outputs (``teacher.source("train")``): Taylor importance and every training run
            read them.
        train: the distillation run after structured pruning (``None``: none), or the one pruning happens during
            (default :class:`DistillConfig`).

    Returns:
        a :class:`PruneResult`.

    Example:
        >>> result = prune(student, StructuredPruneConfig(heads=0.5, ffn=0.5), source=teacher.source(),
        ...                train=DistillConfig(epochs=2))  # doctest: +SKIP
    """
    runner = PRUNERS.get(type(config))
    if runner is None:
        known = ", ".join(c.__name__ for c in PRUNERS)
        raise TypeError(f"config must be one of {known}; got {type(config).__name__}")
    return runner(model, config, source, train, progress)
