"""
The simulator's chart: cumulative spend over time, with and without budgets (a PNG).

One panel per pattern (spend from the provider's log against seconds since the run began;
the budget as a dashed line), and a last panel that puts every pattern on one scale:
spend as a multiple of its budget. Drawn with matplotlib's Agg backend, so it works on a
machine with no display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from .model import ScenarioResult, Variant, fmt

__all__ = ["write_chart"]

_RED: Final = "#c0392b"
_GREEN: Final = "#1e8449"
_GREY: Final = "#555555"
#: spend ratios below this are drawn at it on the log scale (and labelled with the truth)
_FLOOR: Final = 0.01


def _series(v: Variant) -> tuple[list[float], list[float]]:
    return [t for t, _ in v.timeline], [float(s) for _, s in v.timeline]


def _plain(text: str) -> str:
    """Text with its dollar signs escaped (matplotlib reads ``$...$`` as mathtext)."""
    return text.replace("$", r"\$")


_BOX: Final = {
    "boxstyle": "round,pad=0.2",
    "facecolor": "white",
    "edgecolor": "none",
    "alpha": 0.85,
}


def _panel(ax: object, r: ScenarioResult) -> None:
    from matplotlib.axes import Axes

    assert isinstance(ax, Axes)
    without_label = "no budgets" if r.without.mode == "no budgets" else r.without.mode
    for v, color, label in (
        (r.without, _RED, without_label),
        (r.budgeted, _GREEN, "execbudget"),
    ):
        xs, ys = _series(v)
        ax.step(xs, ys, where="post", color=color, linewidth=2, label=label)
        if v.requests == 0:
            ax.annotate(
                "refused before the first call: nothing spent",
                (0, 0),
                textcoords="offset points",
                xytext=(8, 10),
                fontsize=8,
                color=color,
                bbox=_BOX,
            )
        if v.capped:
            ax.plot(xs[-1], ys[-1], marker="x", color=color, markersize=9, mew=2)
            ax.annotate(
                "safety cap",
                (xs[-1], ys[-1]),
                textcoords="offset points",
                xytext=(-8, 6),
                ha="right",
                va="bottom",
                fontsize=8,
                color=color,
                bbox=_BOX,
            )
    ax.axhline(float(r.budget), color=_GREY, linestyle="--", linewidth=1.2, label="budget")
    ax.set_title(_plain(f"{r.title}\nbudget {r.budget_label}"), fontsize=10)
    ax.set_xlabel("seconds since the run began", fontsize=8)
    ax.set_ylabel(
        "cumulative spend (USD)" if r.unit == "USD" else f"cumulative {r.unit}", fontsize=8
    )
    ax.tick_params(labelsize=8)
    top = max(float(r.budget), *(float(v.spend) for v in (r.without, r.budgeted)))
    ax.set_ylim(0, top * 1.15)  # headroom for the labels above the end of a line
    ax.set_xlim(left=0)
    ax.grid(alpha=0.25)
    ax.legend(fontsize=8, loc="upper left")
    over = r.overshoot(r.budgeted)
    ax.text(
        0.98,
        0.14,
        _plain(f"overshoot with execbudget: {fmt(over, r.unit) if over else 0}"),
        transform=ax.transAxes,
        ha="right",
        fontsize=8,
        color=_GREEN if r.contained else _RED,
        bbox=_BOX,
    )


def _summary(ax: object, results: list[ScenarioResult]) -> None:
    from matplotlib.axes import Axes

    assert isinstance(ax, Axes)
    names = [r.title for r in results]
    rows = range(len(results))
    for offset, attr, color, label in (
        (-0.2, "without", _RED, "without budgets / platform cap only"),
        (0.2, "budgeted", _GREEN, "execbudget"),
    ):
        ratios = []
        for r in results:
            v: Variant = getattr(r, attr)
            ratios.append(float(v.spend / r.budget) if r.budget else 0.0)
        shown = [max(x, _FLOOR) for x in ratios]
        ax.barh([i + offset for i in rows], shown, height=0.38, color=color, label=label)
        for i, (x, true) in enumerate(zip(shown, ratios, strict=True)):
            capped = getattr(results[i], attr).capped
            ax.text(
                x * 1.08, i + offset, f"{'≥' if capped else ''}{true:.2g}×", va="center", fontsize=8
            )
    ax.axvline(1.0, color=_GREY, linestyle="--", linewidth=1.2)
    ax.set_xscale("log")
    ax.set_xlim(_FLOOR, max(10.0, max(float(r.without.spend / r.budget) for r in results) * 4))
    ax.set_yticks(list(rows), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_title("spend as a multiple of the budget\n(dashed: the budget)", fontsize=10)
    ax.tick_params(labelsize=8)
    ax.grid(axis="x", alpha=0.25)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)


def write_chart(results: list[ScenarioResult], path: str | Path) -> Path:
    """Draw the results to ``path`` (PNG unless the suffix says otherwise); returns it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    panels = len(results) + 1
    cols = 3 if panels > 2 else panels
    rows = -(-panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.3 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax, result in zip(flat, results, strict=False):
        _panel(ax, result)
    _summary(flat[len(results)], results)
    for ax in flat[panels:]:
        ax.set_visible(False)
    fig.suptitle(
        "execbudget: cumulative spend with and without budgets (spend from the provider's log)",
        fontsize=12,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
