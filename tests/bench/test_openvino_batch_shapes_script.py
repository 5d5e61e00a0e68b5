"""benchmarks/openvino_batch_shapes.py compares shape-specialised batch models with the dynamic one for every preset,
f32 included, whose default chooses none."""

import pytest
from bench_scripts import script_module

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def script():
    yield from script_module("openvino_batch_shapes.py", "openvino_batch_shapes_script")


def test_an_f32_preset_is_measured_with_the_shapes_bf16_and_int8_get(script):
    from ember.optimize.backends.openvino import choose_batch_shapes

    variants = [("dynamic", {"batch_shapes": ()}), ("batch-shapes", {})]
    lengths = [9, 11, 12, 14, 17, 20, 23]
    got = dict(script.explicit_shapes("openvino", variants, lengths))
    assert got["dynamic"] == {"batch_shapes": ()}  # the dynamic model either way
    assert got["batch-shapes"] == {"batch_shapes": choose_batch_shapes(lengths, 8)} and got["batch-shapes"]["batch_shapes"]
    assert script.explicit_shapes("openvino-bf16", variants, lengths) == variants  # its default chooses them itself
