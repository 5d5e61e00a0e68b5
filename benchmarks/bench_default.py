"""What ``ember bench`` measures, through the library API: fp32 baseline vs every preset available here.

Run (serialised with other benchmarks on a shared machine):

    flock /tmp/ember-bench.lock python benchmarks/bench_default.py --threads 2
    flock /tmp/ember-bench.lock python benchmarks/bench_default.py --data ../shared/data/clinc150 --split test --limit 1000

Prints the Markdown table, then one JSON line: per variant p50 latency, throughput, quality and the
ratios against the fp32 baseline (medians of repeated runs, as the harness measures them).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ember.bench import BenchConfig, PerformanceBenchmark, Variant
from ember.bench.variants import BASELINE, build_variants, preset_plans
from ember.data import load_examples
from ember.data.sample import sample_sentences
from ember.models import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder or hub id (default: packaged all-MiniLM-L6-v2)")
    ap.add_argument("--data", default=None, help="texts for the run (default: ember's built-in sentences)")
    ap.add_argument("--split", default=None)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--latency-samples", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="also write report.md/json and plot.png here")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    texts = sample_sentences() if args.data is None else load_examples(args.data, split=args.split).texts
    texts = texts[: args.limit] if args.limit else texts
    t0 = time.perf_counter()
    model, tok = load_model(args.model)
    load_s = time.perf_counter() - t0
    built, failed = build_variants(preset_plans(model, tok, texts[:256]))
    config = BenchConfig(batch_size=args.batch_size, latency_samples=args.latency_samples, threads=args.threads,
                         repeats=args.repeats)
    report = PerformanceBenchmark(tok, texts, config=config, model_name=args.model or "all-MiniLM-L6-v2",
                                  data_name=args.data or "built-in sample").run(
        [Variant(BASELINE, model, build_seconds=load_s, reference=True), *built]
    )
    report.results.extend(r for _, r in failed)
    if args.out:
        report.write(args.out)
    print(report.to_markdown())
    ref = report.reference
    summary = {
        "benchmark": "bench_default",
        "machine": report.machine.summary(),
        "threads": report.machine.threads,
        "n_texts": report.n_examples,
        "variants": {
            r.name: {
                "p50_ms": r.p50,
                "throughput": r.throughput,
                "throughput_unbucketed": r.throughput_unbucketed,
                "mean_cosine": None if r.fidelity is None else r.fidelity.mean_cosine,
                "speedup_p50": report.speedup(r),
                "throughput_ratio": (r.throughput / ref.throughput) if ref and ref.throughput and r.throughput else None,
                "passed": r.passed,
                "error": r.error,
            }
            for r in report.results
        },
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
