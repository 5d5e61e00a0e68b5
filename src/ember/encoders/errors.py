"""Errors of the frozen-encoder cache (all subclasses of :class:`ember.errors.EmberError`)."""

from __future__ import annotations

from ember.errors import (
    ConfigError,
    EmberError,
    KeyCollisionError,
    RandomTransformError,
    StoreCorruptError,
    StoreError,
    StoreMismatchError,
)


class CacheConfigError(ConfigError):
    """A cache setting is invalid or names an encoder the cache does not have."""


class TrainableEncoderError(EmberError, TypeError):
    """An encoder given to the cache has trainable parameters: its output changes as it trains."""


class LabelCachingError(EmberError, ValueError):
    """Labels cannot come from the cache (no labels filled, or the split was not filled)."""


class EmbeddingShapeError(StoreCorruptError):
    """An encoder returned embeddings of another shape than the store recorded."""


__all__ = [
    "CacheConfigError",
    "TrainableEncoderError",
    "LabelCachingError",
    "RandomTransformError",
    "KeyCollisionError",
    "EmbeddingShapeError",
    "StoreError",
    "StoreMismatchError",
]
