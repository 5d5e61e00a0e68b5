"""Review fixes of the encoder cache: concurrent readers, served dtype, example index, placement rule,
encoder names, random transforms read in workers, label kinds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from test_encoder_cache import LABELS, frozen, reference

from ember.encoders import (
    CacheConfig,
    CacheConfigError,
    EncoderCache,
    RandomTransformError,
    training_device,
)
from ember.errors import DataError, StoreError, StoreReadOnlyError, UnsupportedModelError
from ember.models.inputs import tokenize

READER = textwrap.dedent(
    """
    import json, sys
    from transformers import AutoModel, AutoTokenizer
    from ember.encoders import CacheConfig, EncoderCache
    from ember.errors import StoreLockedError

    model_dir, save_dir, new_text = sys.argv[1:]
    model = AutoModel.from_pretrained(model_dir).requires_grad_(False)
    tok = AutoTokenizer.from_pretrained(model_dir)
    out = {}
    with EncoderCache(model, tok, CacheConfig(save_dir=save_dir, placement="cpu")) as cache:
        batch = cache.dataset("train", device="cpu").collate([0, 1])
        out["train"] = batch["text"].tolist()
        out["labels"] = batch["labels"].tolist()
        out["embed"] = cache.embed(["play music"])["text"].tolist()
        out["refill_computed"] = cache.fill(["play music", "set alarm"], split="again", progress=False).computed
        try:
            cache.fill([new_text], split="new", progress=False)
            out["new_fill"] = "written"
        except StoreLockedError as exc:
            out["new_fill"] = str(exc)
    print(json.dumps(out))
    """
)


def test_second_process_reads_while_the_first_holds_the_writer(tokenizer, texts, tmp_path):
    model = frozen()
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    save_dir = tmp_path / "cache"
    cache = EncoderCache(model, tokenizer, CacheConfig(save_dir=save_dir))
    cache.fill(texts, labels=LABELS, progress=False)
    # A serving process writing misses back holds the writer lock until close().
    cache.embed(["tell me joke"], write_back=True)
    assert cache.encoders["text"].handle.writer
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(p) for p in sys.path if p])}
    run = subprocess.run(
        [sys.executable, "-c", READER, str(tmp_path / "model"), str(save_dir), "cancel reservation at restaurant"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout.strip().splitlines()[-1])
    torch.testing.assert_close(torch.tensor(got["train"]), reference(model, tokenizer, texts[:2]), atol=1e-5, rtol=1e-5)
    assert got["labels"] == [cache.label_names.index(x) for x in LABELS[:2]]
    torch.testing.assert_close(torch.tensor(got["embed"]), reference(model, tokenizer, ["play music"]), atol=1e-5, rtol=1e-5)
    assert got["refill_computed"] == 0  # a fill of stored texts only reads: no writer needed
    assert got["new_fill"].startswith(f"the store at {save_dir / 'text'} is being written by another process (pid {os.getpid()})")
    cache.close()


WRITER = textwrap.dedent(
    """
    import sys
    from transformers import AutoModel, AutoTokenizer
    from ember.encoders import CacheConfig, EncoderCache

    model_dir, save_dir, *texts = sys.argv[1:]
    model = AutoModel.from_pretrained(model_dir).requires_grad_(False)
    tok = AutoTokenizer.from_pretrained(model_dir)
    with EncoderCache(model, tok, CacheConfig(save_dir=save_dir)) as cache:
        cache.fill(texts, labels=list(range(len(texts))), split="later", progress=False)
    """
)


def test_reader_sees_what_another_process_filled_since(tokenizer, texts, tmp_path):
    model = frozen()
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    save_dir = tmp_path / "cache"
    with EncoderCache(model, tokenizer, CacheConfig(save_dir=save_dir)) as cache:
        cache.fill(texts[:4], labels=[0, 1, 2, 3], progress=False)
    reader = EncoderCache(model, tokenizer, CacheConfig(save_dir=save_dir, placement="cpu", readonly=True))
    assert len(reader.dataset(device="cpu")) == 4  # its table is loaded now, with 4 embeddings
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(p) for p in sys.path if p])}
    run = subprocess.run(
        [sys.executable, "-c", WRITER, str(tmp_path / "model"), str(save_dir), *texts],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    batch = reader.dataset("later", device="cpu").collate(range(8))  # the table is reloaded for the new keys
    torch.testing.assert_close(batch["text"], reference(model, tokenizer, texts), atol=1e-5, rtol=1e-5)
    assert batch["labels"].tolist() == list(range(8))
    reader.close()


def test_embed_from_several_threads_with_write_back(tokenizer, texts, tmp_path):
    import concurrent.futures

    model = frozen()
    new = [f"{t} {u}" for t in texts for u in texts[:4]]  # none of them filled
    want = reference(model, tokenizer, new)
    for round_ in range(6):  # the race is at the one moment a cache's first write_back reopens its store
        with EncoderCache(model, tokenizer, CacheConfig(save_dir=tmp_path / str(round_))) as cache:
            cache.fill(texts[:4])
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                # a fill (it takes and gives back the writer) and dataset() between the embeds
                filled = pool.submit(cache.fill, texts)
                got = list(pool.map(lambda t, c=cache: c.embed([t], write_back=True)["text"][0], new))
                filled.result()
                assert len(pool.submit(cache.dataset, "train", labels=False).result()) == len(texts)
            assert torch.allclose(torch.stack(got), want, atol=1e-5)
            enc = cache.encoders["text"]
            keys = enc.keys(new, tokenize(enc.tokenizer, new, enc.max_length))
            assert all(e is not None for e in enc.store.get(keys))  # every miss was written back


def test_readonly_config_never_writes(tokenizer, texts, tmp_path):
    model = frozen()
    with EncoderCache(model, tokenizer, CacheConfig(save_dir=tmp_path / "c")) as cache:
        cache.fill(texts[:4], labels=LABELS[:4], progress=False)
        assert not cache.encoders["text"].handle.writer  # the fill gave the writer back
    with EncoderCache(model, tokenizer, CacheConfig(save_dir=tmp_path / "c", readonly=True)) as cache:
        assert cache.fill(texts[:4], labels=LABELS[:4], progress=False).computed == 0
        assert cache.embed([texts[5]])["text"].shape == (1, 32)
        with pytest.raises(StoreReadOnlyError, match=r"^fill\(split='train'\) needs to write the store of encoder 'text'"):
            cache.fill(texts, labels=LABELS, progress=False)
        with pytest.raises(StoreReadOnlyError, match=r"^embed\(write_back=True\) needs to write the store of encoder 'text'"):
            cache.embed([texts[5]], write_back=True)
        assert len(cache.encoders["text"].store) == 4
    with pytest.raises(StoreError, match=r"CacheConfig\(readonly=True\), but save_dir .*empty has no store for encoder 'text'"):
        EncoderCache(model, tokenizer, CacheConfig(save_dir=tmp_path / "empty", readonly=True))
    with pytest.raises(CacheConfigError, match="readonly=True reads stores filled earlier, but save_dir is None"):
        CacheConfig(readonly=True)


@pytest.mark.parametrize("placement", ["cpu", "mmap"])
def test_float16_storage_is_served_as_float32(tokenizer, texts, tmp_path, placement):
    model = frozen()
    cfg = CacheConfig(save_dir=tmp_path, dtype="float16", placement=placement)
    with EncoderCache(model, tokenizer, cfg) as cache:
        cache.fill(texts, labels=LABELS, progress=False)
        batch = cache.dataset(device="cpu").collate([0, 1, 2])
        assert batch["text"].dtype == torch.float32
        torch.nn.Linear(32, 7)(batch["text"])  # an fp32 head takes the batch as it is
        torch.testing.assert_close(batch["text"], reference(model, tokenizer, texts[:3]), atol=2e-3, rtol=2e-3)
        assert cache.dataset(device="cpu", dtype=None).collate([0])["text"].dtype == torch.float16
        assert cache.dataset(device="cpu", dtype="bfloat16").collate([0])["text"].dtype == torch.bfloat16
        new = cache.embed([texts[0], "tell me joke"])["text"]
        assert new.dtype == torch.float32
        torch.testing.assert_close(new[0], batch["text"][0])  # cached or computed: the same stored rounding
        assert cache.embed(["tell me joke"], dtype=None)["text"].dtype == torch.float16
        with pytest.raises(CacheConfigError, match="dtype 'int8' is not supported for serving"):
            cache.dataset(device="cpu", dtype="int8")


def test_batches_carry_the_example_index_to_pair_raw_inputs(tokenizer, texts):
    q_enc = frozen()
    cache = EncoderCache({"query": q_enc}, tokenizer, CacheConfig(check_transform=0))
    labels = [i % 2 for i in range(len(texts))]
    cache.fill({"query": texts}, labels=labels, progress=False)
    torch.manual_seed(0)
    seen = []
    for batch in cache.dataset(device="cpu").loader(3, shuffle=True):
        idx = batch["index"].tolist()
        seen += idx
        # The raw inputs of a trainable tower are the same examples, in the batch's order.
        torch.testing.assert_close(batch["query"], reference(q_enc, tokenizer, [texts[i] for i in idx]), atol=1e-5, rtol=1e-5)
        assert batch["labels"].tolist() == [labels[i] for i in idx]
    assert sorted(seen) == list(range(8)) and seen != list(range(8))
    assert "index" not in cache.dataset(device="cpu", index=False).collate([0])


def test_auto_placement_follows_the_training_device(tokenizer, texts, monkeypatch):
    cache = EncoderCache({"query": frozen(), "doc": frozen()}, tokenizer, CacheConfig(mapping={"doc": "cpu"}))
    cache.fill({"query": texts, "doc": texts}, progress=False)
    head = torch.nn.Linear(32, 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert training_device(None) == torch.device("cpu")
    assert cache.placements() == {"query": "cpu", "doc": "cpu"}
    assert cache.dataset(labels=False).placements == {"query": "cpu", "doc": "cpu"}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # resolution only: nothing is moved to CUDA
    assert training_device(None) == torch.device("cuda")
    assert cache.placements() == {"query": "gpu", "doc": "cpu"}  # AUTO: CUDA is there and training uses it
    assert cache.placements("cpu") == {"query": "cpu", "doc": "cpu"}  # ... unless training runs on the CPU
    assert cache.placements(head) == {"query": "cpu", "doc": "cpu"}  # a CPU head
    assert training_device(head) == torch.device("cpu")
    batch = cache.dataset(labels=False, device=head).collate([0])
    assert batch["query"].device.type == "cpu"


@pytest.mark.parametrize("name", ["../evil", "a/b", ".hidden", "_x", "", "index", "x" * 101, 3])
def test_encoder_names_must_be_safe_folder_names(tokenizer, tmp_path, name):
    with pytest.raises(CacheConfigError) as err:
        EncoderCache({name: frozen()}, tokenizer, CacheConfig(save_dir=tmp_path / "c"))
    assert str(err.value) == (
        f"encoder name {name!r} is not allowed: a name is a folder in save_dir and a batch key, so it must be 1 to 100 "
        "letters, digits, '_', '-' or '.', starting with a letter or digit (no '/', no '..'), and not one of "
        "['label', 'labels', 'index']"
    )
    assert sorted(os.listdir(tmp_path)) == []  # nothing created, inside save_dir or outside it
    with pytest.raises(CacheConfigError, match="encoder names 'Doc' and 'doc' differ only in case"):
        EncoderCache({"Doc": frozen(), "doc": frozen()}, tokenizer)
    assert EncoderCache({"title.v2-x_1": frozen()}, tokenizer).names == ["title.v2-x_1"]


class Augmenting(torch.utils.data.Dataset):
    """Appends a word that alternates with each read of an item (state kept in the process that reads it)."""

    def __init__(self, texts):
        self.texts, self.reads = texts, [0] * len(texts)

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, i):
        self.reads[i] += 1
        return (self.texts[i] + (" please" if self.reads[i] % 2 else " now"), 0)


class NumpyAugmenting(Augmenting):
    """Random word from numpy's global RNG: forked workers inherit the parent's state."""

    def __getitem__(self, i):
        return (self.texts[i] + " " + ["please", "now", "today", "tomorrow"][np.random.randint(4)], 0)


@pytest.mark.parametrize("dataset", [Augmenting, NumpyAugmenting])
def test_random_transform_is_detected_in_worker_processes(tokenizer, texts, dataset):
    cache = EncoderCache(frozen(), tokenizer, CacheConfig(num_workers=2, check_transform=8))
    with pytest.raises(RandomTransformError, match=r"dataset item \d gave encoder 'text' different inputs on two reads"):
        cache.fill(dataset(texts), progress=False)


class Labelled(torch.utils.data.Dataset):
    def __init__(self, texts, labels):
        self.texts, self.labels = texts, labels

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, i):
        return {"text": self.texts[i], "label": self.labels[i]}


def test_integer_labels_of_every_kind(tokenizer, texts):
    cache = EncoderCache(frozen(), tokenizer)
    want = [i % 3 for i in range(8)]
    cache.fill(texts, labels=np.array(want), split="numpy", progress=False)
    cache.fill(texts, labels=torch.tensor(want), split="tensor", progress=False)
    cache.fill(Labelled(texts, [torch.tensor(y) for y in want]), split="items", progress=False)
    cache.fill(texts, labels=[np.int32(y) for y in want], split="scalars", progress=False)
    for split in ("numpy", "tensor", "items", "scalars"):
        assert cache.dataset(split, device="cpu").collate(range(8))["labels"].tolist() == want
    assert cache.label_names is None


def test_numeric_string_labels_sort_numerically(tokenizer, texts):
    cache = EncoderCache(frozen(), tokenizer)
    labels = ["10", "2", "1", "2", "10", "1", "33", "2"]
    cache.fill(texts, labels=labels, progress=False)
    assert cache.label_names == ["1", "2", "10", "33"]
    assert [cache.label_names[i] for i in cache.dataset(device="cpu").collate(range(8))["labels"].tolist()] == labels


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([0.0, 1.0] * 4, "label 0 is the float 0.0; labels must be integers (class ids) or strings (class names)"),
        (np.array([0.5] * 8), "label 0 is the float 0.5; labels must be integers"),
        (torch.tensor([1.0] * 8), "label 0 is the float 1.0; labels must be integers"),
        ([0, "bank"] * 4, "labels mix integers and strings (label 0: 0, label 1: 'bank'); use one kind"),
        ([[0, 1]] * 8, "label 0 is a list; each example needs one label"),
        ([0] * 7, "8 examples but 7 labels; give exactly one label per example"),
    ],
)
def test_bad_labels_are_refused(tokenizer, texts, labels, message):
    cache = EncoderCache(frozen(), tokenizer)
    with pytest.raises(DataError) as err:
        cache.fill(texts, labels=labels, progress=False)
    assert str(err.value).startswith(message)
    assert len(cache.encoders["text"].store) == 0  # refused before computing anything


def test_dataset_items_labelled_only_in_part_are_refused(tokenizer, texts):
    cache = EncoderCache(frozen(), tokenizer)
    with pytest.raises(DataError, match="dataset item 0 has a label but item 3 has none"):
        cache.fill(Labelled(texts, [0, 1, 2, None, 0, 1, 2, 0]), progress=False)


def test_mmap_batches_read_while_another_thread_fills(tokenizer, texts, tmp_path):
    """Batches of the ``mmap`` placement read the store, which a fill (or the first ``embed(write_back=True)``)
    on another thread closes and reopens as the writer: the reads take turns with it."""
    import concurrent.futures
    import threading

    model = frozen()
    want = reference(model, tokenizer, texts)
    with EncoderCache(model, tokenizer, CacheConfig(save_dir=tmp_path / "c", placement="mmap")) as cache:
        cache.fill(texts, labels=LABELS, progress=False)
        ds = cache.dataset("train", device="cpu")
        done = threading.Event()

        def read() -> int:
            n = 0
            while not done.is_set() or n < 50:
                batch = ds.collate(range(len(texts)))
                torch.testing.assert_close(batch["text"], want, atol=1e-5, rtol=1e-5)
                n += 1
            return n

        def fill() -> None:
            try:
                for i in range(30):  # every fill takes the writer (close, reopen) and gives it back
                    cache.fill([f"{t} {i}" for t in texts[:2]], split=f"more{i}", progress=False)
            finally:
                done.set()

        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            readers = [pool.submit(read) for _ in range(2)]
            pool.submit(fill).result()
            assert all(r.result() >= 50 for r in readers)


def test_embed_of_nothing_and_a_non_module_encoder_are_refused(tokenizer):
    with EncoderCache(frozen(), tokenizer) as cache:
        with pytest.raises(DataError, match=r"nothing to embed for encoder 'text': its list of texts is empty"):
            cache.embed([])
        with pytest.raises(DataError, match=r"texts must be a list of strings, got one str"):
            cache.embed("play music")
        with pytest.raises(DataError, match=r"cannot fill from one str \('play music'\): pass a list of texts"):
            cache.fill("play music", progress=False)
    with pytest.raises(TypeError, match=r"encoder 'text' must be a torch nn.Module, got str; load a folder"):
        EncoderCache("some/folder", tokenizer)  # type: ignore[arg-type]


@pytest.mark.parametrize("family", ["t5", "t5-generation"])
def test_an_encoder_decoder_model_is_refused_naming_its_encoder(tokenizer, tmp_path, family):
    from conftest import make_model

    model = make_model(family).requires_grad_(False)
    with pytest.raises(UnsupportedModelError, match=r"encoder 'text' is a T5\w+ \(model_type='t5'\), an encoder-decoder "
                       r"model: .*Pass its encoder instead: model.get_encoder\(\), or load the encoder alone \(e.g. "
                       r"transformers.T5EncoderModel.*Encoder families ember knows: bert, roberta"):
        EncoderCache(model, tokenizer, CacheConfig(save_dir=tmp_path / "cache"))  # was: a ValueError from T5's decoder
    assert not (tmp_path / "cache").exists()


def test_the_encoder_of_an_encoder_decoder_model_is_cached(tokenizer, texts):
    from conftest import make_model

    for encoder in (make_model("t5").get_encoder(), make_model("t5-encoder")):  # the fixes the error names
        with EncoderCache(encoder.requires_grad_(False), tokenizer) as cache:
            assert cache.fill(texts, progress=False).computed == len(texts)
            assert cache.embed(["play music"])["text"].shape == (1, 32)


def test_a_causal_decoder_warns_that_encoder_pooling_does_not_fit_it(tokenizer, texts):
    from ember.encoders import NamedPooling

    from conftest import FAMILIES, make_model

    gpt2 = make_model("gpt2").requires_grad_(False)
    for pooling in ("mean", "cls"):
        with pytest.warns(UserWarning, match=rf"encoder 'text' \(GPT2Model, model_type='gpt2'\) is a causal decoder: each "
                          rf"token's state sees only the tokens before it, so its '{pooling}' pooling is not what an "
                          r"encoder's would be .*Use an encoder .*or pool the last real token with "
                          r"pooling=NamedPooling\('last', "):
            EncoderCache(gpt2, tokenizer, CacheConfig(pooling=pooling)).close()
    last = NamedPooling("last", lambda h, m, out: h[torch.arange(len(h)), m.sum(1) - 1])  # the one the warning gives
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with EncoderCache(gpt2, tokenizer, CacheConfig(pooling=last)) as cache:
            got = cache.embed(texts[:2])["text"]
        for family in FAMILIES:  # encoders: no warning
            EncoderCache(make_model(family).requires_grad_(False), tokenizer).close()
    assert not [w for w in caught if "causal decoder" in str(w.message)]
    for i, text in enumerate(texts[:2]):
        with torch.no_grad():
            ids = tokenizer([text], return_tensors="pt")["input_ids"]
            alone = gpt2(input_ids=ids).last_hidden_state[0, -1]  # the last token's state, unpadded
        assert torch.allclose(got[i], alone, atol=1e-5)


@pytest.mark.parametrize("device", ["nonsense", "cuda:x", "gpu", [0]])
def test_a_device_that_is_not_one_is_refused_naming_the_valid_ones(device):
    from ember.encoders import training_device
    from ember.encoders.errors import CacheConfigError

    with pytest.raises(CacheConfigError, match=r"is not a device; pass 'cpu', 'cuda', 'cuda:0', 'mps', a torch.device"):
        training_device(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_refused_with_the_fix():
    from ember.encoders import training_device
    from ember.encoders.errors import CacheConfigError

    with pytest.raises(CacheConfigError, match=r"needs CUDA, but torch.cuda.is_available\(\) is False; pass 'cpu'"):
        training_device("cuda")
