"""Train a classification head on a frozen encoder with the Hugging Face Trainer and ember's encoder cache.

The Trainer gets the cache's dataset and collator: batches are ``{"text": (B, H), "labels": (B,)}`` gathered
from memory, so the encoder never runs during training.

    python examples/encoder_cache_trainer.py --limit 2000      # packaged MiniLM, CLINC150 intents
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer, Trainer, TrainingArguments

from ember.data import load_examples
from ember.encoders import CacheConfig, EncoderCache, collate_cached
from ember.models import default_model_path

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "clinc150"


class Head(nn.Module):
    """A linear classifier over cached sentence embeddings, with the loss the Trainer expects."""

    def __init__(self, dim: int, classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, classes)

    def forward(self, text: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
        logits = self.linear(text)  # (B, C)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels)
        return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--model", default=None)
    ap.add_argument("--limit", type=int, default=None, help="train examples (default: all)")
    ap.add_argument("--epochs", type=float, default=5)
    ap.add_argument("--save-dir", default=None)
    args = ap.parse_args()

    path = args.model or str(default_model_path())
    tok = AutoTokenizer.from_pretrained(path)
    encoder = AutoModel.from_pretrained(path).eval().requires_grad_(False)
    train = load_examples(args.data, split="train")
    if args.limit:  # CLINC150 is grouped by intent: take every k-th example to keep all intents
        step = max(1, len(train) // args.limit)
        train = type(train)(train.texts[::step][: args.limit], train.labels[::step][: args.limit], train.source)
    test = load_examples(args.data, split="test")
    known = set(train.labels)
    keep = [i for i, y in enumerate(test.labels) if y in known]
    test = type(test)([test.texts[i] for i in keep], [test.labels[i] for i in keep], test.source)

    cache = EncoderCache(encoder, tok, CacheConfig(save_dir=args.save_dir, pooling="mean"))
    cache.fill(train, split="train")
    cache.fill(test, split="test")
    # The Trainer calls head(**batch): leave out batch["index"], which Head.forward does not take.
    # The Trainer runs on the CPU here (use_cpu=True): serve the batches there.
    train_ds = cache.dataset("train", index=False, device="cpu")
    test_ds = cache.dataset("test", index=False, device="cpu")

    head = Head(encoder.config.hidden_size, len(cache.label_names))
    out_dir = tempfile.mkdtemp(prefix="ember-trainer-")
    trainer = Trainer(
        model=head,
        args=TrainingArguments(
            output_dir=out_dir, num_train_epochs=args.epochs, per_device_train_batch_size=32, learning_rate=3e-3,
            remove_unused_columns=False, report_to="none", save_strategy="no", logging_steps=50, use_cpu=True,
        ),
        train_dataset=train_ds,
        eval_dataset=test_ds,
        data_collator=collate_cached,  # one collator for every split of the cache
        compute_metrics=lambda p: {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())},
    )
    trainer.train()
    print(trainer.evaluate())
    names = cache.label_names
    with torch.no_grad():
        logits = head(**cache.embed(["how much money is in my checking account"]))["logits"]
    print("prediction:", names[int(logits.argmax())])
    cache.close()


if __name__ == "__main__":
    main()
