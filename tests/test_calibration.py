"""Negative controls and empirical calibration, checked against the published formulas.

There is no R reference JSON for this topic. Expected values come from

* Schuemie et al. (2014) Stat Med 33:209-218: negative-control estimates
  b_i ~ N(mu, sigma^2 + se_i^2); calibrated two-sided p = 2 Phi(-|b - mu| / sqrt(sigma^2 + se^2));
* Schuemie et al. (2018) PNAS 115:2571-2577: b_i ~ N(a + b t_i, exp(2 (c + d t_i)) + se_i^2);
  calibrated CI limits solve (b - mean(x)) / sqrt(sd(x)^2 + se^2) = +/- z_{1 - alpha/2};

worked out by hand in the comments, or computed independently in the test (scipy.stats
log-densities, finite differences, Nelder-Mead, brentq) -- never from evalkit's own output.
"""
import math
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from scipy import optimize, stats  # noqa: E402

from evalkit.causal.calibration import (  # noqa: E402
    Calibrated,
    Null,
    SystematicErrorModel,
    calibrate,
    calibrate_ci,
    calibrate_p,
    calibration_plot,
    fit_null,
    fit_systematic_error_model,
    negative_controls,
)
from evalkit.errors import (  # noqa: E402
    DataDroppedWarning,
    DataValidationError,
    ParamsError,
    StatisticalWarning,
)
from evalkit.style import FAIL_COLOR, PASS_COLOR, RATIO_TICKS  # noqa: E402

Z975 = stats.norm.ppf(0.975)


def direct_loglik(mu, sigma, y, se):
    """Log-likelihood of the null written directly with scipy.stats (independent)."""
    return float(np.sum(stats.norm.logpdf(y, loc=mu, scale=np.sqrt(sigma ** 2 + se ** 2))))


def simulate_controls(rng, n, mu, sigma, se_low=0.05, se_high=0.4):
    se = rng.uniform(se_low, se_high, n)
    y = mu + rng.normal(0, sigma, n) + rng.normal(0, se)
    return y, se


# ----------------------------------------------------------------------- no systematic error
def test_zero_null_gives_ordinary_p_and_wald_ci():
    # mu = sigma = 0: the calibrated p is 2 Phi(-|b|/se) and the CI b -/+ z se.
    null = Null(mu=0.0, sigma=0.0)
    y = np.array([-1.2, -0.3, 0.0, 0.05, 0.4, 2.5])
    se = np.array([0.5, 0.1, 0.2, 0.02, 0.3, 1.0])
    np.testing.assert_allclose(calibrate_p(y, se, null), 2 * stats.norm.sf(np.abs(y) / se),
                               rtol=1e-12, atol=0)
    ci = calibrate_ci(y, se, null)
    np.testing.assert_allclose(ci["log_estimate"], y, atol=1e-8, rtol=0)
    np.testing.assert_allclose(ci["ci_low"], y - Z975 * se, atol=1e-8, rtol=0)
    np.testing.assert_allclose(ci["ci_high"], y + Z975 * se, atol=1e-8, rtol=0)
    np.testing.assert_allclose(ci["std_error"], se, atol=1e-8, rtol=0)
    # 90% interval: z = 1.644854
    ci90 = calibrate_ci(y, se, null, alpha=0.10)
    np.testing.assert_allclose(ci90["ci_high"], y + 1.6448536269514722 * se, atol=1e-8, rtol=0)

    res = calibrate(0.4, 0.3, null, label="er_visits")
    assert isinstance(res, Calibrated)
    assert res.calibrated_p_value == pytest.approx(res.p_value, abs=1e-14)
    assert res.calibrated_ci_low == pytest.approx(res.ci_low, abs=1e-8)
    assert res.calibrated_ci_high == pytest.approx(res.ci_high, abs=1e-8)
    assert res.calibrated_estimate == pytest.approx(0.4, abs=1e-8)


def test_hand_computed_calibrated_p():
    # Estimate RR 1.5 with SE 0.1 on the log scale; empirical null mu = 0.1, sigma = 0.2.
    #   log 1.5                 = 0.4054651081
    #   sqrt(0.2^2 + 0.1^2)     = sqrt(0.05) = 0.2236067977
    #   z = (0.4054651081 - 0.1) / 0.2236067977 = 1.3660814930
    #   p = 2 (1 - Phi(1.36608)) = erfc(z / sqrt 2) = 0.1719133864
    # against the uncalibrated z = 4.054651, p = 5.0209e-05.
    z = (math.log(1.5) - 0.1) / math.sqrt(0.2 ** 2 + 0.1 ** 2)
    assert z == pytest.approx(1.3660814930, abs=1e-9)
    null = Null(mu=0.1, sigma=0.2)
    p = calibrate_p(math.log(1.5), 0.1, null)
    assert isinstance(p, float)
    assert p == pytest.approx(math.erfc(z / math.sqrt(2)), rel=1e-12)
    assert p == pytest.approx(0.1719133864, abs=1e-9)
    # one-sided tails: Phi(-z) and Phi(z)
    assert calibrate_p(math.log(1.5), 0.1, null, alternative="greater") == pytest.approx(
        0.5 * math.erfc(z / math.sqrt(2)), rel=1e-12)
    assert calibrate_p(math.log(1.5), 0.1, null, alternative="less") == pytest.approx(
        1 - 0.5 * math.erfc(z / math.sqrt(2)), rel=1e-12)
    res = calibrate(math.log(1.5), 0.1, null)
    assert res.p_value == pytest.approx(5.020919e-05, rel=1e-6)
    assert res.calibrated_p_value == pytest.approx(0.1719133864, abs=1e-9)


def test_calibrated_ci_from_a_null_is_shifted_and_widened():
    # With a null (mean slope 1, constant SD) the limits solve
    # (b - mu - x) / sqrt(sigma^2 + se^2) = +/- z, i.e. x = b - mu -/+ z sqrt(sigma^2 + se^2).
    # b = 0.5, se = 0.1, mu = 0.2, sigma = 0.15: centre 0.3, half-width
    # 1.959964 * sqrt(0.0225 + 0.01) = 1.959964 * 0.1802776 = 0.3533375.
    ci = calibrate_ci(0.5, 0.1, Null(mu=0.2, sigma=0.15)).iloc[0]
    assert ci["log_estimate"] == pytest.approx(0.3, abs=1e-8)
    assert ci["ci_low"] == pytest.approx(0.3 - 0.35333753500, abs=1e-8)
    assert ci["ci_high"] == pytest.approx(0.3 + 0.35333753500, abs=1e-8)
    assert ci["std_error"] == pytest.approx(math.sqrt(0.0325), abs=1e-8)


# ----------------------------------------------------------------------- fit_null
def test_fit_null_recovers_truth_and_is_the_mle():
    rng = np.random.default_rng(20140209)
    y, se = simulate_controls(rng, 200, mu=0.2, sigma=0.15)
    null = fit_null(y, se)
    assert null.n == 200 and not null.boundary and null.dropped == {}
    assert abs(null.mu - 0.2) < 3 * null.se_mu
    assert abs(null.sigma - 0.15) < 3 * null.se_sigma

    # log-likelihood equals the direct sum of normal log-densities
    assert null.loglik == pytest.approx(direct_loglik(null.mu, null.sigma, y, se), rel=1e-12)

    # score equations: central finite differences of the direct log-likelihood vanish
    h = 1e-6
    d_mu = (direct_loglik(null.mu + h, null.sigma, y, se)
            - direct_loglik(null.mu - h, null.sigma, y, se)) / (2 * h)
    d_sigma = (direct_loglik(null.mu, null.sigma + h, y, se)
               - direct_loglik(null.mu, null.sigma - h, y, se)) / (2 * h)
    assert abs(d_mu) < 1e-4 and abs(d_sigma) < 1e-4
    # ... and the profile score in mu has the closed form: mu = sum(w y) / sum(w), w = 1/(sigma^2+se^2)
    w = 1 / (null.sigma ** 2 + se ** 2)
    assert null.mu == pytest.approx(np.sum(w * y) / np.sum(w), abs=1e-10)

    # an independent optimiser (Nelder-Mead on the direct likelihood) finds the same maximum
    nm = optimize.minimize(lambda th: -direct_loglik(th[0], abs(th[1]), y, se), [0.0, 0.3],
                           method="Nelder-Mead",
                           options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": 20000})
    assert nm.x[0] == pytest.approx(null.mu, abs=1e-6)
    assert abs(nm.x[1]) == pytest.approx(null.sigma, abs=1e-6)
    assert -nm.fun <= null.loglik + 1e-9

    # SEs = sqrt(diag(inverse observed information)); information by finite differences
    h = 1e-4
    th = np.array([null.mu, null.sigma])
    H = np.zeros((2, 2))
    for i in range(2):
        for j in range(2):
            ei, ej = np.eye(2)[i] * h, np.eye(2)[j] * h
            H[i, j] = (direct_loglik(*(th + ei + ej), y, se) - direct_loglik(*(th + ei - ej), y, se)
                       - direct_loglik(*(th - ei + ej), y, se)
                       + direct_loglik(*(th - ei - ej), y, se)) / (4 * h * h)
    cov = np.linalg.inv(-H)
    assert null.se_mu == pytest.approx(math.sqrt(cov[0, 0]), rel=1e-5)
    assert null.se_sigma == pytest.approx(math.sqrt(cov[1, 1]), rel=1e-5)
    np.testing.assert_allclose(null.cov, cov, rtol=1e-4)


def test_fit_null_sigma_zero_boundary():
    # Controls scatter far less than their SEs (0.3) explain: the likelihood falls as sigma
    # leaves 0, so the MLE is sigma = 0 and mu the inverse-variance weighted mean.
    rng = np.random.default_rng(7)
    se = rng.uniform(0.25, 0.35, 25)
    y = 0.1 + rng.normal(0, 0.03, 25)
    null = fit_null(y, se)
    assert null.boundary and null.sigma == 0.0
    w = 1 / se ** 2
    assert null.mu == pytest.approx(np.sum(w * y) / np.sum(w), rel=1e-12)
    assert null.se_mu == pytest.approx(1 / math.sqrt(np.sum(w)), rel=1e-12)
    assert math.isnan(null.se_sigma)
    assert null.loglik == pytest.approx(direct_loglik(null.mu, 0.0, y, se), rel=1e-12)
    # no (mu, sigma > 0) on a grid does better
    grid = [direct_loglik(m, s, y, se) for m in np.linspace(0, 0.2, 41)
            for s in np.linspace(0.001, 0.3, 40)]
    assert max(grid) <= null.loglik + 1e-12
    # with sigma = 0 calibration only shifts by mu
    assert calibrate_p(0.5, 0.2, null) == pytest.approx(
        2 * stats.norm.sf(abs(0.5 - null.mu) / 0.2), rel=1e-12)


def test_fit_null_small_sigma_interior():
    # Slight over-dispersion: sigma small but positive must not be forced to 0.
    rng = np.random.default_rng(11)
    y, se = simulate_controls(rng, 400, mu=-0.1, sigma=0.05, se_low=0.02, se_high=0.06)
    null = fit_null(y, se)
    assert not null.boundary and null.sigma > 0
    nm = optimize.minimize(lambda th: -direct_loglik(th[0], abs(th[1]), y, se), [0.0, 0.1],
                           method="Nelder-Mead",
                           options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": 20000})
    assert null.sigma == pytest.approx(abs(nm.x[1]), abs=1e-6)
    assert null.mu == pytest.approx(nm.x[0], abs=1e-6)


def test_fit_null_finds_global_maximum_with_an_outlier():
    # One wild control (14.9, SE 1.25) among 25 tight ones: the profile likelihood in sigma
    # (mu profiled out in closed form, the inverse-variance mean with weights
    # 1/(sigma^2 + se^2)) has a local maximum near sigma = 2 (the outlier explained) and the
    # global one near sigma = 0.024. Checked against that profile on a fine grid.
    y = np.array([14.883, 1.119, 0.599, 0.551, 0.954, 0.848, 0.736, 1.02, 0.741, 0.861, 0.644,
                  0.188, 0.909, 1.004, 0.94, 0.968, 0.718, 0.919, 1.035, 1.274, 0.903, 0.448,
                  0.902, 0.894, 0.984, 0.896])
    se = np.array([1.251, 0.111, 0.237, 0.252, 0.206, 0.091, 0.15, 0.077, 0.129, 0.029, 0.587,
                   0.434, 0.154, 0.097, 0.1, 0.05, 0.238, 0.138, 0.38, 0.2, 0.049, 0.529,
                   0.176, 0.162, 0.075, 0.038])
    grid = np.linspace(0, 3, 6001)[:, None]
    w = 1 / (grid ** 2 + se ** 2)
    mu_prof = np.sum(w * y, axis=1, keepdims=True) / np.sum(w, axis=1, keepdims=True)
    prof = stats.norm.logpdf(y, mu_prof, np.sqrt(1 / w)).sum(axis=1)
    grid = grid[:, 0]
    far = grid > 1
    assert prof[far].max() < prof.max() - 1          # the second mode exists and is lower
    null = fit_null(y, se)
    assert null.sigma == pytest.approx(grid[np.argmax(prof)], abs=1e-3)
    assert null.loglik >= prof.max() - 1e-12


# ----------------------------------------------------------------------- calibration properties
def test_calibrated_p_has_nominal_size_under_a_biased_design():
    # Null effects estimated by a biased design (mu = 0.2, sigma = 0.15): about half of the
    # ordinary p-values are < 0.05, calibrated ones about 5%.
    rng = np.random.default_rng(33)
    mu, sigma = 0.2, 0.15
    typeI_u, typeI_c = [], []
    for _ in range(100):
        y, se = simulate_controls(rng, 50, mu, sigma, 0.05, 0.3)
        null = fit_null(y, se)
        ny, nse = simulate_controls(rng, 100, mu, sigma, 0.05, 0.3)
        typeI_u.append(2 * stats.norm.sf(np.abs(ny) / nse) < 0.05)
        typeI_c.append(calibrate_p(ny, nse, null) < 0.05)
    assert np.mean(typeI_u) > 0.3
    assert 0.03 < np.mean(typeI_c) < 0.08


def test_calibrated_ci_coverage():
    # Biased design: systematic error ~ N(0.2, 0.15^2) on top of random error. Each of 100
    # simulated studies has 50 negative controls (to fit the null) and 100 estimates with a
    # known true effect. Wald 95% CIs of the truth cover about 2/3 of the time; calibrated
    # CIs about 95% (a little less, as the null itself is estimated from 50 controls). With
    # 10,000 intervals in 100 clusters the Monte-Carlo SE of the calibrated coverage is
    # about 0.003; the bounds are several SEs wide.
    rng = np.random.default_rng(2018)
    mu, sigma = 0.2, 0.15
    cover_u, cover_c = [], []
    for _ in range(100):
        y, se = simulate_controls(rng, 50, mu, sigma, 0.05, 0.3)
        null = fit_null(y, se)
        truth = rng.uniform(-0.5, 1.0, 100)
        se_p = rng.uniform(0.05, 0.3, 100)
        est = truth + mu + rng.normal(0, sigma, 100) + rng.normal(0, se_p)
        cover_u.append(np.abs(est - truth) <= Z975 * se_p)
        ci = calibrate_ci(est, se_p, null)
        cover_c.append((ci["ci_low"].to_numpy() <= truth) & (truth <= ci["ci_high"].to_numpy()))
    assert np.mean(cover_u) < 0.75
    assert 0.925 <= np.mean(cover_c) <= 0.965


# ----------------------------------------------------------------------- systematic error model
def test_systematic_error_model_recovers_truth():
    # 100 controls at each true RR 1, 2, 4; mean = 0.1 + 0.9 t, log sd = log(0.15) + 0.3 t.
    rng = np.random.default_rng(2571)
    t = np.repeat(np.log([1.0, 2.0, 4.0]), 100)
    se = rng.uniform(0.05, 0.3, t.size)
    truth = np.array([0.1, 0.9, math.log(0.15), 0.3])
    sd = np.exp(truth[2] + truth[3] * t)
    y = truth[0] + truth[1] * t + rng.normal(0, sd) + rng.normal(0, se)
    model = fit_systematic_error_model(y, se, t)
    assert model.source == "fit" and model.n == 300
    se_par = np.sqrt(np.diag(model.cov))
    assert np.all(np.abs(model.params - truth) < 3 * se_par)

    def ll(th):
        return float(np.sum(stats.norm.logpdf(
            y, th[0] + th[1] * t, np.sqrt(np.exp(2 * (th[2] + th[3] * t)) + se ** 2))))

    assert model.loglik == pytest.approx(ll(model.params), rel=1e-12)
    h = 1e-6
    grad = [(ll(model.params + h * e) - ll(model.params - h * e)) / (2 * h) for e in np.eye(4)]
    assert np.max(np.abs(grad)) < 1e-4

    # calibrated CI limits satisfy the defining equations (checked with brentq, per estimate).
    # With a log SD slope > 0 the standardised estimate is not monotone in x (for very large
    # x the error SD swamps everything and it climbs back towards 0), so the relevant root
    # is the first crossing from the left; [-3, 5] brackets it here.
    b, s = np.array([0.3, 0.9, 1.6]), np.array([0.1, 0.2, 0.15])
    ci = calibrate_ci(b, s, model)

    def g(x, bi, si):
        return (bi - model.mean(x)) / math.sqrt(float(model.sd(x)) ** 2 + si ** 2)

    for k in range(3):
        lo = optimize.brentq(lambda x: g(x, b[k], s[k]) - Z975, -3, 5, xtol=1e-14)
        hi = optimize.brentq(lambda x: g(x, b[k], s[k]) + Z975, -3, 5, xtol=1e-14)
        pt = optimize.brentq(lambda x: g(x, b[k], s[k]), -3, 5, xtol=1e-14)
        assert ci["ci_low"].iloc[k] == pytest.approx(lo, abs=1e-8)
        assert ci["ci_high"].iloc[k] == pytest.approx(hi, abs=1e-8)
        assert ci["log_estimate"].iloc[k] == pytest.approx(pt, abs=1e-8)
        # the point estimate is where the mean error function reaches the estimate
        assert model.mean(pt) == pytest.approx(b[k], abs=1e-8)


def test_systematic_error_model_with_negative_controls_only_is_the_null():
    rng = np.random.default_rng(5)
    y, se = simulate_controls(rng, 60, 0.1, 0.2)
    null = fit_null(y, se)
    model = fit_systematic_error_model(y, se, np.zeros(60))
    assert model.source == "null"
    assert model.mean_intercept == pytest.approx(null.mu, abs=1e-12)
    assert model.log_sd_intercept == pytest.approx(math.log(null.sigma), abs=1e-12)
    assert (model.mean_slope, model.log_sd_slope) == (1.0, 0.0)
    # delta method: SE(log sigma) = SE(sigma) / sigma; slopes assumed, so no SE
    fr = model.to_frame().set_index("parameter")["std_error"]
    assert fr["mean_intercept"] == pytest.approx(null.se_mu, rel=1e-12)
    assert fr["log_sd_intercept"] == pytest.approx(null.se_sigma / null.sigma, rel=1e-12)
    assert np.isnan(fr["mean_slope"]) and np.isnan(fr["log_sd_slope"])
    # so its calibrated CI is the null's
    pd.testing.assert_frame_equal(calibrate_ci([0.4, -0.2], [0.1, 0.3], model),
                                  calibrate_ci([0.4, -0.2], [0.1, 0.3], null))
    assert calibrate_p(0.4, 0.1, model) == pytest.approx(calibrate_p(0.4, 0.1, null), rel=1e-14)
    m2 = SystematicErrorModel.from_null(null, mean_slope=0.8)
    # mean(x) = mu + 0.8 x = b  ->  point estimate (b - mu) / 0.8
    assert calibrate_ci(0.4, 0.1, m2)["log_estimate"].iloc[0] == pytest.approx(
        (0.4 - null.mu) / 0.8, abs=1e-8)


def test_root_finder_fallback_agrees(monkeypatch):
    # scipy < 1.15 has no scipy.optimize.elementwise; the brentq fallback gives the same CI.
    import evalkit.causal.calibration.inference as cal

    model = SystematicErrorModel(0.1, 0.9, math.log(0.15), 0.3)
    b, s = np.linspace(-1, 2, 7), np.full(7, 0.2)
    vectorised = calibrate_ci(b, s, model)
    monkeypatch.setattr(cal, "_find_root", None)
    pd.testing.assert_frame_equal(calibrate_ci(b, s, model), vectorised, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------- bad input
def test_bad_input():
    y, se = np.array([0.1, 0.2, -0.1, 0.3, 0.0]), np.array([0.1, 0.2, 0.1, 0.15, 0.2])
    with pytest.raises(DataValidationError, match="at least 3"):
        fit_null(y[:2], se[:2])
    with pytest.raises(DataValidationError, match="must be > 0"):
        fit_null(y, np.array([0.1, -0.2, 0.1, 0.15, 0.2]))
    with pytest.raises(DataValidationError, match="must be > 0"):
        fit_null(y, np.array([0.1, 0.0, 0.1, 0.15, 0.2]))
    with pytest.raises(ParamsError, match="same length"):
        fit_null(y, se[:4])
    with pytest.raises(ParamsError, match="same length"):
        fit_systematic_error_model(y, se, np.zeros(3))
    with pytest.raises(ParamsError, match="true effect"):
        fit_systematic_error_model(y, se, np.full(5, 0.7))
    with pytest.warns(StatisticalWarning, match="only 4 controls"):
        fit_null(y[:4], se[:4])
    # missing values are left out with a warning and counted; too few left -> error
    y_nan = np.append(y, [np.nan, 0.2])
    se_nan = np.append(se, [0.1, np.inf])
    with pytest.warns(DataDroppedWarning, match="left out 2"):
        null = fit_null(y_nan, se_nan)
    assert null.n == 5 and null.dropped == {"non-finite log_estimates": 1,
                                            "non-finite std_errors": 1}
    with pytest.raises(DataValidationError, match="got 2"), \
            pytest.warns(DataDroppedWarning):
        fit_null([0.1, np.nan, 0.2, 0.3], [0.1, 0.1, 0.1, np.nan])
    # results and calibration functions
    with pytest.raises(ParamsError, match="sigma"):
        Null(mu=0.0, sigma=-0.1)
    with pytest.raises(ParamsError, match="Null"):
        calibrate_p(0.1, 0.1, {"mu": 0, "sigma": 0})
    with pytest.raises(DataValidationError, match="> 0"):
        calibrate_p(0.1, -0.1, Null(mu=0.0, sigma=0.1))
    with pytest.raises(ParamsError, match="same shape"):
        calibrate_ci([0.1, 0.2], [0.1], Null(mu=0.0, sigma=0.1))
    with pytest.raises(ParamsError, match="alpha"):
        calibrate_ci(0.1, 0.1, Null(mu=0.0, sigma=0.1), alpha=1.5)
    with pytest.raises(ParamsError, match="alternative"):
        calibrate_p(0.1, 0.1, Null(mu=0.0, sigma=0.1), alternative="both")
    with pytest.raises(DataValidationError, match="> 0"):
        calibrate(0.1, 0.0, Null(mu=0.0, sigma=0.1))
    with pytest.raises(ParamsError, match="one estimate"):
        calibrate([0.1, 0.2], [0.1, 0.1], Null(mu=0.0, sigma=0.1))
    # missing target values give NaN, not an error
    p = calibrate_p([0.1, np.nan], [0.1, 0.1], Null(mu=0.0, sigma=0.1))
    assert np.isfinite(p[0]) and np.isnan(p[1])
    ci = calibrate_ci([0.1, np.nan], [0.1, 0.1], Null(mu=0.0, sigma=0.1))
    assert ci.iloc[1].isna().all() and ci.iloc[0].notna().all()


# ----------------------------------------------------------------------- negative_controls
@pytest.fixture
def nc_data():
    rng = np.random.default_rng(99)
    n = 300
    df = pd.DataFrame({"treat": rng.integers(0, 2, n), "age": rng.normal(45, 12, n)})
    for k in range(6):
        df[f"nc{k}"] = rng.poisson(np.exp(-0.3 + 0.01 * (df["age"] - 45) + 0.15 * df["treat"]))
    df["never"] = 0
    return df


def test_negative_controls_with_count_model(nc_data):
    from evalkit.models.count import count_model

    before = nc_data.copy()
    outcomes = [f"nc{k}" for k in range(6)]
    tab = negative_controls(nc_data, outcomes,
                            lambda d, y, family: count_model(d, f"{y} ~ treat + age", family),
                            term="treat", family="poisson")
    pd.testing.assert_frame_equal(nc_data, before)  # data untouched
    assert list(tab.columns) == ["outcome", "log_estimate", "std_error", "ci_low", "ci_high",
                                 "p_value", "error"]
    assert tab["outcome"].tolist() == outcomes and tab["error"].isna().all()
    # each row is the treat coefficient of the same fit
    ref = count_model(nc_data, "nc3 ~ treat + age", "poisson").table.set_index("term")
    assert tab.loc[3, "log_estimate"] == ref.loc["treat", "estimate"]
    assert tab.loc[3, "std_error"] == ref.loc["treat", "std_error"]
    assert tab.loc[3, "ci_low"] == pytest.approx(ref.loc["treat", "estimate"]
                                                 - Z975 * ref.loc["treat", "std_error"], rel=1e-12)
    null = fit_null(tab["log_estimate"], tab["std_error"])
    assert null.n == 6
    # a coefficient table without term= is a clear error
    with pytest.raises(ParamsError, match="term="):
        negative_controls(nc_data, outcomes[:1],
                          lambda d, y: count_model(d, f"{y} ~ treat", "poisson"))


def test_negative_controls_tuple_effect_and_failures(nc_data):
    from evalkit.causal import estimate

    tab = negative_controls(nc_data, ["nc0", "nc1"], estimate, treatment="treat",
                            formula="age", method="regression")
    eff = estimate(nc_data, "nc0", "treat", "age", method="regression")
    assert tab.loc[0, "log_estimate"] == eff.estimate and tab.loc[0, "std_error"] == eff.std_error

    def fn(d, y):
        if d[y].nunique() < 2:
            raise DataValidationError(f"{y} is constant")
        return (float(d[y].mean()), 0.1)

    with pytest.warns(StatisticalWarning, match="failed for 1"):
        tab = negative_controls(nc_data, ["nc0", "never", "nc1", "nc2"], fn)
    assert tab.loc[1, "error"].startswith("DataValidationError")
    assert np.isnan(tab.loc[1, "log_estimate"])
    with pytest.warns(DataDroppedWarning), pytest.warns(StatisticalWarning, match="only 3"):
        null = fit_null(tab["log_estimate"], tab["std_error"])
    assert null.n == 3
    # a mapping works too; programming errors propagate
    tab = negative_controls(nc_data, ["nc0"], lambda d, y: {"log_estimate": 0.1, "std_error": 0.2})
    assert tab.loc[0, "log_estimate"] == 0.1
    with pytest.raises(ZeroDivisionError):
        negative_controls(nc_data, ["nc0"], lambda d, y: 1 / 0)
    with pytest.raises(DataValidationError, match="not in the data"):
        negative_controls(nc_data, ["nc0", "missing"], fn)
    with pytest.raises(ParamsError, match="cannot read"):
        negative_controls(nc_data, ["nc0"], lambda d, y: "0.1")


# ----------------------------------------------------------------------- plot and results
def test_calibration_plot_and_result_value():
    rng = np.random.default_rng(3)
    y, se = simulate_controls(rng, 40, 0.2, 0.15)
    controls = pd.DataFrame({"outcome": [f"nc{k}" for k in range(40)],
                             "log_estimate": y, "std_error": se})
    null = fit_null(controls["log_estimate"], controls["std_error"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ax = calibration_plot(null, controls, estimates=([0.5], [0.1]))
    assert ax.get_xscale() == "log"
    assert len(ax.collections) >= 4       # 2 shaded areas + 2 point groups (+ estimate)
    # evalkit's look (evalkit.style): the arm blue for controls inside the calibrated
    # boundary, vermilion outside, and ratio ticks people read on the log axis
    colours = {to_hex(c) for coll in ax.collections for c in coll.get_facecolors()}
    assert PASS_COLOR in colours
    assert {"#2c7fb8", "#f16913", "#fdd49e"}.isdisjoint(colours)
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and set(ticks) <= {t for level in RATIO_TICKS for t in level}
    assert FAIL_COLOR in {to_hex(line.get_color()) for line in ax.lines}
    ax2 = calibration_plot(null, (y, se), exponentiate=False)
    lo, hi = ax2.get_xlim()
    assert lo < np.min(y) and hi > np.max(y)
    plt.close("all")

    res = calibrate(0.5, 0.1, null, label="er_visits")
    with pytest.raises(AttributeError):
        res.p_value = 0.5                  # frozen
    frame = res.to_frame(exponentiate=True)
    assert frame["inference"].tolist() == ["uncalibrated", "calibrated"]
    assert frame.loc[0, "estimate"] == pytest.approx(math.exp(0.5), rel=1e-14)
    assert frame.loc[1, "ci_low"] == pytest.approx(math.exp(res.calibrated_ci_low), rel=1e-14)
    assert "calibrated" in res.summary() and "er_visits" in res.summary()
    assert set(null.to_frame()["parameter"]) == {"mu", "sigma"}
    assert "negative controls" in null.summary()
