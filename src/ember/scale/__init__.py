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
