"""OpenVINO on CPU, converted straight from the PyTorch model (traced on a padded batch, so the attention mask stays);
int8 through NNCF, OpenVINO's post-training quantiser."""

from __future__ import annotations

import bisect
import collections
import contextlib
import dataclasses
import functools
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from ember.batching import length_buckets
from ember.errors import ArtifactError
from ember.optimize.artifact import ModelFacts, OptimizedModel, wrap_output
from ember.optimize.config import OpenVINOConfig
from ember.optimize.export import _Positional, check_exportable, dummy_batch
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


def compile_options(config: OpenVINOConfig, streams: int = 1, threads: int | None = None,
                    precision: str | None = None) -> dict[str, str]:
    """OpenVINO's compile options for ``config``: one stream on every thread (a request's latency), or ``streams``
    streams sharing the threads (requests running side by side). ``threads`` overrides ``config.threads``,
    ``precision`` ``config.precision``."""
    opts = {"INFERENCE_PRECISION_HINT": precision or config.precision}
    if streams > 1:
        opts |= {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": str(streams)}
    else:
        opts["PERFORMANCE_HINT"] = "LATENCY"
    if threads or config.threads:
        opts["INFERENCE_NUM_THREADS"] = str(threads or config.threads)
    return opts


def _write_padded(buffers: dict[str, np.ndarray], arrays: dict[str, np.ndarray], length: int) -> None:
    """Write ``arrays`` (``length`` tokens) into a static model's input ``buffers``, the rest of each row padding."""
    for name, buf in buffers.items():
        buf[:, :length] = arrays[name]  # cast to int64 on the way in
        buf[:, length:] = 0  # padding is masked: ids 0, attention mask 0, token type 0


def _read_unpadded(out: np.ndarray, length: int, per_token: bool) -> np.ndarray:
    """A copy of a static model's output, per-token outputs cut back to the input's ``length`` tokens."""
    return (out[:, :length] if per_token else out).copy()


def _wait_all(requests) -> None:
    """Wait for every request, ignoring their errors (after one failed: leave none running, or the next call
    would find it busy)."""
    for request in requests:
        with contextlib.suppress(Exception):
            request.wait()


class _StaticModel:
    """A model compiled for one input shape, with its request's input and output buffers bound once.

    A call writes the input into OpenVINO's own buffers (numpy views of them) and runs the request with no
    arguments: ``InferRequest.infer(dict)`` wraps each input in a new tensor and each output in a new array,
    which measured ~0.2 ms of a ~1.5 ms batch-1 call on MiniLM-L6 (bf16, 2 threads).
    """

    def __init__(self, compiled) -> None:
        self.compiled = compiled  # kept alive: the request and its buffers belong to it
        self.request = compiled.create_infer_request()
        self.inputs = {p.any_name: self.request.get_tensor(p).data for p in compiled.inputs}
        self.output = self.request.get_tensor(compiled.output(0))

    def __call__(self, arrays: dict[str, np.ndarray], length: int, per_token: bool) -> np.ndarray:
        _write_padded(self.inputs, arrays, length)
        self.request.infer()
        return _read_unpadded(self.output.data, length, per_token)


class _Streams:
    """One compiled model run as ``n`` OpenVINO streams: a batch is cut into ``n`` parts by rows, started on one
    request per stream, and the outputs joined in order.

    Why: one request on every thread makes all of them meet at every layer, so one slowed core holds up the
    rest; parts on their own streams do not wait for each other. ``benchmarks/openvino_streams.py`` measured
    level to +4% sentences/s on a quiet host and up to +16% (bare requests) on a busy one. The streams belong to
    one compiled model, so they share its weights.
    """

    def __init__(self, compiled, n: int) -> None:
        self.compiled = compiled
        self.requests = [compiled.create_infer_request() for _ in range(n)]

    def __call__(self, ints: dict[str, np.ndarray]) -> np.ndarray:
        rows = len(next(iter(ints.values())))
        bounds = np.linspace(0, rows, min(len(self.requests), rows) + 1).astype(int)
        started = []
        try:
            for request, lo, hi in zip(self.requests, bounds[:-1], bounds[1:], strict=False):
                request.start_async({k: a[lo:hi] for k, a in ints.items()}, share_inputs=True)
                started.append(request)
            for request in started:
                request.wait()  # raises what failed inside the request
        except BaseException:
            _wait_all(started)
            raise
        return np.concatenate([r.get_output_tensor(0).data for r in started])


class _StaticBatches:
    """One model compiled for ``[rows, length]`` and run as its streams: a batch's parts of ``rows`` rows, padded
    (masked) to ``length`` tokens, are written into the requests' own input buffers and run side by side, one part
    per stream, as many rounds as it takes; the outputs are joined in order.

    Why not the dynamic model: OpenVINO's CPU plugin does shape work per call on a dynamic model (element-wise
    chains it cannot fuse, shape inference); its per-node profile of MiniLM-L6 at [32, 11] and [32, 92] (2 threads,
    ``benchmarks/serving_profile.py``) put the static model x1.10–1.23 ahead, the matmuls' time the same.
    """

    def __init__(self, compiled, rows: int, length: int) -> None:
        self.compiled = compiled  # kept alive: the requests and their buffers belong to it
        self.rows, self.length = rows, length
        n = max(1, int(compiled.get_property("NUM_STREAMS")))
        self.requests = [compiled.create_infer_request() for _ in range(n)]
        self.inputs = [{p.any_name: r.get_tensor(p).data for p in compiled.inputs} for r in self.requests]

    def __call__(self, arrays: dict[str, np.ndarray], length: int, per_token: bool) -> np.ndarray:
        """The outputs of ``arrays`` (``k * rows`` rows of ``length`` tokens, ``length <= self.length``)."""
        parts = len(arrays["input_ids"]) // self.rows
        outs: list[np.ndarray] = [None] * parts  # type: ignore[list-item]
        busy: dict[int, int] = {}  # request index -> the part it runs
        n = len(self.requests)

        def collect(k: int) -> None:
            self.requests[k].wait()  # raises what failed inside the request
            outs[busy.pop(k)] = _read_unpadded(self.requests[k].get_output_tensor(0).data, length, per_token)

        try:
            for part in range(parts):
                k = part % n
                if k in busy:
                    collect(k)
                rows = slice(part * self.rows, (part + 1) * self.rows)
                _write_padded(self.inputs[k], {name: a[rows] for name, a in arrays.items()}, length)
                self.requests[k].start_async()
                busy[k] = part
            for k in list(busy):
                collect(k)
        except BaseException:
            _wait_all(self.requests[k] for k in busy)
            raise
        return np.concatenate(outs)


class OpenVINOArtifact(OptimizedModel):
    """An OpenVINO compiled model behind the original model's call interface (no torch weights needed)."""

    backend_files = (XML, BIN)

    def __init__(self, ov_model, config: OpenVINOConfig, facts: ModelFacts, tokenizer=None) -> None:
        super().__init__(config, facts, tokenizer)
        self.ov_model = ov_model
        self.size_bytes = sum(int(np.prod(op.get_output_shape(0))) * op.get_output_element_type(0).size
                              for op in ov_model.get_ops() if op.get_type_name() == "Constant")
        self.float_bytes = float_weight_bytes(ov_model)  # what static_memory_mb counts per copy
        self.compiled = shared_core().compile_model(ov_model, "CPU", compile_options(config))
        self.request = self.compiled.create_infer_request()
        self.batched = self._compile_streams()  # batches of several inputs (None: on self.request)
        self.streams = len(self.batched.requests) if self.batched else 1
        self.static = self._compile_static()  # padded length -> its batch-1 model
        self._shapes = sorted(self.static)
        self.batch_static = self._compile_batch_static()  # padded length -> its model for parts of batch_rows rows
        self._batch_shapes = sorted(self.batch_static)
        self.batch_choice: BatchChoice | None = None  # set where the build timed the batch models (keep_faster_batches)
        # one call at a time: the requests and the static models' bound buffers are shared state, and OpenVINO
        # refuses a request that is running ("Infer Request is busy"), or a second caller overwrites the inputs
        # of the first (found with 4 threads calling one artifact: errors, and wrong outputs without one)
        self._lock = threading.Lock()

    def _run(self, feeds: dict[str, torch.Tensor]):
        with self._lock:  # each call already runs on every thread this artifact was given
            return self._run_alone(feeds)

    def _run_alone(self, feeds: dict[str, torch.Tensor]):
        arrays = {k: v.detach().cpu().numpy() for k, v in feeds.items()}
        return wrap_output(self.facts.output, torch.from_numpy(self._forward(arrays)))

    def _forward(self, arrays: dict[str, np.ndarray], batch_models: bool = True) -> np.ndarray:
        """The output for ``arrays`` on the fastest compiled model that holds them: a single input on its static
        shape, a batch's rows in whole rounds of parts (``batch_rows`` rows per stream) on their static shape, the
        rest on the dynamic model, split over the streams. ``batch_models=False``: batches on the dynamic model
        (the build's timing of the two).

        Why whole rounds: a part with no partner leaves the other streams' threads idle while it runs on its own
        thread. A batch of 20 at 122 tokens (MiniLM-L6, bf16, 2 streams of one thread, a Zen 4) run as 16 rows on
        one stream, then 4 on the dynamic model, took 1.7–1.8x as long as all 20 on the dynamic model's two
        streams; that one remainder batch made the batch models lose 4% over 500 length-bucketed paragraphs,
        against the 3–5% they gain on full batches."""
        batch, length = arrays["input_ids"].shape
        per_token = self.facts.output == "last_hidden_state"
        if batch == 1 and (static := self._static_model(length)) is not None:
            return static(arrays, length, per_token)
        if batch > 1 and batch_models and (parts := self._batch_model(length)) is not None:
            full = batch - batch % (parts.rows * len(parts.requests))
            if full:
                head = parts({k: a[:full] for k, a in arrays.items()}, length, per_token)
                if full == batch:
                    return head
                return np.concatenate([head, self._forward({k: a[full:] for k, a in arrays.items()})])
        ints = {k: np.ascontiguousarray(a, dtype=np.int64) for k, a in arrays.items()}
        if batch > 1 and self.batched is not None:
            return self.batched(ints)
        return np.array(self.request.infer(ints, share_inputs=True, share_outputs=True)[0], copy=True)

    def _compile_streams(self) -> _Streams | None:
        """The model batches run on as parts side by side, or ``None`` where batches run as one request.

        A second compiled model: single inputs keep one request on every thread. Its streams split the threads
        the first one runs on (OpenVINO gives each stream one at least, so ``streams`` is cut to the threads);
        by default two, if one more copy of the weights fits in ``static_memory_mb``. Compiled on one stream too
        when batches run in a precision of their own (``batch_precision``).
        """
        cfg = self.optimize_config
        threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
        wanted = min(cfg.streams or (2 if self._copies_in_budget() else 1), threads)
        own_precision = cfg.batch_precision not in (None, cfg.precision)  # batches need a model of their own
        if wanted < 2 and not own_precision:
            return None
        compiled = shared_core().compile_model(self.ov_model, "CPU",
                                               compile_options(cfg, wanted, threads, cfg.batch_precision))
        n = int(compiled.get_property("NUM_STREAMS"))
        return _Streams(compiled, n) if n > 1 or own_precision else None

    def _copies_in_budget(self) -> int:
        """How many copies of the weights (:func:`copy_bytes`) ``static_memory_mb`` holds."""
        return static_copies(self.float_bytes, self.optimize_config)

    def _compile_static(self) -> dict[int, _StaticModel]:
        """Models compiled for one input of each of ``static_shapes`` tokens, made now rather than on a first
        request (a compile takes ~0.2 s, which would land in some request's latency).

        Each model holds its own copy of the weights, so their number is bounded by ``max_static`` and by
        ``static_memory_mb`` (counted with an upper bound on a copy's size, :func:`copy_bytes`); the shortest are
        kept (the build chose no more than fit).
        """
        cfg = self.optimize_config
        shapes = [n for n in cfg.static_shapes or () if n <= self.facts.max_length]
        count = min(cfg.max_static, self._copies_in_budget())
        out = {}
        for padded in shapes[:count]:
            model = self.ov_model.clone()
            model.reshape({inp.get_any_name(): [1, padded] for inp in model.inputs})
            out[padded] = _StaticModel(shared_core().compile_model(model, "CPU", compile_options(cfg)))
        return out

    def _compile_batch_static(self) -> dict[int, _StaticBatches]:
        """Models compiled for parts of ``batch_rows`` rows of each of ``batch_shapes`` tokens, on the streams and
        in the precision batches run in, made now and run once (so no request pays for a compile or for the
        model's first allocations). The longest first, while ``max_batch_static`` and ``batch_memory_mb`` allow.

        Memory is counted per model as what the first (longest) one added to this process's resident memory, at
        least its weights at the precision they run in. On MiniLM-L6 (``benchmarks/openvino_batch_shapes.py``) a
        bf16 model added ~4–31 MB, an int8 one ~70 MB at up to 24 tokens and 128–154 MB at 128: the int8 weights
        OpenVINO repacks are not shared between compiled models.
        """
        cfg = self.optimize_config
        shapes = [n for n in cfg.batch_shapes or () if n <= self.facts.max_length]
        if not shapes or cfg.max_batch_static <= 0:
            return {}
        threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
        opts = compile_options(cfg, self.streams, threads, cfg.batch_precision)
        per_model = copy_bytes(self.float_bytes, cfg, cfg.batch_precision)
        out: dict[int, _StaticBatches] = {}
        for padded in reversed(shapes):
            if len(out) >= cfg.max_batch_static or per_model * (len(out) + 1) > cfg.batch_memory_mb * 1e6:
                break
            before = _resident_bytes()
            model = self.ov_model.clone()
            model.reshape({inp.get_any_name(): [cfg.batch_rows, padded] for inp in model.inputs})
            parts = _StaticBatches(shared_core().compile_model(model, "CPU", opts), cfg.batch_rows, padded)
            parts({name: np.ones((cfg.batch_rows * len(parts.requests), padded), dtype=np.int64)
                   for name in parts.inputs[0]}, padded, per_token=False)
            if not out:
                per_model = max(per_model, _resident_bytes() - before)
            out[padded] = parts
        return out

    def _batch_model(self, length: int) -> _StaticBatches | None:
        """The batch model for parts of ``length`` tokens: the shortest shape that holds them, if it :func:`serves`
        them (pads them little enough to be faster than the dynamic model); ``None`` otherwise."""
        i = bisect.bisect_left(self._batch_shapes, length)
        if i == len(self._batch_shapes) or not serves(self._batch_shapes[i], length):
            return None
        return self.batch_static[self._batch_shapes[i]]

    def _static_model(self, length: int) -> _StaticModel | None:
        """The static model for one input of ``length`` tokens (the shortest shape that holds it), or ``None``
        beyond the compiled ones."""
        i = bisect.bisect_left(self._shapes, length)
        return self.static[self._shapes[i]] if i < len(self._shapes) else None

    def _save_files(self, directory: Path) -> None:
        import openvino as ov

        ov.save_model(self.ov_model, str(directory / XML), compress_to_fp16=False)


def float_weight_bytes(ov_model) -> int:
    """Bytes of ``ov_model``'s constants at the float type they are computed in: a constant stored compressed and
    decompressed by a ``Convert`` (NNCF's int8 weights, f16 ones) counts at the ``Convert``'s output type.

    Why not the saved size: a compiled copy of an int8 model is not int8-sized. On MiniLM-L6 (23 MB of int8
    constants saved, 90 MB at f32) each batch-1 static model of ``openvino-int8`` added ~82 MB to the process (the
    embedding table decompressed, the matmul weights repacked), against ~35 MB for ``openvino-bf16`` (90 MB of f32
    constants); counted at the saved size, the default ``static_memory_mb`` of 512 let 8 int8 copies (~660 MB)
    through. The float size is an upper bound for both.

    Example:
        >>> float_weight_bytes(artifact.ov_model)  # doctest: +SKIP
        90267169
    """
    total = 0
    for op in ov_model.get_ops():
        if op.get_type_name() != "Constant":
            continue
        size = op.get_output_element_type(0).size
        users = [port.get_node() for port in op.output(0).get_target_inputs()]
        if users and all(u.get_type_name() == "Convert" for u in users):
            size = max(size, *(u.get_output_element_type(0).size for u in users))
        total += int(np.prod(op.get_output_shape(0))) * size
    return total


def copy_bytes(float_bytes: float, config: OpenVINOConfig, precision: str | None = None) -> float:
    """An upper bound on the bytes one compiled copy of a model's weights holds when it runs in ``precision``
    (default: ``config.precision``): their float size (``float_bytes``, :func:`float_weight_bytes`), halved in bf16
    (an int8 model keeps its float parts in f32).

    On MiniLM-L6 (90 MB at f32) a batch-1 static model added ~35 MB in bf16, ~52 MB in f32 and ~82 MB in int8.

    Example:
        >>> copy_bytes(90e6, OpenVINOConfig(precision="bf16")), copy_bytes(90e6, OpenVINOConfig(quantize="static"))
        (45000000.0, 90000000.0)
    """
    bf16 = (precision or config.precision) == "bf16" and config.quantize == "none"
    return float_bytes / (2 if bf16 else 1)


def static_copies(float_bytes: float, config: OpenVINOConfig) -> int:
    """How many batch-1 static models (each a copy of the weights, :func:`copy_bytes`) ``config.static_memory_mb``
    holds.

    Example:
        >>> static_copies(90e6, OpenVINOConfig(precision="bf16")), static_copies(90e6, OpenVINOConfig())
        (11, 5)
    """
    return int(config.static_memory_mb * 1e6 // max(copy_bytes(float_bytes, config), 1))


def _resident_bytes() -> int:
    """This process's resident memory in bytes."""
    import psutil

    return psutil.Process().memory_info().rss


def _build(model: nn.Module, config: OpenVINOConfig, ctx) -> OpenVINOArtifact:
    import openvino as ov

    check_exportable(model, ctx.facts)
    # straight from PyTorch (OpenVINO's own frontend gives a leaner graph than an ONNX detour), traced on a
    # padded batch of mixed lengths so the attention mask stays in the graph
    example = dict(zip(ctx.facts.input_names, dummy_batch(ctx.facts), strict=True))
    ctx.stage("converting to OpenVINO")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        ov_model = ov.convert_model(_Positional(model, ctx.facts.input_names, ctx.facts.output).eval(),
                                    example_input=example)
    for inp, name in zip(ov_model.inputs, ctx.facts.input_names, strict=True):
        inp.get_tensor().set_names({name})
    if config.quantize == "static":
        ctx.stage(f"quantising to int8 with NNCF on {ctx.calibration_count(config.calibration_size)} sentences")
        ov_model = quantize_nncf(ov_model, ctx.calibration(config.calibration_size))
    # chosen from the sample's lengths (tokenized once), recorded so a load compiles the same
    chose_batches = config.batch_shapes is None  # then timed against the dynamic model once compiled
    if config.static_shapes is None or config.batch_shapes is None:
        lengths, longest = ctx.token_lengths(), ctx.facts.max_length
        if config.static_shapes is None:  # no more than the memory budget holds
            count = min(config.max_static, static_copies(float_weight_bytes(ov_model), config))
            config = dataclasses.replace(config, static_shapes=choose_static_shapes(lengths, count, longest))
        if config.batch_shapes is None:
            shapes = choose_batch_shapes(lengths, config.max_batch_static, longest) if batches_gain(config) else ()
            config = dataclasses.replace(config, batch_shapes=shapes)
    n = len(config.static_shapes or ()) + len(config.batch_shapes or ())
    ctx.stage("compiling for the CPU" + (f" (and up to {n} shape-specialised models)" if n else ""))
    art = OpenVINOArtifact(ov_model, config, ctx.facts, ctx.tokenizer)
    if (note := precision_note(art.compiled, config.precision)) is not None:
        art.build_notes.append(note)
        ctx.stage(note)
    if chose_batches and art.batch_static:
        ctx.stage(f"timing {len(art.batch_static)} batch models against the dynamic model on the sample's batches")
        choice = keep_faster_batches(art, ctx.tokenizer, ctx.calibration_texts, lengths=lengths)
        if choice is not None:
            art.build_notes.append(choice.describe())
            ctx.stage(art.build_notes[-1])
    return art


def ran_precision(compiled) -> str | None:
    """The precision OpenVINO's CPU plugin settled on for ``compiled``'s floating-point work (``"f32"``, ``"bf16"``,
    ``"f16"``), which is not always the one asked: it runs ``f16`` on ARM and ``f32`` on an x86 CPU without bf16
    kernels when ``bf16`` was asked. ``None`` where the plugin does not say."""
    try:
        value = compiled.get_property("INFERENCE_PRECISION_HINT")
    except Exception:  # a plugin that does not report it (openvino raises its own RuntimeError subclasses)
        return None
    name = value.get_type_name() if hasattr(value, "get_type_name") else str(value)
    return {"bfloat16": "bf16", "float32": "f32", "float16": "f16"}.get(name, name)


def precision_note(compiled, asked: str) -> str | None:
    """A build note where OpenVINO runs another precision than ``asked`` on this CPU, else ``None``: the artifact is
    named and configured by what was asked, and its fidelity and speed (checked on what really runs) would otherwise
    read as the asked precision's.

    Example:
        >>> class Compiled:
        ...     def get_property(self, name):
        ...         return "f16"
        >>> precision_note(Compiled(), "bf16")
        'OpenVINO runs f16 on this CPU where bf16 was asked (its CPU plugin has no bf16 kernels here); the fidelity and speed checks measured f16'
    """
    ran = ran_precision(compiled)
    if ran is None or ran == asked:
        return None
    return (f"OpenVINO runs {ran} on this CPU where {asked} was asked (its CPU plugin has no {asked} kernels here); "
            f"the fidelity and speed checks measured {ran}")


@dataclasses.dataclass
class BatchChoice:
    """What the build measured for :func:`keep_faster_batches`: ms per timing round on the sample's batches
    (medians over rounds), and what it kept."""

    batches: int  # full batches of ``batch`` rows timed per round
    batch: int
    rounds: int
    batch_models_ms: float
    dynamic_ms: float
    kept: Literal["batch models", "dynamic"]

    @property
    def speedup(self) -> float:
        """The batch models' speed-up over the dynamic model (> 1: faster)."""
        return self.dynamic_ms / self.batch_models_ms if self.batch_models_ms > 0 else float("inf")

    def describe(self) -> str:
        """One line with the figures and the outcome, as the build reports and the artifact keeps it.

        Example:
            >>> BatchChoice(4, 32, 3, 50.0, 54.0, "batch models").describe()
            'batch models x1.08 the dynamic model on 4 sample batches of 32 (3 rounds): kept'
        """
        outcome = "kept" if self.kept == "batch models" else "dropped, batches run dynamic"
        return (f"batch models x{self.speedup:.2f} the dynamic model on {self.batches} sample batches of {self.batch} "
                f"({self.rounds} rounds): {outcome}")


CHOICE_MARGIN = 0.01  # the batch models must be this much faster to keep: they cost resident memory (~30–150 MB each)


def keep_faster_batches(art: OpenVINOArtifact, tokenizer, texts: Sequence[str], *, lengths: Sequence[int] | None = None,
                        rounds: int = 3, max_batches: int = 4, budget_s: float = 5.0,
                        clock=time.perf_counter) -> BatchChoice | None:
    """Time the sample's length-bucketed batches on ``art``'s shape-specialised batch models and on its dynamic
    model, interleaved, and drop the batch models (recording ``batch_shapes=()`` in its config, so a load compiles
    none) unless they are more than ``CHOICE_MARGIN`` faster.

    Why measured: what static shapes save (OpenVINO's per-call shape work) against what they cost (padding up to
    the next shape, and resident memory) depends on the model, its lengths and the CPU's kernels. On MiniLM-L6,
    2 threads (``benchmarks/openvino_batch_shapes.py``) full batches of 32 gained x1.17 in int8 and x1.05 in bf16 on
    intents on a Zen 5, and 1–3% in bf16 on paragraphs on a Zen 4, where a batch padded by 7–11% lost 4–7%; in f32
    on an AVX2 Zen 3 they lost (:func:`batches_gain` leaves them out there unasked). Batches are of ``batch_rows``
    per stream (one whole round of parts: 32 by default), up to ``max_batches`` full ones that a batch model runs,
    spread over the lengths; each round times every batch both ways, in alternating order, until ``rounds`` rounds
    or, after the first, ``budget_s`` seconds (a large model's batches are slow). Sets ``art.batch_choice``; returns
    it, or ``None`` where no full batch of the sample would run on a batch model (they are then kept as chosen).
    ``lengths``: the texts' token lengths, truncated at the model's max length, where the caller has them (the build
    does: it chose the shapes from them); tokenized here otherwise.

    Example:
        >>> choice = keep_faster_batches(art, tokenizer, sample)  # doctest: +SKIP
        >>> choice.kept, round(choice.speedup, 2)  # doctest: +SKIP
        ('batch models', 1.03)
    """
    cfg = art.optimize_config
    size = cfg.batch_rows * len(next(iter(art.batch_static.values())).requests)  # one whole round of parts
    if lengths is None:
        lengths = [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=art.facts.max_length)["input_ids"]]
    full = [b for b in length_buckets(lengths, size) if len(b) == size]
    usable = [b for b in full if art._batch_model(max(lengths[i] for i in b)) is not None]
    if not usable:
        return None
    k = min(max_batches, len(usable))
    picked = [usable[i] for i in sorted({round(j * (len(usable) - 1) / max(1, k - 1)) for j in range(k)})]  # spread
    batches = [{name: a.astype(np.int64) for name, a in tokenizer([texts[i] for i in b], padding=True, truncation=True,
                max_length=art.facts.max_length, return_tensors="np").items() if name in art.facts.input_names}
               for b in picked]
    ways = {"batch models": True, "dynamic": False}
    for use in ways.values():  # warm both (first calls allocate)
        art._forward(batches[0], batch_models=use)
    times: dict[str, list[float]] = {w: [] for w in ways}
    start = clock()
    for r in range(rounds):
        if r and clock() - start > budget_s:
            break
        spent = dict.fromkeys(ways, 0.0)
        for j, b in enumerate(batches):
            order = list(ways) if (r + j) % 2 == 0 else list(reversed(ways))
            for way in order:
                t = clock()
                art._forward(b, batch_models=ways[way])
                spent[way] += clock() - t
        for way, s in spent.items():
            times[way].append(s * 1000)
    med = {w: statistics.median(ts) for w, ts in times.items()}
    keep = med["dynamic"] > med["batch models"] * (1 + CHOICE_MARGIN)
    art.batch_choice = BatchChoice(len(batches), size, len(times["dynamic"]), med["batch models"], med["dynamic"],
                                   "batch models" if keep else "dynamic")
    if not keep:
        art.batch_static, art._batch_shapes = {}, []
        art.optimize_config = dataclasses.replace(cfg, batch_shapes=())
    return art.batch_choice


def batches_gain(config: OpenVINOConfig) -> bool:
    """Whether shape-specialised batch models are chosen by default for ``config``: only where batches run in bf16
    or int8. They gained there (MiniLM-L6, 2 threads, ``benchmarks/openvino_batch_shapes.py`` on an AVX512-BF16
    EPYC: int8 x1.17 and x1.02, bf16 x1.05 and x1.01 on intents and paragraphs); batches in f32 lost to the dynamic
    model (``--presets openvino`` on an AVX2 Zen 3, BENCHMARKS.md): f32 matmuls take long enough that the per-call
    shape work static shapes spare weighs less than the padding they add.

    Example:
        >>> batches_gain(OpenVINOConfig(precision="bf16")), batches_gain(OpenVINOConfig())
        (True, False)
    """
    return config.quantize != "none" or (config.batch_precision or config.precision) != "f32"


def choose_static_shapes(lengths: Sequence[int], max_static: int = 8, max_length: int = 512) -> tuple[int, ...]:
    """Input lengths worth a shape-specialised batch-1 model, chosen from the token lengths of a sample.

    Shapes run from the grid point that holds the sample's 25th percentile up to the one that holds its longest
    input, on the finer of two grids whose run fits in ``max_static`` models: an eighth-octave one (multiples of 4
    up to 32 tokens, of 8 up to 128, of 16 up to 256, ...: an input padded by at most ~12%), else a quarter-octave one
    (multiples of 4 up to 32, of 8 up to 64, of 16 up to 128, ...: at most ~25%), whose shortest ``max_static`` are
    taken where even it does not fit.

    Why from the sample: each model holds its own copy of the weights, so models for lengths the traffic
    never has cost memory, and inputs longer than the last model fall to the dynamic-shape model, which is
    1.4–2x slower at batch 1. Measured by ``benchmarks/openvino_static.py`` (MiniLM-L6, 2 threads): on
    CLINC150 the median matched every multiple of 4 up to 32 (within noise) with half the models; on SST-2,
    whose sentences run past 32 tokens, p90 fell from 3.8 to 3.0 ms (int8). Why the finer grid first: on paragraphs
    of 40–120 tokens (Zen 4, bf16) multiples of 8 from 72 to 128 ran x1.05 faster than the quarter-octave
    80/96/112/128 in two runs (int8 level), where 8 shapes at the sample's own lengths (51, 67, 77, ...), padding
    less still, ran slower than either: the kernels favour lengths in multiples of 8, so the grid does not go finer
    than that past 32 tokens.

    Example:
        >>> choose_static_shapes([7, 9, 10, 11, 12, 14, 20])
        (12, 16, 20)
        >>> choose_static_shapes([70, 90, 100, 122])
        (72, 80, 88, 96, 104, 112, 120, 128)
        >>> choose_static_shapes([50, 55, 70, 90, 122])  # 56 to 128 in steps of 8 would be 10 models
        (56, 64, 80, 96, 112, 128)
    """
    if not lengths or max_static <= 0:
        return ()
    for per_octave in (8, 4):
        grid, start, stop = _covering(lengths, 0.25, per_octave, max_length)
        if stop - start <= max_static:
            break
    return tuple(grid[start:stop][:max_static])


STATIC_COST = 0.9  # a token of a batch on a shape-specialised model, in tokens of the dynamic model's time
SHAPE_SHARE = 0.002  # a batch model is worth its memory only if it spares at least this share of the sample's work


def serves(shape: int, length: int) -> bool:
    """Whether a batch of ``length`` tokens runs faster padded to a batch model of ``shape`` tokens than on the
    dynamic model: ``STATIC_COST * shape <= length`` (padding of at most ~11%; a shape below 10 tokens serves
    only its own length).

    Why 0.9: on MiniLM-L6 (2 threads, ``benchmarks/openvino_batch_shapes.py``) length-bucketed intents ran x1.15
    faster in bf16 and x1.18 in int8 on batch models of their exact lengths than on the dynamic model (Zen 4), and
    paragraphs padded by up to an eighth gained x1.05 (bf16) and x1.17 (int8): a token on a batch model costs
    0.85–0.9 of one on the dynamic model, so padding past ~11% loses what the shape saves.

    Example:
        >>> serves(12, 11), serves(13, 11), serves(88, 80), serves(90, 80)
        (True, False, True, False)
    """
    return shape >= length and STATIC_COST * shape <= length


def choose_batch_shapes(lengths: Sequence[int], max_count: int = 8, max_length: int = 512) -> tuple[int, ...]:
    """Token lengths worth shape-specialised batch models (``OpenVINOConfig.batch_shapes``), from a sample's lengths.

    The at most ``max_count`` lengths that spare the sample the most work under :func:`serves`' cost model: a text
    of ``l`` tokens costs ``STATIC_COST * s`` on the shortest chosen shape ``s`` that :func:`serves` it, ``l`` on
    the dynamic model; a shape is chosen only where it spares at least ``SHAPE_SHARE`` of the sample's work (each
    holds its own compiled copy of the model: ~35 MB in bf16, ~85 MB in int8 for MiniLM-L6). Shapes sit at lengths
    the sample has (one that holds none would only pad more). Exact, by dynamic programming over the sample's
    distinct lengths.

    Why not a fixed grid: on CLINC150's length-bucketed batches (MiniLM-L6, bf16, Zen 4,
    ``benchmarks/openvino_batch_shapes.py``) the earlier grid of steps of 4 (8, 12, ..., 24) padded the batches
    enough to be level with the dynamic model (x1.03), where the 8 shapes this rule places ran x1.08 (int8: x1.05 and
    x1.16), and a model at every length x1.15 (int8 x1.18) at three times the memory.

    Example:
        >>> choose_batch_shapes([7, 9, 10, 10, 11, 11, 11, 12, 12, 14, 20])
        (7, 9, 10, 11, 12, 14, 20)
        >>> choose_batch_shapes([7, 9, 10, 10, 11, 11, 11, 12, 12, 14, 20], max_count=3)
        (11, 12, 20)
    """
    if not lengths or max_count <= 0:
        return ()
    counts = collections.Counter(min(n, max_length) for n in lengths)
    vals = sorted(counts)
    max_count = min(max_count, len(vals))  # a shape sits at one of them
    penalty = SHAPE_SHARE * sum(n * c for n, c in counts.items())
    # best[k][j]: least cost (work plus penalty per shape) of lengths vals[j:] with at most k shapes; pick: the
    # index of the shape that serves vals[j] (then vals[j..t] on it), or None (vals[j] on the dynamic model)
    best = [[0.0] * (len(vals) + 1) for _ in range(max_count + 1)]
    pick: list[list[int | None]] = [[None] * len(vals) for _ in range(max_count + 1)]
    for k in range(max_count + 1):
        for j in range(len(vals) - 1, -1, -1):
            cost: float = counts[vals[j]] * vals[j] + best[k][j + 1]
            choice: int | None = None
            served = 0
            for t in range(j, len(vals) if k else j):  # with no shape left, vals[j] runs dynamic
                if not serves(vals[t], vals[j]):
                    break
                served += counts[vals[t]]
                c = served * STATIC_COST * vals[t] + penalty + best[k - 1][t + 1]
                if c < cost:
                    cost, choice = c, t
            best[k][j], pick[k][j] = cost, choice
    shapes: list[int] = []
    k, j = max_count, 0
    while j < len(vals):
        t = pick[k][j]
        if t is None:
            j += 1
        else:
            shapes.append(vals[t])
            k, j = k - 1, t + 1
    return tuple(shapes)


def _covering(lengths: Sequence[int], quantile: float, per_octave: int, max_length: int) -> tuple[list[int], int, int]:
    """A grid of token lengths with ``per_octave`` steps per doubling (at least 4 tokens apart, 8 from 32 tokens on;
    ``max_length`` last), and the slice of it from the point that holds ``lengths``' ``quantile`` to the one that
    holds the longest of them."""
    ordered = sorted(lengths)
    low = ordered[int((len(ordered) - 1) * quantile)]
    high = min(ordered[-1], max_length)
    grid, n = [], 4
    while n <= max_length:
        grid.append(n)
        n += max(4 if n < 32 else 8, (1 << (n.bit_length() - 1)) // per_octave)
    if grid[-1] < max_length:
        grid.append(max_length)
    return grid, bisect.bisect_left(grid, min(low, high)), bisect.bisect_left(grid, high) + 1


def quantize_nncf(ov_model, batches: list[dict]):
    """int8 MatMuls with NNCF's transformer scheme, activation ranges calibrated on ``batches``.

    ``ModelType.TRANSFORMER`` applies SmoothQuant, keeps softmax, layer norms and the residual sums in
    float, and quantises weights per output channel; fast bias correction follows. Every batch is used.
    """
    # NNCF logs and draws its progress bars on stdout, where `ember ... --json` promises its JSON line: stderr
    with contextlib.redirect_stdout(sys.stderr):
        import nncf  # optimize() checked it is installed (requires_for below)

        data = nncf.Dataset([{k: np.asarray(v, dtype=np.int64) for k, v in b.items()} for b in batches])
        # subset_size counts dataset items, here batches: all of them
        return nncf.quantize(ov_model, data, model_type=nncf.ModelType.TRANSFORMER, subset_size=max(1, len(batches)))


def _load(directory: Path, config: OpenVINOConfig, facts: ModelFacts, tokenizer) -> OpenVINOArtifact:
    try:
        ov_model = shared_core().read_model(str(directory / XML))
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
        raise ArtifactError(f"{directory / XML} cannot be read by OpenVINO ({exc}); re-create the artifact") from exc
    return OpenVINOArtifact(ov_model, config, facts, tokenizer)


register(OpenVINOConfig, load=_load, requires=(("openvino", INSTALL),),
         requires_for=lambda c: (("nncf", INSTALL),) if c.quantize == "static" else ())(_build)
