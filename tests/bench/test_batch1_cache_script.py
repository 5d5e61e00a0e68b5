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
    (["--n", "20", "--turn", "30"], "--turn 30 must be between 0 (off) and --n 20"),
])
def test_bad_options_are_refused_before_anything_is_built(script, monkeypatch, capsys, argv, said):
    monkeypatch.setattr("sys.argv", ["batch1_cache.py", *argv])
    with pytest.raises(SystemExit):
        script.parse()
    assert said in capsys.readouterr().err


def test_turns_read_the_cache_once_then_time_each_place_of_the_turn(script):
    calls = []
    sweep = CountingSweep()

    def run(**b):
        calls.append((b["i"], sweep.reads))

    inputs = [{"i": i} for i in range(12)]
    out = script.time_rounds({"a": run}, inputs, 2, sweep, turn=5)
    assert [len(at) for at in out["a"]["turn"]] == [4] * 5  # 2 rounds x 2 whole turns of 5 (the last 2 inputs left)
    per_round = 2 * (10 + len(inputs)) + 2 * 5
    turn_calls = calls[2 * (10 + len(inputs)): per_round]
    assert [c[0] for c in turn_calls] == list(range(10))
    cold_reads = 10 + len(inputs)  # the cold block's, one before each of its calls
    assert [c[1] for c in turn_calls] == [cold_reads + 1] * 5 + [cold_reads + 2] * 5  # then one before each turn


@pytest.mark.parametrize("places, warm, first", [
    ([2.0, 1.5, 1.04, 1.0, 1.02], 1.0, 3),
    ([2.0, 1.0, 1.5, 1.0, 1.0], 1.0, 4),  # a slow place later starts the count again
    ([1.0, 1.0, 1.2], 1.0, None),  # the turn ends slow: never settled
])
def test_settled_is_the_first_place_from_which_every_later_one_is_warm(script, places, warm, first):
    assert script.settled(places, warm) == first


def test_between_engines_turns_rotate_across_the_engines_each_after_quiet_and_without_a_cache_read(script):
    calls, events = [], []
    sweep = CountingSweep()

    def engine(name):
        def run(**b):
            calls.append((name, b["i"], sweep.reads))
            events.append(name)
        return run

    inputs = [{"i": i} for i in range(10)]
    out = script.time_rounds({"a": engine("a"), "b": engine("b")}, inputs, 2, sweep, turn=5, between="engines",
                             quiet=lambda: events.append("quiet"))
    for name in ("a", "b"):
        assert [len(at) for at in out[name]["turn"]] == [4] * 5  # 2 rounds x 2 turns of 5, places pooled
    blocks_calls = 2 * 2 * 2 * (10 + len(inputs))  # the warm and cold blocks, 2 engines, 2 rounds
    turns = calls[blocks_calls:]
    assert len(turns) == 2 * 2 * 2 * 5
    assert {c[2] for c in turns} == {sweep.reads}  # no cache read between turns: only the other engine's turn
    owners = [turns[k * 5][0] for k in range(8)]
    assert owners == ["a", "b", "b", "a", "a", "b", "b", "a"]  # the first engine one place on each turn
    # each pair of turns covers the same 5 inputs: turn j of a round is inputs[5j:5j + 5] for every engine
    assert all(turns[k * 5 + p][0] == owners[k] and turns[k * 5 + p][1] == 5 * (k // 2 % 2) + p
               for k in range(8) for p in range(5))
    turn_events = events[events.index("quiet"):]
    assert turn_events == sum((["quiet"] + [o] * 5 for o in owners), [])  # quiet before each turn, none inside
