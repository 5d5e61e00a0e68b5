"""Frozen-encoder embedding cache: fill once with the store's fill loop, train a head from memory, serve new texts.

Built on the recycling store: one :class:`~ember.store.ActivationStore` per encoder (fingerprinted with
``kind="encoder"`` and the pooling), entries ``{"embedding": (D,)}`` keyed by the content hash of the
encoder's token ids, filled by :func:`ember.store.fill.fill`. The examples of a split (their keys per
encoder and their labels) are one more entry in a small store beside them, so a later process trains
without reading or tokenizing the raw data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ember.data.loaders import Examples
from ember.encoders.config import CacheConfig, KeyExtractor
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
from ember.errors import DataError, StoreMismatchError, UnsupportedModelError
from ember.models.families import find_parts
from ember.models.load import resolve_max_length
from ember.recycle.split import pad_ids
from ember.store.activations import ActivationStore, Entry
from ember.store.codec import torch_dtype
from ember.store.fill import FillReport, check_texts, fill, tokenize
from ember.store.fingerprint import Fingerprint, tokenizer_hash, weights_hash
from ember.store.keys import KEY_BYTES, content_key

SINGLE = "text"  # the encoder's name when a single module is given
_SPLITS = "_splits"  # folder of the split index inside save_dir
_SHAPE_META = "embedding_shape"


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


class _PrecomputedKeys:
    """A ``key_fn`` for :func:`fill` that hands out keys computed beforehand (from the texts), in order."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        self.keys, self.pos = keys, 0

    def __call__(self, ids: Sequence[int]) -> bytes:
        k = self.keys[self.pos]
        self.pos += 1
        return k


class _Encoder:
    """One cached encoder: its module, tokenizer, pooling, key extractor, fingerprint and store."""

    def __init__(self, name: str, encoder: nn.Module, tokenizer, config: CacheConfig) -> None:
        self.name = name
        self.module = getattr(encoder, "base_model", encoder) if hasattr(encoder, "config") else encoder
        _refuse_trainable(name, self.module)
        self.tokenizer = tokenizer
        self.pooling = config.pooling_of(name)
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
            extra=(("pooling", pooling_name(self.pooling)), ("key", self.key_name)),
        )
        self.store = _open_store(config, name, self.fingerprint, f"encoder {name!r}")
        self.custom_keys = self.key_extractor is not None

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
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids, mask = pad_ids(ids, pad, self.device)  # (B, T), (B, T)
        was_training = self.module.training
        self.module.eval()  # a frozen encoder is always run without dropout
        try:
            with torch.no_grad():
                out = self.module(input_ids=input_ids, attention_mask=mask)
                hidden = out[0] if isinstance(out, tuple) else getattr(out, "last_hidden_state", out)  # (B, T, H)
                pooled = self.pool(hidden, mask, out)  # (B, D)
        finally:
            self.module.train(was_training)
        if not isinstance(pooled, torch.Tensor) or pooled.dim() != 2 or pooled.shape[0] != len(ids):
            got = tuple(pooled.shape) if isinstance(pooled, torch.Tensor) else type(pooled).__name__
            raise EmbeddingShapeError(
                f"pooling {pooling_name(self.pooling)!r} of encoder {self.name!r} returned {got} for a batch of {len(ids)}; "
                "it must return one vector per example, (B, D)"
            )
        self.check_shape(tuple(pooled.shape[1:]))
        return pooled

    def entries(self, ids: list[list[int]]) -> list[Entry]:
        """Store entries of a batch (the fill loop's ``compute``)."""
        pooled = self.compute(ids).to("cpu", self.dtype)
        out: list[Entry] = []
        for x, v in zip(ids, pooled, strict=True):
            e = {"embedding": v.clone()}
            if self.custom_keys:  # what the key names, to catch key collisions across fills
                e["content"] = torch.tensor(list(content_key(x)), dtype=torch.uint8)
            out.append(e)
        return out

    def check_shape(self, shape: tuple[int, ...]) -> None:
        recorded = self.store.kv.get_meta(_SHAPE_META)
        if recorded is None:
            if not self.store.kv.readonly:
                self.store.kv.set_meta(_SHAPE_META, json.dumps(list(shape)))
            return
        want = tuple(json.loads(recorded))
        if want != shape:
            raise EmbeddingShapeError(
                f"encoder {self.name!r} returned embeddings of shape {shape}, but its store at {self.store.path} recorded "
                f"{want}: the encoder (or its pooling function) changed without changing its weights or pooling name. "
                "Give the pooling a new name, or delete the store and fill again."
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


def _open_store(config: CacheConfig, name: str, fingerprint: Fingerprint, what: str) -> ActivationStore:
    path = None if config.save_dir is None else Path(config.save_dir) / name
    backend = "memory" if path is None else config.backend
    try:
        return ActivationStore.open(path, fingerprint, backend=backend)
    except StoreMismatchError as exc:
        have = ActivationStore.open(path, None, backend=backend, readonly=True)
        try:
            lines = "\n  ".join(have.fingerprint.diff(fingerprint)) if have.fingerprint else str(exc)
        finally:
            have.close()
        raise StoreMismatchError(
            f"save_dir {config.save_dir} holds embeddings of {what} made by another encoder or setting:\n  {lines}\n"
            "Reading them would train on stale embeddings. Use another save_dir, delete "
            f"{path} to refill it, or open it with the encoder and pooling that made it."
        ) from None


def _split_key(split: str) -> bytes:
    return hashlib.blake2b(b"split\0" + split.encode(), digest_size=KEY_BYTES).digest()


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
        config = config or CacheConfig()
        if isinstance(encoders, nn.Module):
            encoders = {SINGLE: encoders}
        if not encoders:
            raise CacheConfigError("EncoderCache needs at least one encoder; got an empty mapping")
        names = list(encoders)
        bad = [n for n in names if not isinstance(n, str) or not n or n.startswith("_") or n in ("labels", "label")]
        if bad:
            raise CacheConfigError(f"encoder names {bad} are not allowed; use non-empty names not starting with '_' and not 'labels'")
        config.check_names(names)
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
            self.splits = _open_store(config, _SPLITS, self._splits_fingerprint(), "the split index")
        except BaseException:
            self.close()
            raise
        self._sources: dict[tuple[str, str, str], Source] = {}

    @property
    def names(self) -> list[str]:
        return list(self.encoders)

    def _splits_fingerprint(self) -> Fingerprint:
        # Keys depend on each encoder's tokenizer, truncation and key extractor; nothing else.
        return Fingerprint(
            kind="encoder-splits",
            architecture=",".join(self.encoders),
            weights="",
            layer=-1,
            dtype="int64",
            tokenizer="",
            max_length=0,
            extra=tuple((n, f"{e.fingerprint.tokenizer}:{e.max_length}:{e.key_name}") for n, e in self.encoders.items()),
        )

    @property
    def label_names(self) -> list[str] | None:
        """Names of string labels, in label-id order (``None`` when labels were integers)."""
        return self.splits.label_names

    # -- filling ----------------------------------------------------------------------------------------
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
            labels: one label per example (ints, or strings mapped to ids kept in :attr:`label_names`).
            split: name under which the examples (keys per encoder, labels) are recorded for :meth:`dataset`.
            progress: show a progress bar per encoder.
            allow_empty: accept empty texts.

        Returns:
            a :class:`CacheFillReport`. Interrupted, a rerun keeps every committed batch and computes only
            what is missing; the split is recorded once every encoder is complete.
        """
        columns, labels = self._columns(data, labels)
        n = len(next(iter(columns.values())))
        label_ids = None if labels is None else self._label_ids(labels)
        report = CacheFillReport(split=split, examples=n, labels=label_ids is not None)
        keys: dict[str, list[bytes]] = {}
        for name, enc in self.encoders.items():
            texts = columns[name]
            check_texts(texts, allow_empty)
            ids = tokenize(enc.tokenizer, texts, enc.max_length, num_workers=self.config.num_workers)
            keys[name] = enc.keys(texts, ids)
            enc.check_collisions(texts, ids, keys[name])
            report.encoders[name] = fill(
                enc.store,
                ids,
                enc.entries,
                batch_size=self.config.batch_size,
                key_fn=_PrecomputedKeys(keys[name]),
                progress=progress,
                description=f"caching {name!r} embeddings",
            )
            self._sources = {k: v for k, v in self._sources.items() if k[0] != name}  # tables are stale now
        record: Entry = {f"keys.{name}": _keys_tensor(k) for name, k in keys.items()}
        if label_ids is not None:
            record["label"] = torch.tensor(label_ids, dtype=torch.int64)  # (N,)
        self.splits.put([_split_key(split)], [record])
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
        try:
            n = len(data)
        except TypeError:
            raise DataError(
                f"cannot read a {type(data).__name__}: pass texts, {{name: texts}}, Examples or a map-style dataset "
                "(with __len__ and __getitem__)"
            ) from None
        workers = self.config.num_workers
        loader = torch.utils.data.DataLoader(data, batch_size=256, num_workers=workers, collate_fn=list)  # in order
        items = [self._item(x, i) for i, x in enumerate(x for batch in loader for x in batch)]
        # Read a spread of items a second time: a random (augmenting) transform gives other inputs, which a
        # cache would freeze into one arbitrary draw. Caching needs a deterministic dataset.
        k = min(self.config.check_transform, n)
        for i in sorted({round(j * (n - 1) / max(k - 1, 1)) for j in range(k)}) if k else []:
            again = self._item(data[i], i)
            if again[0] != items[i][0]:
                diff = next(e for e in self.names if again[0][e] != items[i][0][e])
                raise RandomTransformError(
                    f"dataset item {i} gave encoder {diff!r} different inputs on two reads ({items[i][0][diff]!r}, then "
                    f"{again[0][diff]!r}): the dataset applies a random transform (augmentation). A cache would freeze "
                    "one random draw for every epoch. Cache the un-augmented data, or train without the cache."
                )
        columns = {name: [it[0][name] for it in items] for name in self.names}
        if labels is None and items and all(it[1] is not None for it in items):
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

    def _label_ids(self, labels: Sequence[int | str]) -> list[int]:
        if all(isinstance(x, int) and not isinstance(x, bool) for x in labels):
            return [int(x) for x in labels]
        names = self.splits.merge_label_names(sorted({str(x) for x in labels}))
        index = {n: i for i, n in enumerate(names)}
        return [index[str(x)] for x in labels]

    # -- training ---------------------------------------------------------------------------------------
    def dataset(self, split: str = "train", *, labels: bool = True, device: str | torch.device | None = None) -> CachedDataset:
        """The examples of a filled split, served from their placement (no raw data, no tokenizer).

        Args:
            split: the ``split`` given to :meth:`fill`.
            labels: include the stored labels (``batch["labels"]``).
            device: where training runs (default: the first encoder's device); ``auto`` placement follows it.
        """
        record = self.splits.get([_split_key(split)])[0]
        if record is None:
            raise LabelCachingError(
                f"no split {split!r} in the cache: fill(data, split={split!r}) first. An interrupted fill records its "
                "split only at the end; rerun it and it computes only what is missing."
            )
        if labels and "label" not in record:
            raise LabelCachingError(
                f"split {split!r} was filled without labels, so the cache cannot serve them; pass labels to fill(), "
                "or call dataset(labels=False) and take labels from your own data"
            )
        dev = torch.device(device) if device is not None else self.encoders[self.names[0]].device
        sources: dict[str, tuple[Source, object]] = {}
        placements: dict[str, str] = {}
        n = None
        for name in self.names:
            keys = _keys_list(record[f"keys.{name}"])
            n = len(keys)
            src, placements[name] = self._source(name, dev)
            sources[name] = (src, src.locate(keys))
        lab = record["label"].to(dev) if labels else None
        return CachedDataset(sources, n or 0, lab, placements)

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
                self._sources[key] = StoreSource(enc.store, where, enc.dtype, what)
            else:
                table = EmbeddingTable.load(enc.store, where, enc.dtype, what)
                if table.matrix.shape[0]:
                    enc.check_shape(tuple(table.matrix.shape[1:]))
                self._sources[key] = table
        return self._sources[key], p

    # -- inference --------------------------------------------------------------------------------------
    def embed(
        self,
        inputs: Sequence[str] | Mapping[str, Sequence[str]],
        *,
        write_back: bool = False,
        device: str | torch.device | None = None,
    ) -> dict[str, torch.Tensor]:
        """Embeddings ``{name: (B, D)}`` of new texts; cached ones are looked up, misses computed on the fly.

        Args:
            inputs: texts (one encoder) or ``{name: texts}`` for some or all encoders.
            write_back: store the computed misses, so the next call finds them.
            device: where the result goes (default: the encoder's device).
        """
        if not isinstance(inputs, Mapping):
            if len(self.names) != 1:
                raise DataError(f"the cache has encoders {self.names}; pass {{name: texts}}")
            inputs = {self.names[0]: inputs}
        unknown = sorted(set(inputs) - set(self.names))
        if unknown:
            raise CacheConfigError(f"no encoder named {unknown} in this cache; its encoders are {self.names}")
        return {name: self._embed_one(name, list(texts), write_back, device) for name, texts in inputs.items()}

    def _embed_one(self, name: str, texts: list[str], write_back: bool, device) -> torch.Tensor:
        enc = self.encoders[name]
        check_texts(texts)
        ids = tokenize(enc.tokenizer, texts, enc.max_length)
        keys = enc.keys(texts, ids)
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
        for b in range(0, len(miss), self.config.batch_size):
            idx = miss[b : b + self.config.batch_size]
            entries = enc.entries([ids[i] for i in idx])
            for i, e in zip(idx, entries, strict=True):
                out[i] = e["embedding"]
            if write_back:
                first = dict(zip((keys[i] for i in idx), entries, strict=True))
                enc.store.put(list(first), list(first.values()))
        dev = torch.device(device) if device is not None else enc.device
        return torch.stack([v.to(device=dev, dtype=enc.dtype) for v in out])  # type: ignore[union-attr]  # (B, D)

    # -- life cycle -------------------------------------------------------------------------------------
    def close(self) -> None:
        for enc in getattr(self, "encoders", {}).values():
            enc.store.close()
        if getattr(self, "splits", None) is not None:
            self.splits.close()
        self._sources = {}

    def __enter__(self) -> EncoderCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _plain(label):
    return label.item() if isinstance(label, torch.Tensor) else label


def _keys_tensor(keys: Sequence[bytes]) -> torch.Tensor:
    if not keys:
        return torch.zeros(0, KEY_BYTES, dtype=torch.uint8)
    return torch.frombuffer(bytearray(b"".join(keys)), dtype=torch.uint8).reshape(len(keys), KEY_BYTES)  # (N, 16)


def _keys_list(t: torch.Tensor) -> list[bytes]:
    data = t.contiguous().numpy().tobytes()
    return [data[i : i + KEY_BYTES] for i in range(0, len(data), KEY_BYTES)]
