"""Figures. Every function takes ``ax=`` (a new one is made when None) and returns it;
nothing here calls ``plt.show()``.

One look for every figure, in the workbooks and in the brief: :func:`evalkit.style.theme`
(seaborn's ``ticks`` style, a colour-blind-safe palette whose two arm colours both stand
out on white, no top or right spines, legends without frames), kept in
:mod:`evalkit.style` so the statistics' own plots (love plot, calibration funnel) share
it. Ratio axes are logarithmic with ticks people read (0.8, 0.9, 1, 1.25:
:func:`evalkit.style.ratio_axis`).
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import ticker

from ..style import ARM_COLORS, RATIO_TICKS, ratio_axes, ratio_axis, theme
from .spec import CLAIMS_ARMS, outcome_title

__all__ = ["ARM_COLORS", "RATIO_TICKS", "ratio_axes", "ratio_axis", "theme"]

ARM_LABELS = {"self_help": "Self-help referral", "control": "Comparison"}


def arm_labels(spec=None) -> dict:
    """The arms as a chart's legend names them: the study's intervention and comparison
    from ``spec`` (the run's analysis spec), :data:`ARM_LABELS` for the claims default
    arms or without a spec."""
    if spec is None or (spec.study.intervention, spec.study.comparison) == CLAIMS_ARMS:
        return dict(ARM_LABELS)
    return {arm: text[:1].upper() + text[1:] for arm, text in
            (("self_help", spec.study.intervention), ("control", spec.study.comparison))}


def _legend_above(ax, ncol: int = 2) -> None:
    """The legend above the plotting area, where it covers no data."""
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.02), ncol=ncol, frameon=False,
              borderaxespad=0)


def rate_plot(rates: pd.DataFrame, outcomes: list[str] | None = None, by: str = "period",
              axes=None, spec=None):
    """Rates per 1,000 member-months with 95% CIs, by arm and period, one panel per outcome.

    ``rates`` is the first table returned by :func:`evalkit.describe.rates`; panels are
    titled with the labels of ``spec`` (the run's analysis spec; else the built-in ones).
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
                   color=ARM_COLORS[arm], label=arm_labels(spec)[arm], alpha=0.85)
        ax.set_xticks(x, [str(lv).replace("followup", "follow-up") for lv in levels])
        ax.set_title(outcome_title(outcome, spec), fontsize=10)
        ax.set_ylabel("per 1,000 member-months")
        ax.spines[["top", "right"]].set_visible(False)
    # one legend for all panels, above them (clear of the panel titles and the bars)
    axes[0].figure.legend(*axes[0].get_legend_handles_labels(), loc="lower center",
                          bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    return axes


def attrition_plot(attrition: pd.DataFrame, ax=None, spec=None):
    """Horizontal bars of members kept at each cohort step, by arm. A count hidden in a
    public run (NaN: a small cell, :func:`evalkit.analysis.study.public_attrition`) is
    not drawn, and a note under the axis says so."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.6 + 0.55 * len(attrition)))
    y = np.arange(len(attrition))[::-1]
    left = np.zeros(len(attrition))
    hidden = False
    for arm in ("self_help", "control"):
        counts = attrition[f"{arm}_members"].astype(float)
        hidden |= bool(counts.isna().any())
        ax.barh(y, counts, left=left, color=ARM_COLORS[arm], label=arm_labels(spec)[arm])
        left = left + counts.fillna(0).to_numpy()
    if hidden:
        ax.text(0, -0.5 / len(attrition) - 0.25, "A count hidden to protect a small number "
                "of members is not drawn.", transform=ax.transAxes, fontsize=8, va="top")
    ax.set_yticks(y, attrition["step"])
    ax.set_xlabel("members")
    ax.xaxis.set_major_formatter(ticker.StrMethodFormatter("{x:,.0f}"))
    _legend_above(ax)
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def methods_plot(comparison: pd.DataFrame, ax=None, spec=None):
    """Ratio estimates with 95% CIs by outcome and method (log scale), with the true
    ratio marked when the data are synthetic; outcomes named by ``spec``'s labels."""
    outcomes = list(dict.fromkeys(comparison["outcome"]))
    methods = list(dict.fromkeys(comparison["method"]))
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 0.9 + 0.45 * len(outcomes) * len(methods)))
    colors = sns.color_palette("colorblind")
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
                        fmt="o", color=colors[k % len(colors)], capsize=3,
                        label=m if o == outcomes[0] else None)
            y -= 1
        if "true_ratio" in sub and pd.notna(sub["true_ratio"].iloc[0]):
            ax.plot([sub["true_ratio"].iloc[0]] * 2, [y + 0.6, y + len(methods) + 0.4], color="k",
                    ls=":", lw=1.5, label="true effect" if o == outcomes[0] else None)
        ticks.append(y + (len(methods) + 1) / 2)
        labels.append(outcome_title(o, spec))
        y -= 0.8
    ax.axvline(1.0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ratio_axis(ax)
    ax.set_yticks(ticks, labels)
    ax.set_xlabel("ratio, self-help vs comparison (log scale; < 1 means less care)")
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def _hide_small(counts: np.ndarray, min_cell: int | None) -> np.ndarray:
    """Which of one arm's bin counts not to draw: those of 1 to ``min_cell`` - 1 members
    and, when just one bin is hidden, the next smallest non-empty bin too (else the arm's
    total, less the bins shown, would give the hidden one back)."""
    hide = (counts > 0) & (counts < (min_cell or 0))
    if hide.sum() == 1:
        rest = np.where((counts > 0) & ~hide)[0]
        if rest.size:
            hide[rest[np.argmin(counts[rest])]] = True
    return hide


def cost_distribution_plot(frame: pd.DataFrame, outcome: str = "total_cost", ax=None,
                           min_cell: int | None = None, bins: int = 40, spec=None):
    """Distribution of follow-up cost per member by arm (log dollar axis; zeros noted).

    Each arm's members with any cost are counted in ``bins`` bins of equal width on the
    log axis, between powers of ten (so the edges say nothing of any one member's cost),
    and drawn as the share of the arm's members with any cost. A bin standing for fewer
    than ``min_cell`` members is not drawn (with, when it is an arm's only one, the next
    smallest, so the total does not give it back), nor a share with no cost resting on so
    few; a note under the axis says so.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.6))
    cost = frame[outcome].to_numpy(dtype=float)
    positive = cost[cost > 0]
    lo, hi = (np.floor(np.log10(positive.min())), np.ceil(np.log10(positive.max()))) \
        if positive.size else (0.0, 1.0)
    edges = np.logspace(lo, max(hi, lo + 1), bins + 1)
    hidden = 0
    for arm, name in arm_labels(spec).items():
        mine = cost[(frame["group"] == arm).to_numpy()]
        zero = int((mine == 0).sum())
        counts, _ = np.histogram(mine[mine > 0], bins=edges)
        hide = _hide_small(counts, min_cell)
        hidden += int(hide.sum())
        share = np.where(hide, np.nan, 100 * counts / max(counts.sum(), 1))
        small_zero = min_cell and 0 < zero < min_cell
        note = "share with no cost not shown" if small_zero else \
            f"{zero / max(len(mine), 1):.0%} with no cost"
        # one outline per run of bins shown, so a hidden bin is a gap, not a zero
        shown = np.flatnonzero(~hide)
        runs = np.split(shown, np.flatnonzero(np.diff(shown) > 1) + 1) if shown.size else []
        for k, run in enumerate(runs):
            ax.stairs(share[run], edges[run[0]:run[-1] + 2], color=ARM_COLORS[arm],
                      linewidth=1.8, label=f"{name} ({note})" if k == 0 else None)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(_dollars))
    ax.set_xlabel("follow-up cost per member (members with any cost; log scale)")
    ax.set_ylabel("% of the arm's members with any cost")
    if min_cell:
        ax.text(0, -0.28, f"A bin standing for fewer than {min_cell} members is not drawn"
                + (f" ({hidden} not drawn)." if hidden else "."), transform=ax.transAxes,
                fontsize=8, va="top")
    _legend_above(ax)
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def visits_distribution_plot(frame: pd.DataFrame, outcomes: list[str], axes=None,
                             spec=None, min_cell: int | None = None):
    """Distribution of follow-up visits (or days) per member by arm, one panel per count
    outcome: the share of each arm's members with 0, 1, 2, ... (the long tail pooled in
    the last bar, at the 99th percentile or 10, whichever is smaller), titled with ``spec``'s
    labels. A bar
    standing for fewer than ``min_cell`` members is not drawn (the axis says so), so the
    chart shows no small cell. Returns the axes."""
    if axes is None:
        _, axes = plt.subplots(1, len(outcomes), figsize=(4.2 * len(outcomes), 3.4),
                               squeeze=False)
        axes = axes[0]
    labels = arm_labels(spec)
    names = {labels[a]: c for a, c in ARM_COLORS.items()}
    for ax, outcome in zip(axes, outcomes):
        top = min(max(int(np.ceil(frame[outcome].quantile(0.99))), 1), 10)
        value = frame[outcome].clip(upper=top).round().astype(int)
        counts = pd.crosstab(value, frame["group"]).reindex(columns=list(ARM_LABELS), fill_value=0)
        share = 100 * counts / counts.sum()
        if min_cell:
            share = share.where(counts >= min_cell)
        long = (share.rename(columns=labels).rename_axis(index="value", columns="arm")
                .reset_index().melt(id_vars="value", var_name="arm", value_name="percent"))
        sns.barplot(long, x="value", y="percent", hue="arm", hue_order=list(names),
                    palette=names, ax=ax, legend=ax is axes[0])
        ticks = [t.get_text() for t in ax.get_xticklabels()]
        ax.set_xticks(range(len(ticks)), [f"{t}+" if t == str(top) else t for t in ticks])
        ax.set_title(outcome_title(outcome, spec))
        ax.set_xlabel("per member in follow-up")
        ax.set_ylabel("% of the arm's members")
    hidden = f"; a bar standing for fewer than {min_cell} members is not drawn" if min_cell else ""
    axes[0].figure.text(0.5, -0.07, f"The last bar of each panel (marked +) pools that many or "
                        f"more{hidden}.", ha="center", va="top", fontsize=9)
    sns.move_legend(axes[0], "lower left", bbox_to_anchor=(0, 1.1), ncol=2, title=None,
                    frameon=False)
    return axes


def net_savings_plot(draws, ax=None, per: str = "per referred member"):
    """Distribution of simulated net savings per treated unit, the break-even line, and
    the share of draws in which the program saves money. ``per`` names the unit
    (``Valuation.words.per_member``: 'per referred member', 'per patient treated in ...')."""
    x = np.asarray(draws, dtype=float)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.4))
    ax.hist(x, bins=60, color="#4d9221", alpha=0.8)
    ax.axvline(0, color="k", lw=1)
    share = float((x > 0).mean())
    ax.set_title(f"Program saves money in {share:.0%} of simulations", fontsize=10)
    ax.set_xlabel(f"net savings {per}, dollars (negative = net cost)")
    ax.set_ylabel("simulations")
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def effects_plot(effects: pd.DataFrame, ax=None, log: bool | None = None, spec=None):
    """Each study's effect with its 95% CI, one row per study and outcome.

    ``effects`` has ``study, outcome, estimate, ci_low, ci_high`` (e.g.
    :func:`evalkit.analysis.summary.study_effects`, or its ratio rows). Ratios are drawn on a log
    axis with a line at 1 (no difference); differences on a linear axis with a line at 0.
    Outcomes are named by ``spec``'s labels.
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
        ratio_axis(ax)
    labels = [f"{outcome_title(o, spec)}\n{s}"
              for o, s in zip(effects["outcome"], effects["study"])]
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


def sd_sensitivity_plot(table: pd.DataFrame, ax=None, spec=None):
    """Each outcome's result (with its 95% interval) as the assumed SDs are scaled.
    ``table`` is :func:`evalkit.analysis.summary.sd_sensitivity`; the legend names the
    outcomes with ``spec``'s labels."""
    outcomes = list(dict.fromkeys(table["outcome"]))
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.4))
    colors = sns.color_palette("colorblind")
    for i, o in enumerate(outcomes):
        s = table[table["outcome"] == o]
        x = s["sd_factor"].to_numpy(float) * (1 + 0.03 * (i - (len(outcomes) - 1) / 2))
        e = s["estimate"].to_numpy(float)
        ax.errorbar(x, e, yerr=[e - s["ci_low"].to_numpy(float), s["ci_high"].to_numpy(float) - e],
                    fmt="o-", capsize=3, color=colors[i % len(colors)],
                    label=outcome_title(o, spec))
    ratio = "measure" not in table or table["measure"].isin(["RR", "OR", "IRR", "ROM"]).all()
    ax.axhline(1.0 if ratio else 0.0, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("assumed SD x factor (1 = as in the params)")
    ax.set_ylabel("effect (95% interval)")
    ax.legend(frameon=False, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def nmb_plot(curve: pd.DataFrame, per: str = "per visit avoided", ax=None,
             per_member: str = "per referred member"):
    """Net monetary benefit per treated unit against willingness to pay for the
    effect: the line at the estimates and the 95% band of the PSA draws.

    ``curve`` is :meth:`evalkit.analysis.valuation.Valuation.nmb_curve`; ``per`` names
    the effect's unit (``Valuation.words.per``: 'per visit avoided'), ``per_member`` the
    treated unit (``Valuation.words.per_member``). Above zero the program is worth its
    cost at that price of the effect.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.8))
    ax.fill_between(curve["wtp"], curve["nmb_ci_low"], curve["nmb_ci_high"], color="#92c5de",
                    alpha=0.5, label="95% of simulations")
    ax.plot(curve["wtp"], curve["nmb"], color="#2166ac", lw=2, label="at the estimates")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel(f"value the plan puts on one unit of effect, $ {per}")
    ax.set_ylabel(f"net monetary benefit {per_member} ($)")
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
    t, r = budget.by_year, budget.ranges
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


def love_plot(balance: pd.DataFrame, threshold: float = 0.1, ax=None, labels=None):
    """Balance ("love") plot: each covariate's standardized mean difference before and
    after adjustment, with the ``threshold`` lines (|SMD| < 0.1 is the usual rule).

    ``balance`` has ``covariate``, ``SMD before`` and, when the design adjusts,
    ``SMD after`` (:func:`evalkit.design.balance_table`). ``labels`` turns a covariate
    term into the words shown (default: the term itself).
    """
    cols = [c for c in ("SMD before", "SMD after") if c in balance]
    long = balance.melt(id_vars="covariate", value_vars=cols, var_name="when", value_name="smd")
    long["when"] = long["when"].str.removeprefix("SMD ")
    long["covariate"] = long["covariate"].map(labels or (lambda v: v))
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 0.35 * len(balance) + 1.6))
    sns.scatterplot(long, x="smd", y="covariate", hue="when", style="when",
                    markers={"before": "o", "after": "D"}, s=55,
                    palette={"before": ARM_COLORS["control"], "after": ARM_COLORS["self_help"]},
                    hue_order=[c.removeprefix("SMD ") for c in cols], ax=ax, zorder=3)
    for x in (-threshold, threshold):
        ax.axvline(x, color="grey", ls="--", lw=0.8)
    ax.axvline(0, color="black", lw=0.6)
    ax.set_xlabel("standardized mean difference (referred minus comparison)")
    ax.set_ylabel("")
    sns.move_legend(ax, "lower left", bbox_to_anchor=(0, 1.02), ncol=2, title=None,
                    frameon=False)
    return ax
