"""The fill's batches computed by Ray actors: ``Dataset.map_batches`` over an ``ActorPoolStrategy``.

The driver keeps everything that decides *what* is stored: it tokenizes, keys, finds what is missing, builds
the same length-sorted batches a local fill builds, and commits each batch as its result streams back
(:func:`ember.store.fill.fill`). Actors only run ``producer.entries(batch)``: each unpickles the producer (the
model) once, and computes whole batches, so every entry is computed from the same padded batch as in one
process, and the stored bytes are identical.

Why one writer, the driver, and not N LMDB shards written by the workers: measured on MiniLM-L6 layer-3 states
(``benchmarks/ray_scale.py``, BENCHMARKS.md), the driver commits entries far faster than one worker computes them,
so a single writer keeps up with a whole rack of CPU workers before it limits anything; and a single writer keeps
LMDB's one-writer rule, a store on the driver's own disk (workers never open it, so no shared filesystem), one
fingerprint, resumability and the split record exactly as in a local fill. Shards would need a store that reads
N files as one and a merge step that can mix shards of two fills; neither is needed at the measured rates. With one
writer there are no shards, so "shards of two different fills mixed" cannot happen: a store holds one fingerprint,
and a fill of another model or setting is refused when the driver opens it (``StoreMismatchError``), before Ray
computes anything.

Any :class:`~ember.store.fill.Producer` runs here unchanged (recycling's states, the cache's embeddings, a
teacher's logits and hidden states, batch scoring): it only has to be picklable (:func:`~ember.scale.transport.ship`).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch

from ember.scale.cluster import Cluster, connect, import_ray, quiet_loggers
from ember.scale.config import RayConfig
from ember.scale.errors import MAX_RESTARTS, START_TIMEOUT, WorkerDiedError, WorkersNotStartedError
from ember.scale.transport import check_environment, environment, pack, ship, unpack, unship
from ember.store.activations import Entry
from ember.store.fill import Producer


class BatchWorker:
    """A Ray Data actor: unpickles the producer once, then computes whole batches with it.

    Args:
        producer: the producer, as :func:`~ember.scale.transport.ship` pickled it, or an object reference to that
            (unpickled here, once per actor).
        threads: torch threads to compute with (the driver's count, for bit-identical results).
    """

    def __init__(self, producer, threads: int) -> None:
        torch.set_num_threads(threads)
        self.environment = environment()
        self.name = f"{self.environment['host']}:{os.getpid()}"
        # A failure to build the producer here (an artifact folder this node cannot see) is raised by the first
        # batch instead: Ray reports a constructor's exception only as text inside "the actor died", while a
        # batch's exception reaches the driver as itself.
        self.failure: Exception | None = None
        try:
            ray = import_ray()
            shipped = ray.get(producer) if isinstance(producer, ray.ObjectRef) else producer
            self.producer = unship(shipped) if isinstance(shipped, bytes) else shipped
        except Exception as exc:
            self.failure = exc

    def __call__(self, table):
        """``{index, batch}`` rows in, ``{index, entries, seconds, worker, environment}`` rows out."""
        import json

        import pyarrow as pa

        if self.failure is not None:
            raise self.failure
        index, payload, seconds = [], [], []
        for i, batch in zip(table.column("index").to_pylist(), table.column("batch").to_pylist(), strict=True):
            start = time.perf_counter()
            entries = self.producer.entries(batch)
            seconds.append(time.perf_counter() - start)
            if len(entries) != len(batch):
                raise ValueError(f"the producer returned {len(entries)} entries for a batch of {len(batch)}")
            index.append(i)
            payload.append([pack(e) for e in entries])
        n = len(index)
        return pa.table({
            "index": pa.array(index, pa.int64()),
            "entries": pa.array(payload, pa.list_(pa.large_binary())),
            "seconds": pa.array(seconds, pa.float64()),
            "worker": pa.array([self.name] * n, pa.string()),
            "environment": pa.array([json.dumps(self.environment)] * n, pa.string()),
        })


@dataclass
class WorkerStats:
    """What one actor computed: batches, examples, and seconds inside ``producer.entries``."""

    batches: int = 0
    examples: int = 0
    seconds: float = 0.0

    @property
    def examples_per_s(self) -> float:
        return self.examples / self.seconds if self.seconds else 0.0


@dataclass
class RunStats:
    """Timings of the last :meth:`RayExecutor.map`: wall time, per-worker compute, and what is left for Ray."""

    batches: int = 0
    examples: int = 0
    seconds: float = 0.0
    first_result_s: float = 0.0  # from the call to the first result: actors starting, loading the model
    workers: dict[str, WorkerStats] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**asdict(self), "workers": {k: {**asdict(v), "examples_per_s": v.examples_per_s} for k, v in self.workers.items()}}


class RayExecutor:
    """An executor of :func:`ember.store.fill.fill` (and of :func:`ember.scale.predict`) that runs batches on Ray.

    Ray is started or joined on first use (or by :meth:`start`), as ``config`` says.

    Args:
        config: where Ray runs and how many workers compute (:class:`RayConfig`; default: 2 workers, Ray as
            ``ray.init()`` finds it).

    Example:
        >>> from ember.scale import RayConfig, RayExecutor                       # doctest: +SKIP
        >>> rec.fill(texts, labels, executor=RayExecutor(RayConfig.local(workers=2)))  # doctest: +SKIP
        >>> cache.fill(texts, labels, executor=RayExecutor(RayConfig.cluster("ray://head:10001", workers=16)))  # doctest: +SKIP
    """

    def __init__(self, config: RayConfig | None = None) -> None:
        if config is not None and not isinstance(config, RayConfig):
            raise TypeError(f"config must be a RayConfig, got {type(config).__name__} {config!r:.60}; e.g. RayConfig.local(workers=2)")
        self.config = config or RayConfig()
        self.cluster: Cluster | None = None
        self.stats = RunStats()

    def start(self) -> Cluster:
        """Start or join Ray now (a fill does it on its first batch); returns what was joined."""
        if self.cluster is None:
            self.cluster = connect(self.config)
        return self.cluster

    def map(self, producer: Producer, batches: Sequence[list]) -> Iterator[tuple[int, list[Entry]]]:
        """Entries of each batch as ``(batch index, entries)``, in the order they complete.

        Raises:
            WorkerDiedError: a worker died more often than ``config.max_restarts``.
            WorkersNotStartedError: the workers did not start within ``config.start_timeout_s``.
            WorkerEnvironmentError: a worker's libraries or CPU kernels differ from this process's.
        """
        self.stats = RunStats()
        if not batches:
            return
        self.start()
        start = time.perf_counter()
        driver = environment()
        with _errors_as_ember(self.config):
            for i, entries, worker, seconds, env in self._results(producer, batches):
                if self.config.check_environment:
                    check_environment(env, driver)
                self._record(worker, len(entries), seconds, start)
                yield i, [unpack(b) for b in entries]
        self.stats.seconds = time.perf_counter() - start

    def _results(self, producer: Producer, batches: Sequence[list]) -> Iterator[tuple]:
        """Rows of the actors' output as they stream back."""
        import json

        ray = import_ray()
        ref = ray.put(ship(producer))  # once per map; each actor unpickles it once
        for block in self._dataset(ray, ref, batches).iter_batches(batch_size=None, batch_format="pyarrow"):
            columns = [block.column(c).to_pylist() for c in ("index", "entries", "worker", "seconds", "environment")]
            for i, entries, worker, seconds, env in zip(*columns, strict=True):
                yield i, entries, worker, seconds, json.loads(env)

    def _dataset(self, ray, ref, batches: Sequence[list]):
        """One block per batch (so results stream back batch by batch), mapped by a fixed pool of actors."""
        with _data_context(self.config):
            ds = ray.data.from_items([{"index": i, "batch": b} for i, b in enumerate(batches)],
                                     override_num_blocks=len(batches))
            with warnings.catch_warnings():
                # max_restarts/max_task_retries bound a worker that keeps dying (Ray Data's default retries forever);
                # map_batches takes them only as extra remote arguments, deprecated in Ray 2.60 without a replacement.
                warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
                return ds.map_batches(
                    BatchWorker, batch_size=1, batch_format="pyarrow",
                    compute=ray.data.ActorPoolStrategy(size=self.config.workers),
                    fn_constructor_kwargs={"producer": ref, "threads": self.config.threads or torch.get_num_threads()},
                    num_cpus=self.config.cpus_per_worker,
                    max_restarts=self.config.max_restarts, max_task_retries=self.config.max_restarts,
                )

    def _record(self, worker: str, examples: int, seconds: float, start: float) -> None:
        s = self.stats
        if not s.batches:
            s.first_result_s = time.perf_counter() - start
        s.batches += 1
        s.examples += examples
        w = s.workers.setdefault(worker, WorkerStats())
        w.batches, w.examples, w.seconds = w.batches + 1, w.examples + examples, w.seconds + seconds


@contextmanager
def _data_context(config: RayConfig):
    """Ray Data settings for ember's datasets (each dataset copies the context it is created in)."""
    from ray.data import DataContext

    quiet_loggers(config.verbose)  # Ray Data sets its loggers up when first imported
    ctx = DataContext.get_current()
    wanted = {
        "enable_progress_bars": config.verbose,  # ember shows its own bar
        "print_on_execution_start": config.verbose,
        "raise_original_map_exception": True,  # a producer's ember error reaches the caller as itself
        "wait_for_min_actors_s": int(config.start_timeout_s) or -1,
    }
    before = {k: getattr(ctx, k) for k in wanted}
    for k, v in wanted.items():
        setattr(ctx, k, v)
    try:
        yield
    finally:
        for k, v in before.items():
            setattr(ctx, k, v)


@contextmanager
def _errors_as_ember(config: RayConfig):
    """Ray's failures as ember errors naming the fix; a producer's own error is raised as it was raised."""
    import ray.exceptions as rex

    try:
        yield
    except rex.RayActorError as exc:
        raise WorkerDiedError(
            f"a Ray worker died while computing, more often than it may be restarted ({config.max_restarts} "
            "restarts): out of memory, killed, or its node was lost. Every batch committed before is kept: rerun "
            "the same call or command and it computes only what is missing; give the workers more memory or lower "
            f"the batch size if it keeps dying, or {MAX_RESTARTS} if it died by chance. Ray said: {_first_line(exc)}",
            fixes=[MAX_RESTARTS],
        ) from None
    except rex.GetTimeoutError as exc:
        raise WorkersNotStartedError(
            f"the cluster did not start {config.workers} workers of {config.cpus_per_worker:g} CPU within "
            f"{config.start_timeout_s:g}s: it has too few CPUs free. Ask for fewer workers, add nodes, wait for "
            f"other jobs to finish, or {START_TIMEOUT}. Ray said: {_first_line(exc)}",
            fixes=[START_TIMEOUT],
        ) from None
    except rex.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):
            raise cause from None
        raise


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
