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

from ember.optimize.artifact import FORMAT_VERSION, OptimizedModel, load
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
from ember.optimize.core import optimize

__all__ = [
    "FORMAT_VERSION", "PRESETS", "BF16Config", "CompileConfig", "Int8DynamicConfig", "OnnxRuntimeConfig",
    "OpenVINOConfig", "OptimizeConfig", "OptimizedModel", "available_presets", "config_from_dict",
    "load", "optimize", "preset", "unavailable",
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
    """Named presets whose engines are installed and whose instructions this machine has (the on-request
    ones left out: see :func:`unavailable`)."""
    return {name: factory() for name, factory in PRESETS.items() if unavailable(name) is None}


def unavailable(name: str) -> str | None:
    """Why the named preset is not among :func:`available_presets` on this machine; ``None`` when it is.

    Example:
        >>> unavailable("compile")  # doctest: +SKIP
        'on request: build it by name (slow to build, measured slower than the engines on CPU)'
    """
    from ember.optimize.backends.bf16 import cpu_has_bf16
    from ember.optimize.registry import missing_requirements

    cfg = preset(name)
    missing = missing_requirements(cfg)
    if missing:
        return "needs " + "; ".join(missing)
    needs_bf16 = isinstance(cfg, BF16Config) or (isinstance(cfg, OpenVINOConfig) and cfg.precision == "bf16")
    if needs_bf16 and not cpu_has_bf16():
        return "this CPU has no AVX512-BF16 or AMX"
    if name in _ON_REQUEST:
        return _ON_REQUEST[name]
    return None
