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


def row_keys(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    key_fn: KeyFn = content_key,
    token_type_ids: torch.Tensor | None = None,
) -> list[bytes]:
    """Keys of each row of a padded batch; padding (mask 0) is stripped before hashing.

    A row with non-zero token type ids (a sentence pair) hashes its ids, a ``-1`` separator and its type
    ids: the same ids as one sentence give other hidden states, so they must not share a key.
    """
    keys = []
    for i in range(input_ids.shape[0]):
        keep = slice(None) if attention_mask is None else attention_mask[i].bool()
        ids = input_ids[i][keep].tolist()
        if token_type_ids is not None and bool(token_type_ids[i][keep].any()):
            ids = ids + [-1] + token_type_ids[i][keep].tolist()
        keys.append(key_fn(ids))
    return keys
