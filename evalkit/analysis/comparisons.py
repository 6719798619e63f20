"""Person-level comparisons beyond counts and costs: survival by arm, and k groups.

Two shapes of study come up with person-level (or group-level) data:

* **Survival by arm** (:func:`survival_by_arm`): people randomized (or referred) to a
  self-help or support group vs a comparison arm, followed until death or the end of
  follow-up. Kaplan-Meier curves, median and restricted mean survival with intervals,
  the log-rank test and Cox hazard ratios, as records for ``results.json``.
* **k groups** (:func:`compare_groups`): units (often *groups* of people) of k kinds, e.g.
  self-help groups by leadership type, compared on counts (size, kinds of activity) and
  on a lifetime with censoring. Means and medians with intervals, one-way ANOVA and
  Kruskal-Wallis, pairwise differences with Holm-adjusted p-values, Kaplan-Meier by
  group, the k-group log-rank test and Cox hazard ratios between every pair.

The estimators are those of :mod:`evalkit.survival` (checked against R), scipy
(``f_oneway``, ``kruskal``, ``ttest_ind``, ``quantile_test``) and statsmodels
(``multipletests``); this module only runs them over the outcomes and lays out the
results.
"""
from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from .. import survival
from ..data.synthetic_person import true_restricted_mean
from ..errors import DataValidationError, StatisticalWarning
from ..privacy import suppress
from .spec import model_frame

__all__ = ["ArmSurvival", "survival_by_arm", "GroupComparison", "compare_groups",
           "report_times"]


def report_times(horizon: float, unit: str = "months") -> list[float]:
    """Times at which to report survival: whole years up to ``horizon`` when the unit is
    months (1, 2, 3, 5, 10 years), otherwise the quarters of ``horizon``."""
    if unit == "months":
        grid = [t for t in (12, 24, 36, 60, 120, 180, 240) if t <= horizon]
        if grid:
            return [float(t) for t in grid]
    return [float(horizon * q) for q in (0.25, 0.5, 0.75, 1.0)]


# --------------------------------------------------------------------------------------
# survival by arm
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ArmSurvival:
    """Survival in two arms.

    Attributes
    ----------
    km : KaplanMeierResult
        Curves by arm (column ``arm``, readable labels).
    summary : DataFrame
        Per arm: ``arm, n, deaths, censored, median, median_ci_low, median_ci_high,
        restricted_mean, rmst_ci_low, rmst_ci_high, tau``.
    at : DataFrame
        Survival with its interval at :func:`report_times`.
    rmst : RestrictedMeanResult
        Restricted mean survival to ``tau`` per arm and their difference (treated minus
        control).
    logrank : LogRankResult
    cox : CoxResult
        Arm only (the randomized comparison).
    cox_adjusted : CoxResult or None
        Arm plus the covariates that vary (None without covariates).
    effects : DataFrame
        Records in the results vocabulary: hazard ratios (``hazard_ratio``), the
        difference in restricted mean survival (``difference``) and each arm's restricted
        mean (``mean``).
    tau : float
    unit : str
    """

    km: object
    summary: pd.DataFrame
    at: pd.DataFrame
    rmst: object
    logrank: object
    cox: object
    cox_adjusted: object
    effects: pd.DataFrame
    tau: float
    unit: str

    def publishable(self, min_cell: int = 11) -> dict[str, pd.DataFrame]:
        """The tables with counts of people below ``min_cell`` suppressed
        (:func:`evalkit.privacy.suppress`): ``summary`` (deaths and censored add up to
        n, so a small one takes a second cell with it), ``survival_at`` and ``logrank``
        (observed deaths).

        In ``survival_at`` the deaths between reported times are left out (with little
        censoring they follow from the numbers at risk), and where fewer than
        ``min_cell`` people are still at risk the number at risk *and* the survival
        estimate with its interval are hidden: the share still alive times the arm's
        size would give the small count back."""
        summary = suppress(self.summary.set_index("arm"), ["deaths", "censored"],
                           min_cell=min_cell, row_total="n").table.reset_index()
        derived = {c: "n_risk" for c in ("survival", "std_error", "ci_low", "ci_high")}
        at = suppress(self.at.drop(columns="n_event"), ["n_risk"], min_cell=min_cell,
                      protect_rows=False, derived=derived).table
        logrank = suppress(self.logrank.groups, ["n", "observed"], min_cell=min_cell,
                           protect_rows=False).table
        return {"summary": summary, "survival_at": at, "logrank": logrank}

    def against_truth(self, truth: dict | None) -> pd.DataFrame | None:
        """Estimates next to the population values of a synthetic scenario (None for
        real data): per arm the expected (published) mean, the restricted mean to
        ``tau`` and the median, with this sample's estimates and intervals."""
        if not truth or truth.get("scenario") != "support_group_survival":
            return None
        rows = []
        for arm_key, label in zip(("support_group", "control"), self.summary["arm"]):
            t = truth["arms"][arm_key]
            s = self.summary.set_index("arm").loc[label]
            rows.append({"arm": label, "true_mean": t["mean_months"],
                         "true_restricted_mean": true_restricted_mean(truth, arm_key, self.tau),
                         "estimated_restricted_mean": s["restricted_mean"],
                         "rmst_ci_low": s["rmst_ci_low"], "rmst_ci_high": s["rmst_ci_high"],
                         "true_median": t["median_months"], "estimated_median": s["median"],
                         "tau": self.tau})
        return pd.DataFrame(rows)


def _hr_record(fit, term: str, outcome: str, method: str, estimand: str, n_t: int, n_c: int,
               contrast: str, adjusted_for=()) -> dict:
    row = fit.table[fit.table["term"] == term].iloc[0]
    return {"outcome": outcome, "scale": "hazard_ratio", "contrast": contrast,
            "estimate": float(row["hazard_ratio"]), "std_error": float(row["std_error"]),
            "ci_low": float(row["hr_ci_low"]), "ci_high": float(row["hr_ci_high"]),
            "p_value": float(row["p_value"]), "method": method, "estimand": estimand,
            "n_treated": n_t, "n_control": n_c, "analysis": "survival", "model": "Cox",
            "family": None, "adjusted_for": list(adjusted_for)}


def survival_by_arm(frame: pd.DataFrame, duration: str, event: str, covariates: list[str] = (),
                    unit: str = "months", labels: dict | None = None, tau: float | None = None,
                    alpha: float = 0.05) -> ArmSurvival:
    """Kaplan-Meier, median and restricted mean survival, log-rank and Cox, by arm.

    Parameters
    ----------
    frame : DataFrame
        One row per person with ``group`` (``self_help`` / ``control``), ``treated``
        (0/1), ``duration``, ``event`` and the covariates. Not modified.
    duration, event : str
        Follow-up time and 1 = died (event) / 0 = censored.
    covariates : list of str
        Adjusted for in the second Cox model (those that vary are used).
    unit : str
        Unit of ``duration``, for labels.
    labels : dict, optional
        Readable arm names, ``{"self_help": ..., "control": ...}``.
    tau : float, optional
        Horizon of the restricted mean (default: the shorter arm's last follow-up time).
    alpha : float

    Notes
    -----
    The hazard ratio compares the chance of dying on any given day among those still
    alive (below 1: the self-help arm dies at a lower rate). The *restricted mean* is
    the average survival within the first ``tau`` units of follow-up, the area under
    the curve; the *mean* itself cannot be read from censored data without a model,
    and the *median* is the time by which half have died.
    """
    labels = {"self_help": "self-help", "control": "control", **(labels or {})}
    if set(frame["group"].dropna().unique()) != {"self_help", "control"}:
        raise DataValidationError("survival by arm needs both arms (self_help and control) "
                                  f"in column 'group'; found {sorted(frame['group'].unique())}")
    data = frame.assign(arm=frame["group"].map(labels))
    order = [labels["control"], labels["self_help"]]
    n_t = int((data["group"] == "self_help").sum())
    n_c = int((data["group"] == "control").sum())
    rm = survival.restricted_mean(data, duration, event, group="arm", tau=tau, alpha=alpha,
                                  order=order)
    km = survival.kaplan_meier(data, duration, event, group="arm", alpha=alpha)
    at = km.survival_at(report_times(rm.tau, unit))
    lr = survival.logrank(data, duration, event, "arm")
    cox = survival.cox(data, "treated", duration, event, alpha=alpha)
    mf = model_frame(data, [c for c in covariates if c != "treated"])
    data, covs = mf.frame, mf.names
    cox_adj = survival.cox(data, " + ".join(["treated", *covs]), duration, event,
                           alpha=alpha) if covs else None
    med = km.median.set_index("group")
    rt = rm.table.set_index("group")
    summary = pd.DataFrame([{
        "arm": a, "n": int(med.loc[a, "n"]), "deaths": int(med.loc[a, "events"]),
        "censored": int(med.loc[a, "n"] - med.loc[a, "events"]),
        "median": med.loc[a, "median"], "median_ci_low": med.loc[a, "ci_low"],
        "median_ci_high": med.loc[a, "ci_high"], "restricted_mean": rt.loc[a, "estimate"],
        "rmst_ci_low": rt.loc[a, "ci_low"], "rmst_ci_high": rt.loc[a, "ci_high"],
        "tau": rm.tau} for a in reversed(order)])
    contrast = f"{labels['self_help']} vs {labels['control']}"
    recs = [_hr_record(cox, "treated", duration, "Cox model (Efron ties), arm only",
                       "HR (unadjusted)", n_t, n_c, contrast)]
    if cox_adj is not None:
        recs.append(_hr_record(cox_adj, "treated", duration,
                               f"Cox model (Efron ties), adjusted for {', '.join(covs)}",
                               "conditional HR", n_t, n_c, contrast, mf.adjusted_for))
    d = rm.effect().table.iloc[0]
    recs.append({"outcome": duration, "scale": "difference", "contrast": contrast,
                 "estimate": float(d["estimate"]), "std_error": float(d["std_error"]),
                 "ci_low": float(d["ci_low"]), "ci_high": float(d["ci_high"]),
                 "p_value": float(d["p_value"]),
                 "method": f"restricted mean survival to {rm.tau:.4g} {unit} (area under "
                           "the Kaplan-Meier curve), difference",
                 "estimand": "difference in restricted mean survival", "n_treated": n_t,
                 "n_control": n_c, "tau": rm.tau, "analysis": "survival",
                 "model": "restricted mean (Kaplan-Meier)", "family": None, "adjusted_for": []})
    for r in rm.table.itertuples():
        recs.append({"outcome": duration, "scale": "mean", "contrast": f"{r.group} arm",
                     "estimate": r.estimate, "std_error": r.std_error, "ci_low": r.ci_low,
                     "ci_high": r.ci_high, "p_value": None,
                     "method": f"restricted mean survival to {rm.tau:.4g} {unit} (area under "
                               "the Kaplan-Meier curve)",
                     "estimand": "restricted mean survival", "n_treated": n_t,
                     "n_control": n_c, "tau": rm.tau, "analysis": "descriptive",
                     "model": "restricted mean (Kaplan-Meier)", "family": None,
                     "adjusted_for": []})
    return ArmSurvival(km, summary, at, rm, lr, cox, cox_adj, pd.DataFrame(recs), rm.tau, unit)


# --------------------------------------------------------------------------------------
# k groups
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GroupComparison:
    """k groups compared on counts and on a censored lifetime.

    Attributes
    ----------
    describe : DataFrame
        Per outcome and group: ``units`` (rows), ``mean`` and its t interval, ``sd``,
        ``median`` and its distribution-free interval (order statistics, scipy's
        ``quantile_test``). Means and medians of the ``people`` column are blanked (NaN)
        for a group whose people add up to fewer than ``min_cell``.
    tests : DataFrame
        Per outcome: one-way ANOVA (F, df, p) and Kruskal-Wallis (H, df, p).
    pairwise : DataFrame
        Per outcome and pair: difference in means (later minus earlier group in sorted
        order) with a Welch interval, p-value and Holm-adjusted p-value over the pairs.
    people : DataFrame or None
        Per group: ``units`` and ``people`` (sum of the people column) after small-cell
        suppression of the people counts (the publishable table).
    suppression : SuppressionResult or None
    km, logrank, cox : survival results of the lifetime by group (None without one)
    lifetime : DataFrame or None
        Per group: ``units, ended, still_running, median, median_ci_low, median_ci_high``.
    hazard_ratios : DataFrame or None
        Every pair: hazard ratio of ending (later vs earlier group) with its interval.
    at : DataFrame or None
        Share still running at :func:`report_times`.
    effects : DataFrame
        Records for results.json: means (``mean``) per group, differences
        (``difference``) and hazard ratios (``hazard_ratio``) per pair.
    levels : list
        The groups, in the order used.
    """

    describe: pd.DataFrame
    tests: pd.DataFrame
    pairwise: pd.DataFrame
    people: pd.DataFrame | None
    suppression: object
    km: object
    logrank: object
    cox: object
    lifetime: pd.DataFrame | None
    hazard_ratios: pd.DataFrame | None
    at: pd.DataFrame | None
    effects: pd.DataFrame
    levels: list
    min_cell: int = 11

    def publishable(self) -> dict[str, pd.DataFrame]:
        """The tables safe to publish. Small-cell suppression is about people: the
        people counts per group were suppressed when the comparison was made (and the
        means, medians and differences of the people column that would give them back
        were blanked); counts of *groups* (units, ended, still running, at risk) describe
        groups, not people, and are shown, under headers that say they count groups.
        When the units are people (no ``people`` column), the lifetime tables' counts are
        suppressed below ``min_cell`` as for :meth:`ArmSurvival.publishable`."""
        out = {"describe": self.describe, "tests": self.tests, "pairwise": self.pairwise}
        if self.people is not None:
            out["people"] = self.people
        if self.lifetime is not None:
            at, logrank = self.at, self.logrank.groups
            if self.people is not None:     # the units are groups: say so in the headers
                at = at.rename(columns={"n_risk": "groups_at_risk", "n_event": "groups_ended"})
                logrank = logrank.rename(columns={"n": "groups", "observed": "groups_ended"})
            else:                           # the units are people: the small-cell rule applies
                at = suppress(at.drop(columns="n_event"), ["n_risk"], protect_rows=False,
                              min_cell=self.min_cell,
                              derived={c: "n_risk" for c in ("survival", "std_error", "ci_low",
                                                             "ci_high")}).table
                logrank = suppress(logrank, ["n", "observed"], protect_rows=False,
                                   min_cell=self.min_cell).table
            out.update({"lifetime": self.lifetime, "hazard_ratios": self.hazard_ratios,
                        "still_running_at": at, "logrank": logrank})
        return out


def _median_ci(x: np.ndarray, alpha: float) -> tuple[float, float]:
    if x.size < 2:
        return float("nan"), float("nan")
    ci = stats.quantile_test(x, q=float(np.median(x)), p=0.5).confidence_interval(1 - alpha)
    return float(ci.low), float(ci.high)


def _compare_outcome(outcome: str, levels: list, by: dict, z_t: dict, alpha: float,
                     people: str | None, hidden: set):
    """One outcome across the k groups (:func:`compare_groups`): its descriptive rows,
    its ANOVA and Kruskal-Wallis row, its pairwise differences and their records."""
    desc_rows, pair_rows, recs = [], [], []
    values = {lv: by[lv][outcome].to_numpy(float) for lv in levels}
    for lv, x in values.items():
        mean = float(x.mean())
        sd = float(x.std(ddof=1)) if x.size > 1 else float("nan")
        half = z_t[lv] * sd / np.sqrt(x.size) if x.size > 1 else float("nan")
        lo, hi = _median_ci(x, alpha)
        row = {"outcome": outcome, "group": lv, "units": int(x.size), "mean": mean,
               "mean_ci_low": mean - half, "mean_ci_high": mean + half, "sd": sd,
               "median": float(np.median(x)), "median_ci_low": lo, "median_ci_high": hi}
        if outcome == people and lv in hidden:
            row.update({k: float("nan") for k in row if k not in ("outcome", "group", "units")})
        desc_rows.append(row)
        if not (outcome == people and lv in hidden):
            recs.append({"outcome": outcome, "scale": "mean", "contrast": f"{lv}",
                         "estimate": mean, "std_error": sd / np.sqrt(x.size),
                         "ci_low": mean - half, "ci_high": mean + half, "p_value": None,
                         "method": "mean with t interval", "estimand": f"mean per unit, {lv}",
                         "n_treated": int(x.size), "n_control": None,
                         "analysis": "descriptive", "model": "mean", "family": None,
                         "adjusted_for": []})
    groups_x = list(values.values())
    f = stats.f_oneway(*groups_x)
    h = stats.kruskal(*groups_x)
    n = sum(x.size for x in groups_x)
    test_row = {"outcome": outcome, "anova_f": float(f.statistic),
                "anova_df1": len(levels) - 1, "anova_df2": n - len(levels),
                "anova_p": float(f.pvalue), "kruskal_h": float(h.statistic),
                "kruskal_df": len(levels) - 1, "kruskal_p": float(h.pvalue)}
    pairs = []
    for a, b in itertools.combinations(levels, 2):
        res = stats.ttest_ind(values[b], values[a], equal_var=False)
        ci = res.confidence_interval(1 - alpha)
        est = float(values[b].mean() - values[a].mean())
        pairs.append({"outcome": outcome, "contrast": f"{b} vs {a}", "estimate": est,
                      "std_error": float(est / res.statistic) if res.statistic else float("nan"),
                      "ci_low": float(ci.low), "ci_high": float(ci.high),
                      "p_value": float(res.pvalue), "n_treated": int(values[b].size),
                      "n_control": int(values[a].size), "_pair": (a, b)})
    holm = multipletests([p["p_value"] for p in pairs], method="holm")[1]
    for p, ph in zip(pairs, holm):
        p["p_holm"] = float(ph)
        a, b = p.pop("_pair")
        if outcome == people and (a in hidden or b in hidden):
            continue                         # a difference would give a hidden count back
        pair_rows.append(p)
        recs.append({**{k: v for k, v in p.items() if k != "p_holm"}, "scale": "difference",
                     "method": "difference in means, Welch t interval (Holm-adjusted p "
                               "in p_value_holm)", "estimand": "difference in means",
                     "p_value_holm": float(ph), "analysis": "crude",
                     "model": "Welch t", "family": None, "adjusted_for": []})
    return desc_rows, test_row, pair_rows, recs


def _compare_lifetimes(frame: pd.DataFrame, group: str, levels: list, by: dict,
                       duration: str, event: str, unit: str, alpha: float):
    """The censored lifetime across the k groups (:func:`compare_groups`): Kaplan-Meier,
    log-rank, Cox with pairwise hazard ratios, and the ratios' records."""
    recs = []
    km = survival.kaplan_meier(frame, duration, event, group=group, alpha=alpha)
    lr = survival.logrank(frame, duration, event, group)
    med = km.median.set_index("group")
    lifetime = pd.DataFrame([{
        "group": lv, "units": int(med.loc[lv, "n"]), "ended": int(med.loc[lv, "events"]),
        "still_running": int(med.loc[lv, "n"] - med.loc[lv, "events"]),
        "median": med.loc[lv, "median"], "median_ci_low": med.loc[lv, "ci_low"],
        "median_ci_high": med.loc[lv, "ci_high"]} for lv in levels])
    at = km.survival_at(report_times(float(frame[duration].max()), unit))
    ref = levels[0]
    data = frame.assign(_level=pd.Categorical(frame[group], categories=levels))
    cox = survival.cox(data, f"C(_level, Treatment(reference={ref!r}))", duration, event,
                       alpha=alpha)
    beta = dict(zip(levels, [0.0, *cox.table["estimate"].to_numpy()]))
    cov = np.zeros((len(levels), len(levels)))
    cov[1:, 1:] = np.asarray(cox.model.cov_params(), float)
    z = stats.norm.ppf(1 - alpha / 2)
    hr_rows = []
    for (i, a), (j, b) in itertools.combinations(enumerate(levels), 2):
        est = beta[b] - beta[a]
        se = float(np.sqrt(cov[i, i] + cov[j, j] - 2 * cov[i, j]))
        hr_rows.append({"contrast": f"{b} vs {a}", "hazard_ratio": float(np.exp(est)),
                        "ci_low": float(np.exp(est - z * se)),
                        "ci_high": float(np.exp(est + z * se)), "log_hr": est,
                        "std_error": se, "p_value": float(2 * stats.norm.sf(abs(est / se))),
                        "n_treated": len(by[b]), "n_control": len(by[a])})
        recs.append({"outcome": duration, "scale": "hazard_ratio", "contrast": f"{b} vs {a}",
                     "estimate": float(np.exp(est)), "std_error": se,
                     "ci_low": float(np.exp(est - z * se)),
                     "ci_high": float(np.exp(est + z * se)),
                     "p_value": float(2 * stats.norm.sf(abs(est / se))),
                     "method": "Cox model (Efron ties), group as a factor",
                     "analysis": "survival", "model": "Cox", "family": None,
                     "adjusted_for": [],
                     "estimand": "HR of ending", "n_treated": len(by[b]),
                     "n_control": len(by[a])})
    hrs = pd.DataFrame(hr_rows)
    return km, lr, cox, lifetime, hrs, at, recs


def compare_groups(frame: pd.DataFrame, group: str, outcomes: list[str],
                   duration: str | None = None, event: str | None = None,
                   people: str | None = None, min_cell: int = 11, unit: str = "months",
                   alpha: float = 0.05) -> GroupComparison:
    """Compare k groups on count outcomes and, optionally, on a censored lifetime.

    Parameters
    ----------
    frame : DataFrame
        One row per unit (a person, or a group of people). Not modified.
    group : str
        Column of the k-level grouping (at least two levels).
    outcomes : list of str
        Numeric outcome columns (e.g. size, number of kinds of activity).
    duration, event : str, optional
        A lifetime and its indicator (1 = ended, 0 = still running: censored).
    people : str, optional
        When each row is a group of people, the column with its number of people. The
        small-cell rule is about people: a group type whose groups hold fewer than
        ``min_cell`` people in all has its people count suppressed (with complementary
        cells, :func:`evalkit.privacy.suppress`) and the mean and median of ``people``
        for it blanked, since they give the count back. Counts of *groups* are not
        counts of people and are shown.
    min_cell : int
    unit : str
        Unit of ``duration``.
    alpha : float

    Returns
    -------
    GroupComparison

    Warns
    -----
    StatisticalWarning
        A group with fewer than 3 units (its interval and the tests rest on very little).
    """
    needed = [group, *outcomes, *([duration, event] if duration else []),
              *([people] if people and people not in outcomes else [])]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataValidationError(f"compare_groups: column(s) {missing} not found; columns: "
                                  f"{list(frame.columns)}")
    levels = sorted(frame[group].dropna().unique().tolist(), key=str)
    if len(levels) < 2:
        raise DataValidationError(f"compare_groups: column {group!r} has {len(levels)} level(s); "
                                  "at least two groups are needed")
    by = {lv: frame.loc[frame[group] == lv] for lv in levels}
    small = [lv for lv, d in by.items() if len(d) < 3]
    if small:
        warnings.warn(f"compare_groups: group(s) {small} have fewer than 3 units; their "
                      "intervals and the tests rest on very little data.", StatisticalWarning,
                      stacklevel=2)
    z_t = {lv: stats.t.ppf(1 - alpha / 2, max(len(d) - 1, 1)) for lv, d in by.items()}

    # people per group, and small-cell suppression of those counts
    people_tab = suppression = None
    hidden: set = set()
    if people:
        raw = pd.DataFrame({"group": levels, "units": [len(by[lv]) for lv in levels],
                            "people": [int(by[lv][people].sum()) for lv in levels]})
        suppression = suppress(raw.set_index("group"), ["people"], min_cell=min_cell,
                               protect_rows=False, protect_columns=True)
        people_tab = suppression.table.reset_index()
        hidden = {lv for lv, m in zip(levels, suppression.mask["people"]) if m}

    desc_rows, test_rows, pair_rows, recs = [], [], [], []
    for outcome in outcomes:
        desc, test, pairs, outcome_recs = _compare_outcome(outcome, levels, by, z_t, alpha,
                                                           people, hidden)
        desc_rows += desc
        test_rows.append(test)
        pair_rows += pairs
        recs += outcome_recs
    km = lr = cox = lifetime = hrs = at = None
    if duration:
        km, lr, cox, lifetime, hrs, at, hr_recs = _compare_lifetimes(
            frame, group, levels, by, duration, event, unit, alpha)
        recs += hr_recs
    return GroupComparison(pd.DataFrame(desc_rows), pd.DataFrame(test_rows),
                           pd.DataFrame(pair_rows), people_tab, suppression, km, lr, cox,
                           lifetime, hrs, at, pd.DataFrame(recs), levels, min_cell)
