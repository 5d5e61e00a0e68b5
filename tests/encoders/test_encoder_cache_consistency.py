"""EncoderCache never serves embeddings made by another setting, and serves the same ones however it is read."""

from __future__ import annotations

import pytest
import torch

from ember.encoders import CacheConfig, EncoderCache, KeyCollisionError, KeyExtractor
from ember.errors import DataError, StoreMismatchError

from conftest import make_model


def frozen(**overrides):
    return make_model("bert-base", **overrides).requires_grad_(False)


def test_a_config_change_without_a_weight_change_is_refused(tokenizer, texts, tmp_path):
    # Same weights, another activation: every embedding changes, so the store made by the first is stale.
    gelu = frozen()
    EncoderCache(gelu, tokenizer, CacheConfig(save_dir=tmp_path)).fill(texts, progress=False)
    relu = frozen(hidden_act="relu")
    relu.load_state_dict(gelu.state_dict())
    with pytest.raises(StoreMismatchError, match=r"holds embeddings of encoder 'text' made by another encoder or setting:\n  extra: "):
        EncoderCache(relu, tokenizer, CacheConfig(save_dir=tmp_path))
    # a classifier built from the same encoder (head-only config fields differ) still shares the store
    head = make_model("bert", num_labels=5).requires_grad_(False)
    head.bert.load_state_dict(gelu.state_dict())
    with EncoderCache(head, tokenizer, CacheConfig(save_dir=tmp_path)) as cache:
        assert cache.fill(texts, progress=False).computed == 0


@pytest.mark.parametrize("placement", ["cpu", "mmap"])
def test_embed_refuses_a_custom_key_that_names_another_stored_input(tokenizer, tmp_path, placement):
    first_word = KeyExtractor("first-word", lambda t: t.split()[0])
    cfg = CacheConfig(save_dir=tmp_path, placement=placement, key_extractors={"text": first_word})
    with EncoderCache(frozen(), tokenizer, cfg) as cache:
        cache.fill(["book a flight to paris", "play music"], progress=False)
        cache.dataset(labels=False)  # loads the cpu table, which embed looks in first
        own = cache.embed(["play music"])["text"]  # the input the key names: served from the cache
        torch.testing.assert_close(own, EncoderCache(frozen(), tokenizer).embed(["play music"])["text"])
        # "book a table" gets the key of "book a flight to paris": it used to be served that text's embedding
        with pytest.raises(KeyCollisionError, match=r"gave example 0 \('book a table'\) a key that the store already holds"):
            cache.embed(["book a table"])
        with pytest.raises(KeyCollisionError, match="gave the same key to two different inputs"):
            cache.embed(["set alarm", "set the alarm"], write_back=True)
        assert len(cache.encoders["text"].store) == 2


@pytest.mark.parametrize("backend", ["lmdb", "leveldb"])
def test_the_encoders_order_does_not_change_the_split_index(tokenizer, texts, tmp_path, backend):
    if backend == "leveldb":
        pytest.importorskip("plyvel")
    q, d = frozen(), frozen()
    cfg = CacheConfig(save_dir=tmp_path, backend=backend)
    with EncoderCache({"query": q, "doc": d}, tokenizer, cfg) as cache:
        cache.fill({"query": texts, "doc": texts[::-1]}, labels=[i % 2 for i in range(8)], progress=False)
        want = cache.dataset().collate(range(8))
    with EncoderCache({"doc": d, "query": q}, tokenizer, cfg) as cache:  # the same towers, listed the other way
        got = cache.dataset().collate(range(8))
        assert cache.fill({"query": texts, "doc": texts[::-1]}, progress=False, split="again").computed == 0
    for name in ("query", "doc", "labels"):
        torch.testing.assert_close(got[name], want[name])
    # another tokenizer setting for one tower still changes the index
    short = CacheConfig(save_dir=tmp_path, backend=backend, max_length=8)
    with pytest.raises(StoreMismatchError, match="holds embeddings of encoder 'doc'"):
        EncoderCache({"doc": d, "query": q}, tokenizer, short)


def test_embed_serves_an_empty_text_filled_with_allow_empty(tokenizer, texts):
    with EncoderCache(frozen(), tokenizer) as cache:
        cache.fill(["", *texts], progress=False, allow_empty=True)
        stored = cache.dataset(labels=False).collate([0])["text"]
        # the refusal names the argument that fixes it, and embed takes it (it used to have none)
        with pytest.raises(DataError, match="example 0 has an empty text; .* pass allow_empty=True"):
            cache.embed([""])
        torch.testing.assert_close(cache.embed(["", texts[0]], allow_empty=True)["text"][:1], stored)


def test_embed_reads_texts_from_a_generator(tokenizer, texts):
    with EncoderCache(frozen(), tokenizer) as cache:
        want = cache.embed(texts)["text"]
        # the generator used to be used up by the checks, then refused as "its list of texts is empty"
        torch.testing.assert_close(cache.embed(t for t in texts)["text"], want)
        torch.testing.assert_close(cache.embed({"text": iter(texts)})["text"], want)
        with pytest.raises(DataError, match="got one str"):
            cache.embed({"text": "play music"})
