"""What batch inference computes per batch of texts: an optimised artifact's or a plain model's outputs.

A scorer is a producer (:class:`ember.store.fill.Producer`) whose batches are texts: ``entries(texts)`` gives one
``{"embedding": (D,)}`` or ``{"logits": (C,)}`` per text, so the fill's executors (this process, or Ray actors
through :class:`~ember.scale.RayExecutor`) run it unchanged. Scorers are picklable: an artifact travels as the
bytes of its saved folder (ONNX Runtime and OpenVINO sessions cannot be pickled, and the workers need no shared
filesystem) and is loaded once per actor.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from ember.fidelity import mean_pool
from ember.models.checks import check_pad_token
from ember.store.activations import Entry

Kind = Literal["embedding", "logits"]
Task = Literal["embedding", "classification"]


class ArtifactScorer:
    """Scores texts with an optimised artifact: ``artifact.encode`` on each batch (mean-pooled embeddings of an
    encoder, logits of a classifier), so a batch gives exactly what ``encode`` gives for it.

    Args:
        artifact: a loaded or freshly optimised :class:`~ember.optimize.OptimizedModel` (with its tokenizer).
        folder: where it is saved, if it is: shipped to Ray workers as it is instead of being saved again.
    """

    fingerprint = None

    def __init__(self, artifact, folder: str | Path | None = None) -> None:
        self.artifact, self.folder = artifact, None if folder is None else Path(folder)
        self.kind: Kind = "logits" if artifact.facts.output == "logits" else "embedding"
        self.label_names = _label_names(artifact) if self.kind == "logits" else None
        self.tokenizer = artifact.tokenizer
        check_pad_token(artifact.tokenizer, "batch scoring pads each batch of texts with the artifact's tokenizer")

    @classmethod
    def load(cls, folder: str | Path) -> ArtifactScorer:
        """The artifact saved in ``folder`` (``ember.optimize.load``)."""
        from ember.optimize import load

        return cls(load(folder), folder)

    def entries(self, texts: list[str]) -> list[Entry]:
        out = self.artifact.encode(texts, batch_size=max(1, len(texts)))  # (B, D|C): one batch, as given
        return [{self.kind: v} for v in out]

    def __getstate__(self) -> dict:
        return {"files": _read_folder(self.folder) if self.folder is not None else _saved_files(self.artifact)}

    def __setstate__(self, state: dict) -> None:
        from ember.optimize import load

        folder = Path(tempfile.mkdtemp(prefix="ember-artifact-"))
        try:
            for name, data in state["files"].items():
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                (folder / name).write_bytes(data)
            self.__init__(load(folder))  # checks every file's hash, as a load from the original folder does
        finally:  # the engines hold what they read (OpenVINO maps model.bin, which outlives its name on Linux)
            shutil.rmtree(folder, ignore_errors=True)


class ModelScorer:
    """Scores texts with a plain Hugging Face model: mean-pooled ``last_hidden_state`` of an encoder, or the logits
    of a sequence classifier, computed as an artifact's ``encode`` computes them (padded batch, truncation).

    Args:
        model: the model (eval mode is used; it is not changed).
        tokenizer: its tokenizer.
        kind: ``"logits"`` for a classifier, ``"embedding"`` for an encoder (default: from the model's outputs).
        max_length: truncation length (default: the tokenizer's, capped by the model's positions).
    """

    fingerprint = None

    def __init__(self, model: nn.Module, tokenizer, kind: Kind | None = None, max_length: int | None = None) -> None:
        from ember.models.load import resolve_max_length

        check_pad_token(tokenizer, "batch scoring pads each batch of texts with the model's tokenizer")
        self.model, self.tokenizer = model, tokenizer
        self.kind: Kind = kind or ("logits" if _is_classifier(model) else "embedding")
        self.max_length = resolve_max_length(tokenizer, model, max_length)
        self.label_names = _label_names(model) if self.kind == "logits" else None

    @classmethod
    def load(cls, name_or_path: str | Path | None, task: Task | None = None, max_length: int | None = None) -> ModelScorer:
        """A model folder or hub id (``None``: the packaged all-MiniLM-L6-v2); a folder whose config names a
        ``...ForSequenceClassification`` architecture is loaded as a classifier unless ``task`` says otherwise."""
        from ember.models import load_model

        if task is None:
            task = "classification" if _classifier_folder(name_or_path) else "embedding"
        model, tokenizer = load_model(name_or_path, task)
        return cls(model, tokenizer, "logits" if task == "classification" else "embedding", max_length)

    @torch.inference_mode()
    def entries(self, texts: list[str]) -> list[Entry]:
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        device = next(self.model.parameters()).device
        enc = {k: v.to(device) for k, v in enc.items()}
        was_training = self.model.training
        self.model.eval()
        try:
            out = self.model(**enc)
        finally:
            self.model.train(was_training)
        if self.kind == "logits":
            vec = out.logits  # (B, C)
        else:
            vec = mean_pool(out.last_hidden_state.float(), enc["attention_mask"])  # (B, T, H) -> (B, H)
        return [{self.kind: v} for v in vec.float().cpu()]


def _is_classifier(model: nn.Module) -> bool:
    return type(model).__name__.endswith("ForSequenceClassification")


def _classifier_folder(name_or_path: str | Path | None) -> bool:
    if name_or_path is None:
        return False
    from transformers import AutoConfig

    architectures = getattr(AutoConfig.from_pretrained(str(name_or_path)), "architectures", None) or []
    return any(a.endswith("ForSequenceClassification") for a in architectures)


def _label_names(model) -> list[str] | None:
    """Class names from ``config.id2label``; ``None`` for Hugging Face's ``LABEL_0, LABEL_1 …`` placeholders."""
    from ember.recycle.train import head_label_names

    return head_label_names(model)


def _read_folder(folder: Path) -> dict[str, bytes]:
    """The files of a saved artifact (those its manifest lists, and the manifest)."""
    from ember.optimize.artifact import MANIFEST, read_manifest

    names = [*read_manifest(folder)["files"], MANIFEST]
    return {name: (folder / name).read_bytes() for name in names}


def _saved_files(artifact) -> dict[str, bytes]:
    """The files of an artifact that was never saved, by saving it to a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="ember-artifact-") as tmp:
        artifact.save(tmp)
        return _read_folder(Path(tmp))
