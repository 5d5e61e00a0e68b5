"""Serving cached embeddings to a training loop: in-memory tables or the on-disk store, one dataset + collator."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import NamedTuple, Protocol

import torch

from ember.encoders.errors import EmbeddingShapeError
from ember.errors import MissingEntriesError
from ember.store.activations import ActivationStore

_READ_CHUNK = 4096  # entries per read transaction when loading a table


class Source(Protocol):
    """Where one encoder's embeddings come from during training."""

    def locate(self, keys: Sequence[bytes]) -> object:
        """Resolve example keys once (rows of a table, or the keys themselves for the store)."""

    def take(self, located: object, idx: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(B, D)`` of the examples ``idx`` (positions in what ``locate`` resolved)."""


class EmbeddingTable:
    """Every entry of a store as one ``(N, D)`` tensor on a device plus a key -> row index.

    Gathering a batch is one indexing op on the device: no decode, no copy from the host.
    """

    def __init__(self, matrix: torch.Tensor, index: dict[bytes, int], where: str = "") -> None:
        self.matrix = matrix  # (N, D)
        self.index = index
        self.where = where

    @classmethod
    def load(cls, store: ActivationStore, device: torch.device, dtype: torch.dtype, where: str = "") -> EmbeddingTable:
        keys = list(store.kv.keys())
        vectors: list[torch.Tensor] = []
        for b in range(0, len(keys), _READ_CHUNK):
            part = keys[b : b + _READ_CHUNK]
            vectors.extend(e["embedding"] for e in store.get(part))  # type: ignore[index]
        shapes = {tuple(v.shape) for v in vectors}
        if len(shapes) > 1:
            raise EmbeddingShapeError(
                f"the store of {where} holds embeddings of several shapes {sorted(shapes)}; it was filled by encoders "
                "that disagree. Delete it and fill again."
            )
        dim = shapes.pop()[0] if shapes else 0
        matrix = torch.stack(vectors).to(dtype) if vectors else torch.zeros(0, dim, dtype=dtype)
        return cls(matrix.to(device), {k: i for i, k in enumerate(keys)}, where)

    @property
    def device(self) -> torch.device:
        return self.matrix.device

    def rows(self, keys: Sequence[bytes]) -> torch.Tensor:
        try:
            return torch.tensor([self.index[k] for k in keys], dtype=torch.long, device=self.device)  # (N,)
        except KeyError as exc:
            raise MissingEntriesError(
                f"the example key {exc.args[0].hex()[:12]} of {self.where} is not in its store; fill the cache "
                "with these examples first (EncoderCache.fill)"
            ) from None

    def locate(self, keys: Sequence[bytes]) -> torch.Tensor:
        return self.rows(keys)

    def take(self, located: object, idx: torch.Tensor) -> torch.Tensor:
        rows = located[idx.to(self.device)]  # type: ignore[index]
        return self.matrix[rows]  # (B, D)


class StoreSource:
    """Reads each batch from the memory-mapped store (placement ``mmap``): memory use stays flat.

    Args:
        store: the store, or a function returning the store as opened now (the cache reopens its stores
            when a fill takes or gives back the writer lock).
        device: where batches go.
        dtype: dtype of the batches.
        where: what the store holds, for error messages.
        lock: held around every read, so a reader never finds the store closed by a thread that is
            reopening it (the cache's own lock; its fill and first ``embed(write_back=True)`` reopen it).
    """

    def __init__(
        self,
        store: ActivationStore | Callable[[], ActivationStore],
        device: torch.device,
        dtype: torch.dtype,
        where: str = "",
        lock: AbstractContextManager | None = None,
    ) -> None:
        self._store, self.device, self.dtype, self.where = store, device, dtype, where
        self._lock = lock if lock is not None else nullcontext()

    @property
    def store(self) -> ActivationStore:
        return self._store() if callable(self._store) else self._store  # type: ignore[return-value]

    # -- pickling: DataLoader workers started with spawn/forkserver (macOS, and Linux from Python 3.14) ------
    def __getstate__(self) -> dict:
        # The store as opened now (an LMDB store reopens read-only in the worker), without the function that
        # finds it or the lock: nothing reopens the copy, and neither pickles.
        return {"_store": self.store, "device": self.device, "dtype": self.dtype, "where": self.where}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = nullcontext()

    def locate(self, keys: Sequence[bytes]) -> list[bytes]:
        with self._lock:
            missing = self.store.missing(keys)
        if missing:
            raise MissingEntriesError(
                f"{len(missing)} example keys of {self.where} are not in its store (first {missing[0].hex()[:12]}); "
                "fill the cache with these examples first (EncoderCache.fill)"
            )
        return list(keys)

    def take(self, located: object, idx: torch.Tensor) -> torch.Tensor:
        keys = [located[i] for i in idx.tolist()]  # type: ignore[index]
        with self._lock:
            entries = self.store.get(keys)
        return torch.stack([e["embedding"] for e in entries]).to(device=self.device, dtype=self.dtype)  # type: ignore[index]


class CachedItem(NamedTuple):
    """One example of a split: which split, and its position (what a DataLoader hands the collator)."""

    dataset: CachedDataset
    index: int


def collate_cached(items: Sequence[CachedItem]) -> dict[str, torch.Tensor]:
    """The collator for any :class:`CachedDataset` (train, validation, test alike): one gather per encoder.

    Example:
        >>> Trainer(model=head, train_dataset=cache.dataset("train"), eval_dataset=cache.dataset("test"),
        ...         data_collator=collate_cached, args=TrainingArguments(..., remove_unused_columns=False))  # doctest: +SKIP
    """
    if not items:
        raise ValueError("cannot collate an empty batch")
    first = items[0]
    if not isinstance(first, CachedItem):
        raise TypeError(f"collate_cached takes items of a CachedDataset, got {type(first).__name__}")
    return first.dataset.collate(items)


class CachedDataset(torch.utils.data.Dataset):
    """Examples of one filled split: per-encoder embeddings and labels, raw data never read again.

    Items are :class:`CachedItem` (split, position); :func:`collate_cached` (or :meth:`collate`) turns a list
    of them into ``{encoder_name: (B, D), ..., "labels": (B,), "index": (B,)}`` with one gather per encoder;
    ``index`` (positions in the data given to the fill) pairs the batch with raw inputs of a trainable
    encoder: ``tower(tokenize([raw[i] for i in batch["index"]]))``. Use it as the
    ``collate_fn`` of a DataLoader or the ``data_collator`` of a Hugging Face Trainer.

    Example:
        >>> ds = cache.dataset("train")                                     # doctest: +SKIP
        >>> loader = DataLoader(ds, batch_size=32, shuffle=True, collate_fn=ds.collate)  # doctest: +SKIP
    """

    def __init__(
        self,
        sources: Mapping[str, tuple[Source, object]],
        length: int,
        labels: torch.Tensor | None,
        placements: Mapping[str, str],
        *,
        dtype: torch.dtype | None = None,
        index: bool = False,
    ) -> None:
        self.sources = dict(sources)
        self.length = length
        self.labels = labels  # (N,) on the training device, or None
        self.placements = dict(placements)
        self.dtype = dtype  # of the served embeddings; None: as the sources hold them
        self.index = index

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> CachedItem:
        if not -self.length <= i < self.length:
            raise IndexError(f"index {i} out of range for a split of {self.length} examples")
        return CachedItem(self, i % self.length)

    def __getitems__(self, indices: Sequence[int]) -> list[CachedItem]:
        return [self[i] for i in indices]

    def collate(self, items: Sequence[CachedItem | int]) -> dict[str, torch.Tensor]:
        """Batch ``{encoder: (B, D)}`` plus ``labels (B,)`` and ``index (B,)`` of items of this split (or plain
        positions in it). ``index`` is each example's position in the data given to the fill (int64, CPU)."""
        idx = torch.as_tensor([it.index if isinstance(it, CachedItem) else int(it) for it in items], dtype=torch.long)  # (B,)
        out = {name: src.take(located, idx) for name, (src, located) in self.sources.items()}
        if self.dtype is not None:
            out = {name: t if t.dtype == self.dtype else t.to(self.dtype) for name, t in out.items()}
        if self.labels is not None:
            out["labels"] = self.labels[idx.to(self.labels.device)]
        if self.index:
            out["index"] = idx
        return out

    def loader(self, batch_size: int = 32, *, shuffle: bool = True, **kwargs) -> torch.utils.data.DataLoader:
        """A DataLoader over this split with :meth:`collate` (no worker processes needed: batches are gathers)."""
        return torch.utils.data.DataLoader(self, batch_size=batch_size, shuffle=shuffle, collate_fn=self.collate, **kwargs)
