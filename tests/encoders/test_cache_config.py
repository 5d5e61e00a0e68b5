"""CacheConfig validation: every refusal says what was received and how to fix it."""

from __future__ import annotations

import pytest

from ember.encoders import CacheConfig, CacheConfigError, KeyExtractor, NamedPooling


def test_defaults_and_presets():
    cfg = CacheConfig.on_disk("cache/", batch_size=8)
    assert (cfg.placement_of("doc"), cfg.pooling_of("doc"), cfg.batch_size) == ("mmap", "mean", 8)
    assert CacheConfig(mapping={"doc": "gpu"}).to_dict()["mapping"] == {"doc": "gpu"}
    with pytest.raises(TypeError):
        CacheConfig().mapping["x"] = "cpu"  # frozen, mapping included


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"placement": "disk"}, "placement='disk' is not a placement; use one of ['auto', 'cpu', 'gpu', 'mmap']"),
        ({"mapping": {"doc": "ram"}}, "mapping['doc']='ram' is not a placement"),
        ({"pooling": "max"}, "pooling='max' is not a pooling; use one of ['cls', 'mean', 'pooler'] or NamedPooling(name, fn)"),
        ({"pooling": lambda h, m, o: h[:, 0]}, "the fingerprint needs a stable name for it: pass NamedPooling('my-pooling', fn)"),
        ({"key_extractors": {"text": str.lower}}, "wrap the function with its stable name: KeyExtractor('my-key', fn)"),
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
        ({"num_workers": -1}, "num_workers must be >= 0, got -1"),
        ({"dtype": "int8"}, "dtype 'int8' is not supported for storage"),
        ({"save_dir": "cache", "backend": "memory"}, "backend='memory' keeps nothing on disk, so save_dir='cache' would stay"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(CacheConfigError) as err:
        CacheConfig(**kwargs)
    assert message in str(err.value)


def test_named_callables_need_names():
    with pytest.raises(CacheConfigError, match="a pooling function needs a non-empty name for the fingerprint, got ''"):
        NamedPooling("", lambda h, m, o: h)
    with pytest.raises(CacheConfigError, match="the pooling name 'mean' is reserved"):
        NamedPooling("mean", lambda h, m, o: h)
    assert KeyExtractor("id", str.lower).name == "id"


def test_mmap_needs_a_save_dir():
    with pytest.raises(CacheConfigError, match="placement 'mmap' reads embeddings from the on-disk store, but save_dir is None"):
        CacheConfig(placement="mmap").check_names(["text"])
