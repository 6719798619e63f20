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
        ax.barh(y, attrition[arm], left=left, color=ARM_COLORS[arm], label=ARM_LABELS[arm])
        left = left + attrition[arm].to_numpy()
    ax.set_yticks(y, attrition["step"])
    ax.set_xlabel("members")
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    ax.spines[["top", "right"]].set_visible(False)
    return ax
