"""Recycling's producer: the hidden states entering layer ``k``, per example, in the storage dtype."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch

from ember.models.families import EncoderParts
from ember.models.inputs import pad_ids, unpad
from ember.models.split import split_states
from ember.store.activations import Entry
from ember.store.fingerprint import Fingerprint


class SplitStates:
    """Computes the states entering layer ``k`` of the model with its own forward (eval mode, no grad).

    A plain picklable object (its guard aside), so an executor can run it in another process.

    Args:
        parts: the model's parts (:func:`~ember.models.find_parts`).
        layer: the split layer ``k``.
        dtype: storage dtype of the states.
        tokenizer: pads id lists as every mode pads them.
        fingerprint: what the store records for these states.
        guard: a context the bottom runs in (a recycle context puts the model's own bottom back for it).
    """

    def __init__(self, parts: EncoderParts, layer: int, dtype: torch.dtype, tokenizer, fingerprint: Fingerprint,
                 guard: Callable[[], AbstractContextManager] | None = None) -> None:
        self.parts, self.layer, self.dtype, self.tokenizer = parts, layer, dtype, tokenizer
        self.fingerprint, self.guard = fingerprint, guard

    def __getstate__(self) -> dict:
        return {**self.__dict__, "guard": None}  # the guard belongs to this process's contexts

    @property
    def device(self) -> torch.device:
        """Where the model's weights are (inputs are moved there)."""
        return next(self.parts.base.parameters()).device

    def states(self, input_ids: torch.Tensor, mask: torch.Tensor, **extra: torch.Tensor | None) -> torch.Tensor:
        """Padded states ``(B, T, H)`` of a padded batch ``(B, T)``."""
        with self.guard() if self.guard is not None else nullcontext():
            return split_states(self.parts, self.layer, input_ids, mask, **extra)

    def entries(self, ids: list[list[int]]) -> list[Entry]:
        """``{"states": (L_i, H)}`` per id list, on the CPU in the storage dtype."""
        input_ids, mask = pad_ids(ids, self.tokenizer, self.device)  # (B, T), (B, T)
        states = self.states(input_ids, mask)  # (B, T, H)
        return [{"states": s.to(self.dtype).cpu()} for s in unpad(states, mask)]  # [(L_i, H)]
