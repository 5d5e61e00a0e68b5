"""Errors of scale-out on Ray (all subclasses of :class:`ember.errors.EmberError`)."""

from __future__ import annotations

from ember.errors import BackendNotInstalledError, ConfigError, EmberError, StoreError

INSTALL_HINT = 'pip install "ember[ray]"'


class RayConfigError(ConfigError):
    """A setting of :class:`~ember.scale.RayConfig` is invalid."""


class RayNotInstalledError(BackendNotInstalledError):
    """Ray is not installed in this environment (``pip install "ember[ray]"``)."""


class RayConnectionError(EmberError, ConnectionError):
    """No Ray cluster answered at the address given, within the time allowed."""


class WorkerDiedError(EmberError, RuntimeError):
    """A Ray worker process died (out of memory, killed, node lost) more often than it may be restarted."""


class WorkersNotStartedError(EmberError, RuntimeError):
    """The cluster did not start the workers asked for in time (too few CPUs free)."""


class WorkerEnvironmentError(EmberError, RuntimeError):
    """A Ray worker runs other library versions or CPU kernels than this process: its results would not be
    bit-identical to a single-process run, so a store would mix values of two computations."""


class UnreachablePathError(StoreError, FileNotFoundError):
    """A Ray worker cannot see a path the driver gave it (a store, an output folder) on its node."""


__all__ = [
    "INSTALL_HINT",
    "RayConfigError",
    "RayConnectionError",
    "RayNotInstalledError",
    "UnreachablePathError",
    "WorkerDiedError",
    "WorkerEnvironmentError",
    "WorkersNotStartedError",
]
