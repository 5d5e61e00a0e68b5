"""Scale-out on Ray: fills and batch scoring computed by Ray actors, with the same bytes as one process.

``import ember.scale`` does not import Ray; starting or joining it happens on first use, and a missing Ray says
how to install it (``pip install "ember[ray]"``).

- :class:`RayExecutor`: where a fill's batches run (``Recycler.fill`` / ``EncoderCache.fill`` ``executor=``);
- :func:`predict`: batch scoring with an optimised artifact or a model, here or on Ray, to Parquet/JSONL;
- :func:`read_dataset`: a Ray Dataset's columns as ember examples;
- :func:`train_top_on_ray`: ``train_top`` on Ray Train workers reading one store.

Example:
    >>> from ember.scale import RayConfig, RayExecutor                                # doctest: +SKIP
    >>> rec.fill(texts, labels, executor=RayExecutor(RayConfig.local(workers=2)))    # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# public name -> module that defines it (loaded on first use: the command line imports ember.scale.errors without
# torch, and nothing here imports Ray until it is started)
_EXPORTS = {
    "ArtifactScorer": "ember.scale.scorers",
    "Cluster": "ember.scale.cluster",
    "ModelScorer": "ember.scale.scorers",
    "Predictions": "ember.scale.predict",
    "RayConfig": "ember.scale.config",
    "RayConfigError": "ember.scale.errors",
    "RayConnectionError": "ember.scale.errors",
    "RayExecutor": "ember.scale.executor",
    "RayNotInstalledError": "ember.scale.errors",
    "Rows": "ember.scale.data",
    "RunStats": "ember.scale.executor",
    "UnreachablePathError": "ember.scale.errors",
    "WorkerDiedError": "ember.scale.errors",
    "WorkerEnvironmentError": "ember.scale.errors",
    "WorkersNotStartedError": "ember.scale.errors",
    "connect": "ember.scale.cluster",
    "predict": "ember.scale.predict",
    "read_dataset": "ember.scale.data",
    "train_top_on_ray": "ember.scale.train",
}

__all__ = [
    "ArtifactScorer",
    "Cluster",
    "ModelScorer",
    "Predictions",
    "RayConfig",
    "RayConfigError",
    "RayConnectionError",
    "RayExecutor",
    "RayNotInstalledError",
    "Rows",
    "RunStats",
    "UnreachablePathError",
    "WorkerDiedError",
    "WorkerEnvironmentError",
    "WorkersNotStartedError",
    "connect",
    "predict",
    "read_dataset",
    "train_top_on_ray",
]

if TYPE_CHECKING:  # pragma: no cover
    from ember.scale.cluster import Cluster, connect
    from ember.scale.config import RayConfig
    from ember.scale.data import Rows, read_dataset
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
    from ember.scale.predict import Predictions, predict
    from ember.scale.scorers import ArtifactScorer, ModelScorer
    from ember.scale.train import train_top_on_ray


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ember.scale' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
