"""Frozen-encoder embedding cache: fill once with the store's fill loop, train a head from memory, serve new texts.

Built on the recycling store: one :class:`~ember.store.ActivationStore` per encoder (fingerprinted with
``kind="encoder"`` and the pooling), entries ``{"embedding": (D,)}`` keyed by the content hash of the
encoder's token ids, filled by :func:`ember.store.fill.fill`. The examples of a split (their keys per
encoder and their labels) are a :class:`~ember.store.Split` record, the same record recycling keeps, in
a small store beside them (one key column per encoder), so a later process trains without reading or
tokenizing the raw data.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ember.data.labels import encode_labels
from ember.data.loaders import Examples
from ember.data.texts import check_texts, check_tokenized, structural_ids
from ember.encoders.config import CacheConfig, KeyExtractor, NamedPooling, Pooling
from ember.encoders.data import CachedDataset, EmbeddingTable, Source, StoreSource
from ember.encoders.errors import (
    CacheConfigError,
    EmbeddingShapeError,
    KeyCollisionError,
    LabelCachingError,
    RandomTransformError,
    TrainableEncoderError,
)
from ember.encoders.pooling import pooling_fn, pooling_name
from ember.errors import (
    DataError,
    MissingEntriesError,
    StoreError,
    StoreMismatchError,
    StoreReadOnlyError,
    UnsupportedModelError,
)
from ember.models.checks import check_module, is_causal_decoder
from ember.models.families import find_parts
from ember.models.inputs import pad_ids, tokenize
from ember.models.load import resolve_max_length
from ember.models.split import frozen_eval
from ember.store.activations import ActivationStore, Entry, Split
from ember.store.base import STORE_MARKERS
from ember.store.codec import torch_dtype
from ember.store.fill import FillReport, fill
from ember.store.fingerprint import Fingerprint, config_hash, tokenizer_hash, weights_hash
from ember.store.keys import KEY_BYTES, content_key
from ember.store.registry import check_not_a_store

SINGLE = "text"  # the encoder's name when a single module is given
_SPLITS = "_splits"  # folder of the split index inside save_dir
_SHAPE_META = "embedding_shape"
_NAME_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_RESERVED = ("label", "labels", "index")  # batch keys besides the encoders' names


@dataclass
class CacheFillReport:
    """What :meth:`EncoderCache.fill` did, per encoder, and the split it recorded."""

    split: str
    examples: int
    labels: bool
    encoders: dict[str, FillReport] = field(default_factory=dict)

    @property
    def computed(self) -> int:
        return sum(r.computed for r in self.encoders.values())

    def to_dict(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "encoders"}, "encoders": {n: r.to_dict() for n, r in self.encoders.items()}}


class _Encoder:
    """One cached encoder: its module, tokenizer, pooling, key extractor, fingerprint and store."""

    def __init__(self, name: str, encoder: nn.Module, tokenizer, config: CacheConfig) -> None:
        check_module(encoder, f"encoder {name!r}")
        self.name = name
        self.module = getattr(encoder, "base_model", encoder) if hasattr(encoder, "config") else encoder
        _refuse_trainable(name, self.module)
        self.tokenizer = tokenizer
        self.pooling = config.pooling_of(name)
        _warn_causal(name, self.module, self.pooling)
        self.pool = pooling_fn(self.pooling)
        self.key_extractor: KeyExtractor | None = config.key_extractors.get(name)
        self.max_length = resolve_max_length(tokenizer, self.module, config.max_length)
        self.dtype = torch_dtype(config.dtype)
        try:
            architecture = find_parts(self.module).architecture
        except UnsupportedModelError:
            architecture = f"{type(self.module).__module__}.{type(self.module).__name__}"
        self.fingerprint = Fingerprint(
            kind="encoder",
            architecture=architecture,
            weights=weights_hash([self.module]),
            layer=-1,
            dtype=config.dtype,
            tokenizer=tokenizer_hash(tokenizer),
            max_length=self.max_length,
            # config: fields that change the output without changing a weight (activation, layer-norm eps …),
            # as recycling records them
            extra=(
                ("pooling", pooling_name(self.pooling)),
                ("key", self.key_name),
                ("config", config_hash(getattr(self.module, "config", None))),
            ),
        )
        self.handle = _StoreHandle(config, name, self.fingerprint, f"encoder {name!r}")
        self.custom_keys = self.key_extractor is not None

    @property
    def store(self) -> ActivationStore:
        """The encoder's store as opened now: read-only unless a fill or a write-back holds the writer."""
        return self.handle.store

    @property
    def key_name(self) -> str:
        return "content" if self.key_extractor is None else self.key_extractor.name

    @property
    def device(self) -> torch.device:
        p = next(self.module.parameters(), None)
        return torch.device("cpu") if p is None else p.device

    # -- keys -------------------------------------------------------------------------------------------
    def keys(self, texts: Sequence[str], ids: Sequence[Sequence[int]]) -> list[bytes]:
        if self.key_extractor is None:
            return [content_key(x) for x in ids]
        prefix = self.key_extractor.name.encode() + b"\0"
        out = []
        for t in texts:
            k = self.key_extractor.fn(t)
            raw = k if isinstance(k, bytes) else str(k).encode()
            out.append(hashlib.blake2b(prefix + raw, digest_size=KEY_BYTES).digest())
        return out

    def check_collisions(self, texts: Sequence[str], ids: Sequence[Sequence[int]], keys: Sequence[bytes]) -> None:
        """A custom key must name one input: within this fill and against what the store already holds."""
        if not self.custom_keys:
            return  # content keys are the content's hash
        seen: dict[bytes, tuple[bytes, int]] = {}
        for i, (k, x) in enumerate(zip(keys, ids, strict=True)):
            c = content_key(x)
            j = seen.setdefault(k, (c, i))
            if j[0] != c:
                raise KeyCollisionError(
                    f"the key extractor {self.key_name!r} of encoder {self.name!r} gave the same key to two different "
                    f"inputs: {texts[j[1]]!r} (example {j[1]}) and {texts[i]!r} (example {i}); a key must identify "
                    "the input itself (a dataset index collides between train and validation). Use the default "
                    "content key or make the extractor unique per input."
                )
        stored = dict(zip(seen, self.store.get(list(seen)), strict=True))
        for k, e in stored.items():
            if e is not None and bytes(e["content"].tolist()) != seen[k][0]:
                i = seen[k][1]
                raise KeyCollisionError(
                    f"the key extractor {self.key_name!r} of encoder {self.name!r} gave example {i} ({texts[i]!r}) a key "
                    "that the store already holds for a different input (an index-like key reused across splits?). "
                    "Make the extractor unique per input, or use the default content key."
                )

    # -- computing --------------------------------------------------------------------------------------
    def compute(self, ids: list[list[int]], contents: Mapping[bytes, bytes] | None = None) -> torch.Tensor:
        """Pooled embeddings ``(B, D)`` of unpadded id lists, in eval mode without gradients."""
        input_ids, mask = pad_ids(ids, self.tokenizer, self.device)  # (B, T), (B, T)
        with frozen_eval(self.module), torch.no_grad():
            out = self.module(input_ids=input_ids, attention_mask=mask)
            hidden = out[0] if isinstance(out, tuple) else getattr(out, "last_hidden_state", out)  # (B, T, H)
            pooled = self.pool(hidden, mask, out)  # (B, D)
        if not isinstance(pooled, torch.Tensor) or pooled.dim() != 2 or pooled.shape[0] != len(ids):
            got = tuple(pooled.shape) if isinstance(pooled, torch.Tensor) else type(pooled).__name__
            raise EmbeddingShapeError(
                f"pooling {pooling_name(self.pooling)!r} of encoder {self.name!r} returned {got} for a batch of {len(ids)}; "
                "it must return one vector per example, (B, D)"
            )
        self.check_shape(tuple(pooled.shape[1:]))
        return pooled

    def entries(self, ids: list[list[int]]) -> list[Entry]:
        """Store entries of a batch (the fill loop's ``compute``); records the embedding shape on first write."""
        pooled = self.compute(ids)
        if self.handle.writer:
            self.check_shape(tuple(pooled.shape[1:]), record=True)
        pooled = pooled.to("cpu", self.dtype)
        out: list[Entry] = []
        for x, v in zip(ids, pooled, strict=True):
            e = {"embedding": v.clone()}
            if self.custom_keys:  # what the key names, to catch key collisions across fills
                e["content"] = torch.tensor(list(content_key(x)), dtype=torch.uint8)
            out.append(e)
        return out

    def check_shape(self, shape: tuple[int, ...], *, record: bool = False) -> None:
        """Refuse a shape other than the recorded one; ``record`` writes it when none is (writer only)."""
        recorded = self.store.kv.get_meta(_SHAPE_META)
        if recorded is None:
            if record:
                self.store.kv.set_meta(_SHAPE_META, json.dumps(list(shape)))
            return
        want = tuple(json.loads(recorded))
        if want != shape:
            raise EmbeddingShapeError(
                f"encoder {self.name!r} returned embeddings of shape {shape}, but its store at {self.store.path} recorded "
                f"{want}: the encoder (or its pooling function) changed without changing its weights or pooling name. "
                "Give the pooling a new name, or delete the store and fill again."
            )


def _warn_causal(name: str, module: nn.Module, pooling: Pooling) -> None:
    """Warn when a built-in pooling meant for encoders pools a causal decoder (GPT-2, Llama …)."""
    if isinstance(pooling, NamedPooling) or not is_causal_decoder(module):
        return
    model_type = getattr(getattr(module, "config", None), "model_type", None)
    warnings.warn(
        f"encoder {name!r} ({type(module).__name__}, model_type={model_type!r}) is a causal decoder: each token's state "
        f"sees only the tokens before it, so its {pooling!r} pooling is not what an encoder's would be ('mean' weighs "
        "the first words most, 'cls' sees the first token alone). Use an encoder (a BERT-like or sentence-transformers "
        "model), or pool the last real token with pooling=NamedPooling('last', lambda h, m, out: "
        "h[torch.arange(len(h)), m.sum(1) - 1]).",
        UserWarning,
        stacklevel=4,
    )


def _refuse_trainable(name: str, module: nn.Module) -> None:
    trainable = [n for n, p in module.named_parameters() if p.requires_grad]
    if trainable:
        raise TrainableEncoderError(
            f"encoder {name!r} has {len(trainable)} trainable parameter tensors (first: {trainable[0]}). The cache stores "
            "an encoder's output once, which stays right only while its weights never change, and labels can be "
            "cached only when every cached encoder is frozen. Freeze it with encoder.requires_grad_(False) (and keep it "
            "out of the optimizer), or leave it out of the EncoderCache and run it on raw inputs in your loop."
        )


class _StoreHandle:
    """One store of the cache: opened read-only while it is only read, as the writer only while written.

    An on-disk store that exists is opened read-only, so any number of processes (a sweep, a serving
    process, a second run starting from ``save_dir``) read it while one of them writes. A store that does
    not exist yet is created by the writer; an in-memory store (no ``save_dir``) is always writable.
    """

    def __init__(self, config: CacheConfig, name: str, fingerprint: Fingerprint, what: str) -> None:
        self.config, self.name, self.fingerprint, self.what = config, name, fingerprint, what
        self.path = None if config.save_dir is None else Path(config.save_dir) / name
        self.backend = "memory" if self.path is None else config.backend
        marker = STORE_MARKERS.get(self.backend)
        exists = self.path is not None and marker is not None and (self.path / marker).exists()
        if config.readonly and not exists:
            raise StoreError(
                f"CacheConfig(readonly=True), but save_dir {config.save_dir} has no store for {what} ({self.path} "
                "does not exist): fill the cache first with readonly=False, or check save_dir"
            )
        self.store = self._open(readonly=exists)

    @property
    def writer(self) -> bool:
        return not self.store.kv.readonly

    def take_writer(self, why: str) -> bool:
        """Reopen as the writer (``StoreLockedError`` if another process writes); True when it was read-only."""
        if self.writer:
            return False
        if self.config.readonly:
            raise StoreReadOnlyError(
                f"{why} needs to write the store of {self.what} at {self.path}, but the cache was opened with "
                "CacheConfig(readonly=True); open it with readonly=False in one process to write"
            )
        self.store.close()
        try:
            self.store = self._open(readonly=False)
        except BaseException:
            self.store = self._open(readonly=True)
            raise
        return True

    def release_writer(self) -> None:
        """Give the writer lock back (reopen read-only); a no-op for in-memory or read-only stores."""
        if self.path is None or self.backend not in STORE_MARKERS or not self.writer:
            return
        self.store.close()
        self.store = self._open(readonly=True)

    def _open(self, readonly: bool) -> ActivationStore:
        try:
            return ActivationStore.open(self.path, self.fingerprint, backend=self.backend, readonly=readonly)
        except StoreMismatchError as exc:
            lines = "\n  ".join(exc.differences) or str(exc)
            raise StoreMismatchError(
                f"save_dir {self.config.save_dir} holds embeddings of {self.what} made by another encoder or setting:\n"
                f"  {lines}\nReading them would train on stale embeddings. Use another save_dir, delete "
                f"{self.path} to refill it, or open it with the encoder and pooling that made it.",
                exc.differences,
            ) from None

    def close(self) -> None:
        self.store.close()


def _recorded_fingerprint(config: CacheConfig, name: str) -> Fingerprint | None:
    """The fingerprint the store ``name`` of ``save_dir`` recorded, or ``None`` when there is no such store."""
    if config.save_dir is None or config.backend not in STORE_MARKERS:
        return None
    path = Path(config.save_dir) / name
    if not (path / STORE_MARKERS[config.backend]).exists():
        return None
    with ActivationStore.open(path, None, backend=config.backend, readonly=True) as store:
        return store.fingerprint


def check_encoder_names(names: Sequence) -> None:
    """Refuse encoder names that are not safe folder names in ``save_dir`` or that clash with batch keys."""
    for n in names:
        if not isinstance(n, str) or not _NAME_RULE.fullmatch(n) or n in _RESERVED:
            raise CacheConfigError(
                f"encoder name {n!r} is not allowed: a name is a folder in save_dir and a batch key, so it must be 1 to "
                "100 letters, digits, '_', '-' or '.', starting with a letter or digit (no '/', no '..'), and not "
                f"one of {list(_RESERVED)}"
            )
    folded: dict[str, str] = {}
    for n in names:
        other = folded.setdefault(n.lower(), n)
        if other != n:
            raise CacheConfigError(
                f"encoder names {other!r} and {n!r} differ only in case; their folders would be the same on a "
                "case-insensitive file system. Rename one."
            )


def _in_turn(method):
    """Runs an :class:`EncoderCache` method holding the cache's lock (why: ``EncoderCache.__init__``)."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return run


class EncoderCache:
    """Embeddings of one or several named frozen encoders, computed once and served to training and inference.

    Args:
        encoders: a frozen module, or ``{name: module}`` (e.g. ``{"query": enc_a, "doc": enc_b}``). A module
            with any ``requires_grad`` parameter is refused. Hugging Face models with a head are run through
            their ``base_model``.
        tokenizers: one tokenizer for all encoders, or ``{name: tokenizer}``.
        config: storage, pooling and fill settings (:class:`CacheConfig`).

    Example:
        >>> enc.requires_grad_(False)                                              # doctest: +SKIP
        >>> cache = EncoderCache({"query": enc, "doc": enc}, tok, CacheConfig(save_dir="cache/"))  # doctest: +SKIP
        >>> cache.fill({"query": queries, "doc": docs}, labels=labels)             # doctest: +SKIP
        >>> for batch in cache.dataset("train").loader(32):                        # doctest: +SKIP
        ...     loss = head(batch["query"], batch["doc"], batch["labels"])
        >>> head(**cache.embed({"query": ["new question"], "doc": ["new answer"]}))  # doctest: +SKIP
    """

    def __init__(self, encoders: nn.Module | Mapping[str, nn.Module], tokenizers, config: CacheConfig | None = None) -> None:
        # fill, dataset, embed and close take turns across threads (a server's workers): a fill, or embed's first
        # write_back, reopens a store as its writer, closing the handle other calls read through (found with 4
        # threads calling embed(write_back=True): 13 of 200 calls failed on a closed or half-swapped store); the
        # encoder's forward already uses every core. Re-entrant: fill and dataset call each other's helpers.
        self._lock = threading.RLock()
        config = config or CacheConfig()
        if not isinstance(encoders, Mapping):  # one encoder (each is checked to be a module below)
            encoders = {SINGLE: encoders}
        if not encoders:
            raise CacheConfigError("EncoderCache needs at least one encoder; got an empty mapping")
        names = list(encoders)
        check_encoder_names(names)
        config.check_names(names)
        check_not_a_store(config.save_dir, "the save_dir of an encoder cache")
        if not isinstance(tokenizers, Mapping):
            tokenizers = {n: tokenizers for n in names}
        missing = [n for n in names if n not in tokenizers]
        if missing:
            raise CacheConfigError(f"no tokenizer for encoders {missing}; pass one tokenizer or {{name: tokenizer}} for {names}")
        self.config = config
        self.encoders: dict[str, _Encoder] = {}
        try:
            for n in names:
                self.encoders[n] = _Encoder(n, encoders[n], tokenizers[n], config)
            self._splits = _StoreHandle(config, _SPLITS, self._splits_fingerprint(), "the split index")
        except BaseException:
            self.close()
            raise
        self._sources: dict[tuple[str, str, str], Source] = {}

    @property
    def names(self) -> list[str]:
        return list(self.encoders)

    @property
    def splits(self) -> ActivationStore:
        """The split index (keys per encoder and labels of every filled split)."""
        return self._splits.store

    def _splits_fingerprint(self) -> Fingerprint:
        # Keys depend on each encoder's tokenizer, truncation and key extractor; nothing else. The order of the
        # encoders (of the dict given) means nothing: an index recorded with the same names in another order
        # is the same index, so its order is kept.
        names = self.names
        recorded = _recorded_fingerprint(self.config, _SPLITS)
        if recorded is not None and sorted(recorded.architecture.split(",")) == sorted(names):
            names = recorded.architecture.split(",")
        return Fingerprint(
            kind="encoder-splits",
            architecture=",".join(names),
            weights="",
            layer=-1,
            dtype="int64",
            tokenizer="",
            max_length=0,
            extra=tuple((n, f"{e.fingerprint.tokenizer}:{e.max_length}:{e.key_name}") for n in names for e in [self.encoders[n]]),
        )

    @property
    def label_names(self) -> list[str] | None:
        """Names of string labels, in label-id order (``None`` when labels were integers).

        The names of one fill are ordered numerically when every one is an integer written as text
        (``"2"`` before ``"10"``), else lexicographically; names first seen by a later fill are appended,
        so ids never move.
        """
        return self.splits.label_names

    # -- filling ----------------------------------------------------------------------------------------
    @_in_turn
    def fill(
        self,
        data,
        labels: Sequence[int | str] | None = None,
        *,
        split: str = "train",
        progress: bool = True,
        allow_empty: bool = False,
    ) -> CacheFillReport:
        """Compute and store the embeddings of every example not stored yet, and record the split.

        Args:
            data: the encoders' inputs: texts (one encoder), :class:`~ember.data.Examples`, ``{name: texts}``,
                or a map-style dataset whose items are ``{name: text, ..., "label": y}`` dicts or
                ``(text, ..., label)`` tuples in encoder order. A dataset is read once (in
                ``config.num_workers`` worker processes) and checked for random transforms.
            labels: one label per example, all of one kind: integers (Python or numpy ints, 0-d integer
                tensors) served as they are, or strings mapped to ids kept in :attr:`label_names`. Floats and
                a mix of ints and strings are refused (:class:`~ember.errors.DataError`).
            split: name under which the examples (keys per encoder, labels) are recorded for :meth:`dataset`.
            progress: show a progress bar per encoder.
            allow_empty: accept empty texts.

        Returns:
            a :class:`CacheFillReport`. Interrupted, a rerun keeps every committed batch and computes only
            what is missing; the split is recorded once every encoder is complete.

        A fill takes the writer lock of a store only when it has something to write there (new embeddings,
        a new or changed split) and gives it back when it ends; a fill of what is stored already only reads,
        beside a process that writes.
        """
        columns, labels = self._columns(data, labels)
        n = len(next(iter(columns.values())))
        label_ids, names = (None, None) if labels is None else encode_labels(labels, self.label_names, count=n)
        report = CacheFillReport(split=split, examples=n, labels=label_ids is not None)
        ids: dict[str, list[list[int]]] = {}
        keys: dict[str, list[bytes]] = {}
        for name, enc in self.encoders.items():
            texts = columns[name]
            check_texts(texts, allow_empty)
            ids[name] = tokenize(enc.tokenizer, texts, enc.max_length, num_workers=self.config.num_workers)
            check_tokenized(texts, ids[name], structural_ids(enc.tokenizer), allow_empty)
            keys[name] = enc.keys(texts, ids[name])
            enc.check_collisions(texts, ids[name], keys[name])
        record = Split(keys, label_ids)
        # Take a writer only for what changes: a fill of what is already there reads only, so it runs beside
        # another process that writes the same save_dir. Writers are given back when the fill ends.
        writing = [self.encoders[name].handle for name in self.names if self.encoders[name].store.missing(keys[name])]
        if (names is not None and names != (self.label_names or [])) or self.splits.find_split(split) != record:
            writing.append(self._splits)
        try:
            for h in writing:
                h.take_writer(f"fill(split={split!r})")
            for name, enc in self.encoders.items():
                report.encoders[name] = fill(
                    enc.store,
                    ids[name],
                    enc.entries,
                    batch_size=self.config.batch_size,
                    keys=keys[name],
                    progress=progress,
                    description=f"caching {name!r} embeddings",
                )
                if report.encoders[name].computed:  # its tables are stale now (on-disk sources read the store)
                    self._sources = {k: v for k, v in self._sources.items() if k[0] != name or isinstance(v, StoreSource)}
            if self._splits in writing:
                if names:
                    self.splits.merge_label_names(names)
                self.splits.add_split(split, record)
        finally:
            for h in writing:
                h.release_writer()
        return report

    def _columns(self, data, labels) -> tuple[dict[str, list[str]], Sequence | None]:
        names = self.names
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
        return self._read_dataset(data, labels)

    def _read_dataset(self, data, labels) -> tuple[dict[str, list[str]], Sequence | None]:
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
        k = min(self.config.check_transform, n)
        twice = frozenset(round(j * (n - 1) / max(k - 1, 1)) for j in range(k)) if k else frozenset()
        reader = _ReadTwice(data, twice)
        loader = torch.utils.data.DataLoader(reader, batch_size=256, num_workers=self.config.num_workers, collate_fn=list)
        items = []
        for i, (x, again) in enumerate(x for batch in loader for x in batch):  # in order
            items.append(self._item(x, i))
            if again is not _NOT_READ:
                second = self._item(again, i)
                if second[0] != items[i][0]:
                    diff = next(e for e in self.names if second[0][e] != items[i][0][e])
                    raise RandomTransformError(
                        f"dataset item {i} gave encoder {diff!r} different inputs on two reads ({items[i][0][diff]!r}, "
                        f"then {second[0][diff]!r}): the dataset applies a random transform (augmentation). A cache "
                        "would freeze one random draw for every epoch. Cache the un-augmented data, or train without "
                        "the cache."
                    )
        columns = {name: [it[0][name] for it in items] for name in self.names}
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

    def _item(self, x, i: int) -> tuple[dict[str, str], object]:
        names = self.names
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

    # -- training ---------------------------------------------------------------------------------------
    @_in_turn
    def dataset(
        self,
        split: str = "train",
        *,
        labels: bool = True,
        index: bool = True,
        device: str | torch.device | nn.Module | None = None,
        dtype: str | torch.dtype | None = torch.float32,
    ) -> CachedDataset:
        """The examples of a filled split, served from their placement (no raw data, no tokenizer).

        Batches are ``{encoder: (B, D), ..., "labels": (B,), "index": (B,)}``.

        Args:
            split: the ``split`` given to :meth:`fill`.
            labels: include the stored labels (``batch["labels"]``).
            index: include each example's position in the data given to :meth:`fill` (``batch["index"]``,
                int64 on CPU), to pair cached embeddings with the raw inputs of a trainable encoder. Pass
                ``False`` for a model whose ``forward`` takes the batch as keywords and has no ``index``.
            device: where training runs, which ``auto`` placement follows (see :func:`training_device`): a
                device, or the head (its parameters' device); default ``cuda`` when
                ``torch.cuda.is_available()``, else ``cpu``. Labels go there too.
            dtype: dtype of the served embeddings (default float32, whatever the storage dtype, so an fp32
                head takes them as they are); ``None`` serves the storage dtype.
        """
        record = self.splits.find_split(split)
        if record is None:
            raise LabelCachingError(
                f"no split {split!r} in the cache: fill(data, split={split!r}) first. An interrupted fill records its "
                "split only at the end; rerun it and it computes only what is missing."
            )
        if labels and record.labels is None:
            raise LabelCachingError(
                f"split {split!r} was filled without labels, so the cache cannot serve them; pass labels to fill(), "
                "or call dataset(labels=False) and take labels from your own data"
            )
        dev = training_device(device)
        out_dtype = serving_dtype(dtype, self.encoders[self.names[0]].dtype)
        sources: dict[str, tuple[Source, object]] = {}
        placements: dict[str, str] = {}
        for name in self.names:
            keys = record.keys[name]
            src, placements[name] = self._source(name, dev)
            try:
                located = src.locate(keys)
            except MissingEntriesError:
                if not isinstance(src, EmbeddingTable):
                    raise
                # Loaded before another process (the writer) added these entries: reload once from the store.
                self._sources = {k: v for k, v in self._sources.items() if v is not src}
                src, placements[name] = self._source(name, dev)
                located = src.locate(keys)
            sources[name] = (src, located)
        lab = torch.tensor(record.labels, dtype=torch.int64, device=dev) if labels else None  # (N,)
        return CachedDataset(sources, len(record), lab, placements, dtype=out_dtype, index=index)

    def placements(self, device: str | torch.device | nn.Module | None = None) -> dict[str, str]:
        """Where each encoder's embeddings would live when training on ``device`` (``auto`` resolved).

        Example:
            >>> cache.placements("cpu")                                        # doctest: +SKIP
            {'text': 'cpu'}
        """
        dev = training_device(device)
        return {name: self._placement(name, dev) for name in self.names}

    def _placement(self, name: str, device: torch.device) -> str:
        p = self.config.placement_of(name)
        if p == "auto":
            p = "gpu" if device.type == "cuda" else "cpu"
        if p == "gpu" and not torch.cuda.is_available():
            raise CacheConfigError(
                f"placement 'gpu' for encoder {name!r} needs CUDA, but torch.cuda.is_available() is False; "
                "use 'auto' (GPU only when training on GPU) or 'cpu'"
            )
        return p

    def _source(self, name: str, device: torch.device) -> tuple[Source, str]:
        p = self._placement(name, device)
        where = {"cpu": torch.device("cpu"), "gpu": device if device.type == "cuda" else torch.device("cuda"), "mmap": device}[p]
        key = (name, p, str(where))
        if key not in self._sources:
            enc = self.encoders[name]
            what = f"encoder {name!r}"
            if p == "mmap":
                self._sources[key] = StoreSource(lambda enc=enc: enc.store, where, enc.dtype, what, lock=self._lock)
            else:  # kept in the storage dtype (a float16 table stays half size); batches are cast when served
                table = EmbeddingTable.load(enc.store, where, enc.dtype, what)
                if table.matrix.shape[0]:
                    enc.check_shape(tuple(table.matrix.shape[1:]))
                self._sources[key] = table
        return self._sources[key], p

    # -- inference --------------------------------------------------------------------------------------
    @_in_turn
    def embed(
        self,
        inputs: Sequence[str] | Mapping[str, Sequence[str]],
        *,
        write_back: bool = False,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = torch.float32,
        allow_empty: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Embeddings ``{name: (B, D)}`` of new texts; cached ones are looked up, misses computed on the fly.

        Args:
            inputs: texts (one encoder) or ``{name: texts}`` for some or all encoders.
            write_back: store the computed misses, so the next call finds them. The first miss takes the
                encoder store's writer lock (held until :meth:`close`); without ``write_back`` nothing is
                written and the stores stay read-only.
            device: where the result goes (default: the encoder's device).
            dtype: dtype of the result (default float32); ``None`` gives the storage dtype. Misses are
                rounded through the storage dtype too, so a text gives the same vector cached or not.
            allow_empty: accept empty texts (the special tokens' embedding), as ``fill(allow_empty=True)`` does.

        Safe to call from several threads: the calls take turns, with each other and with ``fill``,
        ``dataset`` and ``close``.
        """
        if not isinstance(inputs, Mapping):
            if len(self.names) != 1:
                raise DataError(f"the cache has encoders {self.names}; pass {{name: texts}}")
            inputs = {self.names[0]: inputs}
        unknown = sorted(set(inputs) - set(self.names))
        if unknown:
            raise CacheConfigError(f"no encoder named {unknown} in this cache; its encoders are {self.names}")
        columns: dict[str, list[str]] = {}
        for name, texts in inputs.items():
            columns[name] = check_texts(texts, allow_empty)  # a list, read once: a generator is not used up
        return {name: self._embed_one(name, texts, write_back, device, dtype, allow_empty) for name, texts in columns.items()}

    def _embed_one(self, name: str, texts: list[str], write_back: bool, device, dtype, allow_empty: bool = False) -> torch.Tensor:
        enc = self.encoders[name]
        if not texts:
            raise DataError(f"nothing to embed for encoder {name!r}: its list of texts is empty")
        ids = tokenize(enc.tokenizer, texts, enc.max_length)
        check_tokenized(texts, ids, structural_ids(enc.tokenizer), allow_empty)
        keys = enc.keys(texts, ids)
        enc.check_collisions(texts, ids, keys)  # a custom key naming another stored input would serve its embedding
        out: list[torch.Tensor | None] = [None] * len(texts)
        table = next((s for (n, _, _), s in self._sources.items() if n == name and isinstance(s, EmbeddingTable)), None)
        if table is not None:
            for i, k in enumerate(keys):
                row = table.index.get(k)
                if row is not None:
                    out[i] = table.matrix[row]
        todo = [i for i, v in enumerate(out) if v is None]
        if todo:
            for i, e in zip(todo, enc.store.get([keys[i] for i in todo]), strict=True):
                if e is not None:
                    out[i] = e["embedding"]
        miss = [i for i, v in enumerate(out) if v is None]
        if miss and write_back:
            enc.handle.take_writer("embed(write_back=True)")
        for b in range(0, len(miss), self.config.batch_size):
            idx = miss[b : b + self.config.batch_size]
            entries = enc.entries([ids[i] for i in idx])
            for i, e in zip(idx, entries, strict=True):
                out[i] = e["embedding"]
            if write_back:
                first = dict(zip((keys[i] for i in idx), entries, strict=True))
                enc.store.put(list(first), list(first.values()))
        dev = torch.device(device) if device is not None else enc.device
        out_dtype = serving_dtype(dtype, enc.dtype)
        return torch.stack([v.to(device=dev, dtype=out_dtype) for v in out])  # type: ignore[union-attr]  # (B, D)

    # -- life cycle -------------------------------------------------------------------------------------
    @_in_turn
    def close(self) -> None:
        for enc in getattr(self, "encoders", {}).values():
            enc.handle.close()
        if getattr(self, "_splits", None) is not None:
            self._splits.close()
        self._sources = {}

    def __enter__(self) -> EncoderCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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


def training_device(device: str | torch.device | nn.Module | None = None) -> torch.device:
    """The device training runs on, which placement ``auto`` follows.

    Args:
        device: a device, or a module (the head): the device of its first parameter or buffer (CPU if it
            has none). ``None``: ``cuda`` when ``torch.cuda.is_available()``, else ``cpu``.

    Example:
        >>> training_device("cpu")
        device(type='cpu')
    """
    if isinstance(device, nn.Module):
        t = next(iter(device.parameters()), None)
        t = t if t is not None else next(iter(device.buffers()), None)
        return torch.device("cpu") if t is None else t.device
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:  # torch: "Expected one of cpu, cuda, ... device type at start of ..."
        raise CacheConfigError(
            f"device={device!r} is not a device; pass 'cpu', 'cuda', 'cuda:0', 'mps', a torch.device, or the head "
            f"module (its parameters' device) ({str(exc).splitlines()[0]})"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CacheConfigError(f"device={device!r} needs CUDA, but torch.cuda.is_available() is False; pass 'cpu'")
    return dev


def serving_dtype(dtype: str | torch.dtype | None, storage: torch.dtype) -> torch.dtype:
    """The dtype batches are served in: ``dtype`` (a torch dtype or a name like ``"float32"``), or the storage
    dtype when ``None``."""
    if dtype is None:
        return storage
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return torch_dtype(dtype)
    except ValueError as exc:
        raise CacheConfigError(str(exc).replace("for storage", "for serving")) from None
