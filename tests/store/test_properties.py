"""Properties of the store's building blocks, over generated inputs (hypothesis)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ember.errors import StoreCorruptError
from ember.store import Fingerprint, content_key
from ember.store.codec import DTYPES, decode, encode

hypothesis = pytest.importorskip("hypothesis")
st = pytest.importorskip("hypothesis.strategies")
given, settings = hypothesis.given, hypothesis.settings

QUICK = settings(max_examples=60, deadline=None)
shapes = st.lists(st.integers(0, 9), min_size=0, max_size=3).map(tuple)
ids = st.lists(st.integers(0, 2**31 - 1), min_size=0, max_size=40)


def tensor(shape, dtype_name: str, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * 100).to(DTYPES[dtype_name])


@QUICK
@given(shape=shapes, dtype=st.sampled_from(sorted(DTYPES)), seed=st.integers(0, 2**16), key=st.binary(max_size=16))
def test_codec_round_trips_every_dtype_and_length(shape, dtype, seed, key):
    t = tensor(shape, dtype, seed)
    out = decode(encode({"states": t, "n": torch.tensor(len(shape))}, key), key)
    assert out["states"].dtype == t.dtype and out["states"].shape == t.shape and torch.equal(out["states"], t)


@QUICK
@given(shape=shapes, dtype=st.sampled_from(sorted(DTYPES)), seed=st.integers(0, 2**16), data=st.data())
def test_damaged_bytes_always_raise_never_decode_silently(shape, dtype, seed, data):
    blob = bytearray(encode({"states": tensor(shape, dtype, seed)}, b"key"))
    how = data.draw(st.sampled_from(["flip", "truncate", "extend", "zero"]))
    if how == "flip":
        at = data.draw(st.integers(0, len(blob) - 1))
        blob[at] ^= data.draw(st.integers(1, 255))
    elif how == "truncate":
        del blob[data.draw(st.integers(0, len(blob) - 1)) :]
    elif how == "extend":
        blob += data.draw(st.binary(min_size=1, max_size=8))
    else:
        start = data.draw(st.integers(0, len(blob) - 1))
        end = data.draw(st.integers(start + 1, len(blob)))
        if not any(blob[start:end]):
            return  # zeroing zeros changes nothing
        blob[start:end] = bytes(end - start)
    with pytest.raises(StoreCorruptError):
        decode(bytes(blob), b"key")


@QUICK
@given(a=ids, b=ids)
def test_keys_are_stable_and_distinct(a, b):
    assert content_key(a) == content_key(torch.tensor(a, dtype=torch.int64)) == content_key(list(a))
    assert len(content_key(a)) == 16
    assert (content_key(a) == content_key(b)) == (a == b)


BASE = Fingerprint(kind="recycle", architecture="BertModel/bert", weights="w", layer=3, dtype="float32", tokenizer="t",
                   max_length=128, extra=(("pooling", "mean"),))


def _changed(field: dataclasses.Field, draw) -> object:
    old = getattr(BASE, field.name)
    if isinstance(old, int):
        return draw(st.integers(-2, 10_000).filter(lambda v: v != old))
    if isinstance(old, tuple):
        return draw(st.lists(st.tuples(st.text(max_size=5), st.text(max_size=5)), max_size=3).map(tuple).filter(lambda v: v != old))
    return draw(st.text(max_size=12).filter(lambda v: v != old))


@QUICK
@given(data=st.data())
def test_fingerprints_differ_whenever_a_field_differs(data):
    field = data.draw(st.sampled_from(dataclasses.fields(Fingerprint)))
    other = dataclasses.replace(BASE, **{field.name: _changed(field, data.draw)})
    assert other != BASE and other.to_json() != BASE.to_json()
    assert [d.split(":")[0] for d in BASE.diff(other)] == [field.name]
    assert Fingerprint.from_json(other.to_json()) == other
