"""benchmarks/batch1_cache.py times batch-1 calls with the cache as the host leaves it and with it cleared before each:
its rounds and the cache size it clears past."""

import pytest
from bench_scripts import script_module


@pytest.fixture(scope="module")
def script():
    yield from script_module("batch1_cache.py", "batch1_cache_script")


class CountingSweep:
    """Stands in for the eviction buffer: counts the reads."""

    def __init__(self):
        self.reads = 0

    def sum(self):
        self.reads += 1


def test_every_engine_runs_every_input_warm_then_cold_each_round_in_a_rotated_order(script):
    calls = []
    sweep = CountingSweep()

    def engine(name):
        def run(**b):
            calls.append((name, b["i"], sweep.reads))
        return run

    inputs = [{"i": i} for i in range(12)]
    out = script.time_rounds({"a": engine("a"), "b": engine("b")}, inputs, 3, sweep)
    for name in ("a", "b"):
        for mode in ("warm", "cold"):
            assert [len(r) for r in out[name][mode]] == [12, 12, 12]  # the 10 warm-up calls are not counted
    per_block = 10 + len(inputs)
    assert sweep.reads == 3 * 2 * per_block  # one read before each cold call, none before a warm one
    firsts = [calls[k * 2 * 2 * per_block][0] for k in range(3)]  # the first engine of each round
    assert firsts == ["a", "b", "a"]
    a_first_round = calls[: 2 * per_block]
    assert all(c[0] == "a" for c in a_first_round)
    assert {c[2] for c in a_first_round[:per_block]} == {0}  # warm: no read between its calls
    cold_reads = [c[2] for c in a_first_round[per_block:]]
    assert cold_reads == list(range(1, per_block + 1))  # cold: a read right before every call


def test_the_largest_cache_is_read_from_sysfs_and_none_where_there_is_none(script, tmp_path):
    for index, size in (("index0", "48K"), ("index2", "2048K"), ("index3", "32768K")):
        (tmp_path / index).mkdir()
        (tmp_path / index / "size").write_text(size + "\n")
    assert script.l3_bytes(tmp_path) == 32 << 20
    assert script.l3_bytes(tmp_path / "missing") is None


@pytest.mark.parametrize("argv, said", [
    (["--peers", "optimum-ort-O2,ctranslate2"], "--peers: unknown ctranslate2; choose from optimum-ort-O2, openvino"),
    (["--n", "0"], "--n 0 and --rounds 5 must be >= 1"),
    (["--rounds", "0"], "--n 300 and --rounds 0 must be >= 1"),
    (["--evict-mb", "-1"], "--evict-mb -1 >= 0"),
])
def test_bad_options_are_refused_before_anything_is_built(script, monkeypatch, capsys, argv, said):
    monkeypatch.setattr("sys.argv", ["batch1_cache.py", *argv])
    with pytest.raises(SystemExit):
        script.parse()
    assert said in capsys.readouterr().err
