"""Every error (and warning) ember raises. Each message says what was received, why it is refused and how to fix it."""

from __future__ import annotations


class EmberError(Exception):
    """Base class of ember's errors."""


class UnsupportedModelError(EmberError, TypeError):
    """The model's architecture is not one ember knows how to split."""


class StoreError(EmberError):
    """A store could not be opened, read or written."""


class StoreMismatchError(StoreError):
    """The store was made by another model, split, dtype, tokenizer or max length.

    ``differences`` lists each differing fingerprint field (stored vs wanted), empty when not applicable.
    """

    def __init__(self, message: str, differences: list[str] | None = None) -> None:
        super().__init__(message)
        self.differences = differences or []


class StoreLockedError(StoreError):
    """Another process is writing the store."""


class StoreReadOnlyError(StoreError):
    """The store's location cannot be written."""


class StoreFullError(StoreError):
    """The disk (or the store's size limit) ran out while writing."""


class StoreCorruptError(StoreError):
    """The store's files or one of its entries cannot be decoded."""


class MissingEntriesError(StoreError, KeyError):
    """Examples asked for in ``train`` mode are not in the store."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class DataError(EmberError, ValueError):
    """A dataset could not be read or has bad rows."""


class FidelityError(EmberError):
    """An optimised model's outputs drifted past the tolerance its config allows."""


class SpeedError(EmberError):
    """An optimised model is slower than the original at what it was built for (with ``on_slower="raise"``), or its
    speed could not be checked."""


class UnsupportedCPUError(EmberError, RuntimeError):
    """An engine's runtime refused this CPU (its instructions, or a precision it lacks)."""


class BackendNotInstalledError(EmberError, ImportError):
    """An optional engine (onnxruntime, openvino, torchao …) is not installed."""


class InputTooLongError(EmberError, ValueError):
    """A sequence is longer than the model (or the optimised artifact) accepts."""


class TokenizerError(EmberError, ValueError):
    """The tokenizer cannot do what ember asks of it (pad a batch of texts, say: it has no pad token)."""


class ArtifactError(EmberError):
    """A saved optimised artifact cannot be loaded: wrong format version, missing or corrupted files."""


class EmberWarning(UserWarning):
    """A result may not mean what it seems (say, accuracy over labels compared by position); the message says
    why and how to make sure. The command line shows these as one yellow line."""
