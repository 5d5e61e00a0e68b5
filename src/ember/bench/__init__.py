"""The benchmark harness every capability reports through (``ember bench`` and benchmarks/)."""

from ember.bench.config import BenchConfig
from ember.bench.harness import BenchError, PerformanceBenchmark, Variant
from ember.bench.machine import MachineInfo
from ember.bench.report import BenchReport, VariantResult

__all__ = ["BenchConfig", "BenchError", "BenchReport", "MachineInfo", "PerformanceBenchmark", "Variant", "VariantResult"]
