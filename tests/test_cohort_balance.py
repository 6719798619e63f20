"""The cohort-balance design: params, the weighted outcome models, the synthetic plan's
confounding and the stored design (the workbook run: test_cohort_balance_workbook.py)."""
import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest

from evalkit.analysis import design as D
from evalkit import params as P
from evalkit.causal import estimate
from evalkit.causal.estimate import _fit_weighted_poisson
from evalkit.errors import ParamsError, StatisticalWarning


# ----------------------------------------------------------------------------- params
@pytest.mark.parametrize("design,fragment", [
    ({"method": "regression", "ratio": 2}, "design.ratio only apply to method 'match'"),
    ({"method": "match", "trim": 0.99}, "design.trim only apply to method 'ipw'"),
    ({"method": "match", "estimand": "ATE"}, "use method: ipw for the ATE"),
    ({"method": "regression", "estimand": "ATO"}, "not what regression estimates"),
    ({"covariates": ["age_at_index"], "formula": "age_at_index"}, "not both"),
    ({"covariates": []}, "design.covariates is empty"),
    ({"formula": "age +"}, "cannot be parsed"),
    ({"formula": "treated ~ age"}, "give only the right-hand side"),
    ({"calipr": 0.1}, "did you mean 'caliper'"),
    ({"method": "ipw", "trim": 0.3}, "design.trim"),
    ({"method": "weighting"}, "design.method"),
    ({"outcome_types": {"er_visits": "poisson"}}, "design.outcome_types.er_visits"),
])
def test_design_params_are_checked(design, fragment):
    with pytest.raises(ParamsError) as err:
        P.validate({"design": design})
    assert fragment in str(err.value)


def test_design_defaults_and_round_trip():
    p = P.validate({})
    assert p.design.method == "match" and p.design.resolved_estimand == "ATT"
    assert p.design.caliper == 0.2 and p.design.distance == "logit"
    # a validated params.json (every key written out) validates again unchanged
    again = P.validate(json.loads(json.dumps(p.to_dict())))
    assert again == p
    ipw = P.validate({"design": {"method": "ipw", "trim": 0.99}})
    assert P.validate(ipw.to_dict()).design.trim == 0.99
    assert ipw.design.resolved_estimand == "ATE"


def test_person_mode_design_columns_must_be_loaded():
    base = {"mode": "person", "data": {"person": {
        "path": "x.csv", "treatment": "t", "outcomes": ["y"], "covariates": ["age"]}}}
    with pytest.raises(ParamsError, match=r"\['sex'\] that are not in data.person.covariates"):
        P.validate({**base, "design": {"formula": "age + C(sex)"}})
    with pytest.raises(ParamsError, match="signed_outcomes"):
        P.validate({**base, "data": {"person": {**base["data"]["person"],
                                                "signed_outcomes": ["z"]}}})
    with pytest.raises(ParamsError, match="negative control must be an outcome"):
        P.validate({**base, "design": {"negative_controls": {"outcomes": ["y"]}}})
    ok = P.validate({**base, "design": {"formula": "age + I(age**2)"}})
    assert D.formula_names(ok.design.formula) == ["age"]


def test_formula_names():
    assert D.formula_names("C(sex) + age + I(age**2) + np.log(wt71)") == ["sex", "age", "wt71"]
    with pytest.raises(ValueError, match="uses no column"):
        D.formula_names("1")


# ------------------------------------------------------- weighted Poisson sandwiches
def _hand_sandwich(X, y, w, mu, kind, groups=None):
    """H^-1 B H^-1 of the weighted Poisson score w x (y - mu), written out in numpy."""
    n, k = X.shape
    bread = np.linalg.inv((X * (w * mu)[:, None]).T @ X)
    u = w * (y - mu)
    if kind == "HC3":
        sw = np.sqrt(w * mu)[:, None]
        h = np.diag((X * sw) @ bread @ (X * sw).T)
        u = u / (1 - h)
    scores = X * u[:, None]
    if kind == "cluster":
        g = np.unique(groups)
        scores = np.vstack([scores[groups == v].sum(0) for v in g])
        c = len(g) / (len(g) - 1) * (n - 1) / (n - k)
    else:
        c = 1.0
    return c * bread @ (scores.T @ scores) @ bread


@pytest.mark.parametrize("vcov", ["HC0", "HC3", "cluster"])
def test_weighted_poisson_sandwich_by_hand(vcov):
    rng = np.random.default_rng(7)
    n = 400
    df = pd.DataFrame({"treated": rng.integers(0, 2, n), "age": rng.normal(50, 10, n),
                       "months": rng.uniform(1, 12, n)})
    mu = np.exp(-2 + 0.3 * df["treated"] + 0.01 * df["age"]) * df["months"]
    df["y"] = rng.poisson(mu * rng.gamma(1.0, 1.0, n))
    w = rng.gamma(2.0, 0.5, n)
    groups = np.repeat(np.arange(n // 2), 2)
    fit, table, j, _ = _fit_weighted_poisson(df, "y", "treated", "age", w, vcov,
                                             groups if vcov == "cluster" else None, 0.05,
                                             "months")
    X = np.column_stack([np.ones(n), df["treated"], df["age"]])
    ref = _hand_sandwich(X, df["y"].to_numpy(float), w, np.asarray(fit.mu), vcov, groups)
    assert table["std_error"].to_numpy() == pytest.approx(np.sqrt(np.diag(ref))[[0, 1, 2]],
                                                           rel=1e-9)
    if vcov == "HC0":   # and statsmodels' own sandwich (an independent implementation)
        import statsmodels.api as sm
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref_sm = sm.GLM(df["y"], X, family=sm.families.Poisson(), offset=np.log(df["months"]),
                            var_weights=w).fit(cov_type="HC0")
        assert table["std_error"].to_numpy() == pytest.approx(ref_sm.bse.to_numpy(), rel=1e-8)
    # the point estimate is R's glm(y ~ treated + age, quasipoisson, weights = w,
    # offset = log(months)): the weighted score equations
    score = X.T @ (w * (df["y"].to_numpy() - fit.mu))
    assert np.abs(score).max() < 1e-6


def test_count_estimate_reuses_a_design_and_reports_ratios():
    rng = np.random.default_rng(3)
    n = 600
    df = pd.DataFrame({"treated": rng.integers(0, 2, n), "x": rng.normal(0, 1, n),
                       "mm": rng.uniform(6, 12, n)})
    df["y"] = rng.poisson(0.2 * df["mm"] * np.exp(0.4 * df["x"]))
    from evalkit import causal
    w = causal.weights(df, "treated", "x", estimand="ATE")
    a = estimate(df, "y", "treated", "x", method="ipw", estimand="ATE", outcome_type="count",
                 exposure="mm")
    b = estimate(df, "y", "treated", "x", method="ipw", estimand="ATE", outcome_type="count",
                 exposure="mm", design=w)
    assert a.scale == "rate_ratio" and a.estimate == pytest.approx(b.estimate, rel=1e-12)
    assert a.ci_low < a.estimate < a.ci_high
    assert math.log(a.ci_high) - math.log(a.estimate) == pytest.approx(1.959964 * a.std_error,
                                                                       rel=1e-5)
    with pytest.raises(ParamsError, match="cannot be combined with a fitted design"):
        estimate(df, "y", "treated", "x", method="ipw", outcome_type="count", design=w, trim=0.9)
    with pytest.raises(ParamsError, match="MatchResult for method='match'"):
        estimate(df, "y", "treated", "x", method="match", outcome_type="count", design=w)


# --------------------------------------------------- the confounded synthetic plan
@pytest.fixture(scope="module")
def demo(confounded):
    """A 4,000-member demo plan (seed 1): sicker members are referred more often
    (tests/shared_runs.py; shared with tests/test_negative_controls.py)."""
    return confounded


def _ratios(records):
    return records[records["scale"].isin(["rate_ratio", "ratio"])].set_index("outcome")


def test_crude_is_biased_and_the_design_moves_toward_the_truth(demo):
    st, des, nc, main, crude, truth = demo
    adj, raw = _ratios(main), _ratios(crude)
    assert set(truth) == {"er_visits", "outpatient_mh_visits", "inpatient_days", "total_cost"}
    for o in ("er_visits", "outpatient_mh_visits", "total_cost"):
        t = math.log(truth[o])
        # referral of sicker members makes the crude ratio far above the truth (> 1 even
        # though the program reduces use)
        assert raw.loc[o, "estimate"] > 1.2 > truth[o]
        assert abs(math.log(adj.loc[o, "estimate"]) - t) < 0.5 * abs(math.log(raw.loc[o, "estimate"]) - t)
        # what is true of this generator: it confounds through a latent frailty that the
        # baseline covariates capture only in part, so some upward bias remains
        assert adj.loc[o, "estimate"] > truth[o]
    # inpatient days are rare and noisy; the design still moves them toward the truth
    o = "inpatient_days"
    assert abs(math.log(adj.loc[o, "estimate"] / truth[o])) < abs(math.log(raw.loc[o, "estimate"] / truth[o]))
    diag = D.diagnostics(des, nc.null)
    assert D.passes(diag) and des.balance.max_abs_smd() < 0.1


def test_design_is_stored_and_reused_with_the_same_numbers(demo, tmp_path):
    st, des, nc, main, crude, truth = demo
    work = tmp_path / "work"
    D.save_design(des, work, passed=True)
    table, meta = D.load_design(work)
    assert list(table.columns) == ["member_id", "treated", "propensity_score", "weight", "subclass"]
    assert len(table) == len(des.frame) and meta["passed"] is True
    assert table["weight"].gt(0).sum() == int(des.n["in the design (weight > 0)"].sum())
    kinds = st.design_outcomes()
    again = D.effects_from_table(st.treated_frame(), table, meta, list(kinds), kinds)
    pd.testing.assert_frame_equal(
        again[["outcome", "scale", "estimate", "std_error", "ci_low", "ci_high"]],
        main[["outcome", "scale", "estimate", "std_error", "ci_low", "ci_high"]],
        rtol=1e-10, atol=0)
    assert D.load_design(tmp_path / "nowhere") is None


def test_failing_diagnostics_are_reported_not_hidden(demo):
    st, des, nc, main, crude, truth = demo
    strict = D.fit_design(des.frame, D.DesignSpec(**{**des.spec.__dict__, "max_smd": 0.001}))
    diag = D.diagnostics(strict, nc.null)
    assert not D.passes(diag)
    text = D.verdict(diag)
    assert text.startswith("**FAIL") and "diagnostics_passed: false" in text
    assert D.verdict(D.diagnostics(des, nc.null)).startswith("**PASS")


def test_other_methods_run_on_the_same_plan(demo):
    st, des, nc, main, crude, truth = demo
    kinds = {"outpatient_mh_visits": "count"}
    for prm in ({"method": "ipw", "estimand": "ATO"}, {"method": "ipw", "trim": 0.99},
                {"method": "regression"}, {"ratio": 2, "replace": True}):
        frame, spec = D.design_frame(st.treated_frame(), P.validate({"design": prm}).design,
                                     st.covariates())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            d = D.fit_design(frame, spec)
            rec, _ = D.effects(d, list(kinds), kinds)
        est = rec.iloc[0]
        assert est["scale"] == "rate_ratio" and 0.6 < est["estimate"] < 1.0, prm
        assert est["estimand"] == spec.estimand
        if spec.method != "regression":
            assert d.balance.max_abs_smd() < 0.1, prm


def test_arm_columns_named_as_design_covariates_are_left_out_with_a_warning(demo):
    """design.covariates naming the arm itself (the 0/1 treatment, or the group label as
    categories) cannot be adjusted for: they are left out of the propensity model, listed
    with the reason in the design, and named in a warning the workbook shows."""
    st = demo[0]
    prm = P.validate({"design": {"covariates": ["treated", "C(group)", "age_at_index"]}}).design
    with pytest.warns(StatisticalWarning, match=r"treated \(identical to the treatment\); "
                                                r"C\(group\) \(nested in the arms"):
        frame, spec = D.design_frame(st.treated_frame(), prm, st.covariates())
    assert spec.formula == "age_at_index"
    assert [d["term"] for d in spec.left_out] == ["treated", "C(group)"]
