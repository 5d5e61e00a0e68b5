"""train_top on Ray Train: two workers train the top from one store; a store the workers cannot see is named."""

from __future__ import annotations

import pytest
import torch

from ember.errors import StoreError
from ember.recycle import Recycler
from ember.recycle.train import top_parameters
from ember.scale import RayConfig, UnreachablePathError
from ember.scale.train import train_top_on_ray

from conftest import make_model
from raytest import ray_cluster, sentences  # noqa: F401

pytestmark = pytest.mark.filterwarnings("ignore")


def _filled(tokenizer, path, n=96):
    rec = Recycler(make_model("bert", num_labels=3), tokenizer, path, layer=2)
    texts = sentences(n, seed=8)
    rec.fill(texts, [len(t.split()) % 3 for t in texts], progress=False)  # a label the top can learn: length mod 3
    return rec


def test_what_cannot_be_trained_on_ray_is_refused_before_ray_starts(tokenizer, tmp_path):
    with Recycler(make_model("bert"), tokenizer, None, layer=2) as rec:
        rec.fill(sentences(8), [0] * 8, progress=False)
        with pytest.raises(StoreError, match="an in-memory store lives in this process only: give the Recycler a store folder"):
            train_top_on_ray(rec)
    with _filled(tokenizer, tmp_path / "s", n=8) as rec:
        with pytest.raises(ValueError, match=r"batch_size \(1\) must be at least the number of workers \(2\)"):
            train_top_on_ray(rec, batch_size=1, config=RayConfig(workers=2))
        with pytest.raises(StoreError, match="has no split 'test'"):
            train_top_on_ray(rec, "test")


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
def test_two_workers_train_the_top_and_leave_the_bottom_alone(tokenizer, tmp_path):
    with _filled(tokenizer, tmp_path / "s") as rec:
        bottom = [p.detach().clone() for m in rec.parts.bottom(2) for p in m.parameters()]
        top = [p.detach().clone() for p in top_parameters(rec)]
        report = train_top_on_ray(rec, epochs=3, batch_size=16, lr=3e-3, config=RayConfig(workers=2))
        assert report.examples == 96 and len(report.epoch_loss) == 3 and report.epoch_loss[-1] < report.epoch_loss[0]
        assert all(torch.equal(a, p) for a, p in zip(bottom, (p for m in rec.parts.bottom(2) for p in m.parameters()), strict=True))
        assert not all(torch.equal(a, p) for a, p in zip(top, top_parameters(rec), strict=True))


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
def test_a_store_the_workers_cannot_see_is_named_with_the_fix(tokenizer, tmp_path):
    with _filled(tokenizer, tmp_path / "s", n=16) as rec:
        (tmp_path / "s").rename(tmp_path / "elsewhere")  # the driver keeps it open; the workers look it up by path
        with pytest.raises(UnreachablePathError) as err:
            train_top_on_ray(rec, batch_size=8, config=RayConfig(workers=2))
    message = str(err.value)
    assert f"the store at {tmp_path / 's'} does not exist on the Ray worker on" in message
    assert "a filesystem every node mounts at the same path" in message and "train_top" in message


def test_a_bottom_changed_since_the_store_was_opened_is_refused_before_ray_starts(tokenizer, tmp_path):
    from ember.errors import StoreMismatchError

    with _filled(tokenizer, tmp_path / "s", n=16) as rec:
        with torch.no_grad():
            next(rec.parts.bottom(2)[0].parameters()).add_(1.0)  # "trained" after the store was filled
        with pytest.raises(StoreMismatchError, match="changed since this Recycler was created"):
            train_top_on_ray(rec, batch_size=8, config=RayConfig(address="127.0.0.1:9"))  # never reached


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
def test_a_store_from_another_model_is_refused_on_the_workers_as_it_is_here(tokenizer, tmp_path):
    from ember.errors import StoreMismatchError

    with _filled(tokenizer, tmp_path / "s", n=16) as rec:
        rec.model.config.hidden_act = "relu"  # changes what the bottom computes, not a weight: the fingerprint differs
        with pytest.raises(StoreMismatchError, match="was made by another model or setting"):
            train_top_on_ray(rec, batch_size=8, config=RayConfig(workers=2))


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
def test_two_workers_reach_the_accuracy_of_one_process_within_noise(tokenizer, tmp_path):
    from ember.recycle.train import evaluate, train_top

    held_out = sentences(200, seed=9)[100:]
    labels = [len(t.split()) % 3 for t in held_out]
    accuracy = {}
    for where in ("here", "ray"):
        with _filled(tokenizer, tmp_path / where) as rec:  # the same seeded model and store for both
            kwargs = {"epochs": 6, "batch_size": 16, "lr": 3e-3}
            if where == "here":
                report = train_top(rec, progress=False, **kwargs)
            else:
                report = train_top_on_ray(rec, config=RayConfig(workers=2), **kwargs)
            assert report.epoch_loss[-1] < report.epoch_loss[0]
            with torch.no_grad():
                accuracy[where] = evaluate(rec, held_out, labels)
    # the same effective batch (8 per worker, gradients averaged); the batches differ in composition, so the
    # accuracies agree within noise (100 held-out texts), not exactly
    assert abs(accuracy["here"] - accuracy["ray"]) <= 0.12, accuracy
