"""Where a distillation step gets the teacher's targets: from the store (the default) or from the teacher itself.

Both sources hand the training loop the same padded batches, so the two can be timed against each other on
identical batches (the epoch-time ratio in BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from ember.compress.outputs import COLUMN, META, TeacherFacts, TeacherOutputs
from ember.errors import MissingEntriesError, StoreError
from ember.store.activations import ActivationStore, Entry
from ember.store.handle import StoreHandle


@dataclass
class TeacherBatch:
    """A padded batch of examples with the teacher's targets.

    Attributes:
        input_ids, attention_mask: ``(B, T)`` int64.
        logits: the teacher's ``(B, C)`` logits (float32).
        labels: ``(B,)`` class ids, or ``None`` for unlabelled data.
        hidden: teacher hidden states by ``hidden_states`` index, each ``(B, T, H)`` (zeros at padding).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor | None = None
    hidden: dict[int, torch.Tensor] = field(default_factory=dict)

    def to(self, device: torch.device) -> TeacherBatch:
        return TeacherBatch(
            self.input_ids.to(device), self.attention_mask.to(device), self.logits.to(device),
            None if self.labels is None else self.labels.to(device), {k: v.to(device) for k, v in self.hidden.items()},
        )

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """What the student is called with."""
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}


def collate_entries(entries: Sequence[Entry], labels: Sequence[int] | None, pad_id: int) -> TeacherBatch:
    """Pad stored entries (``input_ids`` (L,), ``logits`` (C,), ``hidden.<i>`` (L, H)) into a :class:`TeacherBatch`."""
    lengths = [int(e["input_ids"].shape[0]) for e in entries]
    b, t = len(entries), max(lengths)
    input_ids = torch.full((b, t), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros(b, t, dtype=torch.long)  # (B, T)
    for i, e in enumerate(entries):
        input_ids[i, : lengths[i]] = e["input_ids"].to(torch.long)
        mask[i, : lengths[i]] = 1
    logits = torch.stack([e["logits"].float() for e in entries])  # (B, C)
    hidden = {}
    for name in (n for n in entries[0] if n.startswith("hidden.")):
        h = torch.zeros(b, t, entries[0][name].shape[-1])  # (B, T, H)
        for i, e in enumerate(entries):
            h[i, : lengths[i]] = e[name].float()
        hidden[int(name.split(".", 1)[1])] = h
    label_tensor = None if labels is None else torch.tensor(list(labels), dtype=torch.long)  # (B,)
    return TeacherBatch(input_ids, mask, logits, label_tensor, hidden)


class TeacherSource(Protocol):
    """What :func:`~ember.compress.distill` reads: examples' lengths and labels, and batches by index."""

    facts: TeacherFacts

    def __len__(self) -> int: ...

    def lengths(self) -> list[int]: ...

    def labels(self) -> list[int] | None: ...

    def batch(self, indices: Sequence[int]) -> TeacherBatch: ...


class StoredTeacher:
    """The stored teacher outputs of one split: batches are read from the store, the teacher never runs.

    Args:
        store: a teacher store (filled by :meth:`~ember.compress.Teacher.fill`).
        split: the split to read.

    Example:
        >>> source = StoredTeacher.open("teacher-store/", "train")  # doctest: +SKIP
        >>> len(source)  # doctest: +SKIP
        15100
    """

    def __init__(self, store: ActivationStore | StoreHandle, split: str = "train") -> None:
        # Through the handle: a fill reopens the store (writer, then read-only again), and this source follows.
        self._handle = store if isinstance(store, StoreHandle) else StoreHandle.wrap(store, what="the teacher store")
        store = self._handle.store
        fp = store.fingerprint
        if fp is not None and fp.kind != "teacher":
            raise StoreError(
                f"the store at {store.path} holds {fp.kind!r} entries, not teacher outputs; pass a store filled by "
                "ember.compress.Teacher.fill (ember distill --store DIR)"
            )
        meta = store.kv.get_meta(META)
        if meta is None:
            raise StoreError(f"the store at {store.path} has no teacher record; fill it with ember.compress.Teacher first")
        self.split = split
        self.facts = TeacherFacts.from_json(meta)
        record = store.get_split(split)
        self.keys = record.keys[COLUMN]
        self._labels, self._lengths = record.labels, record.lengths

    @property
    def store(self) -> ActivationStore:
        """The teacher store as opened now."""
        return self._handle.store

    @classmethod
    def open(cls, path, split: str = "train", *, backend: str = "lmdb") -> StoredTeacher:
        """Read a teacher store without the teacher model (its fingerprint is trusted, not checked)."""
        return cls(ActivationStore.open(path, None, backend=backend, readonly=True), split)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.keys)

    def lengths(self) -> list[int]:
        return list(self._lengths or [])

    def labels(self) -> list[int] | None:
        return None if self._labels is None else list(self._labels)

    def token_ids(self, chunk: int = 4096) -> set[int]:
        """Every token id the split's examples use (read from the store), e.g. to trim a vocabulary to them."""
        seen: set[int] = set()
        unique = list(dict.fromkeys(self.keys))
        for start in range(0, len(unique), chunk):
            for e in self.store.get(unique[start : start + chunk]):
                if e is not None:
                    seen.update(e["input_ids"].tolist())
        return seen

    def batch(self, indices: Sequence[int]) -> TeacherBatch:
        keys = [self.keys[i] for i in indices]
        entries = self.store.get(keys)
        missing = [k for k, e in zip(keys, entries, strict=True) if e is None]
        if missing:
            raise MissingEntriesError(
                f"{len(missing)} examples of split {self.split!r} are not in the store at {self.store.path} (first key "
                f"{missing[0].hex()[:12]}); fill the split again (Teacher.fill)"
            )
        labels = None if self._labels is None else [self._labels[i] for i in indices]
        return collate_entries(entries, labels, self.facts.pad_token_id)  # type: ignore[arg-type]


class LiveTeacher:
    """The same batches as :class:`StoredTeacher`, computed by running the teacher for every batch.

    What distillation without a store costs; ember uses it to measure the store's gain, and it serves data
    that is never seen twice.
    """

    def __init__(self, outputs: TeacherOutputs, ids: list[list[int]], labels: list[int] | None) -> None:
        self.outputs, self.ids, self._labels = outputs, ids, labels
        self.facts = outputs.facts

    def __len__(self) -> int:
        return len(self.ids)

    def lengths(self) -> list[int]:
        return [len(x) for x in self.ids]

    def labels(self) -> list[int] | None:
        return None if self._labels is None else list(self._labels)

    def batch(self, indices: Sequence[int]) -> TeacherBatch:
        entries = self.outputs.entries([self.ids[i] for i in indices])
        labels = None if self._labels is None else [self._labels[i] for i in indices]
        return collate_entries(entries, labels, self.facts.pad_token_id)


class LabelSource:
    """Labelled examples without a teacher: batches carry zero teacher logits, so only ``alpha=1`` (plain
    fine-tuning on the labels) makes sense with it. How a teacher itself is fine-tuned with the same loop.

    Args:
        facts: the model's own facts (vocabulary, widths, classes), as :meth:`for_model` builds them.
        ids: token ids per example (unpadded, truncated).
        labels: class ids.
    """

    def __init__(self, facts: TeacherFacts, ids: list[list[int]], labels: list[int]) -> None:
        if len(ids) != len(labels):
            raise ValueError(f"{len(ids)} examples but {len(labels)} labels")
        self.facts, self.ids, self._labels = facts, ids, labels

    @classmethod
    def for_model(cls, model, tokenizer, texts: Sequence[str], labels: Sequence[int], max_length: int | None = None) -> LabelSource:
        """Tokenize ``texts`` for ``model`` (truncated as ember truncates) with the model's facts."""
        from ember.compress.families import hidden_size, vocab_size
        from ember.models.families import find_parts
        from ember.models.inputs import padding_id, tokenize
        from ember.models.load import resolve_max_length

        facts = TeacherFacts(vocab_size(model), int(hidden_size(model) or 0), find_parts(model).num_layers,
                             int(model.config.num_labels), (), padding_id(tokenizer))
        ids = tokenize(tokenizer, list(texts), resolve_max_length(tokenizer, model, max_length))
        return cls(facts, ids, [int(y) for y in labels])

    def __len__(self) -> int:
        return len(self.ids)

    def lengths(self) -> list[int]:
        return [len(x) for x in self.ids]

    def labels(self) -> list[int] | None:
        return list(self._labels)

    def batch(self, indices: Sequence[int]) -> TeacherBatch:
        entries = [{"input_ids": torch.tensor(self.ids[i]), "logits": torch.zeros(self.facts.num_labels)} for i in indices]
        return collate_entries(entries, [self._labels[i] for i in indices], self.facts.pad_token_id)
