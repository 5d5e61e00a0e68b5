"""A reject class's decision threshold, chosen on validation data and baked into the classifier's bias.

Intent classifiers often have one class meaning "none of the others" (CLINC150's ``oos``). Trained on few such
examples (100 of 15,100 in CLINC150), a model and, more so, a compressed student calls them rarely: the teacher in
BENCHMARKS.md recalls 35% of CLINC150's out-of-scope test queries, its pruned student 16%, while both keep
≥ 94.9% on the 150 intents. The usual remedy (Larson et al. 2019 threshold the classifier's confidence) is a
threshold chosen on held-out data. Here it is one number ``b`` added to the reject class's logit: an example is
rejected when ``logit_reject + b`` beats every other logit. Adding ``b`` to the output layer's bias makes it part
of the model, so every engine ``ember.optimize`` builds from it (ONNX Runtime, OpenVINO, int8) applies it at no
cost, and the fidelity check compares like with like.

Two criteria choose ``b`` on the validation set:

* ``"balanced"`` (default): the mean of in-scope accuracy and reject recall. It does not depend on how many
  reject examples the validation set happens to hold, which rarely matches deployment (CLINC150: 3% in val,
  18% in test; the true share of out-of-scope queries is unknown).
* ``"accuracy"``: plain validation accuracy, right when validation mirrors the deployed mix.

The search is exact (no grid): the objective only changes where ``b`` crosses an example's margin (the best other
logit minus the reject logit), so every interval between consecutive margins is tried once, and the midpoint of the
best interval nearest zero wins (``b = 0`` when nothing beats the model as it is). Written here because no library
ember uses chooses a logit offset for one class (scikit-learn's ``TunedThresholdClassifierCV`` tunes binary
thresholds of its own estimators).

Example:
    >>> import torch
    >>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.5], [3.0, 0.0]])
    >>> choice = choose_reject_bias(logits, torch.tensor([0, 1, 1, 0]), reject_label=1)
    >>> round(choice.bias, 2), choice.after["reject_recall"]
    (1.25, 1.0)

To serve the calibrated model on an engine, choose the offset on the engine's own logits and build again::

    art = optimize(model, preset("openvino-int8"), tokenizer=tok, sample=val_texts)
    calibrate_reject(model, tok, val_texts, val_labels, "oos", served=art)
    art = optimize(model, preset("openvino-int8"), tokenizer=tok, sample=val_texts)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

from ember.errors import ConfigError, DataError, UnsupportedModelError

Criterion = Literal["balanced", "accuracy"]
CRITERIA = ("balanced", "accuracy")


@dataclass(frozen=True)
class RejectCalibration:
    """The offset chosen for the reject class and what it did on the data it was chosen on.

    Attributes:
        reject_label: the class id of the reject class.
        bias: added to that class's logit (and, by :func:`calibrate_reject`, to the output layer's bias).
        criterion: ``"balanced"`` or ``"accuracy"``.
        before, after: ``accuracy``, ``in_scope_accuracy``, ``reject_recall`` and ``reject_precision`` on the
            calibration examples with ``b = 0`` and with the chosen ``b`` (precision ``None`` when nothing is rejected).
        examples, reject_examples: how many calibration examples, and how many of them are the reject class.
    """

    reject_label: int
    bias: float
    criterion: str
    before: dict
    after: dict
    examples: int
    reject_examples: int

    def to_dict(self) -> dict:
        return asdict(self)


def _scores(logits: torch.Tensor, labels: torch.Tensor, reject: int, bias: float) -> dict:
    shifted = logits.clone()
    shifted[:, reject] += bias
    pred = shifted.argmax(-1)
    inside = labels != reject
    said = pred == reject
    return {"accuracy": float((pred == labels).float().mean()),  # None: no example to score (JSON has no NaN)
            "in_scope_accuracy": float((pred[inside] == labels[inside]).float().mean()) if inside.any() else None,
            "reject_recall": float(said[~inside].float().mean()) if (~inside).any() else None,
            "reject_precision": float((labels[said] == reject).float().mean()) if said.any() else None}


def choose_reject_bias(logits: torch.Tensor, labels: Sequence[int] | torch.Tensor, reject_label: int,
                       criterion: Criterion = "balanced") -> RejectCalibration:
    """The offset for the reject class's logit that maximises ``criterion`` on these logits and labels.

    Args:
        logits: ``(N, C)`` validation logits of the model.
        labels: ``N`` gold class ids.
        reject_label: the reject class's id.
        criterion: ``"balanced"`` (mean of in-scope accuracy and reject recall) or ``"accuracy"``.

    Raises:
        ConfigError: an unknown criterion, or a reject label outside the ``C`` classes.
        DataError: shapes that do not match, or labels with no example of the reject class or none of the others.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.5], [3.0, 0.0]])
        >>> choose_reject_bias(logits, [0, 1, 1, 0], reject_label=1).bias
        1.25
    """
    if criterion not in CRITERIA:
        raise ConfigError(f"criterion {criterion!r} is not one of {', '.join(CRITERIA)}")
    logits = torch.as_tensor(logits).float()
    gold = torch.as_tensor(list(labels) if not isinstance(labels, torch.Tensor) else labels).long()
    if logits.ndim != 2 or gold.ndim != 1 or len(gold) != len(logits):
        raise DataError(f"expected (N, C) logits and N labels, got logits {tuple(logits.shape)} and {tuple(gold.shape)} labels")
    n, classes = logits.shape
    if not 0 <= reject_label < classes:
        raise ConfigError(f"reject label {reject_label} is not one of the model's {classes} classes (0..{classes - 1})")
    if classes < 2:
        raise ConfigError("a reject threshold needs at least two classes")
    is_reject = gold == reject_label
    if not is_reject.any() or is_reject.all():
        missing = "the reject class" if not is_reject.any() else "any other class"
        raise DataError(f"the {n} calibration examples have no example of {missing} (label {reject_label}); choose "
                        "the threshold on held-out data that has both (e.g. CLINC150's val + oos_val)")
    others = logits.clone()
    others[:, reject_label] = float("-inf")
    best_other, other_pred = others.max(-1)
    margin = best_other - logits[:, reject_label]  # rejected iff bias > margin
    # Sweep the offsets where a decision flips; every interval between consecutive margins has constant scores.
    edges = torch.unique(margin)
    candidates = torch.cat([edges[:1] - 1.0, (edges[1:] + edges[:-1]) / 2, edges[-1:] + 1.0, torch.zeros(1)])
    rej_sorted = torch.sort(margin[is_reject]).values
    inside_ok = margin[~is_reject & (other_pred == gold)]
    inside_sorted = torch.sort(inside_ok).values
    recall = torch.searchsorted(rej_sorted, candidates, side="left").float() / len(rej_sorted)
    kept = (len(inside_sorted) - torch.searchsorted(inside_sorted, candidates, side="right")).float()
    in_scope = kept / int((~is_reject).sum())
    score = (recall + in_scope) / 2 if criterion == "balanced" else (recall * len(rej_sorted) + kept) / n
    best = score.max()
    ties = torch.nonzero(score >= best - 1e-12).flatten()
    pick = candidates[ties[candidates[ties].abs().argmin()]]
    bias = float(pick)
    return RejectCalibration(reject_label, bias, criterion, _scores(logits, gold, reject_label, 0.0),
                             _scores(logits, gold, reject_label, bias), n, int(is_reject.sum()))


def output_layer(model: nn.Module) -> nn.Linear:
    """The layer producing a sequence classifier's logits: the last ``nn.Linear`` with ``num_labels`` outputs
    (``classifier`` in BERT and DistilBERT, ``classifier.out_proj`` in RoBERTa, XLM-R and ELECTRA).

    Raises:
        UnsupportedModelError: no such layer (not a classifier, or a head ember does not recognise).
    """
    classes = getattr(getattr(model, "config", None), "num_labels", None)
    found = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == classes]
    if not found:
        raise UnsupportedModelError(
            f"{type(model).__name__} has no Linear layer with its {classes} class outputs; calibrate_reject changes a "
            "sequence classifier's output bias. For other models, add RejectCalibration.bias to the reject logit yourself"
        )
    return found[-1]


def add_class_bias(model: nn.Module, label: int, delta: float) -> None:
    """Add ``delta`` to class ``label``'s logit by changing the output layer's bias (created if the layer has none)."""
    layer = output_layer(model)
    if not 0 <= label < layer.out_features:
        raise ConfigError(f"label {label} is not one of the model's {layer.out_features} classes")
    with torch.no_grad():
        if layer.bias is None:
            layer.bias = nn.Parameter(torch.zeros(layer.out_features, dtype=layer.weight.dtype, device=layer.weight.device))
        layer.bias[label] += delta


def _names(model: nn.Module) -> dict[str, int]:
    id2label = getattr(model.config, "id2label", None) or {}
    return {str(name): int(i) for i, name in id2label.items()}


def resolve_label(model: nn.Module, label: int | str) -> int:
    """A class id from an id or a class name in the model's ``config.id2label``."""
    if isinstance(label, int) or (isinstance(label, str) and label.isdigit()):
        return int(label)
    names = _names(model)
    if label not in names:
        known = ", ".join(list(names)[:8])
        raise ConfigError(f"reject label {label!r} is not a class name of this model (config.id2label: {known}"
                          f"{' ...' if len(names) > 8 else ''}); pass its class id or one of those names")
    return names[label]


def class_ids(model: nn.Module, labels: Sequence[int | str]) -> list[int]:
    """``labels`` as the model's class ids (names are looked up in ``config.id2label``).

    Raises:
        DataError: floats, a mix of ids and names (as :func:`ember.data.labels.label_values` checks), a name the model
            does not know, or an id past its outputs.
    """
    from ember.data.labels import label_values

    values = label_values(labels)
    classes = int(model.config.num_labels)
    if any(isinstance(v, str) and not v.isdigit() for v in values):
        names = _names(model)
        unknown = sorted({str(v) for v in values if str(v) not in names})
        if unknown:
            raise DataError(f"labels {unknown[:5]} are not class names of this model ({', '.join(list(names)[:5])} ...); "
                            "label the data with the names (or ids) the model was trained on")
        return [names[str(v)] for v in values]
    ids = [int(v) for v in values]
    if ids and not 0 <= min(ids) <= max(ids) < classes:
        raise DataError(f"label ids must be 0..{classes - 1} for this model's {classes} classes; got {min(ids)}..{max(ids)}")
    return ids


def calibrate_reject(model: nn.Module, tokenizer, texts: Sequence[str], labels: Sequence[int | str], reject_label: int | str, *,
                     criterion: Criterion = "balanced", max_length: int | None = None, batch_size: int = 64,
                     apply: bool = True, served: Callable | None = None) -> RejectCalibration:
    """Choose the reject class's logit offset on held-out labelled texts and (``apply=True``) add it to the model's
    output bias, so the model and every artifact built from it afterwards reject with the chosen threshold.

    An int8 engine moves the reject margin: on CLINC150 the teacher's offset chosen on its fp32 logits cost its
    OpenVINO int8 artifact 2.7 points, the offset chosen on the artifact's own logits none (BENCHMARKS.md). So to
    serve an artifact, pass it as ``served``: the offset is chosen on its logits, added to ``model``, and the
    artifact is to be built again from ``model`` (its logits then move by the offset: the output bias is added after
    the last matmul, in float, in every engine ember builds).

    Args:
        model: a sequence classifier (PyTorch; calibrate before ``ember.optimize``).
        tokenizer: its tokenizer.
        texts, labels: held-out examples with class ids or names; both reject and other examples are needed.
        reject_label: the reject class, as an id or a ``config.label2id`` name (e.g. ``"oos"``).
        criterion: ``"balanced"`` or ``"accuracy"`` (see the module docstring).
        max_length: truncation, as in training.
        batch_size: inference batch size.
        apply: change the model's bias (``False``: only choose and report).
        served: an artifact built from ``model`` (or any callable taking the tokenizer's batch and returning an
            object with ``.logits``) whose logits choose the offset instead of the model's.

    Example:
        >>> choice = calibrate_reject(student, tok, val.texts, val_ids, "oos")  # doctest: +SKIP
        >>> choice.after["reject_recall"], choice.after["in_scope_accuracy"]  # doctest: +SKIP
        (0.71, 0.931)
    """
    from ember.compress.evaluate import predict_logits

    reject = resolve_label(model, reject_label)
    if len(texts) != len(labels):
        raise DataError(f"{len(texts)} texts but {len(labels)} labels; pass one label per text")
    output_layer(model)  # refuse a model without a classifier head before running it
    logits = predict_logits(served if served is not None else model, tokenizer, texts, batch_size=batch_size,
                            max_length=max_length)
    choice = choose_reject_bias(logits, class_ids(model, labels), reject, criterion)
    if apply and choice.bias != 0.0:
        add_class_bias(model, reject, choice.bias)
    return choice
