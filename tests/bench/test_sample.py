"""The built-in sentences: enough of them, varied, and packaged."""

from __future__ import annotations

import pytest

from ember.data.sample import sample_sentences


def test_sample_is_varied():
    s = sample_sentences()
    assert len(s) >= 300
    assert len(set(s)) == len(s)
    words = [len(x.split()) for x in s]
    assert min(words) >= 2 and max(words) <= 60 and max(words) >= 40
    assert sum(x.endswith("?") for x in s) >= 50  # questions
    assert sum(any(c.isdigit() for c in x) for x in s) >= 30  # numbers
    assert sum(any(ord(c) > 127 for c in x) for x in s) >= 5  # unicode


def test_first_n_and_bad_n():
    assert sample_sentences(2) == ["Good morning.", "Stop the timer."]
    with pytest.raises(ValueError, match="^n must be >= 1, got 0$"):
        sample_sentences(0)
