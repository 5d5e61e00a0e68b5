"""Entry codec: named tensors <-> checksummed bytes with safetensors (no pickle on disk).

An encoded entry is an 8-byte checksum followed by the safetensors bytes. The checksum is XXH3-64 of those
bytes, seeded with XXH3-64 of the entry's key, so a value damaged on disk and a value filed under a key that
is not its own (a damaged key byte in a page) both fail :func:`decode` instead of reading as wrong numbers.
LMDB pages and safetensors carry no checksum of their own.

Why XXH3 and not ``zlib.crc32``: on a 30 KB entry (20 MiniLM token states in float32) crc32 takes ~27 µs on
this project's CPUs, as long as reading the entry; XXH3 takes ~0.5 µs (``benchmarks/checksum_cost.py``).
"""

from __future__ import annotations

from typing import Literal

import torch
import xxhash
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ember.errors import StoreCorruptError

DType = Literal["float32", "float16", "bfloat16"]

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}

CHECKSUM_BYTES = 8
# Version of the entry layout above; ActivationStore records it as the store's "format" meta value and refuses a
# store written with another one (entries of format 1 had no checksum).
ENTRY_FORMAT = 2
# Whether decode verifies checksums: always, except in benchmarks/checksum_cost.py, which turns it off for a moment
# to time the read without the check.
VERIFY = True


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype for a storage dtype name; raises with the accepted names otherwise."""
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"dtype {name!r} is not supported for storage; use one of {sorted(DTYPES)}") from None


def checksum(payload: bytes | memoryview, key: bytes = b"") -> bytes:
    """The 8-byte checksum of ``payload`` stored under ``key``.

    Example:
        >>> checksum(b"abc", b"k") != checksum(b"abc", b"j")
        True
    """
    seed = xxhash.xxh3_64_intdigest(key) if key else 0
    return xxhash.xxh3_64_digest(payload, seed=seed)


def encode(tensors: dict[str, torch.Tensor], key: bytes = b"") -> bytes:
    """Serialise named tensors (moved to CPU, made contiguous) to checksummed safetensors bytes.

    Args:
        tensors: the entry.
        key: the key it is stored under (part of the checksum; :func:`decode` must be given the same).
    """
    payload = st_save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()})
    return checksum(payload, key) + payload


def decode(data: bytes | memoryview, key: bytes | None = None, *, store: object = None) -> dict[str, torch.Tensor]:
    """Inverse of :func:`encode`: verify the checksum, then read the tensors.

    Args:
        data: the stored bytes.
        key: the key they were read under (``None``: encoded without one).
        store: where they were read from (a path, for the message).

    Raises:
        StoreCorruptError: the checksum does not match or the bytes do not decode, naming the key, the store and
            the fix.
    """
    data = bytes(data)
    payload = data[CHECKSUM_BYTES:]  # the one copy safetensors needs anyway
    if VERIFY and (len(data) < CHECKSUM_BYTES or checksum(payload, key or b"") != data[:CHECKSUM_BYTES]):
        raise corrupt_entry(key, store, checksum_problem(data, key) or "its checksum does not match")
    try:
        return st_load(payload)
    except Exception as exc:  # safetensors raises its own SafetensorError / ValueError
        raise corrupt_entry(key, store, f"it cannot be decoded: {exc}") from exc


def checksum_problem(data: bytes, key: bytes | None = None) -> str | None:
    """Why ``data`` (stored under ``key``) fails its checksum, or ``None`` when it passes."""
    if len(data) < CHECKSUM_BYTES:
        return f"it has {len(data)} bytes, fewer than its {CHECKSUM_BYTES}-byte checksum"
    if data[:CHECKSUM_BYTES] != checksum(memoryview(data)[CHECKSUM_BYTES:], key or b""):
        return f"its checksum does not match its {len(data) - CHECKSUM_BYTES} bytes"
    return None


def corrupt_entry(key: bytes | None, store: object, why: str) -> StoreCorruptError:
    """The error for a damaged entry: which key, which store, why, and the fix."""
    where = f" (key {key.hex()})" if key is not None else ""
    place = f"the store at {store}" if store is not None else "its store"
    verify = f"ember store verify {store}" if store is not None else "ember store verify PATH"
    return StoreCorruptError(
        f"a store entry{where} in {place} is damaged: {why}. Its values would be wrong, so nothing is read from it. "
        f"Run `{verify}` to list every damaged entry, then delete the store and fill it again (rerun the fill)."
    )
