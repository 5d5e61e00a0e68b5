"""Embedding recycling on a real task: training from stored states vs recomputing the frozen bottom.

Side by side in one process, same seed, same length-grouped batches, interleaved batch by batch (each
batch is trained by every variant in turn), so a noisy shared machine slows all variants alike:
  stored_<dtype>  layers k..N-1 + head trained from the store (ember's path), float32/float16/bfloat16
  on_the_fly      the same training, the frozen bottom recomputed every step
  lora_top        LoRA adapters on layers k..N-1 (query, value) + the head, trained from the float32 store
                  (PEFT; the same stored states as stored_float32, whose fingerprint is the frozen bottom's)
  full            fine-tuning all layers and the embeddings (first epoch only)
plus store read throughput, and inference through ``use()`` vs plain (measured by the benchmark harness,
interleaved). Training steps are timed with ``ember.bench.timing.interleave`` (every batch through every
variant, the first one place on from batch to batch); an epoch's time is the sum of its steps.

Rows: training on ``--data``'s ``--split`` (default: CLINC150's train split), test accuracy on ``--test-data``'s
``--test-split`` (default: the same data's test split), keeping the rows whose labels were trained on. A file
without splits needs ``--test-data``: testing on the training rows is refused.

Usage:
  python benchmarks/recycle.py                       # CLINC150, packaged MiniLM-L6, split at 3
  python benchmarks/recycle.py --data ../shared/data/sst2/train.tsv --test-data ../shared/data/sst2/dev.tsv
Prints the rows used, then a final JSON line.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from ember.batching import GroupedBatchSampler, grouped_batches
from ember.bench import BenchConfig, Laps, PerformanceBenchmark, Variant, interleave
from ember.bench.rows import announce, choose, data_options, load_rows
from ember.data import Examples
from ember.errors import EmberWarning
from ember.models import load_model
from ember.recycle import RecycleConfig, Recycler, evaluate
from ember.recycle.train import adamw, top_parameters
from ember.store.activations import STATES

ROOT = Path(__file__).resolve().parents[1]
ARGS: argparse.Namespace
CLINC = ROOT / ".." / "shared" / "data" / "clinc150"


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data_options(p, data=CLINC, split="train")
    p.add_argument("--test-data", default=None, help="test data (default: --data with --test-split)")
    p.add_argument("--test-split", default=None, help="split of the test data (default: test for the default data)")
    p.add_argument("--layer", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2, help="epochs of the stored and on-the-fly runs")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=None, help="training examples, a seeded random subset (default: all)")
    p.add_argument("--test-limit", type=int, default=None)
    p.add_argument("--dtypes", default="float16,bfloat16", help="extra storage dtypes to train from")
    p.add_argument("--lora-r", type=int, default=8, help="LoRA rank of the lora_top variant (0: leave it out)")
    p.add_argument("--lora-lr", type=float, default=1e-3, help="learning rate of the lora_top variant")
    p.add_argument("--latency-samples", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def rows(args) -> tuple[Examples, Examples, dict]:
    """Training rows and the test rows whose labels were trained on; refuses testing on the training rows."""
    full, train_rows = load_rows(args, "train", split=args.split, default_split="train")
    if full.labels is None:
        raise SystemExit(f"{train_rows.source} has no labels; training needs them (pass --label-column)")
    train, how = choose(full, args.limit, "random", args.seed)  # datasets sorted by label: the first N would not do
    train_rows = dataclasses.replace(train_rows, count=len(train), how=how)
    test, test_rows = load_rows(args, "test", data=args.test_data, split=args.test_split, default_split="test")
    if test.texts == full.texts:
        raise SystemExit(f"the test rows are the training rows ({test_rows.describe()}): pass --test-data (and "
                         "--test-split) naming other rows")
    test, how = choose(test, args.test_limit, "random", args.seed)
    names = set(train.label_names() or [])
    if names:  # a subsample may miss some labels: evaluate on the labels trained
        keep = [i for i, y in enumerate(test.labels) if str(y) in names]
        test = Examples([test.texts[i] for i in keep], [test.labels[i] for i in keep], test.source)
        how += f", the {len(test):,} with trained labels"
    test_rows = dataclasses.replace(test_rows, count=len(test), how=how)
    return train, test, announce(train_rows, test_rows)


def fresh_model(args, names, init):
    model, tok = load_model(args.model, "classification", label_names=names)
    model.load_state_dict(init)
    return model, tok


class Run:
    """One training run, advanced a batch at a time so that every run sees the same machine moments."""

    def __init__(self, name, model, params, make_batch, frozen=(), lr=None):
        self.name, self.model, self.make_batch, self.frozen = name, model, make_batch, list(frozen)
        self.opt = adamw(params, lr=lr or ARGS.lr, weight_decay=0.01)
        self.seconds: list[float] = []  # per epoch: the sum of its steps' laps
        self.model.train()

    def step(self, idx) -> None:
        batch = self.make_batch(idx)  # store read + collate, or padding of token ids: part of the cost
        for m in self.frozen:
            m.eval()  # frozen layers run without dropout, as ember stores them
        out = self.model(**batch)
        self.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        self.opt.step()


def stored_run(name, rec, lr=None):
    ds = rec.dataset("train")
    params = top_parameters(rec)
    return Run(name, rec.model, params, lambda idx: rec.collate(ds.__getitems__(idx)), lr=lr)


def lora_recycler(args, names, init, tok, store):
    """The model with LoRA on the attention of layers k..N-1 (PEFT), recycling the float32 store as it is.

    The frozen bottom carries no adapter, so the fingerprint is the plain model's and the open store is shared.
    """
    try:
        import peft
    except ImportError as e:
        raise SystemExit("the lora_top variant needs peft: pip install 'ember[dev]' (or pass --lora-r 0)") from e
    model, _ = fresh_model(args, names, init)
    n = model.config.num_hidden_layers
    config = peft.LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.1, task_type="SEQ_CLS",
                             target_modules=["query", "value"], layers_to_transform=list(range(args.layer, n)))
    return Recycler(peft.get_peft_model(model, config), tok, store, RecycleConfig(layer=args.layer))


def token_run(name, model, tok, ids, labels, bottom):
    for m in bottom:
        m.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]

    def make(idx):
        batch = tok.pad({"input_ids": [ids[i] for i in idx]}, return_tensors="pt")
        batch["labels"] = torch.tensor([labels[i] for i in idx])
        return batch

    return Run(name, model, params, make, bottom)


def train_interleaved(runs, first_epoch_only, lengths, epochs, batch_size, seed):
    """Every batch is trained by every run in turn (order rotated), so load on a shared machine hits all alike."""
    for epoch in range(epochs):
        active = runs + (first_epoch_only if epoch == 0 else [])
        laps = interleave({r.name: r.step for r in active}, grouped_batches(lengths, batch_size, seed=seed + epoch))
        for r in active:
            r.seconds.append(laps.stats()[r.name].total_s)
        print(json.dumps({"progress": f"epoch {epoch + 1}", **{r.name: r.seconds[-1] for r in active}}), file=sys.stderr)
    for r in runs + first_epoch_only:
        r.model.eval()


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
    laps = Laps()
    tokens = 0
    with laps.lap("read"):
        ds = rec.dataset(split)
        keys = ds.keys
        sampler = GroupedBatchSampler(ds.lengths(), batch_size)
        loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=rec.collate)
        for batch in loader:
            tokens += int(batch["attention_mask"].sum())
    secs = laps.seconds("read")[0]
    nbytes = sum(len(v) for v in rec.store.kv.get_many(keys))
    return {
        "seconds": secs,
        "examples_per_s": len(keys) / secs,
        "mb_per_s": nbytes / secs / 1e6,
        "bytes_per_token": nbytes / tokens,
        "store_mb": sum(len(v) for v in rec.store.kv.get_many(list(dict.fromkeys(keys)))) / 1e6,
    }


def inference_speed(model, rec, texts, n_latency):
    """Batch-1 latency and batch-32 throughput, plain model vs ``use()`` on stored inputs, through the harness
    interleaved (every round, each in turn runs its latency block and its passes)."""
    plain = copy.deepcopy(model)  # the same weights without the recycle hooks
    config = BenchConfig(batch_size=32, latency_samples=n_latency, warmup=10, throughput_examples=len(texts),
                         repeats=1, max_length=rec.max_length, threads=torch.get_num_threads(), interleave=True)
    bench = PerformanceBenchmark(rec.tokenizer, texts, config=config, progress=False)
    with rec.use():
        report = bench.run([Variant("plain", plain, reference=True), Variant("use", model)])
    p, u = report.result("plain"), report.result("use")
    for r in (p, u):
        if r.error:
            raise RuntimeError(f"{r.name}: {r.error}")
    return {
        "batch1_p50_ms_plain": p.p50,
        "batch1_p50_ms_use": u.p50,
        "batch1_speedup": p.p50 / u.p50,
        "batch32_per_s_plain": p.throughput,
        "batch32_per_s_use": u.throughput,
        "batch32_speedup": u.throughput / p.throughput,
        "use_vs_plain_mean_cosine": u.fidelity.mean_cosine,
    }


def accuracy_stored(rec, texts, ids) -> float:
    """``evaluate`` on class ids that are the head's positions by construction (``label_ids(names)`` built both
    the head and the stored labels), so its warning that ids are compared by position does not apply here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "the evaluation labels are class ids", EmberWarning)
        return evaluate(rec, texts, ids)


def store_mb(rec) -> float:
    keys = rec.store.get_split("train").keys[STATES]
    return sum(len(v) for v in rec.store.kv.get_many(list(dict.fromkeys(keys)))) / 1e6


def fill_stores(args, train, y_train, names, init, tmp, dtypes, result):
    """A store per storage dtype, each filled from the training rows (ember's path)."""
    recs = {}
    for dtype in dtypes:
        model, tok = fresh_model(args, names, init)
        rec = Recycler(model, tok, tmp / dtype, RecycleConfig(layer=args.layer, dtype=dtype))
        fill = rec.fill(train, labels=y_train, batch_size=64, progress=False)
        result.setdefault("fill_seconds", {})[dtype] = fill.seconds
        recs[dtype] = rec
    return recs


def train_all(args, recs, tok, ids, y_train, names, init):
    """Stored runs (full top and LoRA top), the bottom recomputed ("on the fly") and full fine-tuning (first
    epoch), interleaved."""
    fly_model, _ = fresh_model(args, names, init)
    fly_bottom = Recycler(fly_model, tok, None, layer=args.layer).parts.bottom(args.layer)
    full_model, _ = fresh_model(args, names, init)
    stored = {d: stored_run(f"stored_{d}", r) for d, r in recs.items()}
    training = list(recs.values())
    if args.lora_r:
        training.append(lora := lora_recycler(args, names, init, tok, recs["float32"].store))
        stored["lora_top"] = stored_run("lora_top", lora, lr=args.lora_lr)
    fly = token_run("on_the_fly", fly_model, tok, ids, y_train, fly_bottom)
    full = token_run("full", full_model, tok, ids, y_train, [])
    contexts = [r.train() for r in training]
    for c in contexts:
        c.__enter__()
    try:
        train_interleaved([*stored.values(), fly], [full], [len(x) for x in ids], args.epochs, args.batch_size, args.seed)
    finally:
        for c in contexts:
            c.__exit__(None, None, None)
    return stored, fly, full, (lora if args.lora_r else None)


def summarise(result, stored, fly, full, dtypes):
    med = statistics.median
    s, f = med(stored["float32"].seconds), med(fly.seconds)
    first_s = stored["float32"].seconds[0]
    return {
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
        **lora_summary(result, stored),
    }


def lora_summary(result, stored) -> dict:
    """LoRA top against full-top training from the same store, same batches, same run."""
    if "lora_top" not in stored:
        return {}
    lora, top = stored["lora_top"].seconds, stored["float32"].seconds
    return {
        "epoch_s_lora_top": statistics.median(lora),
        "lora_top_epoch_vs_full_top": statistics.median(lora) / statistics.median(top),
        "lora_top_epoch_vs_full_top_by_epoch": [a / b for a, b in zip(lora, top, strict=True)],
        "accuracy_lora_top": result["lora_top"]["accuracy"],
        "accuracy_delta_points_lora_vs_full_top": 100 * (result["lora_top"]["accuracy"] - result["stored_float32"]["accuracy"]),
        "trainable_params_lora_top": result["lora_top"]["trainable_params"],
        "trainable_params_full_top": result["stored_float32"]["trainable_params"],
    }


def main() -> None:
    global ARGS
    args = ARGS = parse()
    torch.set_num_threads(args.threads)
    train, test, used = rows(args)
    names = train.label_names()
    y_train, y_test = train.label_ids(names), test.label_ids(names)
    torch.manual_seed(args.seed)
    base, tok = load_model(args.model, "classification", label_names=names)
    init = {k: v.clone() for k, v in base.state_dict().items()}
    dtypes = list(dict.fromkeys(["float32"] + [d for d in args.dtypes.split(",") if d]))  # float32 always, once
    result: dict = {
        "benchmark": "recycle", "data": args.data, "rows": used, "train_examples": len(train),
        "test_examples": len(test), "layer": args.layer, "epochs": args.epochs, "batch_size": args.batch_size,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "method": "variants interleaved batch by batch on identical length-grouped batches",
    }
    recs = fill_stores(args, train, y_train, names, init, Path(tempfile.mkdtemp(prefix="ember-bench-recycle-")), dtypes,
                       result)
    rec = recs["float32"]
    result["store_read"] = read_throughput(rec, "train", args.batch_size)
    ids = tok(train.texts, truncation=True, max_length=rec.max_length)["input_ids"]
    stored, fly, full, lora = train_all(args, recs, tok, ids, y_train, names, init)
    for d, v in stored.items():
        r = lora if d == "lora_top" else recs[d]
        key = d if d == "lora_top" else f"stored_{d}"
        result[key] = {"epoch_seconds": v.seconds, "accuracy": accuracy_stored(r, test.texts, y_test),
                       "trainable_params": sum(p.numel() for p in top_parameters(r)),
                       **({"lr": args.lora_lr, "r": args.lora_r} if r is lora else {"store_mb": store_mb(r)})}
    # lora_top's recycler is not closed: it holds the float32 recycler's open store, closed once below
    result["on_the_fly"] = {"epoch_seconds": fly.seconds, "accuracy": accuracy_plain(fly.model, tok, test.texts, y_test, rec.max_length)}
    result["full"] = {"epoch_seconds": full.seconds,
                      "accuracy_after_1_epoch": accuracy_plain(full.model, tok, test.texts, y_test, rec.max_length)}
    rec.fill(test, split="test", progress=False)  # for the inference comparison: every test input is stored
    result["inference"] = inference_speed(rec.model, rec, test.texts, args.latency_samples)
    result["summary"] = summarise(result, stored, fly, full, dtypes)
    for r in recs.values():
        r.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
