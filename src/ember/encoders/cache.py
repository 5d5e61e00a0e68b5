"""Frozen-encoder embedding cache: fill once through the store's one fill, train a head from memory, serve new texts.

Built on the one store: one :class:`~ember.store.ActivationStore` per encoder (fingerprinted with
``kind="encoder"`` and the pooling), entries ``{"embedding": (D,)}`` keyed by the encoder's key scheme,
filled by :func:`ember.store.fill.fill_split`. The examples of a split (their keys per encoder and their
labels) are a :class:`~ember.store.Split` record, the same record recycling keeps, in a small store beside them
(one key column per encoder), so a later process trains without reading or tokenizing the raw data.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ember.data.columns import read_columns
from ember.data.texts import check_texts, check_tokenized, structural_ids
from ember.encoders.config import CacheConfig
from ember.encoders.data import CachedDataset, EmbeddingTable, Source
from ember.encoders.encoder import Encoder, open_handle
from ember.encoders.errors import CacheConfigError, LabelCachingError
from ember.encoders.placement import Sources, serving_dtype, training_device
from ember.errors import DataError, MissingEntriesError
from ember.models.inputs import tokenize
from ember.models.sentence import is_sentence_transformer
from ember.store.activations import ActivationStore
from ember.store.fill import Column, FillReport, SplitLabels, fill_split, write_back
from ember.store.fingerprint import Fingerprint
from ember.store.handle import store_exists
from ember.store.registry import check_not_a_store

SINGLE = "text"  # the encoder's name when a single module is given
_SPLITS = "_splits"  # folder of the split index inside save_dir
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


def _recorded_fingerprint(config: CacheConfig, name: str) -> Fingerprint | None:
    """The fingerprint the store ``name`` of ``save_dir`` recorded, or ``None`` when there is no such store."""
    path = None if config.save_dir is None else Path(config.save_dir) / name
    if not store_exists(path, config.backend):
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
        tokenizers: one tokenizer for all encoders, or ``{name: tokenizer}``; ``None`` (or a name left out) for a
            ``SentenceTransformer``, which brings its own.
        config: storage, pooling and fill settings (:class:`CacheConfig`).

    Example:
        >>> enc.requires_grad_(False)                                              # doctest: +SKIP
        >>> cache = EncoderCache({"query": enc, "doc": enc}, tok, CacheConfig(save_dir="cache/"))  # doctest: +SKIP
        >>> cache.fill({"query": queries, "doc": docs}, labels=labels)             # doctest: +SKIP
        >>> for batch in cache.dataset("train").loader(32):                        # doctest: +SKIP
        ...     loss = head(batch["query"], batch["doc"], batch["labels"])
        >>> head(**cache.embed({"query": ["new question"], "doc": ["new answer"]}))  # doctest: +SKIP
    """

    def __init__(self, encoders: nn.Module | Mapping[str, nn.Module], tokenizers=None, config: CacheConfig | None = None) -> None:
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
        missing = [n for n in names if tokenizers.get(n) is None and not is_sentence_transformer(encoders[n])]
        if missing:
            raise CacheConfigError(f"no tokenizer for encoders {missing}; pass one tokenizer or {{name: tokenizer}} for {names}")
        self.config = config
        self.encoders: dict[str, Encoder] = {}
        try:
            for n in names:
                self.encoders[n] = Encoder(n, encoders[n], tokenizers.get(n), config)
            self._splits = open_handle(config, _SPLITS, self._splits_fingerprint(), "the split index")
        except BaseException:
            self.close()
            raise
        self._sources = Sources(config, self.encoders.__getitem__, self._lock)

    @property
    def names(self) -> list[str]:
        return list(self.encoders)

    @property
    def splits(self) -> ActivationStore:
        """The split index (keys per encoder and labels of every filled split)."""
        return self._splits.store

    def _splits_fingerprint(self) -> Fingerprint:
        # Keys depend on each encoder's tokenizer, truncation and key scheme; nothing else. The order of the
        # encoders (of the dict given) means nothing: an index recorded with the same names in another order
        # is the same index, so its order is kept.
        names = self.names
        recorded = _recorded_fingerprint(self.config, _SPLITS)
        if recorded is not None and sorted(recorded.architecture.split(",")) == sorted(names):
            names = recorded.architecture.split(",")
        settings = [(n, f"{e.fingerprint.tokenizer}:{e.max_length}:{e.key_name}") for n in names for e in [self.encoders[n]]]
        return Fingerprint.of("encoder-splits", architecture=",".join(names), dtype="int64", settings=settings)

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
        columns, labels = read_columns(data, labels, self.names, num_workers=self.config.num_workers,
                                       check_transform=self.config.check_transform)
        n = len(next(iter(columns.values())))
        split_labels = SplitLabels.encode(labels, self.splits, n)
        todo = []
        for name, enc in self.encoders.items():
            texts = check_texts(columns[name], allow_empty)
            ids = tokenize(enc.tokenizer, texts, enc.max_length, num_workers=self.config.num_workers)
            check_tokenized(texts, ids, structural_ids(enc.tokenizer), allow_empty)
            keys = enc.keys.keys(texts, ids)
            enc.check_keys(texts, ids, keys)
            todo.append(Column(name, enc.handle, enc.producer, ids, keys, description=f"caching {name!r} embeddings",
                               check=enc.check_entries))
        reports = fill_split(todo, self._splits, split, split_labels, why=f"fill(split={split!r})",
                             fix="open it with readonly=False in one process to write",
                             batch_size=self.config.batch_size, progress=progress)
        for name, r in reports.items():
            if r.computed:  # its tables are stale now (on-disk sources read the store)
                self._sources.stale(name)
        return CacheFillReport(split=split, examples=n, labels=split_labels is not None, encoders=reports)

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
            src, placements[name] = self._sources.get(name, dev)
            try:
                located = src.locate(keys)
            except MissingEntriesError:
                if not isinstance(src, EmbeddingTable):
                    raise
                # Loaded before another process (the writer) added these entries: reload once from the store.
                self._sources.drop(src)
                src, placements[name] = self._sources.get(name, dev)
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
        return {name: self._sources.placement(name, dev) for name in self.names}

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

    def _embed_one(self, name: str, texts: list[str], write_back_misses: bool, device, dtype,
                   allow_empty: bool = False) -> torch.Tensor:
        enc = self.encoders[name]
        if not texts:
            raise DataError(f"nothing to embed for encoder {name!r}: its list of texts is empty")
        ids = tokenize(enc.tokenizer, texts, enc.max_length)
        check_tokenized(texts, ids, structural_ids(enc.tokenizer), allow_empty)
        keys = enc.keys.keys(texts, ids)
        enc.check_keys(texts, ids, keys)  # a custom key naming another stored input would serve its embedding
        out: list[torch.Tensor | None] = [None] * len(texts)
        table = self._sources.table(name)
        if table is not None:
            for i, k in enumerate(keys):
                row = table.index.get(k)
                if row is not None:
                    out[i] = table.matrix[row]  # (D,)
        todo = [i for i, v in enumerate(out) if v is None]
        if todo:
            for i, e in zip(todo, enc.store.get([keys[i] for i in todo]), strict=True):
                if e is not None:
                    out[i] = e["embedding"]  # (D,)
        miss = [i for i, v in enumerate(out) if v is None]
        if miss and write_back_misses:
            enc.handle.take_writer("embed(write_back=True)")  # held until close()
        for b in range(0, len(miss), self.config.batch_size):
            idx = miss[b : b + self.config.batch_size]
            entries = enc.entries([ids[i] for i in idx])
            for i, e in zip(idx, entries, strict=True):
                out[i] = e["embedding"]
            if write_back_misses:
                write_back(enc.store, [keys[i] for i in idx], entries)
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
        if getattr(self, "_sources", None) is not None:
            self._sources.loaded = {}

    def __enter__(self) -> EncoderCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
