"""The reject-class threshold: an exact search on validation logits, baked into the output bias, on the command line."""

from __future__ import annotations

import doctest
import json
import re

import pytest
import torch
from tiny import labelled, one_thread, tiny_teacher, write_labelled_csv  # noqa: F401  (autouse fixture)
from typer.testing import CliRunner

from ember.cli import app
from ember.compress import calibrate_reject, choose_reject_bias
from ember.compress.calibrate import add_class_bias, output_layer
from ember.errors import ConfigError, DataError, UnsupportedModelError

from conftest import TEXTS, make_model


def _objective(logits, gold, reject, bias, criterion):
    shifted = logits.clone()
    shifted[:, reject] += bias
    pred = shifted.argmax(-1)
    inside = gold != reject
    if criterion == "accuracy":
        return float((pred == gold).float().mean())
    return float(((pred[inside] == gold[inside]).float().mean() + (pred[~inside] == reject).float().mean()) / 2)


@pytest.mark.parametrize("criterion", ["balanced", "accuracy"])
@pytest.mark.parametrize("seed", range(6))
def test_the_exact_search_beats_every_offset_of_a_fine_grid(criterion, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(300, 5, generator=g) * 3
    gold = torch.randint(0, 5, (300,), generator=g)
    logits[torch.arange(300), gold] += 2.0  # a model that is right more often than not
    choice = choose_reject_bias(logits, gold, reject_label=4, criterion=criterion)
    best = _objective(logits, gold, 4, choice.bias, criterion)
    grid = [x / 20 for x in range(-300, 301)]
    assert best >= max(_objective(logits, gold, 4, b, criterion) for b in grid) - 1e-9
    assert best >= _objective(logits, gold, 4, 0.0, criterion)  # never worse than the model as it is
    after = choice.after["accuracy"] if criterion == "accuracy" else (choice.after["in_scope_accuracy"] + choice.after["reject_recall"]) / 2
    assert after == pytest.approx(best)
    assert choice.reject_examples == int((gold == 4).sum()) and choice.examples == 300


def test_a_model_that_already_separates_the_classes_keeps_its_bias():
    logits = torch.tensor([[3.0, 0.0, -1.0], [0.0, 3.0, -1.0], [0.0, 0.0, 2.0]])
    choice = choose_reject_bias(logits, [0, 1, 2], reject_label=2)
    assert choice.bias == 0.0 and choice.before == choice.after


def test_the_module_examples_run():
    import ember.compress.calibrate as module

    assert doctest.testmod(module).failed == 0


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert", "electra"])
def test_calibration_shifts_only_the_reject_logit_of_the_model(tokenizer, family):
    model = make_model(family, num_labels=3)
    with torch.no_grad():
        output_layer(model).weight.mul_(50.0)  # logits spread like a trained head's
    enc = tokenizer(list(TEXTS), return_tensors="pt", padding=True)
    with torch.no_grad():
        before = model(**enc).logits
    # the three texts closest to class 2 are its examples; the others keep their best other class
    margin = before[:, :2].max(-1).values - before[:, 2]
    closest = set(margin.argsort()[:3].tolist())
    labels = [2 if i in closest else int(before[i, :2].argmax()) for i in range(len(TEXTS))]
    choice = calibrate_reject(model, tokenizer, list(TEXTS), labels, 2)
    with torch.no_grad():
        after = model(**enc).logits
    assert choice.after["reject_recall"] == 1.0 and choice.after["in_scope_accuracy"] == 1.0
    assert torch.allclose(after[:, :2], before[:, :2], atol=1e-6)
    assert torch.allclose(after[:, 2], before[:, 2] + choice.bias, atol=1e-5)
    assert output_layer(model).out_features == 3


def test_apply_false_only_reports(tokenizer):
    model = tiny_teacher()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    texts, labels = labelled()
    calibrate_reject(model, tokenizer, texts, ["abc"[y] for y in labels], "c", apply=False)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_a_head_without_bias_gets_one():
    model = make_model("bert", num_labels=3)
    model.classifier.bias = None
    add_class_bias(model, 1, 0.5)
    assert model.classifier.bias.tolist() == [0.0, 0.5, 0.0]


@pytest.mark.parametrize("call, error, message", [
    (lambda: choose_reject_bias(torch.zeros(4, 3), [0, 1, 0, 1], 2), DataError, "no example of the reject class"),
    (lambda: choose_reject_bias(torch.zeros(4, 3), [2, 2, 2, 2], 2), DataError, "no example of any other class"),
    (lambda: choose_reject_bias(torch.zeros(4, 3), [0, 1, 2, 1], 3), ConfigError, "not one of the model's 3 classes"),
    (lambda: choose_reject_bias(torch.zeros(4, 3), [0, 1, 2], 2), DataError, r"logits \(4, 3\) and \(3,\) labels"),
    (lambda: choose_reject_bias(torch.zeros(4, 3), [0, 1, 2, 1], 2, "f1"), ConfigError, "'f1' is not one of balanced, accuracy"),
])
def test_bad_calibration_input_is_named(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_bad_model_input_is_named(tokenizer):
    texts, labels = labelled()
    with pytest.raises(ConfigError, match="'none' is not a class name of this model"):
        calibrate_reject(tiny_teacher(), tokenizer, texts, labels, "none")
    with pytest.raises(DataError, match=r"labels \['z'\] are not class names"):
        calibrate_reject(tiny_teacher(), tokenizer, texts, ["z"] * len(texts), "c")
    with pytest.raises(DataError, match="label 0 is the float 0.0"):  # not truncated to a class id
        calibrate_reject(tiny_teacher(), tokenizer, texts, [float(y) for y in labels], "c")
    with pytest.raises(DataError, match="texts but"):
        calibrate_reject(tiny_teacher(), tokenizer, texts, labels[:-1], "c")
    with pytest.raises(UnsupportedModelError, match="has no Linear layer with its"):
        calibrate_reject(make_model("bert-base"), tokenizer, texts, labels, 2)


@pytest.fixture
def folders(tmp_path, tokenizer):
    model_dir = tmp_path / "model"
    tiny_teacher().save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data = write_labelled_csv(tmp_path / "val.csv")
    return tmp_path, model_dir, data


def test_calibrate_on_the_command_line_saves_the_shifted_model(folders, tokenizer):
    from ember.compress import load_compressed

    tmp, model_dir, data = folders
    result = CliRunner().invoke(app, ["calibrate", "--model", str(model_dir), "--data", str(data), "--reject-label", "c",
                                      "--out", str(tmp / "calibrated"), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    bias = out["calibration"]["bias"]
    original, _ = load_compressed(model_dir)
    saved, _ = load_compressed(tmp / "calibrated")
    delta = saved.classifier.bias - original.classifier.bias
    assert delta.tolist() == pytest.approx([0.0, 0.0, bias], abs=1e-6)
    assert out["calibration"]["after"]["reject_recall"] >= out["calibration"]["before"]["reject_recall"] or bias < 0


@pytest.mark.parametrize("args, message", [
    (["--reject-label", "none"], "'none' is not a class name of this model"),
    (["--reject-label", "c", "--criterion", "f1"], "--criterion 'f1' is not one of balanced, accuracy"),
])
def test_calibrate_errors_name_the_fix(folders, args, message):
    tmp, model_dir, data = folders
    result = CliRunner().invoke(app, ["calibrate", "--model", str(model_dir), "--data", str(data), "--out",
                                      str(tmp / "o"), *args])
    assert result.exit_code == 2
    assert re.search(message, " ".join(result.output.split())), result.output
    assert not (tmp / "o").exists()


def test_the_offset_is_chosen_on_the_served_logits_when_given(tokenizer):
    from types import SimpleNamespace

    from ember.compress.evaluate import predict_logits

    model = tiny_teacher()
    texts, labels = labelled()
    served = lambda **batch: SimpleNamespace(logits=model(**batch).logits - torch.tensor([0.0, 0.0, 5.0]))  # noqa: E731
    expected = choose_reject_bias(predict_logits(served, tokenizer, texts), labels, 2)
    before = output_layer(model).bias.clone()
    choice = calibrate_reject(model, tokenizer, texts, labels, 2, served=served)
    assert choice.bias == pytest.approx(expected.bias) and choice.before == expected.before
    assert (output_layer(model).bias - before).tolist() == pytest.approx([0.0, 0.0, expected.bias], abs=1e-6)


def test_calibrate_with_optimize_saves_an_artifact_that_serves_the_offset(folders, tokenizer):
    pytest.importorskip("onnxruntime")
    from ember.compress.evaluate import predict_logits
    from ember.optimize.artifact import load_artifact

    tmp, model_dir, data = folders
    result = CliRunner().invoke(app, ["calibrate", "--model", str(model_dir), "--data", str(data), "--reject-label", "c",
                                      "--out", str(tmp / "served"), "--optimize", "onnx", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    texts, labels = labelled()
    served = predict_logits(load_artifact(tmp / "served" / "optimized"), tokenizer, texts)
    pred = served.argmax(-1)
    recall = float((pred[torch.tensor(labels) == 2] == 2).float().mean())
    assert recall == pytest.approx(out["calibration"]["after"]["reject_recall"])
