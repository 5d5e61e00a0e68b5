"""Saving and loading compressed models.

A compressed model is saved as a Hugging Face folder (``config.json``, ``model.safetensors``, the tokenizer)
plus ``ember-compress.json``. Fewer layers and a narrower feed-forward block are said by the Hugging Face config
itself; what it cannot say is carried in extra config keys that :func:`load_compressed` reads:

- ``attention_head_size``: the width of one head once heads are removed (BERT derives it as
  ``hidden_size / num_attention_heads``, which is wrong after pruning);
- ``ember_vocabulary``: rows kept by :func:`~ember.compress.trim_vocabulary` (the table takes the
  tokenizer's ids through a lookup buffer);
- ``ember_int8_embeddings`` / ``ember_int8_positions``: tables stored as int8 rows.

``transformers.AutoModel.from_pretrained`` refuses such a folder (the weight shapes differ from what the config
builds, so it cannot load it wrongly); load it with :func:`load_compressed`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

from ember.compress.families import layer_shape
from ember.compress.slicing import keep_heads
from ember.compress.vocab import Int8Embedding, TrimmedEmbedding
from ember.errors import ArtifactError
from ember.models.families import find_parts

MANIFEST = "ember-compress.json"
FORMAT = 1
WEIGHTS = "model.safetensors"


def save_compressed(model: nn.Module, directory: str | Path, tokenizer=None, *, info: dict | None = None) -> Path:
    """Write ``model`` (and its tokenizer) to ``directory`` so that :func:`load_compressed` rebuilds it exactly.

    Args:
        model: a compressed (or plain) Hugging Face model.
        directory: the folder (created).
        tokenizer: saved beside it when given.
        info: what made the model (configs, reports), recorded in ``ember-compress.json``.

    Example:
        >>> save_compressed(student, "student/", tok, info={"distill": cfg.to_dict()})  # doctest: +SKIP
    """
    from safetensors.torch import save_model

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(directory)
    save_model(model, str(directory / WEIGHTS))
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    manifest = {"format": FORMAT, "class": type(model).__name__, "info": info or {}}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    return directory


def is_compressed(config) -> bool:
    """Whether ``config`` describes shapes only :func:`load_compressed` builds."""
    return any(getattr(config, k, None) for k in ("attention_head_size", "ember_vocabulary", "ember_int8_embeddings"))


def load_compressed(directory: str | Path, task: str = "classification") -> tuple[nn.Module, object]:
    """Load ``(model, tokenizer)`` saved by :func:`save_compressed` (or any Hugging Face folder), in eval mode.

    Args:
        directory: the folder.
        task: ``"classification"`` or ``"embedding"``, as :func:`ember.load_model` takes it.

    Raises:
        ArtifactError: the folder lacks its weights or they do not fit the recorded shapes.

    Example:
        >>> model, tok = load_compressed("student/")  # doctest: +SKIP
    """
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    from ember.models import load_model

    directory = Path(directory)
    config = AutoConfig.from_pretrained(directory)
    if not is_compressed(config):
        return load_model(directory, task)  # type: ignore[arg-type]
    cls = AutoModelForSequenceClassification if task == "classification" else AutoModel
    model = cls.from_config(_build_config(config))
    _reshape(model, config)
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise ArtifactError(f"{directory} has no {WEIGHTS}; save the model with ember.compress.save_compressed")
    from safetensors.torch import load_file

    try:
        model.load_state_dict(load_file(str(weights)), strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"the weights in {weights} do not fit the shapes its config records ({exc}); "
                            "save the model again with ember.compress.save_compressed") from exc
    return model.eval(), AutoTokenizer.from_pretrained(directory)


def _build_config(config):
    """A config that builds the unpruned shapes (heads derived from the head width), pruned after."""
    build = copy.deepcopy(config)
    head = getattr(config, "attention_head_size", None)
    if head:
        for hidden_key, heads_key in (("hidden_size", "num_attention_heads"), ("dim", "n_heads")):
            if hasattr(build, hidden_key) and hasattr(build, heads_key):
                setattr(build, heads_key, int(getattr(build, hidden_key)) // int(head))
    return build


def _reshape(model: nn.Module, config) -> None:
    """Give ``model`` the recorded shapes (with placeholder weights the state dict then fills)."""
    parts = find_parts(model)
    head = getattr(config, "attention_head_size", None)
    if head:
        row = layer_shape(parts)
        kept = int(getattr(config, row.heads_key))
        for layer in parts.layers:
            keep_heads(layer, row, list(range(kept)), int(head))
        # the model keeps the config it was built with (transformers set its attention implementation there),
        # with the pruned head count put back
        setattr(model.config, row.heads_key, kept)
    emb = model.get_input_embeddings()
    vocab, width = emb.num_embeddings, emb.embedding_dim
    kept_rows = getattr(config, "ember_vocabulary", None)
    remap = torch.zeros(vocab, dtype=torch.long) if kept_rows else None
    rows = int(kept_rows or vocab)
    if getattr(config, "ember_int8_embeddings", False):
        model.set_input_embeddings(Int8Embedding(torch.zeros(rows, width), remap, emb.padding_idx))
    elif kept_rows:
        model.set_input_embeddings(TrimmedEmbedding(torch.zeros(rows, width), remap, emb.padding_idx))
    embeddings = getattr(model.base_model, "embeddings", None)
    pos = getattr(embeddings, "position_embeddings", None)
    if getattr(config, "ember_int8_positions", False) and isinstance(pos, nn.Embedding):
        embeddings.position_embeddings = Int8Embedding(pos.weight, None, pos.padding_idx)
