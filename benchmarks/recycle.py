"""Embedding recycling on a real task: training from stored states vs recomputing the frozen bottom.

Side by side in one process, same seed, same length-grouped batches, interleaved batch by batch (each
batch is trained by every variant in turn), so a noisy shared machine slows all variants alike:
  stored_<dtype>  layers k..N-1 + head trained from the store (ember's path), float32/float16/bfloat16
  on_the_fly      the same training, the frozen bottom recomputed every step
  full            fine-tuning all layers and the embeddings (first epoch only)
plus store read throughput, and inference through ``use()`` vs plain (also interleaved).

Usage:
  python benchmarks/recycle.py                       # CLINC150, packaged MiniLM-L6, split at 3
  python benchmarks/recycle.py --data ../shared/data/sst2/train.tsv --test-data ../shared/data/sst2/dev.tsv
Prints a final JSON line.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from ember.batching import GroupedBatchSampler, grouped_batches
from ember.data import Examples, load_examples
from ember.models import load_model
from ember.recycle import RecycleConfig, Recycler, evaluate
from ember.recycle.train import adamw, top_parameters
from ember.store.activations import STATES

ROOT = Path(__file__).resolve().parents[1]
ARGS: argparse.Namespace
CLINC = ROOT / ".." / "shared" / "data" / "clinc150"


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(CLINC), help="training data (any ember --data format)")
    p.add_argument("--split", default="train")
    p.add_argument("--test-data", default=None, help="test data (default: --data with --test-split)")
    p.add_argument("--test-split", default="test")
    p.add_argument("--model", default=None, help="model folder or hub id (default: packaged all-MiniLM-L6-v2)")
    p.add_argument("--layer", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2, help="epochs of the stored and on-the-fly runs")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=None, help="first N training examples")
    p.add_argument("--test-limit", type=int, default=None)
    p.add_argument("--dtypes", default="float16,bfloat16", help="extra storage dtypes to train from")
    p.add_argument("--latency-samples", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def subsample(ex: Examples, n: int | None, seed: int) -> Examples:
    """A seeded random subset (datasets such as CLINC150 are sorted by label, so the first N would not do)."""
    if n is None or n >= len(ex):
        return ex
    idx = sorted(random.Random(seed).sample(range(len(ex)), n))
    return Examples([ex.texts[i] for i in idx], None if ex.labels is None else [ex.labels[i] for i in idx], ex.source)


def fresh_model(args, names, init):
    model, tok = load_model(args.model, "classification", label_names=names)
    model.load_state_dict(init)
    return model, tok


class Variant:
    """One training run, advanced a batch at a time so that every variant sees the same machine moments."""

    def __init__(self, name, model, params, make_batch, frozen=()):
        self.name, self.model, self.make_batch, self.frozen = name, model, make_batch, list(frozen)
        self.opt = adamw(params, lr=ARGS.lr, weight_decay=0.01)
        self.seconds: list[float] = []
        self.model.train()

    def step(self, idx) -> None:
        start = time.perf_counter()
        batch = self.make_batch(idx)  # store read + collate, or padding of token ids: part of the cost
        for m in self.frozen:
            m.eval()  # frozen layers run without dropout, as ember stores them
        out = self.model(**batch)
        self.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        self.opt.step()
        self.seconds[-1] += time.perf_counter() - start


def stored_variant(name, rec):
    ds = rec.dataset("train")
    params = top_parameters(rec)
    return Variant(name, rec.model, params, lambda idx: rec.collate(ds.__getitems__(idx)))


def token_variant(name, model, tok, ids, labels, bottom):
    for m in bottom:
        m.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]

    def make(idx):
        batch = tok.pad({"input_ids": [ids[i] for i in idx]}, return_tensors="pt")
        batch["labels"] = torch.tensor([labels[i] for i in idx])
        return batch

    return Variant(name, model, params, make, bottom)


def train_interleaved(variants, first_epoch_only, lengths, epochs, batch_size, seed):
    """Every batch is trained by every variant in turn (order rotated), so load on a shared machine hits all alike."""
    for epoch in range(epochs):
        active = variants + (first_epoch_only if epoch == 0 else [])
        for v in active:
            v.seconds.append(0.0)
        for n, idx in enumerate(grouped_batches(lengths, batch_size, seed=seed + epoch)):
            for k in range(len(active)):
                active[(n + k) % len(active)].step(idx)
        print(json.dumps({"progress": f"epoch {epoch + 1}", **{v.name: v.seconds[-1] for v in active}}), file=sys.stderr)
    for v in variants + first_epoch_only:
        v.model.eval()


@torch.inference_mode()
def accuracy_plain(model, tok, texts, labels, max_length, batch_size=64):
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    correct = 0
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        batch = tok([texts[i] for i in idx], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        correct += int((model(**batch).logits.argmax(-1) == torch.tensor([labels[i] for i in idx])).sum())
    return correct / len(texts)


def read_throughput(rec, split, batch_size):
    """One pass over a split with the training DataLoader and collator, no model."""
    start = time.perf_counter()
    ds = rec.dataset(split)
    keys = ds.keys
    sampler = GroupedBatchSampler(ds.lengths(), batch_size)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=rec.collate)
    tokens = 0
    for batch in loader:
        tokens += int(batch["attention_mask"].sum())
    secs = time.perf_counter() - start
    nbytes = sum(len(v) for v in rec.store.kv.get_many(keys))
    return {
        "seconds": secs,
        "examples_per_s": len(keys) / secs,
        "mb_per_s": nbytes / secs / 1e6,
        "bytes_per_token": nbytes / tokens,
        "store_mb": sum(len(v) for v in rec.store.kv.get_many(list(dict.fromkeys(keys)))) / 1e6,
    }


@torch.inference_mode()
def inference_speed(model, rec, texts, n_latency):
    """Batch-1 latency and batch-32 throughput, plain model vs ``use()`` on stored inputs, interleaved."""
    plain = copy.deepcopy(model)  # the same weights without the recycle hooks
    single = [rec.tokenize([t]) for t in texts[:n_latency]]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    batches = [rec.tokenize([texts[i] for i in order[b : b + 32]]) for b in range(0, len(order), 32)]
    lat = {"plain": [], "use": []}
    thr = {"plain": 0.0, "use": 0.0}
    with rec.use():
        for b in single[:10]:
            plain(**b)
            model(**b)
        for b in single:
            for name, m in (("plain", plain), ("use", model)):
                t = time.perf_counter()
                m(**b)
                lat[name].append(time.perf_counter() - t)
        for b in batches:
            for name, m in (("plain", plain), ("use", model)):
                t = time.perf_counter()
                m(**b)
                thr[name] += time.perf_counter() - t
    p50 = {k: statistics.median(v) * 1e3 for k, v in lat.items()}
    return {
        "batch1_p50_ms_plain": p50["plain"],
        "batch1_p50_ms_use": p50["use"],
        "batch1_speedup": p50["plain"] / p50["use"],
        "batch32_per_s_plain": len(texts) / thr["plain"],
        "batch32_per_s_use": len(texts) / thr["use"],
        "batch32_speedup": thr["plain"] / thr["use"],
    }


def main() -> None:
    global ARGS
    args = ARGS = parse()
    torch.set_num_threads(args.threads)
    train = subsample(load_examples(args.data, split=args.split), args.limit, args.seed)
    test = subsample(load_examples(args.test_data or args.data, split=args.test_split), args.test_limit, args.seed)
    names = train.label_names()
    if names is not None:  # a subsample may miss some labels: evaluate on the labels trained
        keep = [i for i, y in enumerate(test.labels) if str(y) in set(names)]
        test = Examples([test.texts[i] for i in keep], [test.labels[i] for i in keep], test.source)
    y_train, y_test = train.label_ids(names), test.label_ids(names)
    torch.manual_seed(args.seed)
    base, tok = load_model(args.model, "classification", label_names=names)
    init = {k: v.clone() for k, v in base.state_dict().items()}
    dtypes = ["float32"] + [d for d in args.dtypes.split(",") if d]
    result: dict = {
        "benchmark": "recycle",
        "data": args.data,
        "train_examples": len(train),
        "test_examples": len(test),
        "layer": args.layer,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "method": "variants interleaved batch by batch on identical length-grouped batches",
    }
    tmp = Path(tempfile.mkdtemp(prefix="ember-bench-recycle-"))

    # ember: fill a store per storage dtype, then train from it
    recs = {}
    for dtype in dtypes:
        model, tok = fresh_model(args, names, init)
        rec = Recycler(model, tok, tmp / dtype, RecycleConfig(layer=args.layer, dtype=dtype))
        fill = rec.fill(train, labels=y_train, batch_size=64, progress=False)
        result.setdefault("fill_seconds", {})[dtype] = fill.seconds
        recs[dtype] = rec
    rec = recs["float32"]
    result["store_read"] = read_throughput(rec, "train", args.batch_size)
    ids = tok(train.texts, truncation=True, max_length=rec.max_length)["input_ids"]

    # baselines: the bottom recomputed every step; all layers fine-tuned
    fly_model, _ = fresh_model(args, names, init)
    fly_bottom = Recycler(fly_model, tok, None, layer=args.layer).parts.bottom(args.layer)
    full_model, _ = fresh_model(args, names, init)
    stored = {d: stored_variant(f"stored_{d}", r) for d, r in recs.items()}
    fly = token_variant("on_the_fly", fly_model, tok, ids, y_train, fly_bottom)
    full = token_variant("full", full_model, tok, ids, y_train, [])
    contexts = [r.train() for r in recs.values()]
    for c in contexts:
        c.__enter__()
    try:
        train_interleaved([*stored.values(), fly], [full], [len(x) for x in ids], args.epochs, args.batch_size, args.seed)
    finally:
        for c in contexts:
            c.__exit__(None, None, None)

    med = statistics.median
    for d, v in stored.items():
        result[f"stored_{d}"] = {"epoch_seconds": v.seconds, "accuracy": evaluate(recs[d], test.texts, y_test)}
    result["on_the_fly"] = {"epoch_seconds": fly.seconds, "accuracy": accuracy_plain(fly_model, tok, test.texts, y_test, rec.max_length)}
    result["full"] = {"epoch_seconds": full.seconds,
                      "accuracy_after_1_epoch": accuracy_plain(full_model, tok, test.texts, y_test, rec.max_length)}
    for d, r in recs.items():
        result[f"stored_{d}"]["store_mb"] = sum(len(v) for v in r.store.kv.get_many(list(dict.fromkeys(r.store.get_split("train").keys[STATES])))) / 1e6

    rec.fill(test, split="test", progress=False)  # for the inference comparison: every test input is stored
    result["inference"] = inference_speed(rec.model, rec, test.texts, args.latency_samples)

    s, f = med(stored["float32"].seconds), med(fly.seconds)
    first_s = stored["float32"].seconds[0]
    result["summary"] = {
        "epoch_s_stored": s,
        "epoch_s_on_the_fly": f,
        "epoch_s_full_first_epoch": full.seconds[0],
        "speedup_vs_on_the_fly": f / s,
        "speedup_vs_full": full.seconds[0] / first_s,
        # each epoch's ratio on its own: an epoch that shared the CPU with other work shows up as an outlier
        "speedup_vs_on_the_fly_by_epoch": [a / b for a, b in zip(fly.seconds, stored["float32"].seconds, strict=True)],
        "accuracy_stored": result["stored_float32"]["accuracy"],
        "accuracy_on_the_fly": result["on_the_fly"]["accuracy"],
        "accuracy_delta_points": 100 * (result["stored_float32"]["accuracy"] - result["on_the_fly"]["accuracy"]),
        "read_fraction_of_epoch": result["store_read"]["seconds"] / s,
        "size_ratio": {d: result[f"stored_{d}"]["store_mb"] / result["stored_float32"]["store_mb"] for d in dtypes[1:]},
        "accuracy_delta_points_dtype": {
            d: 100 * (result[f"stored_{d}"]["accuracy"] - result["stored_float32"]["accuracy"]) for d in dtypes[1:]
        },
        "use_speedup_batch1": result["inference"]["batch1_speedup"],
        "use_speedup_batch32": result["inference"]["batch32_speedup"],
    }
    for r in recs.values():
        r.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
