"""ember's OpenVINO int8 artifact with what stays in float (attention products, softmax, layer norms) run in fp32
against bf16, side by side.

Builds ``openvino-int8`` twice from the same model and calibration sample, ``precision="f32"`` and ``"bf16"`` (the
int8 MatMuls are the same), then once with single inputs in bf16 and batches in fp32 (``batch_precision``), and
measures all three with eager PyTorch fp32 (the reference for fidelity) through the
benchmark harness, interleaved (``BenchConfig(interleave=True)``): in each of ``--rounds`` rounds every variant runs
``--latency-samples`` single inputs and its batch-32 passes over the same real sentences, the order rotated round by
round. bf16 needs AVX512-BF16 or AMX; elsewhere OpenVINO emulates it and it is slower than fp32. This is what the
``openvino-int8`` preset's choice of precision per CPU rests on.

    python benchmarks/openvino_int8_float.py [--n 2000] [--rounds 5]

The timed rows are ``--data`` (default: CLINC150's test split); the calibration sample is spread over the training
split (``--sample-split``), never the timed sentences. The last line is JSON with each variant's median batch-1 p50,
sentences/s and mean cosine.
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
    ap.add_argument("--sample-split", default=None, help="split the calibration sample is spread over (default: "
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
    sample, sample_rows = load_rows(args, "calibration sample", split=args.sample_split, default_split="train",
                                    limit=256, pick="spread")
    rows = announce(timed_rows, sample_rows)
    with quiet():
        model, tok = load_model(args.model, "embedding")
        cfg = dataclasses.replace(preset("openvino-int8"), threads=args.threads)
        builds = {f"int8, float part {p}": dataclasses.replace(cfg, precision=p, batch_precision=None) for p in ("f32", "bf16")}
        # single inputs in bf16, batches in f32 (``batch_precision``): each path in the precision it might prefer
        builds["int8, bf16 single/f32 batch"] = dataclasses.replace(cfg, precision="bf16", batch_precision="f32")
        variants = [Variant("pytorch-fp32", model, reference=True)] + [
            Variant(name, optimize(model, c, tokenizer=tok, sample=list(sample.texts))) for name, c in builds.items()]
        config = BenchConfig(batch_size=32, latency_samples=args.latency_samples, throughput_examples=args.n,
                             repeats=args.rounds, threads=args.threads, interleave=True)
        report = PerformanceBenchmark(tok, list(timed.texts), config=config, progress=False).run(variants)
    out = {}
    for r in report.results:
        out[r.name] = {"p50_ms": r.p50, "p90_ms": r.latency_ms["p90"], "sent_s": r.throughput, "sent_s_dataset_order": r.throughput_unbucketed,
                       "cosine": r.fidelity.mean_cosine if r.fidelity else None}
        print(f"{r.name:>27}: p50 {r.p50:6.2f} ms  p90 {out[r.name]['p90_ms']:6.2f} ms  {r.throughput:7,.0f} sent/s bucketed  "
              f"{r.throughput_unbucketed:7,.0f} in dataset order  cosine {out[r.name]['cosine']:.6f}", flush=True)
    f32, bf16 = out["int8, float part f32"], out["int8, float part bf16"]
    ratio = {"p50": f32["p50_ms"] / bf16["p50_ms"], "sent_s": bf16["sent_s"] / f32["sent_s"]}
    print(f"bf16 float part: batch-1 p50 x{ratio['p50']:.2f} faster, batch-32 x{ratio['sent_s']:.2f} sent/s")
    print(json.dumps({"benchmark": "openvino_int8_float", "rows": rows, "n": len(timed), "threads": args.threads,
                      "rounds_timed": args.rounds, "cpu": detect().summary(), "results": out, "bf16_vs_f32": ratio}))


if __name__ == "__main__":
    main()
