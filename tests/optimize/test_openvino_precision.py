"""An OpenVINO artifact says so where the CPU plugin runs another precision than the one asked (f16 on ARM, f32 on an
x86 CPU without bf16 kernels), in its build notes, through a save and a load."""

from __future__ import annotations

import pytest

from ember.optimize import OpenVINOConfig, load, optimize

from conftest import make_model

pytest.importorskip("openvino")


class Compiled:
    """Stands in for a compiled model: answers INFERENCE_PRECISION_HINT as the plugin would, or raises."""

    def __init__(self, value) -> None:
        self.value = value

    def get_property(self, name):
        assert name == "INFERENCE_PRECISION_HINT"
        if isinstance(self.value, Exception):
            raise self.value
        return self.value


def test_the_note_names_what_ran_and_what_was_asked_and_only_where_they_differ():
    import openvino as ov

    from ember.optimize.backends.openvino import precision_note, ran_precision

    assert ran_precision(Compiled(ov.Type.bf16)) == "bf16"  # the plugin answers with an openvino.Type
    assert ran_precision(Compiled(ov.Type.f16)) == "f16"
    assert ran_precision(Compiled(RuntimeError("not supported"))) is None
    assert precision_note(Compiled(ov.Type.bf16), "bf16") is None
    assert precision_note(Compiled(RuntimeError("not supported")), "bf16") is None  # nothing known, nothing said
    note = precision_note(Compiled(ov.Type.f16), "bf16")
    assert note.startswith("OpenVINO runs f16 on this CPU where bf16 was asked")
    assert "the fidelity and speed checks measured f16" in note


def test_what_this_cpu_ran_is_what_was_asked_for_f32(tokenizer):
    art = optimize(make_model("bert-base"), OpenVINOConfig(threads=2, static_shapes=(), batch_shapes=()),
                   tokenizer=tokenizer, sample=["play some music", "what time is it"])
    from ember.optimize.backends.openvino import ran_precision

    assert ran_precision(art.compiled) == "f32"  # the real plugin's answer, read back
    assert art.build_notes == []


def test_a_precision_the_plugin_swapped_is_noted_and_kept_through_save_and_load(tokenizer, monkeypatch, tmp_path):
    import ember.optimize.backends.openvino as ov_backend

    monkeypatch.setattr(ov_backend, "ran_precision", lambda compiled: "f16")  # as OpenVINO answers on ARM
    stages: list[str] = []
    art = optimize(make_model("bert-base"), OpenVINOConfig(threads=2, static_shapes=(), batch_shapes=()),
                   tokenizer=tokenizer, sample=["play some music", "what time is it"], progress=stages.append)
    assert art.build_notes == [ov_backend.precision_note(art.compiled, "f32")]
    assert "OpenVINO runs f16 on this CPU where f32 was asked" in art.build_notes[0]
    assert any("OpenVINO runs f16" in s for s in stages)  # shown while it builds
    back = load(art.save(tmp_path / "ov"))
    assert back.build_notes == art.build_notes


def test_bf16_asked_runs_bf16_where_this_cpu_has_it_and_is_noted_where_it_does_not(tokenizer):
    """The real plugin's answer on whichever CPU the suite runs: bf16 on an x86 CPU with AVX512-BF16 or AMX (no note);
    elsewhere the note names what ran instead. The CPU's own flags (``force=""``), not any forced through
    ``EMBER_CPU_FEATURES``: the plugin sees the real CPU."""
    from ember.hardware import detect
    from ember.optimize.backends.openvino import ran_precision

    art = optimize(make_model("bert-base"), OpenVINOConfig(precision="bf16", threads=2, static_shapes=(),
                                                           batch_shapes=()),
                   tokenizer=tokenizer, sample=["play some music", "what time is it"])
    cpu = detect(force="")
    if cpu.native_bf16 and not cpu.arm:
        assert ran_precision(art.compiled) == "bf16" and art.build_notes == []
    else:
        assert art.build_notes and art.build_notes[0].startswith(f"OpenVINO runs {ran_precision(art.compiled)} ")
