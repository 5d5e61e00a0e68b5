"""The chart: labels never on top of each other, a log latency axis when one variant is far slower, and no
import of the report back (the report draws itself through the plot)."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

from ember.bench import BenchConfig, BenchReport, MachineInfo, VariantResult
from ember.bench.plot import LOG_SPREAD, draw_report, plot_report, text_box
from ember.fidelity import FidelityReport


def report_of(rows: list[tuple[str, float, float, float]]) -> BenchReport:
    """(name, mean cosine, p50 ms, size MB) per variant; the first is the reference."""
    results = [VariantResult(name, reference=k == 0, fidelity=FidelityReport(8, cos, cos), size_mb=mb,
                             latency_ms={"p50": p50, "p90": p50, "p99": p50}) for k, (name, cos, p50, mb) in enumerate(rows)]
    return BenchReport(MachineInfo("cpu", [], 2, 2, 2, "t"), BenchConfig(), results, "2026-11-21T00:00:00+00:00", model="m")


# five variants within 0.3 ms of each other at ~2 ms, as `ember bench` measured the engines (labels were stacked
# on top of each other there), and the fp32 baseline
CLUSTER = [("pytorch-fp32", 1.0, 9.2, 91), ("openvino-bf16", 0.99999, 2.13, 90), ("openvino", 1.0, 2.31, 90),
           ("onnx-int8-block", 0.99984, 2.24, 67), ("onnx", 1.0, 2.06, 90), ("openvino-int8", 0.99740, 1.98, 23)]


def label_boxes(fig):
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    return ax, [(t.get_text(), text_box(t, renderer)) for t in ax.texts]


@pytest.mark.parametrize("rows", [CLUSTER, [*CLUSTER, ("int8", 0.9972, 1068.0, 59)], CLUSTER[1:]])
def test_labels_do_not_overlap_and_stay_inside_the_axes(rows):
    ax, boxes = label_boxes(draw_report(report_of(rows)))
    assert sorted(name.split(" (")[0] for name, _ in boxes) == sorted(r[0] for r in rows)
    for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
        assert not box_a.overlaps(box_b), f"labels {a!r} and {b!r} overlap"
    frame = ax.get_window_extent(ax.figure.canvas.get_renderer())
    for name, box in boxes:
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, name


def test_the_latency_axis_is_logarithmic_when_one_variant_is_far_slower():
    slow = draw_report(report_of([*CLUSTER, ("int8", 0.9972, 1068.0, 59)])).axes[0]
    assert slow.get_xscale() == "log" and "log scale" in slow.get_xlabel()
    assert slow.get_xlim()[0] < 1.98 and slow.get_xlim()[1] > 1068.0
    close = draw_report(report_of(CLUSTER[1:])).axes[0]  # 1.98 .. 2.31 ms
    assert close.get_xscale() == "linear"
    lo, hi = close.get_xlim()
    assert LOG_SPREAD > 2.31 / 1.98 and lo > 1.0 and hi < 3.0  # the group is spread over the width, not at 0..2.5


def test_the_png_is_written(tmp_path):
    path = plot_report(report_of(CLUSTER), tmp_path / "sub" / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_plot_does_not_import_the_report_at_run_time():
    """bench/report.py draws through bench/plot.py (BenchReport.write); plot.py imported report.py back for one
    annotation (an import circle). Only a type-checking import is left."""
    tree = ast.parse((Path(__file__).parents[2] / "src" / "ember" / "bench" / "plot.py").read_text())
    guarded = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
               for n in ast.walk(node)}
    runtime = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and id(n) not in guarded]
    assert not [n.module for n in runtime if n.module and n.module.startswith("ember.bench.report")]
