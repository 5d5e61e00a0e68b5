"""``ember bench`` through typer's CliRunner on a tiny model saved to disk, with a small CSV."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ember.bench import Variant
from ember.bench.sweep import PresetPlan
from ember.cli import app
from ember.fidelity import Tolerance

from conftest import make_model

runner = CliRunner()
FAST = ["--latency-samples", "4", "--repeats", "1", "--threads", "1", "--max-length", "48", "--batch-size", "4"]
ROWS = [("book a flight to paris", "travel"), ("what is my balance", "money"), ("play music", "greet"),
        ("transfer money to mom", "money"), ("is it going to rain tomorrow", "travel"), ("hello", "greet")]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer) -> Path:
    d = tmp_path_factory.mktemp("tiny-classifier")
    m = make_model("bert", num_labels=3, id2label={0: "greet", 1: "travel", 2: "money"},
                   label2id={"greet": 0, "travel": 1, "money": 2})
    m.save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


def write_csv(path: Path, rows, header=("text", "label")) -> Path:
    import csv

    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def plans(ok: bool):
    """Presets standing in for ember.optimize: an exact copy, and (unless ok) a copy that breaks fidelity."""

    def make(name, scale, tol):
        def build(step):
            return Variant(name, _noisy(_current["model"], scale), tolerance=tol, build_seconds=0.01)
        return PresetPlan(name, build, "test")

    out = [make("copy", 0.0, Tolerance(min_mean_cosine=0.999))]
    if not ok:
        out.append(make("wrecked", 5.0, Tolerance(min_mean_cosine=0.999)))
    return out


_current: dict = {}


def _noisy(model, scale):
    m = copy.deepcopy(model)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return m


@pytest.fixture
def fake_presets(monkeypatch):
    import ember.bench.sweep as sweep

    def install(ok: bool):
        def fake(model, tokenizer, sample):
            _current["model"] = model
            return plans(ok)
        monkeypatch.setattr(sweep, "preset_plans", fake)
    return install


def test_bench_with_labelled_csv_measures_accuracy(model_dir, tmp_path, fake_presets):
    fake_presets(ok=True)
    data = write_csv(tmp_path / "d.csv", ROWS)
    out = tmp_path / "out"
    res = runner.invoke(app, ["bench", "--model", str(model_dir), "--data", str(data), "--out", str(out), "--json", *FAST])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert [r["name"] for r in report["results"]] == ["pytorch-fp32", "copy"]
    assert report["labelled"] and report["label_names"] == ["greet", "travel", "money"]
    assert all(r["accuracy"] is not None and r["passed"] for r in report["results"])
    assert report["results"][1]["fidelity"]["mean_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert report["machine"]["threads"] == 1
    assert {p.name for p in out.iterdir()} == {"report.md", "report.json", "plot.png"}
    assert json.loads((out / "report.json").read_text()) == report
    table = res.stderr[res.stderr.index(" variant "):]  # the rich table
    assert "pytorch-fp32" in table and "accuracy" in table and "speed-up" in table


def test_fidelity_failure_exits_1_and_still_writes_the_report(model_dir, tmp_path, fake_presets):
    fake_presets(ok=False)
    out = tmp_path / "out"
    data = write_csv(tmp_path / "u.csv", [(t,) for t, _ in ROWS], header=("text",))
    res = runner.invoke(app, ["bench", "--model", str(model_dir), "--data", str(data), "--out", str(out), *FAST])
    assert res.exit_code == 1, res.output
    assert "1 variant(s) failed: wrecked" in res.stderr
    report = json.loads((out / "report.json").read_text())
    wrecked = report["results"][2]
    assert not report["labelled"] and not wrecked["passed"]
    assert wrecked["violations"][0].startswith("mean cosine")
    assert "failed fidelity: mean cosine" in (out / "report.md").read_text()


def test_a_preset_that_fails_to_build_is_a_failed_row(model_dir, tmp_path, monkeypatch):
    import ember.bench.sweep as sweep
    from ember.errors import EmberError

    def boom(step):
        raise EmberError("int8 mean cosine 0.91 < allowed 0.99")

    monkeypatch.setattr(sweep, "preset_plans", lambda m, t, s: [PresetPlan("int8", boom, "test")])
    res = runner.invoke(app, ["bench", "--model", str(model_dir), "--out", str(tmp_path / "o"), "--limit", "12", *FAST])
    assert res.exit_code == 1
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert [r["name"] for r in report["results"]] == ["pytorch-fp32", "int8"]
    assert report["results"][1]["error"] == "build failed: EmberError: int8 mean cosine 0.91 < allowed 0.99"
    assert report["n_examples"] == 12 and report["data"] == "ember built-in sample sentences"


def test_unknown_preset_is_refused(model_dir, tmp_path, fake_presets):
    fake_presets(ok=True)
    res = runner.invoke(app, ["bench", "--model", str(model_dir), "--presets", "copy,turbo", "--out", str(tmp_path), *FAST])
    assert res.exit_code == 2
    assert "unknown preset(s) ['turbo'] in --presets; available here: ['copy']" in " ".join(res.stderr.split())


@pytest.mark.parametrize(
    ("rows", "header", "message"),
    [
        ([("book a flight", "weather")], ("text", "label"), "labels ['weather'] in"),
        ([], ("text", "label"), "holds no examples; check the file and --split"),
        ([("x", "greet")], ("body", "label"), "has no text column (looked for"),
        ([("x", 7)], ("text", "label"), "has label ids up to 7 but"),
    ],
)
def test_bad_data_is_a_clear_error(model_dir, tmp_path, rows, header, message):
    data = write_csv(tmp_path / "bad.csv", rows, header=header)
    res = runner.invoke(app, ["bench", "--model", str(model_dir), "--data", str(data), "--out", str(tmp_path / "o"), *FAST])
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.stderr.split())
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_plain_ember_bench_on_defaults(tmp_path):
    """The README's first command: no arguments, packaged model, built-in sentences."""
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-c", "from ember.cli import main; main()", "bench", "--json"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["results"][0]["name"] == "pytorch-fp32" and report["n_examples"] >= 300
    assert all(r["passed"] for r in report["results"])
    assert {p.name for p in (tmp_path / "ember-bench").iterdir()} == {"report.md", "report.json", "plot.png"}
