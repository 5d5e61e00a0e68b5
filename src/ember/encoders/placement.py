"""Where cached embeddings live while training (CPU/GPU tables or the memory-mapped store), and on which device."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ember.encoders.config import CacheConfig
from ember.encoders.data import EmbeddingTable, Source, StoreSource
from ember.encoders.errors import CacheConfigError
from ember.store.codec import torch_dtype


class Sources:
    """The loaded embedding sources of a cache's encoders, one per (encoder, placement, device), reused across calls.

    Args:
        config: the cache's config (placements).
        encoder: looks up an encoder by name (its store, dtype and shape check).
        lock: the cache's lock, which on-disk sources take while reading a store another call may reopen.
    """

    def __init__(self, config: CacheConfig, encoder: Callable, lock) -> None:
        self.config, self.encoder, self.lock = config, encoder, lock
        self.loaded: dict[tuple[str, str, str], Source] = {}

    def placement(self, name: str, device: torch.device) -> str:
        """Where encoder ``name``'s embeddings live when training on ``device`` (``auto`` resolved)."""
        p = self.config.placement_of(name)
        if p == "auto":
            p = "gpu" if device.type == "cuda" else "cpu"
        if p == "gpu" and not torch.cuda.is_available():
            raise CacheConfigError(
                f"placement 'gpu' for encoder {name!r} needs CUDA, but torch.cuda.is_available() is False; "
                "use 'auto' (GPU only when training on GPU) or 'cpu'"
            )
        return p

    def get(self, name: str, device: torch.device) -> tuple[Source, str]:
        """The source serving encoder ``name`` on ``device`` and its placement, loaded on first use."""
        p = self.placement(name, device)
        where = {"cpu": torch.device("cpu"), "gpu": device if device.type == "cuda" else torch.device("cuda"), "mmap": device}[p]
        key = (name, p, str(where))
        if key not in self.loaded:
            enc = self.encoder(name)
            what = f"encoder {name!r}"
            if p == "mmap":
                self.loaded[key] = StoreSource(lambda enc=enc: enc.store, where, enc.dtype, what, lock=self.lock)
            else:  # kept in the storage dtype (a float16 table stays half size); batches are cast when served
                table = EmbeddingTable.load(enc.store, where, enc.dtype, what)
                if table.matrix.shape[0]:
                    enc.check_shape(tuple(table.matrix.shape[1:]))
                self.loaded[key] = table
        return self.loaded[key], p

    def drop(self, source: Source) -> None:
        """Forget a loaded source (reloaded on next use)."""
        self.loaded = {k: v for k, v in self.loaded.items() if v is not source}

    def stale(self, name: str) -> None:
        """Forget encoder ``name``'s in-memory tables (new entries were stored); on-disk sources read the store."""
        self.loaded = {k: v for k, v in self.loaded.items() if k[0] != name or isinstance(v, StoreSource)}

    def table(self, name: str) -> EmbeddingTable | None:
        """A loaded in-memory table of encoder ``name``, if any (served before reading the store)."""
        return next((s for (n, _, _), s in self.loaded.items() if n == name and isinstance(s, EmbeddingTable)), None)


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
