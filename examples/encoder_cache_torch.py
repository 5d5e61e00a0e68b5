"""Train a two-tower relevance head on frozen encoders in a plain PyTorch loop, with ember's encoder cache.

The encoders run once (fill); every epoch after that is a gather from one in-memory tensor. The trained
head then scores new (query, answer) pairs, the cache computing embeddings it has not seen.

    python examples/encoder_cache_torch.py --limit 200          # packaged MiniLM, CLINC150 sentences
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer

from ember.data import load_examples
from ember.encoders import CacheConfig, EncoderCache
from ember.models import default_model_path

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "clinc150"


def pairs(texts: list[str], intents: list[str], n: int) -> tuple[list[str], list[str], list[int]]:
    """(query, other sentence, same intent?) pairs: a toy relevance task, half positives."""
    rng = random.Random(0)
    by_intent: dict[str, list[int]] = {}
    for i, y in enumerate(intents):
        by_intent.setdefault(y, []).append(i)
    q, d, y = [], [], []
    for _ in range(n):
        i = rng.randrange(len(texts))
        same = rng.random() < 0.5
        j = rng.choice(by_intent[intents[i]]) if same else rng.randrange(len(texts))
        q.append(texts[i])
        d.append(texts[j])
        y.append(int(intents[i] == intents[j]))
    return q, d, y


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--model", default=None)
    ap.add_argument("--limit", type=int, default=1000, help="training pairs")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--save-dir", default=None, help="keep the cache for the next run")
    args = ap.parse_args()

    path = args.model or str(default_model_path())
    tok = AutoTokenizer.from_pretrained(path)
    encoder = AutoModel.from_pretrained(path).eval().requires_grad_(False)  # frozen: the cache refuses otherwise
    ex = load_examples(args.data, split="train")
    queries, docs, labels = pairs(ex.texts, [str(y) for y in ex.labels or []], args.limit)

    # Both towers share the frozen encoder here; pass two different modules for two different towers.
    cache = EncoderCache({"query": encoder, "doc": encoder}, tok, CacheConfig(save_dir=args.save_dir, pooling="mean"))
    print(cache.fill({"query": queries, "doc": docs}, labels=labels).to_dict())
    dim = encoder.config.hidden_size
    head = nn.Bilinear(dim, dim, 2)
    train = cache.dataset("train", device=head)  # placement "auto" follows the head: GPU tables for a CUDA head
    opt = torch.optim.Adam(head.parameters(), lr=1e-3)
    for epoch in range(args.epochs):
        total = 0.0
        for batch in train.loader(32, shuffle=True):  # {"query": (B, H), "doc": (B, H), "labels": (B,), "index": (B,)}
            loss = nn.functional.cross_entropy(head(batch["query"], batch["doc"]), batch["labels"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        print(f"epoch {epoch}: loss {total / max(1, len(train) // 32):.4f}")

    # Serving new texts: cached embeddings are looked up, new ones computed on the fly.
    new = {"query": ["book me a flight to paris", "what is my balance"], "doc": ["i need a plane ticket", "play some jazz"]}
    with torch.no_grad():
        probs = head(**dict(zip(("input1", "input2"), cache.embed(new).values(), strict=True))).softmax(-1)[:, 1]
    for q, d, p in zip(new["query"], new["doc"], probs.tolist(), strict=True):
        print(f"{p:.3f}  {q!r} ~ {d!r}")
    cache.close()


if __name__ == "__main__":
    main()
