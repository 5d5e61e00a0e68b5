"""One way of running the model, as the harness measures it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ember.fidelity import Tolerance
from ember.models.size import weight_bytes


@dataclass
class Variant:
    """One way of running the model, to be measured beside the others.

    Args:
        name: row name in the report (unique within a run).
        model: called as ``model(**batch)`` with the tokenizer's tensors (``input_ids``, ``attention_mask``
            and ``token_type_ids`` where the tokenizer makes them); returns a ModelOutput, dict or tensor
            with ``logits`` or ``last_hidden_state``.
        size_bytes: size of the artifact on disk; ``None`` estimates it from the parameters (nn.Module)
            or an artifact's own ``size_bytes`` attribute.
        build_seconds: time it took to build or load the variant.
        reference: fidelity is measured against this variant (the first one when none is flagged).
        tolerance: bounds from :mod:`ember.fidelity`; a variant outside them is marked failed.

    Example:
        >>> Variant("fp32", model, reference=True)  # doctest: +SKIP
    """

    name: str
    model: Callable[..., Any]
    size_bytes: int | None = None
    build_seconds: float | None = None
    reference: bool = False
    tolerance: Tolerance | None = None


def estimate_size_bytes(model: Any) -> int | None:
    """Bytes of a module's parameters and buffers (shared tensors counted once), or an artifact's ``size_bytes``."""
    own = getattr(model, "size_bytes", None)
    if isinstance(own, int):
        return own
    if not isinstance(model, torch.nn.Module):
        return None
    return weight_bytes(model)
