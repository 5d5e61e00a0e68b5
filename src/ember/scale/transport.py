"""What travels between the driver and Ray workers: entries as safetensors bytes (no pickle), and each worker's
environment, which must match the driver's for results to be bit-identical to a single-process run."""

from __future__ import annotations

import platform

import torch
from safetensors.torch import load, save

from ember.scale.errors import ACCEPT_ENVIRONMENT, WorkerEnvironmentError
from ember.store.activations import Entry

# What changes the bytes a model computes on a CPU: the libraries, and which kernels torch picks for this CPU
# (AVX2 and AVX-512 kernels sum in different orders). The host only names the worker in messages.
COMPARED = ("ember", "torch", "transformers", "cpu")


def pack(entry: Entry) -> bytes:
    """One entry as safetensors bytes; values round-trip bit for bit."""
    return save({k: v.detach().to("cpu").contiguous() for k, v in entry.items()})


def unpack(data: bytes) -> Entry:
    """Inverse of :func:`pack`."""
    return load(bytes(data))


def environment() -> dict[str, str]:
    """This process's libraries, CPU kernels and host, as a worker reports them with every result."""
    import transformers

    import ember

    return {
        "ember": ember.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu": torch.backends.cpu.get_cpu_capability(),
        "host": platform.node(),
    }


def check_environment(worker: dict[str, str], driver: dict[str, str]) -> None:
    """Refuse a worker whose libraries or CPU kernels differ from the driver's (see :data:`COMPARED`)."""
    differ = [f"{k} {worker.get(k)!r} (this process: {driver.get(k)!r})" for k in COMPARED if worker.get(k) != driver.get(k)]
    if differ:
        raise WorkerEnvironmentError(
            f"the Ray worker on {worker.get('host', 'another node')} runs {', '.join(differ)}: what it computes would "
            "not be bit-identical to a single-process run, and a store would mix values of two computations. Give "
            "every node the driver's versions (the same image, or runtime_env={'pip': [...]}) and the same CPU "
            f"type, or {ACCEPT_ENVIRONMENT}",
            fixes=[ACCEPT_ENVIRONMENT],
        )
