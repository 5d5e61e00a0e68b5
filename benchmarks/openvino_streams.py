"""Batch throughput of ember's OpenVINO artifacts with batches split over streams, against one request.

Builds each preset twice from the same model and sample: ``streams=1`` (every batch one request on every
thread) and ``streams=N`` (each batch cut into N parts run side by side on N OpenVINO streams, the default
being 2 at 2 threads). Then times passes over the same real sentences at batch 32, length-bucketed and in
dataset order, the two variants alternating pass by pass (their order flipped every round) so a slow spell of
this shared machine falls on both; the first round warms up and is not counted.

    python benchmarks/openvino_streams.py [--presets openvino,openvino-bf16,openvino-int8] [--n 2000] [--rounds 8]

The last line is JSON with the median sentences/s of each variant and their ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch

from ember.batching import length_buckets
from ember.data import load_examples, spread
from ember.models import load_model
from ember.optimize import optimize, preset

CLINC = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "clinc150"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(CLINC), help="timed sentences (default: CLINC150 test split)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--model", default=None, help="model folder or hub id (default: packaged all-MiniLM-L6-v2)")
    ap.add_argument("--presets", default="openvino,openvino-bf16,openvino-int8")
    ap.add_argument("--n", type=int, default=2000, help="sentences per pass")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--streams", type=int, default=2)
    args = ap.parse_args()
    if args.rounds < 2:
        ap.error("--rounds must be >= 2 (the first round warms up and is not counted)")
    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model, "embedding")
    texts = list(load_examples(args.data, split=args.split).texts)[: args.n]
    train = list(load_examples(CLINC, split="train").texts)
    sample = spread(train, 256)  # calibration / shapes / fidelity: never the timed sentences
    lengths = [len(x) for x in tok(texts, truncation=True, max_length=128)["input_ids"]]

    def batches(sort: bool) -> list[dict[str, torch.Tensor]]:
        return [dict(tok([texts[i] for i in g], padding=True, truncation=True, max_length=128, return_tensors="pt"))
                for g in length_buckets(lengths, args.batch, sort=sort)]

    passes = {"bucketed": batches(True), "dataset order": batches(False)}
    result: dict[str, dict] = {}
    for name in args.presets.split(","):
        cfg = dataclasses.replace(preset(name), threads=args.threads)
        arts = {f"streams={s}": optimize(model, dataclasses.replace(cfg, streams=s), tokenizer=tok, sample=sample)
                for s in (1, args.streams)}
        first = next(iter(arts.values()))
        x = passes["bucketed"][-1]
        for art in arts.values():  # same outputs either way (checked here on the longest batch)
            assert torch.allclose(art(**x).last_hidden_state, first(**x).last_hidden_state, atol=1e-4)
        rates: dict[str, dict[str, list[float]]] = {v: {p: [] for p in passes} for v in arts}
        for r in range(args.rounds):
            order = list(arts.items()) if r % 2 else list(arts.items())[::-1]
            for pname, bs in passes.items():
                for vname, art in order:
                    start = time.perf_counter()
                    for b in bs:
                        art(**b)
                    if r:
                        rates[vname][pname].append(len(texts) / (time.perf_counter() - start))
        med = {v: {p: statistics.median(x) for p, x in ps.items()} for v, ps in rates.items()}
        one, split = med["streams=1"], med[f"streams={args.streams}"]
        result[name] = {"sent_s": med, "ratio": {p: split[p] / one[p] for p in passes},
                        "cosine": {v: a.fidelity.mean_cosine for v, a in arts.items()}}
        for p in passes:
            print(f"{name:>14} {p:>13}: streams=1 {one[p]:7,.0f} sent/s   streams={args.streams} {split[p]:7,.0f} sent/s"
                  f"   x{split[p] / one[p]:.2f}", flush=True)
    print(json.dumps({"benchmark": "openvino_streams", "n": len(texts), "batch": args.batch, "threads": args.threads,
                      "rounds_timed": args.rounds - 1, "results": result}))


if __name__ == "__main__":
    main()
