"""How much one artifact's batch-1 latency depends on the process it runs in: the same saved artifact loaded and
timed in several fresh processes, one after another.

Issue #19's targets count only when they hold in two runs an hour apart, because a peer's or ember's batch-1 time
moved between runs (OpenVINO int8 0.48–0.95 ms for the same model across four compression runs on one host).
This separates the process from the run: ``--processes`` children each load the artifact built once here, time
``--latency-samples`` single sentences in ``--rounds`` rounds (after 10 warm-up calls) and report each round's
p50. A spread between processes far above the spread between rounds of one process means a per-process draw
(thread placement, memory layout), not host drift. With ``--pinning NO`` every other child sets OpenVINO's
``ENABLE_CPU_PINNING`` off on its core before loading (a core-level property; the artifact is unchanged).

    python benchmarks/process_spread.py [--preset openvino-int8] [--processes 8] [--pinning NO]

The timed rows are ``--data`` (default: CLINC150's test split, the first ``--latency-samples``); the calibration
sample is spread over the training split. The last line is JSON with every child's round p50s and, per setting, the
median, min and max of the children's medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLINC = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "clinc150"


def parse(argv=None) -> argparse.Namespace:
    from ember.bench.rows import data_options

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_options(ap, data=CLINC, split="test")
    ap.add_argument("--preset", default="openvino-int8", help="ember.optimize preset to build once and time")
    ap.add_argument("--processes", type=int, default=8, help="fresh processes, one after another")
    ap.add_argument("--latency-samples", type=int, default=300, help="single sentences timed per round")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds per process")
    ap.add_argument("--pinning", choices=("default", "NO", "YES"), default="default",
                    help="every other process sets OpenVINO's ENABLE_CPU_PINNING to this (default: all as built)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-pinning", default="default", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def child(args: argparse.Namespace) -> None:
    """Load the artifact in this fresh process, time single sentences, print one JSON line."""
    import torch
    from transformers import AutoTokenizer

    torch.set_num_threads(args.threads)
    folder = Path(args.child)
    if args.child_pinning != "default":
        from ember.optimize.backends.openvino import shared_core

        shared_core().set_property("CPU", {"ENABLE_CPU_PINNING": args.child_pinning})
    from ember.cli.quiet import quiet
    from ember.optimize.artifact import load_artifact

    with quiet():
        tok = AutoTokenizer.from_pretrained(folder / "tokenizer")
        artifact = load_artifact(folder / "artifact", tokenizer=tok)
    texts = json.loads((folder / "texts.json").read_text())
    batches = [dict(tok([t], return_tensors="pt", truncation=True, max_length=64)) for t in texts]
    for b in batches[:10]:
        artifact(**b)
    rounds = []
    for _ in range(args.rounds):
        seconds = []
        for b in batches:
            start = time.perf_counter()
            artifact(**b)
            seconds.append(time.perf_counter() - start)
        rounds.append(1000.0 * statistics.median(seconds))
    print(json.dumps({"p50_ms": rounds}))


def main(argv=None) -> dict:
    args = parse(argv)
    if args.child:
        child(args)
        return {}
    if args.processes < 1 or args.rounds < 1 or args.latency_samples < 1:
        raise SystemExit("--processes, --rounds and --latency-samples must be >= 1")
    import torch

    from ember.bench.rows import announce, load_rows
    from ember.cli.quiet import quiet
    from ember.hardware import detect
    from ember.models import load_model
    from ember.optimize import optimize, preset

    torch.set_num_threads(args.threads)
    timed, timed_rows = load_rows(args, "timed", split=args.split, default_split="test", limit=args.latency_samples)
    sample, sample_rows = load_rows(args, "calibration sample", split=None, default_split="train", limit=256, pick="spread")
    rows = announce(timed_rows, sample_rows)
    settings = ["default", args.pinning] if args.pinning != "default" else ["default"]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with quiet():
            model, tok = load_model(args.model, "embedding")
            artifact = optimize(model, preset(args.preset), tokenizer=tok, sample=list(sample.texts))
            artifact.save(folder / "artifact")
            tok.save_pretrained(folder / "tokenizer")
        (folder / "texts.json").write_text(json.dumps(list(timed.texts)))
        del artifact
        for k in range(args.processes):
            setting = settings[k % len(settings)]
            cmd = [sys.executable, __file__, "--child", str(folder), "--child-pinning", setting, "--threads",
                   str(args.threads), "--rounds", str(args.rounds)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"process {k} failed:\n{done.stderr[-2000:]}")
            p50 = json.loads(done.stdout.strip().splitlines()[-1])["p50_ms"]
            results.append({"process": k, "pinning": setting, "p50_ms": p50})
            print(f"process {k} (pinning {setting}): round p50s " + ", ".join(f"{x:.3f}" for x in p50) + " ms", flush=True)
    summary = {}
    for setting in settings:
        medians = [statistics.median(r["p50_ms"]) for r in results if r["pinning"] == setting]
        within = [max(r["p50_ms"]) / min(r["p50_ms"]) for r in results if r["pinning"] == setting]
        summary[setting] = {"median_ms": statistics.median(medians), "min_ms": min(medians), "max_ms": max(medians),
                            "between_processes_max_over_min": max(medians) / min(medians),
                            "within_process_max_over_min": max(within)}
        s = summary[setting]
        print(f"pinning {setting}: process medians {s['min_ms']:.3f}–{s['max_ms']:.3f} ms (median {s['median_ms']:.3f}); "
              f"between processes x{s['between_processes_max_over_min']:.2f}, within one process at most "
              f"x{s['within_process_max_over_min']:.2f}", flush=True)
    out = {"benchmark": "process_spread", "preset": args.preset, "rows": rows, "threads": args.threads,
           "rounds": args.rounds, "cpu": detect().summary(), "processes": results, "summary": summary}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
