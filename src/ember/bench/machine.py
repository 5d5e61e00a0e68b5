"""What the numbers were measured on: CPU model, the instruction sets that decide which engines are fast."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ember.hardware import parse_cpuinfo

# Flags that change which kernels (and so which presets) are fast: int8 dot products, bf16, AMX tiles.
FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")


@dataclass
class MachineInfo:
    """The machine a report was measured on.

    Example:
        >>> info = MachineInfo.detect(threads=2)
        >>> info.threads
        2
    """

    cpu_model: str
    flags: list[str] = field(default_factory=list)
    physical_cores: int | None = None
    logical_cpus: int | None = None
    threads: int | None = None
    torch_version: str = ""
    python_version: str = ""
    platform: str = ""

    @classmethod
    def detect(cls, threads: int | None = None) -> MachineInfo:
        """Read the CPU model and flags (``/proc/cpuinfo`` where there is one), cores and versions."""
        import psutil
        import torch

        model, flags = _cpuinfo()
        return cls(
            cpu_model=model or platform.processor() or platform.machine() or "unknown",
            flags=[f for f in FLAGS_OF_INTEREST if f in flags],
            physical_cores=psutil.cpu_count(logical=False),
            logical_cpus=psutil.cpu_count(logical=True) or os.cpu_count(),
            threads=threads if threads is not None else torch.get_num_threads(),
            torch_version=torch.__version__,
            python_version=platform.python_version(),
            platform=platform.platform(),
        )

    def summary(self) -> str:
        """One line: ``AMD EPYC · 2 cores · 2 threads · avx2 avx512f … · torch 2.13.0``."""
        flags = " ".join(self.flags) or "no AVX2/AVX-512"
        return (
            f"{self.cpu_model} · {self.physical_cores} cores · {self.threads} threads · {flags} · "
            f"torch {self.torch_version}"
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> MachineInfo:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def _cpuinfo() -> tuple[str, set[str]]:
    path = Path("/proc/cpuinfo")
    if not path.exists():
        return "", set()
    return parse_cpuinfo(path.read_text(errors="replace"))  # one parser: ember.hardware's
