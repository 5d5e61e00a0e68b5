"""How recycling splits a model and stores its states: one frozen dataclass, validated on creation."""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass

from ember.errors import ConfigError
from ember.store.base import Backend, check_backend
from ember.store.codec import DType, torch_dtype


class RecycleConfigError(ConfigError):
    """A recycling setting is invalid."""


@dataclass(frozen=True)
class RecycleConfig:
    """How to split and store.

    Args:
        layer: the split ``k``: embeddings and layers ``0..k-1`` are frozen and stored; ``0 <= k <= N``.
        dtype: storage dtype of the hidden states (``float16``/``bfloat16`` halve the size).
        max_length: truncation length in tokens (default: the tokenizer's, capped by the model's positions).
        backend: ``lmdb`` (default), ``leveldb`` or ``memory``.
        max_size: LMDB only: upper bound in bytes for the data file (default: grow until the disk is full).

    Example:
        >>> RecycleConfig(layer=3, dtype="float16").dtype
        'float16'
    """

    VERSION = 1  # bumped when a saved config's meaning changes; from_dict refuses another version

    layer: int
    dtype: DType = "float32"
    max_length: int | None = None
    backend: Backend = "lmdb"
    max_size: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer", check_layer(self.layer))
        try:
            torch_dtype(self.dtype)
            check_backend(self.backend)
        except ValueError as exc:
            raise RecycleConfigError(str(exc)) from None
        if self.max_length is not None and (not is_int(self.max_length) or self.max_length < 2):
            raise RecycleConfigError(f"max_length must be an int >= 2 (tokens), got {self.max_length!r}")
        if self.max_size is not None and (not is_int(self.max_size) or self.max_size < 1):
            raise RecycleConfigError(f"max_size must be a positive int (bytes), got {self.max_size!r}")

    def store_options(self) -> dict:
        """Backend options of the store (only those set)."""
        return {} if self.max_size is None else {"max_size": self.max_size}

    def to_dict(self) -> dict:
        return {**asdict(self), "version": self.VERSION}

    @classmethod
    def from_dict(cls, d: dict) -> RecycleConfig:
        """Inverse of :meth:`to_dict`; a config saved by another version is refused, naming both."""
        from ember.config import check_version

        return cls(**check_version(cls, d))


def is_int(value: object) -> bool:
    """An integer (numpy ints too), but not a bool: ``True`` is an int to Python and never meant as one here."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_layer(layer: object, num_layers: int | None = None, model: str = "the model") -> int:
    """The split layer ``k`` as an int, refused unless ``0 <= k <= num_layers`` (when the count is known).

    ``k`` counts the frozen layers: 0 stores the embeddings' output (every layer trains), ``num_layers`` stores
    the last layer's (only the head trains).

    Example:
        >>> check_layer(3, 6)
        3
    """
    allowed = "0 <= k" if num_layers is None else f"0 <= k <= {num_layers}"
    if not is_int(layer):
        raise TypeError(
            f"layer must be an int (the split layer k, {allowed}), got {type(layer).__name__} {layer!r}; "
            "pass e.g. layer=3"
        )
    k = int(layer)  # type: ignore[call-overload]
    if k < 0 or (num_layers is not None and k > num_layers):
        counted = "" if num_layers is None else f": {model} has {num_layers} layers"
        raise RecycleConfigError(
            f"layer={k} is out of range{counted}; pass a split layer k with {allowed} (embeddings and layers "
            "0..k-1 are frozen and stored, layers k.. train)"
        )
    return k
