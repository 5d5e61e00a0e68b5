"""A fingerprinted store of per-example tensors: the one store behind recycling, encoder caches and teachers."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ember.errors import StoreCorruptError, StoreError, StoreFormatError, StoreMismatchError
from ember.store.base import Backend, KVStore, open_kv
from ember.store.codec import ENTRY_FORMAT, checksum, corrupt_entry, decode, encode
from ember.store.fingerprint import Fingerprint
from ember.store.keys import KEY_BYTES, STATES

if TYPE_CHECKING:
    from ember.store.integrity import VerifyReport

Entry = dict[str, torch.Tensor]


FORMAT_META = "format"  # meta value: the entry format (ember.store.codec.ENTRY_FORMAT) the store was written in


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
        self._recorded: set[bytes] | None = None  # keys the recorded splits say are stored here (see missing())
        stored = kv.get_meta("fingerprint")
        if stored is not None:
            _check_format(kv, new=False)  # before the checked read: an older store's values carry no checksum
            stored = self.get_meta("fingerprint")
        if stored is None:
            if len(kv) > 0:
                raise StoreMismatchError(
                    f"the store at {kv.path} holds entries but no fingerprint, so nothing tells what produced them; "
                    "ember never writes such a store. Delete it and fill it again."
                )
            if fingerprint is None and not kv.readonly:
                raise ValueError("a writable store needs a fingerprint; pass fingerprint=None only with readonly=True")
            _check_format(kv, new=True)
            if fingerprint is not None and not kv.readonly:
                self.set_meta("fingerprint", fingerprint.to_json())
            self.fingerprint = fingerprint
        else:
            self.fingerprint = _recorded_fingerprint(kv, stored, fingerprint)

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

    def get_meta(self, name: str) -> str | None:
        """The text value ``name`` kept beside the entries (``None`` when unset), checked against its checksum.

        Example:
            >>> store.set_meta("note", "made by a test"); store.get_meta("note")  # doctest: +SKIP
            'made by a test'
        """
        v = self.kv.get_meta(name)
        if v is None:
            return None
        head, _, value = v.partition(" ")
        if head != checksum(value.encode(), name.encode()).hex():
            raise corrupt_entry(f"meta:{name}".encode(), self.path, "its checksum does not match its text")
        return value

    def set_meta(self, name: str, value: str) -> None:
        """Keep the text ``value`` under ``name`` beside the entries, with its checksum (see :meth:`get_meta`)."""
        self.kv.set_meta(name, f"{checksum(value.encode(), name.encode()).hex()} {value}")

    def get(self, keys: Sequence[bytes]) -> list[Entry | None]:
        """Entries for ``keys`` (``None`` where missing), read in one transaction, each checked against its
        checksum (:class:`~ember.errors.StoreCorruptError` naming the key when it does not match)."""
        path = self.kv.path
        return [None if v is None else decode(v, k, store=path) for k, v in zip(keys, self.kv.get_many(keys), strict=True)]

    def missing(self, keys: Sequence[bytes]) -> list[bytes]:
        """The keys not in the store, in the given order, without duplicates.

        Raises:
            StoreCorruptError: a missing key is one a recorded split says is stored here. ember never deletes an
                entry and records a split only after all its entries are committed, so the store is damaged (a
                damaged branch page hides entries from lookups; writing them again would add duplicates).
        """
        uniq = list(dict.fromkeys(keys))
        gone = [k for k, has in zip(uniq, self.kv.has_many(uniq), strict=True) if not has]
        if gone:
            lost = [k for k in gone if k in self._recorded_keys()]
            if lost:
                raise StoreCorruptError(
                    f"the store at {self.path} is damaged: {len(lost)} entries that its recorded splits list as stored "
                    f"cannot be found (first key {lost[0].hex()}). Writing them again would not repair it. Run "
                    f"`ember store verify {self.path}` to list the damage, then delete the store and fill it again."
                )
        return gone

    def _recorded_keys(self) -> set[bytes]:
        """Keys of the recorded splits' ``states`` column (the column that points into this store), read once."""
        if self._recorded is None:
            self._recorded = set()
            for name in self.split_names():
                split = self.find_split(name)
                self._recorded.update(() if split is None else split.keys.get(STATES, ()))
        return self._recorded

    def put(self, keys: Sequence[bytes], entries: Sequence[Entry]) -> None:
        """Write entries atomically: after a crash all of them are there or none is."""
        self.kv.put_many([(k, encode(e, k)) for k, e in zip(keys, entries, strict=True)])

    @property
    def label_names(self) -> list[str] | None:
        v = self.get_meta("label_names")
        return None if v is None else json.loads(v)

    def merge_label_names(self, names: Sequence[str]) -> list[str]:
        """Add new label names after the known ones (ids never move) and return the full list."""
        have = self.label_names or []
        new = have + [n for n in names if n not in set(have)]
        if new != have:
            self.set_meta("label_names", json.dumps(new))
        return new

    def add_split(self, name: str, split: Split) -> None:
        """Record which examples (keys, in dataset order) form a split, with their labels and lengths.

        One meta value per split (safetensors bytes, base64 because meta values are text), so a split is
        replaced atomically and its 16-byte keys cost 22 bytes each, not a JSON list of hex strings.
        """
        self._check_split_name(name)
        key = f"split:{name}".encode()
        self.kv.set_meta(f"split:{name}", base64.b64encode(encode(split.to_entry(), key)).decode())
        if self._recorded is not None:
            self._recorded.update(split.keys.get(STATES, ()))
        names = self.split_names()
        if name not in names:
            self.set_meta("splits", json.dumps([*names, name]))

    def find_split(self, name: str) -> Split | None:
        """The split recorded under ``name``, or ``None``."""
        self._check_split_name(name)
        v = self.kv.get_meta(f"split:{name}")
        return None if v is None else Split.from_entry(decode(base64.b64decode(v), f"split:{name}".encode(), store=self.path))

    def get_split(self, name: str) -> Split:
        """The split recorded by a fill; raises with the splits that exist and how to make this one."""
        split = self.find_split(name)
        if split is None:
            have = self.split_names()
            raise StoreError(
                f"the store at {self.path} has no split {name!r} (it has {have or 'none'}). Record it first: fill the "
                f"store from that split's data with split={name!r}"
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
        v = self.get_meta("splits")
        return [] if v is None else json.loads(v)

    def verify(self) -> VerifyReport:
        """Read and check every entry and record of the store, as SQLite's ``PRAGMA integrity_check`` does.

        An LMDB store is walked in a child process, so that damage which makes LMDB abort (an assertion on a
        zeroed page) is reported instead of ending this process. See :func:`ember.store.verify.verify_store`.

        Example:
            >>> ActivationStore.open("states", None, readonly=True).verify().ok  # doctest: +SKIP
            True
        """
        from ember.store.integrity import verify_open

        return verify_open(self)

    def close(self) -> None:
        self.kv.close()

    def __enter__(self) -> ActivationStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_format(kv: KVStore, *, new: bool) -> None:
    """Record the entry format in a new store; refuse an existing store written in another one."""
    have = kv.get_meta(FORMAT_META)
    if have is None and new:
        if not kv.readonly:
            kv.set_meta(FORMAT_META, str(ENTRY_FORMAT))
        return
    if have == str(ENTRY_FORMAT):
        return
    if have is None or (have.isdigit() and int(have) < ENTRY_FORMAT):
        raise StoreFormatError(
            f"the store at {kv.path} was made by an older ember: its entries carry no checksum (entry format "
            f"{have or 1}; this ember writes and reads format {ENTRY_FORMAT}), so a damaged entry could not be told from "
            "a good one and it is not read. Refill it: delete the folder and rerun the fill."
        )
    raise StoreFormatError(
        f"the store at {kv.path} was made by a newer ember (entry format {have}; this one reads format "
        f"{ENTRY_FORMAT}). Upgrade ember (pip install -U ember), or refill the store with this one."
    )


def _recorded_fingerprint(kv: KVStore, stored: str, wanted: Fingerprint | None) -> Fingerprint:
    """The fingerprint the store recorded (text ``stored``), which must equal ``wanted`` when one is given."""
    try:
        have = Fingerprint.from_json(stored)
    except (TypeError, ValueError) as exc:
        raise StoreMismatchError(
            f"the store at {kv.path} has a fingerprint this version of ember cannot read ({exc}); "
            "it was made by another ember version. Delete it and fill it again."
        ) from exc
    if wanted is not None and have != wanted:
        differences = have.diff(wanted)
        lines = "\n  ".join(differences)
        raise StoreMismatchError(
            f"the store at {kv.path} was made by another model or setting:\n  {lines}\n"
            "Its entries would be wrong for this run. Rebuild it: delete the folder (or pass another "
            "--store) and fill again, or open it with the model and settings that made it.",
            differences,
        )
    return have
