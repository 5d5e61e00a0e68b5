"""Frozen-encoder cache on CLINC150: epoch time with and without the cache, a second process from save_dir.

Frozen MiniLM-L6 (packaged), mean pooling, a linear head over the 150 in-scope intents.

- no cache: one real epoch that tokenizes and runs the encoder for every batch (shuffled, batch 32);
- cold: ``EncoderCache.fill`` of the train split plus one epoch from the cache;
- warm: the following epochs (median);
- second process: a fresh Python process that loads the model, opens ``save_dir`` (fingerprint checked)
  and runs its first training step; measured from the start of loading (and from process start).

    flock /tmp/ember-bench.lock python benchmarks/encoder_cache.py --limit 2000

Prints a final JSON line.
"""

from __future__ import annotations

import time

T_PROCESS = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

from ember.data import Examples, load_examples  # noqa: E402
from ember.encoders import CacheConfig, EncoderCache  # noqa: E402
from ember.fidelity import mean_pool  # noqa: E402
from ember.models import default_model_path  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "clinc150"


@dataclass
class CacheBenchResult:
    model: str
    train_examples: int
    test_examples: int
    epochs: int
    batch_size: int
    threads: int
    no_cache_epoch_s: float
    cold_fill_s: float
    cold_epoch_s: float
    warm_epoch_median_s: float
    warm_speedup_vs_no_cache: float
    warm_speedup_vs_fill: float
    cold_speedup_vs_no_cache: float
    second_process_load_to_first_step_s: float
    second_process_start_to_first_step_s: float
    second_process_table_rows: int
    test_fill_s: float
    accuracy: float
    cache_vs_recomputed_max_abs_diff: float
    no_cache_measured_on: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CacheBenchResult:
        return cls(**d)


def subset(ex: Examples, n: int | None) -> Examples:
    """A seeded random subset (CLINC150 files are grouped by intent, so the first n would hold few intents)."""
    if n is None or n >= len(ex):
        return ex
    idx = sorted(random.Random(0).sample(range(len(ex)), n))
    return Examples([ex.texts[i] for i in idx], [ex.labels[i] for i in idx], ex.source)  # type: ignore[index]


def make_head(dim: int, classes: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(dim, classes)


def train_step(head: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    loss = nn.functional.cross_entropy(head(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def epoch_from_cache(head, opt, ds, batch_size: int) -> float:
    start = time.perf_counter()
    for batch in ds.loader(batch_size, shuffle=True):
        train_step(head, opt, batch["text"], batch["labels"])
    return time.perf_counter() - start


def epoch_without_cache(head, opt, model, tok, texts, labels, batch_size: int) -> float:
    """What training a head on a frozen encoder costs without a cache: encode every batch, every epoch."""
    start = time.perf_counter()
    order = torch.randperm(len(texts)).tolist()
    y_all = torch.tensor(labels)
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.no_grad():
            x = mean_pool(model(**enc).last_hidden_state, enc["attention_mask"])  # (B, H)
        train_step(head, opt, x, y_all[idx])
    return time.perf_counter() - start


def second_process(args) -> None:
    """Child: load, open save_dir, first training step; print timings as JSON."""
    torch.set_num_threads(args.threads)
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path = args.model or str(default_model_path())
    # Python imports (transformers' modeling code alone takes ~2.5 s here) are process start, not loading:
    # they are in start_to_first_step_s only.
    model_class = AutoModel._model_mapping[type(AutoConfig.from_pretrained(path))]
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(path)
    model = model_class.from_pretrained(path).eval().requires_grad_(False)
    cache = EncoderCache(model, tok, CacheConfig(save_dir=args.save_dir, placement="cpu"))
    ds = cache.dataset("train", device="cpu")
    head = make_head(model.config.hidden_size, len(cache.label_names or []))
    opt = torch.optim.Adam(head.parameters(), lr=args.lr)
    batch = next(iter(ds.loader(args.batch_size)))
    train_step(head, opt, batch["text"], batch["labels"])
    t1 = time.perf_counter()
    rows = next(iter(cache._sources.values())).matrix.shape[0]
    print(json.dumps({"load_to_first_step_s": t1 - t0, "start_to_first_step_s": t1 - T_PROCESS, "rows": rows}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--model", default=None, help="model folder (default: packaged all-MiniLM-L6-v2)")
    ap.add_argument("--limit", type=int, default=None, help="train examples (default: all 15,000)")
    ap.add_argument("--test-limit", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--save-dir", default=None)
    ap.add_argument("--second-process", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.second_process:
        second_process(args)
        return
    torch.set_num_threads(args.threads)
    from transformers import AutoModel, AutoTokenizer

    train = subset(load_examples(args.data, split="train"), args.limit)
    names = train.label_names() or []
    test = load_examples(args.data, split="test")
    keep = [i for i, y in enumerate(test.labels or []) if y in set(names)]  # intents the head has seen
    test = subset(Examples([test.texts[i] for i in keep], [test.labels[i] for i in keep], test.source), args.test_limit)
    y_train, y_test = train.label_ids(names), test.label_ids(names)
    path = args.model or str(default_model_path())
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval().requires_grad_(False)
    dim = model.config.hidden_size
    own_dir = args.save_dir is None
    save_dir = Path(args.save_dir or tempfile.mkdtemp(prefix="ember-cache-bench-"))
    shutil.rmtree(save_dir, ignore_errors=True)
    try:
        # Warm up the encoder and the allocator (not measured).
        with torch.no_grad():
            model(**tok(train.texts[:32], padding=True, return_tensors="pt"))

        head = make_head(dim, len(names))
        opt = torch.optim.Adam(head.parameters(), lr=args.lr)
        no_cache = epoch_without_cache(head, opt, model, tok, train.texts, y_train, args.batch_size)

        cache = EncoderCache(model, tok, CacheConfig(save_dir=save_dir, placement="cpu", batch_size=64))
        head = make_head(dim, len(names))
        opt = torch.optim.Adam(head.parameters(), lr=args.lr)
        t = time.perf_counter()
        cache.fill(train, labels=train.labels, split="train", progress=False)
        ds = cache.dataset("train", device="cpu")
        fill_s = time.perf_counter() - t
        cold = fill_s + epoch_from_cache(head, opt, ds, args.batch_size)
        warm = [epoch_from_cache(head, opt, ds, args.batch_size) for _ in range(args.epochs - 1)]

        t = time.perf_counter()
        cache.fill(test, labels=test.labels, split="test", progress=False)
        test_fill = time.perf_counter() - t
        test_ds = cache.dataset("test", device="cpu")
        with torch.no_grad():
            b = test_ds.collate(range(len(test_ds)))
            acc = (head(b["text"]).argmax(-1) == b["labels"]).float().mean().item()
            sample = test.texts[:64]
            enc = tok(sample, padding=True, truncation=True, return_tensors="pt")
            ref = mean_pool(model(**enc).last_hidden_state, enc["attention_mask"])
            diff = (cache.embed(sample)["text"] - ref).abs().max().item()
        assert y_test is not None
        cache.close()

        child = subprocess.run(
            [sys.executable, __file__, "--second-process", "--save-dir", str(save_dir), "--threads", str(args.threads),
             "--batch-size", str(args.batch_size), *(["--model", args.model] if args.model else [])],
            capture_output=True, text=True, check=True,
        )
        second = json.loads(child.stdout.strip().splitlines()[-1])
    finally:
        if own_dir:
            shutil.rmtree(save_dir, ignore_errors=True)
    warm_med = statistics.median(warm) if warm else float("nan")
    res = CacheBenchResult(
        model=Path(path).name, train_examples=len(train), test_examples=len(test), epochs=args.epochs,
        batch_size=args.batch_size, threads=args.threads, no_cache_epoch_s=round(no_cache, 3), cold_fill_s=round(fill_s, 3),
        cold_epoch_s=round(cold, 3), warm_epoch_median_s=round(warm_med, 4),
        warm_speedup_vs_no_cache=round(no_cache / warm_med, 1), warm_speedup_vs_fill=round(fill_s / warm_med, 1), cold_speedup_vs_no_cache=round(no_cache / cold, 2),
        second_process_load_to_first_step_s=round(second["load_to_first_step_s"], 3),
        second_process_start_to_first_step_s=round(second["start_to_first_step_s"], 3),
        second_process_table_rows=second["rows"], test_fill_s=round(test_fill, 3), accuracy=round(acc, 4),
        cache_vs_recomputed_max_abs_diff=diff, no_cache_measured_on=f"all {len(train)} train examples, one real epoch",
    )
    print(f"no cache {no_cache:.2f}s/epoch | cold {cold:.2f}s (fill {fill_s:.2f}s) | warm {warm_med * 1000:.1f} ms/epoch "
          f"({res.warm_speedup_vs_no_cache}x) | 2nd process first step {res.second_process_load_to_first_step_s}s | "
          f"accuracy {acc:.4f}", file=sys.stderr)
    print(json.dumps(res.to_dict()))


if __name__ == "__main__":
    main()
