"""Teacher outputs in the store: one fill, content keys, a fingerprint that refuses another teacher."""

from __future__ import annotations

import pytest
import torch
from tiny import filled_teacher, labelled, one_thread, tiny_teacher  # noqa: F401  (autouse fixture)

from ember.compress import StoredTeacher, Teacher, TeacherConfig
from ember.compress.errors import CompressConfigError, StudentMismatchError
from ember.errors import DataError, StoreMismatchError
from ember.store.keys import content_key

from conftest import make_model


def test_fill_stores_ids_logits_and_hidden_states_and_records_the_split_last(tokenizer):
    teacher = filled_teacher(tokenizer)
    texts, labels = labelled()
    split = teacher.store.get_split("train")
    assert split.labels == labels and len(split) == len(texts)
    assert len(teacher.store) == len(set(texts))  # content keys: repeated texts are stored once
    ids = tokenizer(texts[0])["input_ids"]
    entry = teacher.store.get([content_key(ids)])[0]
    assert entry["input_ids"].tolist() == ids
    with torch.no_grad():
        out = teacher.outputs.model(**tokenizer([texts[0]], return_tensors="pt"), output_hidden_states=True)
    assert torch.allclose(entry["logits"], out.logits[0], atol=1e-5)
    assert torch.allclose(entry["hidden.4"], out.hidden_states[4][0], atol=1e-5)
    assert teacher.fingerprint.kind == "teacher"


def test_a_second_fill_computes_nothing(tokenizer, tmp_path):
    texts, labels = labelled()
    model = tiny_teacher()
    with Teacher(model, tokenizer, tmp_path / "store") as t:
        assert t.fill(texts, labels, progress=False).computed == len(set(texts))
    with Teacher(model, tokenizer, tmp_path / "store") as t:  # another run (another alpha, T, student) starts here
        report = t.fill(texts, labels, progress=False)
        assert (report.computed, report.already_stored) == (0, len(set(texts)))
        assert len(t.source("train")) == len(texts)


def test_a_store_made_by_another_teacher_is_refused(tokenizer, tmp_path):
    texts, labels = labelled()
    with Teacher(tiny_teacher(), tokenizer, tmp_path / "store") as t:
        t.fill(texts, labels, progress=False)
    other = tiny_teacher()
    with torch.no_grad():
        other.classifier.weight.add_(0.01)  # another fine-tuning run: same architecture, other weights
    with pytest.raises(StoreMismatchError, match="was made by another model or setting") as info:
        Teacher(other, tokenizer, tmp_path / "store")
    assert any(d.startswith("weights:") for d in info.value.differences)


def test_another_hidden_layer_selection_is_another_store(tokenizer, tmp_path):
    model = tiny_teacher()
    Teacher(model, tokenizer, tmp_path / "s").close()
    with pytest.raises(StoreMismatchError, match="hidden_layers"):
        Teacher(model, tokenizer, tmp_path / "s", TeacherConfig(hidden_layers=(2,)))


def test_an_open_store_of_another_teacher_is_refused(tokenizer):
    first = filled_teacher(tokenizer)
    with pytest.raises(StoreMismatchError, match="holds the outputs of another teacher"):
        Teacher(tiny_teacher(hidden_size=48, num_attention_heads=4), tokenizer, first.store)


def test_labels_the_teacher_does_not_know_are_refused(tokenizer):
    teacher = Teacher(tiny_teacher(), tokenizer)
    texts, _ = labelled()
    with pytest.raises(DataError, match=r"labels \['zebra'\] are not among the teacher's 3 classes"):
        teacher.fill(texts, ["a"] * (len(texts) - 1) + ["zebra"], progress=False)
    with pytest.raises(DataError, match="label id 7 is past the teacher's head, which has 3 outputs"):
        teacher.fill(texts, [0] * (len(texts) - 1) + [7], progress=False)


def test_class_names_map_through_the_teachers_id2label(tokenizer):
    teacher = Teacher(tiny_teacher(), tokenizer)
    texts, _ = labelled(1)
    teacher.fill(texts, ["c", "b", "a"] + ["a"] * (len(texts) - 3), progress=False)
    assert teacher.store.get_split("train").labels[:3] == [2, 1, 0]


def test_names_for_a_head_without_names_are_refused(tokenizer):
    teacher = Teacher(make_model("bert"), tokenizer)
    with pytest.raises(DataError, match="the teacher's head has no names"):
        teacher.fill(["play music"], ["a"], progress=False)


def test_hidden_layers_outside_the_teacher_are_refused(tokenizer):
    with pytest.raises(CompressConfigError, match=r"hidden_layers \[9\] are outside the teacher, whose hidden states are indexed 0..4"):
        Teacher(tiny_teacher(), tokenizer, None, TeacherConfig(hidden_layers=(9,)))


def test_a_teacher_without_a_head_is_refused(tokenizer):
    with pytest.raises(StudentMismatchError, match="has no classification head"):
        Teacher(make_model("bert-base"), tokenizer)


def test_live_batches_equal_stored_batches(tokenizer):
    teacher = filled_teacher(tokenizer)
    texts, labels = labelled()
    stored, live = teacher.source("train"), teacher.live(texts, labels)
    a, b = stored.batch([0, 3, 5]), live.batch([0, 3, 5])
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)
    assert torch.allclose(a.logits, b.logits, atol=1e-6)
    assert torch.allclose(a.hidden[4], b.hidden[4], atol=1e-6)


def test_the_store_opens_without_the_teacher(tokenizer, tmp_path):
    filled_teacher(tokenizer, store=tmp_path / "s").close()
    source = StoredTeacher.open(tmp_path / "s", "train")
    assert len(source) == len(labelled()[0]) and source.facts.num_labels == 3
