"""Every error (and warning) ember raises. Each message says what was received, why it is refused and how to fix it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class Fix(str):
    """A way out that an error names, as data: the words a Python user reads, and what they are about.

    A fix is the text itself (a ``str``, formatted into the message where it reads naturally) plus a ``name``
    saying what it is about: the argument that fixes it (``allow_empty``, ``max_length``) or the remedy
    (``writable-store``). An error lists the fixes its message contains (:attr:`EmberError.fixes`), and a
    command line renders its own words for them (``--allow-empty``) from that list, not by searching the
    message for phrases: the fix and its wording are one object wherever the message is built.

    Example:
        >>> ALLOW = Fix("pass allow_empty=True", name="allow_empty")
        >>> err = DataError(f"example 3 is empty; {ALLOW}", fixes=[ALLOW])
        >>> err.render({ALLOW: "pass --allow-empty"})
        'example 3 is empty; pass --allow-empty'
    """

    name: str

    def __new__(cls, text: str, *, name: str) -> Fix:
        fix = super().__new__(cls, text)
        fix.name = name
        return fix

    def __reduce__(self):  # errors travel between processes (DataLoader workers, a store check's child process)
        return _fix, (str(self), self.name)


def _fix(text: str, name: str) -> Fix:
    return Fix(text, name=name)


class EmberError(Exception):
    """Base class of ember's errors.

    Args:
        *args: the message (what was received, why it is refused, how to fix it).
        fixes: the :class:`Fix` objects the message contains, for other audiences to reword.
    """

    def __init__(self, *args: object, fixes: Iterable[Fix] = ()) -> None:
        super().__init__(*args)
        self.fixes: tuple[Fix, ...] = tuple(fixes)

    def render(self, wording: Mapping[Fix, str]) -> str:
        """The message with each of its fixes worded for another audience (a command's flags); others as they are."""
        message = str(self)
        for fix in self.fixes:
            if fix in wording:
                message = message.replace(fix, wording[fix])
        return message


class ConfigError(EmberError, ValueError):
    """A setting of a config is invalid (every capability's config error derives from this one)."""


class UnsupportedModelError(EmberError, TypeError):
    """The model's architecture is not one ember knows how to split."""


class StoreError(EmberError):
    """A store could not be opened, read or written."""


class StoreMismatchError(StoreError):
    """The store was made by another model, split, dtype, tokenizer or max length.

    ``differences`` lists each differing fingerprint field (stored vs wanted), empty when not applicable.
    """

    def __init__(self, message: str, differences: list[str] | None = None, *, fixes: Iterable[Fix] = ()) -> None:
        super().__init__(message, fixes=fixes)
        self.differences = differences or []


class StoreLockedError(StoreError):
    """Another process is writing the store."""


class StoreReadOnlyError(StoreError):
    """The store's location cannot be written."""


class StoreFullError(StoreError):
    """The disk (or the store's size limit) ran out while writing."""


class StoreCorruptError(StoreError):
    """The store's files or one of its entries cannot be decoded."""


class StoreFormatError(StoreError):
    """The store was written in an entry format this ember does not read (an older one without checksums, or a
    newer one)."""


class MissingEntriesError(StoreError, KeyError):
    """Examples asked for in ``train`` mode are not in the store."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ModelFileError(EmberError, OSError):
    """A model folder (or name) cannot be loaded: it does not exist, or its weights are in a form ember does not
    load (a pickle holding more than tensors)."""


class ModelNotFoundError(ModelFileError, FileNotFoundError):
    """The model names a local folder that is not there."""


class OutputLocationError(EmberError, OSError):
    """A folder or file that a command must write (a trained model's ``--out``) cannot be written."""


class DataError(EmberError, ValueError):
    """A dataset could not be read or has bad rows."""


class RandomTransformError(DataError):
    """Reading the same dataset item twice gave different inputs: a random transform cannot be cached."""


class KeyCollisionError(DataError):
    """A custom key (a key extractor or key function) gave one key to two different inputs."""


class FidelityError(EmberError):
    """An optimised model's outputs drifted past the tolerance its config allows."""


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
