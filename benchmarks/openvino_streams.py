"""Batch throughput of ember's OpenVINO artifacts with batches split over streams, against one request.

Builds each preset twice from the same model and sample: ``streams=1`` (every batch one request on every
thread) and ``streams=N`` (each batch cut into N parts run side by side on N OpenVINO streams, the default
being 2 at 2 threads). Then measures the pair through the benchmark harness, interleaved
(``BenchConfig(interleave=True)``): in each of ``--rounds`` rounds (after one untimed warm-up) both run their
passes over the same real sentences at batch 32, length-bucketed and in dataset order, the one that goes first
alternating round by round, so a slow spell of this shared machine falls on both. ``streams=1`` is the
reference: ``streams=N`` must give the same outputs (mean cosine >= 0.99999, else its row fails).

    python benchmarks/openvino_streams.py [--presets openvino,openvino-bf16,openvino-int8] [--n 2000] [--rounds 7]

The timed rows are ``--data`` (default: CLINC150's test split); the build sample is spread over the training
split (``--sample-split``), never the timed sentences. The last line is JSON with the median sentences/s of each
variant and their ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from ember.bench import BenchConfig, PerformanceBenchmark, Variant
from ember.bench.rows import announce, data_options, load_rows
from ember.fidelity import Tolerance

CLINC = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "clinc150"


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_options(ap, data=CLINC, split="test")
    ap.add_argument("--sample-split", default=None, help="split the build sample is spread over (default: train for "
                    "the default data)")
    ap.add_argument("--presets", default="openvino,openvino-bf16,openvino-int8")
    ap.add_argument("--n", type=int, default=2000, help="sentences per pass")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=7, help="timed rounds (after one warm-up)")
    ap.add_argument("--latency-samples", type=int, default=50, help="batch-1 calls per round (reported, not the point)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--streams", type=int, default=2)
    return ap.parse_args()


def pair(model, tok, name: str, args, sample: list[str]) -> list[Variant]:
    from ember.optimize import optimize, preset

    cfg = dataclasses.replace(preset(name), threads=args.threads)
    one = optimize(model, dataclasses.replace(cfg, streams=1), tokenizer=tok, sample=sample)
    many = optimize(model, dataclasses.replace(cfg, streams=args.streams), tokenizer=tok, sample=sample)
    return [Variant("streams=1", one, reference=True),
            Variant(f"streams={args.streams}", many, tolerance=Tolerance(min_mean_cosine=0.99999))]


def measure(model, tok, name: str, args, texts: list[str], sample: list[str]) -> dict:
    config = BenchConfig(batch_size=args.batch, latency_samples=args.latency_samples, throughput_examples=args.n,
                         repeats=args.rounds, threads=args.threads, interleave=True)
    report = PerformanceBenchmark(tok, texts, config=config, progress=False).run(pair(model, tok, name, args, sample))
    one, split = report.results
    for r in report.results:
        if not r.passed:
            raise SystemExit(f"{name} {r.name}: {r.status}")
    med = {r.name: {"bucketed": r.throughput, "dataset order": r.throughput_unbucketed} for r in report.results}
    ratio = {p: med[split.name][p] / med[one.name][p] for p in ("bucketed", "dataset order")}
    for p in ("bucketed", "dataset order"):
        print(f"{name:>14} {p:>13}: streams=1 {med[one.name][p]:7,.0f} sent/s   {split.name} "
              f"{med[split.name][p]:7,.0f} sent/s   x{ratio[p]:.2f}", flush=True)
    return {"sent_s": med, "ratio": ratio, "cosine": {r.name: r.fidelity.mean_cosine for r in report.results},
            "p50_ms": {r.name: r.p50 for r in report.results}, "machine": report.machine.summary()}


def main() -> None:
    args = parse()
    if args.rounds < 1:
        raise SystemExit("--rounds must be >= 1 (timed rounds; the warm-up comes before them)")
    torch.set_num_threads(args.threads)
    from ember.cli.quiet import quiet
    from ember.models import load_model

    timed, timed_rows = load_rows(args, "timed", split=args.split, default_split="test", limit=args.n)
    sample, sample_rows = load_rows(args, "build sample", split=args.sample_split, default_split="train", limit=256,
                                    pick="spread")
    rows = announce(timed_rows, sample_rows)
    with quiet():
        model, tok = load_model(args.model, "embedding")
        result = {name: measure(model, tok, name, args, list(timed.texts), list(sample.texts))
                  for name in args.presets.split(",")}
    print(json.dumps({"benchmark": "openvino_streams", "rows": rows, "n": len(timed), "batch": args.batch,
                      "threads": args.threads, "rounds_timed": args.rounds, "results": result}))


if __name__ == "__main__":
    main()
