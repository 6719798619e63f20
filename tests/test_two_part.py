"""Two-part cost model and modified Park test (evalkit.models.twopart) against R.

Reference values: tests/reference/expected/twopart_synth.json from
tests/reference/r/twopart_synth.R (R 4.2.2, stats::glm with
glm.control(epsilon = 1e-13, maxit = 200)); see tests/reference/README.md.
"""
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from conftest import reference_data, reference_json
from scipy import stats

from evalkit.errors import DataDroppedWarning, DataValidationError, ParamsError
from evalkit.models.twopart import TwoPartResult, park_test, two_part

COVS = ["treated", "age", "female", "comorbidity", "baseline_cost"]
F = "total_cost ~ " + " + ".join(COVS)


@pytest.fixture(scope="module")
def synth():
    return reference_data("synthetic_costs")


@pytest.fixture(scope="module")
def ref():
    return reference_json("twopart_synth")


@pytest.fixture(scope="module")
def fit(synth):
    return two_part(synth, F)


def part(table, name):
    return table[table.part == name]


def check(table, column, ref: dict, rtol):
    assert table["term"].tolist() == list(ref)
    np.testing.assert_allclose(table[column].to_numpy(), np.array(list(ref.values())), rtol=rtol)


def test_logit_part_matches_r(fit, ref):
    """R: glm(any_cost ~ rhs, binomial(link = "logit"), control = ctl); twopart_synth.json
    part1_logit (coefficients, vcov() SEs, logLik)."""
    assert isinstance(fit, TwoPartResult)
    any_ = part(fit.table, "any")
    check(any_, "estimate", ref["part1_logit"]["coefficients"], rtol=1e-6)
    check(any_, "std_error", ref["part1_logit"]["se"], rtol=1e-6)
    assert fit.extra["loglik_any"] == pytest.approx(ref["part1_logit"]["logLik"], rel=1e-9)
    assert fit.nobs == ref["n_all"] and fit.extra["n_positive"] == ref["n_positive"]


def test_gamma_part_matches_r(fit, ref):
    """R: glm(total_cost ~ rhs, Gamma(link = "log"), data = pos, control = ctl);
    twopart_synth.json part2_gamma_log: coefficients, SEs with the Pearson dispersion
    (summary.glm), dispersion, deviance, logLik (dispersion = deviance/n plugged in)."""
    r2 = ref["part2_gamma_log"]
    pos = part(fit.table, "positive")
    check(pos, "estimate", r2["coefficients"], rtol=1e-6)
    check(pos, "std_error", r2["se"], rtol=1e-6)
    assert fit.extra["dispersion"] == pytest.approx(r2["dispersion"], rel=1e-6)
    assert fit.extra["deviance_positive"] == pytest.approx(r2["deviance"], rel=1e-6)
    assert fit.extra["df_residual_positive"] == r2["df_residual"]
    assert fit.extra["loglik_positive"] == pytest.approx(r2["logLik"], rel=1e-9)
    assert fit.loglik == pytest.approx(r2["logLik"] + ref["part1_logit"]["logLik"], rel=1e-9)
    # summary.glm uses t(df.residual) for the dispersion-estimated part
    q = stats.t.ppf(0.975, r2["df_residual"])
    np.testing.assert_allclose(pos.ci_high, pos.estimate + q * pos.std_error, rtol=1e-12)


def test_recycled_ate_matches_r(fit, ref):
    """R: recycle() in r/twopart_synth.R: mean(E1 - E0) with E = P(any) * E[cost | any]
    predicted with treated set to 1 / 0 for all 5000 members; recycled_prediction_ate."""
    r = ref["recycled_prediction_ate"]
    eff = fit.effect("treated")
    assert eff.table.term.tolist() == ["cost_difference", "ratio"]
    assert eff.at("cost_difference") == pytest.approx(r["ate"], rel=1e-6)
    assert eff.at("ratio") == pytest.approx(r["ratio"], rel=1e-6)
    assert eff.mean_treated == pytest.approx(r["mean_cost_all_treated"], rel=1e-6)
    assert eff.mean_control == pytest.approx(r["mean_cost_all_control"], rel=1e-6)
    assert eff.nobs == ref["n_all"]


def test_ate_delta_se_from_r_fit(synth, fit, ref):
    """The delta-method SE of the ATE, rebuilt here from R's numbers only: R's
    coefficients give the logit information X'diag(p(1-p))X and R's Pearson dispersion
    times (X'X)^-1 gives the gamma/log covariance (their square roots reproduce R's SEs);
    the gradient of the recycled ATE is taken by central differences."""
    b1 = np.array(list(ref["part1_logit"]["coefficients"].values()))
    b2 = np.array(list(ref["part2_gamma_log"]["coefficients"].values()))
    X = np.column_stack([np.ones(len(synth)), synth[COVS].to_numpy(float)])
    pos = synth.total_cost.to_numpy() > 0
    p = 1 / (1 + np.exp(-(X @ b1)))
    V1 = np.linalg.inv(X.T @ (X * (p * (1 - p))[:, None]))
    V2 = ref["part2_gamma_log"]["dispersion"] * np.linalg.inv(X[pos].T @ X[pos])
    np.testing.assert_allclose(np.sqrt(np.diag(V1)), list(ref["part1_logit"]["se"].values()), rtol=1e-6)
    np.testing.assert_allclose(np.sqrt(np.diag(V2)), list(ref["part2_gamma_log"]["se"].values()), rtol=1e-6)
    X1, X0 = X.copy(), X.copy()
    X1[:, 1], X0[:, 1] = 1.0, 0.0

    def ate(theta):
        a, b = theta[:6], theta[6:]
        e = [1 / (1 + np.exp(-(Z @ a))) * np.exp(Z @ b) for Z in (X1, X0)]
        return np.mean(e[0] - e[1])

    theta = np.r_[b1, b2]
    grad = np.zeros(12)
    for j in range(12):
        h = 1e-6 * max(abs(theta[j]), 1e-3)
        e = np.zeros(12)
        e[j] = h
        grad[j] = (ate(theta + e) - ate(theta - e)) / (2 * h)
    V = np.zeros((12, 12))
    V[:6, :6], V[6:, 6:] = V1, V2
    se = np.sqrt(grad @ V @ grad)
    row = fit.effect("treated").table.set_index("term").loc["cost_difference"]
    assert row.std_error == pytest.approx(se, rel=1e-5)
    assert row.ci_low == pytest.approx(ref["recycled_prediction_ate"]["ate"] - stats.norm.ppf(0.975) * se, rel=1e-5)


@pytest.mark.parametrize("kind", ["HC0", "cluster"])
def test_robust_parts_match_sandwich_formula(synth, ref, kind):
    """Each part's robust SEs as sandwich::vcovHC(type = "HC0") / vcovCL(cluster = ~g)
    compute them for a glm, rebuilt here from R's coefficients (twopart_synth.json):
    bread (X'WX)^-1 with the Fisher weights, meat from the working residuals times the
    working weights, summed within clusters with factor G/(G-1) (n-1)/(n-k) for vcovCL.
    (statsmodels' GLM sandwich uses the observed Hessian for the gamma/log bread, so it
    differs from R by ~5% here and is not used.)"""
    vcov = "HC0" if kind == "HC0" else {"cluster": "comorbidity"}
    res = two_part(synth, F, vcov=vcov)
    X = np.column_stack([np.ones(len(synth)), synth[COVS].to_numpy(float)])
    y = synth.total_cost.to_numpy(float)
    g = synth.comorbidity.to_numpy()
    pos = y > 0
    b1 = np.array(list(ref["part1_logit"]["coefficients"].values()))
    b2 = np.array(list(ref["part2_gamma_log"]["coefficients"].values()))
    p = 1 / (1 + np.exp(-(X @ b1)))
    mu = np.exp(X[pos] @ b2)
    parts = {"any": (X, p * (1 - p), pos - p, g),            # logit: u = y - p
             "positive": (X[pos], np.ones(pos.sum()), (y[pos] - mu) / mu, g[pos])}  # gamma/log
    for name, (XX, w, u, gg) in parts.items():
        bread = np.linalg.inv(XX.T @ (w[:, None] * XX))
        S = XX * u[:, None]
        n, k = XX.shape
        if kind == "cluster":
            S = pd.DataFrame(S).groupby(gg).sum().to_numpy()
            G = len(np.unique(gg))
            factor = G / (G - 1) * (n - 1) / (n - k)
        else:
            factor = 1.0
        se = np.sqrt(np.diag(factor * bread @ S.T @ S @ bread))
        np.testing.assert_allclose(part(res.table, name).std_error, se, rtol=1e-6)
    eff = res.effect("treated")
    assert eff.vcov == ("HC0" if kind == "HC0" else "cluster(comorbidity)")
    assert eff.at("cost_difference") == pytest.approx(ref["recycled_prediction_ate"]["ate"], rel=1e-6)


def test_hc1_is_hc0_times_n_over_n_minus_k(synth):
    h0 = two_part(synth, F, vcov="HC0").table
    h1 = two_part(synth, F, vcov="HC1").table
    n, npos, k = 5000, 3452, 6
    factor = np.where(h0.part == "any", np.sqrt(n / (n - k)), np.sqrt(npos / (npos - k)))
    np.testing.assert_allclose(h1.std_error, h0.std_error * factor, rtol=1e-12)


@pytest.mark.parametrize("second,family", [
    ("poisson", sm.families.Poisson), ("inverse_gaussian", sm.families.InverseGaussian)])
def test_other_second_part_families(synth, second, family):
    """Quasi-Poisson and inverse Gaussian (log link) positive parts against statsmodels
    GLM with the Pearson dispersion (R's summary.glm convention)."""
    df = synth.assign(cost_k=synth.total_cost / 1000)
    res = two_part(df, "cost_k ~ treated + age + comorbidity", second=second)
    pos = df.cost_k > 0
    X = sm.add_constant(df.loc[pos, ["treated", "age", "comorbidity"]].to_numpy(float))
    sm_fit = sm.GLM(df.cost_k[pos].to_numpy(), X, family=family(link=sm.families.links.Log())).fit(
        scale="X2", tol=1e-13)
    np.testing.assert_allclose(part(res.table, "positive").estimate, sm_fit.params, rtol=1e-7)
    np.testing.assert_allclose(part(res.table, "positive").std_error, sm_fit.bse, rtol=1e-6)
    assert (res.loglik is None) == (second == "poisson")


def test_probit_first_part(synth):
    res = two_part(synth, F, first="probit")
    X = sm.add_constant(synth[COVS].to_numpy(float))
    sm_fit = sm.Probit((synth.total_cost > 0).to_numpy(float), X).fit(disp=0, tol=1e-12)
    np.testing.assert_allclose(part(res.table, "any").estimate, sm_fit.params, rtol=1e-7)
    assert np.isfinite(res.effect().at("cost_difference"))


# ----------------------------------------------------------------------------- Park test
def _park_data(power, n=4000, seed=11):
    """Positive outcomes with Var(y|x) proportional to mu^power (gamma draws)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    mu = np.exp(1 + 0.8 * x)
    var = 0.5 * mu ** power
    shape = mu ** 2 / var
    return pd.DataFrame({"x": x, "y": rng.gamma(shape, mu / shape)})


@pytest.mark.parametrize("power,family", [(1, "poisson"), (2, "gamma"), (3, "inverse_gaussian")])
def test_park_test_recovers_variance_power(power, family):
    res = park_test(_park_data(power), "y ~ x")
    assert res.suggested_family == family
    assert abs(res.coefficient - power) < 3 * res.std_error + 0.1
    assert res.p_values[power] > 0.001


def test_park_test_on_synthetic_costs(synth):
    """synthetic_costs.csv draws positive costs from a gamma (make_synthetic.py)."""
    res = park_test(synth, F)
    assert res.suggested_family == "gamma"
    assert res.nobs == 3452
    assert park_test(synth, F, method="ols").suggested_family == "gamma"
    assert set(res.to_frame().columns) >= {"estimate", "std_error", "suggested_family"}


# ----------------------------------------------------------------------------- errors
def test_input_unchanged_and_row_order(synth):
    before = synth.copy()
    a = two_part(synth, F)
    b = two_part(synth.sample(frac=1.0, random_state=5), F)
    pd.testing.assert_frame_equal(synth, before)
    np.testing.assert_allclose(a.table.estimate, b.table.estimate, rtol=1e-9)
    assert a.effect().at("cost_difference") == pytest.approx(
        b.effect().at("cost_difference"), rel=1e-9)


def test_missing_values_dropped(synth):
    df = synth.copy()
    df.loc[df.index[:4], "baseline_cost"] = np.nan
    with pytest.warns(DataDroppedWarning, match="4 of 5000"):
        res = two_part(df, F)
    assert res.nobs == 4996 and res.dropped == {"missing values": 4}


def test_bad_outcomes(synth):
    with pytest.raises(DataValidationError, match=">= 0"):
        two_part(synth.assign(total_cost=synth.total_cost - 100), F)
    with pytest.raises(DataValidationError, match="every 'total_cost' is positive"):
        two_part(synth.assign(total_cost=synth.total_cost + 1), F)


def test_separation(synth):
    """Every treated member has cost: the logit coefficient is infinite."""
    df = synth.assign(total_cost=np.where(synth.treated == 1, synth.total_cost + 1, synth.total_cost))
    with pytest.raises(DataValidationError, match="separation"):
        two_part(df, F)


def test_bad_options(synth):
    with pytest.raises(ParamsError, match="second"):
        two_part(synth, F, second="lognormal")
    with pytest.raises(ParamsError, match="first"):
        two_part(synth, F, first="cloglog")
    with pytest.raises(ParamsError, match="0/1"):
        two_part(synth, F).effect("age")


@pytest.mark.parametrize("family", ["poisson", "binomial", "gamma", "negbin"])
def test_irls_is_statsmodels_iteration(synth, family):
    """evalkit's IRLS (normal equations) takes statsmodels' IRLS steps (least squares by
    SVD): the same number of iterations to the same deviance rule, the same coefficients
    to rounding, with and without starting values and an offset."""
    from statsmodels.genmod import families

    from evalkit.models.effects import _irls
    X = sm.add_constant(synth[COVS[:-1]].to_numpy(float))
    X = np.column_stack([X, synth["baseline_cost"].to_numpy(float) / 1000])
    cost = synth["total_cost"].to_numpy(float)
    fam, y = {"poisson": (families.Poisson(), np.floor(cost / 500)),
              "binomial": (families.Binomial(), (cost > 0).astype(float)),
              "gamma": (families.Gamma(families.links.Log()), cost),
              "negbin": (families.NegativeBinomial(alpha=0.7), np.floor(cost / 500))}[family]
    if family == "gamma":
        X, y = X[y > 0], y[y > 0]
    off = np.log(np.linspace(6, 12, len(y))) if family in ("poisson", "negbin") else None
    rough = sm.GLM(y, X, family=fam, offset=off).fit(method="IRLS", rtol=1e-3).params
    for start in (None, rough):
        sm_fit = sm.GLM(y, X, family=fam, offset=off).fit(
            method="IRLS", start_params=start, tol=1e-300, atol=0.0, rtol=1e-12, maxiter=200)
        beta, iterations, converged = _irls(y, X, fam, 0.0 if off is None else off, start,
                                            1e-12, 200)
        assert converged and sm_fit.converged
        assert iterations == sm_fit.fit_history["iteration"]
        np.testing.assert_allclose(beta, sm_fit.params, rtol=1e-9, atol=1e-12)
