"""In-place inference optimisation with verified fidelity.

``optimize(model, config, tokenizer=tok, sample=texts)`` returns an artifact called like ``model``;
``available_presets()`` names the configs usable on this machine; ``load(dir)`` reads a saved artifact;
``autotune`` picks the fastest config within a fidelity budget.

Example:
    >>> from ember.optimize import optimize, available_presets  # doctest: +SKIP
    >>> fast = optimize(model, available_presets()["onnx"], tokenizer=tok)  # doctest: +SKIP
"""

from __future__ import annotations

from ember.optimize.artifact import FORMAT_VERSION, OptimizedModel, load
from ember.optimize.autotune import AutotuneResult, autotune
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
    "FORMAT_VERSION", "PRESETS", "AutotuneResult", "BF16Config", "CompileConfig", "Int8DynamicConfig", "OnnxRuntimeConfig",
    "OpenVINOConfig", "OptimizeConfig", "OptimizedModel", "available_presets", "autotune", "config_from_dict",
    "load", "optimize", "preset",
]

# presets left out of ``available_presets`` (ask for them by name): torch.compile costs ~45 s a build on
# 2 cores and recompiles as shapes vary, and was measured slower than the engines on CPU encoders; ONNX Runtime's
# static int8 ranks layers for 30-60 s and measured below its 0.99 cosine bar on all-MiniLM-L6-v2 (BENCHMARKS.md),
# so they are not part of the default comparison. openvino-int8 (NNCF, ~6 s) is.
_ON_REQUEST = ("compile", "compile-bf16", "onnx-int8-static")


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
    """Named presets whose engines are installed and whose instructions this machine has."""
    from ember.optimize.backends.bf16 import cpu_has_bf16
    from ember.optimize.registry import missing_requirements

    out: dict[str, OptimizeConfig] = {}
    for name, factory in PRESETS.items():
        cfg = factory()
        if name in _ON_REQUEST or missing_requirements(cfg):
            continue
        needs_bf16 = isinstance(cfg, BF16Config) or (isinstance(cfg, OpenVINOConfig) and cfg.precision == "bf16")
        if needs_bf16 and not cpu_has_bf16():
            continue
        out[name] = cfg
    return out
