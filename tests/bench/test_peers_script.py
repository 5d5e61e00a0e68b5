"""benchmarks/peers.py's bookkeeping (no timing): each row's share of its precision's peak, and a run whose peak was
measured low (a row above 100%) counting no peak target."""

import pytest
from bench_scripts import script_module


@pytest.fixture(scope="module")
def peers():
    yield from script_module("peers.py", "peers_script")


def _rows(peers, fp32_throughput: float):
    Row = peers.Row
    return [Row("pytorch-fp32", "fp32", "short", p50_ms=10.0, throughput=fp32_throughput, cosine=1.0),
            Row("ember-openvino-bf16", "bf16", "short", p50_ms=2.0, throughput=1000.0, cosine=0.99999),
            Row("openvino", "bf16", "short", p50_ms=3.0, throughput=700.0, cosine=0.99999),
            Row("ember-openvino-int8", "int8", "short", p50_ms=1.5, throughput=1500.0, cosine=0.997),
            Row("optimum-int8-avx512vnni", "int8", "short", p50_ms=2.5, throughput=900.0, cosine=0.993)]


def test_fractions_use_each_rows_precision(peers):
    rows = _rows(peers, 300.0)
    over = peers.apply_peaks(rows, {"fp32": 150.0, "bf16": 400.0, "int8": 800.0}, {"short": 0.2})
    assert over == []
    assert rows[0].peak_fraction == pytest.approx(300 * 0.2 / 150)
    assert rows[1].peak_fraction == pytest.approx(1000 * 0.2 / 400)
    assert rows[3].peak_fraction == pytest.approx(1500 * 0.2 / 800)


def test_a_row_above_its_peak_is_named(peers):
    rows = _rows(peers, 900.0)  # fp32 at 120% of a peak measured in a contended moment
    over = peers.apply_peaks(rows, {"fp32": 150.0, "bf16": 400.0, "int8": 800.0}, {"short": 0.2})
    assert over == ["short/pytorch-fp32 120% fp32"]


def test_summary_meets_the_peak_target_only_against_its_limit(peers):
    rows = _rows(peers, 300.0)
    peaks = {"fp32": 150.0, "bf16": 400.0, "int8": 800.0}
    peers.apply_peaks(rows, peaks, {"short": 0.2})
    summary = peers.summarise(rows, peaks, 0.2, defaults=["openvino-bf16", "openvino-int8"])
    faithful, int8 = summary["faithful"], summary["int8"]
    assert faithful["fraction_of_limit"] == pytest.approx(1000 * 0.2 / 400, abs=1e-3)  # 0.5: met
    assert faithful["target_peak_met"] and faithful["target_throughput_met"]
    assert int8["fraction_of_limit"] == pytest.approx(1500 * 0.2 / 800, abs=1e-3)  # 0.375: not met
    assert not int8["target_peak_met"]
    assert summary["default_presets_slower_than_fp32"] == []


def test_only_embers_rows_count_as_slower_defaults(peers):
    # the plain OpenVINO peer shares its name with ember's `openvino` preset: slower than fp32, it is not ember's
    rows = _rows(peers, 800.0)
    rows += [peers.Row("ember-openvino", "fp32", "short", p50_ms=4.0, throughput=850.0, cosine=1.0)]
    summary = peers.summarise(rows, {"fp32": 150.0, "bf16": 400.0, "int8": 800.0}, 0.2,
                              defaults=["openvino", "openvino-bf16"])
    assert summary["default_presets_slower_than_fp32"] == []  # the peer "openvino" (700 < 800) is not listed
    rows[-1].throughput = 750.0
    summary = peers.summarise(rows, {"fp32": 150.0, "bf16": 400.0, "int8": 800.0}, 0.2,
                              defaults=["openvino", "openvino-bf16"])
    assert summary["default_presets_slower_than_fp32"] == ["ember-openvino"]


def test_a_default_slower_within_noise_is_named_strictly_but_not_clearly(peers, capsys):
    # run 16's case: ember-openvino 52 against PyTorch's 53 sent/s at batch 32, ahead in two of four rounds
    rows = _rows(peers, 800.0)
    rows[0].rounds = {"p50_ms": [10.0, 10.0, 10.0, 10.0], "throughput": [800.0, 810.0, 790.0, 800.0]}
    ov = peers.Row("ember-openvino", "fp32", "short", p50_ms=4.0, throughput=790.0, cosine=1.0,
                   rounds={"p50_ms": [4.0, 4.0, 4.0, 4.0], "throughput": [780.0, 820.0, 800.0, 770.0]})
    peaks = {"fp32": 150.0, "bf16": 400.0, "int8": 800.0}
    summary = peers.summarise(rows + [ov], peaks, 0.2, defaults=["openvino"])
    assert summary["default_presets_slower_than_fp32"] == ["ember-openvino"]
    assert summary["default_presets_clearly_slower_than_fp32"] == []
    ov.rounds["throughput"] = [700.0, 720.0, 810.0, 690.0]  # under 0.97x at the median, slower in 3 of 4 rounds
    summary = peers.summarise(rows + [ov], peaks, 0.2, defaults=["openvino"])
    assert summary["default_presets_clearly_slower_than_fp32"] == ["ember-openvino"]
    peers.print_verdicts({"short": summary}, ["short"])
    out = capsys.readouterr().out
    assert "| short / faithful | ember-openvino-bf16 1000.0 sent/s; ember-openvino-bf16 2.0 ms |" in out
    assert "**1.43x (openvino 700.0)**" in out  # bold: met
    assert "**50%**" in out and "| 38% |" in out  # the faithful limit is the bf16 peak's: 400 / 0.2 sent/s
    assert "5 of 6 cells met" in out
    assert ("clearly slower by optimize()'s rule (median speed-up under 0.97x and slower in at least 75% of the rounds): "
            "short ['ember-openvino']") in out


def test_openvino_peers_follow_the_cpus_default_precision(peers):
    import openvino as ov

    hint = str(ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT"))
    expected = "bf16" if "bf16" in hint or "bfloat16" in hint else "fp32"
    assert peers.row_tier("openvino") == expected
    assert peers.row_tier("ember-openvino") == "fp32"  # ember sets f32 explicitly for this preset
    assert peers.row_tier("ember-openvino-bf16") == "bf16"
    assert peers.row_tier("st-onnx-int8") == "int8"


def test_the_ab_scripts_time_the_long_workload_or_the_rows_asked_for(peers, tmp_path, capsys):
    """``workload_rows``: with ``--paragraphs`` the first ``--n`` paragraphs of 40-120 tokens are timed and the sample
    comes from the rest; without, ``--n`` rows of ``--data`` are timed and the sample is spread over its train split."""
    import argparse

    from ember.bench.rows import data_options
    from ember.models import load_model

    words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "it", "rains"]
    lines = ["sentence\tlabel"] + [" ".join(words[i % 4:] + words[: i % 4]) + f" {i}\t{i % 2}" for i in range(2000)]
    (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n")
    _, tok = load_model(None, "embedding")

    def parse(*argv):
        ap = argparse.ArgumentParser()
        data_options(ap, data=tmp_path / "train.tsv", split=None)
        peers.workload_options(ap, sample="the sample")
        ap.add_argument("--n", type=int, default=20)
        return ap.parse_args(list(argv))

    timed, sample, rows = peers.workload_rows(parse("--paragraphs", "--long-data", str(tmp_path / "train.tsv")), tok,
                                              sample="the sample")
    lengths = [len(ids) - 2 for ids in tok(timed + sample)["input_ids"]]
    assert len(timed) == 20 and sample and not set(timed) & set(sample)
    assert min(lengths) >= 40 and max(lengths) <= 120
    assert "timed: 20 texts" in capsys.readouterr().out and "paragraphs of 40-120 tokens" in rows["timed"]
    (tmp_path / "set").mkdir()
    for split in ("train", "test"):
        (tmp_path / "set" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    timed, sample, rows = peers.workload_rows(parse("--data", str(tmp_path / "set"), "--split", "test"), tok, sample="the sample")
    assert timed == [line.split("\t")[0] for line in lines[1:21]] and len(sample) == 256
    assert rows["timed"]["split"] == "test" and rows["the sample"]["split"] == "train"
    with pytest.raises(SystemExit):
        parse("--paragraphs", "--n", "many")


def test_presets_this_cpu_leaves_out_get_a_row_with_the_reason_not_a_timing(peers, monkeypatch):
    monkeypatch.setenv("EMBER_CPU_FEATURES", "avx2")
    plan = peers.ember_presets()
    assert plan["onnx"] is None and plan["onnx-int8"] is None and plan["compile"] is None  # compile: on request, timed
    assert plan["openvino-int8"].startswith("not built: this CPU has no int8 dot-product instructions")
    assert plan["compile-bf16"] == plan["openvino-bf16"] == "not built: this CPU has no AVX512-BF16 or AMX"
    assert "onnx-int8-static" not in plan  # on request and not one the benchmark times
    monkeypatch.setenv("EMBER_CPU_FEATURES", "amx")
    plan = peers.ember_presets()
    assert plan["compile-bf16"] is None and plan["openvino-int8"] is None and plan["openvino-bf16"] is None


def test_a_peer_that_did_not_run_is_named_not_counted_as_beaten(peers):
    rows = _rows(peers, 300.0)
    rows.append(peers.Row("ctranslate2-int8", "int8", "short", error="ModuleNotFoundError: No module named 'ctranslate2'"))
    peaks = {"fp32": 150.0, "bf16": 400.0, "int8": 800.0}
    int8 = peers.summarise(rows, peaks, 0.2, defaults=[])["int8"]
    assert int8["peers"] == ["optimum-int8-avx512vnni"]
    assert int8["peers_not_run"] == {"ctranslate2-int8": "ModuleNotFoundError: No module named 'ctranslate2'"}
    assert not int8["peers_complete"]
    assert peers.summarise(rows, peaks, 0.2, defaults=[])["faithful"]["peers_complete"]  # an int8 peer, not faithful's
    assert int8["throughput_vs_best_peer"] == pytest.approx(1500 / 900, abs=1e-3)  # against the peer that ran
    rows[-1] = peers.Row("ctranslate2-int8", "int8", "short", p50_ms=4.0, throughput=1400.0, cosine=0.997)
    int8 = peers.summarise(rows, peaks, 0.2, defaults=[])["int8"]
    assert int8["peers_complete"] and int8["peers_not_run"] == {}
    assert int8["best_peer_throughput"]["engine"] == "ctranslate2-int8"


def test_each_verdict_carries_its_ratio_per_round(peers):
    rows = _rows(peers, 300.0)
    rows[3].rounds = {"p50_ms": [1.5, 1.4, 2.0], "throughput": [1500.0, 1600.0, 1200.0]}  # ember-openvino-int8
    rows[4].rounds = {"p50_ms": [2.5, 2.8, 2.0], "throughput": [900.0, 800.0, 1000.0]}  # the Optimum int8 peer
    int8 = peers.summarise(rows, {"fp32": 150.0, "bf16": 400.0, "int8": 800.0}, 0.2, defaults=[])["int8"]
    assert int8["p50_speedup_vs_best_peer_per_round"] == [pytest.approx(2.5 / 1.5, abs=1e-3), 2.0, 1.0]
    assert int8["throughput_vs_best_peer_per_round"] == [pytest.approx(1500 / 900, abs=1e-3), 2.0, 1.2]
    faithful = peers.summarise(rows, {"fp32": 150.0, "bf16": 400.0, "int8": 800.0}, 0.2, defaults=[])["faithful"]
    assert faithful["p50_speedup_vs_best_peer_per_round"] == []  # no rounds recorded for those rows


def _ct2_args(model_path: str):
    import argparse

    return argparse.Namespace(model_path=model_path, threads=1, repeats=2, batch=4, latency_n=3, throughput_n=8,
                              latency_n_long=3, throughput_n_long=8, blocks=2)


def test_ctranslate2_is_timed_in_its_own_process_beside_each_round(peers, tmp_path):
    """The CTranslate2 hook runs one round in a child beside each round of the others (after round 0, before round 1:
    a host whose speed drifts through the run favours neither side), same settings and texts: its
    row has a figure per round and a fidelity, its fp32 reference's figures go into its note, and this process never
    loads CTranslate2 (whose OpenMP runtime would slow every engine in it)."""
    import sys

    pytest.importorskip("ctranslate2")
    from ember.models import default_model_path, load_model

    loaded_before = "ctranslate2" in sys.modules
    model, tok = load_model(None, "embedding")
    texts = [f"please move {i} dollars from checking to savings today" for i in range(12)]
    wl = peers.Workload("short", texts=texts, sample=[], source="test")
    ct2 = peers.CTranslate2Rounds(_ct2_args(str(default_model_path())), tmp_path)
    calls, events = [], []

    def hook(wl, r, cfg):
        calls.append((r, cfg.throughput_examples, cfg.fidelity_examples))
        events.append(f"ct2 {r}")
        return ct2(wl, r, cfg)

    reference = peers.torch_peer(model, False)

    def logged(**b):
        if not events or events[-1] != "others":
            events.append("others")
        return reference(**b)

    res = peers.time_engines({"pytorch-fp32": logged}, tok, wl, ct2.args, side_round=hook)
    assert calls == [(0, 8, 512), (1, 8, 16)]
    assert events == ["others", "ct2 0", "ct2 1", "others"]  # after round 0, before round 1: beside each, in turn
    row = res["ctranslate2-int8"]
    assert "error" not in row and len(row["rounds"]["throughput"]) == 2 and row["throughput"] > 0
    assert 0.95 < row["cosine"] <= 1.0 + 1e-6  # int8 against fp32 in its own process
    assert ct2.converted and ct2.build_s is not None and len(ct2.reference["short"]) == 2
    assert "PyTorch fp32 there: p50" in ct2.note("short") and ct2.note("long") == peers.CT2_NOTE
    assert ("ctranslate2" in sys.modules) == loaded_before


def test_a_ctranslate2_process_that_fails_is_a_row_with_its_reason_and_not_started_again(peers, tmp_path, monkeypatch):
    from ember.models import load_model

    model, tok = load_model(None, "embedding")
    wl = peers.Workload("short", texts=[f"what is my balance {i}" for i in range(12)], sample=[], source="test")
    ct2 = peers.CTranslate2Rounds(_ct2_args(str(tmp_path / "no-such-model")), tmp_path)
    res = peers.time_engines({"pytorch-fp32": peers.torch_peer(model, False)}, tok, wl, ct2.args, side_round=ct2)
    assert res["ctranslate2-int8"]["error"].startswith("its process failed: ")
    assert "no-such-model" in res["ctranslate2-int8"]["error"]
    assert len(res["pytorch-fp32"]["rounds"]["throughput"]) == 2  # the others timed as usual

    def no_second_start(*a, **k):
        raise AssertionError("started again")

    monkeypatch.setattr(peers.subprocess, "run", no_second_start)
    assert ct2(wl, 2, None) == {"ctranslate2-int8": {"error": ct2.error}}


def test_a_side_venv_whose_torchvision_breaks_transformers_is_told_how_to_mend_it(peers, tmp_path, monkeypatch):
    import argparse
    import subprocess

    py = tmp_path / "bin" / "python"
    py.parent.mkdir()
    py.touch()
    trace = ("RuntimeError: operator torchvision::nms does not exist\n...\n"
             "ModuleNotFoundError: Could not import module 'PreTrainedModel'. Are this object's requirements defined correctly?")
    monkeypatch.setattr(peers.subprocess, "run", lambda cmd, **k: subprocess.CompletedProcess(cmd, 1, "", trace))
    args = argparse.Namespace(st_openvino_python=str(py), optimum_python=None, model_path="m", threads=2,
                              long_data=str(tmp_path / "sst2" / "train.tsv"))
    with pytest.raises(RuntimeError, match=f"{py} -m pip uninstall -y torchvision"):
        peers.side_venv_model("st-openvino", args, tmp_path)
    # any other failure still ends in the child's last line
    monkeypatch.setattr(peers.subprocess, "run", lambda cmd, **k: subprocess.CompletedProcess(cmd, 1, "", "boom\nValueError: x"))
    with pytest.raises(RuntimeError, match="side venv child failed: ValueError: x"):
        peers.side_venv_model("st-openvino", args, tmp_path)
