"""Checks on the texts a user hands to any verb (fill, embed, encode, optimize)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

from ember.errors import DataError
from ember.fixes import ALLOW_EMPTY


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
                f"example {i} has an empty text; remove empty rows from the data, or {ALLOW_EMPTY} "
                "to store the encoding of the special tokens alone", fixes=[ALLOW_EMPTY]
            )
    return texts


def structural_ids(tokenizer) -> set[int]:
    """The ids of the tokens a tokenizer adds around a text ([CLS], [SEP], padding, <s> ...): a text whose ids are
    only these holds nothing. The unknown token is left out: a text of characters the vocabulary lacks (an emoji
    read as [UNK]) is a text.
    """
    unk = getattr(tokenizer, "unk_token_id", None)
    return {int(i) for i in getattr(tokenizer, "all_special_ids", ()) if i is not None and i != unk}


def check_tokenized(texts: Sequence[str], ids: Sequence[Sequence[int]], special_ids: Collection[int],
                    allow_empty: bool = False) -> None:
    r"""Refuse texts that tokenize to nothing but special tokens, as :func:`check_texts` refuses empty ones.

    ``"\x00"`` or a zero-width space (``"\u200b"``) are not blank to ``str.strip`` but the tokenizer drops them:
    they would be stored as the encoding of ``[CLS] [SEP]`` alone, as an empty text is with ``allow_empty=True``.

    Args:
        texts: the texts, as given.
        ids: their token ids (one list per text, as the tokenizer returned them).
        special_ids: the ids that carry no text (:func:`structural_ids`).
        allow_empty: accept them, as empty texts are accepted.

    Example:
        >>> check_tokenized(["hi", "\u200b"], [[101, 7632, 102], [101, 102]], {101, 102})
        Traceback (most recent call last):
        ...
        ember.errors.DataError: example 1 ('\u200b') tokenizes to special tokens only: the tokenizer drops every character of it (control characters, zero-width spaces), so it is an empty text. Remove it from the data, or pass allow_empty=True to store the encoding of the special tokens alone
    """
    if allow_empty:
        return
    for i, (t, x) in enumerate(zip(texts, ids, strict=True)):
        if all(int(j) in special_ids for j in x):
            raise DataError(
                f"example {i} ({t[:40]!r}) tokenizes to special tokens only: the tokenizer drops every character of "
                "it (control characters, zero-width spaces), so it is an empty text. Remove it from the data, or "
                f"{ALLOW_EMPTY} to store the encoding of the special tokens alone", fixes=[ALLOW_EMPTY]
            )
