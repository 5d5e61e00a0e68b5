"""transformers.pipeline on ember artifacts: the original's labels and scores, before and after save/load."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging

import pytest
import torch
from transformers import BertConfig, pipeline

from ember.optimize import BF16Config, OnnxRuntimeConfig, OpenVINOConfig, load, optimize

from conftest import TEXTS as SAMPLE
from conftest import make_model

TEXTS = list(SAMPLE)

pytestmark = pytest.mark.filterwarnings("ignore")

LABELS = {0: "negative", 1: "neutral", 2: "positive"}
NEEDS_OPENVINO = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")
BACKENDS = {
    "onnx": lambda: OnnxRuntimeConfig(threads=1),
    "openvino": lambda: OpenVINOConfig(threads=1),
    "bf16": lambda: BF16Config(),  # stays a PyTorch module (autocast)
}


@pytest.fixture(scope="module")
def labelled(tokenizer):
    """A tiny classifier with named labels whose best label and scores differ from sentence to sentence."""
    # the default init (0.02) gives near-uniform scores and one label for every sentence; a wider init spreads
    # them, and centring the logits on these sentences makes the label follow what differs between them
    m = make_model("bert", initializer_range=0.2, id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    with torch.no_grad():
        m.classifier.bias.sub_(m(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits.mean(0))
    return m


@pytest.fixture(scope="module")
def expected(labelled, tokenizer):
    return _scores(pipeline("text-classification", model=labelled, tokenizer=tokenizer), TEXTS)


@pytest.fixture(scope="module")
def built(labelled, tokenizer):
    """Artifacts of ``labelled`` by backend name, each built once for the module."""
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            cache[name] = optimize(labelled, BACKENDS[name](), tokenizer=tokenizer)
        return cache[name]

    return get


def _scores(pipe, texts: list[str]) -> list[dict[str, float]]:
    """label -> score for every label of every text."""
    return [{d["label"]: d["score"] for d in row} for row in pipe(texts, top_k=None)]


@pytest.mark.parametrize("reload", [False, True], ids=["built", "loaded"])
@pytest.mark.parametrize("name", [
    "onnx",
    pytest.param("openvino", marks=NEEDS_OPENVINO),
    "bf16",
])
def test_text_classification_pipeline_matches_the_original(name, reload, built, expected, labelled, tmp_path):
    art = built(name)
    if reload:  # from disk alone: the HF config comes from the manifest
        art = load(art.save(tmp_path / name))
    assert isinstance(art.config, BertConfig) and art.config.id2label == LABELS
    # the config it was built with; OpenVINO records the batch-1 and batch shapes it chose (the same after a load)
    shapes = {"static_shapes": None, "batch_shapes": None} if name == "openvino" else {}
    assert dataclasses.replace(art.optimize_config, **shapes) == BACKENDS[name]()
    assert len({max(s, key=s.get) for s in expected}) == 3  # the check below can tell labels apart

    pipe = pipeline("text-classification", model=art, tokenizer=art.tokenizer)
    got = _scores(pipe, TEXTS)
    # softmax moves no score by more than the largest logit change; allow twice the verified one
    tol = max(1e-5, 2 * art.fidelity.max_abs_logit_diff)
    for g, e in zip(got, expected, strict=True):
        assert g.keys() == e.keys() == set(LABELS.values())
        assert max(g, key=g.get) == max(e, key=e.get)
        assert max(abs(g[k] - e[k]) for k in e) <= tol
    top = pipe(TEXTS[0])  # the default call: the best label only
    assert top[0]["label"] == max(expected[0], key=expected[0].get)


def test_the_pipeline_logs_no_unsupported_model_error(built, tokenizer):
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    log = logging.getLogger("transformers.pipelines.base")
    log.addHandler(handler)
    try:
        pipeline("text-classification", model=built("onnx"), tokenizer=tokenizer)
    finally:
        log.removeHandler(handler)
    assert [r.getMessage() for r in records if r.levelno >= logging.ERROR] == []


@pytest.fixture(scope="module")
def encoder():
    return make_model("bert-base")


@pytest.fixture(scope="module")
def encoder_art(encoder, tokenizer):
    return optimize(encoder, OnnxRuntimeConfig(threads=1), tokenizer=tokenizer)


@pytest.mark.parametrize("reload", [False, True], ids=["built", "loaded"])
def test_feature_extraction_pipeline_gives_the_last_hidden_state(reload, encoder, encoder_art, tokenizer, tmp_path):
    art = encoder_art
    if reload:
        art = load(art.save(tmp_path / "encoder"))
    assert art.config.to_dict() == encoder.config.to_dict()
    pipe = pipeline("feature-extraction", model=art, tokenizer=art.tokenizer, return_tensors=True)
    for text in TEXTS[:4]:
        x = tokenizer(text, return_tensors="pt")
        out = pipe(text)  # (1, T, H)
        assert out.shape == (1, x["input_ids"].shape[1], encoder.config.hidden_size)
        assert torch.allclose(out, art(**x).last_hidden_state, atol=1e-6)
        with torch.inference_mode():
            assert (out - encoder(**x).last_hidden_state).abs().max().item() < 1e-4


def test_the_hf_config_is_rebuilt_as_its_own_class_from_the_manifest_dict():
    from transformers import DistilBertConfig, PretrainedConfig

    from ember.optimize.artifact import ModelFacts

    saved = DistilBertConfig(dim=32, n_heads=4, id2label={0: "no", 1: "yes"}).to_dict()
    rebuilt = ModelFacts("distilbert", "logits", ("input_ids", "attention_mask"), 64, saved).pretrained_config()
    assert type(rebuilt) is DistilBertConfig and rebuilt.dim == 32 and rebuilt.id2label == {0: "no", 1: "yes"}
    # a model type transformers does not know keeps its keys in a plain config
    unknown = ModelFacts("mine", "logits", ("input_ids",), 64, {**saved, "model_type": "mine"}).pretrained_config()
    assert type(unknown) is PretrainedConfig and unknown.dim == 32 and unknown.num_labels == 2
