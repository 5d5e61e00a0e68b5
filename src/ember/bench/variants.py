"""The variants ``ember bench`` compares: the PyTorch fp32 baseline and every optimised preset available.

Presets come from :mod:`ember.optimize` when it is installed. Without it, bench still has something
to compare: PyTorch bf16 autocast, where the CPU computes bf16 natively (AVX512-BF16 or AMX).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ember.bench.harness import Variant, estimate_size_bytes
from ember.bench.machine import MachineInfo
from ember.bench.report import VariantResult
from ember.fidelity import Tolerance

BASELINE = "pytorch-fp32"


class Bf16Autocast:
    """Call a model under CPU bf16 autocast; the model itself is not modified.

    Example:
        >>> fast = Bf16Autocast(model)   # doctest: +SKIP
        >>> out = fast(**tokenizer(["hi"], return_tensors="pt"))   # doctest: +SKIP
    """

    def __init__(self, model: Callable[..., Any]) -> None:
        self.model = model

    def __call__(self, **batch):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.model(**batch)


def native_bf16(machine: MachineInfo | None = None) -> bool:
    """True when the CPU has bf16 instructions (else autocast emulates bf16 and is slower than fp32)."""
    flags = (machine or MachineInfo.detect()).flags
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass
class PresetPlan:
    """A preset that can be built on this machine: its name and how to build it."""

    name: str
    build: Callable[[], Variant]
    source: str  # "ember.optimize" or "built-in"


def _builtin_plans(model) -> list[PresetPlan]:
    plans = []
    if native_bf16():
        def build_bf16() -> Variant:
            t0 = time.perf_counter()
            fast = Bf16Autocast(model)
            # autocast casts weights on the fly; the artifact on disk would be the fp32 weights.
            return Variant("pytorch-bf16-autocast", fast, build_seconds=time.perf_counter() - t0,
                           size_bytes=estimate_size_bytes(model), tolerance=Tolerance(min_mean_cosine=0.999))
        plans.append(PresetPlan("pytorch-bf16-autocast", build_bf16, "built-in"))
    return plans


def preset_plans(model, tokenizer, sample: Sequence[str]) -> list[PresetPlan]:
    """Every optimised preset usable here: ``ember.optimize.available_presets()``, else the built-in ones."""
    try:
        from ember.optimize import available_presets, optimize
    except ImportError:
        return _builtin_plans(model)

    def plan(name: str, config) -> PresetPlan:
        def build() -> Variant:
            t0 = time.perf_counter()
            artifact = optimize(model, config, tokenizer=tokenizer, sample=list(sample))
            seconds = getattr(artifact, "build_seconds", None)
            size = getattr(artifact, "size_bytes", None)
            tol = getattr(config, "tolerance", None) or getattr(artifact, "tolerance", None)
            return Variant(name, artifact, size_bytes=size if isinstance(size, int) else None,
                           build_seconds=seconds if seconds is not None else time.perf_counter() - t0,
                           tolerance=tol if isinstance(tol, Tolerance) else None)
        return PresetPlan(name, build, "ember.optimize")

    return [plan(name, cfg) for name, cfg in available_presets().items()]


def build_variants(plans: Sequence[PresetPlan], on_build: Callable[[str], None] | None = None
                   ) -> tuple[list[Variant], list[tuple[int, VariantResult]]]:
    """Build each plan; one that raises becomes a failed row (position, result) instead of a variant."""
    variants: list[Variant] = []
    failed: list[tuple[int, VariantResult]] = []
    for k, p in enumerate(plans):
        if on_build is not None:
            on_build(p.name)
        t0 = time.perf_counter()
        try:
            variants.append(p.build())
        except Exception as exc:  # e.g. FidelityError from optimize: a failed row, the report goes on
            failed.append((k, VariantResult(name=p.name, error=f"build failed: {type(exc).__name__}: {exc}",
                                            build_seconds=time.perf_counter() - t0, passed=False)))
    return variants, failed
