"""Artifacts that stay PyTorch modules (bf16, torchao int8, torch.compile).

They are saved as the original fp32 checkpoint plus the config, and rebuilt on load by applying the
same (deterministic) transformation again.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ember.optimize.artifact import ModelFacts, OptimizedModel, wrap_output
from ember.optimize.config import OptimizeConfig


class TorchArtifact(OptimizedModel):
    """Runs a transformed copy of the model; outputs come back in float32 like the original's.

    ``.model`` is the transformed Hugging Face model. The artifact runs where ``.model``'s weights are, so
    ``artifact.to("cuda")`` (which a ``transformers.pipeline(device=...)`` does) moves both.
    """

    def __init__(self, model: nn.Module, source: nn.Module, config: OptimizeConfig, facts: ModelFacts, tokenizer=None,
                 autocast: torch.dtype | None = None,
                 context: Callable[[], contextlib.AbstractContextManager] | None = None) -> None:
        super().__init__(config, facts, tokenizer)
        self.model = model
        self._source = [source]  # the fp32 original, kept out of the module tree (saved, never run)
        self._autocast = autocast
        self._context = context or contextlib.nullcontext  # entered around every call of .model
        self._modes_lock = threading.Lock()

    @property
    def device(self) -> torch.device:
        """The device of ``.model``'s weights."""
        return next(self.model.parameters(), torch.empty(0)).device

    def _run(self, feeds: dict[str, torch.Tensor]):
        device = self.device
        ctx = torch.autocast(device.type, dtype=self._autocast) if self._autocast else contextlib.nullcontext()
        # An artifact serves: no autograd graph, like the ONNX Runtime and OpenVINO ones. One mode for every call,
        # whether the caller is in inference_mode (encode, pipelines) or not, with ordinary (not inference)
        # tensors in and out: torch.compile guards on both and compiled the model again for each (its freezing
        # applies to inference graphs only).
        with torch.inference_mode(False), torch.no_grad(), ctx, self._context(), self._evaluating():
            feeds = {k: (v.clone() if v.is_inference() else v).to(device) for k, v in feeds.items()}
            out = self.model(**feeds)
        return wrap_output(self.facts.output, getattr(out, self.facts.output).float().cpu())

    @contextlib.contextmanager
    def _evaluating(self):
        """Run ``.model`` in eval mode whatever mode it is in, and leave the mode as it was.

        bf16 autocast and torch.compile artifacts run the user's own model (no copy of the weights): put back
        in training mode (``model.train()`` to train on, or ``artifact.train()``), it answered with dropout on,
        a different answer at every call. Only when a training flag is set is a module walked (one check a call
        otherwise); the lock keeps two callers from restoring the flags under each other.
        """
        if not (self.model.training or self._source[0].training):
            yield
            return
        with self._modes_lock:
            training = [m for m in self.model.modules() if m.training]
            for m in training:
                m.training = False
            try:
                yield
            finally:
                for m in training:
                    m.training = True

    def _save_files(self, directory: Path) -> None:
        source = self._source[0]
        # save_pretrained writes `architectures` and `dtype` into the config it saves; the user's model
        # is theirs, so it saves a copy of the config and keeps the original untouched.
        config = source.config
        source.config = copy.deepcopy(config)
        try:
            source.save_pretrained(str(directory / "hf"))
        finally:
            source.config = config


def load_source(directory: Path, facts: ModelFacts) -> nn.Module:
    """The fp32 checkpoint a torch artifact was built from, as the class that saved it.

    The class is the one ``save_pretrained`` recorded in ``hf/config.json``, not the ``architectures`` of the
    original's config kept in the manifest: a model fine-tuned from a base checkpoint keeps the base's entry
    there (``BertForMaskedLM`` for bert-base-uncased) until it is saved, and loading the classifier's weights
    as that class dropped its head for a random one.
    """
    import json

    import transformers

    try:
        saved = json.loads((directory / "hf" / "config.json").read_text())
    except (OSError, ValueError):
        saved = {}
    arch = ((saved.get("architectures") if isinstance(saved, dict) else None)
            or facts.hf_config.get("architectures") or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    if cls is None:
        cls = transformers.AutoModelForSequenceClassification if facts.output == "logits" else transformers.AutoModel
    return cls.from_pretrained(str(directory / "hf")).eval()


def make_loader(rebuild: Callable[[nn.Module, OptimizeConfig, ModelFacts, object], TorchArtifact]):
    def load(directory: Path, config: OptimizeConfig, facts: ModelFacts, tokenizer) -> TorchArtifact:
        return rebuild(load_source(directory, facts), config, facts, tokenizer)

    return load
