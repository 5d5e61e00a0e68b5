"""ember's ONNX Runtime dynamic int8 artifact built several ways, side by side: 7-bit against 8-bit weights, and
MatMuls kept in fp32 (``keep_fp32``: none, one, or ``"auto"``, the ``onnx-int8`` preset's choice).

ONNX Runtime's quantisation guide warns that on x86 without VNNI its u8s8 int8 kernels can saturate and suggests
7-bit weights there; the ``onnx-int8`` preset follows that advice on such CPUs. On paragraph-length inputs the whole
int8 MiniLM fell under the preset's 0.99 cosine bound, which ``keep_fp32="auto"`` answers by keeping the most
sensitive MatMuls in fp32. This script measures what each choice costs and buys: the variants of ``--variants``
(per-channel weights every time; per-tensor scales fail the 0.99 bound on MiniLM), with eager PyTorch fp32 as the
fidelity reference, through the benchmark harness, interleaved: in each of ``--rounds`` rounds every variant runs
``--latency-samples`` single inputs and its batch-32 passes over the same real texts, the order rotated round by round.

    python benchmarks/onnx_int8_range.py [--n 2000] [--rounds 5]                 # CLINC150 test (short intents)
    python benchmarks/onnx_int8_range.py --paragraphs --n 300 --latency-samples 60   # SST-2 joined into 40-120 tokens
    python benchmarks/onnx_int8_range.py --variants 7bit,8bit                     # the weight-range A/B alone

Variants: ``7bit`` / ``8bit`` (all MatMuls int8), ``7bit-keep1`` / ``8bit-keep1`` (the most sensitive one fp32),
``preset`` (``onnx-int8`` as it is on this CPU: ``keep_fp32="auto"``). The timed rows are ``--data`` (default:
CLINC150's test split) or, with ``--paragraphs``, peers.py's long workload; the sample the artifacts are calibrated
and verified on is spread over the training split (``--sample-split``) or the paragraphs not timed, never the timed
texts. The last line is JSON with each variant's median batch-1 p50, sentences/s, mean cosine and MatMuls kept fp32.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from ember.bench.rows import data_options

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from peers import ab_interleaved, ab_model_and_rows, workload_options  # noqa: E402  (the workloads' one definition)

CLINC = HERE.parent / ".." / "shared" / "data" / "clinc150"
VARIANTS = {"7bit": {"reduce_range": True, "keep_fp32": 0}, "8bit": {"reduce_range": False, "keep_fp32": 0},
            "7bit-keep1": {"reduce_range": True, "keep_fp32": 1}, "8bit-keep1": {"reduce_range": False, "keep_fp32": 1},
            "preset": {}}


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_options(ap, data=CLINC, split="test")
    workload_options(ap, sample="sentences the artifacts are calibrated and verified on")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--n", type=int, default=2000, help="texts per batch pass")
    ap.add_argument("--latency-samples", type=int, default=200, help="single inputs timed per round")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds (after one warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be >= 1 (timed rounds; the warm-up comes before them)")
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        ap.error(f"--variants: unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    return args


def main() -> None:
    args = parse()
    from ember.cli.quiet import quiet
    from ember.hardware import detect
    from ember.optimize import optimize, preset

    model, tok, texts, sample, rows = ab_model_and_rows(args, sample="calibration and verification sample")
    with quiet():
        cfg = dataclasses.replace(preset("onnx-int8"), threads=args.threads, on_slower="ignore", on_violation="warn")
        arts = {name: optimize(model, dataclasses.replace(cfg, **VARIANTS[name]), tokenizer=tok, sample=sample)
                for name in args.variants.split(",")}
    report = ab_interleaved(model, tok, texts, arts, batch=32, latency_samples=args.latency_samples,
                            rounds=args.rounds, threads=args.threads)
    out = {}
    for r in report.results:
        kept = arts[r.name].fusion_stats.get("kept_fp32") if r.name in arts else None
        out[r.name] = {"p50_ms": r.p50, "p90_ms": r.latency_ms["p90"], "sent_s": r.throughput,
                       "sent_s_dataset_order": r.throughput_unbucketed,
                       "cosine": r.fidelity.mean_cosine if r.fidelity else None, "kept_fp32": kept,
                       "reduce_range": arts[r.name].optimize_config.reduce_range if r.name in arts else None}
        print(f"{r.name:>12}: p50 {r.p50:6.2f} ms  p90 {out[r.name]['p90_ms']:6.2f} ms  {r.throughput:7,.1f} sent/s "
              f"bucketed  {r.throughput_unbucketed:7,.1f} in dataset order  cosine {out[r.name]['cosine']:.6f}"
              + (f"  kept fp32 {kept}" if kept is not None else ""), flush=True)
    print(json.dumps({"benchmark": "onnx_int8_range", "rows": rows, "n": len(texts), "threads": args.threads,
                      "rounds_timed": args.rounds, "cpu": detect().summary(), "results": out}))


if __name__ == "__main__":
    main()
