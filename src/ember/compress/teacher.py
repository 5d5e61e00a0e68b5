"""Teacher outputs computed once and kept in ember's store: the producer, and the store that holds them.

The teacher's logits (and, when asked, its hidden states at chosen layers) are written through the one fill
loop (:func:`ember.store.fill.fill`), keyed by the content hash of each example's token ids and fingerprinted
by the teacher's weights, config, tokenizer, max length, layers kept and dtype; the split record (keys, labels,
lengths) is written last. Each entry also keeps the token ids, so a distillation epoch reads everything it
needs from the store: it neither tokenizes nor runs the teacher. A store made by another teacher is refused
(:class:`~ember.errors.StoreMismatchError`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from ember.compress.config import TeacherConfig
from ember.compress.labels import teacher_label_ids
from ember.compress.outputs import COLUMN, META, TeacherOutputs
from ember.compress.sources import LiveTeacher, StoredTeacher
from ember.data.loaders import Examples
from ember.data.texts import check_texts
from ember.models.inputs import tokenize
from ember.store.activations import ActivationStore
from ember.store.fill import Column, FillReport, SplitLabels, fill_split
from ember.store.fingerprint import Fingerprint
from ember.store.handle import StoreHandle
from ember.store.keys import KeyScheme


class Teacher:
    """A teacher and the store of its outputs: fill once, distil many times from the store.

    Args:
        model: the fine-tuned teacher (a sequence classifier).
        tokenizer: its tokenizer.
        store: the store's folder (created when new), an open :class:`ActivationStore`, or ``None`` (memory).
        config: what is stored (hidden states, dtype, max length, backend).
        readonly: open an existing store for reading only.

    Example:
        >>> teacher = Teacher(model, tok, "teacher-store/")                  # doctest: +SKIP
        >>> teacher.fill(train, split="train")                               # doctest: +SKIP
        >>> distill(student, teacher.source("train"), DistillConfig())      # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, tokenizer, store: str | os.PathLike | ActivationStore | None = None,
                 config: TeacherConfig | None = None, *, readonly: bool = False) -> None:
        self.outputs = TeacherOutputs(model, tokenizer, config)
        self.config = self.outputs.config
        self.handle = _open_handle(store, self.outputs.fingerprint, self.config.backend, readonly)

    @property
    def store(self) -> ActivationStore:
        """The store as opened now (read-only unless something is being written)."""
        return self.handle.store

    @property
    def fingerprint(self) -> Fingerprint:
        return self.outputs.fingerprint

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of ``texts``, truncated as the store keys them."""
        return tokenize(self.outputs.tokenizer, list(texts), self.outputs.max_length)

    def fill(self, data: Examples | Sequence[str], labels: Sequence[int | str] | None = None, *, split: str = "train",
             batch_size: int = 64, progress: bool = True) -> FillReport:
        """Compute the teacher's outputs for every example not stored yet, then record the split.

        Args:
            data: texts, or :class:`~ember.data.Examples` (whose labels are used when ``labels`` is None).
            labels: class ids or names the teacher's head knows (refused otherwise: :class:`~ember.errors.DataError`).
            split: the name the examples' keys, labels and lengths are recorded under.
            batch_size: examples per teacher forward and per committed transaction.

        Returns:
            the fill's :class:`~ember.store.fill.FillReport` (``computed`` is 0 on a second run).
        """
        texts = data.texts if isinstance(data, Examples) else check_texts(data)
        if labels is None and isinstance(data, Examples):
            labels = data.labels
        check_texts(texts)
        label_ids = None if labels is None else teacher_label_ids(labels, self.outputs.facts, count=len(texts))
        self.store.find_split(split)  # refuses a bad split name before any work
        self.outputs.verify_weights()
        self._record_facts()
        ids = self.tokenize(texts)
        column = Column(COLUMN, self.handle, self.outputs, ids, KeyScheme.content().keys(texts, ids),
                        description="storing teacher outputs")
        labels_record = None if label_ids is None else SplitLabels(label_ids, None)
        reports = fill_split([column], self.handle, split, labels_record, lengths=True, why="this teacher fill",
                             batch_size=batch_size, progress=progress)
        return reports[COLUMN]

    def _record_facts(self) -> None:
        """What a student must match (vocabulary, widths, classes, padding id), written once beside the fingerprint."""
        if self.store.kv.get_meta(META) is not None:
            return
        with self.handle.writing("recording the teacher's facts") as store:
            store.kv.set_meta(META, self.outputs.facts.to_json())

    def source(self, split: str = "train"):
        """The stored outputs of ``split``, for :func:`~ember.compress.distill` (the teacher never runs)."""

        return StoredTeacher(self.handle, split)

    def live(self, data: Examples | Sequence[str], labels: Sequence[int | str] | None = None):
        """The same batches as :meth:`source`, computed by running the teacher at every step (no store)."""

        texts = data.texts if isinstance(data, Examples) else check_texts(data)
        if labels is None and isinstance(data, Examples):
            labels = data.labels
        label_ids = None if labels is None else teacher_label_ids(labels, self.outputs.facts, count=len(texts))
        return LiveTeacher(self.outputs, self.tokenize(texts), label_ids)

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> Teacher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _open_handle(store, fingerprint: Fingerprint, backend: str, readonly: bool) -> StoreHandle:
    """The handle of the teacher's store: a path (or None, memory) opened here, or a store opened by the caller."""
    if not isinstance(store, ActivationStore):
        return StoreHandle(None if store is None else Path(store), fingerprint,
                           backend="memory" if store is None else backend,  # type: ignore[arg-type]
                           readonly=readonly, what="the teacher store")
    return StoreHandle.wrap(store, what="the teacher store", expect=fingerprint, refusal=(
        "the store at {path} holds the outputs of another teacher or setting:\n  {lines}\n"
        "Pass its folder with the teacher that made it, or a new folder for this teacher."))
