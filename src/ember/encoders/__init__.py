"""Frozen-encoder embedding cache for training loops, on the recycling store (one store, one fill loop)."""

from ember.encoders.cache import CacheFillReport, EncoderCache, check_encoder_names
from ember.encoders.config import CacheConfig, KeyExtractor, NamedPooling, Placement, PoolingName
from ember.encoders.data import CachedDataset, CachedItem, EmbeddingTable, StoreSource, collate_cached
from ember.encoders.errors import (
    CacheConfigError,
    EmbeddingShapeError,
    KeyCollisionError,
    LabelCachingError,
    RandomTransformError,
    TrainableEncoderError,
)
from ember.encoders.placement import serving_dtype, training_device

__all__ = [
    "CacheConfig",
    "CacheFillReport",
    "CachedDataset",
    "CachedItem",
    "collate_cached",
    "EmbeddingTable",
    "EncoderCache",
    "KeyExtractor",
    "NamedPooling",
    "Placement",
    "PoolingName",
    "StoreSource",
    "check_encoder_names",
    "serving_dtype",
    "training_device",
    "CacheConfigError",
    "EmbeddingShapeError",
    "KeyCollisionError",
    "LabelCachingError",
    "RandomTransformError",
    "TrainableEncoderError",
]
