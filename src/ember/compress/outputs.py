"""The teacher's outputs as store entries: the producer the fill calls, and the facts a student must match.

Kept apart from :mod:`ember.compress.teacher` (the store that holds them) so that the sources reading a store
and the teacher that fills it both point down at this module, never at each other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from torch import nn

from ember.compress.config import TeacherConfig
from ember.compress.errors import CompressConfigError, StudentMismatchError
from ember.compress.families import hidden_size, vocab_size
from ember.models.checks import check_module
from ember.models.families import find_parts
from ember.models.inputs import pad_ids, padding_id
from ember.models.load import resolve_max_length
from ember.models.split import frozen_eval
from ember.store.activations import Entry
from ember.store.codec import torch_dtype
from ember.store.fingerprint import Fingerprint, weights_hash
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
