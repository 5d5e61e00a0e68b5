"""Teacher outputs computed once and kept in ember's store: the producer, and the store that holds them.

The teacher's logits (and, when asked, its hidden states at chosen layers) are written through the one fill
loop (:func:`ember.store.fill.fill`), keyed by the content hash of each example's token ids and fingerprinted
by the teacher's weights, config, tokenizer, max length, layers kept and dtype; the split record (keys, labels,
lengths) is written last. Each entry also keeps the token ids, so a distillation epoch reads everything it
needs from the store: it neither tokenizes nor runs the teacher. A store made by another teacher is refused
(:class:`~ember.errors.StoreMismatchError`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ember.compress.config import TeacherConfig
from ember.compress.errors import CompressConfigError, StudentMismatchError
from ember.compress.families import hidden_size, vocab_size
from ember.compress.labels import teacher_label_ids
from ember.data.loaders import Examples
from ember.data.texts import check_texts
from ember.errors import StoreMismatchError
from ember.models.checks import check_module
from ember.models.families import find_parts
from ember.models.inputs import pad_ids, padding_id, tokenize
from ember.models.load import resolve_max_length
from ember.models.split import frozen_eval
from ember.store.activations import ActivationStore, Entry
from ember.store.codec import torch_dtype
from ember.store.fill import Column, FillReport, SplitLabels, fill_split
from ember.store.fingerprint import Fingerprint, weights_hash
from ember.store.handle import StoreHandle
from ember.store.keys import KeyScheme

COLUMN = "teacher"  # the split record's key column
META = "teacher"  # meta value: what a student must match (vocabulary, widths, labels) and the padding id


@dataclass(frozen=True)
class TeacherFacts:
    """What a student must agree with, recorded in the store beside the fingerprint.

    Attributes:
        vocab_size: rows of the teacher's embedding table (the ids stored are the teacher tokenizer's).
        hidden_size: width of the teacher's hidden states.
        num_layers: the teacher's depth.
        num_labels: outputs of the teacher's head.
        hidden_layers: hidden-state indices stored.
        pad_token_id: the id batches are padded with.
        label_names: the head's class names, when it has them.
    """

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_labels: int
    hidden_layers: tuple[int, ...]
    pad_token_id: int
    label_names: tuple[str, ...] | None = None

    def to_json(self) -> str:
        d = self.__dict__ | {"hidden_layers": list(self.hidden_layers),
                             "label_names": None if self.label_names is None else list(self.label_names)}
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TeacherFacts:
        d = json.loads(text)
        names = d.get("label_names")
        return cls(**{**d, "hidden_layers": tuple(d["hidden_layers"]), "label_names": None if names is None else tuple(names)})


class TeacherOutputs:
    """The producer of teacher entries: ``fingerprint`` and ``entries(ids)`` for the store's fill.

    Args:
        model: the teacher, a supported sequence classifier (it must have a head: its logits are the targets).
        tokenizer: its tokenizer (part of the fingerprint).
        config: hidden states to keep, storage dtype, max length.

    Example:
        >>> producer = TeacherOutputs(teacher, tok, TeacherConfig(hidden_layers=(6,)))  # doctest: +SKIP
        >>> producer.entries([[101, 7592, 102]])[0]["logits"].shape  # doctest: +SKIP
        torch.Size([151])
    """

    def __init__(self, model: nn.Module, tokenizer, config: TeacherConfig | None = None) -> None:
        check_module(model, "teacher")
        config = TeacherConfig() if config is None else config
        if not isinstance(config, TeacherConfig):
            raise TypeError(f"config must be a TeacherConfig, got {type(config).__name__}")
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.parts = find_parts(model)
        num_labels = getattr(model.config, "num_labels", None)
        if self.parts.model is self.parts.base or not num_labels:
            raise StudentMismatchError(
                f"the teacher {type(model).__name__} has no classification head, so it has no logits to teach with; load "
                "it with a head (ember.load_model(path, 'classification')) trained on the task"
            )
        outside = [i for i in config.hidden_layers if i > self.parts.num_layers]
        if outside:
            raise CompressConfigError(
                f"hidden_layers {outside} are outside the teacher, whose hidden states are indexed 0..{self.parts.num_layers} "
                f"(0 = embeddings, {self.parts.num_layers} = its last layer)"
            )
        self.max_length = resolve_max_length(tokenizer, model, config.max_length)
        self.dtype = torch_dtype(config.dtype)
        self.facts = TeacherFacts(
            vocab_size=vocab_size(model), hidden_size=int(hidden_size(model) or 0), num_layers=self.parts.num_layers,
            num_labels=int(num_labels), hidden_layers=config.hidden_layers, pad_token_id=padding_id(tokenizer),
            label_names=_label_names(model),
        )
        self.fingerprint = self._fingerprint()

    def _fingerprint(self) -> Fingerprint:
        """Everything the stored values depend on: the whole teacher (its head too), its config, the tokenizer,
        the max length, the dtype, the hidden states kept and the number of classes."""
        return Fingerprint.of(
            "teacher", architecture=f"{type(self.model).__name__}/{self.parts.family}", dtype=self.config.dtype,
            frozen=[self.model], model_config=self.model.config, tokenizer=self.tokenizer, max_length=self.max_length,
            keys=KeyScheme.content().name,
            settings=[("hidden_layers", ",".join(map(str, self.config.hidden_layers)) or "none"),
                      ("labels", str(self.facts.num_labels))],
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def entries(self, ids: list[list[int]]) -> list[Entry]:
        """One entry per example: its token ids, the teacher's logits and the hidden states kept.

        Args:
            ids: unpadded token-id lists (already truncated).

        Returns:
            ``{"input_ids": (L,) int32, "logits": (C,), "hidden.<i>": (L, H) ...}`` per example, on the CPU.
        """
        input_ids, mask = pad_ids(ids, self.tokenizer, self.device)  # (B, T)
        want_hidden = bool(self.config.hidden_layers)
        with frozen_eval(self.model), torch.no_grad():
            out = self.model(input_ids=input_ids, attention_mask=mask, output_hidden_states=want_hidden)
        logits = out.logits.detach().to("cpu", self.dtype)  # (B, C)
        entries = []
        for i, row in enumerate(ids):
            entry = {"input_ids": torch.tensor(row, dtype=torch.int32), "logits": logits[i].clone()}
            for layer in self.config.hidden_layers:
                entry[f"hidden.{layer}"] = out.hidden_states[layer][i, : len(row)].detach().to("cpu", self.dtype)  # (L, H)
            entries.append(entry)
        return entries

    def verify_weights(self) -> None:
        """Refuse to go on when the teacher changed since its fingerprint was taken (stored outputs would be stale)."""
        if weights_hash([self.model]) != self.fingerprint.weights:
            raise CompressConfigError(
                "the teacher's weights changed since its outputs were fingerprinted (trained, or another checkpoint "
                "loaded?); create a new Teacher (and store) for the new weights"
            )


def _label_names(model: nn.Module) -> tuple[str, ...] | None:
    id2label = getattr(model.config, "id2label", None) or {}
    names = [str(id2label[i]) for i in sorted(id2label, key=int)]
    return None if all(n == f"LABEL_{i}" for i, n in enumerate(names)) else tuple(names)


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
        from ember.compress.sources import StoredTeacher

        return StoredTeacher(self.handle, split)

    def live(self, data: Examples | Sequence[str], labels: Sequence[int | str] | None = None):
        """The same batches as :meth:`source`, computed by running the teacher at every step (no store)."""
        from ember.compress.sources import LiveTeacher

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
    if store.fingerprint != fingerprint:
        differences = store.fingerprint.diff(fingerprint) if store.fingerprint else ["it has no fingerprint"]
        lines = "\n  ".join(differences)
        raise StoreMismatchError(
            f"the store at {store.path} holds the outputs of another teacher or setting:\n  {lines}\n"
            "Pass its folder with the teacher that made it, or a new folder for this teacher.",
            differences,
        )
    return StoreHandle.wrap(store, what="the teacher store")
