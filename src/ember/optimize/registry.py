"""Config type -> backend: adding a technique adds a config and one registered builder, nothing else."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from ember.optimize.config import OptimizeConfig


@dataclass(frozen=True)
class Backend:
    """How one config type is built into an artifact and loaded back from disk.

    ``build(model, config, ctx) -> artifact``; ``load(directory, manifest, tokenizer) -> artifact``;
    ``requires``: importable modules it needs, with the pip line that installs them; ``requires_for(config)``
    adds those that only some settings need (e.g. a quantiser).
    """

    build: Callable
    load: Callable
    requires: tuple[tuple[str, str], ...] = ()
    requires_for: Callable[[OptimizeConfig], tuple[tuple[str, str], ...]] | None = None


Progress = Callable[[str], None]  # told what a build is doing as each step starts (``optimize(progress=...)``)


def no_progress(what: str) -> None:
    """The ``Progress`` of a build nobody watches: tells no one."""


_BACKENDS: dict[type[OptimizeConfig], Backend] = {}
# backend modules, imported on first use so ``import ember.optimize`` pulls in no engine
_MODULES = {
    "bf16": "ember.optimize.backends.bf16",
    "torchao-int8": "ember.optimize.backends.torchao_int8",
    "onnxruntime": "ember.optimize.backends.onnxruntime",
    "openvino": "ember.optimize.backends.openvino",
    "compile": "ember.optimize.backends.compile",
}


def register(config_type: type[OptimizeConfig], *, load: Callable, requires: tuple[tuple[str, str], ...] = (),
             requires_for: Callable[[OptimizeConfig], tuple[tuple[str, str], ...]] | None = None):
    """Decorator registering the builder of ``config_type``."""

    def deco(build: Callable) -> Callable:
        _BACKENDS[config_type] = Backend(build=build, load=load, requires=requires, requires_for=requires_for)
        return build

    return deco


def backend_for(config: OptimizeConfig | type[OptimizeConfig]) -> Backend:
    """The backend registered for ``config``'s type (importing its module on first use)."""
    cls = config if isinstance(config, type) else type(config)
    if cls not in _BACKENDS and cls.kind in _MODULES:
        importlib.import_module(_MODULES[cls.kind])
    try:
        return _BACKENDS[cls]
    except KeyError:
        known = ", ".join(sorted(c.__name__ for c in _BACKENDS)) or "none"
        raise TypeError(f"no optimize backend is registered for {cls.__name__}; registered: {known}") from None


def missing_requirements(config: OptimizeConfig | type[OptimizeConfig]) -> list[str]:
    """pip lines for the optional packages ``config`` needs that are not installed."""
    from importlib.util import find_spec

    backend = backend_for(config)
    needs = backend.requires
    if backend.requires_for is not None and not isinstance(config, type):
        needs += backend.requires_for(config)
    hints = [hint for mod, hint in needs if find_spec(mod) is None]
    return list(dict.fromkeys(hints))
