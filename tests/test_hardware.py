"""ember.hardware: the CPU family read from /proc/cpuinfo texts of the machines ember lands on."""

from __future__ import annotations

import doctest

import pytest

from ember import hardware
from ember.hardware import detect, from_cpuinfo, parse_cpuinfo

# first-processor excerpts of real /proc/cpuinfo files (flags cut to the ones that matter plus a few others)
ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse4_2 avx fma avx2 avx512f avx512dq avx512_bf16 avx512vbmi avx512_vnni avx512_bitalg
"""
SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: fpu sse4_2 fma avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 avx512_fp16 amx_tile amx_int8
"""
GRAVITON3 = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics asimddp sve i8mm bf16 rng
CPU implementer\t: 0x41
"""
GRAVITON2 = """processor\t: 0
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics asimddp
"""
ALDER_LAKE = """model name\t: 12th Gen Intel(R) Core(TM) i7-1265U
flags\t\t: fpu sse4_2 fma avx2 avx_vnni
"""
SKYLAKE_X = """model name\t: Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz
flags\t\t: fpu sse4_2 fma avx2 avx512f avx512dq avx512cd avx512bw avx512vl
"""


@pytest.mark.parametrize(("text", "machine", "family", "bf16", "int8_dot"), [
    (ZEN4, "x86_64", "avx512-bf16", True, True),
    (SAPPHIRE_RAPIDS, "x86_64", "amx", True, True),
    (GRAVITON3, "aarch64", "arm-bf16", True, True),
    (GRAVITON2, "aarch64", "arm", False, True),
    (ALDER_LAKE, "x86_64", "avx2", False, True),  # AVX-VNNI: int8 dot products without AVX-512
    (SKYLAKE_X, "x86_64", "avx512", False, False),
], ids=["zen4", "sapphire-rapids", "graviton3", "graviton2", "alder-lake", "skylake-x"])
def test_each_family_is_read_from_its_cpuinfo(text, machine, family, bf16, int8_dot):
    cpu = from_cpuinfo(*parse_cpuinfo(text), machine)
    assert (cpu.family, cpu.native_bf16, cpu.int8_dot) == (family, bf16, int8_dot)
    assert cpu.x86_without_int8_dot == (family == "avx512")  # of these, only Skylake-X multiplies int8 with VPMADDUBSW
    assert cpu.family in cpu.summary() and not cpu.forced


def test_an_arm_cpuinfo_without_a_model_name_still_names_the_cpu():
    model, flags = parse_cpuinfo(GRAVITON3)
    assert model == "" and "i8mm" in flags
    assert from_cpuinfo(model, flags, "aarch64").model  # platform.processor() or the machine, never empty


def test_without_cpuinfo_pytorch_dispatch_level_decides(monkeypatch):
    monkeypatch.setattr(hardware, "torch_capability", lambda: "AVX512")
    assert from_cpuinfo("", set(), "x86_64").family == "avx512"
    monkeypatch.setattr(hardware, "torch_capability", lambda: "AVX2")
    assert from_cpuinfo("", set(), "x86_64").family == "avx2"
    monkeypatch.setattr(hardware, "torch_capability", lambda: "SVE256")
    assert from_cpuinfo("", set(), "arm64").family == "arm"


def test_forcing_wins_over_detection_and_an_empty_value_detects(monkeypatch):
    monkeypatch.setenv(hardware.ENV, "amx")
    assert detect().family == "amx" and detect().forced == "amx"
    assert "forced by EMBER_CPU_FEATURES=amx" in detect().summary()
    monkeypatch.setenv(hardware.ENV, " ")
    assert detect() == hardware._detected()


def test_the_module_examples_hold():
    assert doctest.testmod(hardware).failed == 0
