"""sentence-transformers models through ``ember.optimize``: ``optimize(st_model, config, sample=texts)`` returns a
``SentenceTransformer`` whose ``encode`` runs the verified artifact.

all-MiniLM-L6-v2, ember's default model, is a sentence-transformers model, and its users call
``SentenceTransformer(...).encode(texts)``. Assigning an artifact to ``st[0].auto_model`` changes nothing (it is a
read-only property over ``st[0].model``, and ``nn.Module.__setattr__`` accepts the assignment silently), so ember
builds the new model itself::

    SentenceTransformer [Transformer(model) -> Pooling -> Normalize ...]
      └─ optimize(model, config, tokenizer=st.tokenizer, sample)   hidden states verified, speed timed
    SentenceTransformer [EmberTransformer(artifact) -> the same Pooling -> Normalize ...]
      └─ fidelity checked again on the pooled sentence embeddings (``encode`` of both, same sentences)

``EmberTransformer`` is sentence-transformers' own ``Transformer`` module with the artifact in place of the torch
model: its tokenisation, prompts and max length are the original's. Saved with ``st.save(dir)``, the folder holds the
ember artifact (no torch weights for the ONNX Runtime and OpenVINO engines), a ``config.json`` and the usual
sentence-transformers files; ``ember.optimize.load(dir)`` (or ``SentenceTransformer(dir, trust_remote_code=True)``:
the module class is ember's, not sentence-transformers') reads it back.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch

from ember.errors import BackendNotInstalledError
from ember.optimize.artifact import SENTENCE_MODULE, load_artifact
from ember.optimize.core import VERIFY_BATCH, _builtin_sample, enforce, optimize_model
from ember.optimize.registry import Progress, no_progress

INSTALL = "pip install 'ember[sentence-transformers]'  (sentence-transformers>=5)"

try:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Transformer
except ImportError as exc:  # pragma: no cover - only without the optional dependency
    raise BackendNotInstalledError(f"optimising a SentenceTransformer needs sentence-transformers; {INSTALL}") from exc

CLASS_REF = SENTENCE_MODULE  # what modules.json names; ember.optimize.api.load recognises it


class EmberTransformer(Transformer):
    """sentence-transformers' ``Transformer`` module running an ember artifact (``.model``) instead of the torch model.

    Saving writes the artifact (``artifact.save``) where the module's weights would go, with the original's
    ``config.json``; loading reads the artifact back and no torch weights.
    """

    def _load_model(self, model_name_or_path: str, transformer_task, config, backend, is_peft_model, **model_kwargs):
        return load_artifact(model_name_or_path)

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        self.model.save(output_path)
        self.model.config.save_pretrained(output_path)  # what the module's config is read from, without weights
        self.processor.save_pretrained(output_path)
        self.save_config(output_path)


def optimize_sentence_transformer(st, config, *, sample: Sequence[str] | None, calibration: Sequence[str] | None,
                                  progress: Progress | None = None):
    """``st`` with its transformer module's model replaced by a verified artifact (see the module docstring).

    Returns:
        A new ``SentenceTransformer``; ``st`` is not modified. Its ``[0].model`` is the artifact, whose ``fidelity``
        is measured on the pooled sentence embeddings and whose ``speed`` on the transformer alone.
    """

    first = st[0] if len(st) else None
    if not isinstance(first, Transformer) or not isinstance(first.model, torch.nn.Module):
        raise TypeError(
            f"optimize() takes a SentenceTransformer whose first module is a sentence-transformers Transformer over a "
            f"Hugging Face model; this one starts with {type(first).__name__}. Optimize that module's model instead"
        )
    art = optimize_model(first.model, config, tokenizer=first.tokenizer, sample=sample, calibration=calibration,
                         progress=progress)
    fast = _with_artifact(st, art)
    texts = list(sample) if sample is not None else _builtin_sample()
    (progress or no_progress)("checking the pooled sentence embeddings against the original")
    art.fidelity = pooled_fidelity(st, fast, texts, VERIFY_BATCH)
    enforce(art.fidelity, config)
    return fast


def _with_artifact(st, art):
    """A ``SentenceTransformer`` like ``st`` whose first module runs ``art``; the other modules are ``st``'s own."""
    module = copy.copy(st[0])
    module._modules = OrderedDict(st[0]._modules)  # a copy shares the module dict: give it its own
    module.__class__ = EmberTransformer  # the same state; only saving and loading differ
    module.model = art
    fast = SentenceTransformer(modules=[module, *list(st)[1:]], device="cpu", prompts=dict(st.prompts),
                               default_prompt_name=st.default_prompt_name, similarity_fn_name=st.similarity_fn_name,
                               truncate_dim=st.truncate_dim)
    return fast.eval()


def pooled_fidelity(original, fast, texts: list[str], batch_size: int):
    """Cosine of ``fast.encode`` against ``original.encode`` on ``texts``, per sentence, as a ``FidelityReport``."""
    from ember.fidelity import FidelityReport

    ref = original.encode(texts, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False)  # (N, D)
    got = fast.encode(texts, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False)  # (N, D)
    cos = torch.nan_to_num(torch.nn.functional.cosine_similarity(ref.float().cpu(), got.float().cpu(), dim=-1), nan=-1.0)
    return FidelityReport(n=len(texts), mean_cosine=float(cos.mean()), min_cosine=float(cos.min()))


def saved_module_types(directory: Path) -> list[str]:
    """The module classes ``directory/modules.json`` names (empty where there is none)."""
    import json

    try:
        modules = json.loads((Path(directory) / "modules.json").read_text())
    except (OSError, ValueError):
        return []
    return [m.get("type", "") for m in modules if isinstance(m, dict)] if isinstance(modules, list) else []


def load_sentence_transformer(directory: Path):
    """The ``SentenceTransformer`` saved in ``directory`` (its first module's artifact loaded by ember)."""
    from ember.errors import ArtifactError

    others = [t for t in saved_module_types(directory) if t != CLASS_REF and not t.startswith("sentence_transformers.")]
    if others:
        raise ArtifactError(
            f"{directory} holds a SentenceTransformer with modules of other packages ({', '.join(others)}); ember loads "
            "only its own and sentence-transformers' modules: load it with SentenceTransformer(directory, "
            "trust_remote_code=True) if you trust them"
        )
    # trust_remote_code: sentence-transformers 6 imports a module class from outside its own package only with it;
    # every class named here is ember's EmberTransformer or sentence-transformers' own (checked above)
    return SentenceTransformer(str(directory), device="cpu", trust_remote_code=True, local_files_only=True)
