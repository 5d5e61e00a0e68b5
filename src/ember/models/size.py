"""How much memory a model's weights take: one count for the benchmark's size column and the ONNX export's limit."""

from __future__ import annotations

from torch import nn


def weight_bytes(model: nn.Module) -> int:
    """Bytes of ``model``'s parameters and buffers as they are stored, each tensor counted once (tied weights, such
    as an input embedding shared with an output layer, are one tensor).

    Example:
        >>> weight_bytes(nn.Linear(4, 2))  # 8 weights and 2 biases in float32
        40
    """
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        key = (t.data_ptr(), t.numel(), t.dtype)
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total
