"""Which presets can be fast on this CPU, and which one ember expects to serve each fidelity tier best here.

The same preset is the fastest on one CPU family and slower than the original model on another: bf16 without
AVX512-BF16/AMX is emulated (slower than fp32), and an int8 path is only fast where int8 dot products are one
instruction (VNNI, AMX, ARM's dot product). What is known per family, and how it was known:

- x86 with native bf16 (Zen 4, Cooper Lake: ``avx512-bf16``; Sapphire Rapids and later: ``amx``): OpenVINO bf16 is
  the fastest faithful preset and OpenVINO int8 the fastest int8 one on the AMD EPYC Zen 4 (peers runs 1-8,
  BENCHMARKS.md) and in the issue #19 run on an AMX Xeon (where ONNX Runtime int8 led at batch 1).
- x86 without bf16 (``avx512-vnni``, ``avx512``, ``avx2``, ``x86-64``): the bf16 presets are left out; OpenVINO fp32
  led ONNX Runtime fp32 in throughput on the Zen 4 and the two are within noise at batch 1.
- x86 without int8 dot products either (``avx2``, ``x86-64``; measured on an AVX2-only Zen 3, peers run 7,
  BENCHMARKS.md): ONNX Runtime's dynamic int8 is the fast int8 preset (1.8x the fp32 original's batch-32
  throughput on short inputs, 1.5x on paragraphs); OpenVINO's static int8 and ONNX Runtime's ``MatMulNBits``
  (``onnx-int8-block``) were slower than the fp32 original at batch 32 (0.85x and 0.92x on short inputs, 0.95x and
  0.78x on paragraphs), so they are left out of the defaults there. For the faithful tier ONNX Runtime fp32 comes
  first: once its graphs kept residual adds and LayerNorms unfused (``OnnxRuntimeConfig.skip_layer_norm``) it led
  OpenVINO fp32 at batch 1 on both workloads and in batch throughput on intents in peers runs 10–11; OpenVINO f32
  batches run on its dynamic model there (``ember.optimize.backends.openvino.batches_gain``).
- ARM (``arm``, ``arm-bf16``): ONNX Runtime first (its MLAS kernels have NEON dot-product and i8mm paths); OpenVINO's
  ARM plugin runs f16, not bf16. Not measured on ARM.

Example:
    >>> from ember.hardware import detect
    >>> cannot_be_fast("bf16", BF16Config(), detect(force="avx2"))
    'this CPU has no AVX512-BF16 or AMX'
"""

from __future__ import annotations

import re

from ember.errors import UnsupportedCPUError
from ember.hardware import CpuFeatures
from ember.optimize.config import (
    BF16Config,
    CompileConfig,
    Int8DynamicConfig,
    OnnxRuntimeConfig,
    OpenVINOConfig,
    OptimizeConfig,
)

NO_BF16 = "this CPU has no AVX512-BF16 or AMX"
NO_BF16_ARM = "this CPU has no BF16 instructions"

NO_INT8_DOT_X86 = ("this CPU has no int8 dot-product instructions (VNNI, AMX): {} measured slower than the fp32 "
                   "original at batch 32 on such a CPU (use onnx-int8)")

_ORDER = {  # tier -> presets, fastest first, for (native bf16?, ARM?)
    (True, False): {"faithful": ("openvino-bf16", "openvino", "onnx"), "int8": ("openvino-int8", "onnx-int8")},
    (False, False): {"faithful": ("openvino", "onnx"), "int8": ("openvino-int8", "onnx-int8")},
    (True, True): {"faithful": ("onnx", "openvino"), "int8": ("onnx-int8", "openvino-int8")},
    (False, True): {"faithful": ("onnx", "openvino"), "int8": ("onnx-int8", "openvino-int8")},
}
_WITHOUT_DOT_X86 = {  # AVX2: ONNX Runtime's int8 kernels (OpenVINO's were slow) and its unfused fp32 graph first
    "faithful": ("onnx", "openvino"), "int8": ("onnx-int8", "openvino-int8")}


def uses_bf16(config: OptimizeConfig) -> bool:
    """Whether ``config`` computes in bf16 (and so needs native bf16 to be fast)."""
    return (isinstance(config, BF16Config) and config.dtype == "bfloat16" and config.device == "cpu") or (
        isinstance(config, OpenVINOConfig) and "bf16" in (config.precision, config.batch_precision)) or (
        isinstance(config, CompileConfig) and config.bf16)


def tier_of(config: OptimizeConfig) -> str:
    """``"int8"`` for a config that quantises, else ``"faithful"``."""
    quantizes = isinstance(config, Int8DynamicConfig) or getattr(config, "quantize", "none") != "none"
    return "int8" if quantizes else "faithful"


def cannot_be_fast(name: str, config: OptimizeConfig, cpu: CpuFeatures) -> str | None:
    """Why preset ``name`` (built as ``config``) cannot be fast on ``cpu``; ``None`` when it can.

    Example:
        >>> from ember.hardware import detect
        >>> cannot_be_fast("int8", Int8DynamicConfig(), detect(force="avx512-bf16"))
        'eager torchao int8 quantises every input with a dozen small ops: slower than fp32 (compile=True is the fast path)'
    """
    if uses_bf16(config) and not cpu.native_bf16:
        return NO_BF16_ARM if cpu.arm else NO_BF16
    if isinstance(config, OpenVINOConfig) and config.precision == "bf16" and cpu.arm:
        return "OpenVINO's ARM plugin computes in f16, not bf16"
    if cpu.x86_without_int8_dot:  # these int8 kernels fall back to slow paths there
        if isinstance(config, OpenVINOConfig) and config.quantize == "static":
            return NO_INT8_DOT_X86.format("OpenVINO's int8 was")
        if isinstance(config, OnnxRuntimeConfig) and config.quantize == "blockwise":
            return NO_INT8_DOT_X86.format("ONNX Runtime's MatMulNBits was")
    if isinstance(config, Int8DynamicConfig) and not config.compile:
        return ("eager torchao int8 quantises every input with a dozen small ops: slower than fp32 (compile=True is "
                "the fast path)") if cpu.int8_dot else (
                "this CPU has no int8 dot-product instructions (VNNI, AMX): torch int8 matmuls are not faster here")
    return None


def serving_order(cpu: CpuFeatures, tier: str) -> tuple[str, ...]:
    """Presets ember expects to serve ``tier`` (``"faithful"`` or ``"int8"``) best on ``cpu``, fastest first."""
    if cpu.x86_without_int8_dot:
        return _WITHOUT_DOT_X86[tier]
    return _ORDER[(cpu.native_bf16, cpu.arm)][tier]


def better_preset(config: OptimizeConfig, cpu: CpuFeatures, *, other_engine: bool = False) -> str | None:
    """The first preset of ``config``'s tier in :func:`serving_order` that is available here and builds something
    else than ``config`` (with ``other_engine``, on another engine); ``None`` when there is none."""
    from ember.optimize import preset, unavailable

    for name in serving_order(cpu, tier_of(config)):
        candidate = preset(name)
        if other_engine and candidate.kind == config.kind:
            continue
        if unavailable(name) is None and _differs(candidate, config):
            return name
    return None


def _differs(candidate: OptimizeConfig, config: OptimizeConfig) -> bool:
    """Whether the two build different artifacts (settings other than the policies differ)."""
    policy = ("tolerance", "on_violation", "objective", "on_slower", "threads", "static_shapes", "batch_shapes")
    a, b = candidate.to_dict(), config.to_dict()
    return {k: v for k, v in a.items() if k not in policy} != {k: v for k, v in b.items() if k not in policy}


# What engines say when this CPU lacks what they need (OpenVINO: "... is not supported on the platform", "at least
# SSE4.2"; ONNX Runtime: "does not support AVX2"; oneDNN: "unsupported isa"). A crash on an illegal instruction cannot
# be caught; these can.
_CPU_REFUSAL = re.compile(
    r"not supported (on|by) (this|the) (platform|cpu|machine|hardware)|unsupported (isa|cpu|platform)|instruction set|"
    r"at least sse|does ?n[o']t support (avx|sse|amx|bf16|the cpu)|(bf16|amx|avx\w*|sse4\w*) (is )?not supported",
    re.IGNORECASE)
_ENGINES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "bf16": "PyTorch", "torchao-int8": "PyTorch",
            "compile": "PyTorch (torch.compile)"}


def refused_cpu(exc: BaseException, config: OptimizeConfig, cpu: CpuFeatures, doing: str = "building"
                ) -> UnsupportedCPUError | None:
    """An ``UnsupportedCPUError`` naming the engine, this CPU and what to use instead, when ``exc`` is an engine
    refusing this CPU; ``None`` for any other error.

    Example:
        >>> from ember.hardware import detect
        >>> err = refused_cpu(RuntimeError("[CPU] bf16 is not supported on the platform"), OpenVINOConfig(precision="bf16"),
        ...                   detect(force="avx2"))
        >>> str(err).startswith("OpenVINO refused this CPU")
        True
    """
    if not _CPU_REFUSAL.search(str(exc)):
        return None
    engine = _ENGINES.get(config.kind, config.kind)
    better = better_preset(config, cpu, other_engine=True)
    instead = f"use preset {better!r} (ember optimize --list shows what runs here)" if better else (
        "use a preset of another engine (ember optimize --list shows what runs here)")
    first = str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else type(exc).__name__
    return UnsupportedCPUError(
        f"{engine} refused this CPU ({cpu.summary()}) while {doing} {type(config).__name__}: {first}. {instead[0].upper()}"
        f"{instead[1:]}")
