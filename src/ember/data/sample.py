"""ember's built-in sample: a few hundred varied English sentences written for the project.

Used by ``ember bench`` on defaults and as the verification sample of fidelity checks when the user
passes no data. Lengths run from two to about sixty words; there are questions, commands and
statements on everyday topics, with some numbers, punctuation and non-ASCII characters.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from typing import TypeVar

T = TypeVar("T")

SAMPLE_FILE = "sample_sentences.txt"


@lru_cache(maxsize=1)
def _load() -> tuple[str, ...]:
    from ember.data.files import text_lines

    return tuple(text_lines(resources.files("ember.data").joinpath(SAMPLE_FILE).read_text(encoding="utf-8")))


def sample_sentences(n: int | None = None) -> list[str]:
    """The built-in sentences in file order (the first ``n`` when given).

    Example:
        >>> len(sample_sentences()) >= 300
        True
        >>> sample_sentences(1)
        ['Good morning.']
    """
    sentences = list(_load())
    if n is not None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        sentences = sentences[:n]
    return sentences


def spread(items: Sequence[T], n: int) -> list[T]:
    """At most ``n`` of ``items`` at an even stride over the whole list, so a list grouped by class or sorted
    by length gives a sample of all of it, not of its start.

    Example:
        >>> spread(list(range(10)), 3)
        [0, 3, 6]
    """
    return list(items[:: max(1, len(items) // n)][:n])
