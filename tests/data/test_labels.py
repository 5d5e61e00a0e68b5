import numpy as np
import pytest

from ember.data.labels import encode_labels, label_order
from ember.encoders import EncoderCache
from ember.errors import DataError
from ember.recycle import RecycleConfig, Recycler

from conftest import make_model


def test_ids_never_move_when_new_names_arrive():
    ids, names = encode_labels(["b", "a"])
    assert (ids, names) == ([1, 0], ["a", "b"])
    ids, names = encode_labels(["c", "a", "0"], names)
    assert (ids, names) == ([3, 0, 2], ["a", "b", "0", "c"])


def test_numeric_names_sort_as_numbers_and_mixed_names_as_text():
    assert label_order({"10", "2", "-1"}) == ["-1", "2", "10"]
    assert label_order({"10", "2", "x"}) == ["10", "2", "x"]


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([0, -1], "label 1 is -1; class ids must be >= 0. Unlabelled examples (a test split marked -1) are filled without labels"),
        (np.array([0.5]), "label 0 is the float 0.5; labels must be integers"),
        ("ab", "labels must be a sequence with one label per example, got a str"),
    ],
)
def test_refused_labels_say_why(labels, message):
    with pytest.raises(DataError) as err:
        encode_labels(labels)
    assert str(err.value).startswith(message)


def test_recycling_and_the_encoder_cache_give_the_same_ids(tokenizer):
    texts = [f"text number {i}" for i in range(6)]
    labels = ["10", "2", "1", "2", "10", "1"]
    model = make_model("bert").eval()
    rec = Recycler(model, tokenizer, None, RecycleConfig(layer=1, backend="memory"))
    rec.fill(texts, labels, progress=False)
    cache = EncoderCache(model.base_model.requires_grad_(False), tokenizer)
    cache.fill(texts, labels=labels, progress=False)
    assert rec.store.label_names == cache.label_names == ["1", "2", "10"]
    assert rec.store.get_split("train").labels == cache.dataset(device="cpu").collate(range(6))["labels"].tolist()
