"""Hyper-parameter search for distillation with Optuna: alpha, temperature, learning rate, epochs (and, when
asked, the student's layers), every trial training from the stored teacher outputs and scored on a stored
validation split; optionally a second objective, the student's batch-1 latency.

Optuna is called with keyword arguments only (``create_study(direction=...)``, ``trial.suggest_float(name=...,
low=..., high=...)``), as Optuna 5 requires.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from ember.compress.config import DistillConfig, SearchSpace
from ember.compress.distillation import distill
from ember.compress.errors import CompressConfigError
from ember.compress.sources import TeacherSource
from ember.errors import BackendNotInstalledError
from ember.progress import progress_bar

INSTALL = "pip install 'ember[compress]'  (optuna)"


def require_optuna():
    """The ``optuna`` module, or :class:`BackendNotInstalledError` with the install line."""
    try:
        import optuna
    except ImportError as exc:
        raise BackendNotInstalledError(
            f"the distillation search uses Optuna, which is not installed: {INSTALL}. Without it, pass a "
            "DistillConfig yourself (ember.compress.DistillConfig or a preset such as book())"
        ) from exc
    return optuna


@torch.inference_mode()
def source_accuracy(model: nn.Module, source: TeacherSource, batch_size: int = 128) -> float:
    """Accuracy of ``model`` on a labelled stored split (ids and labels from the store, nothing tokenized)."""
    labels = source.labels()
    if labels is None:
        raise CompressConfigError("the validation split was filled without labels; fill it with labels to score trials")
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(source)), key=lambda i: source.lengths()[i])
    correct = 0
    for start in range(0, len(order), batch_size):
        b = source.batch(order[start : start + batch_size]).to(device)
        correct += int((model(**b.model_inputs()).logits.argmax(-1) == b.labels).sum())
    return correct / max(len(source), 1)


@torch.inference_mode()
def batch1_latency_ms(model: nn.Module, source: TeacherSource, samples: int = 50) -> float:
    """Median batch-1 forward time of ``model`` in PyTorch over stored examples (after 5 warm-up calls)."""
    model.eval()
    device = next(model.parameters()).device
    idx = list(range(min(samples, len(source))))
    for i in idx[:5]:
        model(**source.batch([i]).to(device).model_inputs())
    times = []
    for i in idx:
        inputs = source.batch([i]).to(device).model_inputs()
        t0 = time.perf_counter()
        model(**inputs)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000.0


@dataclass
class SearchResult:
    """What the search found.

    Attributes:
        best: the best trial's distillation config (for two objectives: the most accurate Pareto-optimal trial).
        best_accuracy: its validation accuracy.
        best_layers: its student's teacher layers, when the search chose among them.
        trials: every trial's parameters, accuracy (and latency), as dicts.
    """

    best: DistillConfig
    best_accuracy: float
    best_layers: tuple[int, ...] | None = None
    trials: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"best": self.best.to_dict(), "best_accuracy": self.best_accuracy,
                "best_layers": None if self.best_layers is None else list(self.best_layers), "trials": self.trials}


@contextlib.contextmanager
def _quiet(optuna) -> Iterator[None]:
    """Optuna logs every trial on stderr; ember shows its own progress instead."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def _suggest(trial, space: SearchSpace, base: DistillConfig) -> tuple[DistillConfig, tuple[int, ...] | None]:
    config = replace(
        base,
        alpha=trial.suggest_float(name="alpha", low=space.alpha[0], high=space.alpha[1]),
        temperature=trial.suggest_float(name="temperature", low=space.temperature[0], high=space.temperature[1]),
        lr=trial.suggest_float(name="lr", low=space.lr[0], high=space.lr[1], log=True),
        epochs=trial.suggest_int(name="epochs", low=int(space.epochs[0]), high=int(space.epochs[1])),
    )
    layers = None
    if space.layers:
        choice = trial.suggest_categorical(name="layers", choices=[",".join(map(str, c)) for c in space.layers])
        layers = tuple(int(i) for i in choice.split(","))
    return config, layers


def search(
    student: nn.Module | Callable[[tuple[int, ...] | None], nn.Module],
    source: TeacherSource,
    validation: TeacherSource,
    *,
    space: SearchSpace | None = None,
    trials: int = 10,
    base: DistillConfig | None = None,
    latency: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> SearchResult:
    """Search distillation settings with Optuna (TPE), every trial reading the stored teacher outputs.

    Args:
        student: the student to start each trial from (copied), or a function building one from the trial's
            teacher layers (needed when ``space.layers`` is set).
        source: the stored training split (``teacher.source("train")``).
        validation: a stored labelled split scored after each trial (``teacher.source("validation")``).
        space: the ranges searched.
        trials: number of trials.
        base: settings not searched (batch size, warm-up, loss weights).
        latency: add the student's batch-1 PyTorch latency as a second objective (minimised).
        seed: the sampler's seed.

    Returns:
        a :class:`SearchResult`.

    Raises:
        BackendNotInstalledError: Optuna is not installed (the message has the pip line).

    Example:
        >>> result = search(student, teacher.source("train"), teacher.source("val"), trials=8)  # doctest: +SKIP
        >>> distill(final_student, teacher.source("train"), result.best)  # doctest: +SKIP
    """
    optuna = require_optuna()
    space, base = space or SearchSpace(), base or DistillConfig()
    if space.layers and isinstance(student, nn.Module):
        raise CompressConfigError("space.layers chooses the student's layers, so pass student= a function building a "
                                  "student from teacher layer indices (e.g. lambda layers: select_layers(teacher, layers))")
    if trials < 1:
        raise CompressConfigError(f"trials={trials} must be >= 1")
    records: list[dict] = []

    def objective(trial):
        config, layers = _suggest(trial, space, base)
        model = copy.deepcopy(student) if isinstance(student, nn.Module) else student(layers)
        distill(model, source, config, progress=False)
        acc = source_accuracy(model, validation)
        record = {"number": trial.number, **trial.params, "accuracy": acc}
        if latency:
            record["latency_ms"] = batch1_latency_ms(model, validation)
        records.append(record)
        advance(1)
        return (acc, record["latency_ms"]) if latency else acc

    kwargs = {"directions": ["maximize", "minimize"]} if latency else {"direction": "maximize"}
    with _quiet(optuna), progress_bar(trials, "searching distillation settings", enabled=progress) as advance:
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed), **kwargs)
        study.optimize(objective, n_trials=trials)
    best = max(study.best_trials, key=lambda t: t.values[0]) if latency else study.best_trial
    config, layers = _suggest(optuna.trial.FixedTrial(best.params), space, base)
    return SearchResult(best=config, best_accuracy=float(best.values[0]), best_layers=layers, trials=records)
