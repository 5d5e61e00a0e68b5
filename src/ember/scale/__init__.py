"""Scale-out on Ray: fills and batch scoring computed by Ray actors, with the same bytes as one process.

``import ember.scale`` does not import Ray; starting or joining it happens on first use, and a missing Ray says
how to install it (``pip install "ember[ray]"``).

Example:
    >>> from ember.scale import RayConfig, RayExecutor                                # doctest: +SKIP
    >>> rec.fill(texts, labels, executor=RayExecutor(RayConfig.local(workers=2)))    # doctest: +SKIP
"""

from __future__ import annotations

from ember.scale.cluster import Cluster, connect
from ember.scale.config import RayConfig
from ember.scale.errors import (
    RayConfigError,
    RayConnectionError,
    RayNotInstalledError,
    UnreachablePathError,
    WorkerDiedError,
    WorkerEnvironmentError,
    WorkersNotStartedError,
)
from ember.scale.executor import RayExecutor, RunStats

__all__ = [
    "Cluster",
    "RayConfig",
    "RayConfigError",
    "RayConnectionError",
    "RayExecutor",
    "RayNotInstalledError",
    "RunStats",
    "UnreachablePathError",
    "WorkerDiedError",
    "WorkerEnvironmentError",
    "WorkersNotStartedError",
    "connect",
]
