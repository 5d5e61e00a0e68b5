"""Typed configs for ``optimize``: one small frozen dataclass per technique, plus named presets.

Each config validates itself on creation and round-trips to a plain dict (``to_dict`` /
``config_from_dict``), so an artifact on disk records exactly what built it.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar, Literal

from ember.config import check_version
from ember.fidelity import Tolerance

OnViolation = Literal["raise", "warn"]
Objective = Literal["latency", "throughput", "both"]
OnSlower = Literal["raise", "warn", "ignore"]


def _check_choice(name: str, value: object, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, allowed))}")


def _check_threads(threads: int | None) -> None:
    if threads is not None and threads < 1:
        raise ValueError(f"threads={threads} must be >= 1 (or None for the engine's default)")


@dataclass(frozen=True)
class OptimizeConfig:
    """Fields every technique shares: the fidelity bound and what to do past it, and the speed policy.

    ``optimize`` times the artifact against the original (batch 1 and a batch, on the verification sentences;
    :mod:`ember.optimize.speed`). ``objective`` says what it is built for: ``"latency"`` (batch 1),
    ``"throughput"`` (a batch) or ``"both"``; an artifact clearly slower than the original there is reported by
    ``on_slower``: ``"warn"`` (default: a warning with the figures and the preset that serves better on this CPU),
    ``"raise"`` (a ``SpeedError``) or ``"ignore"`` (not timed at all). Warn, not raise, by default: timing on a shared
    host is noisy where fidelity is not, and a slower artifact still answers right.
    """

    kind: ClassVar[str] = "base"
    VERSION: ClassVar[int] = 1  # bumped when a saved config's meaning changes (see ember.config)
    tolerance: Tolerance = field(default_factory=lambda: Tolerance(min_mean_cosine=0.999))
    on_violation: OnViolation = "raise"
    objective: Objective = "both"
    on_slower: OnSlower = "warn"

    def __post_init__(self) -> None:
        _check_choice("on_violation", self.on_violation, ("raise", "warn"))
        _check_choice("objective", self.objective, ("latency", "throughput", "both"))
        _check_choice("on_slower", self.on_slower, ("raise", "warn", "ignore"))
        if not isinstance(self.tolerance, Tolerance):
            raise TypeError(f"tolerance must be an ember.Tolerance, got {type(self.tolerance).__name__}")

    @property
    def calibrates(self) -> bool:
        """Whether building tunes on data (static ranges, sensitivity ranking): ``optimize`` then calibrates
        on sentences it does not verify on, so the reported fidelity is measured on unseen inputs."""
        return bool(getattr(self, "quantize", "none") == "static" or getattr(self, "keep_fp32", 0))

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["tolerance"] = asdict(self.tolerance)
        return {"type": self.kind, "version": self.VERSION,
                **{k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}}


@dataclass(frozen=True)
class BF16Config(OptimizeConfig):
    """Half-precision matmuls: bf16 on CPUs with AVX512-BF16/AMX, fp16 or bf16 on CUDA.

    Args:
        dtype: ``"bfloat16"`` or ``"float16"`` (fp16 only on CUDA).
        mode: ``"autocast"`` keeps fp32 weights and runs matmuls in half precision (LayerNorm and
            softmax stay fp32, so fidelity holds); ``"weights"`` converts the Linear layers' weights to half
            precision once, on a copy, and runs under autocast as ``"autocast"`` does (the same arithmetic, the
            same answers, without a cast of every weight on every call); ``"cast"`` converts every weight
            (LayerNorm and embeddings too: half the size, a little less faithful).
        device: where the artifact runs.

    Why ``"weights"`` is what the ``bf16`` preset builds: autocast casts each fp32 weight to bf16 on every call
    (~45 MB written per MiniLM-L6 call), which made it 2.1x slower than fp32 at batch 1 on an AMX Xeon (issue
    #19); converted once, the matmuls read bf16 weights straight from memory (BENCHMARKS.md, "torch bf16").

    With ``mode="autocast"`` on the CPU the artifact runs the model object it was given, with no copy of its
    weights: training that model further changes the artifact's answers, and its fidelity report no longer
    describes them. Optimize again after training (``"weights"``, ``"cast"`` and CUDA artifacts run a copy).

    Example:
        >>> BF16Config().dtype
        'bfloat16'
    """

    kind: ClassVar[str] = "bf16"
    dtype: Literal["bfloat16", "float16"] = "bfloat16"
    mode: Literal["autocast", "weights", "cast"] = "autocast"
    device: Literal["cpu", "cuda"] = "cpu"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice("dtype", self.dtype, ("bfloat16", "float16"))
        _check_choice("mode", self.mode, ("autocast", "weights", "cast"))
        _check_choice("device", self.device, ("cpu", "cuda"))
        if self.device == "cpu" and self.dtype == "float16":
            raise ValueError("dtype='float16' is only fast on CUDA; on CPU use dtype='bfloat16'")


@dataclass(frozen=True)
class Int8DynamicConfig(OptimizeConfig):
    """torchao int8 dynamic quantisation of ``nn.Linear`` layers (int8 weights per row, int8 activations per token).

    Args:
        skip: substrings of module names to keep in fp32 (the classifier head, say).
        min_features: Linear layers with fewer input features stay fp32 (too small to gain).
        compile: run the quantised model through ``torch.compile`` (inductor, dynamic shapes, weights frozen as
            constants). Eager, each Linear quantises its input with a dozen small ops and the int8 matmul waits on
            them: 4.1x slower than fp32 at batch 1 on an AMX Xeon, 2.1x on a Zen 4 (issue #19, BENCHMARKS.md).
            Compiled, inductor fuses the quantisation into a few kernels around oneDNN's int8 matmul (VNNI/AMX),
            at the price of a compile when the artifact is built or loaded (tens of seconds on 2 cores). The
            ``int8`` preset compiles where the CPU has int8 dot products (VNNI, AMX).

    Example:
        >>> Int8DynamicConfig(skip=("classifier",)).skip
        ('classifier',)
    """

    kind: ClassVar[str] = "torchao-int8"
    tolerance: Tolerance = field(default_factory=lambda: Tolerance(min_mean_cosine=0.99))
    skip: tuple[str, ...] = ()
    min_features: int = 16
    compile: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "skip", tuple(self.skip))
        if self.min_features < 1:
            raise ValueError(f"min_features={self.min_features} must be >= 1")


@dataclass(frozen=True)
class OnnxRuntimeConfig(OptimizeConfig):
    """Export to ONNX (padded, mixed-length example, dynamic axes), fuse, optionally quantise to int8.

    The model is held as one ONNX file in memory: one whose weights pass 1.5 GiB (XLM-R large, 2.2 GB in float32) is
    refused before the export (:func:`ember.optimize.export.check_onnx_size`); ``OpenVINOConfig`` has no such limit.

    Args:
        quantize: ``"none"`` (fp32), ``"dynamic"`` (int8 weights, activations quantised at run time),
            ``"static"`` (activation ranges calibrated on the sample, QDQ format) or ``"blockwise"`` (every
            constant-weight MatMul becomes ONNX Runtime's ``MatMulNBits`` with 8-bit weights, one scale per
            ``block_size`` inputs, and int8 compute with activations quantised per block at run time: far more
            faithful than per-channel scales; the fused attention's Q/K/V projection stays fp32).
        per_channel: one int8 scale per output channel of each weight (much more faithful).
        keep_fp32: number of the most sensitive MatMuls (measured one by one on the first calibration sentences: the
            ONNX Runtime backend's ``RANK_SENTENCES``) left in fp32, or ``"auto"``: quantise everything and keep as
            few as the calibration sentences need to stay ``AUTO_MARGIN`` (0.001) above ``tolerance.min_mean_cosine``
            (none where the whole int8 model does; at most ``AUTO_MAX_KEPT``, 4).
        fuse: apply transformer fusions (attention, bias-Gelu, embeddings+LayerNorm with the torchscript exporter;
            see ``skip_layer_norm``).
        exporter: ``"torchscript"`` exports with eager attention and fuses with ONNX Runtime's transformer
            optimizer (every layer's attention becomes one Attention op and its GELU BiasGelu, the embeddings one
            EmbedLayerNormalization; see ``skip_layer_norm``); ``"dynamo"`` exports with ``torch.export`` and fuses with onnxscript's
            rewriter (embeddings and mask arithmetic stay unfused; measured slower on MiniLM).
        skip_layer_norm: fuse each residual add and the LayerNorm after it into ONNX Runtime's
            ``SkipLayerNormalization`` (its optimizer's default). Off by default: that op's CPU kernel is a scalar loop
            with a division per element, and measured 2.4-4.8x slower than the same work as ``Add`` +
            ``LayerNormalization`` (MiniLM-L6 at batch 32 on an AVX2 Zen 3: 14% of the int8 model's time; the models
            1.09-1.11x faster at batch 32 without it, fp32 and int8, short and paragraph inputs;
            ``benchmarks/onnx_layer_norm.py``, BENCHMARKS.md). Off, the session is also told not to fuse them at load
            (``SkipLayerNormFusion``); with ``exporter="dynamo"`` onnxscript's rewriter leaves them too.
        threads: intra-op threads (``None``: ONNX Runtime's default).
        calibration_size: sentences used to calibrate static quantisation and rank sensitivity.
        block_size: inputs per weight scale with ``quantize="blockwise"`` (a power of two, >= 16).
        reduce_range: quantise weights to 7 bits. ONNX Runtime's int8 kernels on x86 CPUs without VNNI (AVX2,
            AVX-512 before Cascade Lake) multiply with ``VPMADDUBSW``, whose 16-bit sums can saturate with full
            8-bit weights; ONNX Runtime recommends 7-bit weights there. The ``onnx-int8`` preset sets it on such
            CPUs (:func:`ember.hardware.detect`), not where VNNI or ARM dot products sum in 32 bits. Measured on an
            AVX2-only Zen 3 (BENCHMARKS.md): MiniLM alone did not need it (8-bit cosine 0.99281 vs 0.99208, same
            speed), but QAT-trained models, whose weights fill the 8-bit range, fell to cosine ≈ 0.93 without it.

    Example:
        >>> OnnxRuntimeConfig(quantize="dynamic").per_channel
        True
    """

    kind: ClassVar[str] = "onnxruntime"
    tolerance: Tolerance = field(default_factory=lambda: Tolerance(min_mean_cosine=0.9999))
    quantize: Literal["none", "dynamic", "static", "blockwise"] = "none"
    per_channel: bool = True
    keep_fp32: int | Literal["auto"] = 0
    fuse: bool = True
    exporter: Literal["torchscript", "dynamo"] = "torchscript"
    skip_layer_norm: bool = False
    threads: int | None = None
    calibration_size: int = 128
    block_size: int = 32
    reduce_range: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice("quantize", self.quantize, ("none", "dynamic", "static", "blockwise"))
        _check_choice("exporter", self.exporter, ("torchscript", "dynamo"))
        _check_threads(self.threads)
        if self.keep_fp32 != "auto" and (not isinstance(self.keep_fp32, int) or self.keep_fp32 < 0):
            raise ValueError(f"keep_fp32={self.keep_fp32!r} must be an int >= 0 or 'auto'")
        if self.keep_fp32 and self.quantize not in ("dynamic", "static"):
            raise ValueError("keep_fp32 only makes sense with quantize='dynamic' or 'static'")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size={self.block_size} must be a power of two >= 16 (ONNX Runtime's MatMulNBits)")
        if self.calibration_size < 1:
            raise ValueError(f"calibration_size={self.calibration_size} must be >= 1")


@dataclass(frozen=True)
class OpenVINOConfig(OptimizeConfig):
    """OpenVINO runtime on CPU (converted straight from the PyTorch model).

    Args:
        precision: ``"f32"`` or ``"bf16"`` inference precision (bf16 needs AVX512-BF16/AMX).
        batch_precision: the precision batches of two or more inputs run in, when it should differ from
            ``precision`` (``None``, default: the same). Batches then run on a model compiled of their own (the
            streams' model, ``streams``), single inputs keep ``precision``. E.g. ``precision="bf16",
            batch_precision="f32"`` for an int8 model on a CPU whose bf16 float part helps single inputs only
            (``benchmarks/openvino_int8_float.py`` measures the three side by side).
        threads: inference threads (``None``: OpenVINO's default, one per physical core).
        streams: a batch of two or more inputs is cut into this many parts that run at the same time, each on
            its own OpenVINO stream with an equal share of the threads (at most one stream per thread), and the
            outputs are joined in order. The streams belong to one more compiled model: one more copy of the
            weights, which its streams share. Measured on MiniLM-L6, 2 threads, CLINC150 batches of 32
            (``benchmarks/openvino_streams.py``, see BENCHMARKS.md): x0.98–x1.04 sentences/s against one
            request on both threads when the host is quiet; up to x1.16 timed on bare OpenVINO requests in a
            slow spell of the shared host. ``None`` (default): 2 when the model runs on 2 threads or more and
            one more copy of its weights fits in ``static_memory_mb``, else 1; ``1``: every batch is one request
            on every thread. Single inputs always run as one request on every thread (the latency case).
        quantize: ``"static"`` runs int8 MatMuls: NNCF, OpenVINO's own post-training quantiser, calibrates
            activation ranges on held-out sentences with its transformer scheme (SmoothQuant, per-channel
            weights, fast bias correction; softmax, layer norms and the embedding sums stay in float). On
            MiniLM-L6 (CLINC150) it measured cosine 0.9965, against 0.993 for ONNX Runtime's dynamic int8.
            Needs ``pip install nncf``. The other precision (``precision``) runs what stays in float.
        calibration_size: sentences NNCF calibrates on.
        static_shapes: token lengths at which single inputs (batch 1, the latency case) run on a model
            compiled for exactly that shape, padded (masked) up to the next of them; OpenVINO's CPU plugin runs
            a static shape 1.2–2x faster than its dynamic-shape model at batch 1 (MiniLM-L6, 2 threads).
            ``None`` (default): chosen when the artifact is built, from the token lengths of the sample
            (:func:`ember.optimize.backends.openvino.choose_static_shapes`), and recorded in the artifact's
            config so a loaded artifact compiles the same ones. ``()``: always the dynamic model. Longer
            inputs use the dynamic model; batches of several inputs, ``batch_shapes``.
        batch_shapes: token lengths at which batches run on models compiled for ``batch_rows`` rows of exactly
            that length, padded (masked) up to the next of them: a batch is cut into parts of ``batch_rows``
            rows, run side by side on the streams (``streams``) in whole rounds (one part per stream); the rows
            left over, and a batch longer than the last shape or that the next shape would pad by more than ~11%
            (:func:`ember.optimize.backends.openvino.serves`), run on the dynamic model, split over the streams.
            Static shapes spare OpenVINO's CPU plugin the per-call shape work of its dynamic model: MiniLM-L6,
            2 threads, length-bucketed batches of 32 (``benchmarks/openvino_batch_shapes.py``, BENCHMARKS.md):
            int8 x1.17 sentences/s on CLINC150 intents (Zen 5), x1.17 on paragraphs of 40–120 tokens (Zen 4,
            parts in whole rounds), x1.16 on intents with the shapes placed on the sample's lengths (Zen 4); bf16
            x1.08 on those intents (Zen 4), x1.05 on paragraphs (Zen 4); f32 lost (AVX2 Zen 3: the padding costs
            more than the shapes save).
            ``None`` (default): where batches run in bf16 or int8, chosen when the artifact is built from the
            sample's token lengths (:func:`ember.optimize.backends.openvino.choose_batch_shapes`: the lengths
            that spare the sample the most work, a batch padded by at most ~11%), then timed against the dynamic
            model on the sample's batches and kept only if faster (:func:`ember.optimize.backends.openvino.
            keep_faster_batches`), recorded in the artifact's config so a load compiles the same; in f32, none
            (:func:`ember.optimize.backends.openvino.batches_gain`).
            ``()``: batches always on the dynamic model.
        max_static: at most this many shape-specialised models (compiled when the artifact is built or
            loaded, ~0.2 s each, so no request pays for a compile).
        static_memory_mb: each shape-specialised model holds its own copy of the weights (MiniLM-L6: ~35 MB
            in bf16, ~52 MB in f32, ~82 MB in int8, whose embedding table OpenVINO decompresses); fewer are
            compiled when an upper bound on their copies (the weights' float size, int8 ones counted as the floats
            they decompress to; halved in bf16) would pass this budget (a large model gets one or none). By default the streams' model (``streams``) is compiled only if one
            copy fits in it.
        batch_rows: rows of each shape-specialised batch part (16: a batch of 32 on two streams).
        max_batch_static: at most this many shape-specialised batch models: the chosen ones are placed by
            :func:`ember.optimize.backends.openvino.choose_batch_shapes` for this count; where ``batch_memory_mb``
            holds fewer, the longest of them are compiled (a batch's time grows with its length).
        batch_memory_mb: the resident memory the batch models may add, counted per model as what the first
            (longest) one added, at least its weights: on MiniLM-L6 ~4–31 MB per bf16 model, ~70 MB per int8 one
            at up to 24 tokens and 128–154 MB at 128 (OpenVINO does not share its repacked int8 weights between
            compiled models): by default up to 8 bf16 models, 5 int8 ones at 128 tokens, none for weights past it.

    Example:
        >>> OpenVINOConfig(precision="bf16", threads=2).streams is None
        True
    """

    kind: ClassVar[str] = "openvino"
    tolerance: Tolerance = field(default_factory=lambda: Tolerance(min_mean_cosine=0.9999))
    precision: Literal["f32", "bf16"] = "f32"
    batch_precision: Literal["f32", "bf16"] | None = None
    threads: int | None = None
    streams: int | None = None
    quantize: Literal["none", "static"] = "none"
    calibration_size: int = 128
    static_shapes: tuple[int, ...] | None = None
    max_static: int = 8
    static_memory_mb: int = 512
    batch_shapes: tuple[int, ...] | None = None
    batch_rows: int = 16
    max_batch_static: int = 8
    batch_memory_mb: int = 768

    def __post_init__(self) -> None:
        super().__post_init__()
        if min(self.max_static, self.static_memory_mb, self.max_batch_static, self.batch_memory_mb) < 0:
            raise ValueError(
                f"max_static={self.max_static}, static_memory_mb={self.static_memory_mb}, max_batch_static="
                f"{self.max_batch_static} and batch_memory_mb={self.batch_memory_mb} must be >= 0 (0 turns "
                "shape-specialised models off)"
            )
        if not isinstance(self.batch_rows, int) or self.batch_rows < 2:
            raise ValueError(f"batch_rows={self.batch_rows!r} must be an int >= 2 (rows of each shape-specialised "
                             "batch part; batch_shapes=() turns them off)")
        for name in ("static_shapes", "batch_shapes"):
            value = getattr(self, name)
            if value is None:
                continue
            shapes = tuple(value)
            if any(not isinstance(n, int) or n < 1 for n in shapes) or list(shapes) != sorted(set(shapes)):
                raise ValueError(f"{name}={value!r} must be increasing token lengths >= 1, e.g. (12, 16, 24); () "
                                 "turns shape-specialised models off, None chooses them from the sample")
            object.__setattr__(self, name, shapes)
        _check_choice("precision", self.precision, ("f32", "bf16"))
        if self.batch_precision is not None:
            _check_choice("batch_precision", self.batch_precision, ("f32", "bf16"))
        if self.streams is not None and (not isinstance(self.streams, int) or self.streams < 1):
            raise ValueError(f"streams={self.streams!r} must be >= 1 (1: one request on every thread), or None to choose")
        _check_choice("quantize", self.quantize, ("none", "static"))
        _check_threads(self.threads)
        if self.calibration_size < 1:
            raise ValueError(f"calibration_size={self.calibration_size} must be >= 1")


@dataclass(frozen=True)
class CompileConfig(OptimizeConfig):
    """``torch.compile`` of the model (dynamic shapes), optionally under bf16 autocast.

    ``freezing`` (inductor's ``freezing``) folds the weights into the compiled graph as constants, so the bf16
    cast of every weight is done once at compile time instead of on every call, and the Linear weights are
    pre-packed for oneDNN. Measured side by side (``benchmarks/compile_freezing.py``, MiniLM-L6, 2 threads): batch-1
    p50 6.26 -> 3.99 ms with ``bf16``, 7.59 -> 5.18 ms in fp32; bucketed batch-32 throughput x1.31 with ``bf16``,
    x1.04 in fp32. Some weights are then copied into the compiled graph (cast, packed) and some are not, so after
    training the model further, optimize again.

    Example:
        >>> CompileConfig().mode, CompileConfig().freezing
        ('default', True)
    """

    kind: ClassVar[str] = "compile"
    tolerance: Tolerance = field(default_factory=lambda: Tolerance(min_mean_cosine=0.9999))
    mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"
    bf16: bool = False
    freezing: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice("mode", self.mode, ("default", "reduce-overhead", "max-autotune"))


CONFIG_TYPES: dict[str, type[OptimizeConfig]] = {
    c.kind: c for c in (BF16Config, Int8DynamicConfig, OnnxRuntimeConfig, OpenVINOConfig, CompileConfig)
}


def config_from_dict(d: dict[str, Any]) -> OptimizeConfig:
    """Rebuild a config written by ``to_dict``.

    Example:
        >>> config_from_dict(BF16Config().to_dict()) == BF16Config()
        True
    """
    d = dict(d)
    kind = d.pop("type", None)
    cls = CONFIG_TYPES.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"unknown optimize config type {kind!r}; known: {', '.join(sorted(CONFIG_TYPES))}")
    d = check_version(cls, d)  # a config saved before versions were recorded reads as version 1
    if kind == "openvino" and "static_lengths" in d:  # saved before static_shapes: every multiple of the step
        step = d.pop("static_lengths")
        d["static_shapes"] = [step * i for i in range(1, d.get("max_static", 8) + 1)] if step else []
    if kind == "openvino":  # saved before streams: OpenVINO's performance hint, now set per compiled model
        d.pop("hint", None)
    tolerance = d.get("tolerance", {})
    if not isinstance(tolerance, dict):
        raise ValueError(
            f"this {kind} config's tolerance is {type(tolerance).__name__} {tolerance!r}, not an object of bounds "
            'like {"min_mean_cosine": 0.9999}; re-create the artifact (or fix the hand-edited file)'
        )
    flat = {k: v for k, v in d.items() if k != "tolerance"} | {f"tolerance.{k}": v for k, v in tolerance.items()}
    hints = _hints(cls)
    unknown = set(flat) - set(hints)
    if unknown:
        raise ValueError(
            f"this {kind} config has settings this ember does not know ({', '.join(sorted(unknown))}): it was "
            "written by another ember version; re-create the artifact with this one"
        )
    for key, value in flat.items():  # the same type rules as config_with: a bad value is named, not a TypeError later
        if not _is_a(value, hints[key]):
            raise ValueError(f"this {kind} config has {key}={value!r}, but {key} takes {_type_name(hints[key])}")
    if "tolerance" in d:
        d["tolerance"] = Tolerance(**tolerance)
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def settings(config: OptimizeConfig | type[OptimizeConfig]) -> dict[str, str]:
    """Each setting of a config type and the type it takes, as text (``tolerance`` as its fields).

    Example:
        >>> settings(CompileConfig)["mode"]
        "Literal['default', 'reduce-overhead', 'max-autotune']"
    """
    cls = config if isinstance(config, type) else type(config)
    return {name: _type_name(hint) for name, hint in _hints(cls).items()}


# the speed policy's settings, listed after a technique's own (and before the tolerance's bounds)
_SPEED_SETTINGS = ("objective", "on_slower")


def _hints(cls: type[OptimizeConfig]) -> dict[str, Any]:
    """Setting name -> type: ``on_violation``, the technique's own settings in field order, the speed policy, and the
    tolerance's bounds last as ``tolerance.NAME``."""
    own, bounds = typing.get_type_hints(cls), typing.get_type_hints(Tolerance)
    names = [f.name for f in fields(cls) if f.name != "tolerance" and f.name not in _SPEED_SETTINGS]
    return {n: own[n] for n in [*names, *_SPEED_SETTINGS]} | {
        f"tolerance.{f.name}": bounds[f.name] for f in fields(Tolerance)
    }


def config_with(config: OptimizeConfig, pairs: Sequence[str]) -> OptimizeConfig:
    """``config`` with settings changed by ``KEY=VALUE`` strings, as ``ember optimize --set`` takes them.

    A value is read as JSON (``4``, ``null``, ``true``, ``[12, 16]``), else as plain text (``bf16``), and
    must be of the setting's type; ``tolerance.NAME`` sets one bound of the fidelity tolerance. In Python,
    ``dataclasses.replace(config, threads=4)`` does the same.

    Example:
        >>> config_with(OpenVINOConfig(), ["threads=4", "precision=bf16", "tolerance.min_mean_cosine=0.999"]).threads
        4
    """
    # Written here, not with a validation library: five plain types, and the errors must name ember's settings.
    cls = type(config)
    hints = _hints(cls)
    known = {name: _type_name(hint) for name, hint in hints.items()}
    changes: dict[str, Any] = {}
    bounds: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"setting {pair!r} is not KEY=VALUE (e.g. threads=4)")
        if key not in known:
            raise ValueError(f"{cls.kind} configs have no setting {key!r}; their settings: {', '.join(known)}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if not _is_a(value, hints[key]):
            raise ValueError(f"{key}={raw!r}: {key} takes {known[key]}")
        value = tuple(value) if isinstance(value, list) else value
        if key.startswith("tolerance."):
            bounds[key.removeprefix("tolerance.")] = value
        else:
            changes[key] = value
    if bounds:
        changes["tolerance"] = replace(config.tolerance, **bounds)
    return replace(config, **changes)


def _is_a(value: object, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return value is None
    if origin is Literal:
        return value in args
    if origin in (typing.Union, types.UnionType):
        return any(_is_a(value, a) for a in args)
    if origin is tuple:
        return isinstance(value, list | tuple) and all(_is_a(v, args[0]) for v in value)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return f"Literal{list(typing.get_args(hint))}"
    return str(hint).replace("typing.", "") if not isinstance(hint, type) else hint.__name__


# ---- named presets (factories returning plain configs) ----------------------------------------

# Presets are chosen per CPU family (ember.hardware.detect(), EMBER_CPU_FEATURES forces one): a factory reads the
# features when it is called, and the config it returns records the choice, so an artifact rebuilds as it was built.

def bf16() -> BF16Config:
    """bf16 Linear weights (converted once) under autocast on CPU (AVX512-BF16/AMX): faithful (cosine ≥ 0.999)."""
    return BF16Config(mode="weights")


def int8() -> Int8DynamicConfig:
    """torchao int8 dynamic quantisation of the Linear layers, compiled where the CPU has int8 dot products (VNNI,
    AMX, ARM dot product) so the matmuls reach them; eager elsewhere."""
    from ember.hardware import detect

    return Int8DynamicConfig(compile=detect().int8_dot)


def onnx() -> OnnxRuntimeConfig:
    """ONNX Runtime fp32 with transformer fusions: faithful (cosine ≥ 0.9999)."""
    return OnnxRuntimeConfig()


def onnx_int8() -> OnnxRuntimeConfig:
    """ONNX Runtime, dynamic int8, per channel, on the fully fused graph (QAttention for the Q/K/V
    projections, int8 MatMuls elsewhere, embeddings and LayerNorms fp32). Per channel holds cosine ≈ 0.993
    on MiniLM where per-tensor scales drop to ≈ 0.96 (measured 0.9614 on a Zen 3). ``keep_fp32="auto"``: where
    the calibration sentences fall within 0.001 of the 0.99 bound, the most sensitive MatMuls stay fp32 (on MiniLM's
    paragraph-length inputs the whole int8 model measured 0.9899, under the bound, and this preset 0.9920; short inputs
    keep none; BENCHMARKS.md, #19 runs 7-8)."""
    from ember.hardware import detect

    return OnnxRuntimeConfig(quantize="dynamic", tolerance=Tolerance(min_mean_cosine=0.99), keep_fp32="auto",
                             reduce_range=detect().x86_without_int8_dot)


def onnx_int8_static() -> OnnxRuntimeConfig:
    """ONNX Runtime, static int8 calibrated on the sample, the 4 most sensitive MatMuls kept in fp32."""
    return OnnxRuntimeConfig(quantize="static", keep_fp32=4, tolerance=Tolerance(min_mean_cosine=0.99))


def onnx_int8_block() -> OnnxRuntimeConfig:
    """ONNX Runtime ``MatMulNBits``: 8-bit weights with one scale per 32 inputs, int8 compute (activations
    quantised per block at run time), on the fused graph. Measured cosine 0.99984 on MiniLM-L6 (CLINC150)
    against 0.993 for per-channel ``onnx-int8``; bound: cosine ≥ 0.999. Left out of the defaults on x86 without int8
    dot products (slower than the fp32 original at batch 32 on an AVX2-only Zen 3)."""
    return OnnxRuntimeConfig(quantize="blockwise", tolerance=Tolerance(min_mean_cosine=0.999))


def openvino() -> OpenVINOConfig:
    """OpenVINO fp32: faithful (cosine ≥ 0.9999)."""
    return OpenVINOConfig()


def openvino_bf16() -> OpenVINOConfig:
    """OpenVINO with bf16 inference precision (cosine ≥ 0.999)."""
    return OpenVINOConfig(precision="bf16", tolerance=Tolerance(min_mean_cosine=0.999))


def openvino_int8() -> OpenVINOConfig:
    """OpenVINO int8 MatMuls (NNCF, calibrated on held-out sentences; cosine ≥ 0.99). What stays in float (the
    attention products, softmax, layer norms) runs in bf16 where the x86 CPU has bf16 instructions (AVX512-BF16 or
    AMX), else in fp32. MiniLM-L6, 2 threads, CLINC150 (``benchmarks/openvino_int8_float.py``, BENCHMARKS.md), same
    cosine (0.99745): batch 1 1.22x faster in bf16 on a Zen 4, 1.14x on a Zen 5; batch 32 0.94x and 1.04x, within
    the runs' noise, so batches keep the same precision (``batch_precision`` sets another). AMX makes bf16 matmuls
    ~4x fp32 (issue #19's Xeon). Left out of the defaults on x86 without int8 dot products (VNNI, AMX): slower than
    the fp32 original at batch 32 on an AVX2-only Zen 3 (:mod:`ember.optimize.cpu`)."""
    from ember.hardware import detect

    cpu = detect()
    return OpenVINOConfig(quantize="static", tolerance=Tolerance(min_mean_cosine=0.99),
                          precision="bf16" if cpu.native_bf16 and not cpu.arm else "f32")


def compiled() -> CompileConfig:
    """``torch.compile`` with dynamic shapes."""
    return CompileConfig()


def compiled_bf16() -> CompileConfig:
    """``torch.compile`` with dynamic shapes under bf16 autocast (cosine ≥ 0.999, like ``bf16``)."""
    return CompileConfig(bf16=True, tolerance=Tolerance(min_mean_cosine=0.999))


PRESETS = {
    "bf16": bf16,
    "int8": int8,
    "onnx": onnx,
    "onnx-int8": onnx_int8,
    "onnx-int8-static": onnx_int8_static,
    "onnx-int8-block": onnx_int8_block,
    "openvino": openvino,
    "openvino-bf16": openvino_bf16,
    "openvino-int8": openvino_int8,
    "compile": compiled,
    "compile-bf16": compiled_bf16,
}
