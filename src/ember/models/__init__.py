"""Per-family adapters for Hugging Face encoders, and the loader of ember's default model."""

from ember.models.families import SUPPORTED_FAMILIES, EncoderParts, find_parts
from ember.models.load import DEFAULT_MODEL, default_model_path, load_model, resolve_max_length

__all__ = ["SUPPORTED_FAMILIES", "EncoderParts", "find_parts", "DEFAULT_MODEL", "default_model_path", "load_model", "resolve_max_length"]
