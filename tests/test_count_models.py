"""Count models (evalkit.models.count) against R.

Reference values: tests/reference/expected/*.json, produced by the R scripts in
tests/reference/r/ (R 4.2.2, MASS 7.3-58.2, pscl 1.5.5, sandwich 3.0-2; see
tests/reference/README.md). Each test names the R call and JSON block it compares to.
"""
import gc
import warnings
import weakref

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from conftest import reference_data, reference_json
from scipy import stats

from evalkit.errors import (
    ConvergenceError, DataDroppedWarning, DataValidationError, ParamsError, StatisticalWarning,
)
from evalkit import limits
from evalkit.models.count import CountResult, _Mixture, count_model
from evalkit.models.effects import r_term_name

RHS = "lncoins + idp + lpi + fmde + physlm + disea + hlthg + hlthf + hlthp"
F_RAND = "mdvis ~ " + RHS
F_SYNTH = "er_visits ~ treated + age + female + comorbidity"


@pytest.fixture(scope="module")
def randhie():
    return reference_data("randhie")


@pytest.fixture(scope="module")
def synth():
    return reference_data("synthetic_costs")


@pytest.fixture(scope="module")
def nb_ref():
    return reference_json("nb_randhie")


@pytest.fixture(scope="module")
def zi_ref():
    return reference_json("zeroinfl_randhie")


@pytest.fixture(scope="module")
def zinb_fit(randhie):
    return count_model(randhie, F_RAND, family="zinb")


@pytest.fixture(scope="module")
def hurdle_fit(randhie):
    return count_model(randhie, F_RAND, family="hurdle_negbin")


def check(table, column, ref: dict, rtol, atol=0.0, strip=""):
    """Compare a table column with an R named vector, term by term (names must match)."""
    names = [k[len(strip):] if strip and k.startswith(strip) else k for k in ref]
    assert table["term"].tolist() == names
    np.testing.assert_allclose(table[column].to_numpy(), np.array(list(ref.values())),
                               rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------- Poisson
def test_poisson_matches_r_glm(randhie, nb_ref):
    """R: glm(mdvis ~ ..., family = poisson(), data = randhie); nb_randhie.json "poisson".

    R's vcov() uses the IRLS weights of the last-but-one iteration; ours are at the
    converged means, which moves SEs by ~3e-8 relative (inside 1e-6)."""
    ref = nb_ref["poisson"]
    fit = count_model(randhie, F_RAND, family="poisson")
    assert isinstance(fit, CountResult) and fit.theta is None
    check(fit.table, "estimate", ref["coefficients"], rtol=1e-6)
    check(fit.table, "std_error", ref["se"], rtol=1e-6)
    assert fit.loglik == pytest.approx(ref["logLik"], rel=1e-9)
    assert fit.extra["deviance"] == pytest.approx(ref["deviance"], rel=1e-8)
    assert fit.nobs == ref["nobs"]


@pytest.mark.parametrize("kind", ["HC0", "HC1"])
def test_poisson_robust_matches_sandwich(randhie, nb_ref, kind):
    """R: sandwich::vcovHC(glm(...poisson...), type = "HC0"/"HC1"); nb_randhie.json
    "poisson" se_HC0 / se_HC1."""
    fit = count_model(randhie, F_RAND, family="poisson", vcov=kind)
    check(fit.table, "std_error", nb_ref["poisson"][f"se_{kind}"], rtol=1e-6)


# ----------------------------------------------------------------------------- negbin
def test_negbin_matches_mass_glm_nb(randhie, nb_ref):
    """R: MASS::glm.nb(mdvis ~ ..., control = glm.control(epsilon = 1e-13, maxit = 200));
    nb_randhie.json "negbin_tight" (coefficients, IRLS SEs at theta, theta, SE.theta,
    logLik)."""
    ref = nb_ref["negbin_tight"]
    fit = count_model(randhie, F_RAND, family="negbin")
    check(fit.table, "estimate", ref["coefficients"], rtol=1e-6)
    check(fit.table, "std_error", ref["se"], rtol=1e-6)
    assert fit.theta == pytest.approx(ref["theta"], rel=1e-6)
    assert fit.se_theta == pytest.approx(ref["se_theta"], rel=1e-6)
    assert fit.extra["theta"] == fit.theta
    assert fit.loglik == pytest.approx(ref["logLik"], rel=1e-9)
    # z statistics as summary.glm.nb reports them
    check(fit.table.assign(z=fit.table.estimate / fit.table.std_error), "z", ref["z"], rtol=1e-6)


# ----------------------------------------------------------------------------- pscl
def test_zinb_matches_pscl_zeroinfl(zinb_fit, zi_ref):
    """R: pscl::zeroinfl(mdvis ~ rhs | rhs, dist = "negbin",
    control = zeroinfl.control(reltol = 1e-14, maxit = 50000)); block
    "zeroinfl_negbin_tight".

    Tolerances from tests/reference/README.md: the ZINB likelihood is flat (tight R refits
    move coefficients by ~3e-7), so 1e-6 relative with an absolute 1e-7 for the
    near-zero count_hlthg (-0.0004). R's SEs come from optim's finite-difference Hessian
    (step 1e-3), ours from the exact Hessian: they differ by up to 1.05e-4 relative
    (zero_disea), hence rtol 2e-4; test_pscl_se_difference_is_optims_step shows the gap is
    that step."""
    ref = zi_ref["zeroinfl_negbin_tight"]
    t = zinb_fit.table
    count, zero = t[t.part == "count"], t[t.part == "zero"]
    check(count, "estimate", ref["count_coefficients"], rtol=1e-6, atol=1e-7)
    check(zero, "estimate", ref["zero_coefficients"], rtol=1e-6, atol=1e-7)
    check(count, "std_error", ref["count_se"], rtol=2e-4, strip="count_")
    check(zero, "std_error", ref["zero_se"], rtol=2e-4, strip="zero_")
    assert zinb_fit.theta == pytest.approx(ref["theta"], rel=1e-6)
    assert zinb_fit.extra["se_log_theta"] == pytest.approx(ref["se_log_theta"], rel=1e-4)
    assert zinb_fit.loglik == pytest.approx(ref["logLik"], rel=1e-10)
    assert zinb_fit.nobs == ref["nobs"]


def test_hurdle_negbin_matches_pscl_hurdle(hurdle_fit, zi_ref):
    """R: pscl::hurdle(mdvis ~ rhs | rhs, dist = "negbin", zero.dist = "binomial",
    control = hurdle.control(reltol = 1e-14, maxit = 50000)); block
    "hurdle_negbin_tight". SE tolerance 1e-4: optim's finite-difference Hessian in R
    (measured gap 4.6e-5)."""
    ref = zi_ref["hurdle_negbin_tight"]
    t = hurdle_fit.table
    count, zero = t[t.part == "count"], t[t.part == "zero"]
    check(count, "estimate", ref["count_coefficients"], rtol=1e-6, atol=1e-7)
    check(zero, "estimate", ref["zero_coefficients"], rtol=1e-6, atol=1e-7)
    check(count, "std_error", ref["count_se"], rtol=1e-4, strip="count_")
    check(zero, "std_error", ref["zero_se"], rtol=1e-4, strip="zero_")
    assert hurdle_fit.theta == pytest.approx(ref["theta"], rel=1e-6)
    assert hurdle_fit.extra["se_log_theta"] == pytest.approx(ref["se_log_theta"], rel=1e-4)
    assert hurdle_fit.loglik == pytest.approx(ref["logLik"], rel=1e-10)


def _optim_style_se(lik, params):
    """SEs from the Hessian as R's optim(hessian = TRUE) builds it: central differences
    of the analytic gradient with step ndeps = 1e-3, then symmetrised."""
    P = len(params)
    H = np.zeros((P, P))
    for i in range(P):
        e = np.zeros(P)
        e[i] = 1e-3
        H[i] = (lik.score(params + e) - lik.score(params - e)) / 2e-3
    H = (H + H.T) / 2
    return np.sqrt(np.diag(np.linalg.inv(-H)))


def test_pscl_se_difference_is_optims_step(randhie, zinb_fit, hurdle_fit, zi_ref):
    """With R's finite-difference Hessian (step 1e-3) rebuilt from our analytic score, the
    SEs reproduce pscl's (zeroinfl_negbin_tight / hurdle_negbin_tight count_se, zero_se,
    se_log_theta) to 1e-6: the 1e-4 gap above is optim's step, not a different model."""
    X = np.column_stack([np.ones(len(randhie)), randhie[RHS.split(" + ")].to_numpy(float)])
    y = randhie["mdvis"].to_numpy(float)
    ref = zi_ref["zeroinfl_negbin_tight"]
    se = _optim_style_se(_Mixture("zi", "negbin", y, X, 0.0, X), zinb_fit.model.params)
    want = np.r_[list(ref["count_se"].values()), list(ref["zero_se"].values()), ref["se_log_theta"]]
    np.testing.assert_allclose(se, want, rtol=1e-6)

    ref = zi_ref["hurdle_negbin_tight"]
    pos = y > 0
    p = hurdle_fit.model.params
    se = _optim_style_se(_Mixture("truncated", "negbin", y[pos], X[pos], 0.0), np.r_[p[:10], p[-1]])
    want = np.r_[list(ref["count_se"].values()), ref["se_log_theta"]]
    np.testing.assert_allclose(se, want, rtol=1e-6)


def test_zero_part_after_bar_equals_zero_formula(synth):
    """R's 'y ~ x | z' notation and zero_formula= give the same fit."""
    a = count_model(synth, F_SYNTH + " | age + comorbidity", family="zip",
                    exposure="member_months")
    b = count_model(synth, F_SYNTH, family="zip", exposure="member_months",
                    zero_formula="~ age + comorbidity")
    pd.testing.assert_frame_equal(a.table, b.table)
    assert a.table[a.table.part == "zero"].term.tolist() == ["(Intercept)", "age", "comorbidity"]


# ----------------------------------------------------------------------------- offset
@pytest.fixture(scope="module")
def off_ref():
    return reference_json("poisson_offset_synth")


@pytest.mark.parametrize("kind,key", [("model", "se"), ("HC0", "se_HC0"), ("HC1", "se_HC1")])
def test_poisson_offset_matches_r(synth, off_ref, kind, key):
    """R: glm(er_visits ~ treated + age + female + comorbidity + offset(log(member_months)),
    poisson, control = glm.control(epsilon = 1e-13)); vcovHC HC0 / HC1;
    poisson_offset_synth.json."""
    fit = count_model(synth, F_SYNTH, exposure="member_months", vcov=kind)
    check(fit.table, "estimate", off_ref["coefficients"], rtol=1e-6)
    check(fit.table, "std_error", off_ref[key], rtol=1e-6)
    assert fit.loglik == pytest.approx(off_ref["logLik"], rel=1e-9)
    assert fit.extra["pearson_chi2"] == pytest.approx(off_ref["pearson_chi2"], rel=1e-6)


@pytest.mark.parametrize("kind,key", [("HC0", "treated_rate_ratio_robust_HC0"),
                                      ("model", "treated_rate_ratio_model_se")])
def test_rate_ratio_matches_r(synth, off_ref, kind, key):
    """R: exp(b["treated"]) and exp(b +/- qnorm(0.975) * se) with the HC0 / model SE;
    poisson_offset_synth.json treated_rate_ratio_*. The ratio of averaged predicted rates
    equals exp(coef) for a Poisson model with the treatment as a main effect."""
    eff = count_model(synth, F_SYNTH, exposure="member_months", vcov=kind).effect("treated")
    row = eff.table.set_index("term").loc["rate_ratio"]
    ref = off_ref[key]
    assert row.estimate == pytest.approx(ref["rate_ratio"], rel=1e-6)
    assert row.ci_low == pytest.approx(ref["ci_lower"], rel=1e-6)
    assert row.ci_high == pytest.approx(ref["ci_upper"], rel=1e-6)


def test_rate_difference_from_r_coefficients(synth, off_ref):
    """Events per 1,000 member-months, recomputed here from R's coefficients and R's
    vcovHC(type = "HC0") matrix (poisson_offset_synth.json coefficients, vcov_HC0):
    1000 * [mean(exp(x1'b)) - mean(exp(x0'b))] with the delta-method SE."""
    terms = list(off_ref["coefficients"])
    b = np.array(list(off_ref["coefficients"].values()))
    V = np.array([[off_ref["vcov_HC0"][r][c] for c in terms] for r in terms])
    X = np.column_stack([np.ones(len(synth)), synth[terms[1:]].to_numpy(float)])
    X1, X0 = X.copy(), X.copy()
    X1[:, 1], X0[:, 1] = 1.0, 0.0
    r1, r0 = np.exp(X1 @ b), np.exp(X0 @ b)        # predicted counts / member-months
    diff = 1000 * (r1.mean() - r0.mean())
    grad = 1000 * (X1.T @ r1 - X0.T @ r0) / len(X)
    se = np.sqrt(grad @ V @ grad)
    eff = count_model(synth, F_SYNTH, exposure="member_months", vcov="HC0").effect("treated")
    row = eff.table.set_index("term").loc["rate_difference_per_1000_mm"]
    assert row.estimate == pytest.approx(diff, rel=1e-6)
    assert row.std_error == pytest.approx(se, rel=1e-6)
    z = stats.norm.ppf(0.975)
    assert row.ci_low == pytest.approx(diff - z * se, rel=1e-6)
    assert eff.mean_treated == pytest.approx(1000 * r1.mean(), rel=1e-6)
    assert list(eff.table.columns) == ["term", "estimate", "std_error", "ci_low", "ci_high",
                                       "p_value"]


def test_cluster_of_one_row_each_is_hc1(synth, off_ref):
    """vcovCL's factor G/(G-1) (n-1)/(n-k) with one row per cluster is n/(n-k), i.e. HC1:
    compare with R's vcovHC(type = "HC1") (poisson_offset_synth.json se_HC1)."""
    fit = count_model(synth, F_SYNTH, exposure="member_months", vcov={"cluster": "member_id"})
    check(fit.table, "std_error", off_ref["se_HC1"], rtol=1e-6)


def test_cluster_matches_statsmodels(synth):
    """Cluster-robust SEs (vcovCL, HC1 type) against statsmodels' own cluster estimator
    with both small-sample corrections (an independent implementation)."""
    fit = count_model(synth, F_SYNTH, exposure="member_months",
                      vcov={"cluster": "comorbidity"})
    X = sm.add_constant(synth[["treated", "age", "female", "comorbidity"]].to_numpy(float))
    sm_fit = sm.GLM(synth.er_visits.to_numpy(float), X, family=sm.families.Poisson(),
                    offset=np.log(synth.member_months.to_numpy(float))).fit(
        cov_type="cluster", cov_kwds={"groups": synth.comorbidity.to_numpy(),
                                      "use_correction": True, "df_correction": True})
    np.testing.assert_allclose(fit.table.std_error, sm_fit.bse, rtol=1e-6)


# ----------------------------------------------------------------------------- ZIP / hurdle
def test_zip_matches_statsmodels(synth):
    """ZIP with exposure against statsmodels' ZeroInflatedPoisson (independent code):
    coefficients and loglik to 1e-8; SEs against the inverse of statsmodels' numerical
    Hessian of its own log-likelihood (rtol 1e-4, numerical differentiation).
    (statsmodels' analytic ZeroInflatedPoisson.hessian disagrees with its own numerical
    Hessian when an offset is given, so it is not used here.)"""
    from statsmodels.discrete.count_model import ZeroInflatedPoisson
    from statsmodels.tools.numdiff import approx_hess

    fit = count_model(synth, F_SYNTH, family="zip", exposure="member_months")
    X = sm.add_constant(synth[["treated", "age", "female", "comorbidity"]].to_numpy(float))
    y = synth.er_visits.to_numpy(float)
    off = np.log(synth.member_months.to_numpy(float))
    start_c = sm.GLM(y, X, family=sm.families.Poisson(), offset=off).fit().params
    start_z = sm.GLM((y == 0).astype(float), X, family=sm.families.Binomial()).fit().params
    model = ZeroInflatedPoisson(y, X, exog_infl=X, offset=off)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = model.fit(start_params=np.r_[start_z, start_c], method="bfgs", maxiter=5000,
                        gtol=1e-9, disp=0)
        res = model.fit(start_params=res.params, method="newton", maxiter=100, tol=1e-14, disp=0)
    t = fit.table
    ours = np.r_[t[t.part == "zero"].estimate, t[t.part == "count"].estimate]
    np.testing.assert_allclose(ours, res.params, rtol=1e-8)
    assert fit.loglik == pytest.approx(res.llf, rel=1e-10)
    se_num = np.sqrt(np.diag(np.linalg.inv(-approx_hess(res.params, model.loglike))))
    np.testing.assert_allclose(np.r_[t[t.part == "zero"].std_error, t[t.part == "count"].std_error],
                               se_num, rtol=1e-4)


def test_hurdle_poisson_matches_statsmodels(synth):
    """Hurdle Poisson = logit of any visit (statsmodels Logit) + zero-truncated Poisson
    (statsmodels TruncatedLFPoisson), as the likelihood factorises."""
    from statsmodels.discrete.truncated_model import TruncatedLFPoisson

    fit = count_model(synth, F_SYNTH, family="hurdle_poisson", exposure="member_months")
    X = sm.add_constant(synth[["treated", "age", "female", "comorbidity"]].to_numpy(float))
    y = synth.er_visits.to_numpy(float)
    off = np.log(synth.member_months.to_numpy(float))
    pos = y > 0
    logit = sm.Logit(pos.astype(float), X).fit(disp=0, tol=1e-12)
    trunc = TruncatedLFPoisson(y[pos], X[pos], offset=off[pos]).fit(method="newton", tol=1e-14,
                                                                    maxiter=100, disp=0)
    t = fit.table
    np.testing.assert_allclose(t[t.part == "zero"].estimate, logit.params, rtol=1e-8)
    np.testing.assert_allclose(t[t.part == "zero"].std_error, logit.bse, rtol=1e-6)
    np.testing.assert_allclose(t[t.part == "count"].estimate, trunc.params, rtol=1e-8)
    # Tolerance from the reference's own accuracy. statsmodels' TruncatedLFPoisson.bse
    # inverts a numerical Hessian (approx_hess3: a central second difference of the
    # log-likelihood, step eps^(1/3) max(|b|, 0.1)); its rounding error, about
    # eps |loglik| / h^2, moves with the BLAS kernel's summation order (measured
    # statsmodels 0.15.0: bse off by 4.1e-7 relative with OpenBLAS's Haswell kernel,
    # 2.5e-6 with Sandybridge). The same Hessian as a central first difference of
    # statsmodels' analytic score has entries accurate to ~eps^(2/3) (~4e-11); through the
    # inverse the SE error is at most about the condition number of the scaled
    # information (126 here, asserted below 1e3) times that, so the SEs must agree with it
    # to 1e-8 (measured: 2.4e-10). Against bse the tolerance is 3x the measured gap
    # between the two references (at least 1e-8).
    from statsmodels.tools.numdiff import approx_fprime
    H_score = approx_fprime(trunc.params, trunc.model.score, centered=True)
    H_score = (H_score + H_score.T) / 2
    d = np.sqrt(np.abs(np.diag(H_score)))
    assert np.linalg.cond(H_score / np.outer(d, d)) < 1e3
    se_score = np.sqrt(np.diag(np.linalg.inv(-H_score)))
    se = t[t.part == "count"].std_error.to_numpy()
    np.testing.assert_allclose(se, se_score, rtol=1e-8)
    gap = float(np.max(np.abs(np.asarray(trunc.bse) / se_score - 1)))
    np.testing.assert_allclose(se, trunc.bse, rtol=max(3 * gap, 1e-8))
    assert fit.loglik == pytest.approx(logit.llf + trunc.llf, rel=1e-10)


@pytest.mark.parametrize("kind,dist", [("zi", "poisson"), ("zi", "negbin"),
                                       ("truncated", "poisson"), ("truncated", "negbin")])
def test_likelihood_derivatives(kind, dist):
    """The hand-written score and Hessian agree with central differences of the
    log-likelihood and of the score."""
    from statsmodels.tools.numdiff import approx_fprime

    rng = np.random.default_rng(7)
    n = 400
    X = np.column_stack([np.ones(n), rng.normal(size=n), rng.integers(0, 2, n)])
    y = rng.negative_binomial(2, 0.4, n).astype(float) * (rng.random(n) > 0.2)
    if kind == "truncated":
        X, y = X[y > 0], y[y > 0]
    off = rng.normal(scale=0.1, size=len(y))
    lik = _Mixture(kind, dist, y, X, off, X if kind == "zi" else None)
    P = X.shape[1] * (2 if kind == "zi" else 1) + (dist == "negbin")
    p = rng.normal(scale=0.2, size=P)
    np.testing.assert_allclose(lik.score(p), approx_fprime(p, lik.loglik, centered=True),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(lik.hessian(p), approx_fprime(p, lik.score, centered=True),
                               rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(lik.score_obs(p).sum(axis=0), lik.score(p), rtol=1e-12)


@pytest.mark.parametrize("family", ["zinb", "hurdle_negbin"])
def test_effect_of_two_part_counts_matches_recycled_predictions(synth, family):
    """effect() averages the model's mean (both parts) with the treatment set to 1 and 0;
    recomputed here from the fitted coefficients and theta."""
    fit = count_model(synth, F_SYNTH, family=family, exposure="member_months")
    t = fit.table
    b = t[t.part == "count"].estimate.to_numpy()
    g = t[t.part == "zero"].estimate.to_numpy()
    th = fit.theta
    X = np.column_stack([np.ones(len(synth)), synth[["treated", "age", "female",
                                                     "comorbidity"]].to_numpy(float)])
    means = []
    for v in (1.0, 0.0):
        Xv = X.copy()
        Xv[:, 1] = v
        mu = np.exp(Xv @ b) * synth.member_months.to_numpy(float)
        p = 1 / (1 + np.exp(-(Xv @ g)))
        m = (1 - p) * mu if family == "zinb" else p * mu / (1 - (th / (th + mu)) ** th)
        means.append(np.mean(1000 * m / synth.member_months.to_numpy(float)))
    eff = fit.effect("treated")
    assert eff.at("rate_difference_per_1000_mm") == pytest.approx(means[0] - means[1], rel=1e-10)
    assert eff.at("rate_ratio") == pytest.approx(means[0] / means[1], rel=1e-10)
    assert np.all(eff.table.std_error > 0)


def test_effect_without_exposure_uses_difference_and_ratio(randhie):
    eff = count_model(randhie, F_RAND, family="poisson").effect("idp")
    assert eff.table.term.tolist() == ["difference", "ratio"]
    fit = count_model(randhie, F_RAND, family="poisson")
    b = fit.table.set_index("term").estimate
    assert eff.at("ratio") == pytest.approx(np.exp(b["idp"]), rel=1e-10)


# ----------------------------------------------------------------------------- properties
def test_row_order_and_input_unchanged(synth):
    before = synth.copy()
    a = count_model(synth, F_SYNTH, family="negbin", exposure="member_months")
    shuffled = synth.sample(frac=1.0, random_state=3)
    b = count_model(shuffled, F_SYNTH, family="negbin", exposure="member_months")
    pd.testing.assert_frame_equal(synth, before)
    np.testing.assert_allclose(a.table.estimate, b.table.estimate, rtol=1e-9)
    assert a.theta == pytest.approx(b.theta, rel=1e-9)


def test_r_term_names(synth):
    df = synth.assign(sex=np.where(synth.female == 1, "F", "M"))
    fit = count_model(df, "er_visits ~ treated + sex + I(age ** 2)", exposure="member_months")
    assert fit.table.term.tolist() == ["(Intercept)", "treated", "sexM", "I(age^2)"]
    assert r_term_name("flag[T.True]:np.log(x)") == "flagTRUE:log(x)"


# ----------------------------------------------------------------------------- errors
def test_missing_values_dropped_with_warning(synth):
    df = synth.copy()
    df.loc[df.index[:7], "age"] = np.nan
    df.loc[df.index[5:9], "member_months"] = np.nan
    with pytest.warns(DataDroppedWarning, match="9 of 5000") as record:
        fit = count_model(df, F_SYNTH, exposure="member_months")
    assert fit.nobs == 4991 and fit.dropped == {"missing values": 9}
    assert record[0].filename == __file__          # the warning points at the caller


def test_nonpositive_exposure_dropped(synth):
    df = synth.copy()
    df.loc[df.index[:3], "member_months"] = 0
    with pytest.warns(DataDroppedWarning, match="exposure") as record:
        fit = count_model(df, F_SYNTH, exposure="member_months")
    assert record[0].filename == __file__
    assert fit.dropped == {"exposure <= 0": 3} and fit.nobs == 4997


def test_missing_column(synth):
    with pytest.raises(DataValidationError, match="agee"):
        count_model(synth, "er_visits ~ treated + agee")
    with pytest.raises(DataValidationError, match="months"):
        count_model(synth, F_SYNTH, exposure="months")


def test_outcome_not_a_count(synth):
    with pytest.raises(DataValidationError, match="non-negative whole numbers"):
        count_model(synth, "total_cost ~ treated + age")


def test_arm_without_events(synth):
    df = synth.assign(er_visits=np.where(synth.treated == 1, 0, synth.er_visits))
    with pytest.raises(DataValidationError, match="treated = 1"):
        count_model(df, F_SYNTH, exposure="member_months")


def test_constant_covariate(synth):
    with pytest.raises(DataValidationError, match="const"):
        count_model(synth.assign(const=3.0), "er_visits ~ treated + const")


def test_bad_options(synth):
    with pytest.raises(ParamsError, match="family"):
        count_model(synth, F_SYNTH, family="quasipoisson")
    with pytest.raises(ParamsError, match="vcov"):
        count_model(synth, F_SYNTH, vcov="HC3")
    with pytest.raises(ParamsError, match="zero part"):
        count_model(synth, F_SYNTH, zero_formula="~ age")
    with pytest.raises(ParamsError, match="exposure"):
        count_model(synth, F_SYNTH + " + offset(log(member_months))")
    with pytest.raises(ParamsError, match="alpha"):
        count_model(synth, F_SYNTH, alpha=5)


def test_zero_part_that_separates_all_zero_rows_warns():
    """A zero-part level whose members all have zero counts: the inflation probability runs
    to 1 for them and the level's zero-part coefficient off to infinity (pscl gives the
    same fit without a word); the fit is kept, with a warning naming what to do. A level
    with a few non-zero counts keeps a finite coefficient and no warning."""
    rng = np.random.default_rng(3)
    n = 2000
    df = pd.DataFrame({"treated": rng.integers(0, 2, n), "x": rng.normal(size=n),
                       "g": rng.integers(0, 2, n)})
    mu = np.exp(0.3 + 0.2 * df.x - 0.3 * df.treated)
    df["y"] = np.where(rng.random(n) < 0.3, 0, rng.poisson(mu))
    few = df.assign(y=np.where((df.g == 1) & (rng.random(n) < 0.97), 0, df.y))
    with warnings.catch_warnings():
        warnings.simplefilter("error", StatisticalWarning)
        fit = count_model(few, "y ~ treated + x", family="zip", zero_formula="~ g")
    assert fit.table.set_index(["part", "term"]).loc[("zero", "g"), "std_error"] < 1
    # a continuous zero-part term with a clear effect: its extreme values give pi near 1
    # for a few zero rows, but the coefficient is well estimated: no warning
    z = rng.normal(0, 3, n)
    spread = df.assign(z=z, y=np.where(rng.random(n) < 1 / (1 + np.exp(1 - 3 * z)), 0, df.y))
    with warnings.catch_warnings():
        warnings.simplefilter("error", StatisticalWarning)
        fit = count_model(spread, "y ~ treated + x", family="zip", zero_formula="~ z")
    eta = fit.table.query("part == 'zero'").estimate.to_numpy() @ np.vstack([np.ones(n), z])
    assert (1 / (1 + np.exp(eta)) < 1e-6).any()             # rows at pi = 1, to 1e-6
    assert fit.table.set_index(["part", "term"]).loc[("zero", "z"), "std_error"] < 1
    none = df.assign(y=np.where(df.g == 1, 0, df.y))
    with pytest.warns(StatisticalWarning, match=f"is 1 .* for {(df.g == 1).sum():,} rows, all "
                                                "zeros.*Drop that term from the zero part"):
        fit = count_model(none, "y ~ treated + x", family="zip", zero_formula="~ g")
    assert fit.table.set_index(["part", "term"]).loc[("zero", "g"), "std_error"] > 1e3


def test_no_overdispersion_in_negbin():
    """Under-dispersed counts: theta runs off to infinity; the error says to use Poisson."""
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"x": rng.normal(size=300)})
    df["y"] = rng.binomial(2, 0.5, size=300)
    with pytest.raises(ConvergenceError, match="poisson"):
        count_model(df, "y ~ x", family="negbin")


def test_effect_errors(synth):
    fit = count_model(synth, F_SYNTH, exposure="member_months")
    with pytest.raises(ParamsError, match="not a column used"):
        fit.effect("group")
    with pytest.raises(ParamsError, match="0/1"):
        fit.effect("comorbidity")


def test_matrices_are_reused_only_for_the_same_values(synth):
    """The count models' memo of model matrices (count._matrix) returns what patsy builds
    (effects.build_matrix) for the same formula and values, as fresh copies, and builds
    again when a value changes."""
    from evalkit.models import count as cm
    from evalkit.models.effects import build_matrix

    frame = synth[["er_visits", "treated", "age", "female", "comorbidity"]].copy()
    cm._MATRICES.clear()
    y, X, names, _ = build_matrix(F_SYNTH, frame)
    y1, X1, names1, spec1 = cm._matrix(F_SYNTH, frame)
    assert np.array_equal(y1, y) and np.array_equal(X1, X) and names1 == names
    X1[:] = -1.0                                        # a caller's change stays its own
    _, X2, _, spec2 = cm._matrix(F_SYNTH, frame.copy())
    assert len(cm._MATRICES) == 1 and spec2 is spec1 and np.array_equal(X2, X)
    changed = frame.assign(age=frame["age"] + 1)
    _, X3, _, _ = cm._matrix(F_SYNTH, changed)
    assert len(cm._MATRICES) == 2
    assert np.array_equal(X3, build_matrix(F_SYNTH, changed)[1]) and not np.array_equal(X3, X)
    _, X4, _, _ = cm._matrix(spec1, changed)            # a rebuild on new rows, by its spec
    assert np.array_equal(X4, X3)


def test_large_fits_first_free_what_earlier_fits_left_in_cycles(monkeypatch):
    """A statsmodels fit and its results refer to each other, so their arrays wait for the
    cyclic garbage collector: a fit of at least LARGE_FIT_ROWS rows (count_model, two_part,
    the causal estimates) runs it first, a smaller one does not."""
    class Node:
        pass

    def cycle():
        a, b = Node(), Node()
        a.other, b.other = b, a
        return weakref.ref(a)

    enabled = gc.isenabled()
    gc.disable()                     # only release_fits may collect during the test
    try:
        left = cycle()
        limits.release_fits(limits.LARGE_FIT_ROWS - 1)
        assert left() is not None
        limits.release_fits(limits.LARGE_FIT_ROWS)
        assert left() is None
        calls = []
        monkeypatch.setattr("evalkit.models.count.release_fits", calls.append)
        count_model(pd.DataFrame({"y": [0, 1, 2, 0, 3, 1], "x": [0, 1, 0, 1, 0, 1]}), "y ~ x")
        assert calls == [6]
    finally:
        if enabled:
            gc.enable()

