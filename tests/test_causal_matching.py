"""Propensity scores, nearest-neighbour matching and the matched ATT.

Reference values: tests/reference/expected/matchit_lalonde.json, produced by
tests/reference/r/matchit_lalonde.R (R 4.2.2; MatchIt 4.5.1 machinery with the
nearest-neighbour step replaced by nn_match_ps(), the fixed MatchIt >= 4.5.4 algorithm,
cross-checked pair for pair against MatchIt 4.7.2 in matchit_lalonde_modern_check.json):

    m <- matchit(treat ~ age + educ + race + married + nodegree + re74 + re75,
                 data = lalonde, method = "nearest", distance = "glm")          # nearest_default
    m <- matchit(..., caliper = 0.1, ratio = 1)                                  # nearest_caliper
    fit <- lm(re78 ~ treat, data = match.data(m), weights = weights)
    coeftest(fit, vcov. = vcovCL(fit, cluster = ~subclass))                     # HC1

The block ``matchit_4_5_1_as_installed`` is MatchIt 4.5.1's buggy output and is never
used as a target. Tolerance: 1e-6 relative (the project's default against R); measured agreement is
~1e-11 for scores and ~1e-14 for the ATT and its SEs.
"""
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import reference_data, reference_json

from evalkit.causal import estimate, match, propensity, weights
from evalkit.causal.matching import _greedy_stratum, _matching_weights
from evalkit.errors import (
    DataDroppedWarning,
    DataValidationError,
    ParamsError,
    StatisticalWarning,
)

FORMULA = "age + educ + race + married + nodegree + re74 + re75"
REL = 1e-6


@pytest.fixture(scope="module")
def lalonde():
    return reference_data("lalonde")


@pytest.fixture(scope="module")
def ref():
    return reference_json("matchit_lalonde")


def rel_close(got, expected, rel=REL):
    got, expected = np.asarray(got, float), np.asarray(expected, float)
    assert np.all(np.abs(got - expected) <= rel * np.maximum(np.abs(expected), 1e-300)), (got, expected)


# ---------------------------------------------------------------------------- propensity
def test_propensity_coefficients_and_scores_match_r_glm(lalonde, ref):
    """glm(treat ~ ..., family = binomial(), data = lalonde): coef, SE, fitted values."""
    ps = propensity(lalonde, "treat", FORMULA)
    tab = ps.fit.table.set_index("term")
    coefs, ses = ref["propensity_model"]["coefficients"], ref["propensity_model"]["se"]
    assert list(tab.index) == list(coefs)  # R names: (Intercept), racehispan, racewhite
    rel_close(tab.loc[list(coefs), "estimate"], list(coefs.values()))
    rel_close(tab.loc[list(ses), "std_error"], list(ses.values()))
    rel_close(ps.scores.to_numpy(), ref["propensity_scores_all"], rel=1e-9)
    s = ref["propensity_score_summary"]
    rel_close(ps.scores.std(ddof=1), s["sd"])
    assert ps.scores.index.equals(lalonde.index)


def test_propensity_accepts_full_formula_and_C(lalonde, ref):
    a = propensity(lalonde, "treat", "treat ~ " + FORMULA)
    b = propensity(lalonde, "treat", FORMULA.replace("race", "C(race)"))
    r_names = list(ref["propensity_model"]["coefficients"])
    assert list(a.fit.table.term) == r_names
    # C(race) is named as R names a term such as factor(race): the term as written, then
    # the level (C(race)hispan where the column race gives racehispan), as the models do
    assert list(b.fit.table.term) == [t.replace("race", "C(race)", 1) if t.startswith("race")
                                      else t for t in r_names]
    np.testing.assert_allclose(b.fit.table.estimate, a.fit.table.estimate, rtol=1e-12)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-12)
    with pytest.raises(ParamsError, match="left-hand side"):
        propensity(lalonde, "treat", "re78 ~ age")


def test_identical_covariates_get_identical_scores(lalonde, ref):
    """The 19 tied controls (8 groups) in the reference must stay exactly tied."""
    ps = propensity(lalonde, "treat", FORMULA).scores[lalonde.treat == 0]
    dup = ps[ps.duplicated(keep=False)]
    assert len(dup) == ref["tied_control_ps"]["n_units"]
    assert dup.nunique() == ref["tied_control_ps"]["n_groups"]


# ---------------------------------------------------------------------------- matching
@pytest.mark.parametrize("block, caliper", [("nearest_default", None), ("nearest_caliper", 0.1)])
def test_pairs_identical_to_matchit(lalonde, ref, block, caliper):
    x = ref[block]
    m = match(lalonde, "treat", FORMULA, caliper=caliper)
    mp = x["matched_pairs"]
    expected = {t - 1: (None if c is None else c - 1)
                for t, c in zip(mp["treated_row"], mp["control_row"])}  # R rows are 1-based
    got = dict(zip(m.pairs.treated.astype(int), m.pairs.control.astype(int)))
    assert {k: got.get(k) for k in expected} == expected
    assert m.n_matched_treated == x["n_matched_treated"]
    assert m.n_matched_control == x["n_matched_control"]
    assert len(m.unmatched_focal) == x["n_treated"] - x["n_matched_treated"]
    dist = [d for d in x["pair_ps_distance"] if d is not None]
    rel_close(m.pairs.sort_values("treated").abs_difference, dist)
    if caliper is None:
        assert m.caliper is None
    else:
        rel_close(m.caliper, x["caliper_ps_units"])  # 0.1 * sd(ps over all 614 units)


@pytest.mark.parametrize("block, caliper", [("nearest_default", None), ("nearest_caliper", 0.1)])
def test_matched_att_and_cluster_se_match_r(lalonde, ref, block, caliper):
    """lm(re78 ~ treat, weights) on match.data(); vcovCL(~subclass) HC1 and HC0; vcov()."""
    a = ref[block]["att"]
    eff = estimate(lalonde, "re78", "treat", FORMULA, caliper=caliper)
    rel_close(eff.estimate, a["estimate"])
    rel_close(eff.std_error, a["se_cluster_subclass_HC1"])
    rel_close(eff.ci_low, a["ci95_lower_HC1"])      # coefci: t quantile, df = df.residual
    rel_close(eff.ci_high, a["ci95_upper_HC1"])
    rel_close(eff.p_value, a["p_value_HC1"])
    rel_close(eff.estimate / eff.std_error, a["t_value_HC1"])
    rel_close(eff.table.set_index("term").loc["(Intercept)", "estimate"], a["intercept"])
    rel_close(eff.diagnostics["se_model"], a["se_model"])
    assert eff.diagnostics["df_resid"] == a["df_residual"]
    assert eff.diagnostics["n_clusters"] == a["n_clusters"]
    assert eff.n_treated + eff.n_control == a["n_obs"]
    hc0 = estimate(lalonde, "re78", "treat", FORMULA, caliper=caliper, vcov="cluster_HC0")
    rel_close(hc0.std_error, a["se_cluster_subclass_HC0"])
    assert eff.estimand == "ATT" and eff.method == "match"
    assert set(eff.diagnostics) >= {"max_abs_smd", "balance_ok", "equipoise", "ess"}


def test_matched_data_columns_weights_subclass(lalonde):
    before = lalonde.copy(deep=True)
    m = match(lalonde, "treat", FORMULA)
    pd.testing.assert_frame_equal(lalonde, before)          # input untouched
    assert list(m.data.columns) == list(lalonde.columns) + ["distance", "weights", "subclass"]
    assert (m.data.weights == 1).all() and len(m.data) == 370
    sizes = m.data.groupby("subclass")["treat"].agg(["size", "sum"])
    assert (sizes["size"] == 2).all() and (sizes["sum"] == 1).all()
    assert m.weights.index.equals(lalonde.index) and m.weights.sum() == 370
    assert m.subclass.isna().sum() == 614 - 370
    assert "matching" in m.summary()


def test_default_balance_is_computed_once_and_handed_out_as_copies(lalonde):
    """Estimates that reuse a design ask for its balance each time: the same table,
    computed once, and a caller changing its copy changes no later answer."""
    m = match(lalonde, "treat", FORMULA)
    first = m.balance()
    first.after.loc[:, "smd"] = 99.0
    again = m.balance()
    fresh = match(lalonde, "treat", FORMULA).balance()
    pd.testing.assert_frame_equal(again.after, fresh.after)
    pd.testing.assert_frame_equal(again.before, fresh.before)
    assert (again.after["smd"] != 99.0).all()
    assert len(m._default_balance) == 1
    # other covariates or options are computed, not taken from the remembered table
    assert list(m.balance("age").after.index) != list(again.after.index)
    # the same for weights
    w = weights(lalonde, "treat", FORMULA, estimand="ATT")
    changed = w.balance()
    changed.after.loc[:, "smd"] = 99.0
    pd.testing.assert_frame_equal(
        w.balance().after, weights(lalonde, "treat", FORMULA, estimand="ATT").balance().after)
    assert len(w._default_balance) == 1


# --------------------------------------------------------------- the algorithm by hand
# Six units with binary-exact scores (treated T, control C), sorted:
#   unit:  5(T .125)  1(C .25)  0(T .5)  2(C .75)  4(C .8125)  3(T .875)
DIST = np.array([0.5, 0.25, 0.75, 0.875, 0.8125, 0.125])
FOCAL = np.array([True, False, False, True, False, True])


def pairs_of(res):
    return sorted((int(a), int(b), r) for a, b, r in res)


def test_greedy_largest_first_left_wins_exact_tie():
    # order largest: 3 -> left 4 (.0625; nothing right); 0 -> 1 (.25) vs 2 (.25): tie, left
    # wins -> 1; 5 -> nothing left, next free on the right is 2 (.625).
    res = _greedy_stratum(DIST, FOCAL, 1, False, None, "largest", None)
    assert pairs_of(res) == [(0, 1, 0), (3, 4, 0), (5, 2, 0)]


def test_greedy_caliper_and_smallest_order():
    # caliper .3 (score units): unit 5's only free control is .625 away -> unmatched
    res = _greedy_stratum(DIST, FOCAL, 1, False, 0.3, "largest", None)
    assert pairs_of(res) == [(0, 1, 0), (3, 4, 0)]
    # order smallest: 5 -> 1 (.125); 0 -> left 1 used, 5 treated: right 2 (.25); 3 -> 4
    res = _greedy_stratum(DIST, FOCAL, 1, False, None, "smallest", None)
    assert pairs_of(res) == [(0, 2, 0), (3, 4, 0), (5, 1, 0)]


def test_greedy_with_replacement_ratio_2_and_weights():
    # 3: 4 (.0625) then 2 (.125); 0: tie 1/2 -> 1, then 2; 5: 1 (.125), then 2 (.625)
    res = _greedy_stratum(DIST, FOCAL, 2, True, None, "data", None)
    assert pairs_of(res) == [(0, 1, 0), (0, 2, 1), (3, 2, 1), (3, 4, 0), (5, 1, 0), (5, 2, 1)]
    fa = np.array([a for a, _, _ in res])
    fb = np.array([b for _, b, _ in res])
    w, k = _matching_weights(6, FOCAL, fa, fb)
    # controls: 1 <- 1/2 + 1/2 = 1; 2 <- 3 x 1/2 = 1.5; 4 <- 1/2; sum 3 = 3 matched
    # controls, so no rescaling; treated 1 each.
    np.testing.assert_allclose(w, [1, 1, 1.5, 1, 0.5, 1])
    assert list(k) == [2, 0, 0, 2, 0, 2]


def test_matching_weights_rescaled_to_number_of_controls():
    # one treated (0) with two controls (1, 2), one treated (3) with one control (4):
    # raw control weights 1/2, 1/2, 1 (sum 2) -> scaled by 3/2 to 0.75, 0.75, 1.5.
    focal = np.array([True, False, False, True, False])
    w, _ = _matching_weights(5, focal, np.array([0, 0, 3]), np.array([1, 2, 4]))
    np.testing.assert_allclose(w, [1, 0.75, 0.75, 1, 1.5])


def test_ratio_and_replacement_on_lalonde(lalonde):
    with pytest.warns(StatisticalWarning, match="fewer control"):
        m3 = match(lalonde, "treat", FORMULA, ratio=3)
    per_t = m3.pairs.groupby("treated").size()
    assert per_t.max() == 3 and m3.pairs.control.is_unique
    ctrl_w = m3.data.loc[m3.data.treat == 0, "weights"]
    assert ctrl_w.sum() == pytest.approx(len(ctrl_w))       # MatchIt's scaling
    mr = match(lalonde, "treat", FORMULA, ratio=2, replace=True)
    assert mr.order == "data" and mr.data.subclass.isna().all()
    assert (mr.pairs.groupby("treated").size() == 2).all()
    assert not mr.pairs.control.is_unique                   # controls reused


def test_exact_and_random_order(lalonde):
    with pytest.warns(StatisticalWarning, match="exact strata"):
        m = match(lalonde, "treat", FORMULA, exact=["married", "race"])
    tr = lalonde.loc[m.pairs.treated, ["married", "race"]].to_numpy()
    co = lalonde.loc[m.pairs.control, ["married", "race"]].to_numpy()
    assert (tr == co).all()
    r1 = match(lalonde, "treat", FORMULA, order="random", seed=3)
    r2 = match(lalonde, "treat", FORMULA, order="random", seed=3)
    pd.testing.assert_frame_equal(r1.pairs, r2.pairs)


def test_atc_swaps_roles(lalonde):
    with pytest.warns(StatisticalWarning):
        m = match(lalonde, "treat", FORMULA, estimand="ATC")
    assert m.order == "smallest" and m.n_matched_treated == 185
    assert m.pairs.treated.is_unique and m.pairs.control.is_unique


def test_logit_distance_and_caliper(lalonde):
    m = match(lalonde, "treat", FORMULA, distance="logit", caliper=0.2)
    lp = m.propensity.linear_predictor
    assert m.caliper == pytest.approx(0.2 * lp.std(ddof=1))
    assert (m.pairs.abs_difference <= m.caliper).all()


# --------------------------------------------------------------------------- bad input
def test_missing_values_are_dropped_and_counted(lalonde):
    d = lalonde.copy()
    d.loc[[3, 200], "age"] = np.nan
    with pytest.warns(DataDroppedWarning, match="2 of 614"):
        m = match(d, "treat", FORMULA)
    assert m.dropped == {"missing values": 2}
    assert m.n.loc["dropped"].sum() == 2 and m.weights.loc[[3, 200]].eq(0).all()


def test_clear_errors(lalonde):
    with pytest.raises(DataValidationError, match="agee"):
        match(lalonde, "treat", "agee + educ")
    with pytest.raises(DataValidationError, match="not in the data"):
        match(lalonde, "treated", FORMULA)
    bad = lalonde.assign(treat=lalonde.treat * 2)
    with pytest.raises(DataValidationError, match="0/1"):
        match(bad, "treat", FORMULA)
    with pytest.raises(ParamsError, match="caliper"):
        match(lalonde, "treat", FORMULA, caliper=-1)
    with pytest.raises(ParamsError, match="method"):
        match(lalonde, "treat", FORMULA, method="optimal")
    with pytest.raises(ParamsError, match="order"):
        match(lalonde, "treat", FORMULA, order="biggest")
    with pytest.raises(DataValidationError, match="weights"):
        match(lalonde.assign(weights=1.0), "treat", FORMULA)
    with pytest.raises(DataValidationError, match="constant"):
        match(lalonde.assign(one=1), "treat", "age + one")


def test_perfect_separation_is_an_error(lalonde):
    d = lalonde.assign(rule=lalonde.treat * 10 + lalonde.age / 100)
    with pytest.raises(DataValidationError, match="no overlap"):
        propensity(d, "treat", "rule")


# -------------------------------------------------------------- ipw and regression
def test_ipw_att_is_the_weighted_mean_difference(lalonde):
    """ATT weights: treated 1, control e/(1-e); the WLS coefficient is the difference of
    weighted means, computed here directly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StatisticalWarning)
        eff = estimate(lalonde, "re78", "treat", FORMULA, method="ipw", estimand="ATT")
        w = weights(lalonde, "treat", FORMULA, estimand="ATT")
    e = w.propensity.scores
    t = lalonde.treat == 1
    np.testing.assert_allclose(w.weights[~t], (e / (1 - e))[~t], rtol=1e-12)
    y = lalonde.re78
    wm1 = y[t].mean()
    wm0 = np.average(y[~t], weights=w.weights[~t])
    assert eff.estimate == pytest.approx(wm1 - wm0, rel=1e-10)
    assert eff.diagnostics["vcov"] == "HC0"


def test_overlap_weights_balance_means_exactly(lalonde):
    """Overlap (ATO) weights from a logistic score balance every model term's mean
    exactly (Li, Morgan & Zaslavsky 2018) - a property, not a reference value."""
    w = weights(lalonde, "treat", FORMULA, estimand="ATO")
    bal = w.balance()
    # exact at the MLE; R's glm stopping rule leaves the score ~1e-8 from it
    assert bal.max_abs_smd() < 1e-6
    assert w.ess["treated"] > 0 and w.max_weight["control"] <= 1


def test_ate_weights_stabilized_and_trimmed(lalonde):
    w = weights(lalonde, "treat", FORMULA, estimand="ATE", stabilize=True)
    e, t = w.propensity.scores, lalonde.treat
    p1 = t.mean()
    np.testing.assert_allclose(w.weights[t == 1], (p1 / e)[t == 1], rtol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StatisticalWarning)
        wt = weights(lalonde, "treat", FORMULA, estimand="ATE", trim=0.95)
    assert wt.weights.max() == pytest.approx(np.quantile(w.weights, 0.95))
    assert wt.n_trimmed == int(np.sum(w.weights > np.quantile(w.weights, 0.95)))
    with pytest.raises(ParamsError):
        weights(lalonde, "treat", FORMULA, estimand="ATX")


def test_extreme_weights_warn():
    # 40 units; one control sits among the treated (x = 2.5), so its ATT weight
    # e/(1-e) dominates the control arm
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(0, 1, 20), rng.normal(-1, 1, 19), 2.5]
    d = pd.DataFrame({"x": x, "t": np.r_[np.ones(20), np.zeros(20)].astype(int)})
    with pytest.warns(StatisticalWarning, match="extreme weights"):
        weights(d, "t", "x", estimand="ATT")


def test_regression_method_matches_statsmodels_ols_hc1(lalonde):
    import statsmodels.formula.api as smf

    eff = estimate(lalonde, "re78", "treat", FORMULA, method="regression")
    ols = smf.ols("re78 ~ treat + " + FORMULA, lalonde).fit(cov_type="HC1")
    assert eff.estimate == pytest.approx(ols.params["treat"], rel=1e-10)
    assert eff.std_error == pytest.approx(ols.bse["treat"], rel=1e-10)
    assert eff.estimand == "ATE" and "homogeneous" in eff.diagnostics["estimand_note"]


def test_effect_record_and_binary_outcome(lalonde):
    d = lalonde.assign(employed=(lalonde.re78 > 0).astype(int))
    eff = estimate(d, "employed", "treat", FORMULA, outcome_type="binary")
    md = eff.adjustment.data
    rd = md.loc[md.treat == 1, "employed"].mean() - md.loc[md.treat == 0, "employed"].mean()
    assert eff.estimate == pytest.approx(rd, rel=1e-10) and eff.scale == "risk_difference"
    rec = eff.to_frame()
    assert list(rec.columns[:5]) == ["outcome", "contrast", "estimand", "method", "scale"]
    assert "ATT of treat on employed" in eff.summary()
    with pytest.raises(DataValidationError, match="0/1"):
        estimate(lalonde, "re78", "treat", FORMULA, outcome_type="binary")
    with pytest.raises(ParamsError, match="unknown option"):
        estimate(lalonde, "re78", "treat", FORMULA, calliper=0.1)
    with pytest.raises(ParamsError, match="method"):
        estimate(lalonde, "re78", "treat", FORMULA, method="tmle")


def test_equipoise_definition():
    """Walker et al. (2013): with P = 0.5 the preference score equals the propensity score."""
    from evalkit.causal import equipoise

    e = np.array([0.1, 0.35, 0.5, 0.65, 0.9, 0.2, 0.4, 0.6])
    t = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    eq = equipoise(e, t)
    assert eq["share_treated"] == 0.75 and eq["share_control"] == 0.5
    assert eq["in_equipoise"] is True


def test_quasi_separation_warns_and_names_the_covariate():
    # every unit with z = 1 is treated: z's coefficient runs off (quasi-separation)
    rng = np.random.default_rng(0)
    x, z = rng.normal(size=200), (rng.random(200) < 0.1).astype(int)
    t = np.where(z == 1, 1, (rng.random(200) < 0.4).astype(int))
    d = pd.DataFrame({"x": x, "z": z, "t": t})
    with pytest.warns(StatisticalWarning, match=r"quasi-separation.*\['z'\]"):
        propensity(d, "t", "x + z")


def test_outcome_without_events(lalonde):
    d = lalonde.assign(none=0, rare=(lalonde.treat == 1) & (lalonde.age == 17))
    with pytest.raises(DataValidationError, match="no events in both arms"):
        estimate(d, "none", "treat", FORMULA, outcome_type="binary")
    with pytest.warns(StatisticalWarning, match="control arm has no events"):
        estimate(d.assign(rare=d.rare.astype(int)), "rare", "treat", FORMULA,
                 outcome_type="binary")


def test_exact_column_with_missing_values_is_an_error(lalonde):
    d = lalonde.assign(site=["a", "b"] * 306 + [None, "a"])
    with pytest.raises(DataValidationError, match="exact-matching"):
        match(d, "treat", FORMULA, exact="site")
