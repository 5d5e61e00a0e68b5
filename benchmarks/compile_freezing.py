"""ember's torch.compile presets with and without inductor's weight freezing, side by side, against eager PyTorch.

Builds ``compile`` and ``compile-bf16`` twice each through ``ember.optimize`` (``freezing=True``, the default,
and ``freezing=False``; each from its own copy of the model, verified against it), then measures them with eager
PyTorch fp32 (the reference) and bf16 autocast through the benchmark harness, interleaved
(``BenchConfig(interleave=True)``): in each of ``--repeats`` rounds every variant in turn runs its batch-1
latency block over ``--latency-n`` sentences and its batch-32 passes over ``--throughput-n``, so a slow spell of
this shared machine falls on all of them. Cosine: mean-pooled last hidden states against eager fp32.

    flock /tmp/ember-bench.lock python benchmarks/compile_freezing.py [--repeats 3]

The timed rows are CLINC150's test split by default (``--data``/``--split``); the build sample is spread over
the training split (``--sample-split``), never the timed sentences. The last line is JSON: each variant's
figures and the frozen/unfrozen ratios.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
from pathlib import Path

import torch

from ember.bench import BenchConfig, PerformanceBenchmark, Variant
from ember.bench.rows import announce, data_options, load_rows

CLINC = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "clinc150"


class EagerBf16:
    """Eager PyTorch under CPU bf16 autocast (the model itself unchanged): the peer the compile presets beat."""

    def __init__(self, model) -> None:
        self.model = model

    def __call__(self, **batch):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.model(**batch)


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_options(ap, data=CLINC, split="test")
    ap.add_argument("--sample-split", default=None, help="split the build sample is spread over (default: train for "
                    "the default data)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--latency-n", type=int, default=300)
    ap.add_argument("--throughput-n", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    return ap.parse_args()


def compiled(model, tok, sample: list[str]) -> list[Variant]:
    from ember.optimize import optimize, preset

    out = []
    for name in ("compile", "compile-bf16"):
        for freezing in (False, True):
            # each variant from its own copy of the model, as a user with two artifacts would have
            art = optimize(copy.deepcopy(model), dataclasses.replace(preset(name), freezing=freezing), tokenizer=tok,
                           sample=sample)
            print(f"built ember-{name} freezing={freezing}: mean cosine {art.fidelity.mean_cosine:.6f}", flush=True)
            out.append(Variant(f"ember-{name} freezing={freezing}", art))
    return out


def table(report) -> dict:
    print("| engine | p50 ms | p90 ms | sent/s b32 bucketed | sent/s b32 dataset order | cosine |")
    print("|---|---|---|---|---|---|")
    results = {}
    for r in report.results:
        if r.error:
            print(f"| {r.name} | {r.error} | | | | |")
            results[r.name] = {"error": r.error}
            continue
        cos = r.fidelity.mean_cosine
        print(f"| {r.name} | {r.p50:.2f} | {r.latency_ms['p90']:.2f} | {r.throughput:,.0f} | "
              f"{r.throughput_unbucketed:,.0f} | {cos:.6f} |")
        results[r.name] = {"p50_ms": r.p50, "p90_ms": r.latency_ms["p90"], "throughput": r.throughput,
                           "throughput_unbucketed": r.throughput_unbucketed, "cosine": cos,
                           "min_cosine": r.fidelity.min_cosine}
    return results


def ratios(results: dict) -> dict:
    out = {}
    for name in ("compile", "compile-bf16"):
        off, on = results[f"ember-{name} freezing=False"], results[f"ember-{name} freezing=True"]
        if "error" not in off and "error" not in on:
            out[name] = {"p50 speed-up": off["p50_ms"] / on["p50_ms"], "throughput ratio": on["throughput"] / off["throughput"]}
            print(f"{name}: freezing makes batch-1 p50 x{out[name]['p50 speed-up']:.2f} faster, "
                  f"bucketed batch-32 throughput x{out[name]['throughput ratio']:.2f}")
    return out


def main() -> None:
    args = parse()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    from ember.cli.quiet import quiet
    from ember.models import load_model

    n = max(args.latency_n, args.throughput_n, 512)  # batch-1 inputs, batch passes and fidelity: the first n
    timed, timed_rows = load_rows(args, "timed", split=args.split, default_split="test", limit=n)
    sample, sample_rows = load_rows(args, "build sample", split=args.sample_split, default_split="train", limit=256,
                                    pick="spread")
    rows = announce(timed_rows, sample_rows)
    with quiet():  # inductor's and the engines' own chatter
        model, tok = load_model(args.model, "embedding")
        variants = [Variant("pytorch-fp32", model, reference=True), Variant("pytorch-bf16", EagerBf16(model)),
                    *compiled(model, tok, list(sample.texts))]
        config = BenchConfig(batch_size=32, latency_samples=args.latency_n, throughput_examples=args.throughput_n,
                             repeats=args.repeats, threads=args.threads, fidelity_examples=512, fidelity_batch_size=16,
                             interleave=True)
        report = PerformanceBenchmark(tok, list(timed.texts), config=config, progress=False).run(variants)
    results = table(report)
    print(json.dumps({"benchmark": "compile_freezing", "threads": args.threads, "rows": rows, "results": results,
                      "ratios": ratios(results), "machine": report.machine.summary()}))


if __name__ == "__main__":
    main()
