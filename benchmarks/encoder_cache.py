"""Frozen-encoder cache on CLINC150: epoch time with and without the cache, a second process from save_dir.

Frozen MiniLM-L6 (packaged), mean pooling, a linear head over the 150 in-scope intents.

- no cache: one real epoch that tokenizes and runs the encoder for every batch (shuffled, batch 32);
- cold: ``EncoderCache.fill`` of the train split plus one epoch from the cache;
- warm: the following epochs (median);
- second process: a fresh Python process that loads the model, opens ``save_dir`` (fingerprint checked)
  and runs its first training step; measured from the start of loading (and from process start).

Each stretch is a lap of ``ember.bench.timing.Laps`` (warm epochs: the median). Training rows: ``--data``'s
``--split`` (default: CLINC150's train split); test accuracy on ``--test-data``'s ``--test-split`` (default: the
same data's test split), rows with labels the head was not trained on left out. A file without splits needs
``--test-data``: testing on the training rows is refused.

    flock /tmp/ember-bench.lock python benchmarks/encoder_cache.py --limit 2000

Prints the rows used, then a final JSON line.
"""

from __future__ import annotations

import time

T_PROCESS = time.perf_counter()

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

from ember.bench.rows import announce, choose, data_options, load_rows  # noqa: E402
from ember.bench.timing import Laps  # noqa: E402
from ember.data import Examples  # noqa: E402
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
    rows: dict

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CacheBenchResult:
        return cls(**d)


def make_head(dim: int, classes: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(dim, classes)


def train_step(head: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    loss = nn.functional.cross_entropy(head(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def epoch_from_cache(head, opt, ds, batch_size: int) -> None:
    for batch in ds.loader(batch_size, shuffle=True):
        train_step(head, opt, batch["text"], batch["labels"])


def epoch_without_cache(head, opt, model, tok, texts, labels, batch_size: int) -> None:
    """What training a head on a frozen encoder costs without a cache: encode every batch, every epoch."""
    order = torch.randperm(len(texts)).tolist()
    y_all = torch.tensor(labels)
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.no_grad():
            x = mean_pool(model(**enc).last_hidden_state, enc["attention_mask"])  # (B, H)
        train_step(head, opt, x, y_all[idx])


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
    rows = cache._sources.table(cache.names[0]).matrix.shape[0]  # the table the first step read (internal)
    print(json.dumps({"load_to_first_step_s": t1 - t0, "start_to_first_step_s": t1 - T_PROCESS, "rows": rows}))


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_options(ap, data=DATA, split="train")
    ap.add_argument("--test-data", default=None, help="test rows (default: --data)")
    ap.add_argument("--test-split", default=None, help="split of the test rows (default: test for the default data)")
    ap.add_argument("--limit", type=int, default=None, help="train examples, a seeded random subset (default: all)")
    ap.add_argument("--test-limit", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--save-dir", default=None)
    ap.add_argument("--second-process", action="store_true", help=argparse.SUPPRESS)
    return ap.parse_args()


def rows(args) -> tuple[Examples, Examples, dict]:
    """Training rows (labelled), test rows with the labels trained on; refuses testing on the training rows."""
    full, train_rows = load_rows(args, "train", split=args.split, default_split="train")
    if full.labels is None:
        raise SystemExit(f"{train_rows.source} has no labels; the head is trained on them (pass --label-column)")
    train, how = choose(full, args.limit, "random")  # CLINC150 is grouped by intent: the first N hold few intents
    train_rows = dataclasses.replace(train_rows, count=len(train), how=how)
    test, test_rows = load_rows(args, "test", data=args.test_data, split=args.test_split, default_split="test")
    if test.texts == full.texts:
        raise SystemExit(f"the test rows are the training rows ({test_rows.describe()}): pass --test-data (and "
                         "--test-split) naming other rows")
    names = set(train.label_names() or [])
    keep = [i for i, y in enumerate(test.labels or []) if y in names]  # intents the head has seen
    test, how = choose(Examples([test.texts[i] for i in keep], [test.labels[i] for i in keep], test.source),
                       args.test_limit, "random")
    test_rows = dataclasses.replace(test_rows, count=len(test), how=f"{how} of the {len(keep):,} with trained labels")
    return train, test, announce(train_rows, test_rows)


def timed_run(args, model, tok, train: Examples, test: Examples, save_dir: Path) -> tuple[Laps, dict]:
    """Every timed stretch as a lap: the no-cache epoch, the fill, the epochs from the cache, the test fill."""
    names = train.label_names() or []
    y_train = train.label_ids(names)
    dim, laps = model.config.hidden_size, Laps()
    with torch.no_grad():  # warm up the encoder and the allocator (not measured)
        model(**tok(train.texts[:32], padding=True, return_tensors="pt"))
    head = make_head(dim, len(names))
    opt = torch.optim.Adam(head.parameters(), lr=args.lr)
    with laps.lap("no_cache_epoch"):
        epoch_without_cache(head, opt, model, tok, train.texts, y_train, args.batch_size)
    cache = EncoderCache(model, tok, CacheConfig(save_dir=save_dir, placement="cpu", batch_size=64))
    head = make_head(dim, len(names))
    opt = torch.optim.Adam(head.parameters(), lr=args.lr)
    with laps.lap("fill"):
        cache.fill(train, labels=train.labels, split="train", progress=False)
        ds = cache.dataset("train", device="cpu")
    with laps.lap("first_epoch_from_cache"):
        epoch_from_cache(head, opt, ds, args.batch_size)
    for _ in range(args.epochs - 1):
        with laps.lap("warm_epoch"):
            epoch_from_cache(head, opt, ds, args.batch_size)
    with laps.lap("test_fill"):
        cache.fill(test, labels=test.labels, split="test", progress=False)
    test_ds = cache.dataset("test", device="cpu")
    with torch.no_grad():
        b = test_ds.collate(range(len(test_ds)))
        acc = (head(b["text"]).argmax(-1) == b["labels"]).float().mean().item()
        sample = test.texts[:64]
        enc = tok(sample, padding=True, truncation=True, return_tensors="pt")
        ref = mean_pool(model(**enc).last_hidden_state, enc["attention_mask"])  # (B, H)
        diff = (cache.embed(sample)["text"] - ref).abs().max().item()
    cache.close()
    return laps, {"accuracy": acc, "diff": diff}


def second_run(args, save_dir: Path) -> dict:
    child = subprocess.run(
        [sys.executable, __file__, "--second-process", "--save-dir", str(save_dir), "--threads", str(args.threads),
         "--batch-size", str(args.batch_size), *(["--model", args.model] if args.model else [])],
        capture_output=True, text=True,
    )
    if child.returncode != 0:
        raise SystemExit(f"the second process failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def result(args, path: str, train, test, laps: Laps, checks: dict, second: dict, used: dict) -> CacheBenchResult:
    one = {n: laps.seconds(n)[0] for n in ("no_cache_epoch", "fill", "first_epoch_from_cache", "test_fill")}
    no_cache, fill_s = one["no_cache_epoch"], one["fill"]
    cold = fill_s + one["first_epoch_from_cache"]
    warm_med = laps.stats()["warm_epoch"].median_s if "warm_epoch" in laps.stats() else float("nan")
    return CacheBenchResult(
        model=Path(path).name, train_examples=len(train), test_examples=len(test), epochs=args.epochs,
        batch_size=args.batch_size, threads=args.threads, no_cache_epoch_s=round(no_cache, 3), cold_fill_s=round(fill_s, 3),
        cold_epoch_s=round(cold, 3), warm_epoch_median_s=round(warm_med, 4),
        warm_speedup_vs_no_cache=round(no_cache / warm_med, 1), warm_speedup_vs_fill=round(fill_s / warm_med, 1),
        cold_speedup_vs_no_cache=round(no_cache / cold, 2),
        second_process_load_to_first_step_s=round(second["load_to_first_step_s"], 3),
        second_process_start_to_first_step_s=round(second["start_to_first_step_s"], 3),
        second_process_table_rows=second["rows"], test_fill_s=round(one["test_fill"], 3),
        accuracy=round(checks["accuracy"], 4), cache_vs_recomputed_max_abs_diff=checks["diff"],
        no_cache_measured_on=f"all {len(train)} train examples, one real epoch", rows=used,
    )


def main() -> None:
    args = parse()
    if args.second_process:
        second_process(args)
        return
    torch.set_num_threads(args.threads)
    from transformers import AutoModel, AutoTokenizer

    train, test, used = rows(args)
    path = args.model or str(default_model_path())
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval().requires_grad_(False)
    own_dir = args.save_dir is None
    save_dir = Path(args.save_dir or tempfile.mkdtemp(prefix="ember-cache-bench-"))
    shutil.rmtree(save_dir, ignore_errors=True)
    try:
        laps, checks = timed_run(args, model, tok, train, test, save_dir)
        second = second_run(args, save_dir)
    finally:
        if own_dir:
            shutil.rmtree(save_dir, ignore_errors=True)
    res = result(args, path, train, test, laps, checks, second, used)
    print(f"no cache {res.no_cache_epoch_s:.2f}s/epoch | cold {res.cold_epoch_s:.2f}s (fill {res.cold_fill_s:.2f}s) | "
          f"warm {res.warm_epoch_median_s * 1000:.1f} ms/epoch ({res.warm_speedup_vs_no_cache}x) | 2nd process first "
          f"step {res.second_process_load_to_first_step_s}s | accuracy {res.accuracy:.4f}", file=sys.stderr)
    print(json.dumps(res.to_dict()))


if __name__ == "__main__":
    main()
