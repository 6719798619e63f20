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

from .errors import ConvergenceError, DataValidationError, EvalkitError, StatisticalWarning
from .models.count import count_model
from .models.panel import did
from .models.twopart import park_test, two_part

#: Families compared for count outcomes, from the simplest.
COUNT_FAMILIES = ("poisson", "negbin", "zinb", "hurdle_negbin")
RATIO_SCALES = {"rate_ratio", "ratio", "hazard_ratio", "odds_ratio"}
#: A coefficient SE (log scale) above this means the model is not identified by the data.
MAX_SE = 20.0


def with_treatment(frame: pd.DataFrame, group: str = "group", treated="self_help") -> pd.DataFrame:
    """A copy of ``frame`` with a 0/1 ``treated`` column (1 = self-help arm)."""
    out = frame.copy()
    out["treated"] = (out[group] == treated).astype(int)
    if out["treated"].nunique() < 2:
        raise DataValidationError("both arms are needed for a comparison, but only one arm "
                                  f"has members: {out[group].unique().tolist()}")
    return out


def usable_covariates(frame: pd.DataFrame, candidates: list[str]) -> list[str]:
    """Numeric covariates that vary and are not the treatment in disguise.

    Text columns (``program``, ``community``) are left out: in the built-in designs they
    are nested in the arm. A covariate that is constant, or identical to the treatment,
    would make the model unidentifiable.
    """
    keep = []
    for c in candidates:
        if c not in frame or not pd.api.types.is_numeric_dtype(frame[c]) \
                or pd.api.types.is_bool_dtype(frame[c]):
            continue
        x = frame[c]
        if x.nunique(dropna=True) < 2:
            continue
        if "treated" in frame and x.nunique() == 2 and \
                abs(np.corrcoef(x.astype(float), frame["treated"])[0, 1]) > 0.999:
            continue
        keep.append(c)
    return keep


def _transform_covariates(frame: pd.DataFrame, covariates: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """Enter baseline use and cost as log(1 + value).

    Prior visits, days and dollars have long right tails: on their raw scale a few
    members' extreme values would dominate the fit and push predicted probabilities to 0
    or 1 (which the logit part would rightly refuse as separation).
    """
    out, names = frame, []
    for c in covariates:
        if c.startswith("baseline_") or c.endswith("_cost"):
            new = "log1p_" + c
            out = out.assign(**{new: np.log1p(out[c].clip(lower=0))}) if new not in out else out
            names.append(new)
        else:
            names.append(c)
    return out, names


def _records(effect_table: pd.DataFrame, outcome: str, method: str, n_t: int, n_c: int,
             alpha: float) -> pd.DataFrame:
    """An EffectResult table in the results vocabulary (ratio SEs on the log scale)."""
    z = stats.norm.ppf(1 - alpha / 2)
    t = effect_table[["scale", "estimate", "std_error", "ci_low", "ci_high", "p_value"]].copy()
    ratio = t["scale"].isin(RATIO_SCALES)
    t.loc[ratio, "std_error"] = (np.log(t.loc[ratio, "ci_high"]) - np.log(t.loc[ratio, "ci_low"])) / (2 * z)
    t.insert(0, "outcome", outcome)
    t["method"] = method
    t["estimand"] = "ATE"
    t["n_treated"], t["n_control"] = n_t, n_c
    return t


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
    covariates: list


def adjusted_count_effects(frame: pd.DataFrame, outcomes: list[str], covariates: list[str],
                           exposure: str | None = "member_months", alpha: float = 0.05,
                           families=COUNT_FAMILIES) -> AdjustedCounts:
    """Covariate-adjusted effect of referral on each count outcome.

    For each outcome: choose the family (:func:`choose_count_family`), then average the
    model's predictions with everyone referred and with no one referred (recycled
    predictions), giving the difference in events per 1,000 member-months and the rate
    ratio with delta-method 95% CIs. ``frame`` needs a 0/1 ``treated`` column
    (:func:`with_treatment`).
    """
    frame, covs = _transform_covariates(frame, usable_covariates(frame, covariates))
    choices, parts = {}, []
    n_t, n_c = int(frame["treated"].sum()), int((1 - frame["treated"]).sum())
    for outcome in outcomes:
        choice = choose_count_family(frame, outcome, covs, exposure, families)
        eff = choice.fit.effect("treated", alpha=alpha)
        parts.append(_records(eff.table, outcome, f"{choice.chosen} regression, recycled "
                              f"predictions, adjusted for {len(covs)} covariates", n_t, n_c, alpha))
        choices[outcome] = choice
    return AdjustedCounts(choices, pd.concat(parts, ignore_index=True), covs)


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
        from .models.bootstrap import replicates_sentence
        return replicates_sentence(self.bootstrap.n_boot, self.bootstrap.n_failed,
                                   "cost bootstrap")


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
    :func:`evalkit.models.bootstrap.bootstrap_two_part`), added as extra records.
    """
    frame, covs = _transform_covariates(frame, usable_covariates(frame, covariates))
    formula = f"{outcome} ~ " + " + ".join(["treated", *covs])
    try:
        park = park_test(frame, formula)
    except (ValueError, EvalkitError):   # the GLM form can fail on extreme residuals
        park = park_test(frame, formula, method="ols")
    second = park.suggested_family if park.suggested_family in ("gamma", "poisson",
                                                                "inverse_gaussian") else "gamma"
    fit = two_part(frame, formula, second=second)
    eff = fit.effect("treated", alpha=alpha)
    n_t, n_c = int(frame["treated"].sum()), int((1 - frame["treated"]).sum())
    rec = _records(eff.table, outcome, f"two-part model (logit + {second} GLM, log link), "
                   f"recycled predictions, adjusted for {len(covs)} covariates", n_t, n_c, alpha)
    diff = rec[rec["scale"] == "cost_difference"].iloc[0]
    pmpm = diff.copy()
    pmpm["scale"] = "pmpm_difference"
    for c in ("estimate", "std_error", "ci_low", "ci_high"):
        pmpm[c] = diff[c] / months
    rec = pd.concat([rec, pmpm.to_frame().T], ignore_index=True)
    boot = None
    if n_boot:
        from .models.bootstrap import bootstrap_two_part
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
                    exposure: str | None = "member_months", alpha: float = 0.05) -> pd.DataFrame:
    """Difference-in-differences of each outcome: each member's follow-up against their
    own baseline, referred vs not.

    A Poisson model with member fixed effects and period effects on the member x window
    table (baseline, follow-up), member-months as exposure; the effect is the ratio of the
    referred members' change to the comparison members' change (a rate ratio), with
    standard errors clustered by member. Because every member is compared with their own
    baseline, differences between members that do not change over time (how sick they
    are, how readily they seek care) cancel out, measured or not. With two periods there
    is no pre-period trend to test; the assumption that the two groups would have
    changed alike without the referral is stated, not tested.
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
        rec = _records(fit.effect, outcome, "difference-in-differences (Poisson, member "
                       "and period fixed effects, SEs clustered by member)", n_t, n_c, alpha)
        if "cost" in outcome:
            rec["scale"] = rec["scale"].replace({"rate_ratio": "ratio"})
        parts.append(rec.assign(estimand="ATT"))
    return pd.concat(parts, ignore_index=True)


def true_ratios(truth: dict | None, outcomes: list[str]) -> dict:
    """The synthetic plan's true effects (ratios) by outcome name, when known."""
    if not truth:
        return {}
    eff = truth.get("effects", {})
    names = {"er_visits": "er", "outpatient_mh_visits": "outpatient_mh",
             "inpatient_days": "inpatient_days", "total_cost": "cost"}
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
    from . import survival
    frame, covs = _transform_covariates(frame, usable_covariates(frame, covariates))
    km = survival.kaplan_meier(frame, "days", "event", group="group", times=list(times), alpha=alpha)
    lr = survival.logrank(frame, "days", "event", "group")
    cox = survival.cox(frame, "~ " + " + ".join(["treated", *covs]), "days", "event", alpha=alpha)
    row = cox.table[cox.table["term"] == "treated"].iloc[0]
    n_t, n_c = int(frame["treated"].sum()), int((1 - frame["treated"]).sum())
    recs = [{"outcome": outcome, "scale": "hazard_ratio", "estimate": float(np.exp(row["estimate"])),
             "std_error": float(row["std_error"]), "ci_low": float(np.exp(row["ci_low"])),
             "ci_high": float(np.exp(row["ci_high"])), "p_value": float(row["p_value"]),
             "method": f"Cox model (Efron ties), adjusted for {len(covs)} covariates",
             "estimand": "conditional HR", "n_treated": n_t, "n_control": n_c}]
    at = km.at(list(times))
    for r in at.itertuples():
        recs.append({"outcome": f"{outcome}_free_at_{int(r.time)}_days", "scale": "proportion",
                     "estimate": r.survival, "std_error": r.std_error, "ci_low": r.ci_low,
                     "ci_high": r.ci_high, "p_value": None,
                     "method": "Kaplan-Meier (log CI, Greenwood SE)", "estimand": str(r.group),
                     "contrast": f"{r.group} arm", "n_treated": n_t, "n_control": n_c})
    return TimeToEvent(km, lr, cox, at, pd.DataFrame(recs))
