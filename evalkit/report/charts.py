"""Charts for the brief: a dot-and-whisker of ratio estimates and a savings chart.

Each plot function takes ``ax=`` and returns it (nothing is shown); :func:`to_svg`
turns a figure into an inline ``<svg>`` element. Text is kept as SVG ``<text>`` (not
glyph outlines), so the words and numbers in a chart stay readable by a screen reader,
by ``pdftotext`` and by the privacy scan; the font is the system's DejaVu Sans, so
nothing is fetched when the brief is rendered.
"""
from __future__ import annotations

import html
import io
import re

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter

from ..analysis.plots import theme

#: Colours of the brief (also used in the CSS).
INK, ACCENT, MUTED = "#1f2933", "#1b6ca8", "#9aa5b1"


def _axes(ax, size):
    if ax is not None:
        return ax
    matplotlib.use("Agg", force=False)
    theme()
    _, ax = plt.subplots(figsize=size)
    return ax


def ratio_plot(rows: pd.DataFrame, xlabel: str, ax=None):
    """Dot-and-whisker chart of ratio estimates on a log axis, with a line at 1.

    Parameters
    ----------
    rows : DataFrame with columns ``label``, ``estimate``, ``ci_low``, ``ci_high`` (one
        row per estimate, drawn top to bottom in the given order). Rows without an
        interval are drawn as a dot only.
    xlabel : text under the axis (what a value below 1 means).
    ax : matplotlib Axes to draw on; a new figure when None.

    Returns
    -------
    The Axes.
    """
    ax = _axes(ax, (6.4, 0.45 * len(rows) + 1.1))
    y = np.arange(len(rows))[::-1]
    est = rows["estimate"].to_numpy(float)
    lo = pd.to_numeric(rows["ci_low"], errors="coerce").to_numpy(float)
    hi = pd.to_numeric(rows["ci_high"], errors="coerce").to_numpy(float)
    has = np.isfinite(lo) & np.isfinite(hi)
    ax.hlines(y[has], lo[has], hi[has], color=ACCENT, lw=2)
    ax.plot(est, y, "o", color=INK, ms=6, zorder=3)
    ax.axvline(1.0, color=MUTED, lw=1, ls="--", zorder=0)
    ax.set_xscale("log")
    vals = np.concatenate([est, lo[has], hi[has], [1.0]])
    vals = vals[np.isfinite(vals) & (vals > 0)]
    left, right = vals.min() / 1.15, vals.max() * 1.15
    ax.set_xlim(left, right)
    ticks = [t for t in (0.25, 0.33, 0.5, 0.67, 0.75, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0,
                         3.0, 4.0) if left <= t <= right]
    if len(ticks) > 7:
        ticks = [t for t in ticks if t in (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0)]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_yticks(y, list(rows["label"]))
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel(xlabel, fontsize=8.5)
    ax.tick_params(labelsize=8.5)
    ax.spines[["top", "right", "left"]].set_visible(False)
    return ax


def savings_plot(rows: pd.DataFrame, xlabel: str = "$ per referred member", ax=None):
    """Horizontal bars of dollar figures (savings, program cost, net savings) with
    interval whiskers where an interval is known.

    Parameters
    ----------
    rows : DataFrame with ``label``, ``estimate``, ``ci_low``, ``ci_high``.
    xlabel : axis text.
    ax : matplotlib Axes; a new figure when None.

    Returns
    -------
    The Axes.
    """
    ax = _axes(ax, (6.4, 0.5 * len(rows) + 1.1))
    y = np.arange(len(rows))[::-1]
    est = rows["estimate"].to_numpy(float)
    lo = pd.to_numeric(rows["ci_low"], errors="coerce").to_numpy(float)
    hi = pd.to_numeric(rows["ci_high"], errors="coerce").to_numpy(float)
    colors = [ACCENT if v >= 0 else "#c0392b" for v in est]
    ax.barh(y, est, color=colors, height=0.55, alpha=0.85)
    has = np.isfinite(lo) & np.isfinite(hi)
    ax.errorbar(est[has], y[has], xerr=[est[has] - lo[has], hi[has] - est[has]],
                fmt="none", ecolor=INK, elinewidth=1.2, capsize=3)
    ax.axvline(0, color=INK, lw=0.8)
    for yi, v in zip(y, est):
        ax.annotate(f"${v:,.0f}" if v >= 0 else f"-${-v:,.0f}", (0, yi),
                    xytext=(4 if v < 0 else -4, 9), textcoords="offset points",
                    ha="left" if v < 0 else "right", fontsize=8, color=INK)
    ax.set_yticks(y, list(rows["label"]))
    ax.set_xlabel(xlabel, fontsize=8.5)
    ax.tick_params(labelsize=8.5)
    ax.xaxis.set_major_formatter(FuncFormatter(
        lambda v, _: f"${v:,.0f}" if v >= 0 else f"-${-v:,.0f}"))
    ax.spines[["top", "right", "left"]].set_visible(False)
    return ax


def to_svg(ax_or_fig, title: str) -> str:
    """The figure as an inline ``<svg>`` element (no XML prolog, no date, no ids that
    clash between charts), then closed.

    Parameters
    ----------
    ax_or_fig : an Axes or a Figure.
    title : accessible title put in the element's ``aria-label``.
    """

    fig = getattr(ax_or_fig, "figure", ax_or_fig)
    with plt.rc_context({"svg.fonttype": "none", "font.family": "DejaVu Sans",
                         "svg.hashsalt": "evalkit-brief"}):
        buf = io.StringIO()
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    # give the chart a unique prefix on its internal ids (clip paths), so two charts in
    # one HTML page do not refer to each other's definitions
    prefix = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:20] or "chart"
    text = re.sub(r'id="([^"]+)"', rf'id="{prefix}-\1"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", text)
    text = re.sub(r'xlink:href="#([^"]+)"', rf'xlink:href="#{prefix}-\1"', text)
    return text.replace("<svg ", f'<svg role="img" aria-label="{html.escape(title)}" ', 1)
