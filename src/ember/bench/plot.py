"""The classic compression chart: accuracy (or fidelity) against batch-1 latency, marker area ∝ size."""

from __future__ import annotations

from pathlib import Path

from ember.bench.report import BenchReport


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
    # Figure + the Agg canvas directly: no pyplot, so the user's interactive backend is never touched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    use_accuracy = report.labelled and any(r.accuracy is not None for r in report.results)
    ylabel = "accuracy" if use_accuracy else "mean cosine vs reference"

    def y_of(r) -> float | None:
        if use_accuracy:
            return r.accuracy
        return None if r.fidelity is None else r.fidelity.mean_cosine

    points = [(r, r.p50, y_of(r)) for r in report.results if r.p50 is not None and y_of(r) is not None]
    sizes = [r.size_mb for r, _, _ in points if r.size_mb]
    biggest = max(sizes) if sizes else 1.0

    fig = Figure(figsize=(8, 5.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    palette = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9"]
    offsets = _label_offsets([(x, y) for _, x, y in points])
    for k, (r, x, y) in enumerate(points):
        area = 60 + 1400 * ((r.size_mb or biggest * 0.05) / biggest)  # ∝ size, floor keeps tiny ones visible
        face = palette[k % len(palette)] if r.passed else "none"
        ax.scatter([x], [y], s=area, alpha=0.55 if r.passed else 1.0, c=face, edgecolors=palette[k % len(palette)],
                   linewidths=1.5)
        size = "" if r.size_mb is None else f" ({r.size_mb:.0f} MB)"
        ax.annotate(f"{r.name}{size}", (x, y), xytext=offsets[k], textcoords="offset points", fontsize=8,
                    arrowprops={"arrowstyle": "-", "color": "grey", "lw": 0.5} if offsets[k][1] != 8 else None)
    ref = report.reference
    if ref is not None and y_of(ref) is not None:
        ax.axhline(y_of(ref), color="grey", linestyle="--", linewidth=1, label=f"{ref.name} (reference)")
        ax.legend(loc="lower right", fontsize=8)
    if not points:
        ax.text(0.5, 0.5, "no variant produced latency and quality figures", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlabel("latency p50 at batch 1 (ms)")
    ax.set_ylabel(ylabel)
    ax.set_xlim(left=0, right=max([x for _, x, _ in points], default=1.0) * 1.25)
    ys = [y for _, _, y in points]
    if ys:
        lo, hi = min(ys), max(ys)
        pad = max((hi - lo) * 0.25, 1e-4 if not use_accuracy else 0.01)
        ax.set_ylim(lo - pad, hi + pad)
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    ax.grid(True, alpha=0.3)
    ax.set_title(title or f"{report.model or 'model'} — {report.machine.cpu_model}, {report.machine.threads} threads",
                 fontsize=10)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out


def _label_offsets(xy: list[tuple[float, float]]) -> list[tuple[int, int]]:
    """Label offsets in points: neighbours (close in both axes, relative to the data range) are stacked
    upwards one line each instead of printed over each other."""
    if not xy:
        return []
    xs, ys = [x for x, _ in xy], [y for _, y in xy]
    dx, dy = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    out: list[tuple[int, int]] = []
    for i, (x, y) in enumerate(xy):
        near = sum(1 for j in range(i) if abs(xy[j][0] - x) < 0.08 * dx and abs(xy[j][1] - y) < 0.08 * dy)
        out.append((8, 8 + 12 * near))
    return out
