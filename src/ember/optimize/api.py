"""The two entry points, ``optimize`` and ``load``, choosing by what they are given.

A Hugging Face model goes to :mod:`ember.optimize.core` (and a saved artifact to :mod:`ember.optimize.artifact`); a
``SentenceTransformer`` goes to :mod:`ember.optimize.sentence`, which wraps the first two. The choice is made here,
above all three, so that none of them imports the module that builds on it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ember.models.sentence import is_sentence_transformer
from ember.optimize.artifact import SENTENCE_MODULE, load_artifact
from ember.optimize.config import OptimizeConfig
from ember.optimize.core import optimize_model
from ember.optimize.registry import Progress


def optimize(
    model,
    config: OptimizeConfig,
    *,
    tokenizer=None,
    sample: Sequence[str] | None = None,
    calibration: Sequence[str] | None = None,
    progress: Progress | None = None,
):
    """Build a faster artifact of ``model`` with ``config`` and verify it answers the same.

    Fidelity is always checked against ``model`` on padded batches of mixed lengths and on single
    inputs (the user's ``sample``, or built-in sentences). Past ``config.tolerance`` it raises ``FidelityError`` naming
    the measured and allowed figures (or warns, with ``on_violation="warn"``). ``model`` is not modified.

    Args:
        model: a Hugging Face encoder (``AutoModel``) or sequence classifier, in eval mode. An
            encoder-decoder model (T5, BART) is refused: pass its encoder (``model.get_encoder()``). A
            decoder-only model (GPT-2) builds with the PyTorch engines (bf16, int8, compile), verified like an
            encoder; the ONNX exporter takes the families in ``ember.models.SUPPORTED_FAMILIES``. A
            ``SentenceTransformer`` is optimised as its transformer module's model, and a new ``SentenceTransformer``
            comes back whose ``encode`` runs the artifact, its fidelity checked on the pooled sentence embeddings
            (:mod:`ember.optimize.sentence`; no ``tokenizer`` needed).
        config: a config such as ``BF16Config()``, ``OnnxRuntimeConfig(quantize="dynamic")`` or a preset.
        tokenizer: the model's tokenizer (saved with the artifact). It must have a pad token: a GPT-2-style one
            without is refused (``TokenizerError``); set ``tokenizer.pad_token = tokenizer.eos_token`` first.
        sample: verification sentences (default: 64 built-in ones). A config that tunes on data
            (``config.calibrates``: static int8, ``keep_fp32``) calibrates on other sentences, so the
            fidelity it reports is measured on inputs it never saw: the rest of the built-in sentences, or,
            for a user sample, every second sentence (the others verify). Its token lengths are also
            the lengths an OpenVINO artifact compiles batch-1 and batch shapes for
            (``OpenVINOConfig.static_shapes``, ``batch_shapes``), so a sample like the traffic the artifact
            will serve pays off.
        calibration: calibration sentences to use instead (then ``sample`` is verified whole).
        progress: a function told, in a few words, what the build is doing as each step starts (exporting,
            fusing, quantising, the ``keep_fp32="auto"`` search, checking fidelity, timing): for a status line or a
            log on builds that take minutes. ``ember optimize`` shows it as a spinner. ``None``: silent.

    Speed is checked too: the artifact is timed against ``model`` (batch 1 and a batch of up to 32, on the
    verification sentences, interleaved rounds; :mod:`ember.optimize.speed`), and one slower than ``model`` at
    ``config.objective`` is reported by ``config.on_slower`` (a warning naming the figures and the preset that serves
    better on this CPU; ``"raise"``: a ``SpeedError``). A sample of fewer than 4 sentences is too small to time: the
    warning (or error) says so. An engine whose runtime refuses this CPU raises ``UnsupportedCPUError``.

    Returns:
        An ``OptimizedModel`` called like ``model``, with ``.fidelity``, ``.speed`` (a ``SpeedReport``, ``None`` with
        ``on_slower="ignore"``), ``.size_bytes``, ``.build_seconds``, ``.optimize_config`` (the ember config),
        ``.config`` (the original's Hugging Face config, so ``transformers.pipeline`` accepts it) and ``.save(dir)``;
        for a ``SentenceTransformer``, a ``SentenceTransformer`` whose ``[0].model`` is that artifact.

    Example:
        >>> fast = optimize(model, OnnxRuntimeConfig(), tokenizer=tok, sample=texts)  # doctest: +SKIP
        >>> fast(**tok(["hello"], return_tensors="pt")).last_hidden_state.shape  # doctest: +SKIP
    """
    if not isinstance(config, OptimizeConfig):
        raise TypeError(f"config must be an ember optimize config (e.g. OnnxRuntimeConfig()), got {type(config).__name__}")
    if is_sentence_transformer(model):
        from ember.optimize.sentence import optimize_sentence_transformer

        return optimize_sentence_transformer(model, config, sample=sample, calibration=calibration, progress=progress)
    return optimize_model(model, config, tokenizer=tokenizer, sample=sample, calibration=calibration,
                          progress=progress)


def load(directory: str | Path, *, tokenizer=None):
    """Load an artifact saved with ``artifact.save(directory)`` (or a ``SentenceTransformer`` that ``optimize`` made,
    saved with its ``save``: then that ``SentenceTransformer``).

    ONNX Runtime and OpenVINO artifacts need neither the original model nor torch weights.

    Args:
        directory: the artifact's folder.
        tokenizer: the tokenizer to serve with instead of the one saved in ``directory/tokenizer`` (which is then
            neither read nor required): for a saved tokenizer this transformers cannot read, or an artifact
            saved without one. It must be the model's own tokenizer; ember cannot check that one passed here is.

    Returns:
        An ``OptimizedModel``, or a ``SentenceTransformer`` whose first module runs one.

    Example:
        >>> art = ember.optimize.load("minilm-onnx")  # doctest: +SKIP
    """
    d = Path(directory)
    if tokenizer is None and is_saved_sentence_transformer(d):
        from ember.optimize.sentence import load_sentence_transformer

        return load_sentence_transformer(d)
    return load_artifact(d, tokenizer=tokenizer)


def is_saved_sentence_transformer(directory: Path) -> bool:
    """Whether ``directory`` holds a ``SentenceTransformer`` whose first module is ember's (read without importing
    sentence-transformers)."""
    try:
        modules = json.loads((directory / "modules.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(modules, list) and any(isinstance(m, dict) and m.get("type") == SENTENCE_MODULE for m in modules)
