"""Fill: resumable, crash-safe, length-sorted, labels cached, bad input refused clearly."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from ember.errors import DataError, StoreFullError, StoreReadOnlyError
from ember.recycle import Recycler
from ember.store import ActivationStore
from ember.store.keys import content_key

from conftest import make_model

TEXTS = [f"book flight to paris {'please ' * (i % 7)}{'call mom ' * (i % 3)}order pizza {i % 11 * 'a '}" for i in range(40)]


def test_interrupted_fill_resumes_and_keeps_commits(tmp_path, tokenizer, monkeypatch):
    model = make_model("bert")
    rec = Recycler(model, tokenizer, tmp_path / "s", layer=2)
    real, calls = rec.producer.entries, []

    def flaky(ids):
        calls.append(len(ids))
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user pressed Ctrl-C during the third batch
        return real(ids)

    monkeypatch.setattr(rec.producer, "entries", flaky)
    with pytest.raises(KeyboardInterrupt):
        rec.fill(TEXTS, batch_size=8, progress=False)
    committed = len(rec.store)
    assert committed == 16
    monkeypatch.setattr(rec.producer, "entries", real)
    report = rec.fill(TEXTS, batch_size=8, progress=False)
    unique = len(set(report.keys))
    assert report.already_stored == 16 and report.computed == unique - 16
    assert len(rec.store) == unique


def test_killed_process_leaves_only_whole_entries(tmp_path):
    """SIGKILL in the middle of a fill: every committed entry decodes; a rerun completes the store."""
    store = tmp_path / "s"
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {os.path.dirname(__file__) + '/..'!r})
        from tests.conftest import make_model
        from tests.recycle.test_fill import TEXTS, tiny_tokenizer
        from ember.recycle import Recycler
        rec = Recycler(make_model("bert"), tiny_tokenizer(), {str(store)!r}, layer=2)
        real = rec.producer.entries
        def slow(ids):
            out = real(ids); print("batch", flush=True); time.sleep(0.3); return out
        rec.producer.entries = slow
        rec.fill(TEXTS * 3, batch_size=4, progress=False)
        """
    )
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    for _ in range(3):
        assert p.stdout.readline().strip() == "batch"
    time.sleep(0.1)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    st = ActivationStore.open(store, None, readonly=True)
    n = len(st)
    assert 0 < n < len(TEXTS)
    assert all(e is not None and e["states"].shape[-1] == 32 for e in st.get(list(st.kv.keys())))
    st.close()
    rec = Recycler(make_model("bert"), tiny_tokenizer(), store, layer=2)
    report = rec.fill(TEXTS, progress=False)
    assert report.already_stored == n and len(rec.store) == len(set(report.keys))


def tiny_tokenizer():
    from transformers import BertTokenizerFast

    from conftest import WORDS

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(WORDS))]
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, model_max_length=48)


def test_full_disk_during_fill_is_clear_and_resumable(tmp_path, tokenizer):
    rec = Recycler(make_model("bert"), tokenizer, tmp_path / "s", layer=2, max_size=96 * 1024)
    with pytest.raises(StoreFullError, match="rerun the same command: it computes only what is missing"):
        rec.fill(TEXTS * 5, batch_size=4, progress=False)
    kept = len(rec.store)
    assert kept > 0
    assert all(e is not None for e in rec.store.get(list(rec.store.kv.keys())))
    rec.close()
    rec = Recycler(make_model("bert"), tokenizer, tmp_path / "s", layer=2)
    report = rec.fill(TEXTS, batch_size=4, progress=False)
    assert report.already_stored == kept


def test_enospc_from_the_os_is_a_store_full_error(tmp_path, tokenizer):
    rec = Recycler(make_model("bert"), tokenizer, tmp_path / "s", layer=2)
    kv = rec.store.kv
    kv.env = _EnvFailingOnWrite(kv.env, fail_at=2)  # the disk fills up during the second batch's commit
    with pytest.raises(StoreFullError, match=r"No space left on device.*8 entries committed before stay valid"):
        rec.fill(TEXTS, batch_size=8, progress=False)
    assert len(rec.store) == 8


class _EnvFailingOnWrite:
    """An LMDB environment whose n-th write transaction fails as a full disk would."""

    def __init__(self, env, fail_at: int) -> None:
        self.env, self.fail_at, self.writes = env, fail_at, 0

    def begin(self, *a, **kw):
        if kw.get("write"):
            self.writes += 1
            if self.writes == self.fail_at:
                raise OSError(errno.ENOSPC, "No space left on device")
        return self.env.begin(*a, **kw)

    def __getattr__(self, name):
        return getattr(self.env, name)


def test_empty_text_refused_with_index(tokenizer):
    rec = Recycler(make_model("bert"), tokenizer, None, layer=2)
    with pytest.raises(DataError, match="example 1 has an empty text; remove empty rows"):
        rec.fill(["play music", "   ", "set alarm"], progress=False)
    assert rec.fill(["play music", ""], allow_empty=True, progress=False).computed == 2


def test_overlong_text_truncated_identically_in_every_mode(tokenizer):
    model = make_model("bert")
    rec = Recycler(model, tokenizer, None, layer=2)
    long = "play music " * 100
    report = rec.fill([long], progress=False)
    batch = rec.tokenize([long, "set alarm"])
    assert batch["input_ids"].shape[1] == rec.max_length == 48
    assert content_key(batch["input_ids"][0].tolist()) == report.keys[0]
    with rec.train(), pytest.raises(Exception, match="1 of 2 examples"):
        model(**batch)  # the long text is a hit; only the short one is missing


def test_labels_cached_with_worker_processes(tokenizer):
    model = make_model("bert")
    rec = Recycler(model, tokenizer, None, layer=2)
    labels = ["b" if "please" in t else "a" for t in TEXTS]
    rec.fill(TEXTS, labels=labels, num_workers=2, progress=False)
    assert rec.store.label_names == ["a", "b"]
    items = rec.dataset("train").__getitems__(list(range(len(TEXTS))))
    assert [rec.store.label_names[int(x["labels"])] for x in items] == labels


def test_fill_computes_in_length_sorted_batches(tokenizer):
    rec = Recycler(make_model("bert"), tokenizer, None, layer=2)
    real, widths = rec.producer.entries, []
    rec.producer.entries = lambda ids: (widths.append([len(x) for x in ids]), real(ids))[1]
    rec.fill(TEXTS, batch_size=8, progress=False)
    flat = [w for b in widths for w in b]
    assert flat == sorted(flat)
    assert torch.tensor([max(b) - min(b) for b in widths]).float().mean() < 4


def test_fill_refuses_a_bare_string_and_labels_past_the_head(tokenizer, texts):
    model = make_model("bert", num_labels=3)
    rec = Recycler(model, tokenizer, None, layer=2)
    with pytest.raises(DataError, match=r"texts must be a list of strings, got one str \('play music'\); wrap it"):
        rec.fill("play music", progress=False)  # was: "example 4 has an empty text" (the space)
    with pytest.raises(DataError, match=r"label id 7 is past the model's head, which has 3 outputs \(ids 0\.\.2\)"):
        rec.fill(texts[:3], labels=[0, 1, 7], progress=False)  # was: IndexError inside cross_entropy mid-epoch
    assert len(rec.store) == 0 and rec.store.split_names() == []
    base = Recycler(make_model("bert-base"), tokenizer, None, layer=2)  # no head yet: any class ids
    assert base.fill(texts[:3], labels=[0, 1, 7], progress=False).computed == 3


def test_load_model_names_a_missing_folder_and_a_head_of_another_size(tmp_path, tokenizer):
    from ember.models import load_model

    with pytest.raises(FileNotFoundError, match=r"model folder .*nope does not exist"):
        load_model(str(tmp_path / "nope"))
    make_model("bert", num_labels=3).save_pretrained(tmp_path / "clf")
    tokenizer.save_pretrained(tmp_path / "clf")
    with pytest.raises(DataError, match=r"has a 3-label classification head but 2 labels were asked for"):
        load_model(str(tmp_path / "clf"), "classification", num_labels=2)


def test_a_store_path_that_is_a_file_or_another_backends_folder_is_refused(tmp_path, tokenizer):
    from ember.errors import StoreError
    from ember.store import open_kv

    (tmp_path / "afile").write_text("x")
    with pytest.raises(StoreError, match=r"afile is a file, not a store folder"):
        Recycler(make_model("bert"), tokenizer, tmp_path / "afile", layer=2)
    open_kv(tmp_path / "lm", "lmdb").close()
    with pytest.raises(StoreError, match=r"holds a lmdb store, not a leveldb one; open it with backend='lmdb'"):
        open_kv(tmp_path / "lm", "leveldb")
    assert not (tmp_path / "lm" / "CURRENT").exists()


def test_a_readonly_store_fills_what_it_holds_and_refuses_writes_naming_the_fix(tmp_path, tokenizer):
    """A fill of a read-only store used to fail writing the split record even when nothing changed; now only a
    fill that needs a write is refused, before it computes anything."""
    model = make_model("bert")
    labels = ["a", "b"] * 20
    with Recycler(model, tokenizer, tmp_path / "s", layer=2) as rec:
        rec.fill(TEXTS, labels=labels, progress=False)
    rec = Recycler(model, tokenizer, tmp_path / "s", layer=2, readonly=True)
    report = rec.fill(TEXTS, labels=labels, progress=False)
    assert (report.computed, report.already_stored, report.unique) == (0, len(set(TEXTS)), len(set(TEXTS)))
    before = (len(rec.store), rec.store.split_names(), rec.store.label_names)
    cases = [
        (dict(data=TEXTS + ["call mom please"]), "1 of 41 distinct examples are not stored yet; split 'train' is recorded with other examples or labels"),
        (dict(data=TEXTS[:2], labels=["a", "c"], split="dev"), "new label names ['c']; split 'dev' is not recorded yet"),
        (dict(data=TEXTS, labels=["b", "a"] * 20), "split 'train' is recorded with other examples or labels"),
    ]
    for kwargs, needs in cases:
        with pytest.raises(StoreReadOnlyError) as caught:
            rec.fill(**kwargs, progress=False)
        assert str(caught.value) == (
            f"this fill needs to write the store at {tmp_path / 's'} ({needs}), but it was opened with readonly=True; "
            "open it with readonly=False in one process to fill it"
        )
    assert (len(rec.store), rec.store.split_names(), rec.store.label_names) == before


def test_a_tokenizer_without_a_pad_token_pads_as_fill_does(tmp_path, tokenizer):
    """Recycle and the encoder cache pad token ids themselves (id 0 under a zero mask); ``Recycler.tokenize`` (and
    so ``evaluate``) asked the tokenizer to pad instead, and a GPT-2-style tokenizer failed inside transformers.
    Asking for a pad token would not do: it is part of the tokenizer's fingerprint, so the filled store would no
    longer open."""
    import copy

    from ember.encoders import CacheConfig, EncoderCache
    from ember.recycle import evaluate

    gpt_like = copy.deepcopy(tokenizer)
    gpt_like.pad_token = None
    texts, labels = TEXTS[:12], [i % 3 for i in range(12)]
    model = make_model("bert")
    rec = Recycler(model, gpt_like, tmp_path / "s", layer=2)
    rec.fill(texts, labels, progress=False)
    batch = rec.tokenize(texts[:5])
    padded = dict(tokenizer(texts[:5], truncation=True, max_length=rec.max_length, padding=True, return_tensors="pt"))
    assert batch.keys() == padded.keys() and all(torch.equal(batch[k], padded[k]) for k in padded)  # [PAD] is id 0
    with torch.no_grad():
        plain = model(**batch).logits
        with rec.train():
            assert torch.allclose(model(**batch).logits, plain, atol=1e-5)
    assert evaluate(rec, texts, labels) == evaluate(Recycler(model, tokenizer, None, layer=2), texts, labels)
    rec.close()
    base = make_model("bert-base").requires_grad_(False)
    with EncoderCache(base, gpt_like, CacheConfig(save_dir=tmp_path / "c")) as cache:
        assert cache.fill(texts, labels, progress=False).encoders["text"].computed == 12


def test_contexts_that_write_refuse_a_read_only_store_on_entry(tmp_path, tokenizer):
    """record() and use(write_back=True) on a read-only store failed at the first forward's write, in the
    backend's words, with the model's bottom swapped out; now entering them says so and how to fix it."""
    model = make_model("bert")
    with Recycler(model, tokenizer, tmp_path / "s", layer=2) as rec:
        rec.fill(TEXTS[:4], progress=False)
    rec = Recycler(model, tokenizer, tmp_path / "s", layer=2, readonly=True)
    batch = rec.tokenize(["call mom please", *TEXTS[:2]])
    with torch.no_grad():
        plain = model(**batch).logits
    cases = [
        (rec.record, "record() writes the states of every forward", "use() or train() to read it"),
        (lambda: rec.use(write_back=True), "use(write_back=True) writes the states of the examples it computes",
         "use() without write_back to read it"),
    ]
    for enter, what, instead in cases:
        with pytest.raises(StoreReadOnlyError) as caught, enter():
            model(**batch)
        assert str(caught.value) == (
            f"{what} to the store at {tmp_path / 's'}, but it was opened with readonly=True; open it with "
            f"readonly=False in one process to write it (Recycler(..., readonly=False)), or call {instead}"
        )
        assert rec._active is None
        with torch.no_grad():
            assert torch.equal(model(**batch).logits, plain)  # the model was left as it was
    with torch.no_grad(), rec.use():  # reading is fine
        assert torch.allclose(model(**batch).logits, plain, atol=1e-5)
    assert len(rec.store) == 4
    rec.close()
