"""OpenVINO on CPU, converted from ember's ONNX export (which keeps the attention mask)."""

from __future__ import annotations

import functools
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ember.errors import ArtifactError
from ember.optimize.artifact import ModelFacts, OptimizedModel, wrap_output
from ember.optimize.config import OpenVINOConfig
from ember.optimize.export import _Positional, check_exportable, dummy_batch, export_onnx
from ember.optimize.registry import register

INSTALL = "pip install 'ember[openvino]'"
XML, BIN = "model.xml", "model.bin"


@functools.cache
def shared_core():
    """The one ``openvino.Core`` ember compiles and reads with, kept for the life of the process.

    Why not a ``Core`` per artifact: each ``Core`` loads its own CPU plugin, and the plugin's constructor
    (OpenVINO's ``SigAltStackSetup``, there for AMX state on Linux) replaces the calling thread's alternate
    signal stack with an mmap'd one, saving the previous one. Its destructor restores the saved stack only if
    its own is still current on the destroying thread, and unmaps its own stack either way. Two plugins
    released first-in-first-out (artifact A built, artifact B built, A dropped, B dropped), or one released on
    another thread (cyclic GC runs on whichever thread allocates), leave the main thread's alternate stack
    pointing at unmapped memory. The next Python signal handler (CPython installs them with SA_ONSTACK; e.g.
    the SIGCHLD handler a PyTorch DataLoader with workers sets) then kills the process with SIGSEGV
    (si_code SI_KERNEL, the kernel cannot write the signal frame), or, once the range is mapped again,
    writes the frame over live memory. Verified with OpenVINO 2026.4 (the destructor upstream is unchanged);
    one process-wide ``Core`` means one CPU plugin that is never released, so the stack it installs stays
    valid. ``tests/optimize/test_optimize.py::test_openvino_artifacts_released_in_any_order_keep_signals_safe``
    reproduces the crash when this cache is removed.

    Returns:
        The process-wide ``openvino.Core``.

    Example:
        >>> compiled = shared_core().compile_model(ov_model, "CPU")  # doctest: +SKIP
    """
    import openvino as ov

    return ov.Core()


def compile_options(config: OpenVINOConfig) -> dict[str, str]:
    opts = {"PERFORMANCE_HINT": config.hint.upper(), "INFERENCE_PRECISION_HINT": config.precision}
    if config.threads:
        opts["INFERENCE_NUM_THREADS"] = str(config.threads)
    return opts


class OpenVINOArtifact(OptimizedModel):
    """An OpenVINO compiled model behind the original model's call interface (no torch weights needed)."""

    backend_files = (XML, BIN)

    def __init__(self, ov_model, config: OpenVINOConfig, facts: ModelFacts, tokenizer=None) -> None:
        super().__init__(config, facts, tokenizer)
        self.ov_model = ov_model
        self.compiled = shared_core().compile_model(ov_model, "CPU", compile_options(config))
        self.request = self.compiled.create_infer_request()
        self.kept_fp32 = 0
        self.size_bytes = sum(int(np.prod(op.get_output_shape(0))) * op.get_output_element_type(0).size
                              for op in ov_model.get_ops() if op.get_type_name() == "Constant")
        self.static = self._compile_static()  # padded length -> (compiled model, infer request), batch 1

    def _run(self, feeds: dict[str, torch.Tensor]):
        arrays = {k: v.detach().cpu().numpy().astype(np.int64, copy=False) for k, v in feeds.items()}
        batch, length = arrays["input_ids"].shape
        compiled, request = self._static_model(length) if batch == 1 else (None, None)
        if compiled is None:
            out = self.request.infer(arrays)[self.compiled.output(0)]
        else:
            padded = compiled.input(0).get_shape()[1]
            # padding is masked: ids 0, attention mask 0, token type 0
            out = request.infer({k: np.pad(a, ((0, 0), (0, padded - length))) for k, a in arrays.items()})[compiled.output(0)]
            if self.facts.output == "last_hidden_state":
                out = out[:, :length]
        return wrap_output(self.facts.output, torch.from_numpy(np.array(out, copy=True)))

    def _compile_static(self) -> dict[int, tuple]:
        """Models compiled for one input of ``static_lengths``, 2x, 3x ... tokens, made now rather than on a
        first request (a compile takes ~0.2 s, which would land in some request's latency).

        OpenVINO's CPU plugin runs a static shape faster than its dynamic-shape model at batch 1, where a
        call is short enough for shape handling to count (measured, see ``OpenVINOConfig``). Each model
        holds its own copy of the weights, so their number is bounded by ``max_static`` and by
        ``static_memory_mb`` (counted with the fp32 size of the weights, an upper bound).
        """
        cfg = self.optimize_config
        if not cfg.static_lengths or not cfg.max_static:
            return {}
        count = min(cfg.max_static, int(cfg.static_memory_mb * 1e6 // max(self.size_bytes, 1)),
                    self.facts.max_length // cfg.static_lengths)
        out = {}
        for padded in range(cfg.static_lengths, cfg.static_lengths * count + 1, cfg.static_lengths):
            model = self.ov_model.clone()
            model.reshape({inp.get_any_name(): [1, padded] for inp in model.inputs})
            compiled = shared_core().compile_model(model, "CPU", compile_options(cfg))
            out[padded] = (compiled, compiled.create_infer_request())
        return out

    def _static_model(self, length: int):
        """The static model for one input of ``length`` tokens, or ``(None, None)`` beyond the compiled ones."""
        step = self.optimize_config.static_lengths
        return self.static.get(-(-length // step) * step, (None, None)) if step else (None, None)

    def _save_files(self, directory: Path) -> None:
        import openvino as ov

        ov.save_model(self.ov_model, str(directory / XML), compress_to_fp16=False)


def _build(model: nn.Module, config: OpenVINOConfig, ctx) -> OpenVINOArtifact:
    import openvino as ov

    check_exportable(model, ctx.facts)
    kept = 0
    if config.quantize == "static":
        with tempfile.TemporaryDirectory(prefix="ember-ov-") as tmpdir:
            tmp = Path(tmpdir)
            path = export_onnx(model, ctx.facts, tmp / "export.onnx")
            path, kept = _quantize_static(path, config, ctx, tmp)
            ov_model = ov.convert_model(str(path))
    else:
        # straight from PyTorch (OpenVINO's own frontend gives a leaner graph than the ONNX detour), traced on
        # a padded batch of mixed lengths so the attention mask stays in the graph
        example = dict(zip(ctx.facts.input_names, dummy_batch(ctx.facts), strict=True))
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            ov_model = ov.convert_model(_Positional(model, ctx.facts.input_names, ctx.facts.output).eval(),
                                        example_input=example)
        for inp, name in zip(ov_model.inputs, ctx.facts.input_names, strict=True):
            inp.get_tensor().set_names({name})
    art = OpenVINOArtifact(ov_model, config, ctx.facts, ctx.tokenizer)
    art.kept_fp32 = kept
    return art


def _quantize_static(path: Path, config: OpenVINOConfig, ctx, tmp: Path) -> tuple[Path, int]:
    """QDQ int8 on the unfused export (every projection, Q/K/V included); OpenVINO runs the QDQ pairs in int8."""
    from ember.optimize.backends import onnxruntime as ortb
    from ember.optimize.config import OnnxRuntimeConfig

    # the ONNX Runtime quantiser does the work; this config only carries its settings
    qcfg = OnnxRuntimeConfig(quantize="static", per_channel=config.per_channel, keep_fp32=config.keep_fp32,
                             fuse=False, threads=config.threads, calibration_size=config.calibration_size)
    ortb._drop_value_info(path)
    return ortb.quantize_int8(path, qcfg, ctx, tmp)


def _load(directory: Path, config: OpenVINOConfig, facts: ModelFacts, tokenizer) -> OpenVINOArtifact:
    try:
        ov_model = shared_core().read_model(str(directory / XML))
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
        raise ArtifactError(f"{directory / XML} cannot be read by OpenVINO ({exc}); re-create the artifact") from exc
    return OpenVINOArtifact(ov_model, config, facts, tokenizer)


# the exporter (torch.onnx, dynamo) needs onnx + onnxscript; int8 calibration uses onnxruntime's quantiser
register(OpenVINOConfig, load=_load, requires=(("openvino", INSTALL), ("onnxscript", INSTALL), ("onnxruntime", INSTALL)))(_build)
