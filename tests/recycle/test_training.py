"""Training the top from the store: a plain loop and the Hugging Face Trainer."""

from __future__ import annotations

import pytest
import torch

from ember.errors import DataError, MissingEntriesError, StoreError
from ember.recycle import Recycler, evaluate, train_top

from conftest import make_model

TEXTS = ["play music", "set alarm for seven", "order pizza", "call mom", "book flight to paris", "what is the weather today",
         "tell me joke", "cancel reservation at restaurant"] * 4
LABELS = [0, 1, 2, 0, 1, 2, 0, 1] * 4


def test_plain_loop_learns_and_matches_eval(tokenizer):
    model = make_model("bert")
    rec = Recycler(model, tokenizer, None, layer=2)
    rec.fill(TEXTS, labels=LABELS, progress=False)
    before = evaluate(rec, TEXTS, LABELS)
    report = train_top(rec, "train", epochs=25, lr=2e-3, batch_size=8, progress=False)
    assert report.epoch_loss[-1] < 0.5 * report.epoch_loss[0]
    assert evaluate(rec, TEXTS, LABELS) > max(before, 0.9)


def test_hf_trainer_trains_from_stored_states(tmp_path, tokenizer):
    from transformers import Trainer, TrainingArguments

    model = make_model("roberta")
    rec = Recycler(model, tokenizer, None, layer=2)
    rec.fill(TEXTS, labels=LABELS, progress=False)
    frozen = {n: p.clone() for n, p in model.roberta.embeddings.named_parameters()}
    head = model.classifier.out_proj.weight.clone()
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, num_train_epochs=3, learning_rate=1e-3,
        report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True,
    )
    with rec.train():
        trainer = Trainer(model=model, args=args, train_dataset=rec.dataset("train"), data_collator=rec.collate)
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
    report = train_top(rec, "train", epochs=1, batch_size=8, num_workers=2, progress=False)
    assert report.examples == len(TEXTS) and len(report.epoch_loss) == 1
    rec.fill(["order pizza please"], labels=[2], split="extra", progress=False)  # the parent still writes afterwards
    assert len(rec.store) == len(set(keys)) + 1


def test_labels_live_in_splits_not_entries(tokenizer):
    """A text stored unlabelled (by use/write-back or a test fill) still trains with its label later;
    the same text may carry different labels in two splits."""
    model = make_model("bert")
    rec = Recycler(model, tokenizer, None, layer=2)
    with rec.use(write_back=True), torch.no_grad():
        model(**rec.tokenize(TEXTS[:4]))  # stored without labels
    report = rec.fill(TEXTS[:8], labels=["x", "y", "z", "x", "y", "z", "x", "y"], progress=False)
    assert report.already_stored == 4
    rec.fill(TEXTS[:2], labels=["z", "z"], split="other", progress=False)
    train = rec.dataset("train").__getitems__([0, 1])
    other = rec.dataset("other").__getitems__([0, 1])
    assert [int(x["labels"]) for x in train] == [0, 1] and [int(x["labels"]) for x in other] == [2, 2]
    assert rec.store.label_names == ["x", "y", "z"]
    assert evaluate(rec, TEXTS[:8], ["x", "y", "z", "x", "y", "z", "x", "y"]) >= 0  # names map through the store
    with pytest.raises(MissingEntriesError, match="filled without labels"):
        rec.fill(TEXTS[:2], split="nolabels", progress=False) and rec.dataset("nolabels")
    with pytest.raises(StoreError, match=r"has no split 'dev' \(it has \['train', 'other', 'nolabels'\]\)"):
        rec.dataset("dev")


def test_evaluate_refuses_unknown_label_names(tokenizer):
    rec = Recycler(make_model("bert"), tokenizer, None, layer=2)
    rec.fill(TEXTS[:3], labels=["a", "b", "a"], progress=False)
    with pytest.raises(DataError, match=r"labels \['zzz'\] in the evaluation data are not among the model's 2 labels"):
        evaluate(rec, TEXTS[:2], ["a", "zzz"])


def test_adamw_is_fused_on_cpu_and_matches_the_plain_step():
    from ember.recycle.train import adamw

    torch.manual_seed(0)
    a, b = torch.nn.Linear(8, 4), torch.nn.Linear(8, 4)
    b.load_state_dict(a.state_dict())
    fused, plain = adamw(list(a.parameters()), lr=1e-2), torch.optim.AdamW(b.parameters(), lr=1e-2, foreach=False)
    assert fused.defaults["fused"] is True
    x = torch.randn(16, 8)
    for _ in range(3):
        for m, opt in ((a, fused), (b, plain)):
            m(x).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
    assert torch.allclose(a.weight, b.weight, atol=1e-6)
