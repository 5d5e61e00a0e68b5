"""Batch-1 latency of ember's OpenVINO artifact by how single inputs are served, side by side.

Builds ``openvino-bf16`` (or ``--preset``) three times from the same model:

- ``dynamic``: ``static_shapes=()``, every input on the one dynamic-shape model;
- ``every-4``: models compiled for 4, 8, ... 32 tokens (the default until session 4), capped by the
  config's memory budget as the artifact does;
- ``sample``: the default, shapes chosen from the token lengths of a sample of *training* sentences
  (``choose_static_shapes``), never the timed ones.

Then times each on the same real sentences one at a time. Each variant runs the whole list as one block, in
an order shuffled every round (the first round warms up and is not counted): alternating call by call would
make every variant evict the others' weights from the CPU's cache, which is the very effect the shapes trade
against padding.

    python benchmarks/openvino_static.py [--preset openvino-int8] [--n 300] [--rounds 10]
    python benchmarks/openvino_static.py --timed ../shared/data/sst2/dev.tsv --sample ../shared/data/sst2/train.tsv

``--timed`` / ``--sample`` take a path, with ``@split`` for CLINC150's JSON (default: its test / train split).
The last line is JSON with the p50/p90/mean of each variant and its compiled shapes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from ember.data import load_examples, spread
from ember.models import load_model
from ember.optimize import optimize, preset

CLINC = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "clinc150"


def texts_of(spec: str) -> list[str]:
    """Sentences of ``path`` or ``path@split``."""
    path, _, split = spec.partition("@")
    return list(load_examples(path, split=split or None).texts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timed", default=f"{CLINC}@test", help="sentences timed at batch 1")
    ap.add_argument("--sample", default=f"{CLINC}@train", help="sentences the shapes are chosen from")
    ap.add_argument("--model", default=None, help="model folder or hub id (default: packaged all-MiniLM-L6-v2)")
    ap.add_argument("--preset", default="openvino-bf16")
    ap.add_argument("--n", type=int, default=300, help="sentences timed at batch 1")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model, "embedding")
    texts = texts_of(args.timed)[: args.n]
    train = texts_of(args.sample)
    sample = spread(train, 256)
    cfg = dataclasses.replace(preset(args.preset), threads=args.threads)
    shapes = {"dynamic": (), "every-4": tuple(range(4, 33, 4)), "sample": None}
    arts = {name: optimize(model, dataclasses.replace(cfg, static_shapes=s), tokenizer=tok, sample=sample)
            for name, s in shapes.items()}
    inputs = [dict(tok([t], truncation=True, max_length=arts["sample"].facts.max_length, return_tensors="pt"))
              for t in texts]
    lengths = [x["input_ids"].shape[1] for x in inputs]
    times: dict[str, list[float]] = {k: [] for k in arts}
    rng = random.Random(args.seed)
    for r in range(args.rounds):
        order = list(arts.items())
        rng.shuffle(order)
        for name, art in order:
            for x in inputs:
                start = time.perf_counter()
                art(**x)
                if r:
                    times[name].append(time.perf_counter() - start)
    res = {name: {"p50_ms": 1000 * statistics.median(v), "p90_ms": 1000 * float(np.percentile(v, 90)),
                  "mean_ms": 1000 * statistics.fmean(v), "cosine": arts[name].fidelity.mean_cosine,
                  "compiled_shapes": sorted(arts[name].static)} for name, v in times.items()}
    print(f"timed lengths: p25 {np.percentile(lengths, 25):.0f}, median {np.median(lengths):.0f}, max {max(lengths)}")
    for name, r in res.items():
        print(f"{name:>8}: p50 {r['p50_ms']:.3f} ms  p90 {r['p90_ms']:.3f} ms  mean {r['mean_ms']:.3f} ms  "
              f"cosine {r['cosine']:.6f}  shapes {r['compiled_shapes']}")
    print(json.dumps({"benchmark": "openvino_static", "preset": args.preset, "timed": args.timed, "n": len(texts),
                      "rounds_timed": args.rounds - 1, "threads": args.threads, **res}))


if __name__ == "__main__":
    main()
