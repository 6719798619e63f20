"""evalkit.survival against R's survival package.

Reference values: tests/reference/expected/cox_rossi.json, produced by
tests/reference/r/cox_rossi.R (R 4.2.2, survival 3.5-3) on tests/reference/data/rossi.csv:
  coxph(Surv(week, arrest) ~ fin + age + race + wexp + mar + paro + prio, ties = "efron"
        / "breslow", control = coxph.control(eps = 1e-11)), robust = TRUE for the sandwich SEs,
  summary(fit)$concordance, survdiff(Surv(week, arrest) ~ fin),
  summary(survfit(Surv(week, arrest) ~ fin), times = c(10, 20, 30, 40, 52)).
The Cox fits were converged to eps = 1e-11, so 1e-8 relative agreement is expected (the
measured gap is ~1e-13).
"""
import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from conftest import reference_data, reference_json
from statsmodels.duration.hazard_regression import PHReg
from statsmodels.duration.survfunc import survdiff

from evalkit.errors import (
    ConvergenceError,
    DataDroppedWarning,
    DataValidationError,
    ParamsError,
    StatisticalWarning,
)
from evalkit.survival import (
    _score_residuals,
    concordance_index,
    cox,
    kaplan_meier,
    logrank,
)

FORMULA = "fin + age + race + wexp + mar + paro + prio"
TERMS = ["fin", "age", "race", "wexp", "mar", "paro", "prio"]
RTOL = 1e-8


@pytest.fixture(scope="module")
def rossi():
    return reference_data("rossi")


@pytest.fixture(scope="module")
def ref():
    return reference_json("cox_rossi")


@pytest.fixture(scope="module")
def efron(rossi):
    return cox(rossi, FORMULA, "week", "arrest", ties="efron")


# ---------------------------------------------------------------------------- Cox
@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_cox_matches_coxph(rossi, ref, ties):
    """coef, se(coef), logLik, loglik at beta = 0, LR and score tests: cox_rossi.json[ties]."""
    fit = cox(rossi, FORMULA, "week", "arrest", ties=ties)
    r = ref[ties]
    assert fit.table["term"].tolist() == TERMS
    np.testing.assert_allclose(fit.table["estimate"], [r["coefficients"][t] for t in TERMS], rtol=RTOL)
    np.testing.assert_allclose(fit.table["std_error"], [r["se"][t] for t in TERMS], rtol=RTOL)
    np.testing.assert_allclose(fit.table["hazard_ratio"], [r["hazard_ratios"][t] for t in TERMS],
                               rtol=RTOL)
    np.testing.assert_allclose(fit.loglik, r["logLik"], rtol=RTOL)
    np.testing.assert_allclose(fit.extra["loglik_null"], r["loglik_null_and_final"][0], rtol=RTOL)
    np.testing.assert_allclose(fit.extra["lr_test"][0], r["likelihood_ratio_test"], rtol=1e-7)
    np.testing.assert_allclose(fit.extra["score_test"][0], r["score_logrank_test"], rtol=1e-7)
    # summary.coxph stores the Wald statistic rounded to 2 decimals (32.11 / 31.98)
    assert abs(fit.extra["wald_test"][0] - r["wald_test"]) < 0.005 + 1e-12
    assert fit.nobs == r["n"] and fit.extra["n_events"] == r["nevent"]


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_cox_concordance_matches_summary_coxph(rossi, ref, ties):
    """Harrell's C and se(C): summary(coxph)$concordance (survival 3.5-3, cox_rossi.json)."""
    fit = cox(rossi, FORMULA, "week", "arrest", ties=ties)
    np.testing.assert_allclose(fit.concordance, ref[ties]["concordance"], rtol=RTOL)
    np.testing.assert_allclose(fit.concordance_se, ref[ties]["concordance_se"], rtol=1e-7)


def test_cox_robust_se_matches_coxph_robust(rossi, ref):
    """sqrt(diag(coxph(..., robust = TRUE)$var)): cox_rossi.json efron_robust_se."""
    fit = cox(rossi, FORMULA, "week", "arrest", ties="efron", robust=True)
    np.testing.assert_allclose(fit.table["std_error"], [ref["efron_robust_se"][t] for t in TERMS],
                               rtol=1e-8)
    # coefficients are unchanged; model-based SEs are kept
    np.testing.assert_allclose(fit.table["estimate"], [ref["efron"]["coefficients"][t] for t in TERMS],
                               rtol=RTOL)
    np.testing.assert_allclose([fit.extra["naive_std_error"][t] for t in TERMS],
                               [ref["efron"]["se"][t] for t in TERMS], rtol=RTOL)


def test_breslow_score_residuals_agree_with_statsmodels(rossi):
    """Independent check: for Breslow ties statsmodels' score residuals use the same formula."""
    X = rossi[TERMS].to_numpy(float)
    model = PHReg(rossi["week"].to_numpy(float), X, status=rossi["arrest"].to_numpy(float),
                  ties="breslow")
    beta = model.fit().params
    ours = _score_residuals(rossi["week"].to_numpy(float), rossi["arrest"].to_numpy(float), X,
                            beta, "breslow")
    np.testing.assert_allclose(ours, model.score_residuals(beta), atol=1e-12)
    # residuals add up to the score, which is ~0 at the estimate
    np.testing.assert_allclose(ours.sum(0), 0, atol=1e-8)


def test_cox_result_shape(efron):
    cols = list(efron.table.columns)
    assert cols[:6] == ["term", "estimate", "std_error", "ci_low", "ci_high", "p_value"]
    assert cols[6:] == ["hazard_ratio", "hr_ci_low", "hr_ci_high"]
    np.testing.assert_allclose(efron.table["hr_ci_low"], np.exp(efron.table["ci_low"]))
    assert efron.formula == f"Surv(week, arrest) ~ {FORMULA}"
    assert efron.dropped == {}
    assert efron.hazard_ratios.index.tolist() == TERMS
    assert "concordance" in efron.summary()


def test_cox_formula_with_lhs_and_logical_term_names(rossi, ref):
    """A logical covariate is named as R names it (finTRUE); an LHS is ignored."""
    data = rossi.assign(fin_b=rossi["fin"] == 1)
    fit = cox(data, "Surv(week, arrest) ~ fin_b + age + race + wexp + mar + paro + prio",
              "week", "arrest")
    assert fit.table["term"].iloc[0] == "fin_bTRUE"
    np.testing.assert_allclose(fit.table["estimate"].iloc[0], ref["efron"]["coefficients"]["fin"],
                               rtol=RTOL)


def test_cox_does_not_modify_input(rossi):
    before = rossi.copy()
    cox(rossi, FORMULA, "week", "arrest", robust=True)
    pd.testing.assert_frame_equal(rossi, before)


def test_cox_missing_values_dropped_with_warning(rossi):
    data = rossi.copy()
    data.loc[[0, 5], "age"] = np.nan
    data.loc[9, "week"] = np.nan
    with pytest.warns(DataDroppedWarning, match="3 of 432"):
        fit = cox(data, FORMULA, "week", "arrest")
    assert fit.nobs == 429
    assert fit.dropped == {"missing_values": 3}


def test_cox_bad_inputs(rossi):
    with pytest.raises(DataValidationError, match="not found"):
        cox(rossi, FORMULA, "weeks", "arrest")
    with pytest.raises(DataValidationError, match="design"):
        cox(rossi, "fin + nosuchcolumn", "week", "arrest")
    with pytest.raises(DataValidationError, match="constant"):
        cox(rossi.assign(one=1.0), "fin + one", "week", "arrest")
    with pytest.raises(DataValidationError, match="linearly dependent"):
        cox(rossi.assign(fin2=2 * rossi["fin"]), "fin + fin2", "week", "arrest")
    with pytest.raises(DataValidationError, match="no events"):
        cox(rossi.assign(arrest=0), FORMULA, "week", "arrest")
    with pytest.raises(DataValidationError, match="0 \\(censored\\) / 1"):
        cox(rossi.assign(arrest=rossi["arrest"] * 2), FORMULA, "week", "arrest")
    with pytest.raises(ParamsError):
        cox(rossi, FORMULA, "week", "arrest", ties="exact")
    with pytest.raises(ParamsError):
        cox(rossi, "", "week", "arrest")
    with pytest.raises(ParamsError):
        cox(rossi, FORMULA, "week", "arrest", alpha=1.5)


def test_cox_arm_without_events_warns_infinite_coefficient(rossi):
    """Monotone likelihood (no events when fin = 1): R warns the coefficient may be infinite."""
    data = rossi.assign(arrest=np.where(rossi["fin"] == 1, 0, rossi["arrest"]))
    with pytest.warns(StatisticalWarning, match="infinite"):
        fit = cox(data, "fin + age", "week", "arrest")
    assert fit.extra["possibly_infinite"] == ["fin"]


def test_cox_nonconvergence_raises(rossi, monkeypatch):
    """When the optimiser reports non-convergence (and no coefficient is infinite) the fit
    is refused with a ConvergenceError saying what to try."""
    import warnings

    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    import evalkit.survival as surv

    original = surv.PHReg.fit

    def fit_that_gives_up(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        warnings.warn("Maximum Likelihood optimization failed to converge.", ConvergenceWarning)
        return result

    monkeypatch.setattr(surv.PHReg, "fit", fit_that_gives_up)
    with pytest.raises(ConvergenceError, match="Rescale covariates"):
        cox(rossi, "fin + age", "week", "arrest")


# ---------------------------------------------------------------------------- concordance
def _brute_force_counts(t, s, x):
    conc = disc = tie = 0
    for i in range(len(t)):
        if s[i] != 1:
            continue
        for j in range(len(t)):
            if i != j and (t[j] > t[i] or (t[j] == t[i] and s[j] == 0)):
                conc += x[i] > x[j]
                disc += x[i] < x[j]
                tie += x[i] == x[j]
    return conc, disc, tie


def test_concordance_counts_match_pairwise_definition():
    """Pair counting with tied times and tied predictors equals the O(n^2) definition."""
    rng = np.random.default_rng(7)
    t = rng.integers(1, 15, 250).astype(float)
    s = (rng.random(250) < 0.6).astype(float)
    x = rng.integers(0, 6, 250).astype(float)
    res = concordance_index(t, s, x)
    conc, disc, tie = _brute_force_counts(t, s, x)
    assert (res["concordant"], res["discordant"], res["tied_x"]) == (conc, disc, tie)
    np.testing.assert_allclose(res["concordance"], (conc + tie / 2) / (conc + disc + tie))


# ---------------------------------------------------------------------------- log-rank
def test_logrank_matches_survdiff(rossi, ref):
    """survdiff(Surv(week, arrest) ~ fin): cox_rossi.json logrank_fin."""
    lr = logrank(rossi, "week", "arrest", "fin")
    r = ref["logrank_fin"]
    np.testing.assert_allclose(lr.chisq, r["chisq"], rtol=1e-10)
    np.testing.assert_allclose(lr.p_value, r["p_value"], rtol=1e-9)
    assert lr.df == r["df"]
    assert lr.groups["group"].tolist() == [0, 1]
    np.testing.assert_allclose(lr.groups["n"], [r["n"]["fin=0"], r["n"]["fin=1"]])
    np.testing.assert_allclose(lr.groups["observed"], [r["observed"]["fin=0"], r["observed"]["fin=1"]])
    np.testing.assert_allclose(lr.groups["expected"], [r["expected"]["fin=0"], r["expected"]["fin=1"]],
                               rtol=1e-10)
    # statsmodels' survdiff agrees on the statistic (independent implementation)
    np.testing.assert_allclose(lr.chisq, survdiff(rossi["week"], rossi["arrest"], rossi["fin"])[0],
                               rtol=1e-10)


def test_logrank_three_groups_against_statsmodels(rossi):
    """More than two groups: chi-square with k - 1 df, same as statsmodels' survdiff."""
    groups = pd.cut(rossi["age"], [0, 20, 25, 100], labels=["a", "b", "c"]).astype(str)
    data = rossi.assign(agegrp=groups)
    lr = logrank(data, "week", "arrest", "agegrp")
    assert lr.df == 2
    np.testing.assert_allclose(lr.chisq, survdiff(data["week"], data["arrest"], data["agegrp"])[0],
                               rtol=1e-10)
    np.testing.assert_allclose(lr.groups["observed"].sum(), lr.groups["expected"].sum())


def test_logrank_group_without_events_warns(rossi):
    data = rossi.assign(arrest=np.where(rossi["fin"] == 1, 0, rossi["arrest"]))
    with pytest.warns(StatisticalWarning, match="no events"):
        lr = logrank(data, "week", "arrest", "fin")
    assert lr.groups["observed"].tolist() == [66, 0]


def test_logrank_needs_two_groups(rossi):
    with pytest.raises(DataValidationError, match="single value"):
        logrank(rossi.assign(g=1), "week", "arrest", "g")


# ---------------------------------------------------------------------------- Kaplan-Meier
def test_kaplan_meier_matches_summary_survfit(rossi, ref):
    """summary(survfit(Surv(week, arrest) ~ fin), times = c(10, 20, 30, 40, 52)) (log CI)."""
    km = kaplan_meier(rossi, "week", "arrest", group="fin", times=[10, 20, 30, 40, 52])
    assert list(km.table.columns) == ["group", "time", "n_risk", "n_event", "survival",
                                      "std_error", "ci_low", "ci_high"]
    for g in (0, 1):
        r = ref["kaplan_meier"][f"fin={g}"]
        tab = km.table[km.table["group"] == g]
        np.testing.assert_array_equal(tab["time"], r["time"])
        np.testing.assert_array_equal(tab["n_risk"], r["n_risk"])
        np.testing.assert_array_equal(tab["n_event"], r["n_event"])
        np.testing.assert_allclose(tab["survival"], r["survival"], rtol=1e-12)
        np.testing.assert_allclose(tab["std_error"], r["std_err"], rtol=1e-12)
        np.testing.assert_allclose(tab["ci_low"], r["lower_95"], rtol=1e-12)
        np.testing.assert_allclose(tab["ci_high"], r["upper_95"], rtol=1e-12)
    # .survival_at() gives the same rows
    pd.testing.assert_frame_equal(km.survival_at([10, 20, 30, 40, 52]), km.table)


def test_kaplan_meier_median_midpoint_rule():
    """survfit(Surv(1:6)) has S = 0.5 on [3, 4): R's median is (3 + 4) / 2 = 3.5; for 1:5 it is 3."""
    six = pd.DataFrame({"t": np.arange(1, 7), "e": 1})
    assert kaplan_meier(six, "t", "e").median["median"].iloc[0] == 3.5
    five = pd.DataFrame({"t": np.arange(1, 6), "e": 1})
    assert kaplan_meier(five, "t", "e").median["median"].iloc[0] == 3.0
    ten = kaplan_meier(pd.DataFrame({"t": np.arange(1, 11), "e": 1}), "t", "e").median.iloc[0]
    # S = 0 at t = 10 leaves the log band undefined, so the upper band never reaches 0.5
    assert ten["median"] == 5.5 and ten["ci_low"] < 5.5 and np.isnan(ten["ci_high"])


def test_kaplan_meier_rossi_median_not_reached(rossi):
    km = kaplan_meier(rossi, "week", "arrest", group="fin")
    assert km.median["median"].isna().all()          # survival stays above 0.5 (R: NA)
    assert km.median["events"].tolist() == [66, 48]


def test_kaplan_meier_edge_times_and_plot(rossi):
    km = kaplan_meier(rossi, "week", "arrest")
    early = km.survival_at([0, 0.5])
    assert early["survival"].tolist() == [1.0, 1.0] and early["n_risk"].tolist() == [432, 432]
    assert np.isnan(km.survival_at([60])["survival"].iloc[0])   # after the last follow-up (week 52)
    ax = kaplan_meier(rossi, "week", "arrest", group="fin").plot()
    assert len(ax.get_lines()) >= 2
    # a group without events is a flat line at 1 up to its last follow-up
    no_events = rossi.assign(arrest=np.where(rossi["fin"] == 1, 0, rossi["arrest"]))
    km = kaplan_meier(no_events, "week", "arrest", group="fin")
    assert km.survival_at([52])["survival"].tolist() == [pytest.approx(0.6944444444444444), 1.0]
    assert km.plot() is not None
    import matplotlib.pyplot as plt

    plt.close("all")


def test_kaplan_meier_input_checks(rossi):
    with pytest.raises(DataValidationError, match="not found"):
        kaplan_meier(rossi, "week", "arrested")
    with pytest.raises(DataValidationError, match="negative"):
        kaplan_meier(rossi.assign(week=-rossi["week"]), "week", "arrest")
    data = rossi.copy()
    data.loc[3, "fin"] = np.nan
    with pytest.warns(DataDroppedWarning, match="1 of 432"):
        kaplan_meier(data, "week", "arrest", group="fin")
    with pytest.raises(ParamsError):
        kaplan_meier(rossi, "week", "arrest", times=[-1])
