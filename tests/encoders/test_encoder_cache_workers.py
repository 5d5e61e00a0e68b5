"""Cached datasets in DataLoader worker processes started with spawn (macOS's default; Linux's forkserver alike)."""

from __future__ import annotations

import pytest
import torch

from ember.encoders import CacheConfig, EncoderCache
from ember.errors import StoreError

from conftest import make_model

LABELS = [0, 1, 2, 0, 1, 2, 0, 1]


@pytest.mark.parametrize("placement", ["cpu", "mmap"])
def test_spawned_workers_serve_the_same_batches(tokenizer, texts, tmp_path, placement):
    cfg = CacheConfig(save_dir=tmp_path, placement=placement)
    with EncoderCache(make_model("bert-base").requires_grad_(False), tokenizer, cfg) as cache:
        cache.fill(texts, labels=LABELS, progress=False)
        ds = cache.dataset(device="cpu")
        want = ds.collate(range(len(ds)))
        batches = list(ds.loader(4, shuffle=False, num_workers=1, multiprocessing_context="spawn"))
    torch.testing.assert_close(torch.cat([b["text"] for b in batches]), want["text"])
    assert torch.cat([b["labels"] for b in batches]).tolist() == LABELS


def test_a_leveldb_store_sent_to_a_spawned_worker_says_why_not(tokenizer, texts, tmp_path):
    pytest.importorskip("plyvel")
    import pickle

    cfg = CacheConfig(save_dir=tmp_path, placement="mmap", backend="leveldb")
    with EncoderCache(make_model("bert-base").requires_grad_(False), tokenizer, cfg) as cache:
        cache.fill(texts, progress=False)
        ds = cache.dataset(labels=False, device="cpu")
        with pytest.raises(StoreError, match="LevelDB allows one process at a time. Use num_workers=0"):
            pickle.dumps(ds)
