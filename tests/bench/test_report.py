"""Reports as data: JSON round trip, the Markdown table agrees with the JSON, the PNG decodes, best()."""

from __future__ import annotations

import json
import re

import pytest

from ember.bench import BenchConfig, BenchReport, MachineInfo, PerformanceBenchmark, Variant, VariantResult
from ember.bench.plot import plot_report
from ember.fidelity import FidelityReport

from conftest import make_model

CFG = BenchConfig(batch_size=4, latency_samples=5, warmup=1, throughput_examples=8, repeats=1, max_length=48, threads=1)
TEXTS = ["book a flight to paris", "what is my balance", "play music", "set alarm for seven am", "order pizza",
         "is it going to rain tomorrow", "call mom", "tell me a joke"]


@pytest.fixture(scope="module")
def labelled(tokenizer):
    model = make_model("bert", num_labels=3)
    bench = PerformanceBenchmark(tokenizer, TEXTS, [0, 1, 2, 0, 1, 2, 0, 1], CFG, progress=False, model_name="tiny")
    return bench.run([Variant("fp32", model, reference=True), Variant("copy", make_model("bert", num_labels=3))])


def made_up(**over) -> BenchReport:
    """A report built by hand, for the queries that need no model."""
    rows = [
        VariantResult("fp32", reference=True, fidelity=FidelityReport(4, 1.0, 1.0), latency_ms={"p50": 8.0, "p90": 9, "p99": 10},
                      throughput=300.0, size_mb=90.0, peak_rss_mb=500.0),
        VariantResult("int8", fidelity=FidelityReport(4, 0.99, 0.98), latency_ms={"p50": 2.0, "p90": 3, "p99": 4},
                      throughput=900.0, size_mb=23.0, peak_rss_mb=450.0),
        VariantResult("broken", error="RuntimeError: x", passed=False, latency_ms={"p50": 0.5, "p90": 1, "p99": 1}),
    ]
    return BenchReport(MachineInfo("cpu", ["avx2"], 2, 2, 2, "t"), BenchConfig(), rows, "2026-11-21T00:00:00+00:00", **over)


def parse_markdown_table(md: str) -> list[dict[str, str]]:
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]

    def cells(line: str) -> list[str]:
        return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]  # split on unescaped pipes

    header = cells(lines[0])
    return [dict(zip(header, cells(ln), strict=True)) for ln in lines[2:]]


def test_json_round_trip(labelled, tmp_path):
    back = BenchReport.from_json(labelled.to_json())
    assert back.to_dict() == labelled.to_dict()
    assert isinstance(back.results[1].fidelity, FidelityReport)
    paths = labelled.write(tmp_path)
    on_disk = json.loads(paths["json"].read_text())
    assert on_disk == json.loads(labelled.to_json())
    assert on_disk["machine"]["threads"] == 1 and on_disk["machine"]["cpu_model"]
    assert on_disk["config"]["batch_size"] == 4


def test_markdown_numbers_match_the_json(labelled, tmp_path):
    paths = labelled.write(tmp_path)
    rows = parse_markdown_table(paths["markdown"].read_text())
    data = json.loads(paths["json"].read_text())
    assert [r["variant"] for r in rows] == ["fp32 (ref)", "copy"]
    for row, res in zip(rows, data["results"], strict=True):
        assert row["accuracy"] == f"{res['accuracy']:.4f}"
        assert row["macro-F1"] == f"{res['macro_f1']:.4f}"
        assert row["cosine vs ref"] == f"{res['fidelity']['mean_cosine']:.6f}"
        assert row["p50 ms"] == f"{res['latency_ms']['p50']:.2f}"
        assert row["p99 ms"] == f"{res['latency_ms']['p99']:.2f}"
        assert row["ex/s bucketed"] == f"{res['throughput']:.1f}"
        assert row["ex/s unbucketed"] == f"{res['throughput_unbucketed']:.1f}"
        assert row["size MB"] == f"{res['size_mb']:.1f}"
        assert row["peak RSS MB"] == f"{res['peak_rss_mb']:.0f}"
        assert row["status"] == "ok"
    ref_p50 = data["results"][0]["latency_ms"]["p50"]
    assert rows[1]["speed-up p50"] == f"{ref_p50 / data['results'][1]['latency_ms']['p50']:.2f}x"
    assert data["machine"]["cpu_model"] in paths["markdown"].read_text()


def test_png_decodes(labelled, tmp_path):
    import matplotlib.image

    png = plot_report(labelled, tmp_path / "sub" / "plot.png")
    img = matplotlib.image.imread(png)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300
    assert img.std() > 0  # something was drawn


def test_plot_of_unlabelled_and_of_nothing(tmp_path):
    import matplotlib.image

    assert matplotlib.image.imread(plot_report(made_up(), tmp_path / "a.png")).shape[0] > 200
    empty = made_up()
    empty.results = [VariantResult("x", error="E: y", passed=False)]
    assert matplotlib.image.imread(plot_report(empty, tmp_path / "b.png")).shape[0] > 200


def test_best_picks_passing_variants():
    rep = made_up()
    assert rep.best("latency").name == "int8"  # "broken" is faster but failed
    assert rep.best("throughput").name == "int8"
    assert rep.best("fidelity").name == "fp32"
    assert rep.best("size").name == "int8"
    assert rep.best("memory").name == "int8"
    with pytest.raises(ValueError, match=r"^objective 'speed' is not one of \['accuracy', "):
        rep.best("speed")
    with pytest.raises(ValueError, match="^no passing variant has a accuracy figure"):
        rep.best("accuracy")
    assert not rep.passed
    with pytest.raises(KeyError, match="no variant named 'nope'"):
        rep.result("nope")


def test_failed_row_in_markdown_escapes_pipes():
    rep = made_up()
    rep.results[2].error = "ValueError: a | b"
    md = rep.to_markdown()
    assert "error: ValueError: a \\| b" in md
    assert len(parse_markdown_table(md)) == 3
