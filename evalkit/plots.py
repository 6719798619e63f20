"""Figures. Every function takes ``ax=`` (a new one is made when None) and returns it;
nothing here calls ``plt.show()``."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

ARM_COLORS = {"self_help": "#1b7837", "control": "#762a83"}
ARM_LABELS = {"self_help": "Self-help referral", "control": "Comparison"}
OUTCOME_LABELS = {
    "er_visits": "ER visits",
    "outpatient_mh_visits": "Outpatient mental-health visits",
    "inpatient_days": "Inpatient days",
}


def rate_plot(rates: pd.DataFrame, outcomes: list[str] | None = None, by: str = "period",
              axes=None):
    """Rates per 1,000 member-months with 95% CIs, by arm and period, one panel per outcome.

    ``rates`` is the first table returned by :func:`evalkit.describe.rates`.
    Returns the array of axes.
    """
    outcomes = outcomes or list(dict.fromkeys(rates["outcome"]))
    if axes is None:
        _, axes = plt.subplots(1, len(outcomes), figsize=(4.2 * len(outcomes), 3.6), squeeze=False)
        axes = axes[0]
    levels = list(dict.fromkeys(rates[by])) if by in rates else [None]
    width = 0.38
    for ax, outcome in zip(axes, outcomes):
        sub = rates[rates["outcome"] == outcome]
        x = np.arange(len(levels))
        for k, arm in enumerate(("self_help", "control")):
            s = sub[sub["arm"] == arm].set_index(by).reindex(levels) if by in sub else sub[sub["arm"] == arm]
            y = s["rate"].to_numpy()
            err = np.vstack([y - s["ci_low"].to_numpy(), s["ci_high"].to_numpy() - y])
            ax.bar(x + (k - 0.5) * width, y, width, yerr=err, capsize=3,
                   color=ARM_COLORS[arm], label=ARM_LABELS[arm], alpha=0.85)
        ax.set_xticks(x, [str(lv).replace("followup", "follow-up") for lv in levels])
        ax.set_title(OUTCOME_LABELS.get(outcome, outcome), fontsize=10)
        ax.set_ylabel("per 1,000 member-months")
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].legend(frameon=False, fontsize=8)
    return axes


def attrition_plot(attrition: pd.DataFrame, ax=None):
    """Horizontal bars of members kept at each cohort step, by arm."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.6 + 0.55 * len(attrition)))
    y = np.arange(len(attrition))[::-1]
    left = np.zeros(len(attrition))
    for arm in ("self_help", "control"):
        counts = attrition[f"{arm}_members"]
        ax.barh(y, counts, left=left, color=ARM_COLORS[arm], label=ARM_LABELS[arm])
        left = left + counts.to_numpy()
    ax.set_yticks(y, attrition["step"])
    ax.set_xlabel("members")
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def methods_plot(comparison: pd.DataFrame, ax=None):
    """Ratio estimates with 95% CIs by outcome and method (log scale), with the true
    ratio marked when the data are synthetic."""
    outcomes = list(dict.fromkeys(comparison["outcome"]))
    methods = list(dict.fromkeys(comparison["method"]))
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 0.9 + 0.45 * len(outcomes) * len(methods)))
    colors = plt.get_cmap("tab10").colors
    y = 0
    ticks, labels = [], []
    for o in outcomes:
        sub = comparison[comparison["outcome"] == o]
        for k, m in enumerate(methods):
            r = sub[sub["method"] == m]
            if r.empty:
                continue
            r = r.iloc[0]
            ax.errorbar(r["ratio"], y, xerr=[[r["ratio"] - r["ci_low"]], [r["ci_high"] - r["ratio"]]],
                        fmt="o", color=colors[k % 10], capsize=3,
                        label=m if o == outcomes[0] else None)
            y -= 1
        if "true_ratio" in sub and pd.notna(sub["true_ratio"].iloc[0]):
            ax.plot([sub["true_ratio"].iloc[0]] * 2, [y + 0.6, y + len(methods) + 0.4], color="k",
                    ls=":", lw=1.5, label="true effect" if o == outcomes[0] else None)
        ticks.append(y + (len(methods) + 1) / 2)
        labels.append(OUTCOME_LABELS.get(o, o.replace("_", " ")))
        y -= 0.8
    ax.axvline(1.0, color="grey", lw=0.8)
    ax.set_xscale("log")
    lo = min(comparison["ci_low"].min(), comparison.get("true_ratio", comparison["ci_low"]).min())
    hi = max(comparison["ci_high"].max(), 1.0)
    grid = [v for v in (0.25, 0.33, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0)
            if lo * 0.9 <= v <= hi * 1.1]
    ax.set_xticks(grid, [f"{v:g}" for v in grid])
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.set_yticks(ticks, labels)
    ax.set_xlabel("ratio, self-help vs comparison (log scale; < 1 means less care)")
    ax.legend(frameon=False, fontsize=8, loc="best")
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def cost_distribution_plot(frame: pd.DataFrame, outcome: str = "total_cost", ax=None):
    """Distribution of follow-up cost per member by arm (log dollar axis; zeros noted)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.6))
    positive = frame[frame[outcome] > 0]
    bins = np.logspace(np.log10(max(positive[outcome].min(), 1.0)),
                       np.log10(positive[outcome].max()), 40)
    for arm in ("self_help", "control"):
        g = frame[frame["group"] == arm]
        x = g.loc[g[outcome] > 0, outcome]
        share_zero = (g[outcome] == 0).mean()
        ax.hist(x, bins=bins, weights=np.full(len(x), 100.0 / len(g)), histtype="step", lw=1.8,
                color=ARM_COLORS[arm], label=f"{ARM_LABELS[arm]} ({share_zero:.0%} with no cost)")
    ax.set_xscale("log")
    ax.set_xlabel("follow-up cost per member, dollars (members with any cost; log scale)")
    ax.set_ylabel("% of the group's members")
    ax.legend(frameon=False, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def net_savings_plot(draws, ax=None):
    """Distribution of simulated net savings per referred member, the break-even line,
    and the share of draws in which the program saves money."""
    x = np.asarray(draws, dtype=float)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.4))
    ax.hist(x, bins=60, color="#4d9221", alpha=0.8)
    ax.axvline(0, color="k", lw=1)
    share = float((x > 0).mean())
    ax.set_title(f"Program saves money in {share:.0%} of simulations", fontsize=10)
    ax.set_xlabel("net savings per referred member, dollars (negative = net cost)")
    ax.set_ylabel("simulations")
    ax.spines[["top", "right"]].set_visible(False)
    return ax
