"""Batch-1 latency of ember's OpenVINO artifact by how single inputs are served, side by side.

Builds ``openvino-bf16`` (or ``--preset``) three times from the same model:

- ``dynamic``: ``static_shapes=()``, every input on the one dynamic-shape model;
- ``every-4``: models compiled for 4, 8, ... 32 tokens (the default until session 4), capped by the
  config's memory budget as the artifact does;
- ``sample``: the default, shapes chosen from the token lengths of a sample of *training* sentences
  (``choose_static_shapes``), never the timed ones.

Then measures each through the benchmark harness, interleaved (``BenchConfig(interleave=True)``), with eager
PyTorch fp32 as the reference (the cosines are against the original model): in each of ``--rounds`` rounds
every variant in turn runs the timed sentences one at a time as one block (after one untimed warm-up), the
first variant one place on each round. Blocks, not call by call: alternating calls would make every variant
evict the others' weights from the CPU's cache, which is the very effect the shapes trade against padding.
The throughput passes the harness also runs are short (``--throughput-n``) and not the point here.

    python benchmarks/openvino_static.py [--preset openvino-int8] [--n 300] [--rounds 9]
    python benchmarks/openvino_static.py --data ../shared/data/sst2/dev.tsv --sample-data ../shared/data/sst2/train.tsv

The timed rows are ``--data`` (default: CLINC150's test split), the shapes' sample ``--sample-data`` (default: the
same data's training split). The last line is JSON with the p50/p90/mean of each variant and its compiled shapes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

import torch

from ember.bench import BenchConfig, PerformanceBenchmark, Variant
from ember.bench.rows import announce, data_options, load_rows
from ember.bench.timing import quantile

CLINC = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "clinc150"


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_options(ap, data=CLINC, split="test")
    ap.add_argument("--sample-data", default=None, help="sentences the shapes are chosen from (default: --data)")
    ap.add_argument("--sample-split", default=None, help="split of the sample (default: train for the default data)")
    ap.add_argument("--preset", default="openvino-bf16")
    ap.add_argument("--n", type=int, default=300, help="sentences timed at batch 1")
    ap.add_argument("--rounds", type=int, default=9, help="timed rounds (after one warm-up)")
    ap.add_argument("--throughput-n", type=int, default=64, help="sentences of the harness's batch passes")
    ap.add_argument("--threads", type=int, default=2)
    return ap.parse_args()


def build(model, tok, preset_name: str, threads: int, sample: list[str]) -> dict:
    from ember.optimize import optimize, preset

    cfg = dataclasses.replace(preset(preset_name), threads=threads)
    shapes = {"dynamic": (), "every-4": tuple(range(4, 33, 4)), "sample": None}
    return {name: optimize(model, dataclasses.replace(cfg, static_shapes=s), tokenizer=tok, sample=sample)
            for name, s in shapes.items()}


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    from ember.cli.quiet import quiet
    from ember.models import load_model

    timed, timed_rows = load_rows(args, "timed", split=args.split, default_split="test", limit=args.n)
    sample, sample_rows = load_rows(args, "shape sample", data=args.sample_data, split=args.sample_split,
                                    default_split="train", limit=256, pick="spread")
    rows = announce(timed_rows, sample_rows)
    with quiet():
        model, tok = load_model(args.model, "embedding")
        arts = build(model, tok, args.preset, args.threads, list(sample.texts))
        max_length = arts["sample"].facts.max_length
        config = BenchConfig(latency_samples=len(timed), warmup=10, throughput_examples=args.throughput_n,
                             repeats=args.rounds, threads=args.threads, max_length=max_length, interleave=True)
        variants = [Variant("pytorch-fp32", model, reference=True), *[Variant(n, a) for n, a in arts.items()]]
        report = PerformanceBenchmark(tok, list(timed.texts), config=config, progress=False).run(variants)
    lengths = [len(x) for x in tok(list(timed.texts), truncation=True, max_length=max_length)["input_ids"]]
    res = {}
    for r in report.results:
        shapes = sorted(arts[r.name].static) if r.name in arts else None
        res[r.name] = {"p50_ms": r.p50, "p90_ms": r.latency_ms["p90"], "mean_ms": r.latency_ms["mean"],
                       "cosine": r.fidelity.mean_cosine, "compiled_shapes": shapes}
    print(f"timed lengths: p25 {quantile(lengths, 0.25):.0f}, median {statistics.median(lengths):.0f}, max {max(lengths)}")
    for name, r in res.items():
        print(f"{name:>12}: p50 {r['p50_ms']:.3f} ms  p90 {r['p90_ms']:.3f} ms  mean {r['mean_ms']:.3f} ms  "
              f"cosine {r['cosine']:.6f}  shapes {r['compiled_shapes']}")
    print(json.dumps({"benchmark": "openvino_static", "preset": args.preset, "rows": rows, "n": len(timed),
                      "rounds_timed": args.rounds, "threads": args.threads, "machine": report.machine.summary(), **res}))


if __name__ == "__main__":
    main()
