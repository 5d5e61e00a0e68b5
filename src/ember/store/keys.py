"""Content-addressed keys: one entry per distinct token-id sequence, whatever its dataset index."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import torch

STATES = "states"  # the key column of a store with one kind of entry (recycling)

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
    key_fn: KeyFn | KeyScheme = content_key,
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
        keys.append(key_fn.of_ids(ids) if isinstance(key_fn, KeyScheme) else key_fn(ids))
    return keys


class KeyScheme:
    """How a capability keys its examples: the one custom-key concept of every store.

    The default keys an example by the content hash of its token ids (:func:`content_key`), never by its
    dataset index: the same text has the same key in train, validation and at inference. A custom scheme keys
    from the ids (``KeyScheme.from_ids(fn)``: recycling's ``key_fn``) or from the raw text
    (``KeyScheme.from_text(name, fn)``: the encoder cache's ``KeyExtractor``). Its ``name`` goes into the
    store's fingerprint, so a store filled under one scheme is never read under another; a custom scheme must
    give different inputs different keys, which the fill checks (:attr:`custom`).

    Example:
        >>> KeyScheme.content().keys(["hi"], [[101, 7592, 102]]) == [content_key([101, 7592, 102])]
        True
        >>> KeyScheme.from_text("lower", str.lower).keys(["Hi"], [[1]]) == KeyScheme.from_text("lower", str.lower).keys(["hi"], [[2]])
        True
    """

    def __init__(self, name: str, *, ids_fn: KeyFn | None = None, text_fn: Callable[[str], str | bytes] | None = None) -> None:
        self.name, self.ids_fn, self.text_fn = name, ids_fn, text_fn

    @classmethod
    def content(cls) -> KeyScheme:
        """Content hash of the token ids (the default)."""
        return cls("content", ids_fn=content_key)

    @classmethod
    def from_ids(cls, fn: KeyFn) -> KeyScheme:
        """Keys from one example's token ids; named by the function's ``module.qualname``."""
        if fn is content_key:
            return cls.content()
        return cls(f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}", ids_fn=fn)

    @classmethod
    def from_text(cls, name: str, fn: Callable[[str], str | bytes]) -> KeyScheme:
        """Keys from the raw text: ``fn(text)`` (a str or bytes) hashed under ``name``, so two schemes that give
        the same value still key apart."""
        return cls(name, text_fn=fn)

    @property
    def custom(self) -> bool:
        """Whether the key is not the content hash (then it must be checked for collisions)."""
        return self.name != "content"

    @property
    def needs_texts(self) -> bool:
        """Whether keys come from the raw texts (and so cannot be made inside a forward from ids alone)."""
        return self.text_fn is not None

    def keys(self, texts: Sequence[str] | None, ids: Sequence[Sequence[int]]) -> list[bytes]:
        """One key per example, from its text or its (unpadded) token ids."""
        if self.text_fn is None:
            return [self.ids_fn(x) for x in ids]  # type: ignore[misc]
        if texts is None:
            raise ValueError(f"the key scheme {self.name!r} keys texts; pass them")
        prefix = self.name.encode() + b"\0"
        out = []
        for t in texts:
            k = self.text_fn(t)
            raw = k if isinstance(k, bytes) else str(k).encode()
            out.append(hashlib.blake2b(prefix + raw, digest_size=KEY_BYTES).digest())
        return out

    __call__ = keys  # a scheme is called like the key functions it generalises: scheme(texts, ids)

    def of_ids(self, ids: Sequence[int]) -> bytes:
        """The key of one example's ids (for keys made inside a forward); a text scheme cannot."""
        if self.ids_fn is None:
            raise ValueError(f"the key scheme {self.name!r} keys texts, not token ids")
        return self.ids_fn(ids)
