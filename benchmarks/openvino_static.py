"""Batch-1 latency of ember's OpenVINO artifact with and without shape-specialised models, side by side.

Builds ``openvino-bf16`` (or ``--preset``) twice from the same model, once with ``static_shapes=()`` (one
dynamic-shape model) and once with the default (single inputs padded up to the next of a few lengths chosen
from the token lengths of a sample of training sentences, and run by a model compiled for that shape), then times both on the same real sentences one at a time, alternating
call by call for ``--rounds`` rounds (the first round warms up and compiles, it is not counted).

    python benchmarks/openvino_static.py [--data ../shared/data/clinc150] [--model DIR] [--n 300]

The last line is JSON with the p50/p90 of each and the speed-up.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from ember.data import load_examples
from ember.models import load_model
from ember.optimize import optimize, preset

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "clinc150"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--model", default=None, help="model folder or hub id (default: packaged all-MiniLM-L6-v2)")
    ap.add_argument("--preset", default="openvino-bf16")
    ap.add_argument("--n", type=int, default=300, help="test sentences timed at batch 1")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model, "embedding")
    texts = load_examples(args.data, split="test").texts[: args.n]
    cfg = dataclasses.replace(preset(args.preset), threads=args.threads)
    sample = load_examples(args.data, split="train").texts[:256]  # not the timed sentences
    arts = {"dynamic": optimize(model, dataclasses.replace(cfg, static_shapes=()), tokenizer=tok, sample=sample),
            "static": optimize(model, cfg, tokenizer=tok, sample=sample)}
    inputs = [dict(tok([t], return_tensors="pt")) for t in texts]
    times: dict[str, list[float]] = {k: [] for k in arts}
    for r in range(args.rounds):
        for x in inputs:
            for name, art in arts.items():
                start = time.perf_counter()
                art(**x)
                if r:
                    times[name].append(time.perf_counter() - start)
    res = {name: {"p50_ms": 1000 * statistics.median(v), "p90_ms": 1000 * float(np.percentile(v, 90)),
                  "cosine": arts[name].fidelity.mean_cosine} for name, v in times.items()}
    res["static"]["compiled_shapes"] = sorted(arts["static"].static)
    for name, r in res.items():
        print(f"{name:>8}: p50 {r['p50_ms']:.3f} ms  p90 {r['p90_ms']:.3f} ms  cosine {r['cosine']:.6f}")
    print(json.dumps({"benchmark": "openvino_static", "preset": args.preset, "n": len(texts), "rounds_timed": args.rounds - 1,
                      "threads": args.threads, **res, "speedup_p50": res["dynamic"]["p50_ms"] / res["static"]["p50_ms"]}))


if __name__ == "__main__":
    main()
