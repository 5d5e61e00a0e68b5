"""What this CPU offers the engines: the instruction families that decide which serving presets can be fast.

Detected at run time from ``/proc/cpuinfo`` (x86 ``flags``, ARM ``Features``), ``platform.machine()`` and PyTorch's
own view (``torch.backends.cpu.get_cpu_capability()``, read lazily so ``import ember`` stays light). The same
ember runs on an AMD EPYC with AVX512-BF16, an Intel Xeon with AMX tiles, an AVX2 laptop and an ARM server,
and the fast preset differs between them; every figure ember records names the CPU it was measured on.

Forcing the features (``EMBER_CPU_FEATURES=avx2``, or ``detect(force="avx2")``) makes ember choose as it would on
that family: how the AMX and AVX2-only paths are tested on a machine that is neither. It changes ember's choices
and messages, not what the engines' kernels really run.

Example:
    >>> detect(force="avx2").family
    'avx2'
    >>> detect(force="amx").native_bf16
    True
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path

ENV = "EMBER_CPU_FEATURES"

# Flags that decide kernels: int8 dot products (VNNI), bf16 arithmetic, AMX tiles; ARM's dot product, int8 matrix
# multiply and bf16.
FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8",
                     "asimd", "asimddp", "i8mm", "bf16", "sve")

# A family name given to EMBER_CPU_FEATURES stands for the flags a CPU of that family shows.
FAMILY_FLAGS: dict[str, tuple[str, ...]] = {
    "amx": ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"),
    "avx512-bf16": ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"),
    "avx512-vnni": ("avx2", "fma", "avx512f", "avx512_vnni"),
    "avx512": ("avx2", "fma", "avx512f"),
    "avx2": ("avx2", "fma"),
    "x86-64": ("sse4_2",),
    "arm-bf16": ("asimd", "asimddp", "i8mm", "bf16", "sve"),
    "arm": ("asimd", "asimddp"),
}
_ARM_FLAGS = {"asimd", "asimddp", "i8mm", "sve", "bf16"}
_ARM_MACHINES = ("aarch64", "arm64", "armv8")


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU's instruction families, as detected (or forced).

    Attributes:
        model: the CPU's model name (``lscpu``'s "Model name").
        machine: ``platform.machine()`` (``x86_64``, ``aarch64``) or the forced family's.
        flags: the flags of :data:`FLAGS_OF_INTEREST` the CPU has.
        forced: the ``EMBER_CPU_FEATURES`` value (or ``force=``) this was made from; ``""`` when detected.

    Example:
        >>> detect(force="avx512-vnni").int8_dot, detect(force="avx512-vnni").native_bf16
        (True, False)
    """

    model: str
    machine: str
    flags: frozenset[str]
    forced: str = ""

    @property
    def arm(self) -> bool:
        return self.machine.lower().startswith(_ARM_MACHINES) or bool(self.flags & {"asimd", "sve"})

    @property
    def amx(self) -> bool:
        """AMX tiles (Intel Sapphire Rapids and later): bf16 and int8 matmuls ~4x AVX-512's."""
        return {"amx_tile", "amx_bf16"} <= self.flags

    @property
    def native_bf16(self) -> bool:
        """bf16 matmuls in hardware (AVX512-BF16, AMX, ARM BF16); elsewhere bf16 is emulated, slower than fp32."""
        return bool(self.flags & {"avx512_bf16", "amx_bf16"}) or (self.arm and "bf16" in self.flags)

    @property
    def int8_dot(self) -> bool:
        """int8 dot products in one instruction (VNNI, AMX, ARM dot product): what makes int8 matmuls fast."""
        return bool(self.flags & {"avx512_vnni", "avx_vnni", "amx_int8"}) or (self.arm and "asimddp" in self.flags)

    @property
    def x86_without_int8_dot(self) -> bool:
        """x86 without VNNI or AMX (AVX2, AVX-512 before Cascade Lake): int8 matmuls multiply with ``VPMADDUBSW``,
        whose 16-bit sums can saturate, and several engines' int8 kernels fall back to slow paths there."""
        return not self.arm and not self.int8_dot

    @property
    def avx512(self) -> bool:
        return "avx512f" in self.flags

    @property
    def family(self) -> str:
        """One of ``amx``, ``avx512-bf16``, ``avx512-vnni``, ``avx512``, ``avx2``, ``x86-64``, ``arm-bf16``, ``arm``."""
        if self.arm:
            return "arm-bf16" if self.native_bf16 else "arm"
        if self.amx:
            return "amx"
        if self.avx512:
            return "avx512-bf16" if self.native_bf16 else "avx512-vnni" if self.int8_dot else "avx512"
        return "avx2" if "avx2" in self.flags else "x86-64"

    def summary(self) -> str:
        """One line: ``AMD EPYC (avx512-bf16: avx2 avx512f avx512_vnni avx512_bf16)``, ``forced`` when it is."""
        flags = " ".join(f for f in FLAGS_OF_INTEREST if f in self.flags) or "no AVX2/AVX-512/NEON flags"
        forced = f", forced by {ENV}={self.forced}" if self.forced else ""
        return f"{self.model} ({self.family}: {flags}{forced})"

    def to_dict(self) -> dict:
        return {"model": self.model, "machine": self.machine, "family": self.family,
                "flags": [f for f in FLAGS_OF_INTEREST if f in self.flags], "forced": self.forced}


def detect(force: str | None = None) -> CpuFeatures:
    """This CPU's features, or those of the family (or comma-separated flags) in ``force`` / ``EMBER_CPU_FEATURES``.

    Args:
        force: a family name (``"avx2"``, ``"avx512-vnni"``, ``"avx512-bf16"``, ``"amx"``, ``"arm"``, ...) or flags
            (``"avx2,fma"``); ``None`` reads ``EMBER_CPU_FEATURES``, and detects when that is unset or empty.

    Returns:
        A :class:`CpuFeatures`.

    Raises:
        ValueError: ``force`` names neither a family nor any flag ember knows.

    Example:
        >>> detect(force="avx2,fma").family
        'avx2'
    """
    value = (os.environ.get(ENV, "") if force is None else force).strip().lower()
    return _forced(value) if value else _detected()


def _forced(value: str) -> CpuFeatures:
    model, _ = _cpuinfo()
    if value in FAMILY_FLAGS:
        flags = frozenset(FAMILY_FLAGS[value])
    else:
        flags = frozenset(f.strip() for f in value.replace(" ", ",").split(",") if f.strip())
        known = set(FLAGS_OF_INTEREST) | {f for fs in FAMILY_FLAGS.values() for f in fs}
        if not flags & known:
            raise ValueError(
                f"{ENV}={value!r} names no CPU family or flag ember knows; give a family ({', '.join(FAMILY_FLAGS)}) "
                f"or flags such as 'avx2,fma' (known: {', '.join(FLAGS_OF_INTEREST)}), or unset it to detect the CPU"
            )
    machine = "aarch64" if flags & _ARM_FLAGS else "x86_64"
    return CpuFeatures(model or "unknown CPU", machine, flags & frozenset(FLAGS_OF_INTEREST) | (flags & {"fma", "sse4_2"}),
                       forced=value)


@functools.cache
def _detected() -> CpuFeatures:
    model, flags = _cpuinfo()
    return from_cpuinfo(model, flags, platform.machine())


def from_cpuinfo(model: str, flags: set[str], machine: str) -> CpuFeatures:
    """The features of a CPU whose ``/proc/cpuinfo`` shows ``model`` and ``flags`` (see :func:`parse_cpuinfo`), on
    ``machine``; with no flags (macOS, Windows), PyTorch's dispatch level is the witness.

    Example:
        >>> from_cpuinfo("AMD EPYC", {"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}, "x86_64").family
        'avx512-bf16'
    """
    machine = machine or "unknown"
    if not flags:  # no /proc/cpuinfo (macOS, Windows): PyTorch's dispatch level is the next best witness
        flags = _flags_from_torch(machine)
    model = model or platform.processor() or machine
    return CpuFeatures(model, machine, frozenset(f for f in flags if f in FLAGS_OF_INTEREST or f in ("fma", "sse4_2")))


def torch_capability() -> str:
    """PyTorch's CPU dispatch level (``"AVX512"``, ``"AVX2"``, ``"DEFAULT"``, ``"SVE256"`` ...), or ``""``."""
    try:
        import torch

        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001 - an old or odd torch: the flags decide alone
        return ""


def _flags_from_torch(machine: str) -> set[str]:
    cap = torch_capability().upper()
    if machine.lower().startswith(_ARM_MACHINES):
        return {"asimd", "asimddp"} | ({"sve"} if cap.startswith("SVE") else set())
    return {"avx2", "avx512f"} if cap.startswith("AVX512") else {"avx2"} if cap == "AVX2" else set()


def _cpuinfo() -> tuple[str, set[str]]:
    """Model name and flags from ``/proc/cpuinfo``; empty where there is none."""
    try:
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text(errors="replace"))
    except OSError:
        return "", set()


def parse_cpuinfo(text: str) -> tuple[str, set[str]]:
    r"""Model name and flags of the first processor in a ``/proc/cpuinfo`` text (x86 ``model name``/``flags``, ARM
    ``Features``; ARM kernels often print no model name: then ``""``).

    Example:
        >>> model, flags = parse_cpuinfo("model name : AMD EPYC\nflags : fpu avx2 avx512f\n")
        >>> model, sorted(flags)
        ('AMD EPYC', ['avx2', 'avx512f', 'fpu'])
    """
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model name", "Hardware") and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
        if model and flags:
            break
    return model, flags
