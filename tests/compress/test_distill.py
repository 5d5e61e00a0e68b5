"""Distillation from stored outputs: the loss, the loop, and students that cannot learn from a teacher."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from tiny import filled_teacher, labelled, one_thread, tiny_teacher  # noqa: F401  (autouse fixture)

from ember.compress import DistillConfig, Teacher, distill, distillation_loss, every_other, select_layers
from ember.compress.errors import CompressConfigError, StudentMismatchError
from ember.compress.evaluate import accuracy, compare_with_teacher
from ember.compress.losses import hidden_cosine_loss, soft_target_loss


def test_the_loss_is_alpha_ce_plus_t2_kl():
    s, t, y = torch.randn(5, 4), torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0])
    want = 0.3 * F.cross_entropy(s, y) + 0.7 * 4.0 * F.kl_div(
        F.log_softmax(s / 2, -1), F.softmax(t / 2, -1), reduction="batchmean")
    assert torch.allclose(distillation_loss(s, t, y, alpha=0.3, temperature=2.0), want, atol=1e-6)
    assert torch.allclose(distillation_loss(s, t, y, alpha=1.0, temperature=9.0), F.cross_entropy(s, y))
    assert float(soft_target_loss(t, t, 3.0)) == pytest.approx(0.0, abs=1e-6)
    mse = distillation_loss(s, t, None, alpha=0.5, temperature=1.0, mse_weight=2.0) - soft_target_loss(s, t, 1.0)
    assert torch.allclose(mse, 2.0 * F.mse_loss(s, t), atol=1e-6)


def test_hidden_cosine_ignores_padding():
    h = torch.randn(2, 3, 4)
    other = h.clone()
    other[1, 2] = -h[1, 2]  # a padded position, opposite direction
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    assert float(hidden_cosine_loss(other, h, mask)) == pytest.approx(0.0, abs=1e-6)


def _kl_to_teacher(student, teacher, tokenizer, texts) -> float:
    from ember.compress.evaluate import predict_logits

    s, t = predict_logits(student, tokenizer, texts), predict_logits(teacher, tokenizer, texts)
    return float(soft_target_loss(s, t, 1.0))


def test_distillation_never_runs_the_teacher_and_moves_the_student_towards_it(tokenizer):
    teacher = filled_teacher(tokenizer)
    student = select_layers(teacher.outputs.model, every_other())
    torch.nn.init.normal_(student.classifier.weight, std=1.0)  # a student far from its teacher
    texts, labels = labelled()
    before = _kl_to_teacher(student, teacher.outputs.model, tokenizer, texts)

    def refuse(*a, **k):
        raise AssertionError("the teacher ran during distillation")

    teacher.outputs.model.forward = refuse
    report = distill(student, teacher.source("train"), DistillConfig(alpha=0.0, epochs=8, lr=1e-3, batch_size=8),
                     progress=False)
    del teacher.outputs.model.forward
    assert report.steps == 8 * 3 and len(report.epoch_seconds) == 8
    assert _kl_to_teacher(student, teacher.outputs.model, tokenizer, texts) < before / 5
    assert compare_with_teacher(student, teacher.outputs.model, tokenizer, texts, labels).fidelity.label_agreement >= 0.9
    assert not student.training


def test_plain_fine_tuning_fits_the_labels(tokenizer):
    teacher = filled_teacher(tokenizer)
    student = select_layers(teacher.outputs.model, every_other())
    distill(student, teacher.source(), DistillConfig(alpha=1.0, epochs=40, lr=3e-3, batch_size=8, warmup=0.0), progress=False)
    texts, labels = labelled()
    assert accuracy(student, tokenizer, texts, labels) == 1.0


def test_cosine_loss_trains_on_stored_hidden_states(tokenizer):
    teacher = filled_teacher(tokenizer)
    student = select_layers(teacher.outputs.model, every_other())
    config = DistillConfig(alpha=0.0, cosine_weight=1.0, epochs=2, batch_size=8, hidden_map=((2, 4),))
    report = distill(student, teacher.source(), config, progress=False)
    assert report.steps == 6


def test_a_student_with_another_vocabulary_is_refused(tokenizer):
    teacher = filled_teacher(tokenizer)
    student = tiny_teacher(vocab=64)
    with pytest.raises(StudentMismatchError, match="takes 64 token ids but the teacher's tokenizer gives ids up to 127"):
        distill(student, teacher.source(), DistillConfig(epochs=1), progress=False)


def test_a_student_with_another_head_is_refused(tokenizer):
    teacher = filled_teacher(tokenizer)
    from conftest import make_model

    with pytest.raises(StudentMismatchError, match="head has 5 outputs but the teacher's has 3"):
        distill(make_model("bert", num_labels=5), teacher.source(), progress=False)


def test_another_hidden_size_needs_a_projection(tokenizer):
    teacher = filled_teacher(tokenizer)
    narrow = tiny_teacher(hidden_size=16, num_attention_heads=2, intermediate_size=32)
    config = DistillConfig(cosine_weight=1.0, epochs=1, batch_size=8)
    with pytest.raises(StudentMismatchError, match="hidden size is 16 but the teacher's is 32.*project_hidden=True"):
        distill(narrow, teacher.source(), config, progress=False)
    report = distill(narrow, teacher.source(), DistillConfig(cosine_weight=1.0, epochs=1, batch_size=8, project_hidden=True),
                     progress=False)
    assert report.config["projection"] == [32, 16]


def test_the_cosine_loss_needs_stored_hidden_states(tokenizer):
    teacher = filled_teacher(tokenizer, hidden_layers=())
    student = select_layers(teacher.outputs.model, every_other())
    with pytest.raises(StudentMismatchError, match=r"fill it with TeacherConfig\(hidden_layers=\(4,\)\)"):
        distill(student, teacher.source(), DistillConfig(cosine_weight=1.0), progress=False)


def test_unlabelled_data_learns_from_the_teacher_alone(tokenizer):
    teacher = Teacher(tiny_teacher(), tokenizer)
    texts, _ = labelled()
    teacher.fill(texts, split="unlabelled", progress=False)
    student = select_layers(teacher.outputs.model, every_other())
    report = distill(student, teacher.source("unlabelled"), DistillConfig(alpha=0.9, epochs=1, batch_size=8), progress=False)
    assert report.config["alpha"] == 0.0


def test_a_live_teacher_gives_the_same_training_as_the_store(tokenizer):
    teacher = filled_teacher(tokenizer)
    texts, labels = labelled()
    start = select_layers(teacher.outputs.model, every_other())
    a, b = copy.deepcopy(start), copy.deepcopy(start)
    config = DistillConfig(epochs=1, batch_size=8)
    distill(a, teacher.source(), config, progress=False)
    distill(b, teacher.live(texts, labels), config, progress=False)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    ({"alpha": 1.5}, r"alpha=1.5 must lie in \[0, 1\]"),
    ({"temperature": 0}, "temperature=0 must be a number > 0"),
    ({"epochs": 0}, "epochs=0 must be an int > 0"),
    ({"hidden_map": ((1,),)}, "hidden_map=.* must be .student_index, teacher_index. pairs"),
])
def test_bad_distill_settings_are_refused(kwargs, message):
    with pytest.raises(CompressConfigError, match=message):
        DistillConfig(**kwargs)
