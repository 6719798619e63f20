"""Charts of member-level distributions draw no small cell: the cost histogram.

The frame is made here with known counts, so which bins must be hidden is known without
evalkit: a bin of 3 members in one arm (below min_cell = 11) is not drawn, and neither is
the arm's next smallest bin (else the arm's total less the bins shown gives it back);
bins of 11 or more members are drawn with their share of the arm.
"""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from evalkit.analysis import plots


def _frame():
    # self_help: 40 members at $150, 3 at $5,000, 20 at $50,000 (and 12 with no cost);
    # control: 60 at $150 and 30 at $5,000 (and 2 with no cost: a small share)
    rows = ([("self_help", 150.0)] * 40 + [("self_help", 5000.0)] * 3
            + [("self_help", 50000.0)] * 20 + [("self_help", 0.0)] * 12
            + [("control", 150.0)] * 60 + [("control", 5000.0)] * 30 + [("control", 0.0)] * 2)
    return pd.DataFrame(rows, columns=["group", "total_cost"])


def _drawn(ax) -> dict:
    """Per arm's legend label, the height drawn over each bin (NaN: not drawn); an arm's
    outline is one stairs per run of bins shown, the first carrying the label."""
    edges = np.unique(np.concatenate([p.get_data().edges for p in ax.patches]))
    out, label = {}, None
    for p in ax.patches:
        own = p.get_label()
        label = own if own and not own.startswith("_") else label
        heights = out.setdefault(label, np.full(len(edges) - 1, np.nan))
        e = p.get_data().edges
        start = int(np.searchsorted(edges, e[0]))
        heights[start:start + len(e) - 1] = p.get_data().values
    return out


def test_cost_histogram_hides_small_bins_and_their_complement():
    ax = plots.cost_distribution_plot(_frame(), min_cell=11)
    got = _drawn(ax)
    sh = next(v for k, v in got.items() if k.startswith("Self-help referral"))
    co = next(v for k, v in got.items() if k.startswith("Comparison"))
    # self-help: the 3-member bin and the next smallest (20 members) are hidden; 40 of
    # 63 members with any cost are in the one bin left
    assert np.count_nonzero(np.isnan(sh)) == 2
    assert sorted(np.round(sh[np.isfinite(sh) & (sh > 0)], 6)) == [round(100 * 40 / 63, 6)]
    assert np.count_nonzero(np.isnan(co)) == 0
    assert sorted(np.round(co[co > 0], 6)) == [round(100 * 30 / 90, 6), round(100 * 60 / 90, 6)]
    labels = list(got)
    assert "Self-help referral (16% with no cost)" in labels
    assert "Comparison (share with no cost not shown)" in labels
    notes = [t.get_text() for t in ax.texts]
    assert any("fewer than 11 members is not drawn (2 not drawn)" in t for t in notes)
    # the bin edges are powers of ten apart, not any member's cost
    edges = np.unique(np.concatenate([p.get_data().edges for p in ax.patches]))
    assert edges[0] == pytest.approx(100.0) and edges[-1] == pytest.approx(100000.0)
    plt.close("all")


def test_without_min_cell_every_bin_is_drawn():
    ax = plots.cost_distribution_plot(_frame())
    assert all(np.isfinite(v).all() for v in _drawn(ax).values())
    assert not ax.texts
    plt.close("all")
