"""Running the frozen bottom of an encoder, and standing in for it, without touching the model's code."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ember.models.families import EncoderParts


class _StopForward(Exception):
    """Raised by a hook to end a forward pass once the split-layer states are captured."""


def passthrough(*args, **kwargs) -> torch.Tensor:
    """Stands in for the forward of a frozen bottom module: returns the hidden states it is handed.

    The first bottom module (the embeddings) receives the stored states as ``inputs_embeds``; every later
    one (ELECTRA's projection, layers ``0..k-1``) receives them as its first argument.
    """
    for v in (*args, kwargs.get("inputs_embeds"), kwargs.get("hidden_states")):
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            return v
    raise RuntimeError(
        "a recycled bottom module was called without hidden states; inside recycle contexts call the model "
        "with input_ids (looked up in the store) or inputs_embeds=<stored states>"
    )


@contextmanager
def frozen_eval(module: nn.Module) -> Iterator[nn.Module]:
    """Run ``module`` in eval mode (frozen layers never use dropout), then give every submodule back its
    own training flag.

    Example:
        >>> with frozen_eval(model):  # doctest: +SKIP
        ...     states = model(**batch).last_hidden_state
    """
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, t in flags:
            m.training = t


def split_states(
    parts: EncoderParts,
    k: int,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    **extra: torch.Tensor | None,
) -> torch.Tensor:
    """Hidden states entering layer ``k`` (``(B, T, H)``), computed by the model's own forward in eval mode.

    The model's forward builds the attention mask its own way (eager, sdpa, ...); a hook on layer ``k``
    captures its input and stops the pass, so layers ``k..N-1`` and the head never run.
    """
    captured: dict[str, torch.Tensor] = {}
    if k < parts.num_layers:

        def grab(module, args, kwargs):
            captured["h"] = args[0] if args else kwargs["hidden_states"]  # (B, T, H): layer k's input
            raise _StopForward

        handle = parts.layers[k].register_forward_pre_hook(grab, with_kwargs=True)
    else:

        def grab_out(module, args, output):
            captured["h"] = output[0] if isinstance(output, tuple) else output  # (B, T, H): the last layer's output
            raise _StopForward

        handle = parts.layers[k - 1].register_forward_hook(grab_out)
    try:
        with frozen_eval(parts.base), torch.no_grad():
            parts.base(input_ids=input_ids, attention_mask=attention_mask, **{n: v for n, v in extra.items() if v is not None})
    except _StopForward:
        pass
    finally:
        handle.remove()
    if "h" not in captured:
        raise RuntimeError(f"{type(parts.base).__name__} never called layer {k}; is the layer list right?")
    return captured["h"]  # (B, T, H)


def bind_call(module: nn.Module, args: tuple, kwargs: dict) -> dict:
    """A forward call's arguments by name (``**kwargs`` flattened)."""
    sig = inspect.signature(module.forward)
    bound = sig.bind(*args, **kwargs).arguments
    out = {}
    for name, value in bound.items():
        if sig.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        elif sig.parameters[name].kind is inspect.Parameter.VAR_POSITIONAL:
            raise TypeError(f"{type(module).__name__}.forward takes *args; ember cannot bind its call")
        else:
            out[name] = value
    return out
