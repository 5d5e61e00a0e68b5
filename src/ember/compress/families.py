"""Where each encoder family keeps the matrices compression slices, and the config keys that describe them.

One table row per family, as :mod:`ember.models.families` has for the layer list: structured pruning, layer
selection and the loader of compressed models read the same row, so a family is added in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ember.compress.errors import StudentMismatchError
from ember.models.families import SUPPORTED_FAMILIES, EncoderParts


@dataclass(frozen=True)
class LayerShape:
    """Paths inside one transformer layer and the config keys of its sizes.

    Attributes:
        attention: the self-attention module (holds the head count and the Q/K/V projections).
        query, key, value: Q/K/V projections, relative to the layer (``hidden -> heads * head_size``).
        output: the attention output projection (``heads * head_size -> hidden``).
        ffn_in, ffn_out: the feed-forward matrices (``hidden -> ffn`` and ``ffn -> hidden``).
        heads_attr: attribute of ``attention`` holding its number of heads.
        all_head_attr: attribute of ``attention`` holding ``heads * head_size`` (None where the family has none).
        heads_key, ffn_key, layers_key, hidden_key: the Hugging Face config keys of those sizes.
    """

    attention: str
    query: str
    key: str
    value: str
    output: str
    ffn_in: str
    ffn_out: str
    heads_attr: str
    all_head_attr: str | None
    heads_key: str
    ffn_key: str
    layers_key: str
    hidden_key: str


_BERT = LayerShape(
    attention="attention.self", query="attention.self.query", key="attention.self.key", value="attention.self.value",
    output="attention.output.dense", ffn_in="intermediate.dense", ffn_out="output.dense",
    heads_attr="num_attention_heads", all_head_attr="all_head_size",
    heads_key="num_attention_heads", ffn_key="intermediate_size", layers_key="num_hidden_layers", hidden_key="hidden_size",
)
_DISTILBERT = LayerShape(
    attention="attention", query="attention.q_lin", key="attention.k_lin", value="attention.v_lin",
    output="attention.out_lin", ffn_in="ffn.lin1", ffn_out="ffn.lin2", heads_attr="n_heads", all_head_attr=None,
    heads_key="n_heads", ffn_key="hidden_dim", layers_key="n_layers", hidden_key="dim",
)
SHAPES: dict[str, LayerShape] = {
    "bert": _BERT, "roberta": _BERT, "xlm-roberta": _BERT, "camembert": _BERT, "electra": _BERT,
    "distilbert": _DISTILBERT,
}
assert set(SHAPES) == set(SUPPORTED_FAMILIES), "every family ember splits must have a compression row"


def layer_shape(parts: EncoderParts) -> LayerShape:
    """The row of ``parts.family``; a custom (explicitly given) layer layout is refused with the families known.

    Example:
        >>> layer_shape(find_parts(model)).query  # doctest: +SKIP
        'attention.self.query'
    """
    row = SHAPES.get(parts.family)
    if row is None:
        raise StudentMismatchError(
            f"compression slices and copies layers of the families {', '.join(SHAPES)}; this model's layers were "
            f"given by explicit paths (family {parts.family!r}), so ember does not know where its attention and "
            "feed-forward matrices are. Use a model of a supported family."
        )
    return row


def submodule(layer: nn.Module, path: str) -> nn.Module:
    """``layer``'s module at the dotted ``path``."""
    return layer.get_submodule(path)


def replace_submodule(layer: nn.Module, path: str, new: nn.Module) -> None:
    """Put ``new`` at the dotted ``path`` inside ``layer``."""
    parent_path, _, name = path.rpartition(".")
    parent = layer.get_submodule(parent_path) if parent_path else layer
    setattr(parent, name, new)


def config_value(config, *keys: str):
    """The first of ``keys`` the Hugging Face ``config`` has (``None`` when none)."""
    for key in keys:
        if hasattr(config, key):
            return getattr(config, key)
    return None


def hidden_size(model: nn.Module) -> int | None:
    """The model's hidden width (``hidden_size`` or DistilBERT's ``dim``)."""
    return config_value(getattr(model, "config", None), "hidden_size", "dim")


def vocab_size(model: nn.Module) -> int:
    """Rows of the model's input embedding table (what token ids it takes)."""
    return int(model.get_input_embeddings().num_embeddings)
