"""Errors of scale-out on Ray (all subclasses of :class:`ember.errors.EmberError`)."""

from __future__ import annotations

from ember.errors import BackendNotInstalledError, ConfigError, EmberError, Fix, StoreError

INSTALL_HINT = 'pip install "ember[ray]"'
# Ways out the messages name in Python words; a command line words them as its flags (ember.cli.ray_options).
NO_RAY = Fix("leave out executor=", name="no-ray")
MAX_RESTARTS = Fix("raise RayConfig.max_restarts", name="max_restarts")
START_TIMEOUT = Fix("raise RayConfig.start_timeout_s", name="start_timeout_s")
ACCEPT_ENVIRONMENT = Fix("pass RayConfig(check_environment=False) to accept the difference", name="check_environment")


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
    "ACCEPT_ENVIRONMENT",
    "INSTALL_HINT",
    "MAX_RESTARTS",
    "NO_RAY",
    "START_TIMEOUT",
    "RayConfigError",
    "RayConnectionError",
    "RayNotInstalledError",
    "UnreachablePathError",
    "WorkerDiedError",
    "WorkerEnvironmentError",
    "WorkersNotStartedError",
]
