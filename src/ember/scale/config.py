"""How ember reaches Ray: a local instance or a cluster address, how many workers, how failures are bounded."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from ember.scale.errors import RayConfigError

LOCAL = "local"  # RayConfig.address: start a fresh instance on this machine, whatever RAY_ADDRESS says
AUTO = "auto"  # RayConfig.address: RAY_ADDRESS, else the cluster `ray start --head` started on this machine
_HOST_PORT = re.compile(r"(ray://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})")


def check_address(address: str | None) -> None:
    """Refuse an address that is none of ``None``, ``"local"``, ``"auto"``, ``host:port`` or ``ray://host:port``."""
    if address is None or address in (LOCAL, AUTO):
        return
    m = _HOST_PORT.fullmatch(address) if isinstance(address, str) else None
    if m is None or not 0 < int(m.group(3)) < 65536:
        raise RayConfigError(
            f"Ray address {address!r} is not one ember understands: pass 'local' (start Ray on this machine), 'auto' "
            "(RAY_ADDRESS, else the cluster started here with `ray start --head`), 'HOST:PORT' (the head's GCS port, "
            "6379 by default) or 'ray://HOST:PORT' (the Ray Client port, 10001 by default)"
        )


@dataclass(frozen=True)
class RayConfig:
    """Where and how ember runs on Ray.

    Args:
        address: ``None`` does what ``ray.init()`` does (``RAY_ADDRESS`` if set, else a new local instance);
            ``"local"`` always starts one on this machine; ``"auto"`` joins the cluster ``ray start --head``
            started here (or ``RAY_ADDRESS``); ``"HOST:PORT"`` or ``"ray://HOST:10001"`` join a remote cluster.
            A Ray already initialised in this process (``ray.init`` called by the user) is used as it is.
        workers: actors computing in parallel, each loading the model once.
        cpus_per_worker: CPUs Ray reserves per actor.
        threads: torch threads each actor computes with; ``None`` uses this process's count
            (``torch.get_num_threads()``). PyTorch's CPU kernels can round differently with another thread count
            (measured: 4 of 13 batches of a tiny BERT differed in the last bit between 1 and 2 threads), so only
            the same count gives results bit-identical to a fill in this process. On a cluster, reserve what the
            actors use (``cpus_per_worker=threads``) or they share cores.
        local_cpus: CPUs of a local instance (``None``: all of this machine's).
        connect_timeout_s: how long an address may take to answer before :class:`RayConnectionError`.
        start_timeout_s: how long the cluster may take to start every worker before
            :class:`WorkersNotStartedError` (too few CPUs free); ``0`` waits as long as Ray does.
        max_restarts: times a worker process that died is restarted (and its batch retried) before the job
            stops with :class:`WorkerDiedError`; committed work is kept either way.
        check_environment: refuse results of a worker whose torch, transformers, ember or CPU kernels differ from
            this process's (they would not be bit-identical to a single-process run).
        verbose: let Ray's own logs and warnings through to the terminal.

    Example:
        >>> RayConfig.local(workers=2).address
        'local'
        >>> RayConfig.cluster("ray://head:10001", workers=8).workers
        8
    """

    address: str | None = None
    workers: int = 2
    cpus_per_worker: float = 1.0
    threads: int | None = None
    local_cpus: int | None = None
    connect_timeout_s: float = 15.0
    start_timeout_s: float = 600.0
    max_restarts: int = 3
    check_environment: bool = True
    verbose: bool = False

    def __post_init__(self) -> None:
        check_address(self.address)
        for name in ("workers", "max_restarts"):
            v = getattr(self, name)
            low = 1 if name == "workers" else 0
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise RayConfigError(f"{name} must be an int >= {low}, got {v!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1):
            raise RayConfigError(f"threads must be an int >= 1 or None (this process's torch threads), got {self.threads!r}")
        if self.local_cpus is not None and (isinstance(self.local_cpus, bool) or not isinstance(self.local_cpus, int)
                                            or self.local_cpus < 1):
            raise RayConfigError(f"local_cpus must be an int >= 1 or None (all CPUs), got {self.local_cpus!r}")
        for name, unit in (("cpus_per_worker", "CPUs"), ("connect_timeout_s", "seconds"), ("start_timeout_s", "seconds")):
            v = getattr(self, name)
            zero_ok = name == "start_timeout_s"  # 0: no limit of ember's own
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0 or (v == 0 and not zero_ok):
                raise RayConfigError(f"{name} must be a positive number of {unit}, got {v!r}")

    @classmethod
    def local(cls, workers: int = 2, *, cpus: int | None = None, **kwargs) -> RayConfig:
        """A fresh Ray instance on this machine with ``cpus`` CPUs (all by default) and ``workers`` actors."""
        return cls(address=LOCAL, workers=workers, local_cpus=cpus, **kwargs)

    @classmethod
    def cluster(cls, address: str = AUTO, workers: int = 2, **kwargs) -> RayConfig:
        """A running cluster: ``"auto"``, ``"HOST:PORT"`` or ``"ray://HOST:10001"``."""
        return cls(address=address, workers=workers, **kwargs)

    def to_dict(self) -> dict:
        return asdict(self)
