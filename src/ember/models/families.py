"""Where each encoder family keeps its embeddings and its layer list.

ember never asks the user to subclass a model: it finds these parts on the model exactly as
``from_pretrained`` built it, and swaps or hooks them for the duration of a context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from ember.errors import UnsupportedModelError

# model_type -> (layer list path, modules that run before layer 0, in call order), relative to base_model.
# ELECTRA projects small embeddings up to the hidden size before layer 0; the projection is part of the bottom.
_FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "bert": ("encoder.layer", ("embeddings",)),
    "roberta": ("encoder.layer", ("embeddings",)),
    "xlm-roberta": ("encoder.layer", ("embeddings",)),
    "camembert": ("encoder.layer", ("embeddings",)),
    "electra": ("encoder.layer", ("embeddings", "embeddings_project")),
    "distilbert": ("transformer.layer", ("embeddings",)),
}
SUPPORTED_FAMILIES: tuple[str, ...] = tuple(_FAMILIES)


@dataclass(frozen=True)
class EncoderParts:
    """The pieces of one encoder that recycling and caching work on.

    Attributes:
        model: the user's model (e.g. ``BertForSequenceClassification``).
        base: the encoder inside it (``model.base_model``), whose forward builds the attention mask.
        entry: ``(parent, attribute)`` of every module that runs before layer 0, in call order.
        layers: the encoder's layer list; layer ``i`` takes ``hidden_states`` first and returns a tensor.
        family: ``config.model_type`` or ``"custom"`` for an explicit override.
    """

    model: nn.Module
    base: nn.Module
    entry: tuple[tuple[nn.Module, str], ...]
    layers: nn.ModuleList
    family: str

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def bottom(self, k: int) -> list[nn.Module]:
        """Modules whose output is frozen when the model is split before layer ``k``."""
        return [getattr(p, a) for p, a in self.entry] + list(self.layers[:k])

    @property
    def architecture(self) -> str:
        # The encoder's class, not the head's: a store filled through BertModel serves BertFor*Classification.
        return f"{type(self.base).__name__}/{self.family}"


def _resolve(root: nn.Module, path: str) -> tuple[nn.Module, str]:
    parent = root
    *head, last = path.split(".")
    for name in head:
        parent = getattr(parent, name)
    getattr(parent, last)  # raises AttributeError when missing
    return parent, last


def find_parts(model: nn.Module, *, layers: str | None = None, embeddings: str | Sequence[str] | None = None) -> EncoderParts:
    """Locate the embeddings and layer list of a Hugging Face encoder.

    Args:
        model: a base encoder (``BertModel``) or a model with a head (``*ForSequenceClassification``).
        layers: dotted path of the layer list inside ``model.base_model``, for architectures ember does
            not know (e.g. ``"encoder.layer"``).
        embeddings: dotted path(s) of the modules that run before layer 0 (e.g. ``"embeddings"``).

    Example:
        >>> from transformers import BertConfig, BertModel
        >>> cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
        >>> find_parts(BertModel(cfg)).num_layers
        2
    """
    inner = _unwrap_adapters(model)
    base = getattr(inner, "base_model", inner)
    config = getattr(inner, "config", None)
    model_type = getattr(config, "model_type", None)
    if layers is None and embeddings is None:
        if model_type not in _FAMILIES:
            raise UnsupportedModelError(
                f"ember does not know where {type(model).__name__} (model_type={model_type!r}) keeps its layers. "
                f"Supported families: {', '.join(SUPPORTED_FAMILIES)}. For another encoder, pass the paths inside "
                "model.base_model explicitly, e.g. layers='encoder.layer', embeddings='embeddings' "
                "(CLI: --layers-path/--embeddings-path)."
            )
        layers, entry_paths = _FAMILIES[model_type]
        entry_paths = tuple(p for p in entry_paths if _has_path(base, p))
        family = model_type
    else:
        if layers is None or embeddings is None:
            raise ValueError("pass both layers= and embeddings= to override the family lookup")
        entry_paths = (embeddings,) if isinstance(embeddings, str) else tuple(embeddings)
        family = "custom"
    try:
        parent, name = _resolve(base, layers)
        layer_list = getattr(parent, name)
        entry = tuple(_resolve(base, p) for p in entry_paths)
    except AttributeError as exc:
        raise UnsupportedModelError(
            f"{type(model).__name__} has no module at the given path ({exc}); check layers={layers!r} and "
            f"embeddings={entry_paths!r} against print(model.base_model)"
        ) from exc
    if not isinstance(layer_list, nn.ModuleList) or len(layer_list) == 0:
        raise UnsupportedModelError(f"{layers!r} in {type(model).__name__} is not a non-empty nn.ModuleList of layers")
    return EncoderParts(model=model, base=base, entry=entry, layers=layer_list, family=family)


def _unwrap_adapters(model: nn.Module) -> nn.Module:
    """The Hugging Face model inside an adapter wrapper (PEFT's ``PeftModel``: LoRA, IA3 …), else ``model``.

    The wrapper stays the user's model (its forward runs, its adapters train); ember only needs to find the
    encoder's embeddings and layers, which the wrapper keeps in place inside the model it wraps.
    """
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _has_path(root: nn.Module, path: str) -> bool:
    try:
        _resolve(root, path)
        return True
    except AttributeError:
        return False
