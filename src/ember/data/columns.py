"""Reading the inputs of several named encoders (and their labels) from the shapes users keep them in."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ember.data.loaders import Examples
from ember.errors import DataError, RandomTransformError


def read_columns(data, labels, names: list[str], *, num_workers: int = 0, check_transform: int = 16
                 ) -> tuple[dict[str, list[str]], Sequence | None]:
    """The inputs of each named encoder (a column of texts per name) and the labels, from any shape users pass.

    Args:
        data: texts (one name), :class:`~ember.data.Examples`, ``{name: texts}`` (with an optional ``label``
            column), or a map-style dataset whose items are texts, ``{name: text, ..., "label": y}`` dicts or
            ``(text, ..., label)`` tuples in ``names`` order.
        labels: labels given separately (they win over the data's own).
        names: the column names wanted, in order.
        num_workers: worker processes reading a dataset.
        check_transform: how many dataset items are read twice to detect a random transform.
    """
    if isinstance(data, Examples):
        if len(names) != 1:
            raise DataError(f"Examples hold one text per example, but the cache has encoders {names}; pass {{name: texts}}")
        return {names[0]: list(data.texts)}, labels if labels is not None else data.labels
    if isinstance(data, Mapping):
        unknown = sorted(set(data) - set(names) - {"label", "labels"})
        absent = [n for n in names if n not in data]
        if unknown or absent:
            raise DataError(
                f"the data's columns {sorted(data)} do not match the cache's encoders {names}"
                + (f": no column for {absent}" if absent else "")
                + (f": unknown columns {unknown}" if unknown else "")
            )
        columns = {n: list(data[n]) for n in names}
        if labels is None:
            labels = data.get("label", data.get("labels"))
        lengths = {n: len(c) for n, c in columns.items()}
        if len(set(lengths.values())) > 1:
            raise DataError(f"the encoders' columns have different lengths {lengths}; each example needs every input")
        return columns, labels
    if isinstance(data, (list, tuple)) and all(isinstance(t, str) for t in data):
        if len(names) != 1:
            raise DataError(f"a list of texts feeds one encoder, but the cache has encoders {names}; pass {{name: texts}}")
        return {names[0]: list(data)}, labels
    return _read_dataset(data, labels, names, num_workers, check_transform)

def _read_dataset(data, labels, names: list[str], num_workers: int, check_transform: int
              ) -> tuple[dict[str, list[str]], Sequence | None]:
    """Read a map-style dataset once (in worker processes when asked), in order, and detect random transforms."""
    if isinstance(data, str | bytes):  # a str has len and items too: one text per character
        raise DataError(f"cannot fill from one {type(data).__name__} ({data[:40]!r}): pass a list of texts (wrap it: "
                        "[text]), or read a file with ember.load_examples(path)")
    try:
        n = len(data)
    except TypeError:
        raise DataError(
            f"cannot read a {type(data).__name__}: pass texts, {{name: texts}}, Examples or a map-style dataset "
            "(with __len__ and __getitem__)"
        ) from None
    # A spread of items is read twice, one read right after the other in the process that reads it (a
    # worker when num_workers > 0): a random (augmenting) transform gives other inputs, which a cache would
    # freeze into one arbitrary draw. Reading the second copy elsewhere (say in the main process) would
    # miss transforms driven by per-worker state: a worker's counter or RNG forked from the parent.
    k = min(check_transform, n)
    twice = frozenset(round(j * (n - 1) / max(k - 1, 1)) for j in range(k)) if k else frozenset()
    reader = _ReadTwice(data, twice)
    loader = torch.utils.data.DataLoader(reader, batch_size=256, num_workers=num_workers, collate_fn=list)
    items = []
    for i, (x, again) in enumerate(x for batch in loader for x in batch):  # in order
        items.append(_item(x, i, names))
        if again is not _NOT_READ:
            second = _item(again, i, names)
            if second[0] != items[i][0]:
                diff = next(e for e in names if second[0][e] != items[i][0][e])
                raise RandomTransformError(
                    f"dataset item {i} gave encoder {diff!r} different inputs on two reads ({items[i][0][diff]!r}, "
                    f"then {second[0][diff]!r}): the dataset applies a random transform (augmentation). A cache "
                    "would freeze one random draw for every epoch. Cache the un-augmented data, or train without "
                    "the cache."
                )
    columns = {name: [it[0][name] for it in items] for name in names}
    if labels is None:
        has = [it[1] is not None for it in items]
        if any(has) and not all(has):
            i, j = has.index(True), has.index(False)
            raise DataError(
                f"dataset item {i} has a label but item {j} has none; label every example (or none, and pass "
                "labels= to fill)"
            )
        if items and all(has):
            labels = [it[1] for it in items]
    return columns, labels

def _item(x, i: int, names: list[str]) -> tuple[dict[str, str], object]:
    if isinstance(x, str) and len(names) == 1:
        return {names[0]: x}, None
    if isinstance(x, Mapping):
        absent = [n for n in names if n not in x]
        if absent:
            raise DataError(f"dataset item {i} has keys {sorted(x)} but no input for encoders {absent}")
        label = x.get("label", x.get("labels"))
        return {n: x[n] for n in names}, None if label is None else _plain(label)
    if isinstance(x, (tuple, list)) and len(x) in (len(names), len(names) + 1):
        label = _plain(x[len(names)]) if len(x) > len(names) else None
        return dict(zip(names, x[: len(names)], strict=True)), label
    raise DataError(
        f"dataset item {i} is a {type(x).__name__}; items must be a text (one encoder), a dict "
        f"{{{', '.join(repr(n) for n in names)}, 'label'}} or a tuple of the encoders' texts in order {names} plus "
        "an optional label"
    )


def _plain(label):
    return label.item() if isinstance(label, torch.Tensor) and label.dim() == 0 else label


_NOT_READ = object()


class _ReadTwice(torch.utils.data.Dataset):
    """Items of ``data``; those in ``twice`` read a second time right away, in the same (worker) process."""

    def __init__(self, data, twice: frozenset[int]) -> None:
        self.data, self.twice = data, twice

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        first = self.data[i]
        return first, (self.data[i] if i in self.twice else _NOT_READ)
