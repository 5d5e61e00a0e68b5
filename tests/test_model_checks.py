"""ember.models.check_module and the model-kind checks that EncoderCache and optimize share."""

from __future__ import annotations

import pytest
from torch import nn
from transformers import BertConfig, BertModel

from ember.errors import UnsupportedModelError
from ember.models import check_module, is_causal_decoder, is_encoder_decoder

from conftest import FAMILIES, make_model


def test_check_module_names_what_was_given_and_the_fix():
    with pytest.raises(TypeError, match=r"^encoder 'query' must be a torch nn.Module, got str; load a folder or hub id "
                       r"with ember.load_model\(path\) first$"):
        check_module("some/folder", "encoder 'query'")
    with pytest.raises(UnsupportedModelError, match=r"^model is a T5Model \(model_type='t5'\), an encoder-decoder model"):
        check_module(make_model("t5"), "model")


def test_model_kinds_are_told_apart():
    class Autoencoder(nn.Module):  # a user's own module: its parts are not judged by their names
        def __init__(self) -> None:
            super().__init__()
            self.encoder, self.decoder = nn.Linear(4, 2), nn.Linear(2, 4)

    check_module(Autoencoder(), "model")
    check_module(make_model("t5").get_encoder(), "model")  # the encoder half shares the encoder-decoder's config
    assert [is_encoder_decoder(make_model(f)) for f in ("t5", "t5-generation", "t5-encoder")] == [True, True, False]
    assert not any(is_causal_decoder(make_model(f)) for f in [*FAMILIES, "bert-base", "t5-encoder"])
    assert is_causal_decoder(make_model("gpt2"))
    small = dict(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    assert is_causal_decoder(BertModel(BertConfig(is_decoder=True, **small)))
