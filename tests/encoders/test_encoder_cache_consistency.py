"""EncoderCache never serves embeddings made by another setting, and serves the same ones however it is read."""

from __future__ import annotations

import pytest

from ember.encoders import CacheConfig, EncoderCache
from ember.errors import StoreMismatchError

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
