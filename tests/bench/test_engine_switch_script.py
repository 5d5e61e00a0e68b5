"""benchmarks/engine_switch.py times an engine's call right after another engine's, with and without waiting for the
process to go quiet between: the order of its calls and waits."""

import pytest
from bench_scripts import script_module


@pytest.fixture(scope="module")
def script():
    yield from script_module("engine_switch.py", "engine_switch_script")


def test_each_timed_call_follows_one_call_of_its_case_and_quiet_cases_wait_between(script):
    log: list[str] = []
    now = [0.0]

    def engine(name):
        def run(**x):
            log.append(f"{name}{x['i']}")
            now[0] += 1.0
        return run

    engines = {n: engine(n) for n in ("ort", "torch", "openvino")}
    times = script.time_switches("openvino", engines, {"batch": [{"i": 0}, {"i": 1}]}, rounds=2,
                                 quiet=lambda: log.append("quiet"), clock=lambda: now[0])
    cases = ["self", "ort", "torch", "ort+quiet", "torch+quiet"]
    assert list(times["batch"]) == cases
    assert all(len(v) == 4 and set(v) == {1.0} for v in times["batch"].values())  # 2 inputs x 2 rounds, one call each
    flat = []  # per case: (the case's call, [quiet,] the timed call), each after a quiet wait
    k = 0
    while k < len(log):
        assert log[k] == "quiet"
        if log[k + 2] == "quiet":
            flat.append((log[k + 1], "quiet", log[k + 3]))
            k += 4
        else:
            flat.append((log[k + 1], log[k + 2]))
            k += 3
    assert len(flat) == 2 * 2 * len(cases)
    first = flat[:len(cases)]  # round 0, input 0: the cases in order
    assert first == [("openvino0", "openvino0"), ("ort0", "openvino0"), ("torch0", "openvino0"),
                     ("ort0", "quiet", "openvino0"), ("torch0", "quiet", "openvino0")]
    assert flat[len(cases)][0] == "ort1"  # the next input starts one case on


def test_bad_sizes_are_refused_with_the_option_named(script, monkeypatch, capsys):
    import sys

    monkeypatch.setattr(sys, "argv", ["engine_switch.py", "--rounds", "0"])
    with pytest.raises(SystemExit):
        script.parse()
    assert "--n, --n1, --batch, --rounds and --threads must be >= 1" in capsys.readouterr().err
