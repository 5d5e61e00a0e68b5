"""In-place inference optimisation with verified fidelity.

``optimize(model, config, tokenizer=tok, sample=texts)`` returns an artifact called like ``model``;
``available_presets()`` names the configs usable on this machine; ``load(dir)`` reads a saved artifact.
Picking the fastest config within a fidelity budget is ``ember.tune.autotune`` (above this package and the
benchmark it measures with).

Example:
    >>> from ember.optimize import optimize, available_presets  # doctest: +SKIP
    >>> fast = optimize(model, available_presets()["onnx"], tokenizer=tok)  # doctest: +SKIP
"""

from __future__ import annotations

from ember.optimize.api import load, optimize
from ember.optimize.artifact import FORMAT_VERSION, OptimizedModel
from ember.optimize.config import (
    PRESETS,
    BF16Config,
    CompileConfig,
    Int8DynamicConfig,
    OnnxRuntimeConfig,
    OpenVINOConfig,
    OptimizeConfig,
    config_from_dict,
)

__all__ = [
    "FORMAT_VERSION", "PRESETS", "BF16Config", "CompileConfig", "Int8DynamicConfig", "OnnxRuntimeConfig",
    "OpenVINOConfig", "OptimizeConfig", "OptimizedModel", "available_presets", "config_from_dict",
    "load", "on_request", "optimize", "preset", "unavailable",
]

# presets left out of ``available_presets`` (ask for them by name): torch.compile costs ~45 s a build on
# 2 cores and recompiles as shapes vary, and was measured slower than the engines on CPU encoders; ONNX Runtime's
# static int8 ranks layers for 30-60 s and measured below its 0.99 cosine bar on all-MiniLM-L6-v2 (BENCHMARKS.md),
# so they are not part of the default comparison. openvino-int8 (NNCF, ~6 s) is.
_ON_REQUEST = {
    "compile": "on request: build it by name (slow to build, measured slower than the engines on CPU)",
    "compile-bf16": "on request: build it by name (slow to build, measured slower than the engines on CPU)",
    "onnx-int8-static": "on request: build it by name (slow to calibrate, measured below its bound on MiniLM)",
}


def __getattr__(name: str):
    # autotune measures with ember.bench, which sits above this package: it lives in ember.tune now
    if name in ("autotune", "AutotuneResult"):
        raise ImportError(f"{name} moved from ember.optimize to ember.tune: from ember.tune import {name}")
    raise AttributeError(f"module 'ember.optimize' has no attribute {name!r}")

def preset(name: str) -> OptimizeConfig:
    """The config of the named preset.

    Example:
        >>> preset("onnx-int8").quantize
        'dynamic'
    """
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None


def available_presets() -> dict[str, OptimizeConfig]:
    """Named presets whose engines are installed and that can be fast on this CPU (the on-request ones left out:
    see :func:`unavailable`)."""
    return {name: factory() for name, factory in PRESETS.items() if unavailable(name) is None}


def on_request(name: str) -> str | None:
    """Why the named preset is built only when asked for by name (left out of :func:`available_presets` and of
    ``ember bench``'s sweep even where it could run); ``None`` for the presets offered by default.

    Example:
        >>> on_request("compile").startswith("on request")
        True
        >>> on_request("onnx") is None
        True
    """
    preset(name)  # an unknown name is a ValueError naming the known ones
    return _ON_REQUEST.get(name)


def unavailable(name: str) -> str | None:
    """Why the named preset is not among :func:`available_presets` on this machine; ``None`` when it is.

    The reasons: an engine that is not installed, a preset that cannot be fast on this CPU (bf16 without
    AVX512-BF16/AMX, int8 without int8 dot products; :func:`ember.optimize.cpu.cannot_be_fast`, with the CPU
    detected by :func:`ember.hardware.detect`, which ``EMBER_CPU_FEATURES`` overrides), or a preset built on request.

    Example:
        >>> unavailable("compile")  # doctest: +SKIP
        'on request: build it by name (slow to build, measured slower than the engines on CPU)'
    """
    from ember.hardware import detect
    from ember.optimize.backends import bf16 as bf16_backend
    from ember.optimize.cpu import NO_BF16, NO_BF16_ARM, cannot_be_fast, uses_bf16
    from ember.optimize.registry import missing_requirements

    cfg = preset(name)
    missing = missing_requirements(cfg)
    if missing:
        return "needs " + "; ".join(missing)
    cpu = detect()
    if uses_bf16(cfg) and not bf16_backend.cpu_has_bf16():
        return NO_BF16_ARM if cpu.arm else NO_BF16
    why = cannot_be_fast(name, cfg, cpu)
    if why is not None:
        return why
    return on_request(name)
