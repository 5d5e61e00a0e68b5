"""``optimize``: build an artifact through the registry, verify its fidelity, attach what was measured."""

from __future__ import annotations

import inspect
import time
import warnings
from collections.abc import Sequence

from torch import nn

from ember.errors import BackendNotInstalledError, FidelityError
from ember.fidelity import FidelityReport, check, mixed_length_batches
from ember.optimize.artifact import ModelFacts, OptimizedModel
from ember.optimize.config import OptimizeConfig
from ember.optimize.registry import backend_for, missing_requirements

_ROBERTA_LIKE = ("roberta", "xlm-roberta", "camembert")
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _builtin_sample() -> list[str]:
    """Varied short and long sentences used when the caller gives no sample.

    (``ember.data.sample`` does not exist on this branch yet; this list stands in for it.)
    """
    return [
        "hi",
        "play some jazz",
        "what's my checking balance",
        "book a table for two at an italian restaurant tonight at eight",
        "how do I reset the password on my online banking account?",
        "set an alarm for 6:30 tomorrow morning",
        "translate 'where is the train station' into german",
        "the film was a slow, beautifully shot meditation on grief, and I loved every minute of it",
        "cancel my flight",
        "is it going to rain in Seattle this weekend, or should I plan the hike?",
        "remind me to call mom",
        "what is the capital of australia",
        "I lost my credit card yesterday and need to freeze it right away before anyone uses it",
        "ok",
        "order a large pepperoni pizza with extra cheese for delivery",
        "how many calories are in a banana",
        "transfer 200 dollars from savings to checking",
        "tell me a joke",
        "the service was terrible, the food was cold, and nobody apologised",
        "what time does the pharmacy on fifth street close on sundays",
        "turn off the lights in the living room",
        "spell necessary",
        "I would like to change the pin number of my debit card to something easier to remember",
        "who won the game last night",
    ]


def model_facts(model: nn.Module, tokenizer, output: str) -> ModelFacts:
    """Facts an artifact keeps about ``model``: type, output kind, forward inputs, max length."""
    cfg = getattr(model, "config", None)
    model_type = getattr(cfg, "model_type", type(model).__name__)
    params = inspect.signature(model.forward).parameters
    tok_inputs = set(getattr(tokenizer, "model_input_names", _INPUTS))
    names = tuple(n for n in _INPUTS if n in params and (n != "token_type_ids" or n in tok_inputs))
    max_len = int(getattr(cfg, "max_position_embeddings", 512) or 512)
    if model_type in _ROBERTA_LIKE:  # positions start after padding_idx
        max_len -= int(getattr(cfg, "pad_token_id", 1) or 0) + 1
    tml = getattr(tokenizer, "model_max_length", None)
    if isinstance(tml, int) and tml < max_len:
        max_len = tml
    return ModelFacts(model_type, output, names, max_len, cfg.to_dict() if cfg is not None else {})


def _output_kind(out) -> str:
    if getattr(out, "logits", None) is not None:
        return "logits"
    if getattr(out, "last_hidden_state", None) is not None:
        return "last_hidden_state"
    raise TypeError(f"optimize needs a model whose output has logits or last_hidden_state, got {type(out).__name__}")


class BuildContext:
    """What a backend's ``build`` gets besides the model and config."""

    def __init__(self, tokenizer, sample: list[str], facts: ModelFacts, batches: list[dict]) -> None:
        self.tokenizer = tokenizer
        self.sample = sample
        self.facts = facts
        self.batches = batches  # padded mixed-length verification batches

    def feeds(self, batch: dict) -> dict:
        return {k: batch[k] for k in self.facts.input_names if k in batch}


def optimize(model: nn.Module, config: OptimizeConfig, *, tokenizer, sample: Sequence[str] | None = None) -> OptimizedModel:
    """Build a faster artifact of ``model`` with ``config`` and verify it answers the same.

    Fidelity is always checked against ``model`` on padded batches of mixed lengths (the user's
    ``sample``, or built-in sentences). Past ``config.tolerance`` it raises ``FidelityError`` naming
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
    batches = mixed_length_batches(tokenizer, texts, batch_size=8, max_length=facts0.max_length)
    batches = [{k: b[k] for k in facts0.input_names if k in b} for b in batches]
    import torch

    with torch.inference_mode():
        first = model(**batches[0])
    facts = model_facts(model, tokenizer, _output_kind(first))
    ctx = BuildContext(tokenizer, texts, facts, batches)
    artifact = backend_for(config).build(model, config, ctx)
    artifact.fidelity = check(model, artifact, batches)
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
        f"sentences: {'; '.join(problems)}. Use a more faithful config, keep more layers in fp32, or loosen "
        f"tolerance= (or pass on_violation='warn')"
    )
    if config.on_violation == "warn":
        warnings.warn(msg, stacklevel=3)
    else:
        raise FidelityError(msg)
