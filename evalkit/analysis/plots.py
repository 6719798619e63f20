"""Figures. Every function takes ``ax=`` (a new one is made when None) and returns it;
nothing here calls ``plt.show()``."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .spec import CLAIMS_OUTCOMES

ARM_COLORS = {"self_help": "#1b7837", "control": "#762a83"}
ARM_LABELS = {"self_help": "Self-help referral", "control": "Comparison"}
#: the spec's labels of the count outcomes, as chart titles
OUTCOME_LABELS = {n: d.label[:1].upper() + d.label[1:] for n, d in CLAIMS_OUTCOMES.items()
                  if d.kind == "count"}


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


def effects_plot(effects: pd.DataFrame, ax=None, log: bool | None = None):
    """Each study's effect with its 95% CI, one row per study and outcome.

    ``effects`` has ``study, outcome, estimate, ci_low, ci_high`` (e.g.
    :func:`evalkit.analysis.summary.study_effects`, or its ratio rows). Ratios are drawn on a log
    axis with a line at 1 (no difference); differences on a linear axis with a line at 0.
    """
    n = len(effects)
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 0.9 + 0.45 * n))
    if log is None:
        log = bool((effects["estimate"] > 0).all() and "scale" in effects and
                   effects["scale"].isin(["ratio", "rate_ratio", "odds_ratio"]).all())
    y = np.arange(n)[::-1]
    est = effects["estimate"].to_numpy(float)
    lo, hi = effects["ci_low"].to_numpy(float), effects["ci_high"].to_numpy(float)
    ax.errorbar(est, y, xerr=[est - lo, hi - est], fmt="s", color="black", capsize=3)
    ax.axvline(1.0 if log else 0.0, color="grey", ls="--", lw=0.8)
    if log:
        ax.set_xscale("log")
        grid = [v for v in (0.25, 0.33, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0)
                if min(lo.min(), 1) * 0.9 <= v <= max(hi.max(), 1) * 1.1]
        ax.set_xticks(grid, [f"{v:g}" for v in grid])
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
    names = [OUTCOME_LABELS.get(o, o.replace("_", " ")) for o in effects["outcome"]]
    labels = [f"{o[:1].upper()}{o[1:]}\n{s}" for o, s in zip(names, effects["study"])]
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("ratio, self-help vs comparison (log scale; < 1 means less)" if log
                  else "difference, self-help minus comparison")
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def projection_plot(table: pd.DataFrame, axes=None):
    """Expected yearly change in a target plan with 95% intervals, one panel per outcome
    (units differ: visits, days, dollars). ``table`` is :attr:`evalkit.analysis.summary.Projection.table`.
    Returns the array of axes."""
    k = len(table)
    made = axes is None
    if made:
        _, axes = plt.subplots(1, k, figsize=(4.2 * k, 3.4), squeeze=False)
        axes = axes[0]
    for ax, r in zip(axes, table.itertuples(index=False)):
        color = ARM_COLORS["self_help"] if r.expected_change < 0 else ARM_COLORS["control"]
        ax.bar([0], [r.expected_change], width=0.5, color=color, alpha=0.85,
               yerr=[[r.expected_change - r.ci_low], [r.ci_high - r.expected_change]], capsize=6)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks([])
        ax.set_title(r.label, fontsize=10)
        ax.set_ylabel(f"change per year, {r.unit}")
        if r.unit == "dollars":
            ax.yaxis.set_major_formatter(plt.FuncFormatter(_dollars))
        ax.spines[["top", "right"]].set_visible(False)
    if made:
        axes[0].figure.tight_layout()
    return axes


def _dollars(v, _pos=None) -> str:
    sign = "-" if v < 0 else ""
    v = abs(v)
    if v >= 1e6:
        return f"{sign}${v / 1e6:,.1f}M"
    if v >= 1e4:
        return f"{sign}${v / 1e3:,.0f}k"
    return f"{sign}${v:,.0f}"


def proportions_plot(table: pd.DataFrame, ax=None):
    """Survey proportions (percent) with their intervals, one row per item.

    ``table`` has ``label, proportion, ci_low, ci_high`` and optionally ``group``
    (:func:`evalkit.analysis.summary.survey_proportions`); rows whose figures were suppressed
    (text instead of numbers) are left out of the chart."""
    t = table[pd.to_numeric(table["proportion"], errors="coerce").notna()]
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 0.9 + 0.5 * max(len(t), 1)))
    y = np.arange(len(t))[::-1]
    p = 100 * t["proportion"].to_numpy(float)
    lo, hi = 100 * t["ci_low"].to_numpy(float), 100 * t["ci_high"].to_numpy(float)
    ax.errorbar(p, y, xerr=[p - lo, hi - p], fmt="o", color=ARM_COLORS["self_help"], capsize=4)
    for yi, pi in zip(y, p):
        ax.annotate(f"{pi:.0f}%", (pi, yi), textcoords="offset points", xytext=(0, 7),
                    ha="center", fontsize=8)
    ax.set_yticks(y, list(t["label"]), fontsize=8)
    ax.set_xlim(0, 100)
    ax.set_xlabel("percent (95% interval)")
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def sd_sensitivity_plot(table: pd.DataFrame, ax=None):
    """Each outcome's result (with its 95% interval) as the assumed SDs are scaled.
    ``table`` is :func:`evalkit.analysis.summary.sd_sensitivity`."""
    outcomes = list(dict.fromkeys(table["outcome"]))
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.4))
    colors = plt.get_cmap("tab10").colors
    for i, o in enumerate(outcomes):
        s = table[table["outcome"] == o]
        x = s["sd_factor"].to_numpy(float) * (1 + 0.03 * (i - (len(outcomes) - 1) / 2))
        e = s["estimate"].to_numpy(float)
        ax.errorbar(x, e, yerr=[e - s["ci_low"].to_numpy(float), s["ci_high"].to_numpy(float) - e],
                    fmt="o-", capsize=3, color=colors[i % 10],
                    label=OUTCOME_LABELS.get(o, o.replace("_", " ").capitalize()))
    ratio = "measure" not in table or table["measure"].isin(["RR", "OR", "IRR", "ROM"]).all()
    ax.axhline(1.0 if ratio else 0.0, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("assumed SD x factor (1 = as in the params)")
    ax.set_ylabel("effect (95% interval)")
    ax.legend(frameon=False, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def nmb_plot(curve: pd.DataFrame, ax=None):
    """Net monetary benefit per referred member against willingness to pay per ER visit
    averted: the line at the estimates and the 95% band of the PSA draws.

    ``curve`` is :meth:`evalkit.analysis.valuation.Valuation.nmb_curve`. Above zero the programme
    is worth its cost at that price of an ER visit averted.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.8))
    ax.fill_between(curve["wtp"], curve["nmb_ci_low"], curve["nmb_ci_high"], color="#92c5de",
                    alpha=0.5, label="95% of simulations")
    ax.plot(curve["wtp"], curve["nmb"], color="#2166ac", lw=2, label="at the estimates")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("value the plan puts on one ER visit averted ($)")
    ax.set_ylabel("net monetary benefit per referred member ($)")
    ax.legend(frameon=False, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def budget_impact_plot(budget, ax=None):
    """Net budget impact per year (bars, base case) with the low-high scenario range
    (error bars); below zero the plan spends less than without the programme.

    ``budget`` is an :class:`evalkit.econ.BudgetImpactResult`.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.6))
    t, r = budget.table, budget.ranges
    y = t["net_budget_impact"].to_numpy() / 1000.0
    err = np.vstack([y - r["net_low"].to_numpy() / 1000.0, r["net_high"].to_numpy() / 1000.0 - y])
    ax.bar(t["year"], y, yerr=err, capsize=4, color=np.where(y < 0, "#1b7837", "#b2182b"),
           alpha=0.85)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(t["year"], [f"year {int(v)}" for v in t["year"]])
    ax.set_ylabel("net budget impact ($ thousands)\nbelow 0 = the plan saves")
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def power_curve_plot(result, ax=None):
    """Power to detect the planned drop against members per arm, with the target power,
    the members available and the members needed marked.

    ``result`` is an :class:`evalkit.analysis.planning.PlanningResult`.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.8))
    c = result.curve
    ax.plot(c["n_control"], c["power"], color="#2166ac", lw=2)
    ax.axhline(result.target_power, color="grey", ls="--", lw=0.8,
               label=f"target power {result.target_power:.0%}")
    ax.axvline(result.members_per_arm, color="#1b7837", lw=1,
               label=f"available: {result.members_per_arm:,} per arm ({result.power:.0%} power)")
    ax.axvline(result.sample_size.n_per_arm, color="#b2182b", ls=":", lw=1.2,
               label=f"needed: {result.sample_size.n_per_arm:,} per arm")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("comparison members (per arm)")
    ax.set_ylabel(f"power to detect a {result.relative_reduction:.0%} drop")
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def group_summary_plot(describe: pd.DataFrame, outcome: str, ax=None, label: str | None = None):
    """Mean (dot) and median (diamond) of one outcome per group, each with its 95% CI.

    ``describe`` is :attr:`evalkit.analysis.comparisons.GroupComparison.describe`. Only summaries
    are drawn, never single units: for group-level data a single group's size is a count
    of people, which may be below the small-cell limit. Groups whose summaries were
    blanked by suppression are left empty.
    """
    sub = describe[describe["outcome"] == outcome].reset_index(drop=True)
    if ax is None:
        _, ax = plt.subplots(figsize=(5.2, 0.9 + 0.6 * len(sub)))
    y = np.arange(len(sub))[::-1]
    for kind, marker, shift, color in (("mean", "o", 0.12, "#1b7837"),
                                       ("median", "D", -0.12, "#762a83")):
        est = sub[kind].to_numpy(float)
        low = sub[f"{kind}_ci_low"].to_numpy(float)
        high = sub[f"{kind}_ci_high"].to_numpy(float)
        err = np.vstack([np.where(np.isnan(low), 0, est - low), np.where(np.isnan(high), 0, high - est)])
        ax.errorbar(est, y + shift, xerr=err, fmt=marker, color=color, capsize=3, label=kind)
    ax.set_yticks(y, [f"{g} ({n} units)" for g, n in zip(sub["group"], sub["units"])])
    ax.set_xlabel(label or outcome.replace("_", " "))
    ax.legend(frameon=False, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return ax
