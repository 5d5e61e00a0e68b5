"""Entry codec: named tensors <-> bytes with safetensors (no pickle on disk)."""

from __future__ import annotations

from typing import Literal

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ember.errors import StoreCorruptError

DType = Literal["float32", "float16", "bfloat16"]

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype for a storage dtype name; raises with the accepted names otherwise."""
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"dtype {name!r} is not supported for storage; use one of {sorted(DTYPES)}") from None


def encode(tensors: dict[str, torch.Tensor]) -> bytes:
    """Serialise named tensors (moved to CPU, made contiguous) to safetensors bytes."""
    return st_save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()})


def decode(data: bytes | memoryview, key: bytes | None = None) -> dict[str, torch.Tensor]:
    """Inverse of :func:`encode`; a damaged value raises :class:`StoreCorruptError` naming its key."""
    try:
        return st_load(bytes(data))
    except Exception as exc:  # safetensors raises its own SafetensorError / ValueError
        where = f" (key {key.hex()})" if key is not None else ""
        raise StoreCorruptError(
            f"a store entry{where} cannot be decoded: {exc}. The store is damaged; delete the entry's store "
            "and fill it again (ember recycle fill)."
        ) from exc
