"""How much memory a model's weights take: one count for the benchmark's size column, the ONNX export's limit and
the size a torch artifact reports."""

from __future__ import annotations

import torch
from torch import nn


def weight_bytes(model: nn.Module) -> int:
    """Bytes of ``model``'s parameters and buffers as they are stored, each tensor counted once (tied weights, such
    as an input embedding shared with an output layer, are one tensor). A tensor subclass that packs its data
    (torchao's quantised weights) counts the tensors it holds: int8 values and their scales, not the float shape it
    stands for.

    Example:
        >>> weight_bytes(nn.Linear(4, 2))  # 8 weights and 2 biases in float32
        40
    """
    seen, total = set(), 0
    for t in (leaf for held in [*model.parameters(), *model.buffers()] for leaf in _stored(held)):
        key = (t.data_ptr(), t.numel(), t.dtype)
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


def _stored(t: torch.Tensor) -> list[torch.Tensor]:
    """The plain tensors that hold ``t``'s data: ``t`` itself, or, for a subclass that flattens
    (``__tensor_flatten__``, the protocol torchao's quantised tensors implement), those of its inner tensors."""
    flatten = getattr(t, "__tensor_flatten__", None)
    if flatten is None:
        return [t]
    names, _ = flatten()
    return [leaf for n in names for leaf in _stored(getattr(t, n))]
