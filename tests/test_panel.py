"""evalkit.models.did and evalkit.models.its: difference-in-differences and interrupted time series.

There is no R reference JSON for these designs. The checks are against

* exact identities (a 2x2 DiD is the difference of four means; TWFE on a balanced panel
  with one intervention date equals the 2x2 DiD of pre/post means);
* hand computations with numpy written in this file: the dummy-variable (LSDV)
  regression with its cluster-robust sandwich scaled as ``sandwich::vcovCL(type = "HC1")``
  documents it (tests/reference/README.md, caveat 3: ``G/(G-1) * (n-1)/(n-k)``, ``k`` =
  all coefficients incl. unit dummies), the Newey-West and Driscoll-Kraay HAC
  estimators (Bartlett kernel, ``n/(n-k)`` factor), delta-method ratios;
* statsmodels fits of the dummy-variable models (``OLS``/``GLM`` with
  ``cov_type="cluster"``, ``cov_type="HAC"``), an implementation independent of ours;
* noiseless data with planted effects, and one seeded simulated community panel (an 18%
  drop in ER use after month 24, as in the Healthwise evaluation).
"""
import warnings

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from evalkit.errors import DataDroppedWarning, DataValidationError, ParamsError, StatisticalWarning
import functools

from evalkit.models.did import did as did_nested
from evalkit.models.did import event_study_plot
from evalkit.models.its import its, its_plot, newey_west_lags

# The hand-coded reference below is sandwich::vcovCL(type = "HC1") on the dummy-variable
# fit, whose k counts the unit effects: compare with that convention.
did = functools.partial(did_nested, small_sample="dummies")

RTOL = 1e-9


# =========================================================================== helpers
def _quiet(func, *args, **kwargs):
    """Call ignoring StatisticalWarning (few clusters in tiny exact examples)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StatisticalWarning)
        return func(*args, **kwargs)


def _dummies(codes, drop_first=True):
    levels = np.unique(codes)
    cols = levels[1:] if drop_first else levels
    return (np.asarray(codes)[:, None] == cols[None, :]).astype(float)


def lsdv_design(df, unit, time, regressors):
    """[regressors | intercept | unit dummies | period dummies] as in R's
    lm(y ~ regressors + factor(unit) + factor(time)); regressors first."""
    R = df[regressors].to_numpy(dtype=float)
    return np.column_stack([R, np.ones(len(df)), _dummies(df[unit].to_numpy()),
                            _dummies(df[time].to_numpy())])


def cluster_sandwich(X, scores, bread, groups):
    """sandwich::vcovCL(type = "HC1"): B (sum_g s_g s_g') B * G/(G-1) * (n-1)/(n-k)."""
    n, k = X.shape
    codes, uniq = pd.factorize(pd.Series(groups))
    G = len(uniq)
    S = np.zeros((G, k))
    np.add.at(S, codes, scores)
    return G / (G - 1) * (n - 1) / (n - k) * bread @ S.T @ S @ bread


def hand_lsdv(df, y, unit, time, regressors, cluster=None):
    X = lsdv_design(df, unit, time, regressors)
    yv = df[y].to_numpy(dtype=float)
    beta, *_ = np.linalg.lstsq(X, yv, rcond=None)
    e = yv - X @ beta
    bread = np.linalg.inv(X.T @ X)
    V = cluster_sandwich(X, X * e[:, None], bread, df[cluster or unit].to_numpy())
    p = len(regressors)
    return beta[:p], V[:p, :p]


def hac_meat(U, lags, time_codes=None):
    """Newey-West meat sum_t u_t u_t' + sum_l (1 - l/(L+1)) (G_l + G_l'); with
    time_codes the scores are first summed within each time point (Driscoll-Kraay)."""
    if time_codes is not None:
        T = time_codes.max() + 1
        Us = np.zeros((T, U.shape[1]))
        np.add.at(Us, time_codes, U)
        U = Us
    S = U.T @ U
    for lag in range(1, lags + 1):
        Gl = U[lag:].T @ U[:-lag]
        S += (1 - lag / (lags + 1)) * (Gl + Gl.T)
    return S


def simple_panel(seed=0, n_units=40, n_periods=6, first_post=4, drop=0.1):
    """Unbalanced gaussian and count panel with a time-varying covariate."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_units):
        a = rng.normal()
        tr = int(i < n_units * 0.4)
        for t in range(1, n_periods + 1):
            if rng.random() < drop:
                continue
            x = rng.normal()
            post = int(t >= first_post)
            mm = float(rng.integers(5, 20))
            mu = mm * np.exp(-1.5 + 0.3 * a + 0.05 * t - 0.2 * tr * post + 0.2 * x)
            rows.append(dict(unit=f"u{i:03d}", region=i % 7, t=t, tr=tr, post=post, x=x, mm=mm,
                             y=rng.poisson(mu),
                             yg=a + 0.5 * t + 1.0 * tr * post + x + rng.normal()))
    return pd.DataFrame(rows)


def community_panel(seed=20240611, areas_per_community=40, months=36, members=250):
    """Healthwise-like data: 2 communities x small areas x 36 months, member-months as
    exposure, area random effects, seasonality, a common trend, and a true 18% drop in ER
    use in the intervention community from month 25 on."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in (0, 1):
        for j in range(areas_per_community):
            frailty = rng.gamma(8.0, 1 / 8.0)
            size = members * rng.uniform(0.6, 1.4)
            for m in range(1, months + 1):
                mm = size * rng.uniform(0.95, 1.0)
                rate = 0.03 * (1.1 if c else 1.0) * frailty * np.exp(
                    0.004 * m + 0.15 * np.cos(2 * np.pi * m / 12))
                if c == 1 and m >= 25:
                    rate *= 0.82
                lam = rate * mm * rng.gamma(20.0, 1 / 20.0)        # mild overdispersion
                rows.append(dict(area=f"c{c}a{j:02d}", community=c, month=m,
                                 member_months=mm, er_visits=rng.poisson(lam)))
    return pd.DataFrame(rows)


# =========================================================================== DiD: exact cases
def test_2x2_did_equals_difference_of_four_means():
    rng = np.random.default_rng(1)
    n = 60
    df = pd.DataFrame({"unit": np.repeat(np.arange(n), 2), "period": np.tile([0, 1], n),
                       "treated": np.repeat((np.arange(n) < 25).astype(int), 2)})
    df["post"] = df["period"]
    df["y"] = rng.normal(size=2 * n) + 2.0 * df["treated"] * df["post"] + df["period"]
    res = did(df, "y", "unit", "period", "treated", "post", event_study=False)
    m = df.groupby(["treated", "post"])["y"].mean()
    expected = (m[1, 1] - m[1, 0]) - (m[0, 1] - m[0, 0])
    assert res.effect().table["term"].iloc[0] == "difference"
    assert res.effect().table["estimate"].iloc[0] == pytest.approx(expected, rel=1e-12)
    # the SE is the b block of the dummy-variable sandwich (hand numpy, vcovCL HC1)
    b, V = hand_lsdv(df.assign(D=df.treated * df.post), "y", "unit", "period", ["D"])
    assert res.table["estimate"].iloc[0] == pytest.approx(b[0], rel=1e-10)
    assert res.table["std_error"].iloc[0] == pytest.approx(np.sqrt(V[0, 0]), rel=1e-10)
    assert res.extra["k"] == n + 2                      # intercept + 59 units + 1 period + D
    assert res.pretrend["run"] is False and "event_study=False" in res.pretrend["reason"]


def test_twfe_balanced_single_date_equals_2x2_of_pre_post_means():
    rng = np.random.default_rng(2)
    N, T = 30, 8
    df = pd.DataFrame({"unit": np.repeat(np.arange(N), T),
                       "month": np.tile(np.arange(1, T + 1), N)})
    df["treated"] = (df["unit"] < 12).astype(int)
    df["post"] = (df["month"] >= 6).astype(int)
    df["y"] = (rng.normal(size=N)[df["unit"]] + 0.3 * df["month"] + rng.normal(size=N * T)
               - 1.5 * df["treated"] * df["post"])
    res = _quiet(did, df, "y", "unit", "month", "treated", "post")
    m = df.groupby(["treated", "post"])["y"].mean()
    expected = (m[1, 1] - m[1, 0]) - (m[0, 1] - m[0, 0])
    assert res.effect().table["estimate"].iloc[0] == pytest.approx(expected, rel=1e-12)
    # intervention_time= derives the same post indicator
    res2 = _quiet(did, df.drop(columns="post"), "y", "unit", "month", "treated",
                  intervention_time=6)
    assert res2.effect().table["estimate"].iloc[0] == pytest.approx(expected, rel=1e-12)
    assert res2.table["term"].iloc[0] == "treated:post"


def test_cluster_robust_se_equals_hand_sandwich_unbalanced_with_covariate():
    df = simple_panel(seed=3)
    res = _quiet(did, df, "yg", "unit", "t", "tr", "post", covariates=["x"])
    b, V = hand_lsdv(df.assign(D=df.tr * df.post), "yg", "unit", "t", ["D", "x"])
    np.testing.assert_allclose(res.table["estimate"], b, rtol=RTOL)
    np.testing.assert_allclose(res.table["std_error"], np.sqrt(np.diag(V)), rtol=RTOL)
    assert list(res.table["term"]) == ["tr:post", "x"]
    # the same from statsmodels' OLS with dummies (cluster correction G/(G-1)(n-1)/(n-k))
    X = lsdv_design(df.assign(D=df.tr * df.post), "unit", "t", ["D", "x"])
    ols = sm.OLS(df["yg"].to_numpy(), X).fit(
        cov_type="cluster", cov_kwds={"groups": pd.factorize(df["unit"])[0]})
    np.testing.assert_allclose(res.table["std_error"], ols.bse[:2], rtol=RTOL)
    # gaussian intervals use t(n - k), as lmtest::coeftest on lm
    assert res.extra["df_residual"] == len(df) - X.shape[1]
    from scipy import stats
    q = stats.t.ppf(0.975, len(df) - X.shape[1])
    assert res.table["ci_high"].iloc[0] == pytest.approx(b[0] + q * np.sqrt(V[0, 0]), rel=RTOL)
    # loglik as R's logLik.lm
    e = df["yg"].to_numpy() - X @ np.linalg.lstsq(X, df["yg"].to_numpy(), rcond=None)[0]
    n = len(df)
    assert res.loglik == pytest.approx(-0.5 * n * (np.log(2 * np.pi * (e @ e) / n) + 1), rel=1e-10)


def test_cluster_other_than_unit_equals_hand_sandwich():
    """Clusters that group units (regions): the within-transformation sandwich must still
    equal the dummy-variable one (Frisch-Waugh-Lovell holds for any meat)."""
    df = simple_panel(seed=4, n_units=70)
    res = _quiet(did, df, "yg", "unit", "t", "tr", "post", covariates=["x"], cluster="region")
    b, V = hand_lsdv(df.assign(D=df.tr * df.post), "yg", "unit", "t", ["D", "x"],
                     cluster="region")
    np.testing.assert_allclose(res.table["estimate"], b, rtol=RTOL)
    np.testing.assert_allclose(res.table["std_error"], np.sqrt(np.diag(V)), rtol=RTOL)
    assert res.extra["n_clusters"] == 7


def test_event_study_and_pretrend_wald_equal_hand_computation():
    df = simple_panel(seed=5, n_units=50, n_periods=7, first_post=5)
    res = _quiet(did, df, "yg", "unit", "t", "tr", "post")
    ref = 4                                            # default: last pre-period
    ev = [t for t in range(1, 8) if t != ref]
    regs = []
    for t in ev:
        df[f"ev{t}"] = ((df.t == t) & (df.tr == 1)).astype(float)
        regs.append(f"ev{t}")
    b, V = hand_lsdv(df, "yg", "unit", "t", regs)
    es = res.event_study.set_index("period")
    np.testing.assert_allclose(es.loc[ev, "estimate"], b, rtol=RTOL)
    np.testing.assert_allclose(es.loc[ev, "std_error"], np.sqrt(np.diag(V)), rtol=RTOL)
    assert es.loc[ref, "estimate"] == 0 and es.loc[ref, "reference"]
    assert list(es["event_time"]) == list(range(-4, 3))
    lead = [0, 1, 2]                                   # periods 1, 2, 3
    W = b[lead] @ np.linalg.solve(V[np.ix_(lead, lead)], b[lead])
    assert res.pretrend["run"] and res.pretrend["df"] == 3
    assert res.pretrend["statistic"] == pytest.approx(W, rel=1e-8)
    from scipy import stats
    assert res.pretrend["p_value"] == pytest.approx(stats.chi2.sf(W, 3), rel=1e-8)
    assert res.pretrend["f_df"] == (3, 49)
    # another reference period
    res2 = _quiet(did, df, "yg", "unit", "t", "tr", "post", reference_period=2)
    es2 = res2.event_study.set_index("period")
    diff = es.loc[ev + [ref], "estimate"] - es.loc[2, "estimate"]
    np.testing.assert_allclose(es2.loc[ev + [ref], "estimate"], diff, atol=1e-10)


# =========================================================================== DiD: Poisson
def test_poisson_noiseless_panel_recovers_planted_rate_ratio():
    rng = np.random.default_rng(6)
    N, T = 25, 10
    df = pd.DataFrame({"unit": np.repeat(np.arange(N), T), "month": np.tile(np.arange(T), N)})
    df["treated"] = (df["unit"] % 2).astype(int)
    df["mm"] = rng.uniform(50, 150, len(df))
    alpha_i = rng.normal(size=N)[df["unit"]]
    lam_t = 0.05 * np.sin(df["month"]) + 0.02 * df["month"]
    post = df["month"] >= 6
    effect = np.where(df["treated"] & post, 0.82, 1.0)
    df["visits"] = df["mm"] * 0.03 * np.exp(alpha_i + lam_t) * effect
    res = _quiet(did, df, "visits", "unit", "month", "treated", intervention_time=6,
                 family="poisson", exposure="mm")
    eff = res.effect().table.iloc[0]
    assert eff["term"] == "rate_ratio"
    assert eff["estimate"] == pytest.approx(0.82, rel=1e-10)
    assert eff["percent_change"] == pytest.approx(-18.0, rel=1e-8)
    es = res.event_study
    np.testing.assert_allclose(es.loc[es["post"], "rate_ratio"], 0.82, rtol=1e-9)
    np.testing.assert_allclose(es.loc[~es["post"], "estimate"], 0.0, atol=1e-10)


def test_poisson_fe_equals_dummy_variable_glm_and_hand_sandwich():
    """Concentrated-out unit effects give the coefficients of glm(y ~ D + x + factor(unit) +
    factor(t) + offset(log(mm)), poisson) (statsmodels GLM with dummies here) and the
    vcovCL HC1 sandwich computed by hand from that fit."""
    df = simple_panel(seed=7, n_units=45)
    res = _quiet(did, df, "y", "unit", "t", "tr", "post", covariates=["x"], family="poisson",
                 exposure="mm")
    X = lsdv_design(df.assign(D=df.tr * df.post), "unit", "t", ["D", "x"])
    y = df["y"].to_numpy(dtype=float)
    off = np.log(df["mm"].to_numpy())
    glm = sm.GLM(y, X, family=sm.families.Poisson(), offset=off).fit(
        method="IRLS", atol=1e-13, rtol=0.0, maxiter=200)
    mu = glm.fittedvalues
    bread = np.linalg.inv(X.T @ (mu[:, None] * X))
    V = cluster_sandwich(X, X * (y - mu)[:, None], bread, df["unit"].to_numpy())
    np.testing.assert_allclose(res.table["estimate"], glm.params[:2], rtol=RTOL)
    np.testing.assert_allclose(res.table["std_error"], np.sqrt(np.diag(V))[:2], rtol=RTOL)
    assert res.loglik == pytest.approx(glm.llf, rel=1e-10)
    assert res.extra["deviance"] == pytest.approx(glm.deviance, rel=1e-8)
    # statsmodels' own cluster covariance of the dummy GLM (same correction factor)
    glm_cl = sm.GLM(y, X, family=sm.families.Poisson(), offset=off).fit(
        method="IRLS", atol=1e-13, rtol=0.0, maxiter=200, cov_type="cluster",
        cov_kwds={"groups": pd.factorize(df["unit"])[0]})
    np.testing.assert_allclose(res.table["std_error"], glm_cl.bse[:2], rtol=RTOL)
    # normal-theory intervals for the GLM, as lmtest::coeftest on glm
    se = res.table["std_error"].iloc[0]
    assert res.effect().table["ci_low"].iloc[0] == pytest.approx(
        np.exp(res.table["estimate"].iloc[0] - 1.959963984540054 * se), rel=1e-10)


def test_poisson_all_zero_units_are_kept_in_counts():
    df = simple_panel(seed=8, n_units=40)
    zero_units = ["u030", "u031"]
    df.loc[df["unit"].isin(zero_units), "y"] = 0
    res = _quiet(did, df, "y", "unit", "t", "tr", "post", family="poisson", exposure="mm")
    keep = df[~df["unit"].isin(zero_units)]
    res2 = _quiet(did, keep, "y", "unit", "t", "tr", "post", family="poisson", exposure="mm")
    # same estimate (all-zero units carry no information) ...
    assert res.table["estimate"].iloc[0] == pytest.approx(res2.table["estimate"].iloc[0], rel=1e-9)
    # ... but n, k and G include them, as in R's glm + vcovCL; SE scales accordingly
    n1, k1, G1 = res.nobs, res.extra["k"], res.extra["n_clusters"]
    n2, k2, G2 = res2.nobs, res2.extra["k"], res2.extra["n_clusters"]
    ratio = (G1 / (G1 - 1) * (n1 - 1) / (n1 - k1)) / (G2 / (G2 - 1) * (n2 - 1) / (n2 - k2))
    assert res.table["std_error"].iloc[0] == pytest.approx(
        res2.table["std_error"].iloc[0] * np.sqrt(ratio), rel=1e-8)


# =========================================================================== simulated recovery
@pytest.fixture(scope="module")
def community():
    return community_panel()


def test_simulated_community_did_poisson_recovers_18_percent_drop(community):
    res = did(community, "er_visits", "area", "month", "community", intervention_time=25,
              family="poisson", exposure="member_months")
    eff = res.effect().table.iloc[0]
    assert eff["ci_low"] < 0.82 < eff["ci_high"]
    assert eff["estimate"] == pytest.approx(0.82, abs=0.03)
    assert res.pretrend["run"] and res.pretrend["df"] == 23
    assert res.extra["n_units"] == 80 and res.extra["n_clusters"] == 80
    assert "percent_change" in res.effect().table.columns
    ax = event_study_plot(res)
    assert ax.get_yscale() == "log"
    assert "pre-trend test" in res.summary()


def test_simulated_community_its_recovers_18_percent_drop(community):
    monthly = (community.groupby(["community", "month"], as_index=False)
               [["er_visits", "member_months"]].sum())
    monthly["comparison"] = 1 - monthly["community"]
    treated = monthly[monthly["community"] == 1]
    single = its(treated, "er_visits", "month", 25, exposure="member_months",
                 family="poisson", seasonal=True)
    comp = its(monthly, "er_visits", "month", 25, exposure="member_months", family="poisson",
               seasonal=True, control="comparison")
    for res in (single, comp):
        avg = res.effect().table.iloc[3]
        assert avg["quantity"].startswith("average ratio")
        assert avg["ci_low"] < 0.82 < avg["ci_high"]
        assert avg["estimate"] == pytest.approx(0.82, abs=0.06)   # one realization
        assert res.lags == newey_west_lags(36) == 3
    lvl = comp.table.set_index("term").loc["intervention:level_change"]
    assert lvl["ci_low"] < np.log(0.82) < lvl["ci_high"]
    ax = its_plot(comp)
    assert len(ax.lines) >= 5


# =========================================================================== ITS
def _its_series(n=48, t0=25, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(1, n + 1)
    post = (t >= t0).astype(float)
    y = 50 + 0.4 * t - 6.0 * post - 0.3 * (t - t0) * post + 3 * np.cos(2 * np.pi * t / 12)
    ar = np.zeros(n)
    for i in range(1, n):
        ar[i] = 0.5 * ar[i - 1] + rng.normal()
    return pd.DataFrame({"month": t, "rate": y + noise * ar})


def _its_design(t, t0, seasonal=True):
    post = (t >= t0).astype(float)
    cols = [np.ones(len(t)), t - t.min(), post, (t - t0) * post]
    if seasonal:
        s = t % 12
        cols += [(s == k).astype(float) for k in range(1, 12)]
    return np.column_stack(cols)


def test_its_noiseless_level_and_slope_change_recovered():
    df = _its_series()
    res = its(df, "rate", "month", 25, seasonal=True)
    tab = res.table.set_index("term")
    assert tab.loc["level_change", "estimate"] == pytest.approx(-6.0, rel=1e-9)
    assert tab.loc["slope_change", "estimate"] == pytest.approx(-0.3, rel=1e-9)
    assert tab.loc["time", "estimate"] == pytest.approx(0.4, rel=1e-9)
    # ratio at horizon h: (pre trend + changes) / pre trend, with the average season
    h = 12
    ta = 25 + h
    season_avg = np.mean(3 * np.cos(2 * np.pi * np.arange(12) / 12))   # = 0
    with_ = 50 + 0.4 * ta - 6.0 - 0.3 * h + season_avg
    without = 50 + 0.4 * ta + season_avg
    rel = res.relative_effect(h)
    assert rel["ratio"].iloc[0] == pytest.approx(with_ / without, rel=1e-9)
    assert rel["predicted_without"].iloc[0] == pytest.approx(without, rel=1e-9)


def test_its_poisson_noiseless_ratio_at_horizon():
    t = np.arange(1, 37)
    mm = 20000 + 100 * t
    rate = (0.03 * np.exp(0.004 * t + 0.15 * np.cos(2 * np.pi * t / 12))
            * np.where(t >= 25, 0.82, 1.0))
    df = pd.DataFrame({"month": t, "visits": rate * mm, "mm": mm})
    res = its(df, "visits", "month", 25, exposure="mm", family="poisson", seasonal=True,
              horizon=6)
    eff = res.effect().table.set_index("quantity")
    assert eff["estimate"].iloc[0] == pytest.approx(0.82, rel=1e-9)          # level change
    assert eff["estimate"].iloc[1] == pytest.approx(1.0, abs=1e-10)          # slope change
    assert eff["estimate"].iloc[2] == pytest.approx(0.82, rel=1e-9)          # at 6 months
    assert eff["percent_change"].iloc[3] == pytest.approx(-18.0, rel=1e-7)   # average
    assert res.horizon == 6


def test_its_hac_equals_statsmodels_and_hand_newey_west():
    """statsmodels OLS(cov_type="HAC", maxlags=L, use_correction=True) and a numpy
    Newey-West (Bartlett weights 1 - l/(L+1), factor n/(n-k), no prewhitening) -- i.e.
    R's sandwich::NeweyWest(fit, lag = L, prewhite = FALSE, adjust = TRUE)."""
    df = _its_series(noise=2.0, seed=11)
    for lags in (None, 5):
        res = its(df, "rate", "month", 25, seasonal=True, lags=lags)
        L = 3 if lags is None else lags                # floor(4 * (48/100)^(2/9)) = 3
        assert res.lags == L
        t = df["month"].to_numpy(dtype=float)
        X = _its_design(t, 25)
        y = df["rate"].to_numpy()
        ols = sm.OLS(y, X).fit(cov_type="HAC", cov_kwds={"maxlags": L, "use_correction": True})
        np.testing.assert_allclose(res.table["estimate"], ols.params, rtol=1e-9)
        np.testing.assert_allclose(res.table["std_error"], ols.bse, rtol=1e-9)
        n, k = X.shape
        e = y - X @ ols.params
        bread = np.linalg.inv(X.T @ X)
        V = n / (n - k) * bread @ hac_meat(X * e[:, None], L) @ bread
        np.testing.assert_allclose(res.table["std_error"], np.sqrt(np.diag(V)), rtol=1e-9)
        # gaussian intervals use t(n - k)
        from scipy import stats
        q = stats.t.ppf(0.975, n - k)
        np.testing.assert_allclose(res.table["ci_low"], ols.params - q * np.sqrt(np.diag(V)),
                                   rtol=1e-9)
    # ratio with/without at h = 8 (average season: 1/12 for each of the 11 month dummies)
    # and its delta-method SE on the log scale, g = x1/(x1'b) - x0/(x0'b)
    h = 8
    x1 = np.r_[1.0, 25 + h - 1, 1.0, h, np.full(11, 1 / 12)]
    x0 = np.r_[1.0, 25 + h - 1, 0.0, 0.0, np.full(11, 1 / 12)]
    b = ols.params
    grad = x1 / (x1 @ b) - x0 / (x0 @ b)
    se_log = np.sqrt(grad @ V @ grad)
    rel = res.relative_effect(h)
    r = (x1 @ b) / (x0 @ b)
    assert rel["ratio"].iloc[0] == pytest.approx(r, rel=1e-10)
    assert rel["std_error"].iloc[0] == pytest.approx(r * se_log, rel=1e-8)
    assert rel["ci_low"].iloc[0] == pytest.approx(r * np.exp(-q * se_log), rel=1e-8)


def test_its_poisson_hac_equals_hand_sandwich_and_statsmodels():
    rng = np.random.default_rng(12)
    t = np.arange(1, 41)
    mm = np.full(40, 15000.0)
    mu = mm * 0.03 * np.exp(0.003 * t) * np.where(t >= 21, 0.85, 1.0)
    df = pd.DataFrame({"month": t, "visits": rng.poisson(mu * rng.gamma(30, 1 / 30, 40)), "mm": mm})
    res = its(df, "visits", "month", 21, exposure="mm", family="poisson", lags=2)
    X = _its_design(t.astype(float), 21, seasonal=False)
    y = df["visits"].to_numpy(dtype=float)
    glm = sm.GLM(y, X, family=sm.families.Poisson(), offset=np.log(mm)).fit(
        cov_type="HAC", cov_kwds={"maxlags": 2, "use_correction": True})
    np.testing.assert_allclose(res.table["estimate"], glm.params, rtol=1e-8)
    np.testing.assert_allclose(res.table["std_error"], glm.bse, rtol=1e-7)
    m = np.exp(X @ glm.params + np.log(mm))
    bread = np.linalg.inv(X.T @ (m[:, None] * X))
    n, k = X.shape
    V = n / (n - k) * bread @ hac_meat(X * (y - m)[:, None], 2) @ bread
    np.testing.assert_allclose(res.table["std_error"], np.sqrt(np.diag(V)), rtol=1e-7)
    # ratio at horizon = exp(level + h * slope); delta-method SE on the log scale
    h = 10
    g = np.array([0, 0, 1, h], dtype=float)
    lr = g @ glm.params
    se = np.sqrt(g @ V @ g)
    rel = res.relative_effect(h)
    assert rel["ratio"].iloc[0] == pytest.approx(np.exp(lr), rel=1e-8)
    assert rel["ci_high"].iloc[0] == pytest.approx(np.exp(lr + 1.959963984540054 * se), rel=1e-7)


def test_comparative_its_driscoll_kraay_equals_hand_computation():
    rng = np.random.default_rng(13)
    t = np.arange(1, 37)
    common = np.cumsum(rng.normal(0, 0.5, 36))            # shared shocks
    yt = 40 + 0.2 * t - 4 * (t >= 25) + common + rng.normal(0, 1, 36)
    yc = 35 + 0.2 * t + common + rng.normal(0, 1, 36)
    df = pd.DataFrame({"month": np.r_[t, t], "rate": np.r_[yt, yc],
                       "comp": np.r_[np.zeros(36), np.ones(36)]})
    res = its(df.sample(frac=1, random_state=0), "rate", "month", 25, control="comp", lags=3)
    g = 1 - df["comp"].to_numpy()
    tt = df["month"].to_numpy(dtype=float)
    B = _its_design(tt, 25, seasonal=False)
    X = np.column_stack([B, g[:, None] * B])
    y = df["rate"].to_numpy()
    beta = np.linalg.lstsq(X, y, rcond=None)[0]
    e = y - X @ beta
    bread = np.linalg.inv(X.T @ X)
    n, k = X.shape
    V = n / (n - k) * bread @ hac_meat(X * e[:, None], 3, time_codes=(tt - 1).astype(int)) @ bread
    np.testing.assert_allclose(res.table["estimate"], beta, rtol=1e-9)
    np.testing.assert_allclose(res.table["std_error"], np.sqrt(np.diag(V)), rtol=1e-9)
    assert res.table["term"].iloc[6] == "intervention:level_change"
    assert res.effect().table["quantity"].iloc[0].startswith("difference in level change")


def test_its_dates_as_calendar_months():
    df = _its_series()
    df["date"] = pd.date_range("2018-01-01", periods=len(df), freq="MS")
    a = its(df, "rate", "month", 25, seasonal=True)
    b = its(df, "rate", "date", "2020-01-01", seasonal=True)
    # same slopes and changes (the intercepts differ: reference month January vs month 0)
    np.testing.assert_allclose(a.table["estimate"].iloc[1:4], b.table["estimate"].iloc[1:4],
                               rtol=1e-9)
    assert "month12" in set(b.table["term"])


def test_its_rate_from_exposure_and_inputs_not_modified():
    df = _its_series()
    df["mm"] = 10000.0
    df["visits"] = df["rate"] * df["mm"] / 1000
    before = df.copy()
    res = its(df, "visits", "month", 25, exposure="mm", seasonal=True)
    pd.testing.assert_frame_equal(df, before)
    level = res.table.set_index("term").loc["level_change", "estimate"]
    assert level == pytest.approx(-6.0, rel=1e-9)
    assert "1000" in res.formula


# =========================================================================== degenerate input
def test_did_no_pre_periods_error():
    df = simple_panel(seed=9)
    with pytest.raises(DataValidationError, match="no pre-intervention periods"):
        _quiet(did, df, "yg", "unit", "t", "tr", intervention_time=1)


def test_did_no_treated_units_error():
    df = simple_panel(seed=9).assign(tr=0)
    with pytest.raises(DataValidationError, match="no treated units"):
        _quiet(did, df, "yg", "unit", "t", "tr", "post")


def test_did_constant_outcome_error():
    df = simple_panel(seed=9).assign(yg=3.0)
    with pytest.raises(DataValidationError, match="constant"):
        _quiet(did, df, "yg", "unit", "t", "tr", "post")


def test_did_missing_column_error():
    df = simple_panel(seed=9)
    with pytest.raises(DataValidationError, match="not found"):
        did(df, "yg", "member", "t", "tr", "post")
    with pytest.raises(DataValidationError, match="not in the data"):
        did(df, "yg", "unit", "t", "tr", "post", covariates=["age"])


def test_did_single_pre_period_warns_and_states_pretrend_not_run():
    df = simple_panel(seed=10, n_periods=4, first_post=2)
    with pytest.warns(StatisticalWarning, match="pre-trend test not run"):
        res = did(df, "yg", "unit", "t", "tr", "post")
    assert res.pretrend["run"] is False
    assert "at least 2 pre-intervention periods" in res.pretrend["reason"]
    assert np.isnan(res.pretrend["p_value"])
    assert "pre-trend test not run" in res.summary()


def test_did_bad_inputs():
    df = simple_panel(seed=11)
    with pytest.raises(ParamsError, match="not both or neither"):
        did(df, "yg", "unit", "t", "tr", "post", intervention_time=4)
    with pytest.raises(ParamsError, match="not both or neither"):
        did(df, "yg", "unit", "t", "tr")
    with pytest.raises(ParamsError, match="needs family='poisson'"):
        did(df, "yg", "unit", "t", "tr", "post", exposure="mm")
    with pytest.raises(ParamsError, match="family"):
        did(df, "yg", "unit", "t", "tr", "post", family="logit")
    with pytest.raises(ParamsError, match="after the intervention"):
        _quiet(did, df, "yg", "unit", "t", "tr", "post", reference_period=5)
    varying = df.assign(tr=df["tr"] * df["post"])
    with pytest.raises(DataValidationError, match="constant within each"):
        did(varying, "yg", "unit", "t", "tr", "post")
    with pytest.raises(DataValidationError, match="0/1"):
        did(df.assign(tr=df["tr"] * 2), "yg", "unit", "t", "tr", "post")
    # post differing within a period = staggered adoption
    stag = df.copy()
    stag.loc[stag.index[:3], "post"] = 1 - stag.loc[stag.index[:3], "post"]
    with pytest.raises(DataValidationError, match="Staggered"):
        did(stag, "yg", "unit", "t", "tr", "post")
    # a covariate constant within units is absorbed by the unit effects
    unit_const = df.assign(age=df["unit"].str[1:].astype(int))
    with pytest.raises(DataValidationError, match="absorbed by the unit fixed effects"):
        _quiet(did, unit_const, "yg", "unit", "t", "tr", "post", covariates=["age"])


def test_did_poisson_no_events_in_a_cell():
    df = simple_panel(seed=12)
    df.loc[(df["tr"] == 1) & (df["post"] == 1), "y"] = 0
    with pytest.raises(DataValidationError, match="no events"):
        _quiet(did, df, "y", "unit", "t", "tr", "post", family="poisson", exposure="mm")


def test_did_missing_values_dropped_with_warning_and_input_unchanged():
    df = simple_panel(seed=13)
    df.loc[df.index[:4], "yg"] = np.nan
    before = df.copy()
    with pytest.warns(DataDroppedWarning, match="4 of"):
        res = _quiet(did, df, "yg", "unit", "t", "tr", "post")
    assert res.dropped == {"missing values": 4}
    assert res.nobs == len(df) - 4
    pd.testing.assert_frame_equal(df, before)


def test_did_few_clusters_warns():
    df = simple_panel(seed=14, n_units=12)
    with pytest.warns(StatisticalWarning, match="clusters"):
        did(df, "yg", "unit", "t", "tr", "post", event_study=False)


def test_its_degenerate_inputs():
    df = _its_series()
    with pytest.raises(DataValidationError, match="no time points before"):
        its(df, "rate", "month", 1)
    with pytest.raises(DataValidationError, match="no time points at or after"):
        its(df, "rate", "month", 100)
    with pytest.raises(DataValidationError, match="constant"):
        its(df.assign(rate=5.0), "rate", "month", 25)
    with pytest.raises(DataValidationError, match="not found"):
        its(df, "visits", "month", 25)
    with pytest.raises(DataValidationError, match="repeated time"):
        its(pd.concat([df, df.iloc[:2]]), "rate", "month", 25)
    with pytest.raises(DataValidationError, match="no comparison"):
        its(df.assign(comp=0), "rate", "month", 25, control="comp")
    with pytest.raises(ParamsError, match="lags"):
        its(df, "rate", "month", 25, lags=-1)
    with pytest.warns(StatisticalWarning, match="fewer than"):
        its(df.iloc[:30], "rate", "month", 25)
    with pytest.warns(StatisticalWarning, match="gaps"):
        its(df.drop(index=[3, 30]), "rate", "month", 25)
    res = its(df, "rate", "month", 25)
    with pytest.warns(StatisticalWarning, match="beyond the last observed"):
        res.relative_effect(40)


def test_large_member_panel_runs_quickly():
    """5,000 members x 24 months without dummy matrices (Poisson with unit effects)."""
    rng = np.random.default_rng(15)
    N, T = 5000, 24
    u = np.repeat(np.arange(N), T)
    t = np.tile(np.arange(1, T + 1), N)
    tr = (u % 2).astype(int)
    lam = 0.05 * rng.gamma(2, 0.5, N)[u] * np.where(tr * (t >= 13) == 1, 0.82, 1.0)
    df = pd.DataFrame({"member": u, "month": t, "tr": tr, "er": rng.poisson(lam), "mm": 1.0})
    res = did(df, "er", "member", "month", "tr", intervention_time=13, family="poisson",
              exposure="mm")
    eff = res.effect().table.iloc[0]
    assert eff["ci_low"] < 0.82 < eff["ci_high"]
    assert res.extra["n_units"] == N



def test_nested_small_sample_leaves_unit_effects_out_of_k():
    """Default: unit effects nested in the clusters are not counted in k (fixest / reghdfe);
    the variance then differs from the dummy-variable convention by exactly
    (n - N - K) / (n - K)."""
    rng = np.random.default_rng(3)
    N, T = 300, 2
    df = pd.DataFrame({"unit": np.repeat(np.arange(N), T), "time": np.tile(np.arange(T), N)})
    df["treated"] = (df["unit"] < N // 2).astype(int)
    df["post"] = (df["time"] == 1).astype(int)
    df["y"] = rng.normal(size=len(df)) + 0.5 * df.treated * df.post + np.repeat(rng.normal(size=N), T)
    a = did_nested(df, "y", "unit", "time", "treated", post="post", event_study=False)
    b = did_nested(df, "y", "unit", "time", "treated", post="post", event_study=False,
                  small_sample="dummies")
    n, K = len(df), 2        # one period effect + the DiD term
    ratio = (a.effect().table.std_error.iloc[0] / b.effect().table.std_error.iloc[0]) ** 2
    assert ratio == pytest.approx((n - N - K) / (n - K), rel=1e-10)
    with pytest.raises(ParamsError, match="small_sample"):
        did_nested(df, "y", "unit", "time", "treated", post="post", small_sample="stata")
