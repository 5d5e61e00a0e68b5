"""Embedding recycling on an unmodified Hugging Face encoder: record, train and use contexts."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from torch import nn

from ember.data.loaders import Examples
from ember.data.texts import check_texts, check_tokenized, structural_ids
from ember.errors import DataError, EmberWarning, MissingEntriesError, StoreMismatchError, StoreReadOnlyError
from ember.models.families import EncoderParts, find_parts
from ember.models.inputs import pad_features, tokenize
from ember.models.load import resolve_max_length
from ember.recycle.config import RecycleConfig, check_layer
from ember.recycle.data import StoredDataset, collate_states
from ember.recycle.producer import SplitStates
from ember.recycle.session import Mode, Session
from ember.store.activations import STATES, ActivationStore, Entry
from ember.store.codec import torch_dtype
from ember.store.fill import Column, Executor, FillReport, SplitLabels, fill_split
from ember.store.fingerprint import Fingerprint, weights_hash
from ember.store.handle import StoreHandle
from ember.store.keys import KeyFn, KeyScheme, content_key


def _check_tokenizer(tokenizer: object) -> None:
    """Refuse what cannot be the model's tokenizer before it fails deep in the fingerprint or a fill."""
    if callable(tokenizer) and (hasattr(tokenizer, "backend_tokenizer") or hasattr(tokenizer, "get_vocab")):
        return
    raise TypeError(
        f"tokenizer must be the model's Hugging Face tokenizer, got {type(tokenizer).__name__} {tokenizer!r:.60}; "
        "load it with AutoTokenizer.from_pretrained(path) or take the second value of ember.load_model(path). "
        "The store is the third argument: Recycler(model, tokenizer, store, layer=k)"
    )


def _check_store(store: object) -> None:
    """Refuse a store argument that is none of a path, an open store or ``None`` (memory)."""
    if store is None or isinstance(store, ActivationStore):
        return
    if isinstance(store, str | os.PathLike):
        if not str(os.fspath(store)).strip():
            raise ValueError(
                "store is an empty path (it would put the store in the current folder); pass the store's folder, "
                "e.g. Recycler(model, tokenizer, 'states/', layer=k), or None for an in-memory store"
            )
        return
    raise TypeError(
        f"store must be the store's folder (a str or pathlib.Path; created if new), an open "
        f"ember.store.ActivationStore, or None for an in-memory store; got {type(store).__name__} {store!r:.60}. "
        "E.g. Recycler(model, tokenizer, 'states/', layer=k)"
    )


class Recycler:
    """Stores the hidden states entering layer ``k`` and lets later passes start from them.

    The model stays the user's: inside a context ember makes the embeddings and layers ``0..k-1`` pass
    their input through (an instance-level ``forward``; the modules and weights stay in place) and adds
    a forward pre-hook to the encoder, plus a pre-hook and a forward hook to the model (and the encoder) that
    make forwards from several threads take turns; leaving the context removes them all.

    Modes:
        - ``record()``: every forward computes the frozen bottom (eval mode) and writes its states.
        - ``train()``: forwards take states from the store (or ``inputs_embeds`` from :meth:`collate`)
          and run only layers ``k..N-1`` and the head; a missing example raises.
        - ``use(write_back=False)``: like ``train`` but misses are computed in the same batch.

    An existing on-disk store is opened read-only and becomes the writer only while something is written
    (a fill with something to store, ``record()``, ``use(write_back=True)``), so other processes read it
    meanwhile (:class:`~ember.store.handle.StoreHandle`).

    Args:
        model: a supported Hugging Face encoder, with or without a head.
        tokenizer: its tokenizer (part of the fingerprint; used by :meth:`fill`).
        store: directory of the store, an open :class:`ActivationStore`, or ``None`` for memory.
        config: split and storage settings; ``layer=`` (and ``max_size=``) are shortcuts for
            ``RecycleConfig(layer=..., max_size=...)``.
        readonly: never write the store (it must exist).
        key_fn: key of one example's token ids (content hash by default).
        layers_path, embeddings_path: explicit module paths for architectures ember does not know.

    Example:
        >>> rec = Recycler(model, tok, "states/", layer=3)            # doctest: +SKIP
        >>> report = rec.fill(train_texts, labels=train_labels)        # doctest: +SKIP
        >>> loader = DataLoader(rec.dataset(report.keys), batch_size=32, collate_fn=rec.collate)  # doctest: +SKIP
        >>> with rec.train():                                          # doctest: +SKIP
        ...     for batch in loader:
        ...         model(**batch).loss.backward()
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        store: str | Path | ActivationStore | None,
        config: RecycleConfig | None = None,
        *,
        layer: int | None = None,
        max_size: int | None = None,
        readonly: bool = False,
        key_fn: KeyFn = content_key,
        layers_path: str | None = None,
        embeddings_path: str | Sequence[str] | None = None,
    ) -> None:
        _check_tokenizer(tokenizer)
        _check_store(store)
        self.config = config = _config(config, layer, max_size)
        self.model, self.tokenizer = model, tokenizer
        self.keys = KeyScheme.from_ids(key_fn)
        self.parts: EncoderParts = find_parts(model, layers=layers_path, embeddings=embeddings_path)
        k = check_layer(config.layer, self.parts.num_layers, type(model).__name__)
        self.max_length = resolve_max_length(tokenizer, model, config.max_length)
        self.fingerprint = Fingerprint.of(
            "recycle", architecture=self.parts.architecture, frozen=self.parts.bottom(k), layer=k, dtype=config.dtype,
            tokenizer=tokenizer, max_length=self.max_length, model_config=getattr(model, "config", None),
            keys=self.keys.name,
        )
        self._slot = ActiveSlot()  # the producer's guard reads it; holding it (not self) keeps no reference cycle
        _warn_bottom_adapters(model, self.parts.bottom(k), k, self.parts.num_layers)
        self.producer = SplitStates(self.parts, k, torch_dtype(config.dtype), tokenizer, self.fingerprint, guard=self._slot.guard)
        self.handle = _open_handle(store, self.fingerprint, config, readonly, self._slot.holding)
        # A parameter of the embeddings tells the model's dtype and device even while the bottom is swapped out.
        self._ref_param = next(getattr(p, a) for p, a in self.parts.entry[:1]).parameters().__next__()

    @property
    def store(self) -> ActivationStore:
        """The store as opened now (read-only unless something is being written)."""
        return self.handle.store

    @property
    def device(self) -> torch.device:
        """Where the model's weights are (inputs and stored states are moved there)."""
        return self._ref_param.device

    @property
    def model_dtype(self) -> torch.dtype:
        """The dtype the model computes in (stored states are cast to it)."""
        return self._ref_param.dtype

    @property
    def _active(self) -> Session | None:
        return self._slot.session

    @_active.setter
    def _active(self, session: Session | None) -> None:
        self._slot.session = session

    # -- filling ----------------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str], **kwargs) -> dict[str, torch.Tensor]:
        """Tokenize a batch the way every mode keys it (same truncation), padded, as tensors.

        A tokenizer without a pad token (GPT-2's) is padded as :meth:`fill` pads, with id 0 under a zero
        attention mask: padded positions are never keyed, stored or attended to. (Setting a pad token instead
        would change the tokenizer's fingerprint, and the store filled with it would no longer open.)
        """
        if getattr(self.tokenizer, "pad_token_id", None) is None:
            return pad_features(self.tokenizer(list(texts), truncation=True, max_length=self.max_length, **kwargs), self.tokenizer)
        return dict(self.tokenizer(list(texts), truncation=True, max_length=self.max_length, padding=True, return_tensors="pt", **kwargs))

    def fill(
        self,
        data: Examples | Sequence[str],
        labels: Sequence[int | str] | None = None,
        *,
        split: str = "train",
        batch_size: int = 64,
        num_workers: int = 0,
        progress: bool = True,
        allow_empty: bool = False,
        executor: Executor | None = None,
    ) -> FillReport:
        """Compute and store the split-layer states of every example not stored yet, and record the split.

        Args:
            data: texts, or :class:`~ember.data.Examples` (whose labels are used when ``labels`` is None).
            labels: class ids or names (names get ids in the store's ``label_names``), recorded with the
                split, so training never reads or tokenizes the texts again.
            split: name under which the examples' keys, labels and lengths are recorded (see :meth:`dataset`).
            batch_size: examples per forward pass and per committed transaction.
            num_workers: tokenizer worker processes.
            allow_empty: store empty texts instead of refusing them.
            executor: where batches are computed (default: this process; see ``ember.scale`` for Ray).

        Returns:
            a :class:`FillReport`; its ``keys`` give the examples' store keys in input order.

        A store opened with ``readonly=True`` can be filled with what it holds already (the same examples,
        labels and split): nothing is written. A fill that would write raises
        :class:`~ember.errors.StoreReadOnlyError` before computing anything.
        """
        texts = data.texts if isinstance(data, Examples) else data if isinstance(data, str | bytes) else list(data)
        if labels is None and isinstance(data, Examples):
            labels = data.labels
        texts = check_texts(texts, allow_empty)
        self.store.find_split(split)  # refuses a split name that is not a non-empty str, before any work
        split_labels = SplitLabels.encode(labels, self.store, len(texts))
        if split_labels is not None:
            self._check_head(split_labels.ids)
        self.verify_weights()
        ids = tokenize(self.tokenizer, texts, self.max_length, num_workers=num_workers)
        check_tokenized(texts, ids, structural_ids(self.tokenizer), allow_empty)
        column = Column(STATES, self.handle, self.producer, ids, self.keys.keys(texts, ids),
                        description=f"storing layer-{self.config.layer} states")
        report = fill_split([column], self.handle, split, split_labels, lengths=True, batch_size=batch_size,
                            progress=progress, executor=executor)
        return report[STATES]

    def _check_head(self, label_ids: Sequence[int]) -> None:
        """Refuse class ids the model's head has no output for (training would fail mid-epoch inside torch)."""
        n = getattr(getattr(self.parts.model, "config", None), "num_labels", None)
        if self.parts.model is self.parts.base or not n or not label_ids or max(label_ids) < n:
            return
        raise DataError(
            f"label id {max(label_ids)} is past the model's head, which has {n} outputs (ids 0..{n - 1}); load the "
            f"model with num_labels= the number of classes (ember.load_model(path, 'classification', num_labels=...))"
        )

    # -- training data ----------------------------------------------------------------------------------
    def dataset(self, data: str | Sequence[bytes] = "train", *, labels: bool = True) -> StoredDataset:
        """A map-style dataset of stored examples, ready for a DataLoader with :meth:`collate`.

        Args:
            data: a split name recorded by :meth:`fill` (labels and lengths come from the split record), or
                a list of keys (labels, if wanted, must be in the entries, as ``record()`` writes them). One key
                alone (``bytes``) is refused, as a lone text is by :meth:`fill`: pass ``[key]``.
            labels: include labels in the items.
        """
        if isinstance(data, bytes | bytearray | memoryview):  # iterating it would give ints, one "key" per byte
            raise TypeError(
                f"dataset() takes a split name (str) or a list of keys, got one key ({type(data).__name__} "
                f"{bytes(data)[:16]!r}); wrap it: dataset([key])"
            )
        if isinstance(data, str) or not hasattr(data, "__iter__"):  # None or a number: get_split says what a split is
            split = self.store.get_split(data)  # type: ignore[arg-type]
            if labels and split.labels is None:
                raise MissingEntriesError(
                    f"split {data!r} of the store at {self.store.path} was filled without labels; fill it with "
                    "labels (Recycler.fill(data, labels) / --label-column), or use dataset(..., labels=False)"
                )
            return StoredDataset(self.store, split.keys[STATES], labels=split.labels if labels else None, lengths=split.lengths)
        keys = list(data)
        bad = next((i for i, k in enumerate(keys) if not isinstance(k, bytes | bytearray | memoryview)), None)
        if bad is not None:
            raise TypeError(
                f"dataset() takes a split name (str) or a list of keys (bytes, as FillReport.keys holds them), but item "
                f"{bad} of the list is {type(keys[bad]).__name__} {keys[bad]!r:.40}"
            )
        return StoredDataset(self.store, keys, labels="entries" if labels else None)

    def collate(self, batch: list[Entry]) -> dict[str, torch.Tensor]:
        """Pad stored examples into ``{"inputs_embeds", "attention_mask"[, "labels"]}`` for ``model(**batch)``."""
        return collate_states(batch, dtype=self.model_dtype)

    def verify_weights(self) -> None:
        """Refuse to go on if the frozen layers changed since the store was opened (their states would be stale)."""
        now = weights_hash(self.parts.bottom(self.config.layer))
        if now != self.fingerprint.weights:
            raise StoreMismatchError(
                f"the frozen embeddings/layers 0..{self.config.layer - 1} changed since this Recycler was created "
                "(trained, or another checkpoint loaded?), so the stored states no longer match them. Keep the "
                "bottom frozen, or create a new Recycler (and store) for the new weights."
            )

    # -- modes ------------------------------------------------------------------------------------------
    @contextmanager
    def record(self) -> Iterator[Recycler]:
        """Forward passes compute the bottom normally and write its states to the store (a store opened
        ``readonly=True`` is refused on entry, :class:`~ember.errors.StoreReadOnlyError`)."""
        with self._session("record"):
            yield self

    @contextmanager
    def train(self) -> Iterator[Recycler]:
        """Forward passes start from stored states; only layers ``k..N-1`` and the head run."""
        with self._session("train"):
            yield self

    @contextmanager
    def use(self, write_back: bool = False) -> Iterator[Recycler]:
        """Inference from stored states; misses are computed in the same batch (and stored if ``write_back``, which
        a store opened ``readonly=True`` refuses on entry).

        Computed misses are rounded to the store's dtype, as stored states were, so the same text gives the
        same logits whether it was stored or not (with float32 storage both equal the plain model's).

        Example:
            >>> with rec.use(write_back=True):                       # doctest: +SKIP
            ...     logits = model(**rec.tokenize(["new text"])).logits
        """
        with self._session("use", write_back=write_back):
            yield self

    @contextmanager
    def _session(self, mode: Mode, write_back: bool = False) -> Iterator[None]:
        if self._active is not None:
            raise RuntimeError(f"a recycle context ({self._active.mode}) is already active on this model; nesting is not supported")
        writes = mode == "record" or write_back
        if writes and self.handle.readonly:
            what = ("record() writes the states of every forward" if mode == "record"
                    else "use(write_back=True) writes the states of the examples it computes")
            instead = "use() or train() to read it" if mode == "record" else "use() without write_back to read it"
            raise StoreReadOnlyError(self.handle.refusal(
                f"{what} to the store at {self.store.path}",
                f"open it with readonly=False in one process to write it (Recycler(..., readonly=False)), or call {instead}",
            ))
        self.verify_weights()
        with self.handle.writing(f"{mode}()", needed=writes):
            session = Session(self, mode, write_back)
            session.attach()
            self._active = session
            try:
                yield
            finally:
                session.detach()  # waits for forwards still running on other threads
                self._active = None

    def close(self) -> None:
        """Close the store (the model is left as it is)."""
        self.handle.close()

    def __enter__(self) -> Recycler:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _warn_bottom_adapters(model: nn.Module, bottom: list[nn.Module], k: int, n: int) -> None:
    """Warn when an adapter wrapper (PEFT) puts trainable weights in the frozen, stored bottom: they are baked into
    the stored states as they are now, and never train from them (the bottom does not run in ``train()``)."""
    if not callable(getattr(model, "get_base_model", None)):
        return
    trainable = [name for m in bottom for name, p in m.named_parameters() if p.requires_grad]
    if trainable:
        warnings.warn(
            f"the adapters of this {type(model).__name__} reach the frozen layers 0..{k - 1} ({len(trainable)} trainable "
            f"tensors, first {trainable[0]}); their states are stored as they are now and those adapters never train "
            f"from the store. Put the adapters on the top layers only, e.g. LoraConfig(layers_to_transform="
            f"list(range({k}, {n})), ...)",
            EmberWarning,
            stacklevel=3,
        )


class ActiveSlot:
    """The recycle context active on a model, if any; the producer computes through :meth:`guard`."""

    def __init__(self) -> None:
        self.session: Session | None = None

    def guard(self):
        """The context the producer computes the bottom in: with a recycle context active, its own bottom put back."""
        session = self.session
        return nullcontext() if session is None else session.computing()

    def holding(self):
        """The active context's lock (its forwards finish first), for reopening the store; else nothing."""
        session = self.session
        return nullcontext() if session is None else session.lock


def _config(config: RecycleConfig | None, layer: int | None, max_size: int | None) -> RecycleConfig:
    """The config from ``config`` or its shortcuts (``layer=``, ``max_size=``), refusing a contradiction."""
    if config is None:
        if layer is None:
            raise TypeError("pass config=RecycleConfig(layer=k) or layer=k")
        return RecycleConfig(layer=layer, max_size=max_size)
    if not isinstance(config, RecycleConfig):
        raise TypeError(
            f"config must be a RecycleConfig, got {type(config).__name__} {config!r:.60}; for the split layer "
            "alone pass layer=k (Recycler(model, tokenizer, store, layer=3))"
        )
    if layer is not None and check_layer(layer) != config.layer:
        raise ValueError(f"layer={layer} contradicts config.layer={config.layer}")
    if max_size is not None and max_size != config.max_size:
        raise ValueError(f"max_size={max_size} contradicts config.max_size={config.max_size}")
    return config


def _open_handle(store: str | Path | ActivationStore | None, fingerprint: Fingerprint, config: RecycleConfig,
                 readonly: bool, guard) -> StoreHandle:
    """The handle of the recycler's store: a path (or None, memory) opened here, or a store opened by the caller.

    Once taken, the writer lock is kept (``give_back=False``), and the one reopen happens between forwards
    (``guard``): a context's forwards on other threads read the store while a fill on another thread writes it.
    """
    if not isinstance(store, ActivationStore):
        backend = "memory" if store is None else config.backend
        return StoreHandle(store, fingerprint, backend=backend, readonly=readonly, give_back=False, guard=guard,
                           **config.store_options())
    return StoreHandle.wrap(store, expect=fingerprint, refusal=(
        "the store at {path} was made by another model or setting:\n  {lines}\n"
        "Pass the store's path instead of an open store made for another model, or a new path."))


