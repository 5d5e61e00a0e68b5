"""Errors of compression (all subclasses of :class:`ember.errors.EmberError`)."""

from __future__ import annotations

from ember.errors import BackendNotInstalledError, DataError, EmberError, StoreMismatchError


class CompressConfigError(EmberError, ValueError):
    """A compression setting is out of range (a sparsity of 1.0, a temperature of 0 …)."""


class StudentMismatchError(EmberError, ValueError):
    """A student cannot learn from this teacher as asked: another vocabulary, another hidden size without a
    projection, layer indices the teacher does not have, a head of another size."""


class PruneError(EmberError, ValueError):
    """A pruning request that would break the model (a layer left with no heads) or that the model cannot take."""


__all__ = [
    "BackendNotInstalledError",
    "CompressConfigError",
    "DataError",
    "PruneError",
    "StoreMismatchError",
    "StudentMismatchError",
]
