"""Typed configs for compression: one small frozen dataclass per technique, validated on creation, plus presets.

Each config round-trips to a plain dict (``to_dict``), so a compressed model's manifest records what made it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field
from typing import Literal

from ember.compress.errors import CompressConfigError
from ember.errors import Fix
from ember.store.base import Backend, check_backend
from ember.store.codec import DType, torch_dtype


def _int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def check_fraction(name: str, value: object, *, what: str = "a fraction") -> float:
    """``value`` as a float in ``[0, 1)``, refused otherwise with the accepted range.

    Example:
        >>> check_fraction("heads", 0.5)
        0.5
    """
    if not _real(value) or not 0.0 <= float(value) < 1.0:  # type: ignore[arg-type]
        arg = Fix(f"{name}=", name=name)  # the argument, then its value: a command line words it as its flag
        raise CompressConfigError(
            f"{arg}{value!r} is outside [0, 1): it is {what} of the weights to remove, and removing all of them (1.0) "
            f"leaves nothing to run; pass e.g. {arg}0.5", fixes=[arg]
        )
    return float(value)  # type: ignore[arg-type]


def _positive(name: str, value: object, *, integer: bool = False) -> None:
    ok = _int(value) if integer else _real(value)
    if not ok or value <= 0:  # type: ignore[operator]
        kind = "an int" if integer else "a number"
        raise CompressConfigError(f"{name}={value!r} must be {kind} > 0")


@dataclass(frozen=True)
class TeacherConfig:
    """What the teacher's store keeps, and how.

    Args:
        hidden_layers: hidden states to keep besides the logits, as indices into the teacher's
            ``hidden_states`` (0 = the embeddings' output, ``i`` = the output of layer ``i - 1``, ``N`` = the
            last layer's); empty keeps logits only.
        dtype: storage dtype of logits and hidden states.
        max_length: truncation length (default: the tokenizer's, capped by the model's positions).
        backend: store backend (``lmdb``, ``leveldb`` or ``memory``).

    Example:
        >>> TeacherConfig(hidden_layers=(6,)).hidden_layers
        (6,)
    """

    hidden_layers: tuple[int, ...] = ()
    dtype: DType = "float32"
    max_length: int | None = None
    backend: Backend = "lmdb"

    def __post_init__(self) -> None:
        layers = tuple(self.hidden_layers)
        if any(not _int(i) or i < 0 for i in layers) or len(set(layers)) != len(layers):
            raise CompressConfigError(
                f"hidden_layers={list(layers)!r} must be distinct layer indices >= 0 (0 = embeddings, N = last layer)"
            )
        object.__setattr__(self, "hidden_layers", tuple(sorted(int(i) for i in layers)))
        torch_dtype(self.dtype)
        check_backend(self.backend)
        if self.max_length is not None and (not _int(self.max_length) or self.max_length < 2):
            raise CompressConfigError(f"max_length must be an int >= 2 (tokens), got {self.max_length!r}")

    def to_dict(self) -> dict:
        return {**asdict(self), "hidden_layers": list(self.hidden_layers)}


@dataclass(frozen=True)
class DistillConfig:
    """How a student learns from stored teacher outputs.

    The loss is ``alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(p_teacher^T || p_student^T)``, plus
    ``cosine_weight * (1 - cos(h_student, h_teacher))`` over the tokens of the matched hidden states
    (DistilBERT's L_cos) and ``mse_weight * MSE(logits)``.

    Args:
        alpha: weight of the hard-label cross-entropy, in ``[0, 1]`` (1 = plain fine-tuning).
        temperature: softmax temperature ``T > 0`` of the KL term.
        epochs, batch_size, lr, weight_decay: AdamW training settings.
        warmup: fraction of the steps with a linearly rising learning rate (then linear decay to 0).
        cosine_weight: weight of the hidden-state cosine loss (needs teacher hidden states in the store).
        mse_weight: weight of the logits' mean squared error.
        hidden_map: ``(student_index, teacher_index)`` pairs of ``hidden_states`` indices matched by the cosine
            loss; empty matches the last hidden states of both.
        project_hidden: learn a linear projection from the student's hidden width to the teacher's when they
            differ (otherwise a student of another width is refused for the cosine loss).
        seed: batch order and dropout seed.

    Example:
        >>> DistillConfig(alpha=0.5, temperature=2.0).alpha
        0.5
    """

    alpha: float = 0.5
    temperature: float = 2.0
    epochs: int = 3
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup: float = 0.06
    cosine_weight: float = 0.0
    mse_weight: float = 0.0
    hidden_map: tuple[tuple[int, int], ...] = ()
    project_hidden: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if not _real(self.alpha) or not 0.0 <= self.alpha <= 1.0:
            raise CompressConfigError(f"alpha={self.alpha!r} must lie in [0, 1] (1 = labels only, 0 = teacher only)")
        _positive("temperature", self.temperature)
        _positive("epochs", self.epochs, integer=True)
        _positive("batch_size", self.batch_size, integer=True)
        _positive("lr", self.lr)
        if not _real(self.warmup) or not 0.0 <= self.warmup < 1.0:
            raise CompressConfigError(f"warmup={self.warmup!r} must lie in [0, 1) (a fraction of the training steps)")
        for name in ("weight_decay", "cosine_weight", "mse_weight"):
            if not _real(getattr(self, name)) or getattr(self, name) < 0:
                raise CompressConfigError(f"{name}={getattr(self, name)!r} must be a number >= 0")
        pairs = tuple(tuple(p) for p in self.hidden_map)
        if any(len(p) != 2 or not all(_int(i) and i >= 0 for i in p) for p in pairs):
            raise CompressConfigError(f"hidden_map={self.hidden_map!r} must be (student_index, teacher_index) pairs of ints >= 0")
        object.__setattr__(self, "hidden_map", pairs)

    def to_dict(self) -> dict:
        return {**asdict(self), "hidden_map": [list(p) for p in self.hidden_map]}


def book() -> DistillConfig:
    """What Optuna chose in "NLP with Transformers", chapter 8 (alpha 0.125, T 7, 10 epochs, lr 2e-5 there)."""
    return DistillConfig(alpha=0.125, temperature=7.0, epochs=10)


def distilbert() -> DistillConfig:
    """DistilBERT's mix for fine-tuning: soft targets, hard labels and the last hidden states' cosine."""
    return DistillConfig(alpha=0.3, temperature=2.0, cosine_weight=1.0)


def plain() -> DistillConfig:
    """Plain fine-tuning on the labels (alpha = 1): the baseline a distilled student is measured against."""
    return DistillConfig(alpha=1.0, temperature=1.0)


DISTILL_PRESETS = {"default": DistillConfig, "book": book, "distilbert": distilbert, "plain": plain}


@dataclass(frozen=True)
class StructuredPruneConfig:
    """Remove whole attention heads and feed-forward neurons, so the matrices really shrink.

    Args:
        heads: fraction of each layer's heads to remove, in ``[0, 1)`` (rounded; at least one head stays).
        ffn: fraction of each layer's feed-forward neurons to remove, in ``[0, 1)``.
        importance: ``"taylor"`` ranks by |gradient x weight| summed over a few batches of the data (the
            first-order estimate of the loss change, as in Michel et al. 2019 and CoFi), ``"magnitude"`` by the
            L2 norm of each head's/neuron's weights (no data needed).
        batches: batches used to estimate Taylor importance.

    Example:
        >>> StructuredPruneConfig(heads=0.5, ffn=0.5).importance
        'taylor'
    """

    heads: float = 0.5
    ffn: float = 0.5
    importance: Literal["taylor", "magnitude"] = "taylor"
    batches: int = 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", check_fraction("heads", self.heads, what="the fraction of attention heads"))
        object.__setattr__(self, "ffn", check_fraction("ffn", self.ffn, what="the fraction of feed-forward neurons"))
        if self.importance not in ("taylor", "magnitude"):
            raise CompressConfigError(f"importance={self.importance!r} is not one of 'taylor', 'magnitude'")
        _positive("batches", self.batches, integer=True)

    def to_dict(self) -> dict:
        return {"type": "structured", **asdict(self)}


@dataclass(frozen=True)
class MagnitudePruneConfig:
    """Unstructured magnitude pruning on the cubic schedule of Zhu & Gupta (2017), during fine-tuning.

    ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))^3`` for ``t0 <= t <= t0 + n * dt``; the masks (the
    smallest weights of each Linear layer of the encoder) are recomputed every ``every`` steps.

    Args:
        sparsity: final fraction ``s_f`` of zero weights, in ``[0, 1)``.
        initial: starting fraction ``s_i``.
        start: first step ``t0`` at which masks are set.
        steps: steps ``n * dt`` over which sparsity rises (``None``: the first 2/3 of training).
        every: ``dt``, steps between mask updates.
    """

    sparsity: float = 0.9
    initial: float = 0.0
    start: int = 0
    steps: int | None = None
    every: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "sparsity", check_fraction("sparsity", self.sparsity, what="the fraction of weights"))
        object.__setattr__(self, "initial", check_fraction("initial", self.initial, what="the starting fraction of weights"))
        if self.initial > self.sparsity:
            raise CompressConfigError(f"initial={self.initial} is above sparsity={self.sparsity}; the schedule only rises")
        if not _int(self.start) or self.start < 0:
            raise CompressConfigError(f"start={self.start!r} must be a step >= 0")
        if self.steps is not None:
            _positive("steps", self.steps, integer=True)
        _positive("every", self.every, integer=True)

    def to_dict(self) -> dict:
        return {"type": "magnitude", **asdict(self)}


@dataclass(frozen=True)
class MovementPruneConfig(MagnitudePruneConfig):
    """Movement pruning (Sanh et al. 2020): learned importance scores, the top ``1 - s_t`` of them kept
    (straight-through), on the same cubic schedule. The scores train with their own learning rate.

    Args:
        score_lr: learning rate of the importance scores.
    """

    score_lr: float = 1e-2

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("score_lr", self.score_lr)

    def to_dict(self) -> dict:
        return {**super().to_dict(), "type": "movement"}


@dataclass(frozen=True)
class QATConfig:
    """Quantisation-aware training with torchao (``QATConfig(..., step="prepare")``, train, ``step="convert"``).

    Args:
        target: the int8 engine the result is served on: ``"onnx"`` (ONNX Runtime dynamic int8) or
            ``"openvino"`` (OpenVINO int8 through NNCF) fake-quantise activations per tensor and weights per
            output channel, as those engines compute; ``"torchao"`` uses torchao's own int8 scheme (per-token
            activations) and is served by torchao in PyTorch.
        distill: the training run under fake quantisation (usually a short one at a low learning rate).
        skip: substrings of module names kept in float. None by default: ember's int8 presets quantise every
            Linear, the pooler and classifier included, so training fake-quantises them all.

    Example:
        >>> QATConfig().target
        'onnx'
    """

    target: Literal["onnx", "openvino", "torchao"] = "onnx"
    distill: DistillConfig = field(default_factory=lambda: DistillConfig(epochs=1, lr=2e-5, warmup=0.0))
    skip: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.target not in ("onnx", "openvino", "torchao"):
            raise CompressConfigError(f"target={self.target!r} is not one of 'onnx', 'openvino', 'torchao'")
        if not isinstance(self.distill, DistillConfig):
            raise CompressConfigError(f"distill must be a DistillConfig, got {type(self.distill).__name__}")
        object.__setattr__(self, "skip", tuple(self.skip))

    def to_dict(self) -> dict:
        return {"target": self.target, "distill": self.distill.to_dict(), "skip": list(self.skip)}


@dataclass(frozen=True)
class SearchSpace:
    """Ranges Optuna searches for distillation (each a ``(low, high)`` pair; the learning rate on a log scale).

    ``layers`` (optional) lists student architectures to choose from, as teacher layer indices; the search then
    builds each trial's student with :func:`~ember.compress.select_layers` (and a latency objective can trade
    depth against accuracy).

    Example:
        >>> SearchSpace().temperature
        (1.0, 10.0)
    """

    alpha: tuple[float, float] = (0.0, 1.0)
    temperature: tuple[float, float] = (1.0, 10.0)
    lr: tuple[float, float] = (2e-5, 5e-4)
    epochs: tuple[int, int] = (1, 4)
    layers: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(tuple(int(i) for i in c) for c in self.layers))
        if any(not c for c in self.layers):
            raise CompressConfigError(f"layers={self.layers!r}: each choice is a non-empty list of teacher layer indices")
        for name in ("alpha", "temperature", "lr", "epochs"):
            low, high = getattr(self, name)
            if not (_real(low) and _real(high)) or low > high:
                raise CompressConfigError(f"{name}={getattr(self, name)!r} must be a (low, high) pair with low <= high")
        if self.alpha[0] < 0 or self.alpha[1] > 1:
            raise CompressConfigError(f"alpha={self.alpha!r} must lie within [0, 1]")
        if self.temperature[0] <= 0 or self.lr[0] <= 0 or self.epochs[0] < 1:
            raise CompressConfigError("temperature and lr must be > 0 and epochs >= 1")
