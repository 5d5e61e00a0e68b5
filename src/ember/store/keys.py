"""Content-addressed keys: one entry per distinct token-id sequence, whatever its dataset index."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import torch

KeyFn = Callable[[Sequence[int]], bytes]

KEY_BYTES = 16  # 128-bit BLAKE2b: collisions are out of reach for any dataset size


def content_key(ids: Sequence[int] | torch.Tensor) -> bytes:
    """Hash one example's unpadded token ids.

    The ids are hashed as little-endian int32, so the key does not depend on the tensor dtype,
    the batch the example came in, its padding or its position in the dataset.

    Example:
        >>> content_key([101, 7592, 102]) == content_key(torch.tensor([101, 7592, 102]))
        True
    """
    t = ids if isinstance(ids, torch.Tensor) else torch.as_tensor(list(ids))
    data = t.detach().to(device="cpu", dtype=torch.int32).contiguous().numpy().astype("<i4").tobytes()
    return hashlib.blake2b(data, digest_size=KEY_BYTES).digest()


def row_keys(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, key_fn: KeyFn = content_key) -> list[bytes]:
    """Keys of each row of a padded batch; padding (mask 0) is stripped before hashing."""
    keys = []
    for i in range(input_ids.shape[0]):
        ids = input_ids[i] if attention_mask is None else input_ids[i][attention_mask[i].bool()]
        keys.append(key_fn(ids.tolist()))
    return keys
