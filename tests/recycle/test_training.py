"""Training the top from the store: a plain loop and the Hugging Face Trainer."""

from __future__ import annotations

import pytest
import torch

from ember.errors import DataError, EmberWarning, MissingEntriesError, StoreError
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


def test_one_key_alone_is_refused_as_a_lone_text_is(tokenizer):
    """``dataset(b"key")`` read the key as a list of ints (one "key" per byte) and failed deep in the store."""
    rec = Recycler(make_model("bert"), tokenizer, None, layer=2)
    key = rec.fill(TEXTS[:2], labels=[0, 1], progress=False).keys[0]
    for one in (key, bytearray(key)):
        with pytest.raises(TypeError) as caught:
            rec.dataset(one)
        assert str(caught.value) == (
            f"dataset() takes a split name (str) or a list of keys, got one key ({type(one).__name__} {key!r}); "
            "wrap it: dataset([key])"
        )
    with pytest.raises(TypeError, match=r"^dataset\(\) takes a split name \(str\) or a list of keys \(bytes, as "
                       r"FillReport.keys holds them\), but item 0 of the list is int \d+$"):
        rec.dataset(list(key))
    with pytest.raises(TypeError, match="got one key"):
        train_top(rec, key, progress=False)
    assert len(rec.dataset([key])) == 1 and len(rec.dataset([key], labels=False)) == 1


def test_evaluate_refuses_unknown_label_names(tokenizer):
    rec = Recycler(make_model("bert"), tokenizer, None, layer=2)
    rec.fill(TEXTS[:3], labels=["a", "b", "a"], progress=False)
    with pytest.raises(DataError, match=r"labels \['zzz'\] in the evaluation data are not among the model's 2 labels"):
        evaluate(rec, TEXTS[:2], ["a", "zzz"])


def test_evaluate_warns_or_refuses_when_the_labels_and_the_model_number_classes_differently(tokenizer):
    """Integer labels used to be compared with a named model's outputs by position without a word, and names for
    a model trained on ids said it had '0 labels'."""
    named = Recycler(make_model("bert", num_labels=3), tokenizer, None, layer=2)
    named.fill(TEXTS[:3], labels=["a", "b", "c"], progress=False)
    with pytest.warns(EmberWarning) as caught:
        evaluate(named, TEXTS[:3], [0, 1, 2])
    assert str(caught[0].message) == (
        "the evaluation labels are class ids, but the model was trained on named classes (0='a', 1='b', 2='c'): each "
        "id is compared with the class at that position, which is right only if the data numbers its classes in this "
        "order. Label the evaluation data with the class names to map them by name"
    )
    with pytest.raises(DataError) as refused:
        evaluate(named, TEXTS[:3], [0, 1, 7])
    assert str(refused.value) == (
        "label id 7 in the evaluation data is past the model's head, which has 3 outputs (ids 0..2): the data numbers "
        "its classes differently from the data the model was trained on. Evaluate with the class ids the model was "
        "trained on, or label it with the class names (0='a', 1='b', 2='c')"
    )
    ids = Recycler(make_model("bert", num_labels=3), tokenizer, None, layer=2)
    ids.fill(TEXTS[:3], labels=[0, 1, 2], progress=False)
    with pytest.raises(DataError) as refused:
        evaluate(ids, TEXTS[:3], ["a", "b", "c"])
    assert str(refused.value) == (
        "the evaluation labels are class names ('a', 'b', 'c' ...), but the model was trained on class ids: the store "
        "at None holds no label names. Label the evaluation data with the class ids the model was trained on"
    )
    ids.model.config.id2label = {0: "neg", 1: "pos", 2: "mixed"}  # a head that names its classes: ids still compare by position
    with pytest.warns(EmberWarning, match=r"trained on named classes \(0='neg', 1='pos', 2='mixed'\)"):
        evaluate(ids, TEXTS[:3], [0, 1, 2])
    named.model.config.id2label = {0: "c", 1: "b", 2: "a"}  # trained from another store?
    with pytest.warns(EmberWarning, match=r"^the model's head names its classes 0='c', 1='b', 2='a', but the store at None, whose "
                      r"names gave the ids in training, has 0='a', 1='b', 2='c'"):
        evaluate(named, TEXTS[:3], ["a", "b", "c"])


def test_evaluate_is_silent_when_the_label_spaces_agree(tokenizer):
    import warnings

    rec = Recycler(make_model("bert", num_labels=2), tokenizer, None, layer=2)
    rec.fill(TEXTS[:4], labels=["x", "y", "x", "y"], progress=False)
    rec.model.config.id2label = {0: "x", 1: "y"}
    plain = Recycler(make_model("bert"), tokenizer, None, layer=2)
    plain.fill(TEXTS, labels=LABELS, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmberWarning)
        evaluate(rec, TEXTS[:4], ["x", "y", "x", "y"])
        evaluate(plain, TEXTS, LABELS)


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
