"""Import a script of benchmarks/ as a module for a test (the scripts are not a package)."""

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def script_module(filename: str, name: str) -> Iterator[ModuleType]:
    """Yield ``benchmarks/filename`` imported as ``name``, registered in ``sys.modules`` while in use (its
    dataclasses look their module up while being made) and removed after."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / filename)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)
