"""Embedding recycling on an unmodified Hugging Face encoder: record, train and use contexts."""

from __future__ import annotations

import numbers
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from ember.data.labels import encode_labels
from ember.data.loaders import Examples
from ember.data.texts import check_texts, check_tokenized, structural_ids
from ember.errors import (
    DataError,
    MissingEntriesError,
    StoreCorruptError,
    StoreMismatchError,
    StoreReadOnlyError,
)
from ember.models.families import EncoderParts, find_parts
from ember.models.inputs import pad_features, pad_ids, tokenize, unpad
from ember.models.load import resolve_max_length
from ember.models.split import bind_call, passthrough, split_states
from ember.recycle.data import StoredDataset, collate_states
from ember.store.activations import STATES, ActivationStore, Entry, Split
from ember.store.base import Backend, check_backend
from ember.store.codec import DType, torch_dtype
from ember.store.fill import FillReport, fill
from ember.store.fingerprint import Fingerprint, callable_name, config_hash, tokenizer_hash, weights_hash
from ember.store.keys import KeyFn, content_key, row_keys

Mode = Literal["record", "train", "use"]
_NO_FORWARD = object()


@dataclass(frozen=True)
class RecycleConfig:
    """How to split and store.

    Args:
        layer: the split ``k``: embeddings and layers ``0..k-1`` are frozen and stored; ``0 <= k <= N``.
        dtype: storage dtype of the hidden states (``float16``/``bfloat16`` halve the size).
        max_length: truncation length in tokens (default: the tokenizer's, capped by the model's positions).
        backend: ``lmdb`` (default), ``leveldb`` or ``memory``.

    Example:
        >>> RecycleConfig(layer=3, dtype="float16").dtype
        'float16'
    """

    layer: int
    dtype: DType = "float32"
    max_length: int | None = None
    backend: Backend = "lmdb"

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer", check_layer(self.layer))
        torch_dtype(self.dtype)
        check_backend(self.backend)
        if self.max_length is not None and (not _is_int(self.max_length) or self.max_length < 2):
            raise ValueError(f"max_length must be an int >= 2 (tokens), got {self.max_length!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def _is_int(value: object) -> bool:
    """An integer (numpy ints too), but not a bool: ``True`` is an int to Python and never meant as one here."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_layer(layer: object, num_layers: int | None = None, model: str = "the model") -> int:
    """The split layer ``k`` as an int, refused unless ``0 <= k <= num_layers`` (when the count is known).

    ``k`` counts the frozen layers: 0 stores the embeddings' output (every layer trains), ``num_layers`` stores
    the last layer's (only the head trains).

    Example:
        >>> check_layer(3, 6)
        3
    """
    allowed = "0 <= k" if num_layers is None else f"0 <= k <= {num_layers}"
    if not _is_int(layer):
        raise TypeError(
            f"layer must be an int (the split layer k, {allowed}), got {type(layer).__name__} {layer!r}; "
            "pass e.g. layer=3"
        )
    k = int(layer)  # type: ignore[call-overload]
    if k < 0 or (num_layers is not None and k > num_layers):
        counted = "" if num_layers is None else f": {model} has {num_layers} layers"
        raise ValueError(
            f"layer={k} is out of range{counted}; pass a split layer k with {allowed} (embeddings and layers "
            "0..k-1 are frozen and stored, layers k.. train)"
        )
    return k


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

    Args:
        model: a supported Hugging Face encoder, with or without a head.
        tokenizer: its tokenizer (part of the fingerprint; used by :meth:`fill`).
        store: directory of the store, an open :class:`ActivationStore`, or ``None`` for memory.
        config: split and storage settings; ``layer=`` is a shortcut for ``RecycleConfig(layer=...)``.
        readonly: open an existing store for reading only.
        key_fn: key of one example's token ids (content hash by default).
        layers_path, embeddings_path: explicit module paths for architectures ember does not know.
        **store_options: backend options (e.g. ``max_size`` for LMDB).

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
        readonly: bool = False,
        key_fn: KeyFn = content_key,
        layers_path: str | None = None,
        embeddings_path: str | Sequence[str] | None = None,
        **store_options,
    ) -> None:
        _check_tokenizer(tokenizer)
        _check_store(store)
        if config is None:
            if layer is None:
                raise TypeError("pass config=RecycleConfig(layer=k) or layer=k")
            config = RecycleConfig(layer=layer)
        elif not isinstance(config, RecycleConfig):
            raise TypeError(
                f"config must be a RecycleConfig, got {type(config).__name__} {config!r:.60}; for the split layer "
                "alone pass layer=k (Recycler(model, tokenizer, store, layer=3))"
            )
        elif layer is not None and check_layer(layer) != config.layer:
            raise ValueError(f"layer={layer} contradicts config.layer={config.layer}")
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.key_fn = key_fn
        self.parts: EncoderParts = find_parts(model, layers=layers_path, embeddings=embeddings_path)
        k = check_layer(config.layer, self.parts.num_layers, type(model).__name__)
        self.max_length = resolve_max_length(tokenizer, model, config.max_length)
        self.fingerprint = Fingerprint(
            kind="recycle",
            architecture=self.parts.architecture,
            weights=weights_hash(self.parts.bottom(k)),
            layer=k,
            dtype=config.dtype,
            tokenizer=tokenizer_hash(tokenizer),
            max_length=self.max_length,
            extra=(("config", config_hash(getattr(model, "config", None))), ("key", callable_name(key_fn))),
        )
        if isinstance(store, ActivationStore):
            if store.fingerprint != self.fingerprint:
                differences = store.fingerprint.diff(self.fingerprint) if store.fingerprint else ["it has no fingerprint"]
                lines = "\n  ".join(differences)
                raise StoreMismatchError(
                    f"the store at {store.path} was made by another model or setting:\n  {lines}\n"
                    "Pass the store's path instead of an open store made for another model, or a new path.",
                    differences,
                )
            self.store = store
        else:
            backend = "memory" if store is None else config.backend
            self.store = ActivationStore.open(store, self.fingerprint, backend=backend, readonly=readonly, **store_options)
        self._store_dtype = torch_dtype(config.dtype)
        # A parameter of the embeddings tells the model's dtype and device even while the bottom is swapped out.
        self._ref_param = next(getattr(p, a) for p, a in self.parts.entry[:1]).parameters().__next__()
        self._active: _Session | None = None

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

        Returns:
            a :class:`FillReport`; its ``keys`` give the examples' store keys in input order.

        A store opened with ``readonly=True`` can be filled with what it holds already (the same examples,
        labels and split): nothing is written. A fill that would write raises
        :class:`~ember.errors.StoreReadOnlyError` before computing anything.
        """
        texts = data.texts if isinstance(data, Examples) else data if isinstance(data, str | bytes) else list(data)
        if labels is None and isinstance(data, Examples):
            labels = data.labels
        check_texts(texts, allow_empty)
        previous = self.store.find_split(split)  # refuses a split name that is not a non-empty str, before any work
        label_ids, names = None, None
        if labels is not None:
            label_ids, names = encode_labels(labels, self.store.label_names, count=len(texts))
            self._check_head(label_ids)
        self.verify_weights()
        ids = tokenize(self.tokenizer, texts, self.max_length, num_workers=num_workers)
        check_tokenized(texts, ids, structural_ids(self.tokenizer), allow_empty)
        keys = [self.key_fn(x) for x in ids]
        record = Split({STATES: keys}, label_ids, [len(x) for x in ids])
        new_names = names is not None and names != (self.store.label_names or [])
        if self.store.kv.readonly:
            self._refuse_readonly_fill(split, keys, previous, record, names if new_names else None)
        if new_names:
            self.store.merge_label_names(names)  # type: ignore[arg-type]
        report = fill(
            self.store,
            ids,
            self._compute,
            batch_size=batch_size,
            keys=keys,
            progress=progress,
            description=f"storing layer-{self.config.layer} states",
        )
        # Written last: a split is recorded only once all its examples are committed.
        if previous != record:
            self.store.add_split(split, record)
        report.split = split
        return report

    def _refuse_readonly_fill(
        self, split: str, keys: list[bytes], previous: Split | None, record: Split, names: list[str] | None
    ) -> None:
        """Raise, naming what a fill of a read-only store would have to write; return when it writes nothing."""
        needs = []
        missing = self.store.missing(keys)
        if missing:
            needs.append(f"{len(missing)} of {len(set(keys))} distinct examples are not stored yet")
        if names is not None:
            needs.append(f"new label names {names[len(self.store.label_names or []):][:5]}")
        if previous is None:
            needs.append(f"split {split!r} is not recorded yet")
        elif previous != record:
            needs.append(f"split {split!r} is recorded with other examples or labels")
        if needs:
            raise StoreReadOnlyError(
                f"this fill needs to write the store at {self.store.path} ({'; '.join(needs)}), but it was "
                "opened with readonly=True; open it with readonly=False in one process to fill it"
            )

    def _check_head(self, label_ids: Sequence[int]) -> None:
        """Refuse class ids the model's head has no output for (training would fail mid-epoch inside torch)."""
        n = getattr(getattr(self.parts.model, "config", None), "num_labels", None)
        if self.parts.model is self.parts.base or not n or not label_ids or max(label_ids) < n:
            return
        raise DataError(
            f"label id {max(label_ids)} is past the model's head, which has {n} outputs (ids 0..{n - 1}); load the "
            f"model with num_labels= the number of classes (ember.load_model(path, 'classification', num_labels=...))"
        )

    @property
    def device(self) -> torch.device:
        """Where the model's weights are (inputs and stored states are moved there)."""
        return self._ref_param.device

    def _compute(self, ids: list[list[int]]) -> list[Entry]:
        input_ids, mask = pad_ids(ids, self.tokenizer, self.device)
        states = self._bottom(input_ids, mask)
        return [{"states": s.to(self._store_dtype).cpu()} for s in unpad(states, mask)]

    def _bottom(self, input_ids: torch.Tensor, mask: torch.Tensor, **extra) -> torch.Tensor:
        session = self._active
        if session is None:
            return split_states(self.parts, self.config.layer, input_ids, mask, **extra)
        with session.lock, session.restored():  # a fill on another thread waits for the forwards, and they for it
            return split_states(self.parts, self.config.layer, input_ids, mask, **extra)

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
        return collate_states(batch, dtype=self._model_dtype())

    def verify_weights(self) -> None:
        """Refuse to go on if the frozen layers changed since the store was opened (their states would be stale)."""
        now = weights_hash(self.parts.bottom(self.config.layer))
        if now != self.fingerprint.weights:
            raise StoreMismatchError(
                f"the frozen embeddings/layers 0..{self.config.layer - 1} changed since this Recycler was created "
                "(trained, or another checkpoint loaded?), so the stored states no longer match them. Keep the "
                "bottom frozen, or create a new Recycler (and store) for the new weights."
            )

    def _model_dtype(self) -> torch.dtype:
        return self._ref_param.dtype

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
        if self.store.kv.readonly and (mode == "record" or write_back):
            what = ("record() writes the states of every forward" if mode == "record"
                    else "use(write_back=True) writes the states of the examples it computes")
            instead = "use() or train() to read it" if mode == "record" else "use() without write_back to read it"
            raise StoreReadOnlyError(
                f"{what} to the store at {self.store.path}, but it was opened with readonly=True; open it with "
                f"readonly=False in one process to write it (Recycler(..., readonly=False)), or call {instead}"
            )
        self.verify_weights()
        session = _Session(self, mode, write_back)
        session.attach()
        self._active = session
        try:
            yield
        finally:
            session.detach()  # waits for forwards still running on other threads
            self._active = None

    def close(self) -> None:
        """Close the store (the model is left as it is)."""
        self.store.close()

    def __enter__(self) -> Recycler:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Session:
    """The bypasses and hooks of one active context; ``detach`` restores the model exactly.

    The frozen modules stay in the model (so ``state_dict()``, ``.to()``, checkpoints and optimizers see
    every weight); only their ``forward`` is overridden on the instance, and put back on exit.
    """

    def __init__(self, rec: Recycler, mode: Mode, write_back: bool) -> None:
        self.rec, self.mode, self.write_back = rec, mode, write_back
        self.bottom = rec.parts.bottom(rec.config.layer)
        self.saved: list[object] = []
        self.handles: list = []
        self.inner = False
        self.labels: torch.Tensor | None = None
        self.lock = threading.RLock()  # see _take_turns
        self.closed = False

    def attach(self) -> None:
        parts = self.rec.parts
        # Another library (accelerate, say) may already have put a forward on the instance: keep it.
        self.saved = [m.__dict__.get("forward", _NO_FORWARD) for m in self.bottom]
        self._bypass()
        self._take_turns()
        self.handles.append(parts.base.register_forward_pre_hook(self._pre_hook, with_kwargs=True))
        if self.mode == "record" and parts.model is not parts.base:
            # The head's forward sees the labels; record() stores them with the states.
            self.handles.append(parts.model.register_forward_pre_hook(self._grab_labels, with_kwargs=True))

    def _take_turns(self) -> None:
        """Forwards of the model inside the context run one at a time, whatever thread calls them.

        The bypass is state shared by every caller: computing a miss puts the bottom's own forwards back for
        a moment, and a labelled ``record`` forward leaves its labels here for the states. Two threads' forwards
        would run through each other's bottom (found with 4 threads calling the model inside ``use()``: 218
        of 300 batches failed or came back wrong). ``self.lock`` is taken before any other hook of the model
        and given back after its forward, also when the forward raises an ``Exception`` (``always_call``; a
        ``KeyboardInterrupt`` skips torch's hooks, and leaving the context gives such a hold back); re-entrant,
        for the base model called inside the head's forward. ``Recycler._bottom`` takes it too, so a fill on
        another thread waits its turn.
        """

        @torch.compiler.disable
        def take(module: nn.Module, args: tuple) -> None:
            self.lock.acquire()
            if self.closed:  # the context was left while this forward waited: it runs as the plain model
                self.lock.release()

        @torch.compiler.disable
        def give(module: nn.Module, args: tuple, output) -> None:
            self.lock.release()

        parts = self.rec.parts
        for m in dict.fromkeys([parts.model, parts.base]):  # the base too, for a caller that runs it directly
            self.handles.append(m.register_forward_pre_hook(take, prepend=True))
            self.handles.append(m.register_forward_hook(give, always_call=True))

    def detach(self) -> None:
        """Restore the model, once the forwards running on other threads are done."""
        self.lock.acquire()
        try:
            for h in self.handles:
                h.remove()
            self._restore()
            self.closed = True
        finally:
            # every hold of this thread, including one a KeyboardInterrupt left inside a forward
            while self.lock._is_owned():  # type: ignore[attr-defined]  # RLock's own check, as Condition uses
                self.lock.release()

    @torch.compiler.disable
    def _grab_labels(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        labels = bind_call(module, args, kwargs).get("labels")
        self.labels = labels if isinstance(labels, torch.Tensor) and labels.dim() == 1 else None

    def _bypass(self) -> None:
        for m in self.bottom:
            m.forward = passthrough

    def _restore(self) -> None:
        for m, old in zip(self.bottom, self.saved, strict=True):
            if old is _NO_FORWARD:
                m.__dict__.pop("forward", None)
            else:
                m.forward = old

    @contextmanager
    def restored(self) -> Iterator[None]:
        """The original bottom, for computing misses in the middle of a forward."""
        self._restore()
        self.inner = True
        try:
            yield
        finally:
            self.inner = False
            self._bypass()

    # Every hook of a context runs eagerly even in a torch.compile'd model: Dynamo would trace into the store
    # reads and the content key (numpy bytes) and fail; disabled, they are a graph break.
    @torch.compiler.disable
    def _pre_hook(self, module: nn.Module, args: tuple, kwargs: dict):
        if self.inner or self.closed:
            return None
        call = bind_call(module, args, kwargs)
        dtype = self.rec._model_dtype()
        device = self.rec.device
        if call.get("inputs_embeds") is not None:
            call["inputs_embeds"] = call["inputs_embeds"].to(device=device, dtype=dtype)
            return (), call
        input_ids = call.get("input_ids")
        if input_ids is None:
            raise ValueError("inside a recycle context call the model with input_ids or inputs_embeds")
        mask = call.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(input_ids)
            call["attention_mask"] = mask
        call["inputs_embeds"] = self._states(input_ids, mask, call).to(dtype)
        call["input_ids"] = None
        return (), call

    def _states(self, input_ids: torch.Tensor, mask: torch.Tensor, call: dict) -> torch.Tensor:
        rec = self.rec
        extra = {"token_type_ids": call.get("token_type_ids")}
        keys = row_keys(input_ids, mask, rec.key_fn, extra["token_type_ids"])
        if self.mode == "record":
            states = rec._bottom(input_ids, mask, **extra)
            new = set(rec.store.missing(keys))
            rows = [i for i, k in enumerate(keys) if k in new]
            per_row = unpad(states, mask)
            rows = list({keys[i]: i for i in rows}.values())  # one write per distinct example
            labels = self.labels if self.labels is not None and self.labels.shape[0] == len(keys) else None
            entries = []
            for i in rows:
                entry = {"states": per_row[i].to(rec._store_dtype).cpu()}
                if labels is not None:
                    entry["label"] = labels[i].detach().to("cpu", torch.int64)
                entries.append(entry)
            if rows:
                rec.store.put([keys[i] for i in rows], entries)
            self.labels = None
            return states
        entries = rec.store.get(keys)
        miss = [i for i, e in enumerate(entries) if e is None]
        if miss and self.mode == "train":
            shown = ", ".join(keys[i].hex()[:12] for i in miss[:3])
            raise MissingEntriesError(
                f"{len(miss)} of {len(keys)} examples in this batch are not in the store at {rec.store.path} "
                f"(keys {shown}{', ...' if len(miss) > 3 else ''}). Fill the store with these texts first "
                "(Recycler.fill / ember recycle fill), or use the use() context, which computes misses."
            )
        if miss:
            sub = torch.tensor(miss, device=input_ids.device)
            sub_extra = {n: (v[sub] if isinstance(v, torch.Tensor) else v) for n, v in extra.items()}
            # Misses go through the storage dtype like hits did, so a text gets the same answer before and
            # after it is stored (identity for float32 stores).
            computed = [s.to(rec._store_dtype) for s in unpad(rec._bottom(input_ids[sub], mask[sub], **sub_extra), mask[sub])]
            for i, s in zip(miss, computed, strict=True):
                entries[i] = {"states": s}
            if self.write_back:
                by_key = {keys[i]: s for i, s in zip(miss, computed, strict=True)}
                rec.store.put(list(by_key), [{"states": s.cpu()} for s in by_key.values()])
        return _assemble(entries, mask, rec._model_dtype())


def _assemble(entries: Sequence[Entry], mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Scatter unpadded per-example states into a padded ``(B, T, H)`` batch at the mask's positions."""
    b, t = mask.shape
    h = entries[0]["states"].shape[-1]
    out = torch.zeros(b, t, h, dtype=dtype, device=mask.device)
    for i, e in enumerate(entries):
        pos = mask[i].nonzero(as_tuple=True)[0]
        s = e["states"]
        if s.shape[0] != pos.numel():
            raise StoreCorruptError(
                f"a stored entry has {s.shape[0]} tokens but the batch row has {pos.numel()}: the inputs were "
                "tokenized differently from the fill (truncation?). Tokenize with Recycler.tokenize()."
            )
        out[i, pos] = s.to(device=mask.device, dtype=dtype)
    return out
