"""ember's ONNX Runtime dynamic int8 artifact with 7-bit weights (``reduce_range=True``) against 8-bit weights,
side by side.

ONNX Runtime's quantisation guide warns that on x86 without VNNI its u8s8 int8 kernels can saturate and suggests
7-bit weights there; the ``onnx-int8`` preset follows that advice on such CPUs. This script measures what it costs
and buys: ``onnx-int8`` built with ``reduce_range`` on and off (per-channel weights both times; per-tensor scales
fail the preset's 0.99 cosine bound on MiniLM), with eager PyTorch fp32 as the fidelity reference, through the
benchmark harness, interleaved: in each of ``--rounds`` rounds every variant runs ``--latency-samples`` single inputs
and its batch-32 passes over the same real sentences, the order rotated round by round.

    python benchmarks/onnx_int8_range.py [--n 2000] [--rounds 5]

The timed rows are ``--data`` (default: CLINC150's test split); the sample the artifacts are verified on is spread
over the training split (``--sample-split``), never the timed sentences. The last line is JSON with each variant's
median batch-1 p50, sentences/s and mean cosine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from ember.bench import BenchConfig, PerformanceBenchmark, Variant
from ember.bench.rows import announce, data_options, load_rows

CLINC = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "clinc150"


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_options(ap, data=CLINC, split="test")
    ap.add_argument("--sample-split", default=None, help="split the verification sample is spread over (default: "
                    "train for the default data)")
    ap.add_argument("--n", type=int, default=2000, help="sentences per batch pass")
    ap.add_argument("--latency-samples", type=int, default=200, help="single inputs timed per round")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds (after one warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    return ap.parse_args()


def main() -> None:
    args = parse()
    if args.rounds < 1:
        raise SystemExit("--rounds must be >= 1 (timed rounds; the warm-up comes before them)")
    torch.set_num_threads(args.threads)
    from ember.cli.quiet import quiet
    from ember.hardware import detect
    from ember.models import load_model
    from ember.optimize import optimize, preset

    timed, timed_rows = load_rows(args, "timed", split=args.split, default_split="test", limit=args.n)
    sample, sample_rows = load_rows(args, "verification sample", split=args.sample_split, default_split="train",
                                    limit=256, pick="spread")
    rows = announce(timed_rows, sample_rows)
    with quiet():
        model, tok = load_model(args.model, "embedding")
        cfg = dataclasses.replace(preset("onnx-int8"), threads=args.threads, on_slower="ignore")
        builds = {"7-bit per-channel": dataclasses.replace(cfg, reduce_range=True, per_channel=True),
                  "8-bit per-channel": dataclasses.replace(cfg, reduce_range=False, per_channel=True)}
        variants = [Variant("pytorch-fp32", model, reference=True)] + [
            Variant(name, optimize(model, c, tokenizer=tok, sample=list(sample.texts))) for name, c in builds.items()]
        config = BenchConfig(batch_size=32, latency_samples=args.latency_samples, throughput_examples=args.n,
                             repeats=args.rounds, threads=args.threads, interleave=True)
        report = PerformanceBenchmark(tok, list(timed.texts), config=config, progress=False).run(variants)
    out = {}
    for r in report.results:
        out[r.name] = {"p50_ms": r.p50, "p90_ms": r.latency_ms["p90"], "sent_s": r.throughput,
                       "sent_s_dataset_order": r.throughput_unbucketed,
                       "cosine": r.fidelity.mean_cosine if r.fidelity else None}
        print(f"{r.name:>18}: p50 {r.p50:6.2f} ms  p90 {out[r.name]['p90_ms']:6.2f} ms  {r.throughput:7,.0f} sent/s "
              f"bucketed  {r.throughput_unbucketed:7,.0f} in dataset order  cosine {out[r.name]['cosine']:.6f}",
              flush=True)
    seven, eight = out["7-bit per-channel"], out["8-bit per-channel"]
    ratio = {"p50": seven["p50_ms"] / eight["p50_ms"], "sent_s": eight["sent_s"] / seven["sent_s"],
             "cosine": eight["cosine"] - seven["cosine"]}
    print(f"8-bit vs 7-bit weights: batch-1 p50 x{ratio['p50']:.2f} faster, batch-32 x{ratio['sent_s']:.2f} sent/s, "
          f"cosine {ratio['cosine']:+.5f}")
    print(json.dumps({"benchmark": "onnx_int8_range", "rows": rows, "n": len(timed), "threads": args.threads,
                      "rounds_timed": args.rounds, "cpu": detect().summary(), "results": out,
                      "eight_vs_seven_bit": ratio}))


if __name__ == "__main__":
    main()
