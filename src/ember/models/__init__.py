"""Per-family adapters for Hugging Face encoders, the checks that a model is one ember can run, and the loader
of ember's default model."""

from ember.models.checks import check_module, check_pad_token, is_causal_decoder, is_encoder_decoder
from ember.models.families import SUPPORTED_FAMILIES, EncoderParts, find_parts
from ember.models.load import DEFAULT_MODEL, default_model_path, load_model, resolve_max_length

__all__ = [
    "SUPPORTED_FAMILIES",
    "EncoderParts",
    "find_parts",
    "check_module",
    "check_pad_token",
    "is_causal_decoder",
    "is_encoder_decoder",
    "DEFAULT_MODEL",
    "default_model_path",
    "load_model",
    "resolve_max_length",
]
