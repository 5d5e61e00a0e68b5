"""Batch-1 latency of ember's OpenVINO artifact by how single inputs are served, side by side.

Builds ``openvino-bf16`` (or ``--preset``) once per variant from the same model and the same sample of training texts
(the lengths the shapes are chosen from, never the timed ones):

- ``dynamic``: ``static_shapes=()``, every input on the one dynamic-shape model;
- ``every-4``: models compiled for 4, 8, ... 32 tokens (the default until session 4), capped by the
  config's memory budget as the artifact does;
- ``sample``: the default, shapes chosen from the token lengths of the sample (``choose_static_shapes``: the
  finer of an eighth- and a quarter-octave grid whose run fits the models allowed);
- ``finer``: the default's shapes with one more halfway between each two (and below the first): twice the models,
  half the padding;
- ``fewest-padding``: as many shapes as ``finer``, placed at the sample's own lengths so that they pad the sample
  the least (the longest sample length last, so every input the default serves is served);
- ``half``: half as many shapes as the default (at least one), placed the same way: fewer copies of the weights
  to cycle through the CPU's caches as the lengths change from call to call, more padding;
- ``longest``: one model, at the default's longest shape: every input up to it padded to it, one copy of the
  weights.

``finer`` and ``fewest-padding`` get ``max_static`` and a memory budget that hold all their models (each one is a
copy of the weights). Then measures each through the benchmark harness, interleaved (``BenchConfig(interleave=True)``),
with eager PyTorch fp32 as the reference (the cosines are against the original model): in each of ``--rounds``
rounds every variant in turn runs the timed sentences one at a time as one block (after one untimed warm-up), the
first variant one place on each round. Blocks, not call by call: alternating calls would make every variant
evict the others' weights from the CPU's cache, which is the very effect the shapes trade against padding.
The throughput passes the harness also runs are short (``--throughput-n``) and not the point here.

    python benchmarks/openvino_static.py [--preset openvino-int8] [--n 300] [--rounds 9]
    python benchmarks/openvino_static.py --paragraphs --n 200 --variants dynamic,sample,finer,fewest-padding
    python benchmarks/openvino_static.py --data ../shared/data/sst2/dev.tsv --sample-data ../shared/data/sst2/train.tsv

The timed rows are ``--data`` (default: CLINC150's test split), the shapes' sample ``--sample-data`` (default: the
same data's training split); ``--paragraphs`` times peers.py's long workload (SST-2 training sentences joined into
paragraphs of 40-120 tokens, the first ``--n`` timed, the sample from the rest). Printed per variant: p50/p90/mean,
the cosine, the compiled shapes and the mean padding of the timed inputs on them (padded tokens / real ones; inputs
past the last shape run unpadded on the dynamic model). The last line is JSON with all of it.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import dataclasses
import itertools
import json
import statistics
import sys
from pathlib import Path

from ember.bench import BenchConfig, PerformanceBenchmark, Variant
from ember.bench.rows import data_options
from ember.bench.timing import quantile

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from peers import ab_model_and_rows, workload_options  # noqa: E402  (the workloads' one definition)

CLINC = HERE.parent / ".." / "shared" / "data" / "clinc150"
VARIANTS = ("dynamic", "every-4", "sample", "finer", "fewest-padding", "half", "longest")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_options(ap, data=CLINC, split="test")
    workload_options(ap, sample="sentences the shapes are chosen from")
    ap.add_argument("--preset", default="openvino-bf16")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--n", type=int, default=300, help="sentences timed at batch 1")
    ap.add_argument("--rounds", type=int, default=9, help="timed rounds (after one warm-up)")
    ap.add_argument("--throughput-n", type=int, default=64, help="sentences of the harness's batch passes")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    unknown = sorted(set(args.variants.split(",")) - set(VARIANTS))
    if unknown or not args.variants:
        ap.error(f"--variants {args.variants!r}: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    return args


def finer(shapes: tuple[int, ...]) -> tuple[int, ...]:
    """``shapes`` with one more halfway between each two and half a step below the first (at least 1 token).

    Example:
        >>> finer((80, 96, 112, 128)), finer((12, 16, 20))
        ((72, 80, 88, 96, 104, 112, 120, 128), (10, 12, 14, 16, 18, 20))
    """
    if not shapes:
        return ()
    gaps = [b - a for a, b in itertools.pairwise(shapes)] or [shapes[0]]
    extra = [max(1, shapes[0] - gaps[0] // 2), *((a + b) // 2 for a, b in itertools.pairwise(shapes))]
    return tuple(sorted(set(shapes) | set(extra)))


def fewest_padding(lengths: list[int], count: int) -> tuple[int, ...]:
    """At most ``count`` shapes at lengths the sample has, the longest of them last, that pad ``lengths`` the least
    (each length padded up to the shortest shape that holds it). Exact, by dynamic programming over the distinct
    lengths (the library's ``choose_batch_shapes`` weighs shapes against a dynamic model; at batch 1 every input up to
    the last shape runs on one, so only the padding counts here).

    Example:
        >>> fewest_padding([7, 9, 10, 10, 11, 11, 11, 12, 12, 14, 20], 3)
        (11, 14, 20)
    """
    counts = collections.Counter(lengths)
    vals = sorted(counts)
    count = min(count, len(vals))
    if count <= 0:
        return ()
    upto = [0]  # upto[i]: how many lengths are below vals[i]
    for v in vals:
        upto.append(upto[-1] + counts[v])
    # cost[k][t]: the padded tokens of lengths <= vals[t] on k shapes, the last at vals[t]; prev: the shape before it
    cost = [[float("inf")] * len(vals) for _ in range(count + 1)]
    prev: list[list[int | None]] = [[None] * len(vals) for _ in range(count + 1)]
    for t, v in enumerate(vals):
        cost[1][t] = upto[t + 1] * v
        for k in range(2, count + 1):
            for s in range(t):
                c = cost[k - 1][s] + (upto[t + 1] - upto[s + 1]) * v
                if c < cost[k][t]:
                    cost[k][t], prev[k][t] = c, s
    k = min(range(1, count + 1), key=lambda j: cost[j][-1])
    out, t = [], len(vals) - 1
    while t is not None:
        out.append(vals[t])
        t, k = prev[k][t], k - 1
    return tuple(reversed(out))


def mean_padding(shapes: list[int], lengths: list[int]) -> float:
    """Padded tokens per real token of ``lengths`` served one at a time on ``shapes`` (past the last: unpadded).

    Example:
        >>> round(mean_padding([12, 16], [10, 12, 20]), 4)  # 10 -> 12; 20 unpadded, past the last
        0.0476
    """
    padded = [shapes[i] if (i := bisect.bisect_left(shapes, n)) < len(shapes) else n for n in lengths]
    return sum(padded) / sum(lengths) - 1


def variant_configs(names: list[str], default: tuple[int, ...], lengths: list[int]) -> dict[str, dict]:
    """Config changes per variant: ``default`` the shapes the default chose from the sample's token ``lengths``."""
    more = finer(default)
    budget = {"max_static": max(len(more), 1), "static_memory_mb": 1 << 14}  # hold every model the variant names
    every = {"dynamic": {"static_shapes": ()}, "every-4": {"static_shapes": tuple(range(4, 33, 4))}, "sample": {},
             "finer": {"static_shapes": more, **budget},
             "fewest-padding": {"static_shapes": fewest_padding(lengths, len(more)), **budget},
             "half": {"static_shapes": fewest_padding(lengths, max(1, len(default) // 2)), **budget},
             "longest": {"static_shapes": default[-1:], **budget}}
    return {n: every[n] for n in names}


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    from ember.cli.quiet import quiet
    from ember.optimize import optimize, preset

    model, tok, texts, sample, rows = ab_model_and_rows(args, sample="shape sample")
    cfg = dataclasses.replace(preset(args.preset), threads=args.threads)
    with quiet():
        arts = {"sample": optimize(model, cfg, tokenizer=tok, sample=sample)}
        max_length = arts["sample"].facts.max_length
        lengths = [len(x) for x in tok(sample, truncation=True, max_length=max_length)["input_ids"]]
        changes = variant_configs(args.variants.split(","), arts["sample"].optimize_config.static_shapes, lengths)
        arts = {n: arts["sample"] if n == "sample" else optimize(model, dataclasses.replace(cfg, **ch), tokenizer=tok,
                                                                  sample=sample) for n, ch in changes.items()}
        config = BenchConfig(latency_samples=len(texts), warmup=10, throughput_examples=args.throughput_n,
                             repeats=args.rounds, threads=args.threads, max_length=max_length, interleave=True)
        variants = [Variant("pytorch-fp32", model, reference=True), *[Variant(n, a) for n, a in arts.items()]]
        report = PerformanceBenchmark(tok, texts, config=config, progress=False).run(variants)
    timed = [len(x) for x in tok(texts, truncation=True, max_length=max_length)["input_ids"]]
    res = {}
    for r in report.results:
        shapes = sorted(arts[r.name].static) if r.name in arts else None
        res[r.name] = {"p50_ms": r.p50, "p90_ms": r.latency_ms["p90"], "mean_ms": r.latency_ms["mean"],
                       "cosine": r.fidelity.mean_cosine, "compiled_shapes": shapes,
                       "mean_padding": None if shapes is None else mean_padding(shapes, timed)}
    print(f"timed lengths: p25 {quantile(timed, 0.25):.0f}, median {statistics.median(timed):.0f}, max {max(timed)}")
    for name, r in res.items():
        pad = "" if r["mean_padding"] is None else f"  padding {r['mean_padding']:.1%}"
        print(f"{name:>14}: p50 {r['p50_ms']:.3f} ms  p90 {r['p90_ms']:.3f} ms  mean {r['mean_ms']:.3f} ms  "
              f"cosine {r['cosine']:.6f}  shapes {r['compiled_shapes']}{pad}")
    print(json.dumps({"benchmark": "openvino_static", "preset": args.preset, "rows": rows, "n": len(texts),
                      "rounds_timed": args.rounds, "threads": args.threads, "machine": report.machine.summary(), **res}))


if __name__ == "__main__":
    main()
