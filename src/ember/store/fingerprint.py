"""What produced a store: written when it is created, checked every time it is opened.

A stale store that silently feeds activations of another model is the worst failure a cache can
have, so every field that changes the stored values is part of the fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

FORMAT_VERSION = 1
_UNSET = object()  # Fingerprint.of: no model config given (None is a module without a config)


@dataclass(frozen=True)
class Fingerprint:
    """Identity of the computation whose outputs a store holds.

    Args:
        kind: what is stored ("recycle" for split-layer states, "encoder" for pooled embeddings).
        architecture: model class and ``config.model_type``.
        weights: hash of every frozen parameter and buffer that the stored values depend on.
        layer: split layer (recycle) or -1 where not applicable.
        dtype: storage dtype name.
        tokenizer: hash of the tokenizer's vocabulary and settings.
        max_length: truncation length of the token ids.
        extra: other settings that change the values (e.g. pooling), as strings.
    """

    kind: str
    architecture: str
    weights: str
    layer: int
    dtype: str
    tokenizer: str
    max_length: int
    extra: tuple[tuple[str, str], ...] = field(default=())
    format: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Fingerprint:
        d = json.loads(text)
        d["extra"] = tuple(tuple(x) for x in d.get("extra", ()))
        return cls(**d)

    @classmethod
    def of(
        cls,
        kind: str,
        *,
        architecture: str,
        dtype: str,
        frozen: Iterable[nn.Module] | None = None,
        model_config: object = _UNSET,
        tokenizer=None,
        max_length: int = 0,
        layer: int | None = None,
        keys: str | None = None,
        settings: Iterable[tuple[str, str]] = (),
    ) -> Fingerprint:
        """The one way a capability derives its store's fingerprint from what it computes with.

        Args:
            kind: what is stored (``"recycle"``, ``"encoder"``, ``"teacher"``, ``"encoder-splits"`` …).
            architecture: model class and type (:attr:`EncoderParts.architecture`) or another identity.
            dtype: storage dtype name.
            frozen: the modules whose weights the stored values depend on (hashed with :func:`weights_hash`).
            model_config: the model's config (``None`` for a module without one); the fields that change
                outputs without a weight are hashed (:func:`config_hash`).
            tokenizer: the tokenizer that made the ids (hashed with :func:`tokenizer_hash`).
            max_length: truncation length of the ids.
            layer: the split layer, where one applies.
            keys: the key scheme's name (:class:`~ember.store.keys.KeyScheme`).
            settings: other ``(name, value)`` settings that change the values (pooling, layers kept …), in order.

        Example:
            >>> Fingerprint.of("teacher", architecture="bert", dtype="float32", settings=[("T", "1")]).extra
            (('T', '1'),)
        """
        extra = list(settings)
        if model_config is not _UNSET:
            extra.append(("config", config_hash(model_config)))
        if keys is not None:
            extra.append(("key", keys))
        return cls(
            kind=kind,
            architecture=architecture,
            weights="" if frozen is None else weights_hash(frozen),
            layer=-1 if layer is None else layer,
            dtype=dtype,
            tokenizer="" if tokenizer is None else tokenizer_hash(tokenizer),
            max_length=max_length,
            extra=tuple((str(k), str(v)) for k, v in extra),
        )

    def diff(self, other: Fingerprint) -> list[str]:
        """Names and values of the fields that differ, as ``name: self != other`` lines."""
        a, b = asdict(self), asdict(other)
        return [f"{k}: store has {a[k]!r}, this run has {b[k]!r}" for k in a if a[k] != b[k]]


def weights_hash(modules: Iterable[nn.Module]) -> str:
    """BLAKE2b of names, dtypes, shapes and bytes of every parameter and buffer of ``modules``."""
    h = hashlib.blake2b(digest_size=16)
    for i, module in enumerate(modules):
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            h.update(f"{i}.{name}:{t.dtype}:{tuple(t.shape)};".encode())
            data = t.detach().to("cpu").contiguous()
            if data.dtype == torch.bfloat16:  # numpy has no bfloat16; hash the raw bits
                data = data.view(torch.int16)
            h.update(data.numpy().tobytes())
    return h.hexdigest()


def tokenizer_hash(tokenizer) -> str:
    """Hash of a tokenizer's class, vocabulary, special tokens and truncation/padding sides."""
    h = hashlib.blake2b(digest_size=16)
    h.update(type(tokenizer).__name__.replace("Fast", "").encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # The fast tokenizer's full definition: vocabulary, normaliser (lower-casing, accents), pre-tokeniser.
        # Truncation/padding state changes with every call, so it is left out.
        spec = json.loads(backend.to_str())
        spec.pop("truncation", None)
        spec.pop("padding", None)
        h.update(json.dumps(spec, sort_keys=True).encode())
    else:
        vocab = tokenizer.get_vocab()
        h.update(json.dumps(sorted(vocab.items(), key=lambda kv: kv[1])).encode())
    specials = {k: str(v) for k, v in sorted(getattr(tokenizer, "special_tokens_map", {}).items())}
    h.update(json.dumps(specials, sort_keys=True).encode())
    h.update(str(getattr(tokenizer, "truncation_side", "right")).encode())
    return h.hexdigest()


# Config fields that change what the embeddings and layers compute without changing a weight. Head-only
# fields (labels, dropout: frozen layers run in eval mode) stay out, so a base model and a classifier
# built from the same checkpoint share a store.
_BOTTOM_CONFIG = (
    "hidden_act", "activation", "layer_norm_eps", "position_embedding_type", "max_position_embeddings",
    "type_vocab_size", "hidden_size", "dim", "num_attention_heads", "n_heads", "intermediate_size", "hidden_dim",
    "embedding_size", "pad_token_id", "sinusoidal_pos_embds", "vocab_size",
)


def config_hash(config) -> str:
    """Hash of the config fields that change the frozen layers' outputs (see ``_BOTTOM_CONFIG``)."""
    fields = {k: getattr(config, k) for k in _BOTTOM_CONFIG if hasattr(config, k)}
    return hashlib.blake2b(json.dumps(fields, sort_keys=True, default=str).encode(), digest_size=8).hexdigest()
