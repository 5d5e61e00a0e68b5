"""ember's built-in sample: a few hundred varied English sentences written for the project.

Used by ``ember bench`` on defaults and as the verification sample of fidelity checks when the user
passes no data. Lengths run from two to about sixty words; there are questions, commands and
statements on everyday topics, with some numbers, punctuation and non-ASCII characters.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

SAMPLE_FILE = "sample_sentences.txt"


@lru_cache(maxsize=1)
def _load() -> tuple[str, ...]:
    from ember.data.loaders import text_lines

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
