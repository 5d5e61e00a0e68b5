"""Training the top from the store: a plain loop and the Hugging Face Trainer."""

from __future__ import annotations

import torch

from ember.recycle import Recycler, evaluate, train_top

from conftest import make_model

TEXTS = ["play music", "set alarm for seven", "order pizza", "call mom", "book flight to paris", "what is the weather today",
         "tell me joke", "cancel reservation at restaurant"] * 4
LABELS = [0, 1, 2, 0, 1, 2, 0, 1] * 4


def test_plain_loop_learns_and_matches_eval(tokenizer):
    model = make_model("bert")
    rec = Recycler(model, tokenizer, None, layer=2)
    keys = rec.fill(TEXTS, labels=LABELS, progress=False).keys
    before = evaluate(rec, TEXTS, LABELS)
    report = train_top(rec, keys, epochs=25, lr=2e-3, batch_size=8, progress=False)
    assert report.epoch_loss[-1] < 0.5 * report.epoch_loss[0]
    assert evaluate(rec, TEXTS, LABELS) > max(before, 0.9)


def test_hf_trainer_trains_from_stored_states(tmp_path, tokenizer):
    from transformers import Trainer, TrainingArguments

    model = make_model("roberta")
    rec = Recycler(model, tokenizer, None, layer=2)
    keys = rec.fill(TEXTS, labels=LABELS, progress=False).keys
    frozen = {n: p.clone() for n, p in model.roberta.embeddings.named_parameters()}
    head = model.classifier.out_proj.weight.clone()
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, num_train_epochs=3, learning_rate=1e-3,
        report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True,
    )
    with rec.train():
        trainer = Trainer(model=model, args=args, train_dataset=rec.dataset(keys), data_collator=rec.collate)
        result = trainer.train()
    assert result.training_loss > 0
    assert not torch.equal(model.classifier.out_proj.weight, head)  # the head trained
    for n, p in model.roberta.embeddings.named_parameters():
        assert torch.equal(p, frozen[n])  # the frozen bottom did not move
