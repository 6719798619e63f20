"""Adjusted effects for the workbooks: the outcome models run over each outcome, with
the choice of model family made from the data and the evidence kept.

These functions tie :mod:`evalkit.models` to a study's analysis frame (one row per
member: follow-up outcomes, baseline covariates, member-months) and return tables in the
results vocabulary, ready for ``results.json``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from .. import survival
from ..errors import ConvergenceError, DataValidationError, EvalkitError, StatisticalWarning
from ..models.bootstrap import replicates_sentence
from ..models.base import TABLE_COLUMNS, EffectResult
from ..models.count import MAX_SE, count_model
from ..models.did import did
from ..models.twopart import park_test, two_part
from ..models.twopart_bootstrap import bootstrap_two_part
from .spec import CLAIMS_OUTCOMES, model_frame

#: Families compared for count outcomes, from the simplest.
COUNT_FAMILIES = ("poisson", "negbin", "zinb", "hurdle_negbin")
RATIO_SCALES = {"rate_ratio", "ratio", "hazard_ratio", "odds_ratio"}


def _records(effect: EffectResult, outcome: str, method: str, n_t: int, n_c: int,
             alpha: float, *, analysis: str, model: str, family: str | None,
             adjusted_for: list[str]) -> pd.DataFrame:
    """An EffectResult (terms are scales) in the results vocabulary (ratio SEs on the log
    scale), with the structured fields of the record (analysis, model, family, adjusted_for)."""
    z = stats.norm.ppf(1 - alpha / 2)
    t = effect.table[TABLE_COLUMNS].rename(columns={"term": "scale"})
    ratio = t["scale"].isin(RATIO_SCALES)
    t.loc[ratio, "std_error"] = (np.log(t.loc[ratio, "ci_high"]) - np.log(t.loc[ratio, "ci_low"])) / (2 * z)
    t.insert(0, "outcome", outcome)
    t["method"] = method
    t["estimand"] = "ATE"
    t["n_treated"], t["n_control"] = n_t, n_c
    t["analysis"], t["model"], t["family"] = analysis, model, family
    t["adjusted_for"] = [list(adjusted_for)] * len(t)
    return t


def _adjusted(n: int) -> str:
    return f"adjusted for {n} covariate{'s' if n != 1 else ''}"


@dataclass(frozen=True)
class FamilyChoice:
    """Which count model fits an outcome best, and the evidence."""

    outcome: str
    chosen: str
    comparison: pd.DataFrame   # family, loglik, n_params, aic, bic, delta_aic, note
    fit: object                # the chosen CountResult


def choose_count_family(frame: pd.DataFrame, outcome: str, covariates: list[str],
                        exposure: str | None = "member_months",
                        families=COUNT_FAMILIES) -> FamilyChoice:
    """Fit each count family and keep the one with the smallest AIC.

    AIC = 2k - 2 logLik, with k counting every estimated parameter (both parts, and theta
    for negative binomial families). A family that cannot be fitted (it does not converge,
    theta runs to a bound, or the arithmetic fails) is listed as "not fitted: reason", and
    one whose standard errors show that some parameter is not identified (for example a
    zero-inflation part with nothing to explain) as "not eligible"; neither is chosen, and
    the others are compared. Only when no family fits is this an error, naming each
    family's reason. Overdispersed, zero-heavy claims counts usually favour
    ``negbin`` or a hurdle model over ``poisson`` by a wide margin; the comparison table
    shows by how much.
    """
    rhs = " + ".join(["treated", *covariates])
    rows, fits = [], {}
    for fam in families:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", StatisticalWarning)
                fit = count_model(frame, f"{outcome} ~ {rhs}", family=fam, exposure=exposure)
        except (EvalkitError, np.linalg.LinAlgError, ArithmeticError, ValueError) as err:
            # a candidate that fails for any numerical reason (ArithmeticError covers
            # FloatingPointError; ValueError, e.g. scipy refusing a non-finite array) is
            # reported and the others are compared
            rows.append({"family": fam, "loglik": np.nan, "n_params": np.nan, "aic": np.nan,
                         "bic": np.nan, "note": f"not fitted: {str(err).splitlines()[0][:300]}"})
            continue
        k = len(fit.table) + (1 if fit.theta is not None else 0)
        n = fit.nobs
        se = fit.table["std_error"].to_numpy(dtype=float)
        weak = not np.all(np.isfinite(se)) or np.max(se) > MAX_SE
        rows.append({"family": fam, "loglik": fit.loglik, "n_params": k,
                     "aic": 2 * k - 2 * fit.loglik, "bic": np.log(n) * k - 2 * fit.loglik,
                     "note": "not eligible: some coefficients are not identified (standard "
                             "errors infinite or huge)" if weak else ""})
        if not weak:
            fits[fam] = fit
    table = pd.DataFrame(rows)
    if not fits:
        # the same reason for every family (all zeros, separation) is said once
        reasons = {str(n).replace(f"count_model({f})", "count_model").removeprefix("not fitted: ")
                   for f, n in zip(table["family"], table["note"])}
        detail = (next(iter(reasons)) if len(reasons) == 1 else
                  "; ".join(f"{f}: {n}" for f, n in zip(table["family"], table["note"])))
        raise ConvergenceError(f"{outcome}: no count model could be fitted "
                               f"({', '.join(table['family'])}): {detail}")
    eligible = table[table["family"].isin(list(fits))]
    best = eligible.loc[eligible["aic"].idxmin(), "family"]
    table["delta_aic"] = table["aic"] - table["aic"].min()
    table.loc[table["family"] == best, "note"] = "chosen (smallest AIC)"
    return FamilyChoice(outcome, best, table, fits[best])


@dataclass(frozen=True)
class AdjustedCounts:
    choices: dict            # outcome -> FamilyChoice
    effects: pd.DataFrame    # records: outcome, scale, estimate, ... (results vocabulary)
    covariates: list         # formula names of the terms adjusted for
    left_out: list = ()      # terms that could not be estimated on these rows, with reasons


def adjusted_count_effects(frame: pd.DataFrame, outcomes: list[str], covariates: list[str],
                           exposure: str | None = "member_months", alpha: float = 0.05,
                           families=COUNT_FAMILIES) -> AdjustedCounts:
    """Covariate-adjusted effect of referral on each count outcome.

    For each outcome: choose the family (:func:`choose_count_family`), then average the
    model's predictions with everyone referred and with no one referred (recycled
    predictions), giving the difference in events per 1,000 member-months and the rate
    ratio with delta-method CIs at level ``1 - alpha``. ``frame`` needs a 0/1 ``treated``
    column (:func:`evalkit.analysis.spec.with_treatment`); ``covariates`` are terms as written
    (:func:`evalkit.analysis.spec.model_frame`): each enters exactly so.
    """
    mf = model_frame(frame, covariates)
    frame, covs = mf.frame, mf.names
    choices, parts = {}, []
    n_t, n_c = int(frame["treated"].sum()), int((1 - frame["treated"]).sum())
    for outcome in outcomes:
        choice = choose_count_family(frame, outcome, covs, exposure, families)
        eff = choice.fit.effect("treated", alpha=alpha)
        parts.append(_records(eff, outcome, f"{choice.chosen} regression, recycled "
                              f"predictions, {_adjusted(len(covs))}", n_t, n_c, alpha,
                              analysis="adjusted", model="count regression",
                              family=choice.chosen, adjusted_for=mf.adjusted_for))
        choices[outcome] = choice
    return AdjustedCounts(choices, pd.concat(parts, ignore_index=True), covs, mf.left_out)


@dataclass(frozen=True)
class CostEffect:
    fit: object               # TwoPartResult
    park: object              # ParkTestResult
    effects: pd.DataFrame     # records
    share_zero: pd.DataFrame  # arm, members, share_zero, mean, median, p95
    bootstrap: object = None  # BootstrapResult, when replicates were asked for

    def bootstrap_sentence(self) -> str:
        """How many bootstrap replicates the intervals rest on; a warning when more than
        5% could not be computed (:func:`evalkit.models.bootstrap.replicates_sentence`)."""
        if self.bootstrap is None:
            return "no bootstrap (models.bootstrap_replicates is 0): delta-method intervals only."
        return replicates_sentence(self.bootstrap.n_boot, self.bootstrap.n_failed,
                                   "cost bootstrap")


def positive_part_family(frame: pd.DataFrame, formula: str):
    """The modified Park test of ``formula`` on ``frame`` and the family of the two-part
    model's positive part it suggests (gamma unless it points to Poisson or inverse
    Gaussian): what :func:`cost_effect` fits."""
    try:
        park = park_test(frame, formula)
    except (ValueError, EvalkitError):   # the GLM form can fail on extreme residuals
        park = park_test(frame, formula, method="ols")
    second = park.suggested_family if park.suggested_family in ("gamma", "poisson",
                                                                "inverse_gaussian") else "gamma"
    return park, second


def cost_effect(frame: pd.DataFrame, covariates: list[str], outcome: str = "total_cost",
                months: float = 12.0, alpha: float = 0.05, n_boot: int = 0,
                seed: int | None = None) -> CostEffect:
    """Adjusted difference in cost per member by a two-part model.

    Part 1 is a logit for any cost; part 2 a GLM with log link on the members with costs,
    its family chosen by the modified Park test (gamma unless the test points elsewhere).
    The effect is the difference in mean cost per member over the follow-up window with
    everyone referred vs no one (recycled predictions), with a delta-method CI; also the
    ratio of means and the per-member-per-month (PMPM) difference, the per-member
    difference divided by ``months`` (12 for a 365-day window).

    With ``n_boot`` > 0 the difference and the ratio also get nonparametric bootstrap
    intervals (resampling members within arms, BCa; all replicates refitted at once, see
    :func:`evalkit.models.twopart_bootstrap.bootstrap_two_part`), added as extra records with
    ``interval: bootstrap``. ``covariates`` are terms as written
    (:func:`evalkit.analysis.spec.model_frame`): a column ``log1p_baseline_cost`` enters as it is,
    ``log1p(baseline_cost)`` is transformed.
    """
    mf = model_frame(frame, covariates)
    frame, covs = mf.frame, mf.names
    formula = f"{outcome} ~ " + " + ".join(["treated", *covs])
    park, second = positive_part_family(frame, formula)
    fit = two_part(frame, formula, second=second)
    eff = fit.effect("treated", alpha=alpha)
    n_t, n_c = int(frame["treated"].sum()), int((1 - frame["treated"]).sum())
    rec = _records(eff, outcome, f"two-part model (logit + {second} GLM, log link), "
                   f"recycled predictions, {_adjusted(len(covs))}", n_t, n_c, alpha,
                   analysis="adjusted", model="two-part", family=f"logit + {second}",
                   adjusted_for=mf.adjusted_for)
    diff = rec[rec["scale"] == "cost_difference"].iloc[0]
    pmpm = diff.copy()
    pmpm["scale"] = "pmpm_difference"
    for c in ("estimate", "std_error", "ci_low", "ci_high"):
        pmpm[c] = diff[c] / months
    rec = pd.concat([rec, pmpm.to_frame().T], ignore_index=True)
    boot = None
    if n_boot:
        boot = bootstrap_two_part(frame, formula, "treated", n_boot=n_boot, seed=seed,
                                  second=second, alpha=alpha)
        extra = []
        for term in ("cost_difference", "ratio"):
            lo, hi = boot.ci(term, "bca")
            base = rec[rec["scale"] == term].iloc[0].copy()
            base["method"] = (f"{base['method']}; bootstrap BCa interval, {n_boot} replicates "
                              "resampling members within arms")
            base["std_error"] = float(np.nanstd(boot.replicates[term], ddof=1)) if term != "ratio" \
                else float(np.nanstd(np.log(boot.replicates[term]), ddof=1))
            base["ci_low"], base["ci_high"], base["p_value"] = lo, hi, np.nan
            base["interval"] = "bootstrap"
            for key, value in boot.record_fields().items():
                base[key] = value
            extra.append(base)
        rec = pd.concat([rec, pd.DataFrame(extra)], ignore_index=True)
    desc = (frame.assign(arm=np.where(frame["treated"] == 1, "self_help", "control"))
            .groupby("arm")[outcome]
            .agg(members="size", share_zero=lambda x: float((x == 0).mean()), mean="mean",
                 median="median", p95=lambda x: float(x.quantile(0.95)))
            .reset_index())
    return CostEffect(fit, park, rec, desc, boot)


def prepost_effects(member_windows: pd.DataFrame, outcomes: list[str],
                    exposure: str | None = "member_months", alpha: float = 0.05,
                    kinds: dict[str, str] | None = None) -> pd.DataFrame:
    """Difference-in-differences of each outcome: each member's follow-up against their
    own baseline, referred vs not.

    A Poisson model with member fixed effects and period effects on the member x window
    table (baseline, follow-up), member-months as exposure; the effect is the ratio of the
    referred members' change to the comparison members' change (a rate ratio), with
    standard errors clustered by member. Because every member is compared with their own
    baseline, differences between members that do not change over time (how sick they
    are, how readily they seek care) cancel out, measured or not. With two periods there
    is no pre-period trend to test; the assumption that the two groups would have
    changed alike without the referral is stated, not tested. ``kinds`` (outcome ->
    kind, from the spec) reads a cost outcome's effect as a ratio of means (``ratio``)
    rather than a rate ratio.
    """
    mw = member_windows.assign(
        treated=lambda d: (d["group"] == "self_help").astype(int),
        post=lambda d: (d["period"] == "followup").astype(int))
    n_t = int(mw.loc[mw["post"] == 1, "treated"].sum())
    n_c = int((mw["post"] == 1).sum()) - n_t
    parts = []
    for outcome in outcomes:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pre-trend.*", category=StatisticalWarning)
            warnings.filterwarnings("ignore", message=".*pre-period.*", category=StatisticalWarning)
            fit = did(mw, outcome, "member_id", "period", "treated", post="post",
                      family="poisson", exposure=exposure, event_study=False, alpha=alpha)
        rec = _records(fit.effect(), outcome, "difference-in-differences (Poisson, member "
                       "and period fixed effects, SEs clustered by member)", n_t, n_c, alpha,
                       analysis="prepost", model="difference-in-differences",
                       family="poisson", adjusted_for=["member fixed effects",
                                                       "period fixed effects"])
        if (kinds or {}).get(outcome) == "cost":
            rec["scale"] = rec["scale"].replace({"rate_ratio": "ratio"})
        parts.append(rec.assign(estimand="ATT"))
    return pd.concat(parts, ignore_index=True)


def true_ratios(truth: dict | None, outcomes: list[str]) -> dict:
    """The synthetic plan's true effects (ratios) by outcome name, when known."""
    if not truth:
        return {}
    eff = truth.get("effects", {})
    names = {o: d.truth for o, d in CLAIMS_OUTCOMES.items()}
    return {o: eff[names[o]] for o in outcomes if names.get(o) in eff and eff[names[o]] is not None}


def compare_methods(estimates: dict[str, pd.DataFrame], truth: dict | None = None) -> pd.DataFrame:
    """One row per outcome x method with the ratio estimate and CI (and the truth if known).

    ``estimates`` maps a method label to a records table; only ratio rows are used.
    """
    rows = []
    for label, table in estimates.items():
        if table is None or table.empty:
            continue
        t = table[table["scale"].isin(RATIO_SCALES)]
        for r in t.itertuples():
            rows.append({"outcome": r.outcome, "method": label, "ratio": r.estimate,
                         "ci_low": r.ci_low, "ci_high": r.ci_high})
    out = pd.DataFrame(rows)
    if truth:
        out["true_ratio"] = out["outcome"].map(truth)
    return out



@dataclass(frozen=True)
class TimeToEvent:
    """Time to first visit by arm: curves, the log-rank test, an adjusted Cox model."""

    km: object                 # KaplanMeierResult (groups self_help / control)
    logrank: object            # LogRankResult
    cox: object                # CoxResult
    at: pd.DataFrame           # survival (share without a visit) at the reporting days
    effects: pd.DataFrame      # records: hazard_ratio, proportion without a visit


def time_to_event_effects(frame: pd.DataFrame, covariates: list[str], outcome: str,
                          times=(90, 180, 364), alpha: float = 0.05) -> TimeToEvent:
    """Kaplan-Meier by arm, log-rank test and a Cox model adjusted for covariates.

    ``frame`` has ``days``, ``event``, ``group`` and ``treated`` (see
    :meth:`evalkit.Study.time_to_first`). The hazard ratio compares the referred with
    the comparison members at any moment of follow-up (below 1: later or fewer first
    visits); Efron ties, as R's ``coxph``.
    """
    mf = model_frame(frame, covariates)
    frame, covs = mf.frame, mf.names
    km = survival.kaplan_meier(frame, "days", "event", group="group", times=list(times), alpha=alpha)
    lr = survival.logrank(frame, "days", "event", "group")
    cox = survival.cox(frame, "~ " + " + ".join(["treated", *covs]), "days", "event", alpha=alpha)
    row = cox.table[cox.table["term"] == "treated"].iloc[0]
    n_t, n_c = int(frame["treated"].sum()), int((1 - frame["treated"]).sum())
    recs = [{"outcome": outcome, "scale": "hazard_ratio", "estimate": float(np.exp(row["estimate"])),
             "std_error": float(row["std_error"]), "ci_low": float(np.exp(row["ci_low"])),
             "ci_high": float(np.exp(row["ci_high"])), "p_value": float(row["p_value"]),
             "method": f"Cox model (Efron ties), {_adjusted(len(covs))}",
             "estimand": "conditional HR", "n_treated": n_t, "n_control": n_c,
             "analysis": "survival", "model": "Cox", "family": None,
             "adjusted_for": mf.adjusted_for}]
    at = km.survival_at(list(times)).assign(outcome=outcome)
    for r in at.itertuples():
        recs.append({"outcome": f"{outcome}_free_at_{int(r.time)}_days", "scale": "proportion",
                     "estimate": r.survival, "std_error": r.std_error, "ci_low": r.ci_low,
                     "ci_high": r.ci_high, "p_value": None,
                     "method": "Kaplan-Meier (log CI, Greenwood SE)", "estimand": str(r.group),
                     "contrast": f"{r.group} arm", "n_treated": n_t, "n_control": n_c,
                     "analysis": "descriptive", "model": "Kaplan-Meier", "family": None,
                     "adjusted_for": []})
    return TimeToEvent(km, lr, cox, at, pd.DataFrame(recs))
