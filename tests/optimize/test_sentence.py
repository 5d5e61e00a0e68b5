"""optimize() on a SentenceTransformer: a SentenceTransformer comes back whose encode runs the verified artifact."""

from __future__ import annotations

import pytest
import torch

from ember.optimize import OnnxRuntimeConfig, OpenVINOConfig, load, optimize

from conftest import make_model

st = pytest.importorskip("sentence_transformers")
pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def st_model(tmp_path_factory, tokenizer):
    """A tiny SentenceTransformer (random BERT, mean pooling, normalised), built in code and saved locally."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize, Pooling, Transformer

    path = tmp_path_factory.mktemp("tiny-st")
    make_model("bert-base").save_pretrained(path)
    tokenizer.save_pretrained(path)
    first = Transformer(str(path), max_seq_length=48)
    return SentenceTransformer(modules=[first, Pooling(32, pooling_mode="mean"), Normalize()], device="cpu").eval()


@pytest.mark.parametrize("config", [OnnxRuntimeConfig(threads=1), OpenVINOConfig(threads=1, static_shapes=())],
                         ids=["onnx", "openvino"])
def test_a_sentence_transformer_comes_back_encoding_with_the_artifact(st_model, texts, config, tmp_path):
    from sentence_transformers import SentenceTransformer

    from ember.optimize.artifact import OptimizedModel

    before = st_model[0].model
    fast = optimize(st_model, config, sample=texts)
    assert isinstance(fast, SentenceTransformer) and isinstance(fast[0].model, OptimizedModel)
    assert st_model[0].model is before  # the user's model is untouched
    assert fast[1] is st_model[1] and fast[2] is st_model[2]  # its own pooling and normalisation
    want = st_model.encode(texts, convert_to_tensor=True)
    got = fast.encode(texts, convert_to_tensor=True)
    assert torch.nn.functional.cosine_similarity(want, got).min() > 0.9999
    assert fast[0].model.fidelity.n == len(texts) and fast[0].model.fidelity.mean_cosine > 0.9999
    fast.save(str(tmp_path / "st"))
    assert not any(p.suffix in (".safetensors", ".bin") and p.name != "model.bin" for p in (tmp_path / "st").rglob("*"))
    back = load(tmp_path / "st")
    assert isinstance(back, SentenceTransformer) and isinstance(back[0].model, OptimizedModel)
    again = back.encode(texts, convert_to_tensor=True)
    assert torch.allclose(again, got, atol=1e-5)
    assert back[0].model.fidelity == fast[0].model.fidelity


def test_a_sentence_transformer_past_tolerance_is_refused_on_its_pooled_embeddings(st_model, texts, monkeypatch):
    from ember.errors import FidelityError
    from ember.fidelity import FidelityReport, Tolerance
    from ember.optimize import sentence

    monkeypatch.setattr(sentence, "pooled_fidelity", lambda *a: FidelityReport(n=8, mean_cosine=0.5, min_cosine=0.1))
    with pytest.raises(FidelityError, match="mean cosine 0.500000 < allowed 0.999000"):
        optimize(st_model, OnnxRuntimeConfig(threads=1, tolerance=Tolerance(min_mean_cosine=0.999)), sample=texts)


def test_a_plain_model_still_needs_its_tokenizer(texts):
    with pytest.raises(TypeError, match=r"optimize\(\) needs the model's tokenizer: optimize\(model, config, tokenizer=tok\)"):
        optimize(make_model("bert"), OnnxRuntimeConfig(), sample=texts)


def test_a_warning_about_a_sentence_transformer_points_at_the_callers_line(st_model, texts, monkeypatch):
    from ember.fidelity import FidelityReport, Tolerance
    from ember.optimize import sentence

    monkeypatch.setattr(sentence, "pooled_fidelity", lambda *a: FidelityReport(n=8, mean_cosine=0.5, min_cosine=0.1))
    cfg = OnnxRuntimeConfig(threads=1, tolerance=Tolerance(min_mean_cosine=0.999), on_violation="warn",
                            on_slower="ignore")
    with pytest.warns(UserWarning, match="changed the model's answers") as caught:
        optimize(st_model, cfg, sample=texts)
    assert caught[0].filename == __file__
