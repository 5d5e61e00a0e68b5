"""What the store's entry checksums cost, beside the store read they protect.

A store of MiniLM-sized entries (layer states of 384 floats per token, the token counts of the texts of --data
as MiniLM's tokenizer gives them, float32) is read in batches of 32 keys, as a training epoch reads it, through
``ActivationStore.get``: with checksums verified (ember's path), and with the check skipped (what it cost before).
Beside it, the checksum alone over the same bytes, with XXH3-64 (ember's choice) and with zlib.crc32. Repeats
are interleaved (one batch of each way in turn); medians are reported.

Usage:
  python benchmarks/checksum_cost.py                   # CLINC150 train texts, 2,000 entries
Prints a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import zlib
from pathlib import Path

import torch
import xxhash

from ember.data import load_examples, spread
from ember.models import load_model
from ember.store import ActivationStore, Fingerprint, codec, content_key

ROOT = Path(__file__).resolve().parents[1]
CLINC = ROOT / ".." / "shared" / "data" / "clinc150"


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(CLINC))
    p.add_argument("--split", default=None)
    p.add_argument("--model", default=None, help="tokenizer's model (default: packaged all-MiniLM-L6-v2)")
    p.add_argument("--text-column", default=None)
    p.add_argument("--label-column", default=None)
    p.add_argument("--entries", type=int, default=2000)
    p.add_argument("--hidden", type=int, default=384)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5, help="passes over the store per way")
    return p.parse_args()


def build(path: Path, lengths: list[int], hidden: int) -> list[bytes]:
    fp = Fingerprint(kind="recycle", architecture="bench", weights="w", layer=3, dtype="float32", tokenizer="t",
                     max_length=512)
    keys = [content_key([i]) for i in range(len(lengths))]
    with ActivationStore.open(path, fp) as st:
        for i in range(0, len(keys), 256):
            st.put(keys[i : i + 256], [{"states": torch.randn(n, hidden)} for n in lengths[i : i + 256]])  # (T, H)
    return keys


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> dict:
    args = parse()
    ex = load_examples(args.data, split=args.split, text_column=args.text_column, label_column=args.label_column)
    texts = spread(ex.texts, args.entries)
    _, tok = load_model(args.model, "embedding")
    lengths = [len(x) for x in tok(texts, truncation=True)["input_ids"]]
    with tempfile.TemporaryDirectory() as tmp:
        keys = build(Path(tmp) / "s", lengths, args.hidden)
        store = ActivationStore.open(Path(tmp) / "s", None, readonly=True)
        raw = store.kv.get_many(keys)
        payloads = [bytes(v[codec.CHECKSUM_BYTES :]) for v in raw]
        order = keys[:]
        random.Random(0).shuffle(order)
        batches = [order[i : i + args.batch_size] for i in range(0, len(order), args.batch_size)]
        times: dict[str, list[float]] = {"read_checked": [], "read_unchecked": [], "xxh3": [], "crc32": []}
        for _ in range(args.rounds):
            for b, batch in enumerate(batches):
                part = payloads[b * args.batch_size : (b + 1) * args.batch_size]
                ways = ["read_checked", "read_unchecked"]
                for way in ways if b % 2 else ways[::-1]:  # alternate who reads a batch first (cold pages)
                    codec.VERIFY = way == "read_checked"  # unchecked: the read as it was before checksums
                    try:
                        times[way].append(timed(lambda batch=batch: store.get(batch)))
                    finally:
                        codec.VERIFY = True
                times["xxh3"].append(timed(lambda part=part: [xxhash.xxh3_64_digest(p) for p in part]))
                times["crc32"].append(timed(lambda part=part: [zlib.crc32(p) for p in part]))
        store.close()
    med = {k: statistics.median(v) * 1e6 / args.batch_size for k, v in times.items()}  # µs per entry
    entry_kb = statistics.mean(len(p) for p in payloads) / 1e3
    print(f"rows: {ex.describe()} (first {len(texts)} spread); mean entry {entry_kb:.1f} kB")
    for k, v in med.items():
        print(f"  {k:15s} {v:8.2f} µs per entry")
    return {"script": "checksum_cost", "rows_used": f"{len(texts)} texts spread over {ex.describe()}",
            "entries": len(keys), "mean_entry_kb": round(entry_kb, 2), "batch_size": args.batch_size,
            "us_per_entry": {k: round(v, 3) for k, v in med.items()},
            "checksum_share_of_read": round(med["xxh3"] / med["read_unchecked"], 4),
            "checked_over_unchecked": round(med["read_checked"] / med["read_unchecked"], 4),
            "crc32_share_of_read": round(med["crc32"] / med["read_unchecked"], 4)}


if __name__ == "__main__":
    print(json.dumps(main()))
