"""`ember bench` shows ember's output only: other libraries' logs, warnings and bars come back with --verbose.

Each foreign line below was printed by a first `ember bench` in a fresh process (reproduced with this tiny
configuration and --verbose, see the slow test): torchao and torch while torchao loads (int8), ONNX Runtime's
root-logger warning (onnx-int8), transformers' loss_type notice and NNCF's progress bars (openvino-int8), and
transformers' `Loading weights` bar (every model load)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_model

FOREIGN = {
    "torchao": "Failed to load ",
    "torch": "register_constant()",
    "onnxruntime": "pre-processing before quantization",
    "transformers": "loss_type",
    "transformers' bar": "Loading weights",
    "nncf": "Statistics collection",
}
# what other libraries' output looks like in general: logging's default format, glog-style lines (torch), tqdm
# bars, Python warnings, rich bars with NNCF's bullets
SHAPES = [r"^(WARNING|INFO|ERROR|DEBUG):", r"^[WIE]\d{4} ", r"it/s\]", r"\w+Warning: ", r"^\s*warnings\.warn\(", r" • "]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tokenizer) -> Path:
    for engine in ("onnxruntime", "openvino", "nncf", "torchao"):
        pytest.importorskip(engine)
    d = tmp_path_factory.mktemp("tiny-encoder")
    make_model("bert-base").save_pretrained(d / "model")
    tokenizer.save_pretrained(d / "model")
    (d / "texts.txt").write_text("\n".join(["book a flight to paris", "what is my balance", "play music",
                                            "set alarm for seven am", "order pizza", "call mom"] * 2))
    return d


def run_bench(d: Path, *extra: str) -> subprocess.CompletedProcess:
    """`ember bench` in a fresh Python process (a library prints some of its lines once per process)."""
    src = Path(__file__).resolve().parents[2] / "src"
    # the three int8 presets are offered on CPUs with int8 dot products; forced, so that any host runs all three
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "COLUMNS": "200",
           "EMBER_CPU_FEATURES": "avx512-vnni"}
    args = ["bench", "--model", str(d / "model"), "--data", str(d / "texts.txt"), "--presets",
            "int8,onnx-int8,openvino-int8", "--latency-samples", "2", "--repeats", "1", "--threads", "1",
            "--batch-size", "4", "--max-length", "48", "--out", str(d / "out"), *extra]
    return subprocess.run([sys.executable, "-c", "from ember.cli import main; main()", *args], cwd=d, env=env,
                          capture_output=True, text=True, timeout=900)


def foreign_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "EmberWarning: " not in line  # ember's own (e.g. a slow preset)
            and (any(s in line for s in FOREIGN.values()) or any(re.search(p, line) for p in SHAPES))]


def test_ember_bench_stderr_holds_no_line_from_another_library(tiny):
    proc = run_bench(tiny)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert foreign_lines(proc.stderr) == []
    assert "ember bench · model" in proc.stderr and "openvino-int8" in proc.stderr  # ember's own lines stay
    assert (tiny / "out" / "report.json").exists()


@pytest.mark.slow
def test_with_verbose_the_other_libraries_lines_are_shown(tiny):
    """The reproduction: the same command with --verbose prints what the quiet run holds back."""
    proc = run_bench(tiny, "--verbose")
    assert proc.returncode == 0, proc.stderr[-3000:]
    shown = {lib for lib, sign in FOREIGN.items() if sign in proc.stderr}
    assert shown >= {"onnxruntime", "transformers", "transformers' bar", "nncf"}, proc.stderr[-3000:]


def test_quiet_keeps_ember_s_warnings_and_puts_every_setting_back(monkeypatch):
    """In process: other libraries' records and warnings are held back; ember's warnings still show; logging,
    rich's global console and the warning hook are as they were afterwards."""
    import logging
    import warnings

    import rich

    from ember.cli.quiet import quiet
    from ember.errors import EmberWarning
    from ember.fidelity import FidelityReport
    from ember.optimize import BF16Config
    from ember.optimize.core import enforce

    shown: list[str] = []
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *a, **k: shown.append(str(message))
        hook = warnings.showwarning
        with quiet():
            assert logging.getLogger("torchao").isEnabledFor(logging.WARNING) is False
            logging.warning("Please consider to run pre-processing before quantization")  # installs a root handler
            warnings.warn("a library's deprecation", FutureWarning, stacklevel=1)
            warnings.warn("accuracy over labels compared by position", EmberWarning, stacklevel=1)
            enforce(FidelityReport(4, 0.9, 0.9), BF16Config(on_violation="warn"))  # a UserWarning raised in ember
            assert rich.get_console().quiet
        assert shown[0] == "accuracy over labels compared by position" and len(shown) == 2
        assert "changed the model's answers too much" in shown[1]
        assert warnings.showwarning is hook
    assert root.handlers == handlers and root.level == level
    assert logging.getLogger("torchao").isEnabledFor(logging.WARNING) and not rich.get_console().quiet
