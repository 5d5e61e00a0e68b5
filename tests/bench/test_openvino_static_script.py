"""benchmarks/openvino_static.py's shape variants: the finer grid, the placement with the least padding (checked
against every choice on small samples) and the padding it reports."""

import itertools
import random

import pytest
from bench_scripts import script_module


@pytest.fixture(scope="module")
def script():
    yield from script_module("openvino_static.py", "openvino_static_script")


def test_finer_puts_a_shape_halfway_between_each_two_and_below_the_first(script):
    assert script.finer((80, 96, 112, 128)) == (72, 80, 88, 96, 104, 112, 120, 128)
    assert script.finer((12, 16, 20, 24)) == (10, 12, 14, 16, 18, 20, 22, 24)
    assert script.finer((3,)) == (2, 3) and script.finer((1,)) == (1,) and script.finer(()) == ()


def _padding(shapes, lengths):
    return sum(min(s for s in shapes if s >= n) - n for n in lengths)


def test_fewest_padding_is_the_least_padding_placement_that_holds_every_length(script):
    rng = random.Random(0)
    for _ in range(30):
        lengths = [rng.randint(3, 40) for _ in range(rng.randint(1, 25))]
        k = rng.randint(1, 5)
        got = script.fewest_padding(lengths, k)
        assert len(got) <= k and got[-1] == max(lengths) and set(got) <= set(lengths)
        vals = sorted(set(lengths))
        best = min(_padding((*c, vals[-1]), lengths) for m in range(min(k, len(vals)))
                   for c in itertools.combinations(vals[:-1], m))
        assert _padding(got, lengths) == best
    assert script.fewest_padding([], 3) == () and script.fewest_padding([9, 9], 0) == ()


def test_mean_padding_counts_padded_tokens_per_real_one_and_none_past_the_last_shape(script):
    assert script.mean_padding([12, 16], [10, 12, 20]) == pytest.approx(2 / 42)
    assert script.mean_padding([], [5, 7]) == 0


def test_variant_configs_give_the_finer_variants_room_for_every_model(script):
    lengths = [9, 10, 11, 11, 12, 13, 14, 15, 18, 22, 24]
    got = script.variant_configs(["dynamic", "sample", "finer", "fewest-padding"], (12, 16, 20, 24), lengths)
    assert got["dynamic"] == {"static_shapes": ()} and got["sample"] == {}
    assert got["finer"]["static_shapes"] == (10, 12, 14, 16, 18, 20, 22, 24) and got["finer"]["max_static"] == 8
    fewest = got["fewest-padding"]["static_shapes"]
    assert len(fewest) == 8 and fewest[-1] == 24 and fewest == script.fewest_padding(lengths, 8)
    assert got["fewest-padding"]["static_memory_mb"] >= 8 * 100  # room for eight copies of a MiniLM's weights
    fewer = script.variant_configs(["half", "longest"], (12, 16, 20, 24), lengths)
    assert fewer["half"]["static_shapes"] == script.fewest_padding(lengths, 2) == (15, 24)
    assert fewer["longest"]["static_shapes"] == (24,)


def test_an_unknown_variant_is_refused_with_the_choices(script, capsys):
    with pytest.raises(SystemExit):
        script.parse(["--variants", "sample,exact"])
    assert "unknown ['exact']; choose from dynamic, every-4, sample, finer, fewest-padding, half, longest" in capsys.readouterr().err
