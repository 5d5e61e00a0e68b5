"""Where a training step's time goes when the bottom of MiniLM-L6 is frozen: the bound on recycling's speed-up.

Times, per batch of real CLINC150 training sentences, the frozen bottom's forward (embeddings + layers 0..k-1,
eval mode, no autograd: what the store removes), the top's forward (layers k..N-1 with dropout + pooler +
head + loss), its backward, and one optimizer step (foreach vs fused AdamW, alternating). Phases of the same
batch are timed back to back as laps (``ember.bench.timing.Laps``; the first 4 batches warm up) and reported as
medians, so load swings hit every phase alike.

    python benchmarks/recycle_phases.py [--data ../shared/data/clinc150] [--split train] [--model DIR] [--layer 3]

The rows are ``--data``'s training split by default (labels by ``--label-column``).

The model must be a BERT-family classifier (pooler, dropout, classifier head). The last line is JSON;
``bound`` = (bottom + top step with fused AdamW) / top step is the most any store can give.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from ember.batching import grouped_batches
from ember.bench.rows import announce, data_options, load_rows
from ember.bench.timing import Laps
from ember.data.labels import encode_labels
from ember.models import load_model
from ember.models.families import find_parts
from ember.models.split import split_states

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "clinc150"


def top_loss(model, parts, k: int, states, mask, labels):
    """The top alone, from the states (as training from the store runs it); BERT-family head."""
    mask4 = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min  # (B, 1, 1, T)
    h = states  # (B, T, H)
    for layer in parts.layers[k:]:
        h = layer(h, attention_mask=mask4)
        h = h[0] if isinstance(h, tuple) else h
    logits = model.classifier(model.dropout(parts.base.pooler(h)))  # (B, C)
    return torch.nn.functional.cross_entropy(logits, labels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_options(ap, data=DATA, split="train")
    ap.add_argument("--layer", type=int, default=3)
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    ex, used = load_rows(args, "batches", split=args.split, default_split="train")
    if ex.labels is None:
        raise SystemExit(f"{args.data} has no labels; the top is trained on them (pass --label-column)")
    label_ids, names = encode_labels(ex.labels)
    model, tok = load_model(args.model, "classification", label_names=names)
    parts = find_parts(model)
    k = args.layer
    for m in parts.bottom(k):
        m.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opts = {"foreach": torch.optim.AdamW(params, lr=1e-5, foreach=True), "fused": torch.optim.AdamW(params, lr=1e-5, fused=True)}
    ids = tok(ex.texts, truncation=True)["input_ids"]
    labels = torch.tensor(label_ids)
    model.train()
    laps = Laps()
    warm_up = Laps()  # the first 4 batches: run, not counted
    batches = grouped_batches([len(x) for x in ids], args.batch_size, seed=0)[: args.batches + 4]
    rows = announce(dataclasses.replace(used, count=sum(map(len, batches)), how=(
        f"{len(batches)} length-grouped batches of up to {args.batch_size} drawn from all of them, seed 0; the "
        "first 4 warm up")))
    for n, idx in enumerate(batches):
        timer = laps if n >= 4 else warm_up
        batch = tok.pad({"input_ids": [ids[i] for i in idx]}, return_tensors="pt")
        with timer.lap("bottom"):
            states = split_states(parts, k, batch["input_ids"], batch["attention_mask"])  # (B, T, H), what a store holds
        with timer.lap("top_forward"):
            loss = top_loss(model, parts, k, states, batch["attention_mask"], labels[idx])
        with timer.lap("top_backward"):
            loss.backward()
        which = "foreach" if n % 2 == 0 else "fused"
        with timer.lap(f"adamw_{which}"):
            opts[which].step()
            opts[which].zero_grad(set_to_none=True)
    ms = laps.medians_ms()
    for name, v in ms.items():
        print(f"{name:>14}: {v:7.1f} ms (median of {len(laps.seconds(name))} batches of {args.batch_size})")
    top = ms["top_forward"] + ms["top_backward"] + ms["adamw_fused"]
    print(json.dumps({"benchmark": "recycle_phases", "rows": rows, "layer": k, "threads": args.threads, "median_ms": ms,
                      "top_step_ms": top, "bound": (ms["bottom"] + top) / top}))


if __name__ == "__main__":
    main()
