"""sentence-transformers models, as ember meets them: the library most users of all-MiniLM-L6-v2 call.

A ``SentenceTransformer`` is an ``nn.Sequential`` of modules: a ``Transformer`` (the Hugging Face encoder, its
``auto_model``), then ``Pooling``, optionally ``Dense``/``Normalize``. Called with ``{"input_ids",
"attention_mask"}`` it returns ``{"sentence_embedding": (B, D), ...}`` exactly as ``encode`` computes it. These
helpers recognise one without importing sentence-transformers (an optional dependency) and read what ember
needs: the encoder inside, the tokenizer, the truncation length, and a signature of the pooling modules for
fingerprints.
"""

from __future__ import annotations

import json

import torch
from torch import nn


def is_sentence_transformer(obj: object) -> bool:
    """Whether ``obj`` is a ``sentence_transformers.SentenceTransformer`` (checked by class, no import).

    Example:
        >>> is_sentence_transformer(nn.Linear(2, 2))
        False
    """
    return any(c.__name__ == "SentenceTransformer" and c.__module__.startswith("sentence_transformers")
               for c in type(obj).__mro__)


def transformer_of(model: nn.Module) -> nn.Module:
    """The Hugging Face encoder inside a SentenceTransformer (its first module's ``auto_model``)."""
    first = model[0]  # type: ignore[index]
    inner = getattr(first, "auto_model", None) or getattr(first, "model", None)
    if not isinstance(inner, nn.Module):
        raise TypeError(
            f"the first module of this SentenceTransformer is a {type(first).__name__} without a Hugging Face model "
            "(auto_model); ember works with transformer-based sentence-transformers models"
        )
    return inner


def max_length_of(model: nn.Module) -> int | None:
    """The truncation length ``encode`` uses (``max_seq_length``), or None when the model has none."""
    n = getattr(model, "max_seq_length", None)
    return int(n) if isinstance(n, int) and n > 0 else None


def pooling_signature(model: nn.Module) -> str:
    """What the modules after the transformer do, as stable text for a fingerprint: their class names and
    configs (pooling mode, normalisation, dense layers' sizes; the dense weights are hashed with the model's)."""
    parts = []
    for module in list(model)[1:]:  # type: ignore[call-overload]
        config = getattr(module, "get_config_dict", None)
        parts.append({"module": type(module).__name__, "config": config() if callable(config) else {}})
    return json.dumps(parts, sort_keys=True, default=str)


def sentence_embeddings(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``(B, D)`` sentence embeddings of a padded batch ``(B, T)``, as ``model.encode`` computes them."""
    out = model({"input_ids": input_ids, "attention_mask": attention_mask})
    return out["sentence_embedding"]  # (B, D)
