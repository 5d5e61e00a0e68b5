"""EncoderCache: fill, placements, persistence, label caching, two towers, inference, bad input."""

from __future__ import annotations

import pytest
import torch

from ember.encoders import (
    CacheConfig,
    CacheConfigError,
    EmbeddingShapeError,
    EncoderCache,
    KeyCollisionError,
    KeyExtractor,
    LabelCachingError,
    NamedPooling,
    RandomTransformError,
    TrainableEncoderError,
)
from ember.errors import StoreMismatchError
from ember.fidelity import mean_pool

from conftest import make_model


def frozen(seed: int = 0):
    """A tiny random BERT encoder with every parameter frozen; ``seed`` changes its weights."""
    m = make_model("bert-base")
    if seed:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return m.requires_grad_(False)


def reference(model, tokenizer, texts, pooling="mean"):
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**enc)
    if pooling == "cls":
        return out.last_hidden_state[:, 0]
    if pooling == "pooler":
        return out.pooler_output
    return mean_pool(out.last_hidden_state, enc["attention_mask"])


LABELS = ["travel", "bank", "music", "it", "weather", "alarm", "food", "bank"]


@pytest.mark.parametrize("pooling", ["mean", "cls", "pooler"])
def test_fill_serves_the_encoders_pooled_output(tokenizer, texts, pooling):
    model = frozen()
    with EncoderCache(model, tokenizer, CacheConfig(pooling=pooling)) as cache:
        report = cache.fill(texts, labels=LABELS, progress=False)
        assert (report.examples, report.encoders["text"].computed) == (8, 8)
        ds = cache.dataset()
        batch = ds.collate(range(len(ds)))
    assert set(batch) == {"text", "labels", "index"}
    assert batch["index"].tolist() == list(range(8)) and batch["text"].dtype == torch.float32
    torch.testing.assert_close(batch["text"], reference(model, tokenizer, texts, pooling), atol=1e-5, rtol=1e-5)
    assert cache.label_names == ["alarm", "bank", "food", "it", "music", "travel", "weather"]
    assert batch["labels"].tolist() == [cache.label_names.index(x) for x in LABELS]


def test_named_pooling_function_is_used_and_fingerprinted(tokenizer, texts, tmp_path):
    maxpool = NamedPooling("max", lambda h, m, out: h.masked_fill(m[..., None] == 0, -1e4).amax(1))
    model = frozen()
    with EncoderCache(model, tokenizer, CacheConfig(pooling=maxpool, save_dir=tmp_path)) as cache:
        cache.fill(texts, progress=False)
        got = cache.dataset(labels=False).collate([0])["text"]
    enc = tokenizer(texts[:1], return_tensors="pt")
    torch.testing.assert_close(got, model(**enc).last_hidden_state.amax(1))
    with pytest.raises(StoreMismatchError, match="pooling', 'max'"):
        EncoderCache(model, tokenizer, CacheConfig(pooling="mean", save_dir=tmp_path))


@pytest.mark.parametrize("placement", ["cpu", "mmap", "auto"])
def test_placements_give_identical_batches_and_persist(tokenizer, texts, tmp_path, placement):
    model = frozen()
    with EncoderCache(model, tokenizer, CacheConfig(save_dir=tmp_path)) as cache:
        cache.fill(texts, labels=LABELS, progress=False)
    # A later process: same encoder, nothing to compute, raw data never read.
    with EncoderCache(model, tokenizer, CacheConfig(save_dir=tmp_path, placement=placement)) as cache:
        ds = cache.dataset("train")
        assert ds.placements == {"text": "cpu" if placement == "auto" else placement}
        batch = ds.collate([3, 0])
        assert batch["labels"].tolist() == [cache.label_names.index(LABELS[3]), cache.label_names.index(LABELS[0])]
    torch.testing.assert_close(batch["text"], reference(model, tokenizer, [texts[3], texts[0]]), atol=1e-5, rtol=1e-5)


def test_label_caching_with_worker_processes(tokenizer, texts):
    class Rows(torch.utils.data.Dataset):  # a plain map-style dataset read in 2 worker processes
        def __len__(self):
            return len(texts)

        def __getitem__(self, i):
            return {"text": texts[i], "label": LABELS[i]}

    cache = EncoderCache(frozen(), tokenizer, CacheConfig(num_workers=2))
    cache.fill(Rows(), progress=False)
    labels = cache.dataset().collate(range(8))["labels"]
    assert [cache.label_names[i] for i in labels.tolist()] == LABELS


def test_random_transform_is_detected(tokenizer, texts):
    class Augmenting(torch.utils.data.Dataset):  # appends a word that changes from one read to the next
        def __init__(self):
            self.reads = [0] * len(texts)

        def __len__(self):
            return len(texts)

        def __getitem__(self, i):
            self.reads[i] += 1
            return (texts[i] + (" please" if self.reads[i] % 2 else " now"), 0)

    cache = EncoderCache(frozen(), tokenizer)
    with pytest.raises(RandomTransformError, match=r"dataset item 0 gave encoder 'text' different inputs on two reads"):
        cache.fill(Augmenting(), progress=False)


def test_trainable_encoder_is_refused(tokenizer):
    with pytest.raises(
        TrainableEncoderError,
        match=r"encoder 'doc' has \d+ trainable parameter tensors \(first: embeddings.word_embeddings.weight\)",
    ):
        EncoderCache({"query": frozen(), "doc": make_model("bert-base")}, tokenizer)


def test_missing_labels_are_said_not_invented(tokenizer, texts):
    cache = EncoderCache(frozen(), tokenizer)
    cache.fill(texts, progress=False)
    with pytest.raises(LabelCachingError, match="split 'train' was filled without labels"):
        cache.dataset()
    assert "labels" not in cache.dataset(labels=False).collate([0])
    with pytest.raises(LabelCachingError, match="no split 'val' in the cache"):
        cache.dataset("val")


def test_two_tower_training_and_serving_new_texts(tokenizer, texts, tmp_path):
    q_enc, d_enc = frozen(), frozen(seed=1)
    queries, docs = texts, texts[1:] + texts[:1]
    labels = [i % 2 for i in range(len(texts))]
    cfg = CacheConfig(save_dir=tmp_path, mapping={"doc": "mmap"}, poolings={"doc": "cls"})
    cache = EncoderCache({"query": q_enc, "doc": d_enc}, tokenizer, cfg)
    report = cache.fill({"query": queries, "doc": docs}, labels=labels, progress=False)
    assert {n: r.computed for n, r in report.encoders.items()} == {"query": 8, "doc": 8}
    ds = cache.dataset()
    assert ds.placements == {"query": "cpu", "doc": "mmap"}

    torch.manual_seed(0)
    head = torch.nn.Bilinear(32, 32, 2)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(30):
        for batch in ds.loader(4, shuffle=True):
            loss = torch.nn.functional.cross_entropy(head(batch["query"], batch["doc"]), batch["labels"])
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert all(not p.requires_grad for p in q_enc.parameters())
    full = ds.collate(range(8))
    assert (head(full["query"], full["doc"]).argmax(-1) == full["labels"]).float().mean() == 1.0

    # Serving: one cached query, one new; misses are computed on the fly and written back when asked.
    new = {"query": [texts[0], "cancel reservation at restaurant"], "doc": ["tell me joke", docs[0]]}
    out = cache.embed(new, write_back=True)
    torch.testing.assert_close(out["query"], reference(q_enc, tokenizer, new["query"]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["doc"], reference(d_enc, tokenizer, new["doc"], "cls"), atol=1e-5, rtol=1e-5)
    assert head(out["query"], out["doc"]).shape == (2, 2)
    assert (len(cache.encoders["query"].store), len(cache.encoders["doc"].store)) == (9, 9)
    again = cache.fill({"query": new["query"], "doc": new["doc"]}, progress=False, split="new")
    assert again.computed == 0


def test_save_dir_of_another_encoder_is_refused(tokenizer, texts, tmp_path):
    EncoderCache(frozen(), tokenizer, CacheConfig(save_dir=tmp_path)).fill(texts, progress=False)
    with pytest.raises(StoreMismatchError) as err:
        EncoderCache(frozen(seed=3), tokenizer, CacheConfig(save_dir=tmp_path))
    msg = str(err.value)
    assert msg.startswith(f"save_dir {tmp_path} holds embeddings of encoder 'text' made by another encoder or setting:\n  weights: store has")
    assert "Use another save_dir, delete" in msg


def test_mapping_naming_an_unknown_encoder(tokenizer):
    cfg = CacheConfig(mapping={"qurey": "cpu"})
    with pytest.raises(
        CacheConfigError,
        match=r"CacheConfig.mapping names encoder 'qurey', but the cache has encoders \['doc', 'query'\]",
    ):
        EncoderCache({"query": frozen(), "doc": frozen()}, tokenizer, cfg)


def test_encoder_returning_another_shape_than_recorded(tokenizer, texts, tmp_path):
    model = frozen()
    first = NamedPooling("custom", lambda h, m, out: h[:, 0])
    EncoderCache(model, tokenizer, CacheConfig(save_dir=tmp_path, pooling=first)).fill(texts[:4], progress=False)
    changed = NamedPooling("custom", lambda h, m, out: h[:, 0, :16])  # same name, other function
    cache = EncoderCache(model, tokenizer, CacheConfig(save_dir=tmp_path, pooling=changed))
    with pytest.raises(EmbeddingShapeError, match=r"encoder 'text' returned embeddings of shape \(16,\), but its store .* recorded \(32,\)"):
        cache.fill(texts, progress=False)


def test_interrupted_fill_resumes_with_only_the_missing(tokenizer, texts, tmp_path):
    model = frozen()
    calls = {"n": 0}

    def crash_on_second_batch(module, args, kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    handle = model.register_forward_pre_hook(crash_on_second_batch, with_kwargs=True)
    cfg = CacheConfig(save_dir=tmp_path, batch_size=3)
    cache = EncoderCache(model, tokenizer, cfg)
    with pytest.raises(KeyboardInterrupt):
        cache.fill(texts, labels=LABELS, progress=False)
    cache.close()
    handle.remove()
    cache = EncoderCache(model, tokenizer, cfg)
    assert len(cache.encoders["text"].store) == 3  # the first batch was committed
    with pytest.raises(LabelCachingError, match="An interrupted fill records its split only at the end; rerun it"):
        cache.dataset()
    report = cache.fill(texts, labels=LABELS, progress=False)
    assert (report.encoders["text"].already_stored, report.encoders["text"].computed) == (3, 5)
    torch.testing.assert_close(cache.dataset().collate(range(8))["text"], reference(model, tokenizer, texts), atol=1e-5, rtol=1e-5)


def test_index_like_key_extractor_collides_across_splits(tokenizer, texts, tmp_path):
    position = {t: str(i % 4) for i, t in enumerate(texts)}  # "dataset index" of train and of val
    cfg = CacheConfig(save_dir=tmp_path, key_extractors={"text": KeyExtractor("index", position.__getitem__)})
    cache = EncoderCache(frozen(), tokenizer, cfg)
    cache.fill(texts[:4], progress=False)
    with pytest.raises(KeyCollisionError, match=r"gave example 0 \('is it going to rain tomorrow'\) a key that the store already holds"):
        cache.fill(texts[4:], progress=False, split="val")
    with pytest.raises(KeyCollisionError, match="gave the same key to two different inputs"):
        cache.fill(texts, progress=False, split="all")


def test_gpu_placement_without_cuda_says_so(tokenizer, texts):
    if torch.cuda.is_available():
        pytest.skip("CUDA present: covered by the gpu test")
    cache = EncoderCache(frozen(), tokenizer, CacheConfig(placement="gpu"))
    cache.fill(texts, progress=False)
    with pytest.raises(CacheConfigError, match=r"placement 'gpu' for encoder 'text' needs CUDA, but torch.cuda.is_available\(\) is False"):
        cache.dataset(labels=False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_placement_serves_cuda_tensors(tokenizer, texts):
    model = frozen()
    cache = EncoderCache(model, tokenizer, CacheConfig(placement="auto"))
    cache.fill(texts, labels=LABELS, progress=False)
    assert cache.placements() == {"text": "gpu"} and cache.placements(model) == {"text": "cpu"}  # CPU encoder
    ds = cache.dataset(device="cuda")
    assert ds.placements == {"text": "gpu"}
    batch = ds.collate([0, 1])
    assert batch["text"].is_cuda and batch["labels"].is_cuda
    torch.testing.assert_close(batch["text"].cpu(), reference(model, tokenizer, texts[:2]), atol=1e-5, rtol=1e-5)
    assert cache.embed(["set alarm"], device="cuda")["text"].is_cuda
