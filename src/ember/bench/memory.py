"""Peak resident memory of this process over a stretch of work.

On Linux the kernel's high-water mark (``VmHWM``) is reset by writing ``5`` to ``/proc/self/clear_refs``,
which gives an exact per-variant peak with no sampling thread competing for the CPU being measured.
Elsewhere the process-lifetime peak from ``resource`` (or the current RSS) is the fallback.
"""

from __future__ import annotations

from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")


def reset_peak() -> bool:
    """Reset the peak-RSS mark; False where the platform does not allow it."""
    try:
        _CLEAR.write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float | None:
    """Peak resident memory in MB (since the last :func:`reset_peak` where supported)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB -> MB
    except OSError:
        pass
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0
    except (ImportError, OSError):
        pass
    try:
        import psutil

        return psutil.Process().memory_info().rss / (1024.0 * 1024.0)
    except Exception:  # pragma: no cover - psutil is a dependency, but memory must never fail a benchmark
        return None


def rss_mb() -> float | None:
    """Resident memory of this process now, in MB."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0  # kB -> MB
    except OSError:
        pass
    try:
        import psutil

        return psutil.Process().memory_info().rss / (1024.0 * 1024.0)
    except Exception:  # pragma: no cover - memory must never fail a benchmark
        return None


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the system.

    After an engine's artifact is dropped, glibc keeps most of its freed heap (hundreds of MB after an ONNX
    export) mapped for reuse, so the process's resident memory stays as if the artifact were alive;
    ``malloc_trim(0)`` returns it. A no-op beyond ``gc.collect()`` where glibc is not the allocator.
    """
    import ctypes
    import gc

    gc.collect()
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the symbols already loaded into this process: glibc's, on Linux
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows): nothing to trim
        return
    trim(0)
