"""The cache's datasets and collator drive a Hugging Face Trainer (train and eval splits, one collator)."""

from __future__ import annotations

import torch
from torch import nn

from ember.encoders import CacheConfig, EncoderCache, collate_cached

from conftest import make_model


class Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(32, 2)

    def forward(self, text: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
        logits = self.linear(text)
        return {"logits": logits} if labels is None else {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}


def test_trainer_trains_a_head_from_the_cache(tokenizer, texts, tmp_path):
    from transformers import Trainer, TrainingArguments

    encoder = make_model("bert-base").requires_grad_(False)
    cache = EncoderCache(encoder, tokenizer, CacheConfig())
    labels = [i % 2 for i in range(len(texts))]
    cache.fill(texts, labels=labels, progress=False)
    cache.fill(texts[:4], labels=labels[:4], split="val", progress=False)
    torch.manual_seed(0)
    head = Head()
    before = head.linear.weight.detach().clone()
    trainer = Trainer(
        model=head,
        args=TrainingArguments(
            output_dir=str(tmp_path), num_train_epochs=30, per_device_train_batch_size=4, learning_rate=0.05,
            remove_unused_columns=False, report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True,
        ),
        train_dataset=cache.dataset("train", index=False),  # Head.forward(text, labels) takes no index
        eval_dataset=cache.dataset("val", index=False),
        data_collator=collate_cached,
        compute_metrics=lambda p: {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())},
    )
    trainer.train()
    metrics = trainer.evaluate()
    assert not torch.equal(before, head.linear.weight.detach())
    assert metrics["eval_accuracy"] == 1.0
    assert all(not p.requires_grad for p in encoder.parameters())
