"""Physically smaller layers: keep some attention heads and feed-forward neurons, slice the matrices.

transformers 5 removed ``prune_heads`` and head masking, so this is ember's own code: for each layer it keeps
the rows of Q/K/V that belong to the kept heads, the matching columns of the attention output projection,
and the kept rows/columns of the two feed-forward matrices, and writes the new head count on the attention
module. The model's own forward then runs as before (it reshapes Q/K/V with ``-1`` heads), on smaller
matrices, in PyTorch and in every engine it is exported to.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ember.compress.errors import PruneError
from ember.compress.families import LayerShape, layer_shape, replace_submodule, submodule
from ember.models.families import EncoderParts, find_parts


def slice_linear(linear: nn.Linear, keep: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear holding the kept output rows (``dim=0``) or input columns (``dim=1``) of ``linear``.

    Example:
        >>> slice_linear(nn.Linear(4, 6), torch.tensor([0, 2]), dim=0).weight.shape
        torch.Size([2, 4])
    """
    keep = keep.to(linear.weight.device)
    weight = linear.weight.detach().index_select(dim, keep)  # (out', in) or (out, in')
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=linear.bias is not None,
                    device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        out.weight.copy_(weight)
        if linear.bias is not None:
            out.bias.copy_(linear.bias.detach() if dim == 1 else linear.bias.detach().index_select(0, keep))
    out.train(linear.training)
    return out


def head_size(parts: EncoderParts, layer: int = 0) -> int:
    """Width of one attention head (unchanged by pruning: heads are removed whole)."""
    row = layer_shape(parts)
    return int(submodule(parts.layers[layer], row.attention).attention_head_size)


def num_heads(parts: EncoderParts, layer: int) -> int:
    """Heads layer ``layer`` has now."""
    row = layer_shape(parts)
    return int(getattr(submodule(parts.layers[layer], row.attention), row.heads_attr))


def ffn_width(parts: EncoderParts, layer: int) -> int:
    """Neurons of layer ``layer``'s feed-forward block now."""
    return int(submodule(parts.layers[layer], layer_shape(parts).ffn_in).out_features)


def keep_heads(layer: nn.Module, row: LayerShape, heads: Sequence[int], size: int) -> None:
    """Keep only ``heads`` (indices into the layer's current heads) of one layer, in place."""
    attn = submodule(layer, row.attention)
    have = int(getattr(attn, row.heads_attr))
    if not heads:
        raise PruneError(f"a layer must keep at least one of its {have} attention heads; pass fewer heads to remove")
    index = torch.cat([torch.arange(h * size, (h + 1) * size) for h in sorted(heads)])  # (kept * head_size,)
    for path in (row.query, row.key, row.value):
        replace_submodule(layer, path, slice_linear(submodule(layer, path), index, dim=0))
    replace_submodule(layer, row.output, slice_linear(submodule(layer, row.output), index, dim=1))
    setattr(attn, row.heads_attr, len(heads))
    if row.all_head_attr is not None:
        setattr(attn, row.all_head_attr, len(heads) * size)


def keep_neurons(layer: nn.Module, row: LayerShape, neurons: Sequence[int]) -> None:
    """Keep only ``neurons`` of one layer's feed-forward block, in place."""
    if not neurons:
        raise PruneError("a layer must keep at least one feed-forward neuron; pass a smaller fraction to remove")
    index = torch.as_tensor(sorted(neurons), dtype=torch.long)
    replace_submodule(layer, row.ffn_in, slice_linear(submodule(layer, row.ffn_in), index, dim=0))
    replace_submodule(layer, row.ffn_out, slice_linear(submodule(layer, row.ffn_out), index, dim=1))


def shrink(model: nn.Module, heads: Sequence[Sequence[int]] | None = None,
           neurons: Sequence[Sequence[int]] | None = None) -> nn.Module:
    """Slice ``model`` in place to the given heads and feed-forward neurons per layer; returns it.

    Every layer must keep the same number of heads and of neurons (see :func:`record_shapes`): the
    Hugging Face config then says the new sizes, ONNX Runtime fuses the attention, and the model saves and
    loads with :func:`ember.compress.save_compressed` / :func:`~ember.compress.load_compressed`.

    Args:
        model: a supported encoder (with or without a head).
        heads: per layer, the indices of the heads to keep (``None`` keeps them all).
        neurons: per layer, the indices of the feed-forward neurons to keep (``None`` keeps them all).

    Example:
        >>> shrink(model, heads=[[0, 2]] * 4)  # doctest: +SKIP
    """
    parts = find_parts(model)
    row = layer_shape(parts)
    size = head_size(parts)
    for name, chosen in (("heads", heads), ("neurons", neurons)):
        if chosen is not None and len(chosen) != parts.num_layers:
            raise PruneError(f"{name} lists {len(chosen)} layers but the model has {parts.num_layers}; give one list per layer")
        empty = [i for i, c in enumerate(chosen or []) if len(c) == 0]
        if empty:
            unit = "attention heads" if name == "heads" else "feed-forward neurons"
            have = num_heads(parts, empty[0]) if name == "heads" else ffn_width(parts, empty[0])
            raise PruneError(f"layer {empty[0]} would keep none of its {have} {unit}; a layer needs at least one: "
                             f"remove fewer {name}")
        if chosen is not None and len({len(c) for c in chosen}) > 1:
            raise PruneError(
                f"every layer must keep the same number of {name} (got {[len(c) for c in chosen]}): the Hugging Face "
                "config holds one count for all layers, and ONNX Runtime's attention fusion reads it"
            )
    for i, layer in enumerate(parts.layers):
        if heads is not None:
            keep_heads(layer, row, heads[i], size)
        if neurons is not None:
            keep_neurons(layer, row, neurons[i])
    record_shapes(model)
    return model


def record_shapes(model: nn.Module) -> None:
    """Write the (uniform) head and feed-forward counts into the model's Hugging Face config, and the head width
    (which the config cannot say once heads are gone: BERT derives it as ``hidden_size / heads``) as
    ``config.attention_head_size``, read back by :func:`~ember.compress.load_compressed`."""
    parts = find_parts(model)
    row = layer_shape(parts)
    config = model.config
    counts = {num_heads(parts, i) for i in range(parts.num_layers)}
    widths = {ffn_width(parts, i) for i in range(parts.num_layers)}
    if len(counts) > 1 or len(widths) > 1:
        raise PruneError(f"layers have different head counts {sorted(counts)} or widths {sorted(widths)}; ember keeps them uniform")
    setattr(config, row.heads_key, counts.pop())
    setattr(config, row.ffn_key, widths.pop())
    config.attention_head_size = head_size(parts)
