"""Texts that tokenize to nothing are empty texts, for every verb that stores them."""

from __future__ import annotations

import pytest

from ember.data.texts import check_tokenized, structural_ids
from ember.encoders import EncoderCache
from ember.errors import DataError
from ember.recycle import RecycleConfig, Recycler

from conftest import make_model

INVISIBLE = ["\x00", "\u200b", " \u200b\x00 "]


def test_structural_ids_leave_the_unknown_token_out(tokenizer):
    ids = structural_ids(tokenizer)
    assert tokenizer.cls_token_id in ids and tokenizer.sep_token_id in ids and tokenizer.unk_token_id not in ids
    check_tokenized(["zebra"], [tokenizer("zebra")["input_ids"]], ids)  # [CLS] [UNK] [SEP]: a text


@pytest.mark.parametrize("text", INVISIBLE)
def test_recycler_fill_refuses_texts_that_tokenize_to_nothing(tokenizer, text):
    """Was: stored as the states of [CLS][SEP], as an empty text is only with allow_empty=True."""
    rec = Recycler(make_model("bert"), tokenizer, None, RecycleConfig(layer=2, backend="memory"))
    with pytest.raises(DataError, match=r"example 1 \(.*\) tokenizes to special tokens only: .*pass allow_empty=True"):
        rec.fill(["play music", text], progress=False)
    assert len(rec.store) == 0
    assert rec.fill(["play music", text], progress=False, allow_empty=True).computed == 2


@pytest.mark.parametrize("text", INVISIBLE)
def test_encoder_cache_fill_and_embed_refuse_them_too(tokenizer, text):
    enc = make_model("bert-base").requires_grad_(False)
    cache = EncoderCache(enc, tokenizer)
    for call in (lambda: cache.fill([text, "play music"], progress=False), lambda: cache.embed(["hi", text])):
        with pytest.raises(DataError, match=r"tokenizes to special tokens only"):
            call()
    assert cache.embed([text], allow_empty=True)["text"].shape[0] == 1
