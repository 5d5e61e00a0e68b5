"""The benchmark harness every capability reports through (``ember bench``, ``autotune`` and benchmarks/)."""

from ember.bench.config import BenchConfig
from ember.bench.harness import BenchError, PerformanceBenchmark, Variant
from ember.bench.machine import MachineInfo
from ember.bench.report import BenchReport, VariantResult
from ember.bench.session import BenchSession
from ember.bench.timing import Laps, TimingStats, interleave

__all__ = ["BenchConfig", "BenchError", "BenchReport", "BenchSession", "Laps", "MachineInfo", "PerformanceBenchmark",
           "TimingStats", "Variant", "VariantResult", "interleave"]
