"""One active recycle context: the bypasses and hooks that make a forward start from stored states.

The model stays the user's: the embeddings and layers ``0..k-1`` keep their weights and place in the model;
only their ``forward`` is overridden on the instance (with :func:`~ember.models.split.passthrough`), and a
forward pre-hook on the encoder swaps ``input_ids`` for the stored states as ``inputs_embeds``. Leaving the
context puts every forward back and removes every hook.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from ember.errors import MissingEntriesError, StoreCorruptError
from ember.models.inputs import unpad
from ember.models.split import bind_call, passthrough
from ember.store.activations import Entry
from ember.store.fill import write_back
from ember.store.keys import row_keys

if TYPE_CHECKING:  # pragma: no cover
    from ember.recycle.recycler import Recycler

Mode = Literal["record", "train", "use"]
_NO_FORWARD = object()


class Session:
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
        for the base model called inside the head's forward. The producer's guard takes it too
        (:meth:`computing`), so a fill on another thread waits its turn.
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
    def computing(self) -> Iterator[None]:
        """The original bottom, for computing states in the middle of a forward (or a fill on another thread)."""
        with self.lock:
            self._restore()
            self.inner = True
            try:
                yield
            finally:
                self.inner = False
                if not self.closed:
                    self._bypass()

    # Every hook of a context runs eagerly even in a torch.compile'd model: Dynamo would trace into the store
    # reads and the content key (numpy bytes) and fail; disabled, they are a graph break.
    @torch.compiler.disable
    def _pre_hook(self, module: nn.Module, args: tuple, kwargs: dict):
        if self.inner or self.closed:
            return None
        call = bind_call(module, args, kwargs)
        dtype = self.rec.model_dtype
        if call.get("inputs_embeds") is not None:
            call["inputs_embeds"] = call["inputs_embeds"].to(device=self.rec.device, dtype=dtype)
            return (), call
        input_ids = call.get("input_ids")
        if input_ids is None:
            raise ValueError("inside a recycle context call the model with input_ids or inputs_embeds")
        mask = call.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(input_ids)
            call["attention_mask"] = mask
        extra = {"token_type_ids": call.get("token_type_ids")}
        keys = row_keys(input_ids, mask, self.rec.keys, extra["token_type_ids"])
        states = self._record(keys, input_ids, mask, extra) if self.mode == "record" else self._read(keys, input_ids, mask, extra)
        call["inputs_embeds"] = states.to(dtype)  # (B, T, H)
        call["input_ids"] = None
        return (), call

    def _record(self, keys: list[bytes], input_ids: torch.Tensor, mask: torch.Tensor, extra: dict) -> torch.Tensor:
        """``record()``: compute the bottom, store each distinct new example's states (with its label)."""
        rec = self.rec
        states = rec.producer.states(input_ids, mask, **extra)  # (B, T, H)
        labels = self.labels if self.labels is not None and self.labels.shape[0] == len(keys) else None
        entries = []
        for i, s in enumerate(unpad(states, mask)):  # [(L_i, H)]
            entry = {"states": s.to(rec.producer.dtype).cpu()}
            if labels is not None:
                entry["label"] = labels[i].detach().to("cpu", torch.int64)
            entries.append(entry)
        write_back(rec.store, keys, entries)
        self.labels = None
        return states

    def _read(self, keys: list[bytes], input_ids: torch.Tensor, mask: torch.Tensor, extra: dict) -> torch.Tensor:
        """``train()``/``use()``: states from the store; misses raise (train) or are computed here (use)."""
        rec = self.rec
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
            states = rec.producer.states(input_ids[sub], mask[sub], **sub_extra)  # (M, T, H)
            computed = [s.to(rec.producer.dtype) for s in unpad(states, mask[sub])]  # [(L_i, H)]
            for i, s in zip(miss, computed, strict=True):
                entries[i] = {"states": s}
            if self.write_back:
                write_back(rec.store, [keys[i] for i in miss], [{"states": s.cpu()} for s in computed])
        return assemble(entries, mask, rec.model_dtype)  # type: ignore[arg-type]


def assemble(entries: Sequence[Entry], mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Scatter unpadded per-example states ``[(L_i, H)]`` into a padded ``(B, T, H)`` batch at the mask's positions."""
    b, t = mask.shape
    h = entries[0]["states"].shape[-1]
    out = torch.zeros(b, t, h, dtype=dtype, device=mask.device)  # (B, T, H)
    for i, e in enumerate(entries):
        pos = mask[i].nonzero(as_tuple=True)[0]  # (L_i,)
        s = e["states"]  # (L_i, H)
        if s.shape[0] != pos.numel():
            raise StoreCorruptError(
                f"a stored entry has {s.shape[0]} tokens but the batch row has {pos.numel()}: the inputs were "
                "tokenized differently from the fill (truncation?). Tokenize with Recycler.tokenize()."
            )
        out[i, pos] = s.to(device=mask.device, dtype=dtype)
    return out
