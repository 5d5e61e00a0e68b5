"""Batch throughput of ember's OpenVINO artifacts with and without shape-specialised batch models, side by side.

Builds each of ``--presets`` (default ``openvino-bf16,openvino-int8``) twice from the same model and the same sample of
training texts (the lengths the shapes are chosen from, never the timed ones):

- ``dynamic``: ``batch_shapes=()``, every batch on the dynamic-shape model (ember before issue #19's batch shapes);
- ``batch-shapes``: the default, batches cut into parts of ``batch_rows`` rows that run on models compiled for one
  length each (``OpenVINOConfig.batch_shapes``, chosen from the sample); for a preset whose batches run in f32
  (``openvino``), whose default has none, the shapes the default would choose for bf16 or int8.

Then measures them through the benchmark harness, interleaved (``BenchConfig(interleave=True)``: each round every
variant in turn, the first one place later each round), with eager PyTorch fp32 as the reference for the cosines:
length-bucketed batches of ``--batch`` (the headline) and batches in file order. Also printed: each artifact's
compiled batch shapes and the resident memory its build added (after the first calls).

    python benchmarks/openvino_batch_shapes.py                               # CLINC150 test (short intents)
    python benchmarks/openvino_batch_shapes.py --paragraphs --n 500         # SST-2 train joined into 40-120 tokens
    python benchmarks/openvino_batch_shapes.py --paragraphs --n 500 --presets openvino-bf16 --every 4
    python benchmarks/openvino_batch_shapes.py --presets openvino                # f32 (AVX2 CPUs' faithful preset)
    python benchmarks/openvino_batch_shapes.py --data my.csv --text-column body --sample-data my_train.csv

``--paragraphs`` times peers.py's long workload (SST-2 training sentences joined into paragraphs of 40-120 tokens,
the first ``--n`` timed, the shape sample from the rest). The last line is JSON with every variant's figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys
from pathlib import Path

import psutil

from ember.bench import BenchConfig, PerformanceBenchmark, Variant
from ember.bench.rows import data_options

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from peers import ab_model_and_rows, workload_options  # noqa: E402  (the workloads' one definition)

CLINC = HERE.parent / ".." / "shared" / "data" / "clinc150"


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_options(ap, data=CLINC, split="test")
    workload_options(ap, sample="sentences the shapes are chosen from")
    ap.add_argument("--presets", default="openvino-bf16,openvino-int8")
    ap.add_argument("--n", type=int, default=2000, help="texts timed (batches of --batch)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--every", type=int, default=0, help="also a variant with batch shapes every EVERY tokens from "
                    "the shortest to the longest timed text, without the count or memory bounds (what the default's "
                    "count, memory bound and placement leave on the table)")
    return ap.parse_args()


def explicit_shapes(name: str, variants: list[tuple[str, dict]], lengths: list[int]) -> list[tuple[str, dict]]:
    """``variants`` for preset ``name``, its ``batch-shapes`` variant asking for the shapes the default chooses for bf16
    and int8 batches (from the sample's token ``lengths``) where the preset's own default chooses none (f32 batches:
    :func:`ember.optimize.backends.openvino.batches_gain`)."""
    from ember.optimize import preset
    from ember.optimize.backends.openvino import batches_gain, choose_batch_shapes

    cfg = preset(name)
    if batches_gain(cfg):
        return variants
    shapes = choose_batch_shapes(lengths, cfg.max_batch_static)
    return [(v, {**ch, "batch_shapes": shapes} if v == "batch-shapes" else ch) for v, ch in variants]


def main() -> None:
    args = parse()
    from ember.cli.quiet import quiet
    from ember.optimize import optimize, preset

    process = psutil.Process()
    model, tok, texts, sample, rows = ab_model_and_rows(args, sample="shape sample")
    out: dict = {"benchmark": "openvino_batch_shapes", "rows": rows, "n": len(texts), "batch": args.batch,
                 "rounds": args.rounds, "threads": args.threads, "presets": {}}
    variants_asked = [("dynamic", {"batch_shapes": ()}), ("batch-shapes", {})]
    if args.every:
        lengths = [len(x) for x in tok(texts, truncation=True, max_length=128)["input_ids"]]
        lo, hi = min(lengths), max(lengths)
        grid = tuple(range(-(-lo // args.every) * args.every, hi + args.every, args.every))
        variants_asked.append((f"every-{args.every}", {"batch_shapes": grid, "max_batch_static": len(grid),
                                                       "batch_memory_mb": 1 << 20}))
    lengths = [len(x) for x in tok(sample, truncation=True, max_length=512)["input_ids"]]
    for name in args.presets.split(","):
        arts, memory = {}, {}
        with quiet():
            for variant, changes in explicit_shapes(name, variants_asked, lengths):
                gc.collect()
                before = process.memory_info().rss
                cfg = dataclasses.replace(preset(name), threads=args.threads, on_violation="warn", **changes)
                arts[variant] = optimize(model, cfg, tokenizer=tok, sample=sample)
                memory[variant] = (process.memory_info().rss - before) / 1e6
            config = BenchConfig(batch_size=args.batch, latency_samples=8, warmup=2, throughput_examples=len(texts),
                                 repeats=args.rounds, threads=args.threads, interleave=True)
            variants = [Variant("pytorch-fp32", model, reference=True), *[Variant(v, a) for v, a in arts.items()]]
            report = PerformanceBenchmark(tok, texts, config=config, progress=False).run(variants)
        res = {}
        for r in report.results:
            if r.name not in arts:
                continue
            res[r.name] = {"throughput": r.throughput, "throughput_file_order": r.throughput_unbucketed,
                           "cosine": r.fidelity.mean_cosine, "build_rss_mb": round(memory[r.name]),
                           "batch_shapes": sorted(arts[r.name].batch_static)}
            print(f"{name} {r.name:>12}: {r.throughput:,.0f} sent/s bucketed, {r.throughput_unbucketed:,.0f} in file "
                  f"order, cosine {r.fidelity.mean_cosine:.6f}, build +{memory[r.name]:.0f} MB resident, "
                  f"batch shapes {res[r.name]['batch_shapes']}", flush=True)
        ratios = {v: (r["throughput"] / res["dynamic"]["throughput"],
                      r["throughput_file_order"] / res["dynamic"]["throughput_file_order"])
                  for v, r in res.items() if v != "dynamic"}
        for v, (bucketed, order) in ratios.items():
            print(f"{name}: {v} x{bucketed:.3f} bucketed, x{order:.3f} in file order against dynamic", flush=True)
        out["presets"][name] = {**res, "ratios": ratios}
        out["machine"] = report.machine.summary()
        del arts, variants, report
    print(json.dumps(out))


if __name__ == "__main__":
    main()
