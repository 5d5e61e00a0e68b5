"""Checks on the texts a user hands to any verb (fill, embed, encode, optimize)."""

from __future__ import annotations

from collections.abc import Iterable

from ember.errors import DataError


def check_texts(texts: Iterable[str], allow_empty: bool = False) -> list[str]:
    """The texts as a list, read once (so a generator is not used up by the check), after refusing empty or
    non-string texts with the index of the first bad one, and a bare string (which would be read as one text
    per character)."""
    if isinstance(texts, str | bytes):
        raise DataError(f"texts must be a list of strings, got one {type(texts).__name__} ({texts[:40]!r}); wrap it: [text]")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise DataError(f"example {i} is a {type(t).__name__}, not a string; convert the text column to str")
        if not allow_empty and not t.strip():
            raise DataError(
                f"example {i} has an empty text; remove empty rows from the data, or pass allow_empty=True "
                "to store the encoding of the special tokens alone"
            )
    return texts
