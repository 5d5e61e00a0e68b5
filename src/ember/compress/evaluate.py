"""How a compressed model compares with its teacher: accuracy on the user's test data, label agreement and
Δlogits through :mod:`ember.fidelity` (the same comparison ``optimize`` and the benchmark use)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from ember.batching import length_buckets
from ember.fidelity import FidelityReport, compare


@dataclass
class TeacherComparison:
    """A compressed model against its teacher on the same labelled texts.

    Attributes:
        accuracy, teacher_accuracy: on the given labels.
        accuracy_delta_points: ``(accuracy - teacher_accuracy) * 100``.
        fidelity: label agreement, max |Δlogits| and logits cosine against the teacher.
    """

    accuracy: float | None
    teacher_accuracy: float | None
    fidelity: FidelityReport

    @property
    def accuracy_delta_points(self) -> float | None:
        if self.accuracy is None or self.teacher_accuracy is None:
            return None
        return (self.accuracy - self.teacher_accuracy) * 100.0

    def to_dict(self) -> dict:
        return {**asdict(self), "accuracy_delta_points": self.accuracy_delta_points}


def _batches(tokenizer, texts: Sequence[str], batch_size: int, max_length: int | None) -> tuple[list[list[int]], list[dict]]:
    lengths = [len(x) for x in tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]]
    groups = length_buckets(lengths, batch_size)  # length-sorted: little padding
    kw = {"truncation": True, "max_length": max_length, "padding": True, "return_tensors": "pt"}
    return groups, [dict(tokenizer([texts[i] for i in g], **kw)) for g in groups]


def predict_logits(model: Callable, tokenizer, texts: Sequence[str], *, batch_size: int = 64,
                   max_length: int | None = None) -> torch.Tensor:
    """``(N, C)`` logits of ``model`` (a PyTorch model or an ember artifact) on ``texts``, in input order."""
    groups, batches = _batches(tokenizer, texts, batch_size, max_length)
    out: torch.Tensor | None = None
    was_training = getattr(model, "training", False)
    if isinstance(model, torch.nn.Module):
        model.eval()
    try:
        with torch.inference_mode():
            for g, b in zip(groups, batches, strict=True):
                logits = model(**b).logits.float().cpu()  # (B, C)
                if out is None:
                    out = torch.empty(len(texts), logits.shape[-1])
                out[torch.tensor(g)] = logits
    finally:
        if isinstance(model, torch.nn.Module):
            model.train(was_training)
    return out if out is not None else torch.empty(0, 0)


def accuracy(model: Callable, tokenizer, texts: Sequence[str], labels: Sequence[int], *, batch_size: int = 64,
             max_length: int | None = None) -> float:
    """Fraction of ``texts`` whose argmax class is the label.

    Example:
        >>> accuracy(student, tok, test.texts, test_ids)  # doctest: +SKIP
        0.9171
    """
    preds = predict_logits(model, tokenizer, texts, batch_size=batch_size, max_length=max_length).argmax(-1)
    return float((preds == torch.tensor(list(labels))).float().mean()) if len(labels) else 0.0


def compare_with_teacher(model: Callable, teacher: Callable, tokenizer, texts: Sequence[str],
                         labels: Sequence[int] | None = None, *, batch_size: int = 64,
                         max_length: int | None = None) -> TeacherComparison:
    """Accuracy of ``model`` and ``teacher`` on ``texts`` and their agreement (:func:`ember.fidelity.compare`).

    Args:
        model: the compressed model (PyTorch or an ember artifact).
        teacher: the teacher.
        tokenizer: the tokenizer both take.
        texts: evaluation texts (the user's test data).
        labels: class ids (``None``: agreement only).

    Example:
        >>> compare_with_teacher(student, teacher, tok, test.texts, test_ids).fidelity.label_agreement  # doctest: +SKIP
        0.981
    """
    ref = predict_logits(teacher, tokenizer, texts, batch_size=batch_size, max_length=max_length)
    got = predict_logits(model, tokenizer, texts, batch_size=batch_size, max_length=max_length)
    mask = torch.ones(len(texts), 1)
    fidelity = compare([{"logits": ref}], [{"logits": got}], [mask])
    acc = teacher_acc = None
    if labels is not None:
        y = torch.tensor(list(labels))
        acc = float((got.argmax(-1) == y).float().mean())
        teacher_acc = float((ref.argmax(-1) == y).float().mean())
    return TeacherComparison(acc, teacher_acc, fidelity)
