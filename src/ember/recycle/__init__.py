"""Embedding recycling: store the frozen bottom's hidden states once, start every later pass from them."""

from ember.recycle.config import RecycleConfig
from ember.recycle.data import StoredDataset, collate_states
from ember.recycle.recycler import Recycler

__all__ = ["RecycleConfig", "Recycler", "StoredDataset", "collate_states"]

from ember.recycle.train import TrainReport, evaluate, train_top  # noqa: E402

__all__ += ["TrainReport", "evaluate", "train_top"]
