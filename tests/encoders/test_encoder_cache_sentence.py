"""A SentenceTransformer as a cached encoder: its own tokenizer, truncation and pooling, embeddings equal to encode()."""

from __future__ import annotations

import warnings

import pytest
import torch

from ember.encoders import CacheConfig, EncoderCache
from ember.encoders.errors import CacheConfigError

from conftest import make_model

st = pytest.importorskip("sentence_transformers")

TEXTS = ["play music", "set alarm for seven", "order pizza please", "call mom", "book flight to paris",
         "what is the weather today", "tell me joke"]


@pytest.fixture(scope="module")
def sentence_model(tmp_path_factory, tokenizer):
    """A tiny random BERT inside a SentenceTransformer: Transformer -> mean Pooling -> Dense -> Normalize."""
    from sentence_transformers.sentence_transformer import modules

    path = tmp_path_factory.mktemp("st") / "bert"
    make_model("bert-base").save_pretrained(path)
    tokenizer.save_pretrained(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        body = modules.Transformer(str(path), max_seq_length=12)
        model = st.SentenceTransformer(modules=[body, modules.Pooling(32, "mean"), modules.Dense(32, 16),
                                                modules.Normalize()], device="cpu")
    return model.requires_grad_(False).eval()


def test_cached_embeddings_equal_encode(sentence_model, tmp_path):
    want = sentence_model.encode(TEXTS + ["a much longer text that goes past twelve tokens for sure to truncate it"],
                                 convert_to_tensor=True)
    with EncoderCache(sentence_model, None, CacheConfig(save_dir=tmp_path / "c")) as cache:
        report = cache.fill(TEXTS, labels=[0, 1, 2, 0, 1, 2, 0], progress=False)
        assert report.computed == len(TEXTS)
        served = cache.dataset("train", device="cpu").collate(list(range(len(TEXTS))))["text"]
        torch.testing.assert_close(served, want[: len(TEXTS)], atol=1e-5, rtol=1e-5)
        new = cache.embed(["a much longer text that goes past twelve tokens for sure to truncate it"])["text"]
        torch.testing.assert_close(new, want[-1:], atol=1e-5, rtol=1e-5)  # truncated at max_seq_length, as encode does
        assert cache.encoders["text"].max_length == 12


def test_its_pooling_is_in_the_fingerprint_and_a_pooling_for_it_is_refused(sentence_model, tmp_path):
    with EncoderCache(sentence_model, None, CacheConfig(save_dir=tmp_path / "c")) as cache:
        extra = dict(cache.encoders["text"].fingerprint.extra)
        assert extra["pooling"].startswith("sentence-transformers:") and '"pooling_mode": "mean"' in extra["pooling"]
        assert "Normalize" in extra["pooling"] and "Dense" in extra["pooling"]
    with pytest.raises(CacheConfigError, match=r"encoder 'text' is a SentenceTransformer, which pools with its own modules"):
        EncoderCache(sentence_model, None, CacheConfig(poolings={"text": "cls"}))


def test_a_plain_encoder_still_needs_a_tokenizer():
    with pytest.raises(CacheConfigError, match=r"no tokenizer for encoders \['text'\]"):
        EncoderCache(make_model("bert-base").requires_grad_(False), None)


@pytest.mark.slow
def test_the_real_all_minilm_l6_v2_as_its_users_call_it(tmp_path):
    from ember.models import default_model_path

    model = st.SentenceTransformer(str(default_model_path()), device="cpu").requires_grad_(False)
    with EncoderCache(model, None, CacheConfig(save_dir=tmp_path / "c")) as cache:
        cache.fill(TEXTS, progress=False)
        got = cache.embed(TEXTS)["text"]
    torch.testing.assert_close(got, model.encode(TEXTS, convert_to_tensor=True), atol=1e-5, rtol=1e-5)
