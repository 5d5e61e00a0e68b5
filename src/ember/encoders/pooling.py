"""Pooling a frozen encoder's output into one vector per example: a registry, no if/elif on names."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ember.encoders.config import NamedPooling, Pooling
from ember.encoders.errors import CacheConfigError
from ember.fidelity import mean_pool

PoolFn = Callable[[torch.Tensor, torch.Tensor, object], torch.Tensor]


def _cls(hidden: torch.Tensor, mask: torch.Tensor, output: object) -> torch.Tensor:
    return hidden[:, 0]  # (B, H): the first token; right padding keeps it at position 0


def _mean(hidden: torch.Tensor, mask: torch.Tensor, output: object) -> torch.Tensor:
    return mean_pool(hidden, mask)  # (B, H)


def _pooler(hidden: torch.Tensor, mask: torch.Tensor, output: object) -> torch.Tensor:
    pooled = getattr(output, "pooler_output", None)
    if pooled is None:
        raise CacheConfigError(
            "pooling 'pooler' needs the model's pooler output, but this encoder returns none (no pooler layer, or "
            "add_pooling_layer=False); use pooling 'cls' or 'mean'"
        )
    return pooled  # (B, H)


POOLING_FUNCTIONS: dict[str, PoolFn] = {"cls": _cls, "mean": _mean, "pooler": _pooler}


def pooling_name(p: Pooling) -> str:
    """The name recorded in the fingerprint."""
    return p.name if isinstance(p, NamedPooling) else p


def pooling_fn(p: Pooling) -> PoolFn:
    """The function for a built-in name or a :class:`NamedPooling`."""
    return p.fn if isinstance(p, NamedPooling) else POOLING_FUNCTIONS[p]
