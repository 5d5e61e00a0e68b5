"""A fingerprinted store of per-example tensors: the one store behind recycling, encoder caches and teachers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ember.errors import StoreError, StoreMismatchError
from ember.store.base import Backend, KVStore, open_kv
from ember.store.codec import decode, encode
from ember.store.fingerprint import Fingerprint

Entry = dict[str, torch.Tensor]


@dataclass
class Split:
    """Examples of one dataset split, in order: keys (duplicates kept), labels and token counts.

    Labels live here rather than in the content-keyed entries: the same text may appear in two splits
    or twice with different labels, and a labelled fill over already-stored states still records them.
    """

    keys: list[bytes]
    labels: list[int] | None
    lengths: list[int]

    def to_dict(self) -> dict:
        return {"keys": [k.hex() for k in self.keys], "labels": self.labels, "lengths": self.lengths}

    @classmethod
    def from_dict(cls, d: dict) -> Split:
        return cls([bytes.fromhex(k) for k in d["keys"]], d["labels"], d["lengths"])


class ActivationStore:
    """Entries (named tensors per example key) plus the fingerprint of what produced them.

    Args:
        kv: the backend.
        fingerprint: what this run would store. A new store records it; an existing store must match it
            exactly, otherwise :class:`~ember.errors.StoreMismatchError` lists the differences. ``None``
            trusts whatever the store holds (reading a store without the model that made it).

    Example:
        >>> st = ActivationStore.open(None, None, backend="memory")
        >>> st.put([b"k"], [{"states": torch.zeros(3, 4)}])
        >>> st.get([b"k"])[0]["states"].shape
        torch.Size([3, 4])
    """

    def __init__(self, kv: KVStore, fingerprint: Fingerprint | None) -> None:
        self.kv = kv
        stored = kv.get_meta("fingerprint")
        if stored is None:
            if len(kv) > 0:
                raise StoreMismatchError(
                    f"the store at {kv.path} holds entries but no fingerprint, so nothing tells what produced them; "
                    "ember never writes such a store. Delete it and fill it again."
                )
            if fingerprint is None and not kv.readonly:
                raise ValueError("a writable store needs a fingerprint; pass fingerprint=None only with readonly=True")
            if fingerprint is not None and not kv.readonly:
                kv.set_meta("fingerprint", fingerprint.to_json())
            self.fingerprint = fingerprint
        else:
            try:
                have = Fingerprint.from_json(stored)
            except (TypeError, ValueError) as exc:
                raise StoreMismatchError(
                    f"the store at {kv.path} has a fingerprint this version of ember cannot read ({exc}); "
                    "it was made by another ember version. Delete it and fill it again."
                ) from exc
            if fingerprint is not None and have != fingerprint:
                lines = "\n  ".join(have.diff(fingerprint))
                raise StoreMismatchError(
                    f"the store at {kv.path} was made by another model or setting:\n  {lines}\n"
                    "Its entries would be wrong for this run. Rebuild it: delete the folder (or pass another "
                    "--store) and fill again, or open it with the model and settings that made it."
                )
            self.fingerprint = have

    @classmethod
    def open(
        cls,
        path: str | Path | None,
        fingerprint: Fingerprint | None,
        *,
        backend: Backend = "lmdb",
        readonly: bool = False,
        **options,
    ) -> ActivationStore:
        """Open or create the store at ``path`` (see :func:`ember.store.base.open_kv`)."""
        kv = open_kv(path, backend, readonly=readonly, **options)
        try:
            return cls(kv, fingerprint)
        except BaseException:
            kv.close()
            raise

    @property
    def path(self) -> Path | None:
        return self.kv.path

    def __len__(self) -> int:
        return len(self.kv)

    def get(self, keys: Sequence[bytes]) -> list[Entry | None]:
        """Entries for ``keys`` (``None`` where missing), read in one transaction."""
        return [None if v is None else decode(v, k) for k, v in zip(keys, self.kv.get_many(keys), strict=True)]

    def missing(self, keys: Sequence[bytes]) -> list[bytes]:
        """The keys not in the store, in the given order, without duplicates."""
        uniq = list(dict.fromkeys(keys))
        return [k for k, has in zip(uniq, self.kv.has_many(uniq), strict=True) if not has]

    def put(self, keys: Sequence[bytes], entries: Sequence[Entry]) -> None:
        """Write entries atomically: after a crash all of them are there or none is."""
        self.kv.put_many([(k, encode(e)) for k, e in zip(keys, entries, strict=True)])

    @property
    def label_names(self) -> list[str] | None:
        v = self.kv.get_meta("label_names")
        return None if v is None else json.loads(v)

    def merge_label_names(self, names: Sequence[str]) -> list[str]:
        """Add new label names after the known ones (ids never move) and return the full list."""
        have = self.label_names or []
        new = have + [n for n in names if n not in set(have)]
        if new != have:
            self.kv.set_meta("label_names", json.dumps(new))
        return new

    def put_split(self, name: str, split: Split) -> None:
        """Record which examples (keys, in dataset order) form a split, with their labels and lengths."""
        self.kv.set_meta(f"split:{name}", json.dumps(split.to_dict()))

    def get_split(self, name: str) -> Split:
        """The split recorded by a fill; raises with the splits that exist and how to make this one."""
        v = self.kv.get_meta(f"split:{name}")
        if v is None:
            have = self.split_names()
            raise StoreError(
                f"the store at {self.path} has no split {name!r} (it has {have or 'none'}). Fill it first: "
                f"ember recycle fill --split {name} ... (Recycler.fill(data, split={name!r}))"
            )
        return Split.from_dict(json.loads(v))

    def split_names(self) -> list[str]:
        v = self.kv.get_meta("splits")
        return [] if v is None else json.loads(v)

    def add_split(self, name: str, split: Split) -> None:
        """:meth:`put_split` and list ``name`` among the store's splits."""
        self.put_split(name, split)
        names = self.split_names()
        if name not in names:
            self.kv.set_meta("splits", json.dumps([*names, name]))

    def close(self) -> None:
        self.kv.close()

    def __enter__(self) -> ActivationStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
