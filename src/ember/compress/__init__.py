"""Compression: distillation from stored teacher outputs, students from teacher layers, pruning (structured,
magnitude, movement), quantisation-aware training, smaller vocabularies, a reject-class threshold chosen on
validation data (``calibrate_reject``), and a recipe chaining them.

::

    teacher ─fill─▶ store(teacher outputs) ─┐
    student = select_layers(teacher) ─▶ distill(α, T; search) ─▶ prune(structured) ─▶ qat ─▶ optimize ─▶ artifact
                                            └── every stage: fidelity vs teacher + bench row

Example:
    >>> from ember.compress import Teacher, DistillConfig, distill, select_layers, every_other  # doctest: +SKIP
    >>> teacher = Teacher(model, tok, "teacher-store/")          # doctest: +SKIP
    >>> teacher.fill(train)                                        # doctest: +SKIP
    >>> student = select_layers(model, every_other())              # doctest: +SKIP
    >>> distill(student, teacher.source("train"), DistillConfig(alpha=0.5, temperature=4))  # doctest: +SKIP

Optuna (``search``) and torchao (``qat``) are imported when used (``pip install 'ember[compress]'``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "TeacherConfig": "ember.compress.config",
    "DistillConfig": "ember.compress.config",
    "StructuredPruneConfig": "ember.compress.config",
    "MagnitudePruneConfig": "ember.compress.config",
    "MovementPruneConfig": "ember.compress.config",
    "QATConfig": "ember.compress.config",
    "SearchSpace": "ember.compress.config",
    "DISTILL_PRESETS": "ember.compress.config",
    "book": "ember.compress.config",
    "distilbert": "ember.compress.config",
    "plain": "ember.compress.config",
    "Teacher": "ember.compress.teacher",
    "TeacherOutputs": "ember.compress.outputs",
    "StoredTeacher": "ember.compress.sources",
    "LiveTeacher": "ember.compress.sources",
    "LabelSource": "ember.compress.sources",
    "TeacherBatch": "ember.compress.sources",
    "distill": "ember.compress.distillation",
    "DistillReport": "ember.compress.distillation",
    "distillation_loss": "ember.compress.losses",
    "LayerSelection": "ember.compress.select",
    "select_layers": "ember.compress.select",
    "every_other": "ember.compress.select",
    "first": "ember.compress.select",
    "layers": "ember.compress.select",
    "prune": "ember.compress.pruning",
    "PruneResult": "ember.compress.pruning",
    "shrink": "ember.compress.slicing",
    "MagnitudePruner": "ember.compress.sparsity",
    "MovementPruner": "ember.compress.sparsity",
    "qat": "ember.compress.quantization",
    "QATResult": "ember.compress.quantization",
    "trim_vocabulary": "ember.compress.vocab",
    "quantize_embeddings": "ember.compress.vocab",
    "save_compressed": "ember.compress.saving",
    "load_compressed": "ember.compress.saving",
    "search": "ember.compress.tuning",
    "SearchResult": "ember.compress.tuning",
    "compare_with_teacher": "ember.compress.evaluate",
    "calibrate_reject": "ember.compress.calibrate",
    "choose_reject_bias": "ember.compress.calibrate",
    "RejectCalibration": "ember.compress.calibrate",
    "accuracy": "ember.compress.evaluate",
    "compress": "ember.compress.recipe",
    "RecipeConfig": "ember.compress.recipe",
    "DistillationTrainer": "ember.compress.trainer",
}

__all__ = [
    "DISTILL_PRESETS", "DistillConfig", "DistillReport", "DistillationTrainer", "LabelSource",
    "LayerSelection",
    "LiveTeacher", "MagnitudePruneConfig", "MagnitudePruner", "MovementPruneConfig", "MovementPruner",
    "PruneResult", "QATConfig", "QATResult", "RecipeConfig", "RejectCalibration", "SearchResult", "SearchSpace", "StoredTeacher",
    "StructuredPruneConfig", "Teacher", "TeacherBatch", "TeacherConfig", "TeacherOutputs", "accuracy", "book",
    "calibrate_reject", "choose_reject_bias", "compare_with_teacher", "compress", "distilbert", "distill",
    "distillation_loss", "every_other", "first", "layers", "load_compressed", "plain", "prune", "qat", "quantize_embeddings", "save_compressed", "search",
    "select_layers", "shrink", "trim_vocabulary",
]

if TYPE_CHECKING:  # pragma: no cover
    from ember.compress.calibrate import RejectCalibration, calibrate_reject, choose_reject_bias
    from ember.compress.config import (
        DISTILL_PRESETS,
        DistillConfig,
        MagnitudePruneConfig,
        MovementPruneConfig,
        QATConfig,
        SearchSpace,
        StructuredPruneConfig,
        TeacherConfig,
        book,
        distilbert,
        plain,
    )
    from ember.compress.distillation import DistillReport, distill
    from ember.compress.evaluate import accuracy, compare_with_teacher
    from ember.compress.losses import distillation_loss
    from ember.compress.outputs import TeacherOutputs
    from ember.compress.pruning import PruneResult, prune
    from ember.compress.quantization import QATResult, qat
    from ember.compress.recipe import RecipeConfig, compress
    from ember.compress.saving import load_compressed, save_compressed
    from ember.compress.select import LayerSelection, every_other, first, layers, select_layers
    from ember.compress.slicing import shrink
    from ember.compress.sources import LabelSource, LiveTeacher, StoredTeacher, TeacherBatch
    from ember.compress.sparsity import MagnitudePruner, MovementPruner
    from ember.compress.teacher import Teacher
    from ember.compress.trainer import DistillationTrainer
    from ember.compress.tuning import SearchResult, search
    from ember.compress.vocab import quantize_embeddings, trim_vocabulary


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ember.compress' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
