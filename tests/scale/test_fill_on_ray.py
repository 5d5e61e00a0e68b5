"""Fills computed by Ray actors store the same keys and bytes as one process, and keep what they committed when
a worker dies."""

from __future__ import annotations

import os
import sys

import pytest

pytest.importorskip("ray")

import ray.cloudpickle  # noqa: E402

from ember.batching import length_buckets  # noqa: E402
from ember.encoders import CacheConfig, EncoderCache  # noqa: E402
from ember.recycle import Recycler  # noqa: E402
from ember.scale import RayConfig, RayExecutor, WorkerDiedError, WorkerEnvironmentError  # noqa: E402

from conftest import make_model  # noqa: E402
from raytest import ray_cluster, same_store, sentences  # noqa: E402, F401

# the producers below are defined here: workers get them by value (this folder is not on their path)
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
pytestmark = [pytest.mark.usefixtures("ray_cluster"), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

LABELS = ["a", "b", "c"]


class DiesOn:
    """A producer that kills its worker process on some batches: those holding an id list of ``length`` or more
    tokens (every time), or the first batch any worker computes when ``once`` names a marker file."""

    def __init__(self, inner, *, length: int | None = None, once: str | None = None) -> None:
        self.inner, self.length, self.once = inner, length, once
        self.fingerprint = inner.fingerprint

    def entries(self, ids):
        if self.length is not None and max(map(len, ids)) >= self.length:
            os._exit(3)
        if self.once is not None:
            try:
                os.close(os.open(self.once, os.O_CREAT | os.O_EXCL))
                os._exit(3)  # the first call anywhere creates the marker and dies
            except FileExistsError:
                pass
        return self.inner.entries(ids)


def _recycler(tokenizer, path):
    return Recycler(make_model("bert"), tokenizer, path, layer=2)


def test_a_recycling_fill_on_two_ray_workers_stores_what_one_process_stores(tokenizer, tmp_path):
    texts = sentences(300)
    labels = [LABELS[i % 3] for i in range(len(texts))]
    with _recycler(tokenizer, tmp_path / "local") as here:
        here.fill(texts, labels, batch_size=32, progress=False)
        executor = RayExecutor(RayConfig(workers=2))
        with _recycler(tokenizer, tmp_path / "ray") as there:
            report = there.fill(texts, labels, batch_size=32, progress=False, executor=executor)
            same_store(here.store, there.store)
            assert report.computed == len(texts) and report.keys == here.fill(texts, labels, progress=False).keys
    assert executor.stats.examples == len(texts) and executor.stats.batches == 10
    assert sum(w.examples for w in executor.stats.workers.values()) == len(texts)


def test_an_encoder_cache_fill_on_ray_stores_what_one_process_stores(tokenizer, tmp_path):
    texts = sentences(200, seed=1)
    encoder = make_model("bert-base").requires_grad_(False)
    stores = {}
    for where, executor in (("local", None), ("ray", RayExecutor(RayConfig(workers=2)))):
        with EncoderCache(encoder, tokenizer, CacheConfig(save_dir=tmp_path / where, batch_size=16)) as cache:
            report = cache.fill(texts, [LABELS[i % 3] for i in range(len(texts))], progress=False, executor=executor)
            assert report.computed == len(texts)
        stores[where] = tmp_path / where
    from ember.store import ActivationStore

    for name in ("text", "_splits"):
        with ActivationStore.open(stores["local"] / name, None, readonly=True) as a, \
                ActivationStore.open(stores["ray"] / name, None, readonly=True) as b:
            if name == "text":
                same_store(a, b)
                assert a.get_meta("embedding_shape") == b.get_meta("embedding_shape") == "[32]"
            else:
                assert a.find_split("train") == b.find_split("train") and a.label_names == b.label_names


def test_a_worker_that_keeps_dying_stops_the_fill_with_every_committed_batch_kept(tokenizer, tmp_path):
    texts = sentences(120, seed=2)
    with _recycler(tokenizer, tmp_path / "ref") as ref, _recycler(tokenizer, tmp_path / "s") as rec:
        ref.fill(texts, batch_size=16, progress=False)
        lengths = rec.tokenize(texts)["attention_mask"].sum(1).tolist()
        longest = max(lengths)
        doomed = sum(len(g) for g in length_buckets(lengths, 16) if max(lengths[i] for i in g) == longest)
        rec.producer = DiesOn(rec.producer, length=longest)  # the last length-sorted batch kills its worker
        with pytest.raises(WorkerDiedError) as err:
            rec.fill(texts, batch_size=16, progress=False, executor=RayExecutor(RayConfig(workers=2, max_restarts=0)))
        assert "a Ray worker died while computing" in str(err.value)
        assert "Every batch committed before is kept: rerun the same call or command" in str(err.value)
        committed = len(rec.store)
        # batches that completed are stored (those in flight when the fill stopped are not), and stored right
        assert 0 < committed <= len(texts) - doomed
        keys = list(rec.store.kv.keys())
        assert rec.store.kv.get_many(keys) == ref.store.kv.get_many(keys)
        assert rec.store.find_split("train") is None  # recorded only once every example is stored
        rec.producer = rec.producer.inner
        again = rec.fill(texts, batch_size=16, progress=False)  # a rerun computes only what is missing
        assert again.computed == len(texts) - committed
        same_store(ref.store, rec.store)


@pytest.mark.slow
def test_a_worker_killed_once_is_restarted_and_its_batch_computed_again(tokenizer, tmp_path):
    texts = sentences(150, seed=3)
    with _recycler(tokenizer, tmp_path / "ref") as ref, _recycler(tokenizer, tmp_path / "s") as rec:
        ref.fill(texts, batch_size=16, progress=False)
        rec.producer = DiesOn(rec.producer, once=str(tmp_path / "died"))
        executor = RayExecutor(RayConfig(workers=2, max_restarts=2))
        report = rec.fill(texts, batch_size=16, progress=False, executor=executor)
        assert (tmp_path / "died").exists() and report.computed == len(texts)
        rec.producer = rec.producer.inner
        same_store(ref.store, rec.store)


@pytest.mark.slow
def test_a_worker_in_another_environment_is_refused_before_its_entries_are_stored(tokenizer, tmp_path,
                                                                                   monkeypatch):
    import ember.scale.executor as executor_module

    real = executor_module.environment
    monkeypatch.setattr(executor_module, "environment", lambda: {**real(), "torch": "2.0.0"})  # the driver's view
    with _recycler(tokenizer, tmp_path / "s") as rec:
        with pytest.raises(WorkerEnvironmentError) as err:
            rec.fill(sentences(40), progress=False, executor=RayExecutor(RayConfig(workers=1)))
        assert len(rec.store) == 0
    message = str(err.value)
    assert "runs torch" in message and "(this process: '2.0.0')" in message
    assert "would not be bit-identical to a single-process run" in message
    assert "RayConfig(check_environment=False)" in message


@pytest.mark.slow
def test_a_producer_error_on_a_worker_reaches_the_caller_as_itself(tokenizer, tmp_path):
    from ember.encoders import EmbeddingShapeError

    class Wrong:
        def __init__(self, inner):
            self.inner, self.fingerprint = inner, inner.fingerprint

        def entries(self, ids):
            raise EmbeddingShapeError(f"shape check failed on a batch of {len(ids)}")

    with _recycler(tokenizer, tmp_path / "s") as rec:
        rec.producer = Wrong(rec.producer)
        with pytest.raises(EmbeddingShapeError, match="shape check failed on a batch of"):
            rec.fill(sentences(40), progress=False, executor=RayExecutor(RayConfig(workers=1)))


@pytest.mark.slow
def test_a_fill_from_a_ray_dataset_is_the_fill_of_its_rows(tokenizer, tmp_path):
    import ray

    from ember.scale.data import read_dataset

    texts = sentences(100, seed=4)
    ds = ray.data.from_items([{"utterance": t, "intent": LABELS[i % 3], "uid": f"u{i}"} for i, t in enumerate(texts)],
                             override_num_blocks=7)
    rows = read_dataset(ds, "utterance", "intent", "uid")
    assert rows.examples.texts == texts and rows.ids == [f"u{i}" for i in range(len(texts))]
    with _recycler(tokenizer, tmp_path / "a") as a, _recycler(tokenizer, tmp_path / "b") as b:
        a.fill(texts, [LABELS[i % 3] for i in range(len(texts))], progress=False)
        b.fill(rows.examples, progress=False, executor=RayExecutor(RayConfig(workers=2)))
        same_store(a.store, b.store)
    with pytest.raises(Exception, match="has no column 'text'; its columns are"):
        read_dataset(ds)


@pytest.mark.slow
def test_more_workers_than_the_cluster_can_start_stop_the_fill_in_time(tokenizer, tmp_path):
    from ember.scale import WorkersNotStartedError

    with _recycler(tokenizer, tmp_path / "s") as rec, pytest.raises(WorkersNotStartedError) as err:  # 2 CPUs, 3 workers
        rec.fill(sentences(40), progress=False, executor=RayExecutor(RayConfig(workers=3, start_timeout_s=5)))
    assert "the cluster did not start 3 workers of 1 CPU within 5s: it has too few CPUs free" in str(err.value)


class TeacherLogits:
    """A producer of another kind than recycling's or the cache's, shaped like a teacher-output store's entries
    (ids, logits, a hidden state): the executor takes any picklable :class:`~ember.store.fill.Producer`."""

    def __init__(self, model, tokenizer) -> None:
        from ember.store.fingerprint import Fingerprint

        self.model, self.tokenizer = model, tokenizer
        self.fingerprint = Fingerprint.of("teacher", architecture=type(model).__name__, dtype="float32",
                                          frozen=[model], model_config=model.config, tokenizer=tokenizer)

    def entries(self, ids):
        import torch

        from ember.models.inputs import pad_ids

        input_ids, mask = pad_ids(ids, self.tokenizer)  # (B, T)
        with torch.no_grad():
            out = self.model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
        return [{"input_ids": torch.tensor(x, dtype=torch.int32), "logits": out.logits[i].clone(),  # (C,)
                 "hidden.1": out.hidden_states[1][i, : len(x)].clone()} for i, x in enumerate(ids)]  # (L, H)


def _teacher_fill(producer, tokenizer, path, texts, executor=None):
    from ember.models.inputs import tokenize
    from ember.store.fill import Column, fill_split
    from ember.store.handle import StoreHandle
    from ember.store.keys import KeyScheme

    ids = tokenize(tokenizer, texts, 48)
    handle = StoreHandle(path, producer.fingerprint, what="the teacher's store")
    try:
        column = Column("text", handle, producer, ids, KeyScheme.content().keys(texts, ids))
        return fill_split([column], handle, "train", lengths=True, batch_size=16, progress=False,
                          executor=executor)["text"]
    finally:
        handle.close()


def test_any_producer_such_as_a_teachers_fills_through_the_one_fill_on_ray_as_here(tokenizer, tmp_path):
    from ember.errors import StoreMismatchError
    from ember.store import ActivationStore

    texts = sentences(80, seed=5)
    teacher = TeacherLogits(make_model("bert").eval(), tokenizer)
    _teacher_fill(teacher, tokenizer, tmp_path / "here", texts)
    report = _teacher_fill(teacher, tokenizer, tmp_path / "ray", texts, RayExecutor(RayConfig(workers=2)))
    assert report.computed == len(texts)
    with ActivationStore.open(tmp_path / "here", None, readonly=True) as a, \
            ActivationStore.open(tmp_path / "ray", None, readonly=True) as b:
        same_store(a, b)
        assert a.find_split("train").lengths == b.find_split("train").lengths
    # a store from another model is refused when it is opened on the driver, before Ray computes anything
    other = make_model("bert", num_labels=4).eval()
    with pytest.raises(StoreMismatchError, match="was made by another model or setting"):
        _teacher_fill(TeacherLogits(other, tokenizer), tokenizer, tmp_path / "ray", texts,
                      RayExecutor(RayConfig(address="127.0.0.1:9")))  # never reached: nothing listens there


def test_a_recycling_store_from_another_model_is_refused_before_a_ray_fill_starts(tokenizer, tmp_path):
    from ember.errors import StoreMismatchError

    texts = sentences(40, seed=6)
    with _recycler(tokenizer, tmp_path / "s") as rec:
        rec.fill(texts, batch_size=16, progress=False, executor=RayExecutor(RayConfig(workers=2)))
    other = make_model("bert")
    other.config.hidden_act = "relu"  # another computation with the same weights: another fingerprint
    with pytest.raises(StoreMismatchError, match="was made by another model or setting") as err:
        Recycler(other, tokenizer, tmp_path / "s", layer=2)
    assert "delete the folder (or pass another --store) and fill again" in str(err.value)
