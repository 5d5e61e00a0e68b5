"""Reaching Ray: import it lazily, start a local instance or join a cluster within a bounded time, keep it quiet.

Ray's own ``ray.init(address=...)`` waits for a head that does not answer for minutes (it retried a dead
address for over 60 s here, logging a line every 5 s), so ember first checks that something listens at the
address, with a timeout, and bounds the handshake too. Ray's logs (the C++ core's, its workers', Ray Data's
progress bars) stay off the terminal unless ``RayConfig(verbose=True)`` (``--verbose``): users see ember's
progress bar and messages only.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from ember.scale.config import AUTO, LOCAL, RayConfig
from ember.scale.errors import INSTALL_HINT, NO_RAY, RayConnectionError, RayNotInstalledError

ALREADY = "(already initialised)"  # Cluster.address of a Ray this process had initialised before
_RAY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "ray.util")


def import_ray():
    """The ``ray`` module, or :class:`RayNotInstalledError` with the install command."""
    try:
        import ray
    except ImportError as exc:
        raise RayNotInstalledError(
            f"running on Ray needs the ray package, which is not installed here ({exc}). Install it with "
            f"{INSTALL_HINT} (on this machine and on every node of the cluster), or run without Ray: {NO_RAY}",
            fixes=[NO_RAY],
        ) from exc
    return ray


@dataclass(frozen=True)
class Cluster:
    """The Ray instance ember runs on.

    Attributes:
        address: what was joined (``"local"`` for an instance started here).
        started: whether this process started it (a local instance) rather than joined one.
        cpus: CPUs the cluster has in all.
        nodes: machines in the cluster.
        seconds: time spent starting or joining it (0 when Ray was already initialised).
    """

    address: str
    started: bool
    cpus: float
    nodes: int
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def connect(config: RayConfig) -> Cluster:
    """Start or join Ray as ``config`` says; a Ray this process initialised already is used as it is.

    Raises:
        RayNotInstalledError: ray is not installed.
        RayConnectionError: nothing answered at the address within ``config.connect_timeout_s``.
    """
    ray = import_ray()
    quiet_loggers(config.verbose)
    explicit = config.address not in (None, LOCAL, AUTO)
    if explicit:  # an address that does not answer fails fast, joined or not
        probe(config.address, config.connect_timeout_s)  # type: ignore[arg-type]
    if ray.is_initialized():
        _check_same_cluster(ray, config.address if explicit else None)
        return _describe(ray, ALREADY, started=False, seconds=0.0)
    start = time.perf_counter()
    address = resolve_address(config.address, ray)
    if address != LOCAL and not explicit:
        probe(address, config.connect_timeout_s)
    with _quiet_stderr(config.verbose):
        if address == LOCAL:
            _init(ray, config, address=LOCAL, num_cpus=config.local_cpus, include_dashboard=False)
        else:
            _init_bounded(ray, config, address)
    return _describe(ray, address, started=address == LOCAL, seconds=time.perf_counter() - start)


def _check_same_cluster(ray, address: str | None) -> None:
    """Refuse an explicit address other than the cluster this process already joined (``ray.init`` was called)."""
    if address is None or address.startswith("ray://"):  # a Ray Client session does not tell its address
        return
    current = ray.get_runtime_context().gcs_address
    if _host_port(address) != _host_port(current):
        raise RayConnectionError(
            f"this process already runs on the Ray cluster at {current} (ray.init was called), and Ray joins one "
            f"cluster per process: call ray.shutdown() before asking for {address}, or leave out the address to use "
            "the one it runs on"
        )


def _host_port(address: str) -> tuple[str, str]:
    host, _, port = address.rpartition(":")
    try:
        return socket.gethostbyname(host.strip("[]")), port
    except OSError:  # not resolvable here: compare as written
        return host, port


def resolve_address(address: str | None, ray=None) -> str:
    """The address to join: ``"local"``, or a ``host:port`` / ``ray://host:port`` from ``address``, ``RAY_ADDRESS`` or
    (for ``"auto"``) the cluster ``ray start --head`` started on this machine."""
    if address == LOCAL:
        return LOCAL
    env = os.environ.get("RAY_ADDRESS", "").strip()
    if address is None:
        return env or LOCAL
    if address != AUTO:
        return address
    if env:
        return env
    found = _current_cluster(ray)
    if found is None:
        raise RayConnectionError(
            "no Ray cluster runs on this machine (address 'auto' looks for the one `ray start --head` started here, "
            "and RAY_ADDRESS is not set): start one with `ray start --head`, pass its address (HOST:6379 or "
            "ray://HOST:10001), or use 'local' to start Ray for this run only"
        )
    return found


def _current_cluster(ray) -> str | None:
    """The address of the cluster running on this machine (Ray's own lookup for ``"auto"``), or ``None``."""
    try:
        from ray._private.services import get_ray_address_from_environment  # no public function in Ray 2.60
    except ImportError:  # moved: let ray.init resolve "auto" itself
        return AUTO
    try:
        return get_ray_address_from_environment(AUTO, None)
    except ConnectionError:
        return None


def probe(address: str, timeout_s: float) -> None:
    """Check that something accepts TCP connections at ``address`` within ``timeout_s`` seconds."""
    if address == AUTO:
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return
    except (OSError, ValueError) as exc:
        reason = "no answer" if isinstance(exc, TimeoutError | socket.timeout) else str(exc) or type(exc).__name__
        raise RayConnectionError(_unreachable(address, timeout_s, reason)) from None


def _unreachable(address: str, timeout_s: float, reason: str) -> str:
    client = address.startswith("ray://")
    port_hint = ("ray://HOST:10001 is the Ray Client port of the head (`ray start --head` opens it)" if client
                 else "HOST:6379 is the head's GCS port; use ray://HOST:10001 from outside the cluster's network")
    return (
        f"no Ray cluster answered at {address} within {timeout_s:g}s ({reason}). Start one there with "
        f"`ray start --head`, check the host and port ({port_hint}), or leave out the address to run "
        "Ray on this machine ('local')"
    )


def _init(ray, config: RayConfig, **kwargs) -> None:
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    level = logging.INFO if config.verbose else logging.ERROR
    ray.init(logging_level=level, log_to_driver=config.verbose, **kwargs)
    if not config.verbose:
        _mute_worker_errors(ray)


def _init_bounded(ray, config: RayConfig, address: str) -> None:
    """``ray.init(address)`` in a thread, given up after ``connect_timeout_s``: a port that answers but is not
    a Ray head (or a head that hangs) made ``ray.init`` retry for minutes."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            _init(ray, config, address=address)
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name="ember-ray-init", daemon=True)
    thread.start()
    thread.join(config.connect_timeout_s)
    if thread.is_alive():
        raise RayConnectionError(_unreachable(address, config.connect_timeout_s, "it accepts connections but did not "
                                              "complete Ray's handshake: is it a Ray head of the same Ray version?"))
    if failure:
        exc = failure[0]
        if "ray[client]" in str(exc):
            raise RayNotInstalledError(f"ray:// addresses need the Ray Client: {INSTALL_HINT} (it installs ray[client])") from exc
        raise RayConnectionError(f"joining the Ray cluster at {address} failed: {exc}") from exc


def _describe(ray, address: str, *, started: bool, seconds: float) -> Cluster:
    resources = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    return Cluster(address=address, started=started, cpus=float(resources.get("CPU", 0)), nodes=nodes, seconds=seconds)


def quiet_loggers(verbose: bool) -> None:
    """Ray's Python loggers silent (INFO when ``verbose``): ember reports what failed itself, in its own words, and
    Ray Data's "an exception was raised from a task" would repeat it. Ray Data sets its loggers up when imported."""
    for name in _RAY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.CRITICAL)


def _mute_worker_errors(ray) -> None:
    """Stop the driver printing workers' error events ("(raylet) A worker died ..."): ember reports a death itself.

    Ray 2.60 has no public switch for these (``log_to_driver=False`` leaves them on); its module flag is used when
    present, and Ray's lines show as before where it is not.
    """
    worker = getattr(getattr(ray, "_private", None), "worker", None)
    if worker is not None and hasattr(worker, "_worker_logs_enabled"):
        worker._worker_logs_enabled = False


@contextmanager
def _quiet_stderr(verbose: bool) -> Iterator[None]:
    """While Ray starts: its C++ core's lines (written straight to file descriptor 2) go to a log file instead.
    Undone in the calling thread, also when a handshake is given up while Ray's thread still waits.

    ``RAY_BACKEND_LOG_LEVEL`` (unless the user set it) keeps the core's later warnings off the terminal too, such as
    the one every fault-tolerant actor pool triggers (constructor arguments in the object store).
    """
    if verbose:
        yield
        return
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    sys.stderr.flush()
    saved = os.dup(2)
    log = tempfile.TemporaryFile(prefix="ember-ray-init-")  # noqa: SIM115 - closed below
    try:
        os.dup2(log.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        log.close()
