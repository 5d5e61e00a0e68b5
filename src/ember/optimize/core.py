"""``optimize``: build an artifact through the registry, verify its fidelity, attach what was measured."""

from __future__ import annotations

import inspect
import os
import sys
import time
import warnings
from collections.abc import Sequence

from torch import nn

from ember.data.texts import check_texts
from ember.errors import BackendNotInstalledError, EmberWarning, FidelityError, SpeedError
from ember.fidelity import FidelityReport, compare, mixed_length_batches, run_batches
from ember.models.checks import check_module, check_pad_token
from ember.models.load import resolve_max_length
from ember.models.split import frozen_eval
from ember.optimize.artifact import ModelFacts, OptimizedModel
from ember.optimize.config import OptimizeConfig
from ember.optimize.registry import Progress, backend_for, missing_requirements, no_progress
from ember.optimize.speed import SpeedReport, measure_speed, slower_parts, timing_inputs

_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
VERIFY_BATCH = 8  # sentences per verification (and calibration) batch


def _builtin_sample(n: int = 64) -> list[str]:
    """``n`` of ember's built-in sentences, spread over the whole file (short and long, several domains)."""
    from ember.data.sample import sample_sentences, spread

    return spread(sample_sentences(), n)


def _builtin_calibration() -> list[str]:
    """The built-in sentences that :func:`_builtin_sample` does not verify on."""
    from ember.data.sample import sample_sentences

    held = set(_builtin_sample())
    return [t for t in sample_sentences() if t not in held]


def _split_for_calibration(texts: list[str], calibration, config: OptimizeConfig, builtin: bool) -> tuple[list[str], list[str]]:
    """Verification and calibration sentences, disjoint whenever ember chooses them."""
    if calibration is not None:
        return texts, list(calibration)
    if not config.calibrates:
        return texts, texts  # nothing is tuned on data; the calibration set is never read
    if builtin:
        return texts, _builtin_calibration()
    if len(texts) < 2:
        raise ValueError(
            f"{type(config).__name__} calibrates on data and ember verifies on other sentences, so the sample needs "
            "at least 2 sentences (half to calibrate, half to verify); pass more, or calibration=<texts>"
        )
    return texts[0::2], texts[1::2]


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

    def __init__(self, model: nn.Module, tokenizer, facts: ModelFacts, calibration_texts: list[str],
                 progress: Progress = no_progress) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.facts = facts
        self.calibration_texts = calibration_texts  # disjoint from the verification sentences unless the caller chose both
        self.progress = progress

    def stage(self, what: str) -> None:
        """Tell the caller's ``progress`` hook that the build now does ``what``."""
        self.progress(what)

    def calibration_count(self, size: int) -> int:
        """How many sentences ``calibration(size)`` holds (the sample may have fewer than ``size``)."""
        return min(len(self.calibration_texts), size)

    def calibration(self, size: int) -> list[dict]:
        """Padded mixed-length batches of the first ``size`` calibration sentences."""
        batches = mixed_length_batches(self.tokenizer, self.calibration_texts[:size], batch_size=VERIFY_BATCH,
                                       max_length=self.facts.max_length)
        return [self.feeds(b) for b in batches]

    def token_lengths(self) -> list[int]:
        """Token lengths of the sample's sentences (the calibration ones where a config calibrates), truncated
        at the model's max length: what a backend can tailor shapes to."""
        enc = self.tokenizer(self.calibration_texts, truncation=True, max_length=self.facts.max_length)
        return [len(ids) for ids in enc["input_ids"]]

    def feeds(self, batch: dict) -> dict:
        return {k: batch[k] for k in self.facts.input_names if k in batch}


def optimize_model(
    model: nn.Module,
    config: OptimizeConfig,
    *,
    tokenizer=None,
    sample: Sequence[str] | None = None,
    calibration: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> OptimizedModel:
    """:func:`ember.optimize.optimize` for a Hugging Face model (a ``SentenceTransformer`` is taken by
    :mod:`ember.optimize.sentence`, which builds on this): build, verify fidelity, time against ``model``.

    Args, returns and errors: as :func:`ember.optimize.api.optimize` describes them.

    Example:
        >>> fast = optimize_model(model, OnnxRuntimeConfig(), tokenizer=tok, sample=texts)  # doctest: +SKIP
    """
    if not isinstance(config, OptimizeConfig):
        raise TypeError(f"config must be an ember optimize config (e.g. OnnxRuntimeConfig()), got {type(config).__name__}")
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be a function taking one str (what the build is doing), got "
                        f"{type(progress).__name__}; e.g. progress=print")
    if tokenizer is None:
        raise TypeError("optimize() needs the model's tokenizer: optimize(model, config, tokenizer=tok); a "
                        "SentenceTransformer brings its own")
    check_module(model, "model")
    check_pad_token(tokenizer, "optimize() verifies the artifact on padded batches of texts of mixed lengths")
    if sample is not None and len(sample) == 0:
        raise ValueError("the verification sample is empty; pass some texts, or sample=None for ember's built-in sentences")
    for texts_ in (sample, calibration):
        if texts_ is not None:
            check_texts(texts_)
    missing = missing_requirements(config)
    if missing:
        raise BackendNotInstalledError(
            f"{type(config).__name__} needs packages that are not installed; install them with: {'; '.join(missing)}"
        )
    texts, calibration_texts = _split_for_calibration(
        list(sample) if sample is not None else _builtin_sample(), calibration, config, builtin=sample is None
    )
    # verified (and built) in eval mode; each module's mode is put back after, as "model is not modified" says
    with frozen_eval(model):
        return _optimize(model, config, tokenizer, texts, calibration_texts, progress or no_progress)


def _optimize(model: nn.Module, config: OptimizeConfig, tokenizer, texts: list[str],
              calibration_texts: list[str], stage: Progress) -> OptimizedModel:
    start = time.perf_counter()
    model.eval()
    facts0 = model_facts(model, tokenizer, "logits")
    # padded batches of mixed lengths, then single inputs (batch 1 is the latency path some engines serve
    # with another compiled model): every path the artifact takes is verified
    batches = mixed_length_batches(tokenizer, texts, batch_size=VERIFY_BATCH, max_length=facts0.max_length)
    batches += mixed_length_batches(tokenizer, texts[:VERIFY_BATCH], batch_size=1, max_length=facts0.max_length)
    batches = [{k: b[k] for k in facts0.input_names if k in b} for b in batches]
    stage(f"running the original on {len(texts)} verification sentences")
    reference = run_batches(model, batches)
    facts = model_facts(model, tokenizer, _output_kind(reference[0]))
    ctx = BuildContext(model, tokenizer, facts, calibration_texts, stage)
    stage(f"building with {type(config).__name__}")
    artifact = build_on_this_cpu(model, config, ctx)
    stage("checking fidelity against the original")
    artifact.fidelity = compare(reference, run_batches(artifact, batches), [b["attention_mask"] for b in batches])
    enforce(artifact.fidelity, config)
    artifact.speed = time_against_original(model, artifact, tokenizer, texts, facts, config, stage)
    artifact.build_seconds = time.perf_counter() - start
    enforce_speed(artifact.speed, config)
    return artifact


def build_on_this_cpu(model: nn.Module, config: OptimizeConfig, ctx: BuildContext) -> OptimizedModel:
    """The backend's build; an engine whose runtime refuses this CPU is named, with the CPU and what to use instead."""
    from ember.hardware import detect
    from ember.optimize.cpu import refused_cpu

    try:
        return backend_for(config).build(model, config, ctx)
    except Exception as exc:
        refusal = refused_cpu(exc, config, detect())
        if refusal is None:
            raise
        raise refusal from exc


def time_against_original(model: nn.Module, artifact: OptimizedModel, tokenizer, texts: list[str], facts: ModelFacts,
                          config: OptimizeConfig, stage: Progress = no_progress) -> SpeedReport | None:
    """``artifact`` timed against ``model`` on the verification sentences (``None`` with ``on_slower="ignore"``)."""
    from ember.hardware import detect

    if config.on_slower == "ignore":
        return None
    stage("timing against the original (batch 1 and a batch)")
    cpu = detect().summary()
    inputs = timing_inputs(tokenizer, texts, facts.input_names, facts.max_length)
    if isinstance(inputs, str):
        return SpeedReport(cpu=cpu, skipped=inputs)
    singles, batch = inputs
    return measure_speed(model, artifact, singles, batch, cpu=cpu, threads=getattr(config, "threads", None))


def enforce_speed(report: SpeedReport | None, config: OptimizeConfig) -> None:
    """Warn (or raise ``SpeedError``, with ``on_slower="raise"``) when ``report`` shows the artifact slower than the
    original at ``config.objective``, naming the figures and the preset ember expects to serve better on this CPU;
    and when the speed could not be timed."""
    from ember.hardware import detect
    from ember.optimize.cpu import better_preset, tier_of

    if report is None or config.on_slower == "ignore":
        return
    what = f"{type(config).__name__} ({config.kind})"
    if report.skipped:
        msg = f"{what}: the artifact's speed was not checked against the original: {report.skipped}"
    else:
        slow = slower_parts(report, config.objective)
        if not slow:
            return
        better = better_preset(config, detect())
        instead = (f"on this CPU ember expects preset {better!r} to serve the {tier_of(config)} tier better "
                   f"(ember optimize --preset {better})" if better else "serve the original model instead")
        msg = (f"{what} built an artifact slower than the original model at its objective ({config.objective}): "
               f"{'; '.join(report.describe(p) for p in slow)}; median of {report.rounds} interleaved rounds on "
               f"{report.cpu}, {report.threads} threads. {instead[0].upper()}{instead[1:]}, or pass "
               f"on_slower='ignore' to keep this one")
    if config.on_slower == "raise":
        raise SpeedError(msg)
    warnings.warn(msg, EmberWarning, stacklevel=caller_stacklevel())


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
        warnings.warn(msg, stacklevel=caller_stacklevel())
    else:
        raise FidelityError(msg)


def caller_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning raised by this function's caller point at the first frame outside
    ``ember.optimize``: the user's line, however many of ember's entry points (``optimize``, the SentenceTransformer
    path, ``autotune``) lie between."""
    here = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1  # the function that warns is level 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(here + os.sep):
        frame, level = frame.f_back, level + 1
    return level


# the name autotune (ember.tune on the bench branch) imports; it passes Hugging Face models only
optimize = optimize_model
