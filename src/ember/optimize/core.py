"""``optimize``: build an artifact through the registry, verify its fidelity, attach what was measured."""

from __future__ import annotations

import inspect
import math
import time
import warnings
from collections.abc import Sequence

from torch import nn

from ember.errors import BackendNotInstalledError, FidelityError
from ember.fidelity import FidelityReport, compare, mixed_length_batches, run_batches
from ember.models.load import resolve_max_length
from ember.optimize.artifact import ModelFacts, OptimizedModel
from ember.optimize.config import OptimizeConfig
from ember.optimize.registry import backend_for, missing_requirements

_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
VERIFY_BATCH = 8  # sentences per verification (and calibration) batch


def _builtin_sample(n: int = 64) -> list[str]:
    """``n`` of ember's built-in sentences, spread over the whole file (short and long, several domains)."""
    from ember.data.sample import sample_sentences

    every = sample_sentences()
    return every[:: max(1, len(every) // n)][:n]


def model_facts(model: nn.Module, tokenizer, output: str) -> ModelFacts:
    """Facts an artifact keeps about ``model``: type, output kind, forward inputs, max length."""
    cfg = getattr(model, "config", None)
    model_type = getattr(cfg, "model_type", type(model).__name__)
    params = inspect.signature(model.forward).parameters
    tok_inputs = set(getattr(tokenizer, "model_input_names", _INPUTS))
    names = tuple(n for n in _INPUTS if n in params and (n != "token_type_ids" or n in tok_inputs))
    max_len = resolve_max_length(tokenizer, model)
    return ModelFacts(model_type, output, names, max_len, cfg.to_dict() if cfg is not None else {})


def _output_kind(out) -> str:
    if getattr(out, "logits", None) is not None:
        return "logits"
    if getattr(out, "last_hidden_state", None) is not None:
        return "last_hidden_state"
    raise TypeError(f"optimize needs a model whose output has logits or last_hidden_state, got {type(out).__name__}")


class BuildContext:
    """What a backend's ``build`` gets besides the model and config."""

    def __init__(self, tokenizer, sample: list[str], facts: ModelFacts, batches: list[dict], reference: list) -> None:
        self.tokenizer = tokenizer
        self.sample = sample
        self.facts = facts
        self.batches = batches  # padded mixed-length verification batches
        self.reference = reference  # the original model's outputs on ``batches``, computed once

    def calibration(self, size: int) -> tuple[list[dict], list]:
        """The first verification batches holding about ``size`` sentences, and the original's outputs on them."""
        n = max(1, math.ceil(size / VERIFY_BATCH))
        return self.batches[:n], self.reference[:n]

    def feeds(self, batch: dict) -> dict:
        return {k: batch[k] for k in self.facts.input_names if k in batch}


def optimize(model: nn.Module, config: OptimizeConfig, *, tokenizer, sample: Sequence[str] | None = None) -> OptimizedModel:
    """Build a faster artifact of ``model`` with ``config`` and verify it answers the same.

    Fidelity is always checked against ``model`` on padded batches of mixed lengths and on single
    inputs (the user's ``sample``, or built-in sentences). Past ``config.tolerance`` it raises ``FidelityError`` naming
    the measured and allowed figures (or warns, with ``on_violation="warn"``). ``model`` is not modified.

    Args:
        model: a Hugging Face encoder (``AutoModel``) or sequence classifier, in eval mode.
        config: a config such as ``BF16Config()``, ``OnnxRuntimeConfig(quantize="dynamic")`` or a preset.
        tokenizer: the model's tokenizer (saved with the artifact).
        sample: verification (and calibration) sentences.

    Returns:
        An ``OptimizedModel`` called like ``model``, with ``.fidelity``, ``.size_bytes``,
        ``.build_seconds``, ``.optimize_config`` (the ember config), ``.config`` (the
        original's Hugging Face config, so ``transformers.pipeline`` accepts it) and ``.save(dir)``.

    Example:
        >>> fast = optimize(model, OnnxRuntimeConfig(), tokenizer=tok, sample=texts)  # doctest: +SKIP
        >>> fast(**tok(["hello"], return_tensors="pt")).last_hidden_state.shape  # doctest: +SKIP
    """
    if not isinstance(config, OptimizeConfig):
        raise TypeError(f"config must be an ember optimize config (e.g. OnnxRuntimeConfig()), got {type(config).__name__}")
    if sample is not None and len(sample) == 0:
        raise ValueError("the verification sample is empty; pass some texts, or sample=None for ember's built-in sentences")
    missing = missing_requirements(config)
    if missing:
        raise BackendNotInstalledError(
            f"{type(config).__name__} needs packages that are not installed; install them with: {'; '.join(missing)}"
        )
    texts = list(sample) if sample is not None else _builtin_sample()
    start = time.perf_counter()
    model.eval()
    facts0 = model_facts(model, tokenizer, "logits")
    # padded batches of mixed lengths, then single inputs (batch 1 is the latency path some engines serve
    # with another compiled model): every path the artifact takes is verified
    batches = mixed_length_batches(tokenizer, texts, batch_size=VERIFY_BATCH, max_length=facts0.max_length)
    batches += mixed_length_batches(tokenizer, texts[:VERIFY_BATCH], batch_size=1, max_length=facts0.max_length)
    batches = [{k: b[k] for k in facts0.input_names if k in b} for b in batches]
    reference = run_batches(model, batches)
    facts = model_facts(model, tokenizer, _output_kind(reference[0]))
    ctx = BuildContext(tokenizer, texts, facts, batches, reference)
    artifact = backend_for(config).build(model, config, ctx)
    artifact.fidelity = compare(reference, run_batches(artifact, batches), [b["attention_mask"] for b in batches])
    artifact.build_seconds = time.perf_counter() - start
    enforce(artifact.fidelity, config)
    return artifact


def enforce(report: FidelityReport, config: OptimizeConfig) -> None:
    """Raise (or warn) when ``report`` breaks ``config.tolerance``."""
    problems = config.tolerance.violations(report)
    if not problems:
        return
    msg = (
        f"{type(config).__name__} ({config.kind}) changed the model's answers too much on {report.n} verification "
        f"inputs (padded batches and single sentences): {'; '.join(problems)}. Use a more faithful config, keep more layers in fp32, or loosen "
        f"tolerance= (or pass on_violation='warn')"
    )
    if config.on_violation == "warn":
        warnings.warn(msg, stacklevel=3)
    else:
        raise FidelityError(msg)
