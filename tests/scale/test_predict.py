"""Batch scoring gives what the artifact (or model) gives when called here, on Ray too, and writes it to a file."""

from __future__ import annotations

import json

import pytest
import torch

from ember.errors import DataError
from ember.scale.predict import Predictions, as_scorer, predict

from conftest import TEXTS, make_model
from raytest import ray_cluster, sentences  # noqa: F401

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def onnx_classifier(tokenizer, tmp_path_factory):
    """A saved ONNX Runtime artifact of a tiny 3-class classifier (a folder, as ember optimize --out writes)."""
    pytest.importorskip("onnxruntime")
    from ember.optimize import OnnxRuntimeConfig, optimize

    model = make_model("bert")
    model.config.id2label = {0: "greet", 1: "book", 2: "ask"}
    art = optimize(model, OnnxRuntimeConfig(), tokenizer=tokenizer, sample=list(TEXTS))
    return art.save(tmp_path_factory.mktemp("art") / "clf")


def test_scoring_here_gives_what_the_artifact_encodes(onnx_classifier):
    from ember.optimize import load

    texts = sentences(90)
    art = load(onnx_classifier)
    preds = predict(art, texts, batch_size=16, progress=False)
    assert torch.equal(preds.outputs, art.encode(texts, batch_size=16))
    assert preds.kind == "logits" and preds.label_names == ["greet", "book", "ask"]
    assert preds.predicted == [["greet", "book", "ask"][i] for i in art.encode(texts).argmax(-1).tolist()]


@pytest.mark.usefixtures("ray_cluster")
def test_scoring_on_ray_gives_what_the_artifact_encodes_here(onnx_classifier):
    from ember.optimize import load
    from ember.scale import RayConfig, RayExecutor

    texts = sentences(150, seed=5)
    executor = RayExecutor(RayConfig(workers=2))
    preds = predict(onnx_classifier, texts, batch_size=16, executor=executor, progress=False)  # actors load the folder
    assert torch.equal(preds.outputs, load(onnx_classifier).encode(texts, batch_size=16))
    assert preds.ids == list(range(len(texts))) and preds.texts == texts
    assert len(executor.stats.workers) >= 1 and executor.stats.examples == len(texts)


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
def test_a_plain_encoder_scores_the_same_on_ray_as_here(tokenizer):
    from ember.scale import RayConfig, RayExecutor

    texts = sentences(120, seed=6)
    model = make_model("bert-base")
    here = predict(model, texts, tokenizer=tokenizer, batch_size=16, progress=False)
    there = predict(model, texts, tokenizer=tokenizer, batch_size=16, executor=RayExecutor(RayConfig(workers=2)),
                    progress=False)
    assert here.kind == "embedding" and here.outputs.shape == (120, 32)
    assert torch.equal(here.outputs, there.outputs)


def test_a_plain_encoder_scores_mean_pooled_states(tokenizer):
    model = make_model("bert-base")
    texts = list(TEXTS)
    preds = predict(model, texts, tokenizer=tokenizer, batch_size=3, progress=False)
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state  # (B, T, H)
    mask = enc["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
    torch.testing.assert_close(preds.outputs, (hidden * mask).sum(1) / mask.sum(1), rtol=1e-5, atol=1e-6)


def test_predictions_are_written_to_parquet_and_jsonl_with_ids_texts_and_labels(tmp_path):
    pa = pytest.importorskip("pyarrow.parquet")
    preds = Predictions(ids=["x", "y"], texts=["a b", "c"], labels=["pos", "neg"],
                        outputs=torch.tensor([[0.25, -1.5, 3.0], [1.0, 2.0, -0.5]]), kind="logits",
                        label_names=["neg", "pos", "mid"])
    table = pa.read_table(preds.write(tmp_path / "p.parquet"))
    assert table.column_names == ["id", "text", "label", "logits", "prediction"]
    assert table.column("logits").to_pylist() == [[0.25, -1.5, 3.0], [1.0, 2.0, -0.5]]
    assert table.column("prediction").to_pylist() == ["mid", "pos"]
    rows = [json.loads(x) for x in preds.write(tmp_path / "p.jsonl").read_text().splitlines()]
    assert rows[0] == {"id": "x", "text": "a b", "label": "pos", "logits": [0.25, -1.5, 3.0], "prediction": "mid"}
    with pytest.raises(DataError, match=r"cannot write predictions to .*p\.csv: the file must end in one of \.parquet, \.jsonl"):
        preds.write(tmp_path / "p.csv")


def test_bad_scoring_input_is_refused_with_the_fix(tokenizer):
    model = make_model("bert-base")
    with pytest.raises(TypeError, match=r"needs its tokenizer: predict\(model, data, tokenizer=tok\)"):
        as_scorer(model)
    with pytest.raises(DataError, match="3 texts but 2 ids; pass one id per text"):
        predict(model, ["a", "b", "c"], tokenizer=tokenizer, ids=[1, 2], progress=False)
    with pytest.raises(DataError, match="wrap it: \\[text\\]"):
        predict(model, "one text", tokenizer=tokenizer, progress=False)
