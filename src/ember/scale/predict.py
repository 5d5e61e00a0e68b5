"""Batch inference: score a dataset with an optimised artifact or a plain model, here or on Ray, same bytes.

The driver sorts the texts by length and cuts the batches an artifact's ``encode`` would cut; an executor computes
them (this process, or :class:`~ember.scale.RayExecutor` actors that each load the artifact once) and the outputs
come back in input order. Same batches, same code on each: the outputs are bit-identical wherever they ran.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ember.batching import length_buckets
from ember.data.loaders import Examples
from ember.data.texts import check_texts
from ember.errors import DataError
from ember.progress import progress_bar
from ember.scale.scorers import ArtifactScorer, Kind, ModelScorer, Task
from ember.store.fill import Executor, LocalExecutor

Scorer = ArtifactScorer | ModelScorer


@dataclass
class Predictions:
    """Per-row outputs of :func:`predict`, in input order.

    Attributes:
        ids: the input's ids (row numbers, unless ids were given).
        texts: the input texts.
        labels: the input's labels, if it had any.
        outputs: ``(N, D)`` float32 embeddings, or ``(N, C)`` logits.
        kind: ``"embedding"`` or ``"logits"``.
        label_names: class names of the logits' columns (``None``: class ids).
        seconds: wall time of the scoring.
    """

    ids: list
    texts: list[str]
    labels: list | None
    outputs: torch.Tensor
    kind: Kind
    label_names: list[str] | None = None
    seconds: float = 0.0

    @property
    def predicted(self) -> list | None:
        """The predicted class per row (its name where the model names its classes), for logits; else ``None``."""
        if self.kind != "logits":
            return None
        ids = self.outputs.argmax(-1).tolist()
        return ids if self.label_names is None else [self.label_names[i] for i in ids]

    def columns(self) -> dict[str, list]:
        """Output columns: ``id``, ``text``, ``label`` (when given), then ``embedding`` or ``logits`` + ``prediction``."""
        cols: dict[str, list] = {"id": list(self.ids), "text": list(self.texts)}
        if self.labels is not None:
            cols["label"] = list(self.labels)
        cols[self.kind] = self.outputs.tolist()
        if self.kind == "logits":
            cols["prediction"] = self.predicted  # type: ignore[assignment]
        return cols

    def write(self, path: str | Path) -> Path:
        """Write the rows to ``path``: ``.parquet`` (pyarrow; vectors as fixed-size float32 lists) or ``.jsonl``."""
        path = Path(path)
        writer = WRITERS.get(path.suffix.lower())
        if writer is None:
            raise DataError(f"cannot write predictions to {path}: the file must end in one of {', '.join(WRITERS)}")
        path.parent.mkdir(parents=True, exist_ok=True)
        writer(self, path)
        return path

    def summary(self) -> dict:
        """What a command prints as its JSON result line."""
        n = len(self.texts)
        return {"examples": n, "kind": self.kind, "dim": int(self.outputs.shape[-1]) if n else 0,
                "seconds": self.seconds, "examples_per_s": n / self.seconds if self.seconds else 0.0}


def _write_parquet(p: Predictions, path: Path) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise DataError(f"writing Parquet needs pyarrow ({exc}): pip install pyarrow (or \"ember[ray]\"), or write "
                        ".jsonl instead") from exc
    cols = p.columns()
    arrays = {k: pa.array(v) for k, v in cols.items() if k != p.kind}
    flat = pa.array(p.outputs.contiguous().numpy().reshape(-1), pa.float32())
    vectors = pa.FixedSizeListArray.from_arrays(flat, int(p.outputs.shape[-1]) if len(p.texts) else 1)
    names = list(cols)
    pq.write_table(pa.table([vectors if k == p.kind else arrays[k] for k in names], names=names), path)


def _write_jsonl(p: Predictions, path: Path) -> None:
    cols = p.columns()
    with path.open("w", encoding="utf-8") as f:
        for row in zip(*cols.values(), strict=True):
            f.write(json.dumps(dict(zip(cols, row, strict=True)), ensure_ascii=False) + "\n")


WRITERS: dict[str, Callable[[Predictions, Path], None]] = {".parquet": _write_parquet, ".jsonl": _write_jsonl}


def as_scorer(model, *, tokenizer=None, task: Task | None = None, max_length: int | None = None) -> Scorer:
    """The scorer for ``model``: an artifact (loaded, or its saved folder), a plain model (with ``tokenizer``), a
    model folder or hub id, or ``None`` for the packaged all-MiniLM-L6-v2."""
    from ember.optimize import OptimizedModel
    from ember.optimize.artifact import MANIFEST

    if isinstance(model, ArtifactScorer | ModelScorer):
        return model
    if isinstance(model, OptimizedModel):
        return ArtifactScorer(model)
    if isinstance(model, nn.Module):
        if tokenizer is None:
            raise TypeError("scoring a model object needs its tokenizer: predict(model, data, tokenizer=tok)")
        return ModelScorer(model, tokenizer, None if task is None else "logits" if task == "classification" else "embedding", max_length)
    if isinstance(model, str | Path) and (Path(model) / MANIFEST).is_file():
        return ArtifactScorer.load(model)
    if model is None or isinstance(model, str | Path):
        return ModelScorer.load(model, task, max_length)
    raise TypeError(f"model must be an optimised artifact, a model, a folder or hub id, or None; got {type(model).__name__}")


def predict(
    model,
    data: Examples | Sequence[str],
    *,
    tokenizer=None,
    task: Task | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    ids: Sequence | None = None,
    executor: Executor | None = None,
    progress: bool = True,
) -> Predictions:
    """Embeddings or logits of every text, computed in length-sorted batches by ``executor``.

    Args:
        model: an optimised artifact (``ember.optimize.load(dir)``) or its folder, a Hugging Face model (pass
            ``tokenizer``), a model folder or hub id, or ``None`` for the packaged all-MiniLM-L6-v2.
        data: texts, or :class:`~ember.data.Examples` (their labels are carried into the output).
        task: for a plain model, ``"classification"`` (logits) or ``"embedding"`` (mean-pooled); default from
            the model.
        batch_size: texts per batch (an artifact's ``encode`` default is 32).
        max_length: truncation length of a plain model (an artifact keeps its own).
        ids: one id per text for the output (default: row numbers).
        executor: where batches run: this process (default) or ``RayExecutor(...)``.

    Returns:
        :class:`Predictions` in input order; ``.write("out.parquet")`` saves them.

    Example:
        >>> preds = predict(ember.optimize.load("minilm-onnx"), texts, executor=RayExecutor())  # doctest: +SKIP
        >>> preds.write("scores.parquet")                                                     # doctest: +SKIP
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    texts = check_texts(data.texts if isinstance(data, Examples) else data, allow_empty=True)
    labels = data.labels if isinstance(data, Examples) else None
    if ids is not None and len(ids) != len(texts):
        raise DataError(f"{len(texts)} texts but {len(ids)} ids; pass one id per text")
    scorer = as_scorer(model, tokenizer=tokenizer, task=task, max_length=max_length)
    start = time.perf_counter()
    rows = score(scorer, texts, batch_size, executor, progress)
    outputs = torch.stack(rows) if rows else torch.empty(0, 0)  # (N, D)
    return Predictions(list(range(len(texts))) if ids is None else list(ids), texts, labels, outputs, scorer.kind,
                       scorer.label_names, time.perf_counter() - start)


def score(scorer: Scorer, texts: list[str], batch_size: int, executor: Executor | None = None,
          progress: bool = True) -> list[torch.Tensor]:
    """One output vector per text, in input order: length-sorted batches (as ``encode`` cuts them) sent to ``executor``."""
    groups = length_buckets([len(t) for t in texts], batch_size)  # what map_in_buckets(texts, ..., batch_size) cuts
    rows: list[torch.Tensor | None] = [None] * len(texts)
    with progress_bar(len(texts), f"scoring ({scorer.kind})", enabled=progress) as advance:
        for b, entries in (executor or LocalExecutor()).map(scorer, [[texts[i] for i in g] for g in groups]):
            for i, e in zip(groups[b], entries, strict=True):
                rows[i] = e[scorer.kind]
            advance(len(groups[b]))
    return rows  # type: ignore[return-value]
