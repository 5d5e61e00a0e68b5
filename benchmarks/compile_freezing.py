"""ember's torch.compile presets with and without inductor's weight freezing, side by side, against eager PyTorch.

Builds ``compile`` and ``compile-bf16`` twice each through ``ember.optimize`` (``freezing=True``, the default,
and ``freezing=False``; each from its own copy of the model, verified against it), then times them with eager
PyTorch fp32 and bf16 on the inputs of ``peers.py`` (MiniLM-L6, CLINC150 test sentences): batch-1 latency over
``--latency-n`` sentences and batch-32 passes over ``--throughput-n``, every engine in turn for ``--repeats``
rounds (``peers.measure_interleaved``), so a slow spell of this shared machine falls on all of them.

    flock /tmp/ember-bench.lock python benchmarks/compile_freezing.py [--repeats 3]

The last line is JSON: each variant's figures and the frozen/unfrozen ratios.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import os
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import DATA, Inputs, measure_interleaved, pool, torch_engine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder (default: packaged all-MiniLM-L6-v2)")
    ap.add_argument("--data", default=str(DATA), help="CLINC150 data_full.json")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--latency-n", type=int, default=300)
    ap.add_argument("--throughput-n", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(args.threads)
    from ember.data import load_examples, spread
    from ember.models import load_model
    from ember.optimize import optimize, preset

    model, tok = load_model(args.model, "embedding")
    inp = Inputs(tok, list(load_examples(args.data, split="test").texts), args.latency_n, args.throughput_n, 32)
    sample = spread(list(load_examples(args.data, split="train").texts), 256)  # never the timed sentences
    base = torch_engine(model, False)
    ref = [pool(base(b), b["attention_mask"]) for b in inp.fidelity]
    fns = {"pytorch-fp32": base, "pytorch-bf16": torch_engine(model, True)}
    for name in ("compile", "compile-bf16"):
        for freezing in (False, True):
            # each variant from its own copy of the model, as a user with two artifacts would have
            art = optimize(copy.deepcopy(model), dataclasses.replace(preset(name), freezing=freezing), tokenizer=tok,
                           sample=sample)
            print(f"built ember-{name} freezing={freezing}: mean cosine {art.fidelity.mean_cosine:.6f}", flush=True)

            def fn(b, art=art):
                return art(**{k: torch.from_numpy(v) for k, v in b.items()}).last_hidden_state.numpy()

            fns[f"ember-{name} freezing={freezing}"] = fn
    results = measure_interleaved(fns, inp, ref, args.repeats)
    print("| engine | p50 ms | p90 ms | sent/s b32 bucketed | sent/s b32 dataset order | cosine |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        r.pop("_pooled", None)
        if "error" in r:
            print(f"| {name} | {r['error']} | | | | |")
            continue
        print(f"| {name} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['throughput']:,.0f} | "
              f"{r['throughput_unbucketed']:,.0f} | {r['cosine']:.6f} |")
    ratios = {}
    for name in ("compile", "compile-bf16"):
        off, on = results[f"ember-{name} freezing=False"], results[f"ember-{name} freezing=True"]
        if "error" not in off and "error" not in on:
            ratios[name] = {"p50 speed-up": off["p50_ms"] / on["p50_ms"],
                            "throughput ratio": on["throughput"] / off["throughput"]}
            print(f"{name}: freezing makes batch-1 p50 x{ratios[name]['p50 speed-up']:.2f} faster, "
                  f"bucketed batch-32 throughput x{ratios[name]['throughput ratio']:.2f}")
    print(json.dumps({"benchmark": "compile_freezing", "threads": args.threads, "results": results, "ratios": ratios}))


if __name__ == "__main__":
    main()
