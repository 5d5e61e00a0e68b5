"""``ember optimize`` / ``ember autotune`` on a tiny model saved to disk."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from ember.cli import app

from conftest import WORDS, make_model

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from transformers import BertTokenizerFast

    d = tmp_path_factory.mktemp("tiny")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(WORDS))]
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, model_max_length=48).save_pretrained(str(d))
    make_model("bert-base").save_pretrained(str(d))
    return d


def test_optimize_command_writes_a_loadable_artifact(model_dir, tmp_path):
    from ember.optimize import load

    out = tmp_path / "art"
    res = CliRunner().invoke(app, ["optimize", str(model_dir), "--preset", "int8", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    line = json.loads(res.stdout.strip().splitlines()[-1])
    assert line["preset"] == "int8" and line["config"]["type"] == "torchao-int8"
    assert line["fidelity"]["n"] == 72 and line["fidelity"]["mean_cosine"] > 0.999
    art = load(out)
    assert art.fidelity.mean_cosine == line["fidelity"]["mean_cosine"]
    assert art.encode(["play music"]).shape == (1, 32)


def test_optimize_command_unknown_preset_exits_cleanly(model_dir, tmp_path):
    res = CliRunner().invoke(app, ["optimize", str(model_dir), "--preset", "warp", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2
    assert "unknown preset 'warp'; known: bf16, int8, onnx" in " ".join(res.output.split())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bf16_on_cuda(model_dir):
    from transformers import AutoModel, AutoTokenizer

    from ember.optimize import BF16Config, optimize

    model, tok = AutoModel.from_pretrained(str(model_dir)).eval(), AutoTokenizer.from_pretrained(str(model_dir))
    for dtype in ("bfloat16", "float16"):
        art = optimize(model, BF16Config(dtype=dtype, mode="cast", device="cuda"), tokenizer=tok)
        assert art.fidelity.mean_cosine > 0.999
        assert next(art.model.parameters()).device.type == "cuda"


def test_autotune_command_picks_a_faithful_winner_and_saves_it(model_dir, tmp_path):
    from ember.optimize import load

    data = tmp_path / "texts.csv"
    rows = ["play music", "set alarm for seven am", "order pizza", "what is the weather today in paris please",
            "call mom", "book flight to paris tomorrow", "tell me joke", "transfer money"]
    data.write_text("text\n" + "\n".join(rows) + "\n")
    out = tmp_path / "winner"
    res = CliRunner().invoke(app, ["autotune", str(model_dir), "--data", str(data), "--budget", "0.999",
                                   "--objective", "throughput", "--threads", "1", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    line = json.loads(res.stdout.strip().splitlines()[-1])
    results = {r["name"]: r for r in line["report"]["results"]}
    assert "pytorch-fp32" in results and len(results) >= 2  # the original and at least one preset measured
    best = results[line["best"]]
    assert best["passed"] and best["fidelity"]["mean_cosine"] >= 0.999
    passing = [r for r in results.values() if r["passed"]]
    assert best["throughput"] == max(r["throughput"] for r in passing)  # fastest within the budget
    if line["best"] != "pytorch-fp32":
        assert line["saved"] == str(out) and load(out).encode(["play music"]).shape == (1, 32)
    else:
        assert line["saved"] is None and "nothing saved to" in res.stdout and not out.exists()
