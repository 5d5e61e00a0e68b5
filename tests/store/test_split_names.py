"""A split is named by a non-empty str: None (or a number) used to be recorded as a split of that name."""

from __future__ import annotations

import pytest

from ember.encoders import CacheConfig, EncoderCache
from ember.recycle import Recycler

from conftest import make_model


@pytest.mark.parametrize(("split", "error", "shown"), [(None, TypeError, "NoneType None"), (3, TypeError, "int 3"),
                                                       ("  ", ValueError, "an empty name")])
def test_fill_and_dataset_refuse_a_split_that_is_not_a_name(tokenizer, texts, split, error, shown):
    rec = Recycler(make_model("bert"), tokenizer, None, layer=2)
    rec.fill(texts, labels=[0, 1] * 4, progress=False)
    message = (f"a split is named by a non-empty str such as 'train' or 'test', got {shown}; the store at None has the "
               "splits ['train']. Pass split='train' (or another name) to fill and dataset.")
    calls = {"fill": lambda: rec.fill(["set alarm for seven"], labels=[1], split=split, progress=False),
             "dataset": lambda: rec.dataset(split)}
    for name, call in calls.items():
        with pytest.raises(error) as caught:
            call()
        assert str(caught.value) == message, name
    assert rec.store.split_names() == ["train"]
    assert len(rec.store) == len(texts)  # the refused fill computed nothing


def test_encoder_cache_fill_refuses_none_as_a_split_before_computing(tokenizer, texts):
    cache = EncoderCache(make_model("bert-base").requires_grad_(False), tokenizer, CacheConfig())
    with pytest.raises(TypeError, match=r"^a split is named by a non-empty str such as 'train' or 'test', got NoneType None"):
        cache.fill(texts, split=None, progress=False)
    assert len(cache.encoders["text"].store) == 0 and cache.splits.split_names() == []
