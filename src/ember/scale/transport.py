"""What travels between the driver and Ray workers: the producer (pickled once per fill), entries as safetensors
bytes (no pickle), and each worker's environment, which must match the driver's for results to be bit-identical
to a single-process run."""

from __future__ import annotations

import io
import platform

import torch
from safetensors.torch import load, save

from ember.scale.errors import ACCEPT_ENVIRONMENT, WorkerEnvironmentError
from ember.store.activations import Entry

# What changes the bytes a model computes on a CPU: the libraries, and which kernels torch picks for this CPU
# (AVX2 and AVX-512 kernels sum in different orders). The host only names the worker in messages.
COMPARED = ("ember", "torch", "transformers", "cpu")


_CAPTURE_HOOK = "install_output_capuring_hook.<locals>."  # (sic: transformers' spelling)
_CAPTURE_FLAG = "_output_capturing_hooks_installed"


def ship(producer) -> bytes:
    """The producer pickled for the workers (Ray's cloudpickle, so classes registered by value travel as well).

    Two things transformers 5 gets wrong across processes are put right for ``output_hidden_states=True`` (a
    teacher keeping hidden states): a model that once ran that way carries forward hooks that are local functions
    over a ``ContextVar`` and cannot be pickled (they are left out of the copy, which installs them again on its
    first such forward); and a model class registers what it can record only in ``__init__``, so an unpickled
    model in a fresh worker returned ``hidden_states=None`` (the copy registers its class). The model in this
    process is not changed.
    """
    from ray import cloudpickle

    class _Pickler(cloudpickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, torch.nn.Module):
                state = _without_capture_hooks(obj)
                if state is not None:
                    return _rebuild_module, (type(obj), state)
            return super().reducer_override(obj)

    buffer = io.BytesIO()
    _Pickler(buffer, protocol=5).dump(producer)
    return buffer.getvalue()


def unship(data: bytes):
    """Inverse of :func:`ship` (on a worker)."""
    from ray import cloudpickle

    return cloudpickle.loads(data)


def _without_capture_hooks(module: torch.nn.Module) -> dict | None:
    """``module``'s state without transformers' output-capturing hooks; ``None`` when it has none."""
    hooks = module.__dict__.get("_forward_hooks") or {}
    drop = {k for k, h in hooks.items() if getattr(h, "__qualname__", "").startswith(_CAPTURE_HOOK)}
    if not drop and not module.__dict__.get(_CAPTURE_FLAG) and not hasattr(module, "_can_record_outputs"):
        return None
    state = dict(module.__dict__)
    state.pop(_CAPTURE_FLAG, None)  # the copy installs its hooks again when it needs them
    for name in ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called"):
        if name in state:
            state[name] = type(state[name])((k, v) for k, v in state[name].items() if k not in drop)
    return state


def _rebuild_module(cls: type, state: dict) -> torch.nn.Module:
    module = cls.__new__(cls)
    module.__setstate__(state)
    if hasattr(module, "_can_record_outputs"):  # a transformers PreTrainedModel: register what it records
        try:  # no public way to do it in transformers 5
            from transformers.utils.output_capturing import _CAN_RECORD_REGISTRY
        except ImportError:  # moved or gone: nothing to put right
            return module
        _CAN_RECORD_REGISTRY[module] = module._can_record_outputs
    return module


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
