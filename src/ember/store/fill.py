"""The one fill loop: tokenize, skip what is stored, compute the rest length-sorted, commit per batch.

Used by recycling (split-layer states), the frozen-encoder cache (pooled embeddings) and any other
producer of per-example tensors. Killed at any moment, a rerun keeps every committed batch (each is
one atomic transaction), never sees a half-written entry and computes only what is missing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

import torch

from ember.batching import length_buckets
from ember.errors import DataError
from ember.progress import progress_bar
from ember.store.activations import ActivationStore, Entry
from ember.store.keys import KeyFn, content_key

Compute = Callable[[list[list[int]]], list[Entry]]


@dataclass
class FillReport:
    """What a fill did. ``keys`` are the examples' keys in input order (for building a dataset)."""

    examples: int
    unique: int
    already_stored: int
    computed: int
    seconds: float
    keys: list[bytes] = field(default_factory=list, repr=False)
    split: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("keys")
        return d


def check_texts(texts: Iterable[str], allow_empty: bool = False) -> list[str]:
    """The texts as a list, read once (so a generator is not used up by the check), after refusing empty or
    non-string texts with the index of the first bad one, and a bare string (which would be read as one text
    per character)."""
    if isinstance(texts, str | bytes):
        raise DataError(f"texts must be a list of strings, got one {type(texts).__name__} ({texts[:40]!r}); wrap it: [text]")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise DataError(f"example {i} is a {type(t).__name__}, not a string; convert the text column to str")
        if not allow_empty and not t.strip():
            raise DataError(
                f"example {i} has an empty text; remove empty rows from the data, or pass allow_empty=True "
                "to store the encoding of the special tokens alone"
            )
    return texts


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


def fill(
    store: ActivationStore,
    ids: Sequence[Sequence[int]],
    compute: Compute,
    *,
    batch_size: int = 64,
    key_fn: KeyFn = content_key,
    keys: Sequence[bytes] | None = None,
    progress: bool = True,
    description: str = "filling store",
) -> FillReport:
    """Compute and store the entries of every example that is not stored yet.

    Args:
        store: destination; each batch is committed in one transaction.
        ids: token ids per example (unpadded, already truncated).
        compute: maps a batch of id lists to one entry dict per example (unpadded tensors).
        batch_size: examples per compute call and per commit.
        key_fn: key of one example's ids (content hash by default, never the dataset index).
        keys: the examples' keys, computed beforehand (e.g. from their texts); ``key_fn`` is then unused.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    start = time.perf_counter()
    if keys is None:
        keys = [key_fn(x) for x in ids]
    elif len(keys) != len(ids):
        raise ValueError(f"{len(ids)} examples but {len(keys)} keys")
    first: dict[bytes, int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    todo = [first[k] for k in store.missing(list(first))]
    with progress_bar(len(todo), description, enabled=progress) as advance:
        # Length-sorted batches: padding is (almost) never computed.
        for b in length_buckets([len(ids[i]) for i in todo], batch_size):
            idx = [todo[j] for j in b]
            entries = compute([list(ids[i]) for i in idx])
            store.put([keys[i] for i in idx], entries)
            advance(len(idx))
    return FillReport(
        examples=len(ids),
        unique=len(first),
        already_stored=len(first) - len(todo),
        computed=len(todo),
        seconds=time.perf_counter() - start,
        keys=list(keys),
    )
