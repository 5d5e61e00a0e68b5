"""Distillation losses: soft targets (Hinton et al.), DistilBERT's hidden-state cosine, logits MSE."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(p_teacher^T || p_student^T)``, averaged over the batch.

    The ``T^2`` keeps the gradient's scale independent of ``T`` (Hinton et al. 2015).

    Example:
        >>> x = torch.randn(4, 3)
        >>> float(soft_target_loss(x, x, 2.0)) == 0.0
        True
    """
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)  # (B, C)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)  # (B, C)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * temperature**2


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    alpha: float,
    temperature: float,
    mse_weight: float = 0.0,
) -> torch.Tensor:
    """``alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(p_teacher^T || p_student^T) + mse_weight * MSE``.

    Args:
        student_logits, teacher_logits: ``(B, C)``.
        labels: ``(B,)`` class ids; ``None`` (unlabelled data) drops the cross-entropy term and gives the KL
            term all the weight.
        alpha: weight of the hard-label term, in ``[0, 1]``.
        temperature: softmax temperature of the soft targets.
        mse_weight: weight of the mean squared error between the logits.

    Example:
        >>> s, t = torch.randn(4, 3), torch.randn(4, 3)
        >>> distillation_loss(s, t, torch.tensor([0, 1, 2, 0]), alpha=0.5, temperature=2.0).shape
        torch.Size([])
    """
    teacher_logits = teacher_logits.detach()
    if labels is None:
        loss = soft_target_loss(student_logits, teacher_logits, temperature)
    else:
        loss = alpha * F.cross_entropy(student_logits, labels)
        if alpha < 1.0:
            loss = loss + (1.0 - alpha) * soft_target_loss(student_logits, teacher_logits, temperature)
    if mse_weight:
        loss = loss + mse_weight * F.mse_loss(student_logits, teacher_logits)
    return loss


def hidden_cosine_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``1 - cos(h_student, h_teacher)`` over the unmasked tokens (DistilBERT's L_cos).

    Args:
        student, teacher: ``(B, T, H)`` hidden states (the student's projected to the teacher's width).
        mask: ``(B, T)`` attention mask.

    Example:
        >>> h = torch.randn(2, 3, 4)
        >>> float(hidden_cosine_loss(h, h, torch.ones(2, 3))) < 1e-6
        True
    """
    cos = F.cosine_similarity(student, teacher.detach(), dim=-1)  # (B, T)
    m = mask.to(cos.dtype)
    return ((1.0 - cos) * m).sum() / m.sum().clamp(min=1.0)
