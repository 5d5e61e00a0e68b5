"""Where an OpenVINO artifact's time goes, per node type: the matmuls against everything else.

Builds each preset through ``ember.optimize`` (sample: 256 training texts of the workload), then compiles its model
for one static shape per case with OpenVINO's per-node counters on (``PERF_COUNT``), runs the same input
``--calls`` times after ``--warmup`` calls, and sums the counters per node type (``FullyConnected`` are the weight
matmuls; ``Subgraph`` nodes are the fused attention and element-wise chains; ``MVN`` the layer norms; ``Reorder``
layout and precision conversions). Cases: batch 1 at the workload's median length, and a batch of 32 at it, compiled for that shape and with dynamic
shapes (the model ember runs batches on).
The fused attention (the ``Subgraph`` that OpenVINO made of a ``ScaledDotProductAttention``) is counted apart as
``Attention``, and each type is printed with the precisions its kernels ran in (``i8`` for the attention of an int8
model whose query and key NNCF quantised). The matmul rate counts every ``FullyConnected`` kind (int8 models run some
as ``FullyConnectedQuantizedLegacy``).
The wall time of the same calls (counters on) is printed beside the node sum; the gap is dispatch between nodes.

    flock /work/notes/bench.lock python benchmarks/serving_profile.py [--presets openvino-bf16,openvino-int8]

The last line is JSON: per preset, workload and case, ms per call by node type and the matmuls' GFLOP/s.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import DATA, LONG_DATA, flop_per_token, long_workload, short_workload  # noqa: E402


def profile(art, batch: int, length: int, calls: int, warmup: int, static: bool = True) -> dict:
    """Node-type times (ms per call) of ``art``'s model compiled for ``[batch, length]`` (or with dynamic shapes, as
    ember runs batches) with counters on, fed a ``[batch, length]`` input."""
    from ember.optimize.backends.openvino import compile_options, shared_core

    model = art.ov_model.clone()
    if static:
        model.reshape({inp.get_any_name(): [batch, length] for inp in model.inputs})
    opts = {**compile_options(art.optimize_config), "PERF_COUNT": "YES"}
    compiled = shared_core().compile_model(model, "CPU", opts)
    request = compiled.create_infer_request()
    feeds = {p.any_name: np.ones((batch, length), dtype=np.int64) for p in compiled.inputs}
    feeds = {k: (v * 7 if k == "input_ids" else v if k == "attention_mask" else v * 0) for k, v in feeds.items()}
    for _ in range(warmup):
        request.infer(feeds)
    totals: dict[str, float] = collections.defaultdict(float)
    precisions: dict[str, set[str]] = collections.defaultdict(set)
    walls = []
    for _ in range(calls):
        t = time.perf_counter()
        request.infer(feeds)
        walls.append(time.perf_counter() - t)
        add_counters(request.get_profiling_info(), totals, precisions, calls)
    return {"wall_ms": statistics.median(walls) * 1000, "node_sum_ms": sum(totals.values()),
            "by_type_ms": dict(sorted(totals.items(), key=lambda kv: -kv[1])),
            "precisions": {k: sorted(v) for k, v in precisions.items()}}


def node_kind(node_type: str, node_name: str) -> str:
    """The type a node's time is counted under: its own, but ``Attention`` for the node that runs a
    ``ScaledDotProductAttention`` (the plugin keeps the source node's name): a fused ``Subgraph`` (snippets, as on
    AVX-512) or the plugin's own attention node (``ScaledAttn``), so that the attention is not mixed with the
    element-wise chains that are ``Subgraph`` nodes too. Reorders and transposes around it keep their types."""
    attention = node_type in ("Subgraph", "ScaledAttn", "ScaledDotProductAttention")
    return "Attention" if attention and "scaleddotproductattention" in node_name.lower() else node_type


def add_counters(infos, totals: dict[str, float], precisions: dict[str, set[str]], calls: int) -> None:
    """Adds one call's executed-node counters to ``totals`` (ms per call of ``calls``, per :func:`node_kind`) and
    the precision each kernel ran in (the last part of OpenVINO's ``exec_type``, e.g. ``brgemm_avx512_I8`` -> ``i8``)
    to ``precisions``. Nodes the plugin skipped (``NOT_RUN``, ``OPTIMIZED_OUT``) add nothing."""
    for info in infos:
        if info.status.name != "EXECUTED":
            continue
        kind = node_kind(info.node_type, info.node_name)
        totals[kind] += info.real_time.total_seconds() * 1000 / calls
        precisions[kind].add(info.exec_type.rsplit("_", 1)[-1].lower())


def matmul_ms(by_type_ms: dict[str, float]) -> float:
    """The dense matmuls' time: every ``FullyConnected`` kind (plain, ``FullyConnectedQuantizedLegacy`` ...)."""
    return sum(v for k, v in by_type_ms.items() if k.startswith("FullyConnected"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder (default: packaged all-MiniLM-L6-v2)")
    ap.add_argument("--data", default=str(DATA), help="short workload: CLINC150 data_full.json")
    ap.add_argument("--long-data", default=str(LONG_DATA), help="long workload: SST-2 train.tsv")
    ap.add_argument("--text-column", default=None)
    ap.add_argument("--label-column", default=None)
    ap.add_argument("--presets", default="openvino-bf16,openvino-int8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=100)
    args = ap.parse_args()
    args.throughput_n_long = 500
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    warnings.filterwarnings("ignore")
    from ember.hardware import detect
    from ember.models import load_model
    from ember.optimize import optimize, preset

    model, tok = load_model(args.model)
    per_token = flop_per_token(model.config)
    out: dict = {"cpu": detect().to_dict(), "threads": args.threads, "load_average_start": os.getloadavg(), "results": {}}
    for wl in (short_workload(args), long_workload(args, tok)):
        lengths = sorted(len(ids) for ids in tok(wl.texts[:500], truncation=True, max_length=128)["input_ids"])
        length = lengths[len(lengths) // 2]
        print(f"{wl.name}: median length {length} tokens ({wl.source})", flush=True)
        for name in args.presets.split(","):
            c = dataclasses.replace(preset(name), threads=args.threads, on_slower="ignore", static_shapes=(), streams=1)
            art = optimize(model, c, tokenizer=tok, sample=wl.sample)
            for batch, static in ((1, True), (32, True), (32, False)):
                r = profile(art, batch, length, args.calls if batch == 1 else max(10, args.calls // 10),
                            args.warmup // (1 if batch == 1 else 10), static)
                fc = matmul_ms(r["by_type_ms"])
                r["fully_connected_gflop_s"] = per_token * batch * length / 1e9 / (fc / 1000) if fc else None
                case = f"[{batch}, {length}]{'' if static else ' dynamic'}"
                out["results"][f"{name} {wl.name} {case}"] = r
                top = ", ".join(f"{k} {v:.3f} [{'/'.join(r['precisions'][k])}]"
                                for k, v in list(r["by_type_ms"].items())[:8])
                print(f"{name:14s} {wl.name:5s} {case}: wall {r['wall_ms']:.3f} ms, nodes {r['node_sum_ms']:.3f} ms "
                      f"(matmuls {fc:.3f} ms = {r['fully_connected_gflop_s'] or 0:.0f} GFLOP/s): {top}", flush=True)
    out["load_average_end"] = os.getloadavg()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
