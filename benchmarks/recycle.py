"""Embedding recycling on a real task: training from stored states vs recomputing the frozen bottom.

Side by side in one process, same seed and same batches:
  stored      layers k..N-1 + head trained from the store (ember's path)
  on_the_fly  the same training, the frozen bottom recomputed every step
  full        fine-tuning all layers (and the embeddings)
plus float16/bfloat16 storage, store read throughput, and inference through ``use()`` vs plain.

Usage:
  python benchmarks/recycle.py                       # CLINC150, packaged MiniLM-L6, split at 3
  python benchmarks/recycle.py --data ../shared/data/sst2/train.tsv --test-data ../shared/data/sst2/dev.tsv
Prints a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from ember.batching import GroupedBatchSampler
from ember.data import Examples, load_examples
from ember.models import load_model
from ember.recycle import RecycleConfig, Recycler, evaluate, train_top

ROOT = Path(__file__).resolve().parents[1]
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


def train_on_the_fly(model, tok, texts, labels, bottom_modules, *, epochs, batch_size, lr, seed, max_length, freeze):
    """The baseline: same loop, same batches, tokenized up front; the bottom runs every step."""
    if freeze:
        for m in bottom_modules:
            m.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    ids = tok(texts, truncation=True, max_length=max_length)["input_ids"]
    sampler = GroupedBatchSampler([len(x) for x in ids], batch_size, seed=seed)  # the very batches train_top uses
    times = []
    model.train()
    for _ in range(epochs):
        start = time.perf_counter()
        for idx in sampler:
            batch = tok.pad({"input_ids": [ids[i] for i in idx]}, return_tensors="pt")
            if freeze:
                for m in bottom_modules:
                    m.eval()  # frozen layers run without dropout, as ember stores them
            out = model(**batch, labels=torch.tensor([labels[i] for i in idx]))
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
        times.append(time.perf_counter() - start)
    model.eval()
    return times


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
    """Batch-1 latency and batch-32 throughput: plain model vs ``use()`` on stored inputs."""
    sample = texts[:n_latency]
    single = [rec.tokenize([t]) for t in sample]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    batches = [rec.tokenize([texts[i] for i in order[b : b + 32]]) for b in range(0, len(order), 32)]

    def lat(ctx):
        with ctx:
            for b in single[:10]:
                model(**b)
            ts = []
            for b in single:
                t = time.perf_counter()
                model(**b)
                ts.append(time.perf_counter() - t)
        return statistics.median(ts) * 1e3

    def thr(ctx):
        with ctx:
            t = time.perf_counter()
            for b in batches:
                model(**b)
            return len(texts) / (time.perf_counter() - t)

    from contextlib import nullcontext

    plain_ms, use_ms = lat(nullcontext()), lat(rec.use())
    plain_tp, use_tp = thr(nullcontext()), thr(rec.use())
    return {
        "batch1_p50_ms_plain": plain_ms,
        "batch1_p50_ms_use": use_ms,
        "batch1_speedup": plain_ms / use_ms,
        "batch32_per_s_plain": plain_tp,
        "batch32_per_s_use": use_tp,
        "batch32_speedup": use_tp / plain_tp,
    }


def main() -> None:
    args = parse()
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
    }
    tmp = Path(tempfile.mkdtemp(prefix="ember-bench-recycle-"))

    # 1. ember: fill once, then train from the store
    model, tok = fresh_model(args, names, init)
    rec = Recycler(model, tok, tmp / "float32", RecycleConfig(layer=args.layer))
    fill = rec.fill(train, labels=y_train, batch_size=64, progress=False)
    result["fill_seconds"] = fill.seconds
    result["store_read"] = read_throughput(rec, "train", args.batch_size)
    stored = train_top(rec, "train", epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, progress=False)
    result["stored"] = {"epoch_seconds": stored.epoch_seconds, "accuracy": evaluate(rec, test.texts, y_test)}
    print(json.dumps({"progress": "stored", **result["stored"]}), file=sys.stderr)
    rec.fill(test, split="test", progress=False)  # for the inference comparison: every test input is stored
    result["inference"] = inference_speed(model, rec, test.texts, args.latency_samples)
    rec.close()

    # 2. the same training recomputing the frozen bottom every step
    model, tok = fresh_model(args, names, init)
    parts = Recycler(model, tok, None, layer=args.layer).parts
    fly = train_on_the_fly(model, tok, train.texts, y_train, parts.bottom(args.layer), epochs=args.epochs,
                           batch_size=args.batch_size, lr=args.lr, seed=args.seed, max_length=rec.max_length, freeze=True)
    result["on_the_fly"] = {"epoch_seconds": fly, "accuracy": accuracy_plain(model, tok, test.texts, y_test, rec.max_length)}
    print(json.dumps({"progress": "on_the_fly", **result["on_the_fly"]}), file=sys.stderr)

    # 3. full fine-tuning, one epoch
    model, tok = fresh_model(args, names, init)
    full = train_on_the_fly(model, tok, train.texts, y_train, [], epochs=1, batch_size=args.batch_size, lr=args.lr,
                            seed=args.seed, max_length=rec.max_length, freeze=False)
    result["full"] = {"epoch_seconds": full, "accuracy_after_1_epoch": accuracy_plain(model, tok, test.texts, y_test, rec.max_length)}
    print(json.dumps({"progress": "full", **result["full"]}), file=sys.stderr)

    # 4. half-precision storage
    result["dtypes"] = {}
    for dtype in [d for d in args.dtypes.split(",") if d]:
        model, tok = fresh_model(args, names, init)
        rec = Recycler(model, tok, tmp / dtype, RecycleConfig(layer=args.layer, dtype=dtype))
        keys = rec.fill(train, labels=y_train, progress=False).keys
        rep = train_top(rec, "train", epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, progress=False)
        result["dtypes"][dtype] = {
            "epoch_seconds": rep.epoch_seconds,
            "accuracy": evaluate(rec, test.texts, y_test),
            "store_mb": sum(len(v) for v in rec.store.kv.get_many(list(dict.fromkeys(keys)))) / 1e6,
        }
        rec.close()

    med = statistics.median
    s, f, fu = med(result["stored"]["epoch_seconds"]), med(result["on_the_fly"]["epoch_seconds"]), med(result["full"]["epoch_seconds"])
    result["summary"] = {
        "epoch_s_stored": s,
        "epoch_s_on_the_fly": f,
        "epoch_s_full": fu,
        "speedup_vs_on_the_fly": f / s,
        "speedup_vs_full": fu / s,
        "accuracy_stored": result["stored"]["accuracy"],
        "accuracy_on_the_fly": result["on_the_fly"]["accuracy"],
        "accuracy_delta_points": 100 * (result["stored"]["accuracy"] - result["on_the_fly"]["accuracy"]),
        "read_fraction_of_epoch": result["store_read"]["seconds"] / s,
        "size_ratio": {d: v["store_mb"] / result["store_read"]["store_mb"] for d, v in result["dtypes"].items()},
        "accuracy_delta_points_dtype": {d: 100 * (v["accuracy"] - result["stored"]["accuracy"]) for d, v in result["dtypes"].items()},
        "use_speedup_batch1": result["inference"]["batch1_speedup"],
        "use_speedup_batch32": result["inference"]["batch32_speedup"],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
