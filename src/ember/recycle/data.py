"""Training from the store: a dataset of stored examples and the collator that pads them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from ember.errors import MissingEntriesError
from ember.store.activations import ActivationStore, Entry


class StoredDataset(torch.utils.data.Dataset):
    """Stored split-layer states (and labels) by key; raw texts are never read again.

    Items are ``{"inputs_embeds": (L, H)[, "labels": ()]}``: named after the model's forward arguments, so
    the Hugging Face Trainer's column filter keeps them. ``__getitems__`` reads a whole batch in one
    store transaction when used with a DataLoader.

    Args:
        store: the store holding the states.
        keys: one key per example (duplicates allowed), in dataset order.
        labels: one class id per example, ``"entries"`` to read the label stored in each entry (as
            ``record()`` writes them), or ``None`` for unlabelled items.
        lengths: token count per example when known (a split record has them), for length grouping.
    """

    def __init__(
        self,
        store: ActivationStore,
        keys: Sequence[bytes],
        *,
        labels: Sequence[int] | Literal["entries"] | None = None,
        lengths: Sequence[int] | None = None,
    ) -> None:
        self.store = store
        self.keys = list(keys)
        if labels is not None and labels != "entries" and len(labels) != len(self.keys):
            raise ValueError(f"{len(self.keys)} keys but {len(labels)} labels")
        self.labels = labels
        self._lengths = None if lengths is None else list(lengths)

    def __len__(self) -> int:
        return len(self.keys)

    def lengths(self, chunk: int = 4096) -> list[int]:
        """Token count of every example, for length-grouped batching (read from the store if not recorded)."""
        if self._lengths is None:
            out: list[int] = []
            for b in range(0, len(self.keys), chunk):
                out += [e["states"].shape[0] for e in self._read(self.keys[b : b + chunk])]
            self._lengths = out
        return self._lengths

    def __getitem__(self, i: int) -> Entry:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[Entry]:
        keys = [self.keys[i] for i in indices]
        items = []
        for i, k, e in zip(indices, keys, self._read(keys), strict=True):
            item = {"inputs_embeds": e["states"]}
            if self.labels == "entries":
                if "label" not in e:
                    raise MissingEntriesError(
                        f"the entry {k.hex()[:12]} in {self.store.path} has no label; build the dataset from a "
                        "labelled split (Recycler.dataset('train')), or use labels=False"
                    )
                item["labels"] = e["label"]
            elif self.labels is not None:
                item["labels"] = torch.tensor(self.labels[i], dtype=torch.int64)
            items.append(item)
        return items

    def _read(self, keys: Sequence[bytes]) -> list[Entry]:
        entries = self.store.get(keys)
        missing = [k for k, e in zip(keys, entries, strict=True) if e is None]
        if missing:
            raise MissingEntriesError(
                f"{len(missing)} examples are not in the store at {self.store.path} (first key {missing[0].hex()[:12]}); "
                "fill it with these texts first (ember recycle fill)"
            )
        return entries  # type: ignore[return-value]


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
