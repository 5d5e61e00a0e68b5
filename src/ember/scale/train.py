"""``train_top`` on Ray Train: N workers train layers k..N-1 and the head from the same store, gradients averaged.

Each worker opens the recycler's store read-only (LMDB lets any number of processes read one store), takes every
N-th of the epoch's length-grouped batches (of ``batch_size // N`` examples, so the effective batch is the one a
single process uses), and all-reduces the top's gradients before each step; the frozen bottom never runs. Rank 0
hands the trained top back to the driver through a small actor (no checkpoint storage needed), and the driver's
model is updated in place, as :func:`ember.recycle.train.train_top` updates it.

The store must be where every worker can open it: on one machine any path; on a cluster a filesystem every node
mounts at the same path (a worker that cannot see it stops the run with :class:`UnreachablePathError`).
"""

from __future__ import annotations

import platform
import tempfile
import time
from pathlib import Path

import torch

from ember.batching import grouped_batches
from ember.errors import StoreError
from ember.recycle.recycler import Recycler
from ember.recycle.train import TrainReport, adamw, top_parameters
from ember.scale.cluster import connect, import_ray
from ember.scale.config import RayConfig
from ember.scale.errors import UnreachablePathError, WorkerDiedError


def train_top_on_ray(
    rec: Recycler,
    split: str = "train",
    *,
    epochs: int = 1,
    batch_size: int = 32,
    lr: float = 1e-4,
    weight_decay: float = 0.01,
    seed: int = 0,
    config: RayConfig | None = None,
) -> TrainReport:
    """Train the model's top from a split of ``rec``'s on-disk store on ``config.workers`` Ray Train workers.

    Args:
        rec: a recycler with an on-disk store holding the split (``rec.fill(..., split=split)``).
        batch_size: examples per optimizer step over all workers (each worker takes ``batch_size // workers``).
        config: where Ray runs; ``workers`` is the number of training processes (default 2).

    Returns:
        the :class:`~ember.recycle.train.TrainReport` of rank 0 (mean loss per epoch over its batches).

    Example:
        >>> report = train_top_on_ray(rec, "train", epochs=3, config=RayConfig.local(workers=2))  # doctest: +SKIP
    """
    config = config or RayConfig()
    _check(rec, split, epochs, batch_size, config.workers)
    rec.verify_weights()  # a bottom changed since the store was opened: refused here, not on every worker
    connect(config)
    ray = import_ray()
    inbox = ray.remote(num_cpus=0)(_Inbox).remote()
    loop_config = {
        "model": rec.model, "tokenizer": rec.tokenizer, "store": str(Path(rec.store.path).resolve()),
        "recycle": rec.config, "split": split, "epochs": epochs, "batch_size": batch_size // config.workers, "lr": lr,
        "weight_decay": weight_decay, "seed": seed, "threads": config.threads or torch.get_num_threads(), "inbox": inbox,
    }
    failure = _fit(loop_config, config)
    top, report = ray.get(inbox.take.remote()) or (None, None)
    if isinstance(top, BaseException):  # a worker's own error (the store not found there), as it was raised
        raise top
    if failure is not None or top is None:
        reason = str(failure).strip().splitlines()[0] if failure is not None and str(failure).strip() else "no result"
        raise WorkerDiedError(f"training on Ray failed ({reason}); a worker died or was lost. The store is unchanged "
                              "(training only reads it): rerun, or train in one process with train_top") from failure
    with torch.no_grad():
        for p, value in zip(top_parameters(rec), top, strict=True):
            p.copy_(value)
    return report


def _check(rec: Recycler, split: str, epochs: int, batch_size: int, workers: int) -> None:
    if not isinstance(rec, Recycler):
        raise TypeError(f"train_top_on_ray takes a Recycler, got {type(rec).__name__}")
    if rec.store.path is None:
        raise StoreError("train_top_on_ray reads the store from each worker process, and an in-memory store lives in "
                         "this process only: give the Recycler a store folder (Recycler(model, tok, 'states/', ...))")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if batch_size < workers:
        raise ValueError(f"batch_size ({batch_size}) must be at least the number of workers ({workers}): each worker "
                         "takes batch_size // workers examples per step")
    rec.store.get_split(split)  # refuses a split that was not filled, here, before any worker starts


def _fit(loop_config: dict, config: RayConfig) -> Exception | None:
    """Run the workers; the exception that stopped them, if any (the inbox may hold a worker's own error)."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    with tempfile.TemporaryDirectory(prefix="ember-ray-train-") as storage:
        trainer = TorchTrainer(
            _train_loop, train_loop_config=loop_config,
            scaling_config=ScalingConfig(num_workers=config.workers, use_gpu=False,
                                         resources_per_worker={"CPU": config.cpus_per_worker}),
            run_config=RunConfig(storage_path=storage, name="ember-train-top", failure_config=FailureConfig(max_failures=0)),
        )
        try:
            trainer.fit()
        except Exception as exc:  # Ray Train wraps what stopped a worker; the caller says what it means
            return exc
    return None


class _Inbox:
    """Where rank 0 leaves the trained top and its report for the driver (an actor: no shared storage needed)."""

    def __init__(self) -> None:
        self.item = None

    def put(self, item) -> None:
        if self.item is None or isinstance(item[0], BaseException):
            self.item = item

    def take(self):
        return self.item


def _train_loop(cfg: dict) -> None:
    """One Ray Train worker: open the store read-only, train on every N-th batch, average gradients each step."""
    import ray.train

    torch.set_num_threads(cfg["threads"])
    rank, world = ray.train.get_context().get_world_rank(), ray.train.get_context().get_world_size()
    torch.manual_seed(cfg["seed"] + rank)  # dropout in the top layers: another mask per worker
    rec = _open(cfg)
    params = top_parameters(rec)
    opt = adamw(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    dataset = rec.dataset(cfg["split"])
    report = TrainReport(epochs=cfg["epochs"], examples=len(dataset))
    rec.model.train()
    with rec.train():
        for epoch in range(cfg["epochs"]):
            start = time.perf_counter()
            batches = grouped_batches(dataset.lengths(), cfg["batch_size"], seed=cfg["seed"] + epoch)
            steps = len(batches) // world  # every worker takes as many steps: each all-reduce pairs up
            loss = _epoch(rec, dataset, batches[rank::world][:steps], params, opt, world)
            report.epoch_seconds.append(time.perf_counter() - start)
            report.epoch_loss.append(loss)
            ray.train.report({"epoch": epoch, "loss": loss})
    if rank == 0:
        ray.get(cfg["inbox"].put.remote(([p.detach().cpu() for p in params], report)))


def _open(cfg: dict) -> Recycler:
    """The recycler over the store, read-only; what stops it (the store not on this node, a fingerprint that does
    not match) goes to the driver as it was raised, then stops this worker."""
    try:
        if not Path(cfg["store"]).exists():
            raise UnreachablePathError(
                f"the store at {cfg['store']} does not exist on the Ray worker on {platform.node()}: training on Ray "
                "reads the store from every worker, so it must be on a filesystem every node mounts at the same path "
                "(NFS, a shared volume). Copy it there, or train in one process with train_top")
        return Recycler(cfg["model"], cfg["tokenizer"], cfg["store"], cfg["recycle"], readonly=True)
    except Exception as exc:
        import ray

        ray.get(cfg["inbox"].put.remote((exc, None)))
        raise


def _epoch(rec: Recycler, dataset, batches: list[list[int]], params: list, opt, world: int) -> float:
    """Train on this worker's batches; the mean of the workers' gradients makes each step one over all of theirs."""
    import torch.distributed as dist

    total, n = 0.0, 0
    for idx in batches:
        batch = rec.collate(dataset.__getitems__(idx))
        loss = rec.model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for p in params:
            grad = p.grad if p.grad is not None else torch.zeros_like(p)
            dist.all_reduce(grad)
            p.grad = grad / world
        opt.step()
        total, n = total + loss.item() * len(idx), n + len(idx)
    return total / max(n, 1)
