"""``distill``: train a student from the teacher's stored outputs in a plain PyTorch loop.

Every epoch reads input ids, labels and teacher targets from the store (a :class:`StoredTeacher`); neither
the teacher nor the tokenizer runs. The same loop runs on a :class:`LiveTeacher` (the teacher computed at
every step), which is how the store's gain is measured.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Protocol

import torch
from torch import nn

from ember.batching import grouped_batches
from ember.compress.config import DistillConfig
from ember.compress.errors import StudentMismatchError
from ember.compress.families import hidden_size, vocab_size
from ember.compress.losses import distillation_loss, hidden_cosine_loss
from ember.compress.sources import TeacherBatch, TeacherSource
from ember.models.families import find_parts
from ember.progress import progress_bar


class TrainHook(Protocol):
    """Something that acts during training (a pruning schedule, say): extra optimizer groups, a call per step."""

    def param_groups(self) -> list[dict]: ...

    def on_step(self, step: int, total: int) -> None: ...


@dataclass
class DistillReport:
    """What a distillation run did.

    Attributes:
        epochs, examples, steps: the run's size.
        epoch_seconds, epoch_loss: per epoch.
        config: the :class:`DistillConfig` as a dict.
    """

    epochs: int
    examples: int
    steps: int = 0
    epoch_seconds: list[float] = field(default_factory=list)
    epoch_loss: list[float] = field(default_factory=list)
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def seconds(self) -> float:
        return sum(self.epoch_seconds)


def check_student(student: nn.Module, source: TeacherSource, config: DistillConfig) -> list[tuple[int, int]]:
    """Refuse a student that cannot learn from ``source`` as ``config`` asks; returns the hidden-state pairs matched.

    Raises:
        StudentMismatchError: another vocabulary, another number of classes, hidden states the store lacks, or
            another hidden width without ``project_hidden``.
    """
    facts = source.facts
    have = vocab_size(student)
    if have != facts.vocab_size:
        raise StudentMismatchError(
            f"the student's embedding table takes {have} token ids but the teacher's tokenizer gives ids up to "
            f"{facts.vocab_size - 1}: the stored inputs are the teacher's token ids, so the student must share the "
            "teacher's vocabulary. Build it with select_layers(teacher, ...) (trim its table with trim_vocabulary, "
            "which keeps the teacher's ids)"
        )
    classes = getattr(student.config, "num_labels", None)
    if classes != facts.num_labels:
        raise StudentMismatchError(
            f"the student's head has {classes} outputs but the teacher's has {facts.num_labels}; give the student a "
            f"head of {facts.num_labels} classes (select_layers copies the teacher's)"
        )
    if not config.cosine_weight:
        return []
    pairs = list(config.hidden_map) or [(find_parts(student).num_layers, facts.num_layers)]
    for s, t in pairs:
        if t not in facts.hidden_layers:
            raise StudentMismatchError(
                f"the cosine loss matches teacher hidden states {t}, which the store does not hold (it has "
                f"{list(facts.hidden_layers) or 'logits only'}); fill it with TeacherConfig(hidden_layers=({t},))"
            )
        if s > find_parts(student).num_layers:
            raise StudentMismatchError(f"hidden_map asks for student hidden states {s}, but the student has "
                                       f"{find_parts(student).num_layers} layers (indices 0..{find_parts(student).num_layers})")
    width = hidden_size(student)
    if width != facts.hidden_size and not config.project_hidden:
        raise StudentMismatchError(
            f"the student's hidden size is {width} but the teacher's is {facts.hidden_size}, so their hidden states cannot "
            "be compared by the cosine loss; pass DistillConfig(project_hidden=True) to learn a projection, or "
            "cosine_weight=0"
        )
    return pairs


def linear_schedule(optimizer: torch.optim.Optimizer, total: int, warmup: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup * total`` steps, then linear decay to 0 (BERT's fine-tuning schedule)."""
    rise = max(1, int(round(warmup * total)))

    def factor(step: int) -> float:
        if warmup and step < rise:
            return (step + 1) / rise
        return max(0.0, (total - step) / max(1, total - (rise if warmup else 0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class _Step:
    """One training step: forward, loss, backward, clip, step (the loop's body, kept short)."""

    def __init__(self, student: nn.Module, config: DistillConfig, pairs: list[tuple[int, int]],
                 projection: nn.Module | None) -> None:
        self.student, self.config, self.pairs, self.projection = student, config, pairs, projection
        self.device = next(student.parameters()).device

    def loss(self, batch: TeacherBatch) -> torch.Tensor:
        b = batch.to(self.device)
        out = self.student(**b.model_inputs(), output_hidden_states=bool(self.pairs))
        c = self.config
        loss = distillation_loss(out.logits, b.logits, b.labels, alpha=c.alpha, temperature=c.temperature,
                                 mse_weight=c.mse_weight)
        for s, t in self.pairs:
            h = out.hidden_states[s]  # (B, T, H_student)
            if self.projection is not None:
                h = self.projection(h)  # (B, T, H_teacher)
            loss = loss + c.cosine_weight / len(self.pairs) * hidden_cosine_loss(h, b.hidden[t], b.attention_mask)
        return loss


def distill(
    student: nn.Module,
    source: TeacherSource,
    config: DistillConfig | None = None,
    *,
    hooks: Sequence[TrainHook] = (),
    progress: bool = True,
) -> DistillReport:
    """Train ``student`` (in place) on the teacher's targets from ``source``, with AdamW.

    Args:
        student: a classifier taking the teacher's token ids (``select_layers(teacher, ...)``).
        source: ``teacher.source("train")`` (stored outputs) or ``teacher.live(data)`` (teacher run every step).
        config: loss weights, temperature and training settings (default :class:`DistillConfig`).
        hooks: training hooks (e.g. a :class:`~ember.compress.MagnitudePruner`), called after each step.

    Returns:
        a :class:`DistillReport`; the student is left in eval mode.

    Example:
        >>> report = distill(student, teacher.source("train"), DistillConfig(alpha=0.5, temperature=4))  # doctest: +SKIP
    """
    config = DistillConfig() if config is None else config
    if not isinstance(config, DistillConfig):
        raise TypeError(f"config must be a DistillConfig, got {type(config).__name__}")
    pairs = check_student(student, source, config)
    if source.labels() is None and config.alpha > 0:
        config = replace(config, alpha=0.0)  # unlabelled data: the teacher's targets are all there is
    projection = _projection(student, source, pairs, config)
    step = _Step(student, config, pairs, projection)
    extra = [g for h in hooks for g in h.param_groups()]  # e.g. movement scores, with their own learning rate
    claimed = {id(p) for g in extra for p in g["params"]}
    params = [p for p in student.parameters() if p.requires_grad and id(p) not in claimed]
    if projection is not None:
        params += list(projection.parameters())
    groups = [{"params": params}] + extra
    # fused AdamW (one pass over the weights per step, as ember's recycling trains): the teacher's 11.7M-row
    # embedding table made the unfused step a large share of a MiniLM step on 2 cores
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for g in groups for p in g["params"])
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay, fused=fused or None)
    batches_per_epoch = (len(source) + config.batch_size - 1) // config.batch_size
    total = batches_per_epoch * config.epochs
    scheduler = linear_schedule(optimizer, total, config.warmup)
    report = DistillReport(epochs=config.epochs, examples=len(source), config=config.to_dict())
    torch.manual_seed(config.seed)
    student.train()
    try:
        for epoch in range(config.epochs):
            _epoch(step, source, optimizer, scheduler, hooks, report, epoch, total, progress)
    finally:
        student.eval()
    if projection is not None:
        report.config["projection"] = list(projection.weight.shape)
    return report


def _projection(student: nn.Module, source: TeacherSource, pairs, config: DistillConfig) -> nn.Module | None:
    width = hidden_size(student)
    if not pairs or width == source.facts.hidden_size:
        return None
    param = next(student.parameters())
    return nn.Linear(int(width or 0), source.facts.hidden_size, device=param.device, dtype=param.dtype)


def _epoch(step: _Step, source: TeacherSource, optimizer, scheduler, hooks, report: DistillReport, epoch: int,
           total: int, progress: bool) -> None:
    config = step.config
    batches = grouped_batches(source.lengths(), config.batch_size, seed=config.seed + epoch)
    start, loss_sum, n = time.perf_counter(), 0.0, 0
    params = [p for g in optimizer.param_groups for p in g["params"]]
    with progress_bar(len(batches), f"distilling: epoch {epoch + 1}/{config.epochs}", enabled=progress) as advance:
        for idx in batches:
            loss = step.loss(source.batch(idx))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            report.steps += 1
            for h in hooks:
                h.on_step(report.steps, total)
            loss_sum += float(loss.detach()) * len(idx)
            n += len(idx)
            advance(1)
    report.epoch_seconds.append(time.perf_counter() - start)
    report.epoch_loss.append(loss_sum / max(n, 1))
