"""Choosing a configuration by measuring every candidate: above both ``ember.optimize`` (which builds them) and
``ember.bench`` (which measures them).

``autotune`` was ``ember.optimize.autotune`` until optimize stopped importing the benchmark: import it from here.

Example:
    >>> from ember.tune import autotune  # doctest: +SKIP
    >>> best = autotune(model, tok, texts, budget=0.999, objective="throughput")  # doctest: +SKIP
"""

from __future__ import annotations

from ember.tune.autotune import AutotuneResult, autotune

__all__ = ["AutotuneResult", "autotune"]
