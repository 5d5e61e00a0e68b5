"""A fingerprinted store of per-example tensors: the one store behind recycling, encoder caches and teachers."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ember.errors import StoreError, StoreMismatchError
from ember.store.base import Backend, KVStore, open_kv
from ember.store.codec import decode, encode
from ember.store.fingerprint import Fingerprint
from ember.store.keys import KEY_BYTES

Entry = dict[str, torch.Tensor]


STATES = "states"  # the key column of a store with one kind of entry (recycling)


@dataclass
class Split:
    """Examples of one dataset split, in order: keys per column (duplicates kept), labels and token counts.

    A column names the store its keys point into: recycling has one (``"states"``); an encoder cache one per
    encoder. Labels live here rather than in the content-keyed entries: the same text may appear in two
    splits or twice with different labels, and a labelled fill over already-stored states still records them.

    Example:
        >>> Split.from_entry(Split({"states": [b"k" * 16]}, labels=[3]).to_entry())
        Split(keys={'states': [b'kkkkkkkkkkkkkkkk']}, labels=[3], lengths=None)
    """

    keys: dict[str, list[bytes]]
    labels: list[int] | None = None
    lengths: list[int] | None = None

    def __post_init__(self) -> None:
        sizes = {len(v) for v in (*self.keys.values(), self.labels, self.lengths) if v is not None}
        if len(sizes) > 1:
            raise ValueError(f"a split's key columns, labels and lengths must have one length each; got sizes {sorted(sizes)}")

    def __len__(self) -> int:
        return len(next(iter(self.keys.values()), []))

    def to_entry(self) -> Entry:
        entry = {f"keys.{col}": _keys_tensor(k) for col, k in self.keys.items()}
        if self.labels is not None:
            entry["labels"] = torch.tensor(self.labels, dtype=torch.int64)  # (N,)
        if self.lengths is not None:
            entry["lengths"] = torch.tensor(self.lengths, dtype=torch.int64)  # (N,)
        return entry

    @classmethod
    def from_entry(cls, entry: Entry) -> Split:
        keys = {name[len("keys.") :]: _keys_list(t) for name, t in entry.items() if name.startswith("keys.")}
        labels, lengths = entry.get("labels"), entry.get("lengths")
        return cls(keys, None if labels is None else labels.tolist(), None if lengths is None else lengths.tolist())


def _keys_tensor(keys: Sequence[bytes]) -> torch.Tensor:
    if not keys:
        return torch.zeros(0, KEY_BYTES, dtype=torch.uint8)
    return torch.frombuffer(bytearray(b"".join(keys)), dtype=torch.uint8).reshape(len(keys), KEY_BYTES)  # (N, 16)


def _keys_list(t: torch.Tensor) -> list[bytes]:
    data = t.contiguous().numpy().tobytes()
    return [data[i : i + KEY_BYTES] for i in range(0, len(data), KEY_BYTES)]


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
                differences = have.diff(fingerprint)
                lines = "\n  ".join(differences)
                raise StoreMismatchError(
                    f"the store at {kv.path} was made by another model or setting:\n  {lines}\n"
                    "Its entries would be wrong for this run. Rebuild it: delete the folder (or pass another "
                    "--store) and fill again, or open it with the model and settings that made it.",
                    differences,
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

    def add_split(self, name: str, split: Split) -> None:
        """Record which examples (keys, in dataset order) form a split, with their labels and lengths.

        One meta value per split (safetensors bytes, base64 because meta values are text), so a split is
        replaced atomically and its 16-byte keys cost 22 bytes each, not a JSON list of hex strings.
        """
        self._check_split_name(name)
        self.kv.set_meta(f"split:{name}", base64.b64encode(encode(split.to_entry())).decode())
        names = self.split_names()
        if name not in names:
            self.kv.set_meta("splits", json.dumps([*names, name]))

    def find_split(self, name: str) -> Split | None:
        """The split recorded under ``name``, or ``None``."""
        self._check_split_name(name)
        v = self.kv.get_meta(f"split:{name}")
        return None if v is None else Split.from_entry(decode(base64.b64decode(v), f"split:{name}".encode()))

    def get_split(self, name: str) -> Split:
        """The split recorded by a fill; raises with the splits that exist and how to make this one."""
        split = self.find_split(name)
        if split is None:
            have = self.split_names()
            raise StoreError(
                f"the store at {self.path} has no split {name!r} (it has {have or 'none'}). Fill it first: "
                f"ember recycle fill --split {name} ... (Recycler.fill(data, split={name!r}))"
            )
        return split

    def _check_split_name(self, name: object) -> None:
        """Refuse a split name that is not a non-empty string (``None`` was recorded as a split called None)."""
        if isinstance(name, str) and name.strip():
            return
        have = self.split_names()
        problem = "an empty name" if isinstance(name, str) else f"{type(name).__name__} {name!r:.40}"
        error = ValueError if isinstance(name, str) else TypeError
        raise error(
            f"a split is named by a non-empty str such as 'train' or 'test', got {problem}; the store at {self.path} "
            f"has the splits {have or '(none yet)'}. Pass split='train' (or another name) to fill and dataset."
        )

    def split_names(self) -> list[str]:
        v = self.kv.get_meta("splits")
        return [] if v is None else json.loads(v)

    def close(self) -> None:
        self.kv.close()

    def __enter__(self) -> ActivationStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
