"""What ``ember bench`` measures, through the library API: fp32 baseline vs every preset available here.

The same preset sweep as ``ember bench`` and ``autotune`` (``ember.bench.sweep``): the baseline, then each preset
built, measured and let go in turn. Besides the table it prints the process's resident memory around each
variant (after the build, peak while building, peak while measured, after it was let go).

Run (serialised with other benchmarks on a shared machine):

    flock /tmp/ember-bench.lock python benchmarks/bench_default.py --threads 2
    flock /tmp/ember-bench.lock python benchmarks/bench_default.py --data ../shared/data/clinc150 --split test --limit 1000

Without ``--data`` it measures ember's built-in sentences, as ``ember bench`` does. Labelled data and a model
with a classification head give accuracy on the rows it names.

``--all-alive`` runs the schedule ``ember bench`` had before the sweep: every preset built first, then all measured
while alive (for the memory comparison in BENCHMARKS.md).

Prints the rows measured, the Markdown table, the memory table, then one JSON line: per variant p50 latency,
throughput, quality and the ratios against the fp32 baseline (medians of repeated runs, as the harness
measures them), and the memory rows.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ember.bench import BenchConfig, PerformanceBenchmark, Variant
from ember.bench.memory import peak_rss_mb, release_memory, reset_peak, rss_mb
from ember.bench.rows import RowsUsed, announce, data_options, head_labels, load_rows
from ember.bench.sweep import BASELINE, MemoryRow, SweepResult, preset_plans, sweep
from ember.data import Examples
from ember.data.sample import sample_sentences
from ember.models import DEFAULT_MODEL, default_model_path, load_model
from ember.optimize.registry import no_progress


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_options(ap, data=None, split=None)
    ap.add_argument("--limit", type=int, default=None, help="the first N rows")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--latency-samples", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--presets", default=None, help="comma-separated presets (default: every one available here)")
    ap.add_argument("--out", default=None, help="also write report.md/json and plot.png here")
    ap.add_argument("--all-alive", action="store_true", help="build every preset first, then measure them all "
                    "(the schedule before the sweep released each one after measuring it)")
    return ap.parse_args()


def rows(args) -> tuple[Examples, RowsUsed]:
    if args.data is not None:
        return load_rows(args, "measured", split=args.split, limit=args.limit)
    texts = sample_sentences()
    chosen = texts[: args.limit] if args.limit else texts
    how = "all" if len(chosen) == len(texts) else f"first {len(chosen):,}"
    return Examples(chosen, None, "ember built-in sample sentences"), RowsUsed(
        "measured", "ember built-in sample sentences", None, len(chosen), len(texts), how)


def all_alive(bench, baseline, plans, loaded) -> SweepResult:
    """The schedule before the sweep: build every preset, keep them all, measure them all, then let them go."""
    memory, built = [MemoryRow(baseline.name, *loaded)], []
    for plan in plans:
        reset_peak()
        try:
            built.append(plan.build(no_progress))
        except Exception as exc:  # noqa: BLE001 - as the sweep: a failed row's place is left out here
            print(f"{plan.name}: build failed: {type(exc).__name__}: {exc}")
            continue
        memory.append(MemoryRow(plan.name, rss_mb(), peak_rss_mb()))
    report = bench.run([baseline, *built])
    for m in memory:
        m.run_peak = report.result(m.name).peak_rss_mb
    del built
    release_memory()
    memory[-1].after_release = rss_mb()  # every preset let go at once, at the end
    return SweepResult(report=report, memory=memory)


def summary(report, res, used: dict, schedule: str) -> dict:
    ref = report.reference
    return {
        "benchmark": "bench_default",
        "schedule": schedule,
        "machine": report.machine.summary(),
        "threads": report.machine.threads,
        "rows": used,
        "n_texts": report.n_examples,
        "variants": {
            r.name: {
                "p50_ms": r.p50,
                "throughput": r.throughput,
                "throughput_unbucketed": r.throughput_unbucketed,
                "accuracy": r.accuracy,
                "mean_cosine": None if r.fidelity is None else r.fidelity.mean_cosine,
                "speedup_p50": report.speedup(r),
                "throughput_ratio": (r.throughput / ref.throughput) if ref and ref.throughput and r.throughput else None,
                "passed": r.passed,
                "error": r.error,
            }
            for r in report.results
        },
        "memory_mb": [m.to_dict() for m in res.memory],
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    examples, used = rows(args)
    used_rows = announce(used)
    name = args.model or DEFAULT_MODEL
    t0 = time.perf_counter()
    model_path = args.model or str(default_model_path())
    from transformers import AutoConfig

    labels, label_names, note = head_labels(examples, AutoConfig.from_pretrained(model_path), name)
    if note:
        print(f"note: {note}")
    model, tok = load_model(model_path, "classification" if labels is not None else "embedding")
    load_s, loaded = time.perf_counter() - t0, (rss_mb(), peak_rss_mb())
    plans = preset_plans(model, tok, examples.texts[:256])
    if args.presets:
        wanted = [p.strip() for p in args.presets.split(",")]
        plans = [p for p in plans if p.name in wanted]
    config = BenchConfig(batch_size=args.batch_size, latency_samples=args.latency_samples, threads=args.threads,
                         repeats=args.repeats)
    bench = PerformanceBenchmark(tok, examples.texts, labels, config, label_names=label_names, model_name=name,
                                 data_name=used.describe())
    baseline = Variant(BASELINE, model, build_seconds=load_s, reference=True)
    if args.all_alive:
        res = all_alive(bench, baseline, plans, loaded)
    else:
        res = sweep(bench, baseline, plans, load_rss=loaded)
    report = res.report
    if args.out:
        report.write(args.out)
    print(report.to_markdown())
    print("| variant | RSS after build MB | peak while building MB | peak while measured MB | RSS after release MB |")
    print("|---|---|---|---|---|")
    fmt = lambda v: "—" if v is None else f"{v:,.0f}"  # noqa: E731
    for m in res.memory:
        print(f"| {m.name} | {fmt(m.after_build)} | {fmt(m.build_peak)} | {fmt(m.run_peak)} | {fmt(m.after_release)} |")
    print(json.dumps(summary(report, res, used_rows, "all alive" if args.all_alive else "sweep")))


if __name__ == "__main__":
    main()
