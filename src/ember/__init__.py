"""ember: cheap fine-tuning and fast serving for transformer encoders.

``import ember`` stays light: torch, transformers and the optional engines load only when a verb
that needs them is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "Recycler": "ember.recycle",
    "RecycleConfig": "ember.recycle",
    "StoredDataset": "ember.recycle",
    "ActivationStore": "ember.store",
    "Fingerprint": "ember.store",
    "Examples": "ember.data",
    "load_examples": "ember.data",
    "load_model": "ember.models",
    "find_parts": "ember.models",
    "FidelityReport": "ember.fidelity",
    "Tolerance": "ember.fidelity",
    "EncoderCache": "ember.encoders",
    "CacheConfig": "ember.encoders",
}

__all__ = [
    "ActivationStore",
    "CacheConfig",
    "EncoderCache",
    "Examples",
    "FidelityReport",
    "Fingerprint",
    "RecycleConfig",
    "Recycler",
    "StoredDataset",
    "Tolerance",
    "find_parts",
    "load_examples",
    "load_model",
]

if TYPE_CHECKING:  # pragma: no cover
    from ember.data import Examples, load_examples
    from ember.encoders import CacheConfig, EncoderCache
    from ember.fidelity import FidelityReport, Tolerance
    from ember.models import find_parts, load_model
    from ember.recycle import RecycleConfig, Recycler, StoredDataset
    from ember.store import ActivationStore, Fingerprint


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ember' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
