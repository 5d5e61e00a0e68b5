"""How much each attention head and feed-forward neuron matters, to choose which to remove.

``taylor``: |sum of gradient x weight| over a head's (or neuron's) parameters, per batch, summed over a few
batches of the training data with the distillation loss: the first-order estimate of how much the loss
changes when the unit is removed (Molchanov et al. 2017; Michel et al. 2019 use the same estimate on head
masks, which transformers 5 no longer has). ``magnitude``: the L2 norm of the unit's weights (no data).
"""

from __future__ import annotations

import torch
from torch import nn

from ember.compress.config import DistillConfig
from ember.compress.families import LayerShape, layer_shape, submodule
from ember.compress.slicing import head_size, num_heads
from ember.models.families import EncoderParts, find_parts


def _head_scores(layer: nn.Module, row: LayerShape, heads: int, size: int, use_grad: bool) -> torch.Tensor:
    """``(heads,)`` score of each head of one layer."""
    score = torch.zeros(heads)
    for path, dim in ((row.query, 0), (row.key, 0), (row.value, 0), (row.output, 1)):
        lin = submodule(layer, path)
        w = lin.weight.detach()
        t = (w * lin.weight.grad) if use_grad else w.pow(2)
        per_unit = t.sum(dim=1 - dim)  # (heads * size,): one value per row (dim 0) or column (dim 1)
        if dim == 0 and lin.bias is not None:
            per_unit = per_unit + ((lin.bias.detach() * lin.bias.grad) if use_grad else lin.bias.detach().pow(2))
        score += per_unit.view(heads, size).sum(1).float().cpu()
    return score


def _neuron_scores(layer: nn.Module, row: LayerShape, use_grad: bool) -> torch.Tensor:
    """``(ffn,)`` score of each feed-forward neuron of one layer."""
    lin_in, lin_out = submodule(layer, row.ffn_in), submodule(layer, row.ffn_out)
    w_in, w_out = lin_in.weight.detach(), lin_out.weight.detach()
    if use_grad:
        score = (w_in * lin_in.weight.grad).sum(1) + (w_out * lin_out.weight.grad).sum(0)  # (ffn,)
        if lin_in.bias is not None:
            score = score + lin_in.bias.detach() * lin_in.bias.grad
    else:
        score = w_in.pow(2).sum(1) + w_out.pow(2).sum(0)
    return score.float().cpu()


def unit_scores(parts: EncoderParts, use_grad: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer, the scores of its heads and of its neurons, from the current weights (and gradients)."""
    row, size = layer_shape(parts), head_size(parts)
    heads = [_head_scores(layer, row, num_heads(parts, i), size, use_grad) for i, layer in enumerate(parts.layers)]
    neurons = [_neuron_scores(layer, row, use_grad) for layer in parts.layers]
    return heads, neurons


def taylor_importance(model: nn.Module, source, batches: int, distill_config: DistillConfig | None = None,
                      seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """|gradient x weight| per head and per neuron, accumulated over ``batches`` batches of ``source``.

    The absolute value is taken per batch (signed sums of different batches cancel), as Michel et al. do.
    The model's weights are not changed; its gradients are cleared after.
    """
    from ember.batching import grouped_batches
    from ember.compress.distillation import _Step

    config = distill_config or DistillConfig()
    parts = find_parts(model)
    step = _Step(model, config, [], None)
    heads = [torch.zeros(num_heads(parts, i)) for i in range(parts.num_layers)]
    neurons = [torch.zeros(submodule(layer, layer_shape(parts).ffn_in).out_features) for layer in parts.layers]
    order = grouped_batches(source.lengths(), config.batch_size, seed=seed)[:batches]
    was_training = model.training
    model.eval()  # no dropout: the estimate should not depend on which units dropout silenced
    try:
        for idx in order:
            model.zero_grad(set_to_none=False)
            step.loss(source.batch(idx)).backward()
            h, n = unit_scores(parts, use_grad=True)
            heads = [a + b.abs() for a, b in zip(heads, h, strict=True)]
            neurons = [a + b.abs() for a, b in zip(neurons, n, strict=True)]
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return heads, neurons


def magnitude_importance(model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Squared L2 norm of each head's and neuron's weights."""
    return unit_scores(find_parts(model), use_grad=False)
