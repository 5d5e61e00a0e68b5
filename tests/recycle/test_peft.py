"""Recycling under PEFT adapters: LoRA on the top layers k..N-1 trains over stored states of the frozen bottom."""

from __future__ import annotations

import warnings

import pytest
import torch

from ember.errors import EmberWarning
from ember.recycle import Recycler, evaluate, train_top

from conftest import make_model

peft = pytest.importorskip("peft")

TEXTS = ["play music", "set alarm for seven", "order pizza", "call mom", "book flight to paris", "what is the weather today",
         "tell me joke", "cancel reservation at restaurant"] * 3
LABELS = [0, 1, 2, 0, 1, 2, 0, 1] * 3


def lora_top(family: str = "bert", k: int = 2, n: int = 4):
    """A tiny classifier with LoRA on the attention of layers k..N-1 (B initialised non-zero, so it matters)."""
    config = peft.LoraConfig(r=4, target_modules=["query", "value"], layers_to_transform=list(range(k, n)),
                             task_type="SEQ_CLS", init_lora_weights=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return peft.get_peft_model(make_model(family), config).eval()


def test_lora_top_gives_the_plain_peft_models_logits_from_stored_states(tokenizer):
    model = lora_top()
    rec = Recycler(model, tokenizer, None, layer=2)
    # the bottom is the plain model's: its store is shared with the model without adapters
    assert rec.fingerprint == Recycler(make_model("bert"), tokenizer, None, layer=2).fingerprint
    rec.fill(TEXTS, labels=LABELS, progress=False)
    batch = rec.tokenize(TEXTS[:8])
    with torch.no_grad():
        want = model(**batch).logits
        with rec.train():
            trained_path = model(**batch).logits
        new = rec.tokenize(["order pizza please", *TEXTS[:8]])
        plain_new = model(**new).logits
        with rec.use():
            use_path = model(**new).logits
    assert (trained_path - want).abs().max() <= 1e-5
    assert (use_path - plain_new).abs().max() <= 1e-5
    assert want.abs().max() > 0 and not torch.allclose(want, make_model("bert")(**batch).logits)  # LoRA changed them


def test_train_top_trains_the_adapters_and_head_only(tokenizer):
    model = lora_top()
    rec = Recycler(model, tokenizer, None, layer=2)
    rec.fill(TEXTS, labels=LABELS, progress=False)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_top(rec, "train", epochs=3, lr=1e-2, batch_size=8, progress=False)
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved and all("lora_" in n or "classifier" in n for n in moved)
    assert any("layer.2" in n and "lora_" in n for n in moved)
    assert evaluate(rec, TEXTS, LABELS) >= 0  # evaluation runs through the PEFT model from the store


def test_hf_trainer_trains_a_lora_top_from_stored_states(tmp_path, tokenizer):
    from transformers import Trainer, TrainingArguments

    model = lora_top("roberta")
    rec = Recycler(model, tokenizer, None, layer=2)
    rec.fill(TEXTS, labels=LABELS, progress=False)
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, num_train_epochs=2, learning_rate=1e-2,
        report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True,
    )
    with rec.train():
        Trainer(model=model, args=args, train_dataset=rec.dataset("train"), data_collator=rec.collate).train()
    assert any(not torch.equal(p, lora[n]) for n, p in model.named_parameters() if n in lora)


def test_adapters_in_the_frozen_bottom_are_named_in_a_warning(tokenizer):
    model = lora_top(k=0)  # LoRA on every layer, the stored bottom too
    with pytest.warns(EmberWarning, match=r"reach the frozen layers 0\.\.1 .*LoraConfig\(layers_to_transform=list\(range\(2, 4\)\)"):
        Recycler(model, tokenizer, None, layer=2)
