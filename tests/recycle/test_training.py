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


def test_record_stores_labels_then_trains_from_store(tokenizer):
    """First epoch under record() (as in the original recycling demo), later epochs from the store alone."""
    model = make_model("bert")
    rec = Recycler(model, tokenizer, None, layer=2)
    batch = rec.tokenize(TEXTS[:8])
    labels = torch.tensor(LABELS[:8])
    with rec.record():
        model(**batch, labels=labels).loss.backward()
    keys = rec.fill(TEXTS[:8], progress=False).keys  # nothing left to compute
    items = rec.dataset(keys).__getitems__(list(range(8)))
    assert [int(x["labels"]) for x in items] == LABELS[:8]


def test_dataloader_workers_read_lmdb(tmp_path, tokenizer):
    model = make_model("bert")
    rec = Recycler(model, tokenizer, tmp_path / "s", layer=2)
    keys = rec.fill(TEXTS, labels=LABELS, progress=False).keys
    report = train_top(rec, keys, epochs=1, batch_size=8, num_workers=2, progress=False)
    assert report.examples == len(TEXTS) and report.epoch_loss[0] > 0
    rec.fill(["order pizza please"], labels=[2], progress=False)  # the parent still writes afterwards
    assert len(rec.store) == len(set(keys)) + 1
