from __future__ import annotations

import pytest
import torch
from torch import nn

from ember.errors import UnsupportedModelError
from ember.models import SUPPORTED_FAMILIES, find_parts
from ember.recycle import Recycler

from conftest import make_model


class TinyCustomEncoder(nn.Module):
    """An architecture ember does not know: layers in ``blocks``, embeddings in ``embed``.

    As in every transformers encoder, all work between layers happens inside the layers.
    """

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(128, 16)
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(16, 16), nn.Tanh()) for _ in range(3)])

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, token_type_ids=None):
        h = self.embed(input_ids) if inputs_embeds is None else self.embed(inputs_embeds)
        for b in self.blocks:
            h = b(h)
        return {"last_hidden_state": h}


def test_unsupported_architecture_lists_families_and_override():
    with pytest.raises(UnsupportedModelError) as e:
        find_parts(TinyCustomEncoder())
    msg = str(e.value)
    for fam in SUPPORTED_FAMILIES:
        assert fam in msg
    assert "layers='encoder.layer', embeddings='embeddings'" in msg


def test_bad_override_path():
    with pytest.raises(UnsupportedModelError, match="no module at the given path"):
        find_parts(TinyCustomEncoder(), layers="nope", embeddings="embed")


def test_explicit_override_recycles_unknown_architecture(tokenizer, texts):
    model = TinyCustomEncoder().eval()
    rec = Recycler(model, tokenizer, None, layer=2, layers_path="blocks", embeddings_path="embed")
    batch = rec.tokenize(texts)
    with torch.no_grad():
        ref = model(**batch)["last_hidden_state"]
    rec.fill(texts, progress=False)
    with rec.train(), torch.no_grad():
        out = model(**batch)["last_hidden_state"]
    m = batch["attention_mask"].bool()
    assert (out[m] - ref[m]).abs().max() < 1e-6


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        ((None, None), {"layer": 2}, TypeError, "tokenizer must be the model's Hugging Face tokenizer, got NoneType None; "
         "load it with AutoTokenizer.from_pretrained(path) or take the second value of ember.load_model(path). "
         "The store is the third argument: Recycler(model, tokenizer, store, layer=k)"),
        (("tok", 5), {"layer": 2}, TypeError, "store must be the store's folder (a str or pathlib.Path; created if new), "
         "an open ember.store.ActivationStore, or None for an in-memory store; got int 5. E.g. Recycler(model, "
         "tokenizer, 'states/', layer=k)"),
        (("tok", " "), {"layer": 2}, ValueError, "store is an empty path (it would put the store in the current folder)"),
        (("tok", None), {"layer": "2"}, TypeError, "layer must be an int (the split layer k, 0 <= k), got str '2'; pass e.g. layer=3"),
        (("tok", None), {"layer": True}, TypeError, "layer must be an int (the split layer k, 0 <= k), got bool True"),
        (("tok", None), {"layer": 2.0}, TypeError, "layer must be an int (the split layer k, 0 <= k), got float 2.0"),
        (("tok", None), {"layer": -1}, ValueError, "layer=-1 is out of range; pass a split layer k with 0 <= k (embeddings"),
        (("tok", None), {"layer": 5}, ValueError, "layer=5 is out of range: BertForSequenceClassification has 4 layers; "
         "pass a split layer k with 0 <= k <= 4 (embeddings and layers 0..k-1 are frozen and stored, layers k.. train)"),
        (("tok", None, 3), {}, TypeError, "config must be a RecycleConfig, got int 3; for the split layer alone pass layer=k"),
    ],
    ids=["no-tokenizer", "store-int", "store-empty", "layer-str", "layer-bool", "layer-float", "layer-negative",
         "layer-past-the-model", "config-int"],
)
def test_bad_constructor_arguments_are_refused_with_the_fix(tokenizer, args, kwargs, error, message, tmp_path, monkeypatch):
    """Each used to fail deep inside (AttributeError on None.get_vocab, TypeError comparing '2' < 0, a store
    in the current folder for ''), or pass silently (layer=True was layer 1)."""
    monkeypatch.chdir(tmp_path)  # where a blank store path used to put its store
    args = tuple(tokenizer if a == "tok" else a for a in args)
    with pytest.raises(error) as caught:
        Recycler(make_model("bert"), *args, **kwargs)
    assert message in str(caught.value)


def test_recycle_config_checks_types():
    from ember.recycle import RecycleConfig

    with pytest.raises(ValueError, match=r"^max_length must be an int >= 2 \(tokens\), got '32'$"):
        RecycleConfig(layer=2, max_length="32")
    with pytest.raises(TypeError, match="layer must be an int"):
        RecycleConfig(layer=None)


def test_the_split_layer_may_be_any_of_0_to_the_layer_count(tokenizer, texts):
    """Both ends are real splits (embeddings only; every layer frozen); numpy ints count as ints."""
    import numpy as np

    for k in (0, np.int64(4)):
        rec = Recycler(make_model("bert"), tokenizer, None, layer=k)
        assert rec.config.layer == int(k) and type(rec.config.layer) is int
        assert rec.fill(texts, progress=False).computed == len(texts)


def test_base_model_and_classifier_share_a_store(tmp_path, tokenizer, texts):
    base = make_model("bert-base")
    Recycler(base, tokenizer, tmp_path / "s", layer=2).fill(texts, progress=False)
    clf = make_model("bert")  # same seed, same encoder weights
    clf.bert.load_state_dict(base.state_dict())
    rec = Recycler(clf, tokenizer, tmp_path / "s", layer=2, readonly=True)
    assert len(rec.store) == len(texts)


def test_store_refuses_other_weights_tokenizer_length_key(tmp_path, tokenizer, texts):
    from transformers import BertTokenizerFast

    from ember.errors import StoreMismatchError
    from ember.recycle import RecycleConfig

    model = make_model("bert")
    Recycler(model, tokenizer, tmp_path / "s", layer=2).fill(texts, progress=False)

    other = make_model("bert")
    with torch.no_grad():
        other.bert.encoder.layer[0].output.dense.weight.add_(1e-3)
    with pytest.raises(StoreMismatchError, match="weights: store has"):
        Recycler(other, tokenizer, tmp_path / "s", layer=2)
    vocab = dict(tokenizer.get_vocab(), extra=len(tokenizer.get_vocab()))
    with pytest.raises(StoreMismatchError, match="tokenizer: store has"):
        Recycler(model, BertTokenizerFast(vocab=vocab, model_max_length=48), tmp_path / "s", layer=2)
    with pytest.raises(StoreMismatchError, match="max_length: store has 48, this run has 32"):
        Recycler(model, tokenizer, tmp_path / "s", RecycleConfig(layer=2, max_length=32))
    with pytest.raises(StoreMismatchError, match="extra: store has"):
        Recycler(model, tokenizer, tmp_path / "s", layer=2, key_fn=lambda ids: bytes(len(ids)))
    eps = make_model("bert", layer_norm_eps=1e-5)
    eps.load_state_dict(model.state_dict())
    with pytest.raises(StoreMismatchError, match="extra: store has"):  # same weights, another config
        Recycler(eps, tokenizer, tmp_path / "s", layer=2)


def test_weights_changed_after_opening_are_caught(tokenizer, texts):
    from ember.errors import StoreMismatchError

    model = make_model("bert")
    rec = Recycler(model, tokenizer, None, layer=2)
    rec.fill(texts, progress=False)
    with torch.no_grad():
        model.bert.embeddings.word_embeddings.weight.mul_(2)
    with pytest.raises(StoreMismatchError, match="changed since this Recycler was created"), rec.train():
        pass


def test_sentence_pairs_do_not_share_keys_with_single_sentences(tokenizer):
    model = make_model("bert")
    rec = Recycler(model, tokenizer, None, layer=2)
    pair = rec.tokenize(["play music"], text_pair=["set alarm"])
    single = {k: v.clone() for k, v in pair.items()}
    single["token_type_ids"].zero_()
    with rec.use(write_back=True), torch.no_grad():
        model(**pair)
        model(**single)
    assert len(rec.store) == 2
    with torch.no_grad():
        ref = model(**pair).logits
    with rec.train(), torch.no_grad():
        assert (model(**pair).logits - ref).abs().max() < 1e-5
