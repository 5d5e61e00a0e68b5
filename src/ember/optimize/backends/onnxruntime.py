"""ONNX Runtime: export, transformer fusions, fp32 or int8 (dynamic / static-calibrated, per channel, or
block-wise 8-bit weights through ``MatMulNBits``).

The default path exports with the TorchScript exporter (eager attention) and fuses with ONNX Runtime's
transformer optimizer; int8 then quantises the fused graph (QAttention + int8 MatMuls).
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ember.errors import ArtifactError
from ember.fidelity import compare, run_batches
from ember.optimize.artifact import ModelFacts, OptimizedModel, wrap_output
from ember.optimize.config import OnnxRuntimeConfig
from ember.optimize.export import check_onnx_size, export_onnx
from ember.optimize.registry import Progress, no_progress, register

INSTALL = "pip install 'ember[onnx]'  (onnxruntime, onnx, onnxscript)"
MODEL_FILE = "model.onnx"
# keep_fp32="auto": the calibration cosine it aims above the bound by, and the most MatMuls it leaves in fp32. On
# MiniLM's paragraph-length inputs the whole int8 model measured 0.9899 (under the 0.99 bound) and onnx-int8 with "auto"
# 0.9920, 1.5x the fp32 original's batch-32 throughput (BENCHMARKS.md, #19 runs 7-8, AVX2 Zen 3); the cap keeps the
# fp32 share small enough for int8 to stay worth building.
AUTO_MARGIN = 0.001
AUTO_MAX_KEPT = 4
# sentences each sensitivity probe (one quantised MatMul at a time) is scored on: the first calibration batches holding
# this many. The ranking only orders the probes, and every choice it leads to is checked on all the calibration
# sentences (keep_fp32="auto") and verified after; scoring each of MiniLM's 24 probes on 128 paragraph-length sentences
# was most of onnx-int8's 155 s build on them (BENCHMARKS.md, #19 run 19).
RANK_SENTENCES = 32
_FUSE_LOCK = threading.Lock()  # see fuse()


class OnnxArtifact(OptimizedModel):
    """An ONNX Runtime session behind the original model's call interface (no torch weights needed)."""

    backend_files = (MODEL_FILE,)

    def __init__(self, model_bytes: bytes, config: OnnxRuntimeConfig, facts: ModelFacts, tokenizer=None,
                 *, threads: int | None = None, stats: dict | None = None) -> None:
        super().__init__(config, facts, tokenizer)
        self.model_bytes = model_bytes
        self.fusion_stats = stats or {}
        self.session = make_session(model_bytes, threads, skip_layer_norm=config.skip_layer_norm)
        self.size_bytes = len(model_bytes)

    def _run(self, feeds: dict[str, torch.Tensor]):
        arrays = {k: v.detach().cpu().numpy().astype(np.int64, copy=False) for k, v in feeds.items()}
        (out,) = self.session.run([self.facts.output], arrays)
        return wrap_output(self.facts.output, torch.from_numpy(out))

    def _save_files(self, directory: Path) -> None:
        (directory / MODEL_FILE).write_bytes(self.model_bytes)


def make_session(model_bytes: bytes, threads: int | None, *, skip_layer_norm: bool = False,
                 profile_prefix: str | None = None):
    """An ONNX Runtime CPU session with every graph optimisation but, unless ``skip_layer_norm``, the one that would
    fuse residual adds and LayerNorms back into ``SkipLayerNormalization`` (see ``OnnxRuntimeConfig.skip_layer_norm``).
    ``profile_prefix``: record ONNX Runtime's per-node profile (``session.end_profiling()`` returns the file)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    disabled = None if skip_layer_norm else ["SkipLayerNormFusion"]
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)


def fuse(path: Path, facts: ModelFacts | None = None, *, skip_layer_norm: bool = True) -> dict[str, int]:
    """onnxscript's transformer fusions in place (for the dynamo export); returns counts of what fused.

    ``facts`` is unused (the rewriter reads heads and width from the graph); it keeps the fusers' signature uniform.
    Unless ``skip_layer_norm``, residual adds and LayerNorms stay two ops: ``optimize_for_ort`` has no switch for
    that fusion, so its step is replaced by one that fuses nothing while it runs (where a later onnxscript renames
    the step, the patch cannot apply and the count of ``skip_layer_normalization`` in the result says so).
    """
    from unittest import mock

    import onnx_ir as ir
    from onnxscript.rewriter.ort_fusions import _core, optimize_for_ort

    step = "fuse_skip_layer_normalization"
    leave = not skip_layer_norm and hasattr(_core, step)
    # the patch swaps a module global of onnxscript: one fusion at a time, so that builds in parallel threads asking
    # for different skip_layer_norm settings never see each other's choice
    with _FUSE_LOCK, mock.patch.object(_core, step, lambda model, **kwargs: 0) if leave else contextlib.nullcontext():
        model, stats = optimize_for_ort(ir.load(str(path)))
    ir.save(model, str(path))
    _drop_value_info(path)
    return {k: int(v) for k, v in stats.items() if v}


# fused com.microsoft op -> the name ember reports its count under
_FUSED_OPS = {"Attention": "attention", "SkipLayerNormalization": "skip_layer_normalization", "BiasGelu": "bias_gelu",
              "FastGelu": "bias_gelu", "EmbedLayerNormalization": "embed_layer_normalization"}


def heads_and_width(hf_config: dict) -> tuple[int, int]:
    """Attention heads and hidden width from a Hugging Face config dict (BERT-style or DistilBERT names)."""
    heads = hf_config.get("num_attention_heads", hf_config.get("n_heads"))
    width = hf_config.get("hidden_size", hf_config.get("dim"))
    if not heads or not width:
        raise ValueError(f"cannot fuse: the model config names neither num_attention_heads/hidden_size nor n_heads/dim "
                         f"(got keys {sorted(hf_config)[:12]}...); use OnnxRuntimeConfig(fuse=False)")
    if hf_config.get("attention_head_size"):  # heads removed by ember.compress: the fusion wants the pruned width
        width = int(heads) * int(hf_config["attention_head_size"])
    return int(heads), int(width)


def fuse_transformers(path: Path, facts: ModelFacts, *, skip_layer_norm: bool = False) -> dict[str, int]:
    """ONNX Runtime's transformer optimizer in place (for the torchscript export); returns fused-op counts.

    The fused ``Attention`` takes the raw 2-D attention mask (not a per-row length), so left padding and
    masks with holes stay exact. Residual adds and LayerNorms stay separate ops unless ``skip_layer_norm``.
    """
    from collections import Counter

    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    heads, width = heads_and_width(facts.hf_config)
    options = FusionOptions("bert")
    options.use_raw_attention_mask(True)
    options.enable_skip_layer_norm = skip_layer_norm
    model = optimize_model(str(path), model_type="bert", num_heads=heads, hidden_size=width,
                           optimization_options=options, opt_level=0)
    model.save_model_to_file(str(path))
    _drop_value_info(path)
    counts = Counter(_FUSED_OPS[n.op_type] for n in model.model.graph.node if n.op_type in _FUSED_OPS)
    return dict(counts)


# how each exporter's graph is fused
_FUSERS = {"torchscript": fuse_transformers, "dynamo": fuse}


def _drop_value_info(path: Path) -> None:
    """Forget recorded intermediate shapes: some carry the export example's batch size, which trips
    the quantiser's shape inference; the runtime re-infers them anyway."""
    import onnx

    m = onnx.load(str(path))
    del m.graph.value_info[:]
    onnx.save(m, str(path))


def _type_fused_outputs(src: Path, dst: Path) -> None:
    """Write ``src`` with a float type recorded for the outputs of fused com.microsoft ops
    (Attention, SkipLayerNormalization, BiasGelu all return float32), then propagate types."""
    import onnx
    from onnx import TensorProto, helper, shape_inference

    m = shape_inference.infer_shapes(onnx.load(str(src)))
    known = {v.name for v in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output)}
    for node in m.graph.node:
        if node.domain == "com.microsoft":
            for i, out in enumerate(node.output):
                if out and out not in known:
                    # EmbedLayerNormalization's second output is the int32 mask index
                    kind = TensorProto.INT32 if (node.op_type, i) == ("EmbedLayerNormalization", 1) else TensorProto.FLOAT
                    m.graph.value_info.append(helper.make_tensor_value_info(out, kind, None))
                    known.add(out)
    onnx.save(shape_inference.infer_shapes(m), str(dst))


class _Calibration:
    """ONNX Runtime CalibrationDataReader over the verification batches."""

    def __init__(self, batches: list[dict]) -> None:
        self._it = iter([{k: v.numpy().astype(np.int64) for k, v in b.items()} for b in batches])

    def get_next(self):
        return next(self._it, None)


def quantizer_input(src: Path):
    """``src`` loaded once per build with the shape inference ONNX Runtime's quantisers need. Handed a path (as
    ``quantize_dynamic`` is) they infer shapes into another file and reload it on every call, once more than the
    dynamic quantiser's own pass after it rewrites Gemm as MatMul: with keep_fp32's ranking (one probe per MatMul),
    doing it once and quantising in memory builds MiniLM-L6 ~18% faster (49.3/50.1 s -> 40.9/41.0 s, keep_fp32=2,
    paragraphs sample, Zen 4, 2026-12-04), byte for byte the same model."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer, update_opset_version

    return update_opset_version(load_model_with_shape_infer(src), QuantType.QInt8)


def int8_op_types(config: OnnxRuntimeConfig) -> list[str]:
    """The op types int8 quantisation touches (embeddings stay fp32); fused attention has no QDQ form, so under static
    quantisation it stays fp32. The sensitivity ranking probes exactly these."""
    return ["MatMul", "Gemm"] if config.quantize == "static" else ["MatMul", "Gemm", "Attention"]


def quantized(base, config: OnnxRuntimeConfig, exclude: list[str], include: list[str] | None = None,
              ranges=None) -> bytes:
    """``base`` (from :func:`quantizer_input`, left untouched) int8-quantised in memory: dynamic, or static QDQ from
    calibrated ``ranges``, per channel as configured; returns the serialised model.

    The quantiser classes are what ``quantize_dynamic`` / ``quantize_static`` run, with the same options; called
    directly they take the already inferred model instead of a path (see :func:`quantizer_input`)."""
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.onnx_quantizer import ONNXQuantizer
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
    from onnxruntime.quantization.quant_utils import QuantizationMode

    model = onnx.ModelProto()
    model.CopyFrom(base)  # the quantisers rewrite the graph in place
    # DefaultTensorType: shape inference cannot type the outputs of fused com.microsoft ops
    options = {"DefaultTensorType": 1}
    if config.quantize == "dynamic":
        q = ONNXQuantizer(model, config.per_channel, config.reduce_range, QuantizationMode.IntegerOps, False,
                          QuantType.QInt8, QuantType.QUInt8, None, include or [], exclude, int8_op_types(config),
                          {**options, "MatMulConstBOnly": True})  # quantize_dynamic's default
    else:
        q = QDQQuantizer(model, config.per_channel, config.reduce_range, QuantType.QInt8, QuantType.QUInt8, ranges,
                         include or [], exclude, int8_op_types(config), extra_options=options)
    q.quantize_model()
    q.model.topological_sort()  # as the quantisers' own save does
    return q.model.model.SerializeToString()


def quantize_blockwise(src: Path, dst: Path, config: OnnxRuntimeConfig) -> int:
    """Every constant-weight MatMul of ``src`` -> ``MatMulNBits`` (8-bit symmetric weights, one scale per
    ``config.block_size`` inputs, accuracy level 4 = int8 compute); returns how many were converted."""
    import logging

    import onnx

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    # the module calls logging.basicConfig(level=INFO) on import: undo that, and keep its own log quiet
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger(MatMulNBitsQuantizer.__module__).setLevel(logging.WARNING)
    q = MatMulNBitsQuantizer(onnx.load(str(src)), bits=8, block_size=config.block_size, is_symmetric=True,
                             accuracy_level=4)
    q.process()
    q.model.save_model_to_file(str(dst))
    return sum(n.op_type == "MatMulNBits" for n in q.model.model.graph.node)


def typed_copy(src: Path, tmp: Path) -> Path:
    """A copy of ``src`` whose activations all carry a type (the quantiser needs them)."""
    typed = tmp / (src.stem + "-typed.onnx")
    _type_fused_outputs(src, typed)
    return typed


def calibrate(src: Path, batches: list[dict], tmp: Path):
    """Activation ranges of every MatMul/Gemm input over ``batches`` (min/max), computed once."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    cal = create_calibrator(src, op_types_to_calibrate=["MatMul", "Gemm"], augmented_model_path=str(tmp / "augmented.onnx"),
                            calibrate_method=CalibrationMethod.MinMax)
    cal.collect_data(_Calibration(batches))
    return cal.compute_data()


def _cosine(model_bytes: bytes, config: OnnxRuntimeConfig, batches: list[dict], reference: list,
            facts: ModelFacts) -> float:
    """Mean cosine of the serialised model against ``reference`` on ``batches``."""
    sess = make_session(model_bytes, config.threads, skip_layer_norm=config.skip_layer_norm)
    outs = [wrap_output(facts.output, torch.from_numpy(sess.run([facts.output], {k: v.numpy() for k, v in b.items()})[0]))
            for b in batches]
    return compare(reference, outs, [b["attention_mask"] for b in batches]).mean_cosine or -1.0


def sensitivity_order(base, config: OnnxRuntimeConfig, batches: list[dict], reference: list, facts: ModelFacts,
                      ranges=None) -> list[str]:
    """Quantisable nodes of ``base`` (from :func:`quantizer_input`), the one whose quantisation alone lowers cosine the
    most first (each measured on the first of ``batches`` holding ``RANK_SENTENCES`` sentences)."""
    n, held = 0, 0
    while n < len(batches) and held < RANK_SENTENCES:
        held += len(batches[n]["input_ids"])
        n += 1
    batches, reference = batches[:n], reference[:n]
    ops = int8_op_types(config)
    scores = [(_cosine(quantized(base, config, exclude=[], include=[node.name], ranges=ranges), config, batches,
                       reference, facts), node.name)
              for node in base.graph.node if node.op_type in ops]
    return [name for _, name in sorted(scores)]


def quantize_int8(path: Path, config: OnnxRuntimeConfig, ctx, tmp: Path) -> tuple[bytes, int]:
    """int8-quantise the export at ``path``: calibrate (static), choose the MatMuls kept in fp32 (``keep_fp32``:
    that many of the most sensitive, or with ``"auto"`` as few as the calibration sentences need, see
    :func:`_keep_auto`), quantise the rest. Returns the quantised model and how many MatMuls stayed fp32."""
    calib = ctx.calibration(config.calibration_size)
    path = typed_copy(path, tmp)
    if config.quantize == "static":
        ctx.stage(f"calibrating activation ranges on {ctx.calibration_count(config.calibration_size)} sentences")
    ranges = calibrate(path, calib, tmp) if config.quantize == "static" else None
    base = quantizer_input(path)
    reference = run_batches(ctx.model, calib) if config.keep_fp32 else None
    if config.keep_fp32 == "auto":
        return _keep_auto(base, config, calib, reference, ctx.facts, ranges, stage=ctx.stage)
    if config.keep_fp32:
        ctx.stage(f"ranking MatMuls by int8 sensitivity to keep {config.keep_fp32} in fp32")
    keep = sensitivity_order(base, config, calib, reference, ctx.facts, ranges)[: config.keep_fp32] if config.keep_fp32 else []
    ctx.stage(f"quantising to int8 ({config.quantize})")
    return quantized(base, config, exclude=keep, ranges=ranges), len(keep)


def _keep_auto(base, config: OnnxRuntimeConfig, calib: list[dict], reference: list, facts: ModelFacts, ranges,
               stage: Progress = no_progress) -> tuple[bytes, int]:
    """``keep_fp32="auto"``: quantise everything; while the mean cosine on the calibration sentences is under the
    config's bound plus ``AUTO_MARGIN`` (they are not the verification sentences: the margin is for the difference),
    leave the next most sensitive MatMul in fp32, at most ``AUTO_MAX_KEPT``. The sensitivity ranking (one probe
    per node) is only paid for when the whole model falls short. Returns the model and how many MatMuls it kept."""
    bound = config.tolerance.min_mean_cosine
    stage(f"quantising to int8 ({config.quantize})")
    model = quantized(base, config, exclude=[], ranges=ranges)
    if bound is None:
        return model, 0
    cosine = _cosine(model, config, calib, reference, facts)
    if cosine >= bound + AUTO_MARGIN:
        return model, 0
    stage(f'keep_fp32="auto": whole-int8 calibration cosine {cosine:.4f} is under {bound + AUTO_MARGIN:.4f}; '
          "ranking MatMuls by int8 sensitivity")
    order = sensitivity_order(base, config, calib, reference, facts, ranges)
    keep: list[str] = []
    for name in order[:AUTO_MAX_KEPT]:
        keep.append(name)
        stage(f'keep_fp32="auto": requantising with {len(keep)} MatMul(s) in fp32 (at most {AUTO_MAX_KEPT})')
        model = quantized(base, config, exclude=keep, ranges=ranges)
        if _cosine(model, config, calib, reference, facts) >= bound + AUTO_MARGIN:
            break
    return model, len(keep)  # still short after AUTO_MAX_KEPT: verification reports it by the config's policy


def _build(model: nn.Module, config: OnnxRuntimeConfig, ctx) -> OnnxArtifact:
    check_onnx_size(model)
    with tempfile.TemporaryDirectory(prefix="ember-onnx-") as tmpdir:
        tmp = Path(tmpdir)
        ctx.stage(f"exporting to ONNX ({config.exporter} exporter)")
        path = export_onnx(model, ctx.facts, tmp / "export.onnx", exporter=config.exporter)
        if config.fuse:
            ctx.stage("fusing attention, GELU and LayerNorm for ONNX Runtime")
            stats = _FUSERS[config.exporter](path, ctx.facts, skip_layer_norm=config.skip_layer_norm)
        else:
            stats = {}
            _drop_value_info(path)
        if config.quantize == "blockwise":
            ctx.stage("quantising MatMul weights block-wise (MatMulNBits)")
            qpath = tmp / "quantized.onnx"
            stats = {**stats, "matmul_nbits": quantize_blockwise(path, qpath, config)}
            data = qpath.read_bytes()
        elif config.quantize != "none":
            data, kept = quantize_int8(path, config, ctx, tmp)
            stats = {**stats, "kept_fp32": kept}
        else:
            data = path.read_bytes()
        return OnnxArtifact(data, config, ctx.facts, ctx.tokenizer, threads=config.threads, stats=stats)


def _load(directory: Path, config: OnnxRuntimeConfig, facts: ModelFacts, tokenizer) -> OnnxArtifact:
    data = (directory / MODEL_FILE).read_bytes()
    try:
        return OnnxArtifact(data, config, facts, tokenizer, threads=config.threads)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
        raise ArtifactError(f"{directory / MODEL_FILE} cannot be loaded by ONNX Runtime ({exc}); re-create the artifact") from exc


register(OnnxRuntimeConfig, load=_load, requires=(("onnxruntime", INSTALL), ("onnxscript", INSTALL)))(_build)

