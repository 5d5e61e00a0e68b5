"""Training from the store: a dataset of stored examples and the collator that pads them."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ember.errors import MissingEntriesError
from ember.store.activations import ActivationStore, Entry


class StoredDataset(torch.utils.data.Dataset):
    """Stored split-layer states (and labels) by key; raw texts are never read again.

    Items are ``{"inputs_embeds": (L, H)[, "labels": ()]}``: named after the model's forward arguments, so
    the Hugging Face Trainer's column filter keeps them. ``__getitems__`` reads a whole batch in one
    store transaction when used with a DataLoader.
    """

    def __init__(self, store: ActivationStore, keys: Sequence[bytes], *, labels: bool = True) -> None:
        self.store = store
        self.keys = list(keys)
        self.labels = labels

    def __len__(self) -> int:
        return len(self.keys)

    def lengths(self, chunk: int = 4096) -> list[int]:
        """Token count of every example (one read pass over the store), for length-grouped batching."""
        out: list[int] = []
        for b in range(0, len(self.keys), chunk):
            out += [e["states"].shape[0] for e in self.store.get(self.keys[b : b + chunk]) if e is not None]
        if len(out) != len(self.keys):
            raise MissingEntriesError(f"{len(self.keys) - len(out)} examples are not in the store at {self.store.path}; fill them first")
        return out

    def __getitem__(self, i: int) -> Entry:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[Entry]:
        keys = [self.keys[i] for i in indices]
        entries = self.store.get(keys)
        missing = [k for k, e in zip(keys, entries, strict=True) if e is None]
        if missing:
            raise MissingEntriesError(
                f"{len(missing)} examples are not in the store at {self.store.path} (first key {missing[0].hex()[:12]}); "
                "fill it with these texts first (ember recycle fill)"
            )
        if self.labels:
            for k, e in zip(keys, entries, strict=True):
                if "label" not in e:
                    raise MissingEntriesError(
                        f"the entry {k.hex()[:12]} in {self.store.path} has no label; fill with labels, or use "
                        "dataset(labels=False) for unlabelled inference"
                    )
        return [_item(e, self.labels) for e in entries]  # type: ignore[arg-type]


def _item(entry: Entry, labels: bool) -> Entry:
    item = {"inputs_embeds": entry["states"]}
    if labels:
        item["labels"] = entry["label"]
    return item


def collate_states(batch: Sequence[Entry], dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Right-pad ``(L_i, H)`` states into ``inputs_embeds (B, T, H)`` with ``attention_mask (B, T)``."""
    lengths = [e["inputs_embeds"].shape[0] for e in batch]
    t, h = max(lengths), batch[0]["inputs_embeds"].shape[-1]
    states = torch.zeros(len(batch), t, h, dtype=dtype)  # (B, T, H)
    mask = torch.zeros(len(batch), t, dtype=torch.long)  # (B, T)
    for i, e in enumerate(batch):
        states[i, : lengths[i]] = e["inputs_embeds"].to(dtype)
        mask[i, : lengths[i]] = 1
    out = {"inputs_embeds": states, "attention_mask": mask}
    if all("labels" in e for e in batch):
        out["labels"] = torch.stack([e["labels"] for e in batch])
    return out
