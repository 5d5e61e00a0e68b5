"""How the frozen-encoder cache stores, keys and pools: one frozen dataclass, validated on creation."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar, Literal, get_args

from ember.encoders.errors import CacheConfigError
from ember.fixes import MEMORY_BACKEND
from ember.store.base import Backend, check_backend
from ember.store.codec import DType, torch_dtype

Placement = Literal["auto", "cpu", "gpu", "mmap"]
"""Where an encoder's embeddings live while training: ``cpu``/``gpu`` load the store into one tensor and a
key->row index; ``mmap`` reads each batch from the on-disk store; ``auto`` is ``gpu`` when the training device
is a CUDA device, else ``cpu``. The training device is the ``device`` given to
:meth:`~ember.encoders.EncoderCache.dataset` (a device, or a module such as the head: the device of its first
parameter); without one it is ``cuda`` when ``torch.cuda.is_available()``, else ``cpu``."""

PoolingName = Literal["cls", "mean", "pooler"]

PLACEMENTS: tuple[str, ...] = get_args(Placement)
POOLINGS: tuple[str, ...] = get_args(PoolingName)


@dataclass(frozen=True)
class NamedPooling:
    """A user pooling function with the stable name that goes into the store's fingerprint.

    The function maps ``(last_hidden_state (B, T, H), attention_mask (B, T), output)`` to ``(B, D)``.
    Changing what it computes without changing ``name`` would let a stale store be read, so bump the
    name (e.g. ``"max-v2"``) whenever the function changes.

    Example:
        >>> maxpool = NamedPooling("max", lambda h, m, out: h.masked_fill(m[..., None] == 0, -1e4).amax(1))
        >>> maxpool.name
        'max'
    """

    name: str
    fn: Callable

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise CacheConfigError(f"a pooling function needs a non-empty name for the fingerprint, got {self.name!r}")
        if self.name in POOLINGS:
            raise CacheConfigError(f"the pooling name {self.name!r} is reserved for the built-in pooling; pick another name")
        if not callable(self.fn):
            raise CacheConfigError(f"NamedPooling.fn must be callable, got {type(self.fn).__name__}")


@dataclass(frozen=True)
class KeyExtractor:
    """Maps an encoder's input text to its cache key, with a stable name for the fingerprint.

    The default (no extractor) keys an example by the content hash of its token ids, never by its dataset
    index: the same text has the same key in train, validation and at inference. A custom extractor (say a
    document id looked up from the text) must give different keys to different texts; ember checks that
    during every fill and refuses collisions.

    Example:
        >>> KeyExtractor("lower", str.lower).name
        'lower'
    """

    name: str
    fn: Callable[[str], str | bytes]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise CacheConfigError(f"a key extractor needs a non-empty name for the fingerprint, got {self.name!r}")
        if not callable(self.fn):
            raise CacheConfigError(f"KeyExtractor.fn must be callable, got {type(self.fn).__name__}")


Pooling = PoolingName | NamedPooling


def _frozen(m: Mapping | None) -> Mapping:
    return MappingProxyType(dict(m or {}))


@dataclass(frozen=True)
class CacheConfig:
    """Settings of an :class:`~ember.encoders.EncoderCache`.

    Args:
        placement: default placement of every encoder's embeddings during training (see :data:`Placement`).
        mapping: per-encoder placement overriding ``placement``, e.g. ``{"doc": "mmap"}``.
        save_dir: folder that keeps the stores across runs (one per encoder plus the split index); ``None``
            keeps everything in memory for this process only. Reopening checks each store's fingerprint.
        pooling: default pooling, ``"cls"``, ``"mean"``, ``"pooler"`` or a :class:`NamedPooling`.
        poolings: per-encoder pooling overriding ``pooling``.
        key_extractors: per-encoder :class:`KeyExtractor`; default: content hash of the token ids.
        batch_size: examples per encoder forward pass (and per committed store transaction) during a fill.
        num_workers: worker processes reading the dataset and tokenizing during a fill; labels stay in the
            main process, in input order, so label caching works with workers.
        dtype: storage dtype of the embeddings. Batches and :meth:`~ember.encoders.EncoderCache.embed` serve
            float32 unless asked otherwise (their ``dtype=`` argument), whatever the storage dtype.
        max_length: truncation length in tokens (default: what the tokenizer and model accept).
        backend: on-disk store backend when ``save_dir`` is set (``lmdb`` or ``leveldb``; ``memory`` is what
            ``save_dir=None`` uses, and is refused beside a ``save_dir``).
        check_transform: how many dataset items a fill reads twice to detect a random (augmenting)
            transform; 0 disables the check. Both reads of an item happen one after the other in the same
            process (a worker when ``num_workers > 0``), so per-worker random state or counters are caught
            too. Not detectable: a transform that changes only between epochs (e.g. driven by an epoch
            counter set from outside), or one seeded by the item's index (that one is deterministic).
        readonly: never take a store's writer lock. Reading (training from ``save_dir``, :meth:`embed` without
            ``write_back``) never needs it anyway: existing stores are opened read-only, and the writer is
            taken only by a fill that has something to write (and given back when it ends) or by
            ``embed(write_back=True)`` with misses (held until ``close()``). With ``readonly=True`` those
            raise :class:`~ember.errors.StoreReadOnlyError` instead, and every store must exist already.

    Example:
        >>> cfg = CacheConfig(placement="auto", mapping={"doc": "mmap"}, pooling="mean", save_dir="cache/")
        >>> cfg.placement_of("doc"), cfg.placement_of("query")
        ('mmap', 'auto')
    """

    VERSION: ClassVar[int] = 1  # bumped when a recorded config's meaning changes (see ember.config)
    placement: Placement = "auto"
    mapping: Mapping[str, Placement] = field(default_factory=dict)
    save_dir: str | Path | None = None
    pooling: Pooling = "mean"
    poolings: Mapping[str, Pooling] = field(default_factory=dict)
    key_extractors: Mapping[str, KeyExtractor] = field(default_factory=dict)
    batch_size: int = 64
    num_workers: int = 0
    dtype: DType = "float32"
    max_length: int | None = None
    backend: Backend = "lmdb"
    check_transform: int = 16
    readonly: bool = False

    def __post_init__(self) -> None:
        for name in ("mapping", "poolings", "key_extractors"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        _check_placement("placement", self.placement)
        for enc, p in self.mapping.items():
            _check_placement(f"mapping[{enc!r}]", p)
        _check_pooling("pooling", self.pooling)
        for enc, p in self.poolings.items():
            _check_pooling(f"poolings[{enc!r}]", p)
        for enc, k in self.key_extractors.items():
            if not isinstance(k, KeyExtractor):
                raise CacheConfigError(
                    f"key_extractors[{enc!r}] is a {type(k).__name__}; wrap the function with its stable name: "
                    f"KeyExtractor('my-key', fn)"
                )
        if self.batch_size < 1:
            raise CacheConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise CacheConfigError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.check_transform < 0:
            raise CacheConfigError(f"check_transform must be >= 0, got {self.check_transform}")
        if self.max_length is not None and self.max_length < 2:
            raise CacheConfigError(f"max_length must be >= 2, got {self.max_length}")
        if not isinstance(self.readonly, bool):
            raise CacheConfigError(f"readonly must be True or False, got {self.readonly!r}")
        if self.readonly and self.save_dir is None:
            raise CacheConfigError(
                "readonly=True reads stores filled earlier, but save_dir is None (an in-memory cache starts empty); "
                "set save_dir=... to the folder a fill wrote"
            )
        try:
            check_backend(self.backend)
        except ValueError as exc:
            raise CacheConfigError(str(exc)) from None
        if self.backend == "memory" and self.save_dir is not None:
            raise CacheConfigError(
                f"backend='memory' keeps nothing on disk, so save_dir={str(self.save_dir)!r} would stay empty and the "
                f"next run would compute everything again; {MEMORY_BACKEND}", fixes=[MEMORY_BACKEND]
            )
        try:
            torch_dtype(self.dtype)
        except ValueError as exc:
            raise CacheConfigError(str(exc)) from None

    # -- presets ----------------------------------------------------------------------------------------
    @classmethod
    def in_memory(cls, **kwargs) -> CacheConfig:
        """Embeddings in CPU (or GPU) memory, nothing on disk: one process, small data."""
        return cls(placement="auto", save_dir=None, **kwargs)

    @classmethod
    def persistent(cls, save_dir: str | Path, **kwargs) -> CacheConfig:
        """Stores in ``save_dir`` reused by later runs; embeddings loaded into memory for training."""
        return cls(placement="auto", save_dir=save_dir, **kwargs)

    @classmethod
    def on_disk(cls, save_dir: str | Path, **kwargs) -> CacheConfig:
        """Embeddings read from the memory-mapped store for every batch: data larger than memory."""
        return cls(placement="mmap", save_dir=save_dir, **kwargs)

    # -- lookups ----------------------------------------------------------------------------------------
    def placement_of(self, encoder: str) -> Placement:
        return self.mapping.get(encoder, self.placement)

    def pooling_of(self, encoder: str) -> Pooling:
        return self.poolings.get(encoder, self.pooling)

    def check_names(self, encoders: list[str]) -> None:
        """Refuse per-encoder settings that name an encoder the cache does not have."""
        known = set(encoders)
        for what in ("mapping", "poolings", "key_extractors"):
            for enc in getattr(self, what):
                if enc not in known:
                    raise CacheConfigError(
                        f"CacheConfig.{what} names encoder {enc!r}, but the cache has encoders {sorted(known)}; "
                        "use one of those names (the keys of the dict of encoders)"
                    )
        if self.save_dir is None and self.placement_of_any("mmap", encoders):
            raise CacheConfigError(
                "placement 'mmap' reads embeddings from the on-disk store, but save_dir is None; "
                "set save_dir=... or use placement 'cpu'/'gpu'/'auto'"
            )

    def placement_of_any(self, placement: str, encoders: list[str]) -> bool:
        return any(self.placement_of(e) == placement for e in encoders)

    def to_dict(self) -> dict:
        """JSON-friendly view (callables by their names)."""

        def pool(p: Pooling) -> str:
            return p if isinstance(p, str) else p.name

        return {
            "version": self.VERSION,
            "placement": self.placement,
            "mapping": dict(self.mapping),
            "save_dir": None if self.save_dir is None else str(self.save_dir),
            "pooling": pool(self.pooling),
            "poolings": {k: pool(v) for k, v in self.poolings.items()},
            "key_extractors": {k: v.name for k, v in self.key_extractors.items()},
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "dtype": self.dtype,
            "max_length": self.max_length,
            "backend": self.backend,
            "check_transform": self.check_transform,
            "readonly": self.readonly,
        }


def _check_placement(what: str, p) -> None:
    if p not in PLACEMENTS:
        raise CacheConfigError(f"{what}={p!r} is not a placement; use one of {list(PLACEMENTS)}")


def _check_pooling(what: str, p) -> None:
    if isinstance(p, NamedPooling):
        return
    if callable(p):
        raise CacheConfigError(
            f"{what} is a bare function ({getattr(p, '__name__', type(p).__name__)}); the fingerprint needs a stable "
            "name for it: pass NamedPooling('my-pooling', fn)"
        )
    if p not in POOLINGS:
        raise CacheConfigError(f"{what}={p!r} is not a pooling; use one of {list(POOLINGS)} or NamedPooling(name, fn)")
