"""The fp32 (or bf16) floor: the model's dense matmuls alone, timed beside the engines that contain them (issue #19's
faithful cells, on a CPU without bf16 or, with ``--precision bf16``, on one with it).

On a CPU without bf16 (AVX2-only x86, most ARM) the faithful tier computes in fp32, and every fp32 engine - PyTorch,
ONNX Runtime, OpenVINO, ember's presets built on them - spends most of its time in the same dense matmuls (Q, K, V,
attention output, FFN in and out; 4·H² + 2·H·I multiply-adds per token and layer) on one of three sgemm kernel
libraries. No engine can run the model faster than those matmuls run alone. This script times that floor through the
same harness and rounds as the engines, on the shapes the engines are given (batch 1: one unpadded input; batch
``--batch``: the harness's length-bucketed padded batches), once per kernel library:

- ``dense-matmuls-torch``: ``torch.nn.functional.linear`` (PyTorch eager's own call, MKL / oneDNN sgemm);
- ``dense-matmuls-onnxruntime``: an ONNX graph of the same ``MatMul`` nodes (MLAS sgemm, weights prepacked);
- ``dense-matmuls-openvino``: the same graph compiled by OpenVINO for its CPU plugin with the f32 precision hint.

Each is the layer's six weight matrices chained (x·Wq·Wk·Wv·Wo·Wi·Wo2, every layer): exactly the engines' dense
multiply-adds on the same (tokens x width) shapes, without the attention scores, softmax, biases, GELU, LayerNorm or
embeddings, so it is a lower bound for each library (its output is not the model's; its cosine is meaningless). Beside
them: PyTorch fp32 (the reference), ember's fp32 presets (``--presets``) and the fp32 peers that set the faithful bar
in ``peers.py`` (``--peers``). Then the arithmetic: issue #19's faithful targets (batch 1 >= 1.25x and throughput
>= 1.10x the best fp32 peer) as times, against the floor: what is left for all the non-matmul work, and how much of it
ember and the peer spend. A negative budget means no fp32 engine on these kernels can meet the target on this CPU.

On a CPU with bf16 (AVX512-BF16, AMX) the faithful tier's best peer is OpenVINO, which compiles in bf16 there by
default, and ember's best faithful variant is the ``openvino-bf16`` preset: ``--precision bf16`` asks the same question
of the bf16 kernels. The floors are then the same chain in bf16 (fp32 in and out, as the engines take and give it):

- ``dense-matmuls-torch``: the weights converted once to bfloat16, the input cast to it, ``F.linear`` (oneDNN's bf16
  gemm), the output cast back to float32;
- ``dense-matmuls-openvino``: the same graph compiled with the bf16 precision hint.

ONNX Runtime has no bf16 ``MatMul`` kernel on CPU (its CPU provider refuses the node: "Could not find an
implementation for MatMul(13)"), so there is no ONNX Runtime bf16 floor. The defaults become ember's faithful bf16
presets (``openvino-bf16``, and ``compile-bf16`` on torch's bf16 kernels) and the peers that compute in bf16 on such a
CPU (``openvino``, ``st-openvino``). A CPU without bf16 is refused: its bf16 is emulated, slower than fp32, so it has no
bf16 floor to time.

    flock /work/notes/bench.lock python benchmarks/fp32_floor.py                        # CLINC150 test (intents)
    flock /work/notes/bench.lock python benchmarks/fp32_floor.py --paragraphs --n 500   # peers.py's long workload
    flock /work/notes/bench.lock python benchmarks/fp32_floor.py --precision bf16       # a CPU with bf16: intents
    flock /work/notes/bench.lock python benchmarks/fp32_floor.py --paragraphs --n 500 --precision bf16
    python benchmarks/fp32_floor.py --data my.csv --text-column body --sample-data my_train.csv --peers openvino

The last line is JSON: every variant's figures, the floor per library, the targets and the budgets.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from ember.bench.rows import data_options

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from peers import (  # noqa: E402  (the workloads' and peers' one definition)
    LONG_DATA,
    TARGETS,
    ab_interleaved,
    ab_model_and_rows,
    build_peers,
    dense_shapes,
    ember_engine,
    workload_options,
)

CLINC = HERE.parent / ".." / "shared" / "data" / "clinc150"
FLOOR_PREFIX = "dense-matmuls-"
MAX_TOKENS = 64 * 512  # the most tokens a floor takes in one call (batch x padded length)
PEERS = ("optimum-ort-O2", "openvino", "st-openvino", "st-onnx")
PRECISIONS = ("fp32", "bf16")
# per precision: ember's faithful presets on those kernels, and the peers that compute in that precision on such a CPU
DEFAULT_PRESETS = {"fp32": "onnx,openvino", "bf16": "openvino-bf16,compile-bf16"}
DEFAULT_PEERS = {"fp32": ",".join(PEERS), "bf16": "openvino,st-openvino"}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_options(ap, data=CLINC, split="test")
    workload_options(ap, sample="sentences ember's presets are verified on")
    ap.add_argument("--precision", choices=PRECISIONS, default="fp32",
                    help="the floor's precision: fp32 (a CPU without bf16) or bf16 (a CPU with AVX512-BF16 or AMX)")
    ap.add_argument("--presets", default=None, help="ember's presets, comma-separated ('' for none; default: "
                    + "; ".join(f"{p} {d}" for p, d in DEFAULT_PRESETS.items()) + ")")
    ap.add_argument("--peers", default=None, help=f"peers, comma-separated, of {', '.join(PEERS)} (default: "
                    + "; ".join(f"{p} {d}" for p, d in DEFAULT_PEERS.items()) + ")")
    ap.add_argument("--n", type=int, default=2000, help="texts per batch pass")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--latency-samples", type=int, default=300, help="single inputs timed per round")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds (after one warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--optimum-python", default="/tmp/optimum-venv/bin/python", help="as in peers.py")
    ap.add_argument("--st-openvino-python", default="/tmp/st-ov-venv/bin/python", help="as in peers.py")
    args = ap.parse_args(argv)
    args.presets = DEFAULT_PRESETS[args.precision] if args.presets is None else args.presets
    args.peers = DEFAULT_PEERS[args.precision] if args.peers is None else args.peers
    unknown = [p for p in filter(None, args.peers.split(",")) if p not in PEERS]
    if unknown:
        ap.error(f"--peers: {', '.join(unknown)} not one of {', '.join(PEERS)}")
    if args.rounds < 1 or args.n < 1 or args.latency_samples < 1:
        ap.error("--rounds, --n and --latency-samples must be >= 1")
    if args.precision == "bf16":
        from ember.hardware import detect

        cpu = detect()
        if not cpu.native_bf16:
            ap.error(f"--precision bf16: this CPU lacks bf16 ({cpu.summary()}); its bf16 is emulated, slower than "
                     "fp32, so there is no bf16 floor to time here: use --precision fp32")
    args.long_data = args.long_data or str(LONG_DATA)  # the default the workload and the side venvs' calibration take
    return args


# ---- the floor: the dense matmuls alone ---------------------------------------------------------------------------

def chain_weights(config, seed: int = 0) -> list[np.ndarray]:
    """Random (in, out) fp32 matrices of :func:`dense_shapes`, scaled by 1/sqrt(in) so that 36 products neither
    overflow nor sink into denormals (which would time another kernel path); the values do not change the work."""
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32) for k, n in dense_shapes(config)]


def torch_floor(weights: list[np.ndarray], threads: int, precision: str = "fp32"):
    """The chain in PyTorch eager, each product as ``nn.Linear`` makes it (``F.linear`` on an (out, in) weight). In
    bf16 the weights are converted once (as the ``bf16`` preset converts the Linear layers') and the fp32 input is cast
    to bf16 and the result back to fp32 on every call, as a bf16 engine takes and gives them."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    ws = [torch.from_numpy(np.ascontiguousarray(w.T)).to(dtype) for w in weights]  # nn.Linear's (out, in) layout

    def run(y):
        with torch.inference_mode():
            y = y.to(dtype)
            for w in ws:
                y = torch.nn.functional.linear(y, w)
        return y.float()

    return _over_tokens(run, weights[0].shape[0], _as_tensor, lambda y: y)


def onnx_floor_model(weights: list[np.ndarray]) -> bytes:
    """An ONNX graph of the chain: ``x`` (tokens, width) through one ``MatMul`` per weight (constant initialisers)."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, prev = [], [], "x"
    for j, w in enumerate(weights):
        inits.append(numpy_helper.from_array(w, f"w{j}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{j}"], [f"y{j}"]))
        prev = f"y{j}"
    g = helper.make_graph(nodes, "dense_matmuls", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", weights[0].shape[0]])],
                          [helper.make_tensor_value_info(prev, TensorProto.FLOAT, ["n", weights[-1].shape[1]])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def onnxruntime_floor(weights: list[np.ndarray], threads: int):
    """The chain in ONNX Runtime, with the session settings ember's and the peers' sessions get."""
    from ember.optimize.backends.onnxruntime import make_session

    sess = make_session(onnx_floor_model(weights), threads)
    return _over_tokens(lambda x: sess.run(None, {"x": x})[0], weights[0].shape[0], lambda x: x, _as_tensor)


def openvino_floor(weights: list[np.ndarray], threads: int, precision: str = "fp32"):
    """The chain compiled by OpenVINO's CPU plugin (the f32 or bf16 precision hint, the latency hint, ``threads``
    threads); the graph is the same fp32 one either way, as the ``openvino-bf16`` preset's is."""
    import openvino as ov

    core = ov.Core()
    with tempfile.TemporaryDirectory(prefix="ember-floor-") as tmp:
        path = Path(tmp) / "floor.onnx"
        path.write_bytes(onnx_floor_model(weights))
        compiled = core.compile_model(core.read_model(str(path)), "CPU", {
            "INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[precision], "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": str(threads)})
    request = compiled.create_infer_request()
    out = compiled.output(0)
    return _over_tokens(lambda x: np.array(request.infer({0: x})[out], copy=True), weights[0].shape[0], lambda x: x,
                        _as_tensor)


FLOORS = {  # precision -> library -> the floor's factory, ``make(weights, threads)``
    "fp32": {"torch": torch_floor, "onnxruntime": onnxruntime_floor, "openvino": openvino_floor},
    # no ONNX Runtime: its CPU provider has no bf16 MatMul kernel (the module docstring)
    "bf16": {"torch": functools.partial(torch_floor, precision="bf16"),
             "openvino": functools.partial(openvino_floor, precision="bf16")},
}


def _as_tensor(y: np.ndarray):
    import torch

    return torch.from_numpy(y)


def floor_input(width: int) -> np.ndarray:
    """The fixed random (``MAX_TOKENS``, width) fp32 input every floor slices its calls from."""
    return (np.random.default_rng(1).standard_normal((MAX_TOKENS, width)) * 0.5).astype(np.float32)


def _over_tokens(run, width: int, to_input, to_tensor):
    """An engine-shaped callable (``fn(**tokenizer tensors)`` -> (B, T, width)) that runs ``run`` on a (B·T, width)
    slice of :func:`floor_input`: the floor sees the same token count as the engines, padding included."""
    x = floor_input(width)

    def fn(input_ids, **_):
        b, t = input_ids.shape
        if b * t > MAX_TOKENS:
            raise ValueError(f"a batch of {b}x{t} tokens is over the floor's {MAX_TOKENS}; lower --batch")
        y = to_tensor(run(to_input(x[: b * t])))
        return y.reshape(b, t, -1)

    return fn


# ---- the arithmetic ------------------------------------------------------------------------------------------------

def budgets(results: dict[str, dict], peers: list[str], ours: list[str]) -> dict:
    """Issue #19's faithful targets as times against the floor. ``results``: name -> ``{"p50_ms", "sent_s"}``.

    Batch 1: the target is the best peer's p50 / 1.25; the budget is what that leaves after the fastest library's
    floor for everything else. Throughput: per-sentence times (1 / sentences per second) likewise against 1.10x the
    best peer. ``overhead``: each named engine's time beyond the floor. ``reachable``: the budget is positive."""
    floors = {n: r for n, r in results.items() if n.startswith(FLOOR_PREFIX)}
    have_peers = [p for p in peers if p in results]
    if not floors or not have_peers:
        raise ValueError("the arithmetic needs at least one floor and one peer that ran")
    floor_p50 = min(r["p50_ms"] for r in floors.values())
    floor_tp = max(r["sent_s"] for r in floors.values())
    peer_p50 = min(have_peers, key=lambda p: results[p]["p50_ms"])
    peer_tp = max(have_peers, key=lambda p: results[p]["sent_s"])
    target_p50 = results[peer_p50]["p50_ms"] / TARGETS["p50_vs_peer"]
    target_tp = results[peer_tp]["sent_s"] * TARGETS["throughput_vs_peer"]
    per_sentence = lambda tp: 1000.0 / tp  # noqa: E731  (ms)
    named = [*have_peers, *[o for o in ours if o in results]]
    return {
        "floor": {"p50_ms": floor_p50, "sent_s": floor_tp,
                  "p50_library": min(floors, key=lambda n: floors[n]["p50_ms"]).removeprefix(FLOOR_PREFIX),
                  "throughput_library": max(floors, key=lambda n: floors[n]["sent_s"]).removeprefix(FLOOR_PREFIX)},
        "batch1": {"peer": peer_p50, "peer_p50_ms": results[peer_p50]["p50_ms"], "target_p50_ms": target_p50,
                   "budget_ms": target_p50 - floor_p50, "reachable": target_p50 > floor_p50,
                   "overhead_ms": {n: results[n]["p50_ms"] - floor_p50 for n in named}},
        "throughput": {"peer": peer_tp, "peer_sent_s": results[peer_tp]["sent_s"], "target_sent_s": target_tp,
                       "budget_ms_per_sentence": per_sentence(target_tp) - per_sentence(floor_tp),
                       "reachable": target_tp < floor_tp,
                       "overhead_ms_per_sentence": {n: per_sentence(results[n]["sent_s"]) - per_sentence(floor_tp)
                                                    for n in named}},
    }


def describe(b: dict, ours: list[str], precision: str = "fp32") -> list[str]:
    """The arithmetic in words, one line per target; ``precision`` is the floor's."""
    f, one, tp = b["floor"], b["batch1"], b["throughput"]
    ember = [o for o in ours if o in one["overhead_ms"]]

    def verdict(reachable: bool) -> str:
        return (" -> reachable only by cutting that work" if reachable
                else f" -> no {precision} engine on these kernels can meet it")

    lines = [
        f"batch 1: {TARGETS['p50_vs_peer']:.2f}x {one['peer']} ({one['peer_p50_ms']:.2f} ms) needs {one['target_p50_ms']:.2f} ms; the dense "
        f"matmuls alone take {f['p50_ms']:.2f} ms ({f['p50_library']}), leaving {one['budget_ms']:+.2f} ms for everything "
        f"else; beyond the floor {one['peer']} spends {one['overhead_ms'][one['peer']]:.2f} ms"
        + "".join(f", {o} {one['overhead_ms'][o]:.2f} ms" for o in ember)
        + verdict(one["reachable"]),
        f"throughput: {TARGETS['throughput_vs_peer']:.2f}x {tp['peer']} ({tp['peer_sent_s']:.1f} sent/s) needs {tp['target_sent_s']:.1f} sent/s; the "
        f"dense matmuls alone run {f['sent_s']:.1f} ({f['throughput_library']}), leaving {tp['budget_ms_per_sentence']:+.3f} "
        f"ms a sentence for everything else; beyond the floor {tp['peer']} spends "
        f"{tp['overhead_ms_per_sentence'][tp['peer']]:.3f}"
        + "".join(f", {o} {tp['overhead_ms_per_sentence'][o]:.3f}" for o in ember)
        + verdict(tp["reachable"]),
    ]
    return lines


# ---- the run -------------------------------------------------------------------------------------------------------

def build_engines(args, model, tok, sample: list[str], tmp: Path) -> tuple[dict, list[str], list[str]]:
    """The floors, ember's presets and the peers (``name -> engine``; the side venvs' models written under ``tmp``),
    and the names of the peers and of ember's."""
    engines: dict = {f"{FLOOR_PREFIX}{lib}": make(chain_weights(model.config), args.threads)
                     for lib, make in FLOORS[args.precision].items()}
    ours = []
    for name in filter(None, args.presets.split(",")):
        try:
            engines[f"ember-{name}"] = ember_engine(model, tok, name, sample, args.threads)
        except Exception as exc:  # e.g. compile-bf16's inductor build on a CPU or compiler it fails on
            print(f"ember-{name} not run: its build failed ({type(exc).__name__}: {exc})", flush=True)
            continue
        ours.append(f"ember-{name}")
    wanted = set(filter(None, args.peers.split(",")))
    errors: dict[str, str] = {}
    built, _ = build_peers(model, args, tmp, wanted.__contains__, {}, errors)  # peers.py's own peers, as it builds them
    for name, why in errors.items():  # a peer that cannot be built is reported, the rest still run
        print(f"peer {name} not run: {why}", flush=True)
    engines |= built
    return engines, list(built), ours


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    from ember.cli.quiet import quiet
    from ember.hardware import detect

    cpu = detect()
    if cpu.native_bf16 and args.precision == "fp32":
        print(f"note: this CPU has bf16 ({cpu.summary()}): the faithful tier's peers may compute in bf16 there "
              "(OpenVINO does by default), which this fp32 floor does not bound (--precision bf16 times that one)",
              flush=True)
    model, tok, texts, sample, rows = ab_model_and_rows(args, sample="sentences ember's presets are verified on")
    args.model_path = args.model  # the folder peers.py's build_peers loads its peers from
    with quiet(), tempfile.TemporaryDirectory(prefix="ember-floor-") as tmp:
        engines, peers, ours = build_engines(args, model, tok, sample, Path(tmp))
        report = ab_interleaved(model, tok, texts, engines, batch=args.batch, latency_samples=args.latency_samples,
                                rounds=args.rounds, threads=args.threads)
    results = {}
    for r in report.results:
        if r.error:
            print(f"{r.name:>28}: error {r.error}", flush=True)
            continue
        cos = r.fidelity.mean_cosine if r.fidelity and not r.name.startswith(FLOOR_PREFIX) else None
        results[r.name] = {"p50_ms": r.p50, "p90_ms": r.latency_ms["p90"], "sent_s": r.throughput, "cosine": cos}
        print(f"{r.name:>28}: p50 {r.p50:7.2f} ms  p90 {r.latency_ms['p90']:7.2f} ms  {r.throughput:8,.1f} sent/s "
              f"bucketed  " + (f"cosine {cos:.6f}" if cos is not None else "(the matmuls alone: no cosine)"), flush=True)
    b = budgets(results, peers, ours)
    for line in describe(b, ours, args.precision):
        print(line, flush=True)
    print(json.dumps({"benchmark": "fp32_floor", "precision": args.precision, "rows": rows, "n": len(texts),
                      "threads": args.threads, "batch": args.batch, "rounds_timed": args.rounds, "cpu": cpu.summary(),
                      "results": results, "arithmetic": b, "targets": TARGETS}))


if __name__ == "__main__":
    main()
