"""Model inputs as ember builds them: token ids truncated as every mode truncates, padded and unpadded.

Every capability (recycling, the encoder cache, teacher outputs, optimisation) tokenizes and pads through
these helpers, so the same text always becomes the same ids, the same key and the same padded batch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch


class _Chunks(torch.utils.data.Dataset):
    def __init__(self, tokenizer, texts: Sequence[str], max_length: int, size: int) -> None:
        self.tokenizer, self.texts, self.max_length, self.size = tokenizer, texts, max_length, size

    def __len__(self) -> int:
        return (len(self.texts) + self.size - 1) // self.size

    def __getitem__(self, i: int) -> list[list[int]]:
        part = list(self.texts[i * self.size : (i + 1) * self.size])
        return self.tokenizer(part, truncation=True, max_length=self.max_length)["input_ids"]


def tokenize(tokenizer, texts: Sequence[str], max_length: int, *, num_workers: int = 0, chunk: int = 2048) -> list[list[int]]:
    """Token ids of every text, truncated to ``max_length`` exactly as every ember mode truncates.

    With ``num_workers > 0`` the chunks are tokenized in DataLoader worker processes; results come
    back in input order, so labels (kept in the main process) stay aligned.
    """
    ds = _Chunks(tokenizer, texts, max_length, chunk)
    if num_workers <= 0:
        parts = [ds[i] for i in range(len(ds))]
    else:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=num_workers)
        parts = list(loader)
    return [ids for part in parts for ids in part]



def padding_id(tokenizer) -> int:
    """The id ember pads token ids with: the tokenizer's pad id, or 0 when it has none (GPT-2-style tokenizers).

    Padded positions are masked, and stripped before anything is keyed or stored, so the id changes no output.
    ember does not ask the user to set a pad token here: it is part of the tokenizer's fingerprint, and setting
    one would orphan every store filled before.
    """
    pad_id = getattr(tokenizer, "pad_token_id", None)
    return pad_id if pad_id is not None else 0


def pad_ids(ids: Sequence[Sequence[int]], tokenizer, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists with :func:`padding_id` into ``(input_ids, attention_mask)``, both ``(B, T)`` int64."""
    pad_id = padding_id(tokenizer)
    t = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), t), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(ids), t), dtype=torch.long)  # (B, T), 1 on real tokens
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = torch.as_tensor(x, dtype=torch.long)
        mask[i, : len(x)] = 1
    return input_ids.to(device), mask.to(device)


def pad_features(features: Mapping[str, Sequence[Sequence[int]]], tokenizer) -> dict[str, torch.Tensor]:
    """Right-pad a tokenizer's unpadded output (``input_ids``, ``attention_mask``, ``token_type_ids`` …) into
    ``(B, T)`` int64 tensors, as the tokenizer's own padding would: ``input_ids`` with :func:`padding_id`,
    ``special_tokens_mask`` with 1, every other field with 0. For tokenizers that have no pad token."""
    rows = features["input_ids"]
    t = max((len(x) for x in rows), default=0)
    out = {}
    for name, values in features.items():
        fill = padding_id(tokenizer) if name == "input_ids" else 1 if name == "special_tokens_mask" else 0
        padded = torch.full((len(values), t), fill, dtype=torch.long)  # (B, T)
        for i, x in enumerate(values):
            padded[i, : len(x)] = torch.as_tensor(x, dtype=torch.long)
        out[name] = padded
    return out


def unpad(states: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """Per-row states of the unmasked tokens: ``(B, T, H) -> [(L_i, H)]``."""
    return [states[i][mask[i].bool()] for i in range(states.shape[0])]  # states[i]: (T, H) -> (L_i, H)
