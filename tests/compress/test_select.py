"""Students from teacher layers: copied weights, a config that says the depth, every supported family."""

from __future__ import annotations

import pytest
import torch
from tiny import one_thread, tiny_teacher  # noqa: F401  (autouse fixture)

from ember.compress import every_other, first, layers, select_layers
from ember.compress.errors import CompressConfigError, StudentMismatchError
from ember.compress.select import parse_layers
from ember.models import find_parts

from conftest import FAMILIES


@pytest.mark.parametrize("family", FAMILIES)
def test_every_other_layer_is_copied_and_the_config_says_so(family, tokenizer):
    teacher = tiny_teacher(family)
    student = select_layers(teacher, every_other())
    t, s = find_parts(teacher), find_parts(student)
    assert s.num_layers == 2 and t.num_layers == 4
    key = "n_layers" if family == "distilbert" else "num_hidden_layers"
    assert getattr(student.config, key) == 2 and student.config.ember_teacher_layers == [0, 2]
    for j, i in enumerate((0, 2)):
        for (name, a), (_, b) in zip(s.layers[j].state_dict().items(), t.layers[i].state_dict().items(), strict=True):
            assert torch.equal(a, b), name
    assert s.layers[0] is not t.layers[0]  # a copy: training the student leaves the teacher alone
    out = student(**tokenizer(["play music"], return_tensors="pt"))
    assert out.logits.shape == (1, 3)


def test_first_k_and_given_lists():
    teacher = tiny_teacher()
    assert select_layers(teacher, first(3)).config.ember_teacher_layers == [0, 1, 2]
    assert select_layers(teacher, [3, 1]).config.ember_teacher_layers == [3, 1]
    assert parse_layers("0,2").indices == (0, 2) and parse_layers("first:2").count == 2
    assert parse_layers("every-other") == every_other()


def test_layer_indices_outside_the_teacher_are_refused():
    with pytest.raises(StudentMismatchError, match=r"layer indices \[4, 7\] are outside the teacher, which has 4 layers \(indices 0..3\)"):
        select_layers(tiny_teacher(), layers([0, 4, 7]))
    with pytest.raises(StudentMismatchError, match="outside the teacher"):
        select_layers(tiny_teacher(), first(5))


@pytest.mark.parametrize("make, message", [
    (lambda: layers([]), "non-empty list of layer indices"),
    (lambda: layers([1, 1]), "repeat a layer"),
    (lambda: first(0), "first.k. keeps k >= 1 layers"),
    (lambda: parse_layers("a,b"), "is not a list of layer indices; pass e.g. 0,2,4"),
])
def test_bad_selections_are_refused(make, message):
    with pytest.raises(CompressConfigError, match=message):
        make()
