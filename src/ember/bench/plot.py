"""The classic compression chart: accuracy (or fidelity) against batch-1 latency, marker area ∝ size.

Labels are placed one by one, beside their point where there is room, else further out with a leader line,
never over another label or marker (as measured by the renderer); the latency axis turns logarithmic when the
slowest variant is :data:`LOG_SPREAD` times the fastest or more, so one slow variant does not squeeze the
others into a corner.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the report draws itself through this module (BenchReport.write); no import back at run time
    from ember.bench.report import BenchReport

LOG_SPREAD = 5.0  # slowest / fastest p50 from which the latency axis is logarithmic
_PALETTE = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9"]


def plot_report(report: BenchReport, path: str | Path, *, title: str | None = None) -> Path:
    """Draw the report's passing and fidelity-failed variants and save a PNG.

    The y axis is accuracy when the data is labelled, else mean cosine against the reference variant.
    Variants without a latency figure (errors) are left out; failed ones are drawn hollow.

    Args:
        report: the benchmark report.
        path: where the PNG goes.
        title: chart title (default names the machine).

    Returns:
        The PNG's path.

    Example:
        >>> plot_report(report, "ember-bench/plot.png")  # doctest: +SKIP
    """
    fig = draw_report(report, title=title)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out


def draw_report(report: BenchReport, *, title: str | None = None):
    """The chart of :func:`plot_report` as a matplotlib ``Figure`` (on the Agg canvas), not saved."""
    # Figure + the Agg canvas directly: no pyplot, so the user's interactive backend is never touched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    use_accuracy = report.labelled and any(r.accuracy is not None for r in report.results)

    def y_of(r) -> float | None:
        return r.accuracy if use_accuracy else (None if r.fidelity is None else r.fidelity.mean_cosine)

    points = [(r, r.p50, y_of(r)) for r in report.results if r.p50 is not None and y_of(r) is not None]
    fig = Figure(figsize=(8, 5.5), dpi=110)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    areas = _draw_points(ax, points)
    ref = report.reference
    if ref is not None and y_of(ref) is not None:
        ax.axhline(y_of(ref), color="grey", linestyle="--", linewidth=1, label=f"{ref.name} (reference)")
        ax.legend(loc="lower right", fontsize=8)
    if not points:
        ax.text(0.5, 0.5, "no variant produced latency and quality figures", ha="center", va="center",
                transform=ax.transAxes)
    _set_axes(ax, [x for _, x, _ in points], [y for _, _, y in points], use_accuracy)
    ax.set_ylabel("accuracy" if use_accuracy else "mean cosine vs reference")
    ax.grid(True, alpha=0.3)
    ax.set_title(title or f"{report.model or 'model'} — {report.machine.cpu_model}, {report.machine.threads} threads",
                 fontsize=10)
    fig.tight_layout()  # before the labels: they are placed in the final display coordinates
    labels = [f"{r.name}" + ("" if r.size_mb is None else f" ({r.size_mb:.0f} MB)") for r, _, _ in points]
    place_labels(ax, [(x, y) for _, x, y in points], labels, areas, canvas.get_renderer())
    return fig


def _draw_points(ax, points: list) -> list[float]:
    """One marker per variant (area ∝ size, hollow when it failed); returns the marker areas (points²)."""
    sizes = [r.size_mb for r, _, _ in points if r.size_mb]
    biggest = max(sizes) if sizes else 1.0
    areas = []
    for k, (r, x, y) in enumerate(points):
        area = 60 + 1400 * ((r.size_mb or biggest * 0.05) / biggest)  # ∝ size, floor keeps tiny ones visible
        colour = _PALETTE[k % len(_PALETTE)]
        ax.scatter([x], [y], s=area, alpha=0.55 if r.passed else 1.0, c=colour if r.passed else "none",
                   edgecolors=colour, linewidths=1.5, zorder=2)
        areas.append(area)
    return areas


def _set_axes(ax, xs: list[float], ys: list[float], use_accuracy: bool) -> None:
    """Latency axis logarithmic when the spread is large, else linear around the points; quality axis padded."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    lo_x, hi_x = min(xs, default=1.0), max(xs, default=1.0)
    if lo_x > 0 and hi_x / lo_x >= LOG_SPREAD:
        ax.set_xscale("log")
        ax.set_xlim(lo_x / 1.6, hi_x * 1.6)
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ScalarFormatter())  # 2, 5, 10, 20 ms rather than 10^1
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("latency p50 at batch 1 (ms, log scale)")
    else:
        pad = 0.35 * (hi_x - lo_x) + 0.05 * hi_x  # around the points: a close group is spread over the width
        ax.set_xlim(left=max(0.0, lo_x - pad), right=hi_x + pad)
        ax.set_xlabel("latency p50 at batch 1 (ms)")
    if ys:
        lo, hi = min(ys), max(ys)
        pad = max((hi - lo) * 0.25, 1e-4 if not use_accuracy else 0.01)
        ax.set_ylim(lo - pad, hi + pad)
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")


# Where a label may go relative to its point, nearest first: (dx, dy) direction and the text's alignment.
_SIDES = [((1, 0), "left", "center"), ((-1, 0), "right", "center"), ((0, 1), "center", "bottom"),
          ((0, -1), "center", "top"), ((1, 1), "left", "bottom"), ((1, -1), "left", "top"),
          ((-1, 1), "right", "bottom"), ((-1, -1), "right", "top"), ((2, 1), "left", "bottom"),
          ((2, -1), "left", "top"), ((-2, 1), "right", "bottom"), ((-2, -1), "right", "top")]


def place_labels(ax, xy: list[tuple[float, float]], texts: list[str], areas: list[float], renderer) -> list:
    """Annotate each point with its text where it overlaps no other label or marker and stays inside the axes.

    Labels are placed in turn (leftmost point first) at the first free position: beside the marker, then
    further out in rings, with a grey leader line (which must not cross a label either) once away from the
    marker. Where nothing is free, the position with the least overlap is taken. Hand-written because the one
    library for this (adjustText) would be a dependency for a single chart, and its iterative pushing does not
    give the same picture from run to run.

    Returns:
        The annotations, in the order of ``xy``.
    """
    from matplotlib.transforms import Bbox

    px = ax.figure.dpi / 72.0  # display pixels per point
    centres = [tuple(ax.transData.transform(p)) for p in xy]
    radii = [math.sqrt(a / math.pi) for a in areas]  # marker radius in points
    markers = [Bbox.from_extents(cx - r * px, cy - r * px, cx + r * px, cy + r * px)
               for (cx, cy), r in zip(centres, radii, strict=True)]
    frame = ax.get_window_extent(renderer)
    placed: list = []
    out: list = [None] * len(xy)
    for i in sorted(range(len(xy)), key=lambda k: (xy[k][0], -xy[k][1])):
        spot = _Spot(xy[i], centres[i], radii[i], [m for k, m in enumerate(markers) if k != i])
        out[i] = _place_one(ax, spot, texts[i], placed, frame, renderer)
        placed.append(text_box(out[i], renderer))
    return out


class _Spot:
    """A point to label: data and display position, marker radius (points), the other markers' boxes."""

    def __init__(self, xy, centre, radius: float, markers: list) -> None:
        self.xy, self.centre, self.radius, self.markers = xy, centre, radius, markers


def _place_one(ax, spot: _Spot, text: str, labels: list, frame, renderer):
    """The annotation of one point at its best free position (see :func:`place_labels`)."""
    probe = ax.annotate(text, spot.xy, xytext=(0, 0), textcoords="offset points", fontsize=8, zorder=3)
    best, best_cost = None, math.inf
    for ring in range(6):
        reach = spot.radius + 3 + 12 * ring  # points from the marker's centre
        for (dx, dy), ha, va in _SIDES:
            norm = math.hypot(dx, dy)
            probe.xyann = (reach * dx / norm, reach * dy / norm)
            probe.set_ha(ha)
            probe.set_va(va)
            box = text_box(probe, renderer)
            cost = sum(_overlap(box, t) for t in labels + spot.markers) + _outside(box, frame)
            if ring > 0:  # a leader line through another label reads as that label's
                cost += sum(1e4 for t in labels if _crosses(spot.centre, (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2, t))
            if cost < best_cost:
                best, best_cost = (probe.xyann, ha, va, ring), cost
            if cost == 0:
                break
        if best_cost == 0:
            break
    probe.remove()  # the label is drawn once, where it goes, with a leader line when away from its marker
    offset, ha, va, ring = best
    lead = {"arrowstyle": "-", "color": "grey", "lw": 0.5, "shrinkA": 0, "shrinkB": spot.radius} if ring > 0 else None
    backing = {"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.75}
    return ax.annotate(text, spot.xy, xytext=offset, textcoords="offset points", fontsize=8, ha=ha, va=va, zorder=3,
                       arrowprops=lead, bbox=backing)


def text_box(annotation, renderer):
    """The display box of an annotation's text alone (``Annotation.get_window_extent`` adds its leader line)."""
    from matplotlib.text import Text

    annotation.update_positions(renderer)  # where its offset puts it now (Text's own extent does not ask)
    return Text.get_window_extent(annotation, renderer)


def _crosses(start, x1: float, y1: float, box, steps: int = 24) -> bool:
    """Whether the segment from ``start`` to (x1, y1) passes through ``box`` (sampled; display coordinates)."""
    x0, y0 = start
    return any(box.contains(x0 + (x1 - x0) * k / steps, y0 + (y1 - y0) * k / steps) for k in range(1, steps))


def _overlap(a, b) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def _outside(box, frame) -> float:
    return box.width * box.height - _overlap(box, frame)
