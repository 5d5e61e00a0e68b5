"""``ember distill | prune | qat``: the API on the command line, a JSON result line, clean errors."""

from __future__ import annotations

import json
import re

import pytest
from tiny import labelled, one_thread, tiny_teacher, write_labelled_csv  # noqa: F401  (autouse fixture)
from typer.testing import CliRunner

from ember.cli import app


@pytest.fixture
def folders(tmp_path, tokenizer):
    teacher = tmp_path / "teacher"
    model = tiny_teacher()
    model.save_pretrained(teacher)
    tokenizer.save_pretrained(teacher)
    data = write_labelled_csv(tmp_path / "train.csv")
    return tmp_path, teacher, data


def _run(*args: str):
    result = CliRunner().invoke(app, list(args))
    parsed = result.exit_code == 0 and "--json" in args
    return result, (json.loads(result.stdout.strip().splitlines()[-1]) if parsed else None)


def test_distill_then_prune_then_qat(folders):
    tmp, teacher, data = folders
    result, out = _run("distill", "--teacher", str(teacher), "--data", str(data), "--layers", "0,2", "--out",
                       str(tmp / "student"), "--store", str(tmp / "store"), "--epochs", "1", "--batch-size", "8",
                       "--trim-vocab", "--json")
    assert result.exit_code == 0, result.output
    assert out["command"] == "distill" and out["report"]["steps"] == 3
    # a second run with another alpha starts from the stored outputs
    result, again = _run("distill", "--teacher", str(teacher), "--data", str(data), "--out", str(tmp / "student2"),
                         "--store", str(tmp / "store"), "--epochs", "1", "--alpha", "0.9", "--json")
    assert result.exit_code == 0, result.output
    result, pruned = _run("prune", "--model", str(tmp / "student"), "--teacher", str(teacher), "--data", str(data),
                          "--heads", "0.5", "--ffn", "0.5", "--epochs", "1", "--out", str(tmp / "pruned"), "--json")
    assert result.exit_code == 0, result.output
    assert pruned["heads"] == 2 and pruned["params_after"] < pruned["params_before"]
    pytest.importorskip("torchao")
    pytest.importorskip("onnxruntime")
    result, q = _run("qat", "--model", str(tmp / "pruned"), "--teacher", str(teacher), "--data", str(data),
                     "--out", str(tmp / "qat"), "--optimize", "onnx-int8", "--int8-embeddings", "--json")
    assert result.exit_code == 0, result.output
    assert q["fake_quantized"] > 0 and q["optimized"]["preset"] == "onnx-int8"
    assert (tmp / "qat" / "optimized" / "model.onnx").is_file()


@pytest.mark.parametrize("args, message", [
    (["--layers", "0,9"], r"layer indices \[9\] are outside the teacher, which has 4 layers"),
    (["--layers", "x"], "--layers 'x' is not a list of layer indices"),
    (["--preset", "fast"], "--preset 'fast' is not one of default, book, distilbert, plain"),
    (["--alpha", "2"], r"alpha=2.0 must lie in \[0, 1\]"),
])
def test_distill_errors_name_the_fix(folders, args, message):
    tmp, teacher, data = folders
    result, _ = _run("distill", "--teacher", str(teacher), "--data", str(data), "--out", str(tmp / "s"), *args)
    assert result.exit_code == 2
    assert re.search(message, " ".join(result.output.split())), result.output


def test_prune_refuses_a_fraction_of_one(folders):
    tmp, teacher, data = folders
    result, _ = _run("prune", "--model", str(teacher), "--data", str(data), "--heads", "1.0", "--out", str(tmp / "p"))
    assert result.exit_code == 2
    assert r"--heads 1.0 is outside [0, 1)" in " ".join(result.output.split())


def test_a_store_of_another_teacher_is_refused_on_the_command_line(folders, tokenizer):
    tmp, teacher, data = folders
    assert _run("distill", "--teacher", str(teacher), "--data", str(data), "--out", str(tmp / "s"), "--store",
                str(tmp / "store"), "--epochs", "1")[0].exit_code == 0
    other = tmp / "other"
    tiny_teacher(hidden_size=48).save_pretrained(other)
    tokenizer.save_pretrained(other)
    result, _ = _run("distill", "--teacher", str(other), "--data", str(data), "--out", str(tmp / "s2"), "--store",
                     str(tmp / "store"), "--epochs", "1")
    assert result.exit_code == 2 and "was made by another model or setting" in " ".join(result.output.split())
