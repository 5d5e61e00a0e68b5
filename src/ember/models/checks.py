"""Checks that a model given to ember is one it can run as an encoder, with errors that name the fix."""

from __future__ import annotations

from torch import nn

from ember.errors import TokenizerError, UnsupportedModelError
from ember.fixes import PAD_TOKEN_GIVE, PAD_TOKEN_PASS
from ember.models.families import SUPPORTED_FAMILIES


def check_module(obj: object, what: str) -> None:
    """Refuse what ember cannot run as an encoder.

    Args:
        obj: the model (or encoder) the user passed.
        what: how the message names it, e.g. ``"model"`` or ``"encoder 'text'"``.

    Raises:
        TypeError: ``obj`` is not a torch ``nn.Module`` (a path or hub id given where a loaded model is expected).
        UnsupportedModelError: ``obj`` is an encoder-decoder model (T5, BART …), whose output comes from its
            decoder; the message says to pass its encoder.

    Example:
        >>> check_module("bert-base-uncased", "model")
        Traceback (most recent call last):
        ...
        TypeError: model must be a torch nn.Module, got str; load a folder or hub id with ember.load_model(path) first
    """
    if not isinstance(obj, nn.Module):
        raise TypeError(
            f"{what} must be a torch nn.Module, got {type(obj).__name__}; load a folder or hub id with "
            "ember.load_model(path) first"
        )
    if is_encoder_decoder(obj):
        model_type = getattr(getattr(obj, "config", None), "model_type", None)
        raise UnsupportedModelError(
            f"{what} is a {type(obj).__name__} (model_type={model_type!r}), an encoder-decoder model: its output comes "
            "from its decoder (T5's forward asks for decoder inputs), and ember runs encoders. Pass its encoder "
            "instead: model.get_encoder(), or load the encoder alone (e.g. transformers.T5EncoderModel.from_pretrained"
            f"(path) for T5). Encoder families ember knows: {', '.join(SUPPORTED_FAMILIES)}."
        )


def is_encoder_decoder(model: nn.Module) -> bool:
    """Whether ``model`` is a Hugging Face encoder-decoder model (T5, BART, ``EncoderDecoderModel`` …).

    Told by its structure, an ``encoder`` and a ``decoder`` module in its base model, rather than by
    ``config.is_encoder_decoder``: the encoder half (``model.get_encoder()``) shares that config, and building a
    ``T5EncoderModel`` from a config clears the flag on it in place.
    """
    if getattr(model, "config", None) is None:  # a user's own module: its parts are its business
        return False
    base = getattr(model, "base_model", model)
    return isinstance(getattr(base, "encoder", None), nn.Module) and isinstance(getattr(base, "decoder", None), nn.Module)


def is_causal_decoder(model: nn.Module) -> bool:
    """Whether ``model`` is a causal (decoder-only) transformer such as GPT-2 or Llama: each token's state sees only
    the tokens before it.

    Told by its config (``is_decoder``, e.g. BERT set up as a decoder) or by an attention module marked
    ``is_causal`` (how transformers marks GPT-2, Llama, Qwen2, OPT … attention); a plain encoder has neither.
    """
    if getattr(getattr(model, "config", None), "is_decoder", False):
        return True
    return any(getattr(m, "is_causal", None) is True for m in model.modules())


def check_pad_token(tokenizer: object, why: str) -> None:
    """Refuse a tokenizer that cannot pad (no pad token, as GPT-2's), before transformers fails deep inside a call.

    Args:
        tokenizer: the user's Hugging Face tokenizer.
        why: what pads texts with it, e.g. ``"optimize() verifies the artifact on padded batches"``.

    Raises:
        TokenizerError: the tokenizer has no pad token; the message names how to give it one.

    Example:
        >>> from types import SimpleNamespace
        >>> check_pad_token(SimpleNamespace(pad_token=None, eos_token="</s>"), "this pads")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ember.errors.TokenizerError: this pads, but SimpleNamespace has no pad token ... tokenizer.pad_token = tokenizer.eos_token ...
    """
    if not hasattr(tokenizer, "pad_token") or tokenizer.pad_token is not None:  # a tokenizer of one's own pads its way
        return
    present = [t for t in ("eos_token", "sep_token", "unk_token") if getattr(tokenizer, t, None) is not None]
    if present:
        fix = f"tokenizer.pad_token = tokenizer.{present[0]}"
    else:
        fix = "tokenizer.add_special_tokens({'pad_token': '[PAD]'}), then model.resize_token_embeddings(len(tokenizer))"
    raise TokenizerError(
        f"{why}, but {type(tokenizer).__name__} has no pad token (pad_token is None, as in GPT-2-style tokenizers). "
        f"{PAD_TOKEN_GIVE}{fix} (padded positions are masked, so the token chosen changes no output){PAD_TOKEN_PASS}.",
        fixes=[PAD_TOKEN_GIVE, PAD_TOKEN_PASS],
    )
