"""Scale-out on Ray: a recycling fill and batch scoring in one process and on N Ray workers, side by side.

MiniLM-L6 (packaged) on CLINC150 train texts by default:

- Ray start-up: a local instance (or ``--ray ADDRESS``);
- fill: ``Recycler.fill`` of layer-``k`` states in this process, then the same fill with a ``RayExecutor``;
  ``fill_identical`` compares the two stores (same keys, byte-identical values, same fingerprint and split);
- scoring: ``ember.scale.predict`` (mean-pooled embeddings of the plain model, or ``--artifact DIR``) here and on
  Ray; ``inference_identical`` compares the outputs bit for bit;
- per-worker examples/s (time inside ``producer.entries``, measured in each actor), the time to the first result
  (actors starting and unpickling the model), Ray's per-block overhead (a no-op producer on the same actors);
- the driver's commit rate (the single writer), and from it and a worker's rate an estimate of how many workers
  one writer keeps up with and of cluster throughput.

On a 2-core machine the Ray runs cannot be faster than one process (the workers share the cores the single
process used); what is measured is correctness, the overheads, and the rates a cluster estimate needs.

    python benchmarks/ray_scale.py [--limit 4000] [--workers 2]

Prints progress lines on stderr and a final JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from ember.data import load_examples
from ember.models import load_model
from ember.recycle import Recycler
from ember.scale import RayConfig, RayExecutor, connect
from ember.scale.predict import as_scorer, predict
from ember.store import ActivationStore

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "clinc150"


class NoOp:
    """A producer that returns a one-number entry per id list at once: what is left is Ray's cost per block."""

    fingerprint = None

    def entries(self, ids):
        return [{"x": torch.zeros(1)} for _ in ids]


def log(**fields) -> None:
    print(json.dumps({"progress": fields}), file=sys.stderr, flush=True)


def same_store(a: Path, b: Path) -> bool:
    with ActivationStore.open(a, None, readonly=True) as x, ActivationStore.open(b, None, readonly=True) as y:
        ka, kb = sorted(x.kv.keys()), sorted(y.kv.keys())
        return (ka == kb and x.kv.get_many(ka) == y.kv.get_many(kb) and x.fingerprint == y.fingerprint
                and all(x.find_split(s) == y.find_split(s) for s in x.split_names()) and x.split_names() == y.split_names())


def fill_once(model, tok, store: Path, examples, layer: int, batch_size: int, executor=None) -> dict:
    with Recycler(model, tok, store, layer=layer) as rec:
        start = time.perf_counter()
        report = rec.fill(examples, batch_size=batch_size, progress=False, executor=executor)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "examples": report.computed, "examples_per_s": report.computed / seconds}


def commit_rate(store: Path, batch_size: int) -> dict:
    """Entries/s and MB/s the driver commits (decoded entries, re-encoded, one transaction per batch)."""
    with ActivationStore.open(store, None, readonly=True) as src:
        keys = list(src.kv.keys())
        entries = src.get(keys)
        size = sum(len(v) for v in src.kv.get_many(keys))
    with tempfile.TemporaryDirectory(prefix="ember-commit-") as tmp, \
            ActivationStore.open(Path(tmp) / "s", _fingerprint(store)) as dst:
        start = time.perf_counter()
        for b in range(0, len(keys), batch_size):
            dst.put(keys[b : b + batch_size], entries[b : b + batch_size])
        seconds = time.perf_counter() - start
    return {"entries": len(keys), "seconds": seconds, "entries_per_s": len(keys) / seconds, "mb_per_s": size / 1e6 / seconds,
            "bytes_per_entry": size / max(len(keys), 1)}


def _fingerprint(store: Path):
    with ActivationStore.open(store, None, readonly=True) as s:
        return s.fingerprint


def per_block_overhead(config: RayConfig, blocks: int) -> dict:
    executor = RayExecutor(config)
    start = time.perf_counter()
    for _ in executor.map(NoOp(), [[[1, 2, 3]] for _ in range(blocks)]):
        pass
    wall = time.perf_counter() - start
    steady = wall - executor.stats.first_result_s
    return {"blocks": blocks, "seconds": wall, "first_result_s": executor.stats.first_result_s,
            "per_block_ms": 1000 * steady / max(blocks - 1, 1)}


def scoring(model_arg, tok, texts, batch_size: int, executor) -> tuple[dict, dict, bool]:
    scorer = as_scorer(model_arg, tokenizer=tok)
    here = predict(scorer, texts, batch_size=batch_size, progress=False)
    there = predict(scorer, texts, batch_size=batch_size, executor=executor, progress=False)
    stats = executor.stats.to_dict()
    a = {"seconds": here.seconds, "examples_per_s": len(texts) / here.seconds, "kind": here.kind}
    b = {"seconds": there.seconds, "examples_per_s": len(texts) / there.seconds, "first_result_s": stats["first_result_s"],
         "steady_examples_per_s": _steady(len(texts), there.seconds, stats["first_result_s"]), "workers": stats["workers"]}
    return a, b, torch.equal(here.outputs, there.outputs)


def _steady(examples: int, seconds: float, first_result_s: float) -> float:
    """Examples/s once the actors run: the wall time after the first result (actors started, model loaded)."""
    return examples / (seconds - first_result_s) if seconds > first_result_s else 0.0


def estimate(single_rate: float, commit: dict, workers: list[float]) -> dict:
    """Cluster throughput if each worker had a machine like this one to itself (the single-process rate), capped
    by what the one writer commits; and what the contended workers measured here add up to."""
    per_node = single_rate
    keeps_up = commit["entries_per_s"] / per_node
    return {
        "assumed_worker_examples_per_s": per_node,
        "measured_worker_examples_per_s_here": workers,
        "workers_one_writer_keeps_up_with": keeps_up,
        "examples_per_s_at": {str(n): min(n * per_node, commit["entries_per_s"]) for n in (2, 8, 32, 128)},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--split", default="train")
    ap.add_argument("--model", default=None, help="model folder or hub id (default: packaged all-MiniLM-L6-v2)")
    ap.add_argument("--artifact", default=None, help="score with this optimised artifact folder instead of the model")
    ap.add_argument("--text-column", default=None)
    ap.add_argument("--label-column", default=None)
    ap.add_argument("--limit", type=int, default=None, help="first N rows (default: all)")
    ap.add_argument("--layer", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64, help="fill batch (examples per block)")
    ap.add_argument("--predict-batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--ray", default="local", help="Ray address ('local' starts one here)")
    ap.add_argument("--noop-blocks", type=int, default=200)
    args = ap.parse_args()

    examples = load_examples(args.data, split=args.split, text_column=args.text_column, label_column=args.label_column,
                             limit=args.limit)
    model, tok = load_model(args.model, "embedding")
    threads = torch.get_num_threads()
    log(step="loaded", rows=len(examples), threads=threads)
    start = time.perf_counter()
    cluster = connect(RayConfig(address=args.ray))
    ray_start = time.perf_counter() - start
    config = RayConfig(address=args.ray, workers=args.workers)
    log(step="ray started", seconds=ray_start, cpus=cluster.cpus)

    work = Path(tempfile.mkdtemp(prefix="ember-ray-scale-"))
    try:
        single = fill_once(model, tok, work / "single", examples, args.layer, args.batch_size)
        log(step="fill, one process", **single)
        executor = RayExecutor(config)
        on_ray = fill_once(model, tok, work / "ray", examples, args.layer, args.batch_size, executor)
        fill_stats = executor.stats.to_dict()
        on_ray.update(first_result_s=fill_stats["first_result_s"], workers=fill_stats["workers"],
                      steady_examples_per_s=_steady(on_ray["examples"], on_ray["seconds"], fill_stats["first_result_s"]))
        log(step="fill, Ray", **{k: v for k, v in on_ray.items() if k != "workers"})
        identical = same_store(work / "single", work / "ray")
        commit = commit_rate(work / "single", args.batch_size)
        log(step="commit rate", **commit)
        noop = per_block_overhead(config, args.noop_blocks)
        log(step="per-block overhead", **noop)
        score_here, score_ray, inference_identical = scoring(args.artifact or model, tok, examples.texts,
                                                             args.predict_batch_size, RayExecutor(config))
        log(step="scoring", here=score_here["examples_per_s"], ray=score_ray["examples_per_s"], identical=inference_identical)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    worker_rates = [w["examples_per_s"] for w in on_ray["workers"].values()]
    result = {
        "benchmark": "ray_scale", "data": args.data, "split": args.split, "rows": len(examples),
        "rows_evaluated": f"the first {len(examples)} rows of {args.split}" if args.limit else f"all {len(examples)} rows of {args.split}",
        "model": args.model or "all-MiniLM-L6-v2 (packaged)", "scored_with": args.artifact or "the plain model (mean-pooled)",
        "layer": args.layer, "workers": args.workers, "threads": threads, "cpus": os.cpu_count(), "torch": torch.__version__,
        "host": platform.node(), "ray_start_s": ray_start, "ray_cpus": cluster.cpus,
        "fill": {"single": single, "ray": on_ray}, "fill_identical": identical,
        "inference": {"single": score_here, "ray": score_ray}, "inference_identical": inference_identical,
        "single_examples_per_s": single["examples_per_s"], "ray_examples_per_s": on_ray["examples_per_s"],
        "ray_vs_single": on_ray["examples_per_s"] / single["examples_per_s"],
        "ray_steady_vs_single": on_ray["steady_examples_per_s"] / single["examples_per_s"],
        "inference_ray_vs_single": score_ray["examples_per_s"] / score_here["examples_per_s"],
        "inference_ray_steady_vs_single": score_ray["steady_examples_per_s"] / score_here["examples_per_s"],
        "commit": commit, "per_block": noop,
        "estimate": estimate(single["examples_per_s"], commit, worker_rates),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
