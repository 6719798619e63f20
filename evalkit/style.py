"""One look for every figure: the theme, the arm colours and readable ratio axes.

Kept below the statistics (with the other cross-cutting pieces) so that the plots drawn
by :mod:`evalkit.causal` (love plot, calibration funnel) and by :mod:`evalkit.analysis`
(:mod:`evalkit.analysis.plots`, the negative-control forest plot) and the brief's charts
share it. :func:`theme` is seaborn's ``ticks`` style with a colour-blind-safe palette
whose two arm colours both stand out on white; ratio axes are logarithmic with ticks
people read (0.8, 0.9, 1, 1.25: :func:`ratio_axis`).
"""
from __future__ import annotations

import seaborn as sns
from matplotlib import ticker

#: Arm colours: Okabe-Ito blue and vermilion (told apart with any colour vision, each
#: with a contrast of at least 3:1 on white).
ARM_COLORS = {"self_help": "#0072b2", "control": "#d55e00"}
#: A point that passes a check (the first arm's blue) and one that fails it (the second
#: arm's vermilion); reference lines and "before" marks in grey.
PASS_COLOR, FAIL_COLOR, MUTED_COLOR = ARM_COLORS["self_help"], ARM_COLORS["control"], "#6e6e6e"
#: Ratio ticks, coarse to fine: the finest set that keeps a log axis uncrowded is used.
RATIO_TICKS = ((0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 10.0),
               (0.1, 0.25, 0.33, 0.5, 0.67, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 10.0),
               (0.1, 0.25, 0.33, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 4.0,
                10.0))


def theme() -> None:
    """Apply evalkit's figure theme (matplotlib's rc settings, through seaborn): the
    workbooks call it in their first cell and the brief before drawing its charts."""
    sns.set_theme(context="notebook", style="ticks", font="DejaVu Sans",
                  palette=[ARM_COLORS["self_help"], ARM_COLORS["control"],
                           *sns.color_palette("colorblind")[2:]],
                  rc={"axes.spines.top": False, "axes.spines.right": False,
                      "axes.titlesize": 11, "axes.labelsize": 10, "xtick.labelsize": 9,
                      "ytick.labelsize": 9, "legend.fontsize": 9, "legend.frameon": False,
                      "figure.dpi": 100, "savefig.bbox": "tight"})


def ratio_axis(ax, axis: str = "x", max_ticks: int = 8):
    """Log-scale ratio ticks people read (``0.8, 0.9, 1, 1.25``; never ``8x10^-1``) on
    ``ax``'s ``axis`` ("x" or "y"), from the finest of :data:`RATIO_TICKS` that puts at
    most ``max_ticks`` within the axis limits. Does nothing to a linear axis. Returns ``ax``."""
    which = ax.xaxis if axis == "x" else ax.yaxis
    if which.get_scale() != "log":
        return ax
    lo, hi = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())
    grid = []
    for level in RATIO_TICKS:
        inside = [v for v in level if lo <= v <= hi]
        if len(inside) > max_ticks:
            break
        grid = inside
    if len(grid) < 2:                 # a narrow axis: its ends, rounded
        grid = sorted({float(f"{lo:.2g}"), float(f"{hi:.2g}")})
    which.set_major_locator(ticker.FixedLocator(grid))
    which.set_major_formatter(ticker.FuncFormatter(lambda v, _pos: f"{v:g}"))
    which.set_minor_locator(ticker.LogLocator(subs="all"))
    which.set_minor_formatter(ticker.NullFormatter())
    return ax


def ratio_axes(fig) -> None:
    """:func:`ratio_axis` on both axes of every panel of ``fig`` (log axes only; nothing
    for None)."""
    for ax in getattr(fig, "axes", []):
        ratio_axis(ax, "x")
        ratio_axis(ax, "y")
