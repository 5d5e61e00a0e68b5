"""One cached encoder: its producer (pooled embeddings of id lists), key scheme, fingerprint and store handle."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ember.encoders.config import CacheConfig, NamedPooling, Pooling
from ember.encoders.errors import CacheConfigError, EmbeddingShapeError, TrainableEncoderError
from ember.encoders.pooling import pooling_fn, pooling_name
from ember.errors import StoreError, StoreMismatchError, UnsupportedModelError
from ember.models.checks import check_module, is_causal_decoder
from ember.models.families import find_parts
from ember.models.inputs import pad_ids
from ember.models.load import resolve_max_length
from ember.models.sentence import (
    is_sentence_transformer,
    max_length_of,
    pooling_signature,
    sentence_embeddings,
    transformer_of,
)
from ember.models.split import frozen_eval
from ember.store.activations import ActivationStore, Entry
from ember.store.codec import torch_dtype
from ember.store.fill import check_keys_unique, with_content
from ember.store.fingerprint import Fingerprint
from ember.store.handle import StoreHandle, store_exists
from ember.store.keys import KeyScheme

_SHAPE_META = "embedding_shape"


class PooledEmbeddings:
    """The encoder cache's producer: one pooled vector per example, in eval mode without gradients.

    A plain picklable object, so an executor can run it in another process. A SentenceTransformer
    (``sentence=True``) pools with its own modules (pooling, dense, normalisation), as its ``encode`` does.
    """

    def __init__(self, name: str, module: nn.Module, tokenizer, pooling: Pooling, dtype: torch.dtype,
                 fingerprint: Fingerprint, custom_keys: bool, sentence: bool = False) -> None:
        self.name, self.module, self.tokenizer, self.pooling = name, module, tokenizer, pooling
        self.dtype, self.fingerprint, self.custom_keys, self.sentence = dtype, fingerprint, custom_keys, sentence
        self.pool = None if sentence else pooling_fn(pooling)

    @property
    def device(self) -> torch.device:
        p = next(self.module.parameters(), None)
        return torch.device("cpu") if p is None else p.device

    def compute(self, ids: list[list[int]]) -> torch.Tensor:
        """Pooled embeddings ``(B, D)`` of unpadded id lists."""
        input_ids, mask = pad_ids(ids, self.tokenizer, self.device)  # (B, T), (B, T)
        with frozen_eval(self.module), torch.no_grad():
            if self.sentence:
                pooled = sentence_embeddings(self.module, input_ids, mask)  # (B, D)
            else:
                out = self.module(input_ids=input_ids, attention_mask=mask)
                hidden = out[0] if isinstance(out, tuple) else getattr(out, "last_hidden_state", out)  # (B, T, H)
                pooled = self.pool(hidden, mask, out)  # (B, D)
        if not isinstance(pooled, torch.Tensor) or pooled.dim() != 2 or pooled.shape[0] != len(ids):
            got = tuple(pooled.shape) if isinstance(pooled, torch.Tensor) else type(pooled).__name__
            raise EmbeddingShapeError(
                f"pooling {pooling_name(self.pooling)!r} of encoder {self.name!r} returned {got} for a batch of {len(ids)}; "
                "it must return one vector per example, (B, D)"
            )
        return pooled

    def entries(self, ids: list[list[int]]) -> list[Entry]:
        """``{"embedding": (D,)}`` per id list (plus what a custom key names), on the CPU in the storage dtype."""
        pooled = self.compute(ids).to("cpu", self.dtype)  # (B, D)
        entries: list[Entry] = [{"embedding": v.clone()} for v in pooled]
        return with_content(entries, ids) if self.custom_keys else entries


class Encoder:
    """One cached encoder: its module, tokenizer, key scheme, producer and store (opened through a handle)."""

    def __init__(self, name: str, encoder: nn.Module, tokenizer, config: CacheConfig) -> None:
        check_module(encoder, f"encoder {name!r}")
        self.name = name
        sentence = is_sentence_transformer(encoder)
        if sentence:  # the whole model runs (its pooling too); its encoder names the architecture and config
            self.module, inner = encoder, transformer_of(encoder)
            tokenizer = encoder.tokenizer if tokenizer is None else tokenizer
        else:
            self.module = getattr(encoder, "base_model", encoder) if hasattr(encoder, "config") else encoder
            inner = self.module
        _refuse_trainable(name, self.module)
        if tokenizer is None:
            raise CacheConfigError(f"no tokenizer for encoder {name!r}; pass one tokenizer or {{name: tokenizer}}")
        self.tokenizer = tokenizer
        pooling = _pooling(name, encoder, config) if sentence else config.pooling_of(name)
        _warn_causal(name, inner, pooling)
        extractor = config.key_extractors.get(name)
        self.keys = KeyScheme.content() if extractor is None else KeyScheme.from_text(extractor.name, extractor.fn)
        wanted = config.max_length or (max_length_of(encoder) if sentence else None)
        self.max_length = resolve_max_length(tokenizer, inner, wanted)
        self.dtype = torch_dtype(config.dtype)
        self.fingerprint = Fingerprint.of(
            "encoder", architecture=_architecture(inner), frozen=[self.module], dtype=config.dtype,
            tokenizer=tokenizer, max_length=self.max_length, keys=self.keys.name,
            # config: fields that change the output without changing a weight (activation, layer-norm eps …)
            model_config=getattr(inner, "config", None), settings=[("pooling", pooling_name(pooling))],
        )
        self.producer = PooledEmbeddings(name, self.module, tokenizer, pooling, self.dtype, self.fingerprint,
                                         custom_keys=self.keys.custom, sentence=sentence)
        self.handle = open_handle(config, name, self.fingerprint, f"encoder {name!r}")

    @property
    def store(self) -> ActivationStore:
        """The encoder's store as opened now: read-only unless a fill or a write-back holds the writer."""
        return self.handle.store

    @property
    def key_name(self) -> str:
        return self.keys.name

    @property
    def device(self) -> torch.device:
        return self.producer.device

    def check_keys(self, texts: Sequence[str], ids: Sequence[Sequence[int]], keys: Sequence[bytes]) -> None:
        """A custom key must name one input: within these examples and against what the store holds."""
        check_keys_unique(self.keys, texts, ids, keys, self.store, f"encoder {self.name!r}")

    def entries(self, ids: list[list[int]]) -> list[Entry]:
        """Entries of a batch computed here (an ``embed`` miss), checked as a fill checks them."""
        entries = self.producer.entries(ids)
        self.check_entries(entries)
        return entries

    def check_entries(self, entries: list[Entry]) -> None:
        """Refuse embeddings of another shape than the store recorded; the writer records the first shape."""
        if entries:
            self.check_shape(tuple(entries[0]["embedding"].shape), record=self.handle.writer)

    def check_shape(self, shape: tuple[int, ...], *, record: bool = False) -> None:
        """Refuse a shape other than the recorded one; ``record`` writes it when none is (writer only)."""
        recorded = self.store.get_meta(_SHAPE_META)  # checksummed, as the store's own records
        if recorded is None:
            if record:
                self.store.set_meta(_SHAPE_META, json.dumps(list(shape)))
            return
        want = tuple(json.loads(recorded))
        if want != shape:
            raise EmbeddingShapeError(
                f"encoder {self.name!r} returned embeddings of shape {shape}, but its store at {self.store.path} recorded "
                f"{want}: the encoder (or its pooling function) changed without changing its weights or pooling name. "
                "Give the pooling a new name, or delete the store and fill again."
            )



def open_handle(config: CacheConfig, name: str, fingerprint: Fingerprint, what: str) -> StoreHandle:
    """The handle of store ``name`` in ``save_dir`` (in memory without one): read-only while it is only read."""
    path = None if config.save_dir is None else Path(config.save_dir) / name
    backend = "memory" if path is None else config.backend
    if config.readonly and not store_exists(path, backend):
        raise StoreError(
            f"CacheConfig(readonly=True), but save_dir {config.save_dir} has no store for {what} ({path} "
            "does not exist): fill the cache first with readonly=False, or check save_dir"
        )

    def mismatch(exc: StoreMismatchError) -> StoreMismatchError:
        lines = "\n  ".join(exc.differences) or str(exc)
        return StoreMismatchError(
            f"save_dir {config.save_dir} holds embeddings of {what} made by another encoder or setting:\n"
            f"  {lines}\nReading them would train on stale embeddings. Use another save_dir, delete "
            f"{path} to refill it, or open it with the encoder and pooling that made it.",
            exc.differences,
        )

    return StoreHandle(path, fingerprint, backend=backend, readonly=config.readonly, what=f"the store of {what}",
                       opened_as="the cache was opened with CacheConfig(readonly=True)", mismatch=mismatch)


def _pooling(name: str, model: nn.Module, config: CacheConfig) -> NamedPooling:
    """A SentenceTransformer's own pooling, named by its modules' configs (a pooling set for it is refused)."""
    if name in config.poolings:
        raise CacheConfigError(
            f"encoder {name!r} is a SentenceTransformer, which pools with its own modules ({pooling_signature(model)}); "
            f"leave poolings[{name!r}] unset, or pass its transformer (model[0].auto_model) with a pooling of your own"
        )
    return NamedPooling(f"sentence-transformers:{pooling_signature(model)}", lambda h, m, out: out)


def _architecture(module: nn.Module) -> str:
    try:
        return find_parts(module).architecture
    except UnsupportedModelError:
        return f"{type(module).__module__}.{type(module).__name__}"


def _warn_causal(name: str, module: nn.Module, pooling: Pooling) -> None:
    """Warn when a built-in pooling meant for encoders pools a causal decoder (GPT-2, Llama …)."""
    if isinstance(pooling, NamedPooling) or not is_causal_decoder(module):
        return
    model_type = getattr(getattr(module, "config", None), "model_type", None)
    warnings.warn(
        f"encoder {name!r} ({type(module).__name__}, model_type={model_type!r}) is a causal decoder: each token's state "
        f"sees only the tokens before it, so its {pooling!r} pooling is not what an encoder's would be ('mean' weighs "
        "the first words most, 'cls' sees the first token alone). Use an encoder (a BERT-like or sentence-transformers "
        "model), or pool the last real token with pooling=NamedPooling('last', lambda h, m, out: "
        "h[torch.arange(len(h)), m.sum(1) - 1]).",
        UserWarning,
        stacklevel=4,
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
