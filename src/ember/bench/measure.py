"""What the harness measures on one variant: fidelity outputs, accuracy, batch-1 latency, batched throughput.

Each function runs the variant on inputs tokenized beforehand (:class:`~ember.bench.inputs.BenchInputs`) and
advances a progress task once per model call; none catches errors (the harness turns them into failed rows).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from ember.bench.bars import VariantTask
from ember.bench.inputs import BenchInputs
from ember.bench.timing import quantile
from ember.errors import EmberError
from ember.fidelity import comparable


class BenchError(EmberError, ValueError):
    """The benchmark cannot run as asked (no texts, no variants, labels that do not fit)."""


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Unweighted mean of per-class F1 over the classes present in either sequence.

    Example:
        >>> round(macro_f1([0, 0, 1, 1], [0, 1, 1, 1]), 4)
        0.7333
    """
    classes = sorted(set(y_true) | set(y_pred))
    f1s = []
    for c in classes:
        tp = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == c and p == c)
        fp = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t != c and p == c)
        fn = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == c and p != c)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return sum(f1s) / len(f1s) if f1s else 0.0


def percentiles(seconds: Sequence[float]) -> dict[str, float]:
    """``p50``/``p90``/``p99``/``mean`` in milliseconds.

    Example:
        >>> percentiles([0.001, 0.002, 0.003])["p50"]
        2.0
    """
    ms = [1000.0 * s for s in seconds]
    return {"p50": quantile(ms, 0.5), "p90": quantile(ms, 0.9), "p99": quantile(ms, 0.99), "mean": sum(ms) / len(ms)}


def fidelity_outputs(model: Callable, inputs: BenchInputs, task: VariantTask) -> list:
    """The variant's outputs on the fidelity batches (checked comparable: logits or hidden states)."""
    outs = []
    with torch.inference_mode():
        for b in inputs.fidelity:
            outs.append(model(**b))
            task.advance()
    comparable(outs[0], inputs.fidelity_masks[0])  # TypeError now if the output has no logits/hidden states
    return outs


def accuracy(name: str, model: Callable, inputs: BenchInputs, labels: Sequence[int],
             task: VariantTask) -> tuple[float | None, float | None]:
    """Accuracy and macro-F1 over every text (length-bucketed batches); ``(None, None)`` for a model without a head."""
    preds: list[int | None] = [None] * len(labels)
    with torch.inference_mode():
        for group, b in zip(inputs.eval_groups, inputs.eval, strict=True):
            _, logits = comparable(model(**b), b["attention_mask"])  # logits (B, C) or None
            task.advance()
            if logits is None:
                return None, None  # an encoder without a head: fidelity only
            n_classes = logits.shape[-1]
            if max(labels) >= n_classes:
                raise BenchError(
                    f"the labels go up to {max(labels)} but {name!r} has a head with {n_classes} outputs; "
                    "use a model trained on these labels, or map the labels to its classes"
                )
            for i, p in zip(group, logits.argmax(-1).tolist(), strict=True):
                preds[i] = p
    y_pred = [int(p) for p in preds]  # type: ignore[arg-type]
    acc = sum(int(p == t) for p, t in zip(y_pred, labels, strict=True)) / len(labels)
    return acc, macro_f1(labels, y_pred)


def warm_latency(model: Callable, inputs: BenchInputs, calls: int, task: VariantTask) -> None:
    """Untimed batch-1 calls before the latency block."""
    with torch.inference_mode():
        for k in range(calls):
            model(**inputs.latency[k % len(inputs.latency)])
            task.advance()


def warm_batches(model: Callable, inputs: BenchInputs, task: VariantTask) -> None:
    """Two untimed batches before the throughput passes: the batch-size code paths (allocator, kernel choice)."""
    with torch.inference_mode():
        for b in inputs.bucketed[:2]:
            model(**b)
            task.advance()


def latency_block(model: Callable, inputs: BenchInputs, task: VariantTask, part: slice = slice(None),
                  rewarm: int = 0) -> list[float]:
    """Seconds of each batch-1 call over the latency inputs (``part`` of them), one after another; ``rewarm``
    untimed calls on the first of them before."""
    calls = inputs.latency[part]
    times = []
    with torch.inference_mode():
        for k in range(rewarm if calls else 0):
            model(**calls[k % len(calls)])
            task.advance()
        for x in calls:
            t0 = time.perf_counter()
            model(**x)
            times.append(time.perf_counter() - t0)
            task.advance()
    return times


def batches_seconds(model: Callable, batches: list[dict], task: VariantTask) -> float:
    """Wall seconds of one pass over ``batches``."""
    with torch.inference_mode():
        t0 = time.perf_counter()
        for b in batches:
            model(**b)
            task.advance()
        return time.perf_counter() - t0


def throughput_pass(model: Callable, batches: list[dict], n_examples: int, task: VariantTask) -> float:
    """Examples per second of one pass over ``batches``."""
    return n_examples / batches_seconds(model, batches, task)
