"""ember's ONNX Runtime artifacts with the residual add + LayerNorm fused (``SkipLayerNormalization``) or left as
``Add`` + ``LayerNormalization`` (``OnnxRuntimeConfig.skip_layer_norm``), side by side, with a per-node profile.

ONNX Runtime's transformer optimizer fuses every residual add and the LayerNorm after it into its contrib op
``SkipLayerNormalization``; Optimum's O2 and int8 models and ember before this script all ran it. Profiled per node
(issue #19, item 3), that op's CPU kernel took 15% of the int8 MiniLM's batch time. This script measures, for each of
``--presets`` (default ``onnx,onnx-int8``) built both ways from the same model and sample:

- batch-1 p50 and batch-``--batch`` throughput through the benchmark harness, interleaved (each round every variant in
  turn, the order rotated), eager PyTorch fp32 as the fidelity reference;
- ONNX Runtime's own per-node profile of each artifact over the same length-bucketed batches, summed per op type
  (milliseconds per batch and share): where the time goes, and what the change moved.

    python benchmarks/onnx_layer_norm.py                          # CLINC150 test (short intents)
    python benchmarks/onnx_layer_norm.py --paragraphs --n 300     # SST-2 joined into 40-120 tokens (peers.py's long)
    python benchmarks/onnx_layer_norm.py --data my.csv --text-column body --sample-data my_train.csv

The sample the artifacts are calibrated and verified on is spread over the training split (``--sample-split``) or
the paragraphs not timed, never the timed texts. The last line is JSON with every variant's figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

from ember.bench.rows import data_options

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from peers import ab_interleaved, ab_model_and_rows, workload_options  # noqa: E402  (the workloads' one definition)

CLINC = HERE.parent / ".." / "shared" / "data" / "clinc150"
WAYS = {"add+layernorm": False, "skip-layernorm": True}


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_options(ap, data=CLINC, split="test")
    workload_options(ap, sample="sentences the artifacts are calibrated and verified on")
    ap.add_argument("--presets", default="onnx,onnx-int8", help="ONNX Runtime presets, comma-separated")
    ap.add_argument("--n", type=int, default=2000, help="texts per batch pass")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--latency-samples", type=int, default=200, help="single inputs timed per round")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds (after one warm-up)")
    ap.add_argument("--profile-passes", type=int, default=2, help="passes over the batches under the profiler")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.rounds < 1 or args.profile_passes < 1:
        ap.error("--rounds and --profile-passes must be >= 1")
    return args


def op_profile(art, tok, texts: list[str], batch: int, passes: int, threads: int) -> dict[str, float]:
    """Milliseconds per batch spent in each op type, from ONNX Runtime's profiler, over length-bucketed batches."""
    from ember.batching import length_buckets
    from ember.optimize.backends.onnxruntime import make_session

    with tempfile.TemporaryDirectory(prefix="ember-profile-") as tmp:
        sess = make_session(art.model_bytes, threads, skip_layer_norm=art.optimize_config.skip_layer_norm,
                            profile_prefix=str(Path(tmp) / "run"))
        names = [i.name for i in sess.get_inputs()]
        enc = tok(texts, truncation=True, max_length=art.facts.max_length)  # once; each bucket padded from it
        lengths = [len(x) for x in enc["input_ids"]]
        batches = [tok.pad({k: [enc[k][i] for i in idx] for k in enc}, return_tensors="np")
                   for idx in length_buckets(lengths, batch)]
        for _ in range(passes):
            for b in batches:
                sess.run(None, {k: b[k].astype("int64") for k in names})
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_op: Counter[str] = Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
    runs = passes * len(batches)
    return {op: us / runs / 1000 for op, us in per_op.most_common()}


def main() -> None:
    args = parse()
    from ember.cli.quiet import quiet
    from ember.hardware import detect
    from ember.optimize import optimize, preset

    model, tok, texts, sample, rows = ab_model_and_rows(args, sample="calibration and verification sample")
    arts = {}
    with quiet():
        for name in args.presets.split(","):
            cfg = dataclasses.replace(preset(name), threads=args.threads, on_slower="ignore", on_violation="warn")
            if cfg.kind != "onnxruntime":
                raise SystemExit(f"--presets: {name} is not an ONNX Runtime preset (its kind is {cfg.kind})")
            for way, fused in WAYS.items():
                arts[f"{name} {way}"] = optimize(model, dataclasses.replace(cfg, skip_layer_norm=fused),
                                                 tokenizer=tok, sample=sample)
    report = ab_interleaved(model, tok, texts, arts, batch=args.batch, latency_samples=args.latency_samples,
                            rounds=args.rounds, threads=args.threads)
    out = {}
    for r in report.results:
        out[r.name] = {"p50_ms": r.p50, "p90_ms": r.latency_ms["p90"], "sent_s": r.throughput,
                       "cosine": r.fidelity.mean_cosine if r.fidelity else None}
        print(f"{r.name:>28}: p50 {r.p50:6.2f} ms  p90 {out[r.name]['p90_ms']:6.2f} ms  {r.throughput:7,.1f} sent/s "
              f"bucketed  cosine {out[r.name]['cosine']:.6f}", flush=True)
    for name, art in arts.items():
        prof = op_profile(art, tok, texts, args.batch, args.profile_passes, args.threads)
        out[name]["profile_ms_per_batch"] = prof
        total = sum(prof.values())
        print(f"{name}: ONNX Runtime profile, {total:.2f} ms per batch of {args.batch} in its nodes: "
              + ", ".join(f"{op} {ms:.2f} ({100 * ms / total:.0f}%)" for op, ms in prof.items()), flush=True)
    print(json.dumps({"benchmark": "onnx_layer_norm", "rows": rows, "n": len(texts), "threads": args.threads,
                      "batch": args.batch, "rounds_timed": args.rounds, "cpu": detect().summary(), "results": out}))


if __name__ == "__main__":
    main()
