"""Sample size, power and minimum detectable effect for NB rates (Zhu & Lakkis 2014).

Checked three ways:
1. against the Zhu & Lakkis (2014, Stat Med 33:376-387) closed form, evaluated here by
   hand from the variances written out in the comments (no worked example from the paper
   is used: we do not have its tables to hand);
2. against an independent implementation, statsmodels'
   ``statsmodels.stats.rates.power_negbin_ratio_2indep`` (method 1 = ``method_var="alt"``,
   method 3 = ``method_var="ftotal"``);
3. against a seeded simulation: Poisson-gamma (NB) data at the formula's sample size,
   an NB GLM with the dispersion fixed at its true value, and a Wald test of the arm
   coefficient, 400 replicates.
"""
import math

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats
from statsmodels.stats.rates import power_negbin_ratio_2indep

from evalkit.econ import nb_mde, nb_power, nb_sample_size
from evalkit.errors import ParamsError

Z975 = 1.959963984540054   # standard normal 97.5th percentile
Z80 = 0.8416212335729143   # standard normal 80th percentile


# --------------------------------------------------------------------------------------
# 1. the closed form, by hand
# --------------------------------------------------------------------------------------
def test_er_example_by_hand():
    """An 18% drop in ER use: 0.35 visits/member-year, dispersion 1.5, one year, 1:1."""
    # λ1 = 0.35 * 0.82 = 0.287
    # V1 = 1/0.35 + 1/0.287 + (1+1)*1.5/1          = 2.857142857 + 3.484320557 + 3
    v1 = 9.341463414634147
    # method 3: V0 = (1+1)^2 / (0.35 + 0.287) + 3  = 6.279434851 + 3
    v0 = 9.279434850863422
    theta = math.log(0.82)    # -0.19845093872383832
    n_exact = (Z975 * math.sqrt(v0) + Z80 * math.sqrt(v1)) ** 2 / theta ** 2
    res = nb_sample_size(0.35, 0.82, 1.5, followup_years=1)
    assert res.v1 == pytest.approx(v1, rel=1e-12)
    assert res.v0 == pytest.approx(v0, rel=1e-12)
    assert res.n_control_exact == pytest.approx(n_exact, rel=1e-12)
    assert res.n_per_arm == res.n_treated == math.ceil(n_exact) == 1854
    assert res.power >= 0.8
    # README question: 2,000 members per arm. Power = Φ((|θ|√2000 - z√V0)/√V1) + far tail.
    p = stats.norm.cdf((abs(theta) * math.sqrt(2000) - Z975 * math.sqrt(v0)) / math.sqrt(v1)) + \
        stats.norm.cdf((-abs(theta) * math.sqrt(2000) - Z975 * math.sqrt(v0)) / math.sqrt(v1))
    assert nb_power(2000, 0.35, 0.82, 1.5).power == pytest.approx(p, rel=1e-12)
    assert 0.82 < p < 0.84


@pytest.mark.parametrize("method, v0", [
    (1, 9.341463414634147),   # V0 = V1
    (2, 8.714285714285714),   # V0 = (1+1)/(1*0.35) + 3
    (3, 9.279434850863422),   # pooled rate
])
def test_three_null_variances(method, v0):
    res = nb_sample_size(0.35, 0.82, 1.5, method=method)
    assert res.v0 == pytest.approx(v0, rel=1e-12)
    n = (Z975 * math.sqrt(v0) + Z80 * math.sqrt(9.341463414634147)) ** 2 / math.log(0.82) ** 2
    assert res.n_control == math.ceil(n)


def test_unequal_allocation_and_longer_followup_by_hand():
    # λ0 = 2, R = 0.75 (λ1 = 1.5), k = 0.8, t = 2, r = n1/n0 = 2, 90% power, method 3.
    # V1 = 1/(2*2) + 1/(2*2*1.5) + (1+2)*0.8/2 = 0.25 + 0.1666667 + 1.2
    v1 = 0.25 + 1 / 6 + 1.2
    # V0 = (1+2)^2 / (2*2*(2 + 2*1.5)) + 1.2 = 9/20 + 1.2
    v0 = 0.45 + 1.2
    z90 = 1.2815515655446004
    n = (Z975 * math.sqrt(v0) + z90 * math.sqrt(v1)) ** 2 / math.log(0.75) ** 2
    res = nb_sample_size(2.0, 0.75, 0.8, followup_years=2, power=0.9, allocation=2)
    assert res.n_control_exact == pytest.approx(n, rel=1e-12)
    assert res.n_control == math.ceil(n) and res.n_treated == math.ceil(2 * n)
    assert res.n_total == res.n_control + res.n_treated


def test_one_sided():
    res = nb_sample_size(0.35, 0.82, 1.5, alternative="one-sided", method=1)
    v = 9.341463414634147
    z95 = 1.6448536269514722
    assert res.n_control_exact == pytest.approx((z95 + Z80) ** 2 * v / math.log(0.82) ** 2,
                                                rel=1e-12)


# --------------------------------------------------------------------------------------
# 2. statsmodels as an independent implementation
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("method, method_var", [(1, "alt"), (3, "ftotal")])
@pytest.mark.parametrize("lam0, rr, k, t, r, n", [
    (0.35, 0.82, 1.5, 1.0, 1.0, 2000),
    (2.0, 0.75, 0.8, 2.0, 2.0, 150),
    (0.8, 1.25, 0.4, 0.75, 0.5, 900),
])
def test_power_matches_statsmodels(method, method_var, lam0, rr, k, t, r, n):
    # statsmodels: sample 1 = our comparison arm (nobs1 = n), sample 2 = referred arm
    # (nobs2 = nobs_ratio * n), so nobs_ratio = our allocation r.
    sm_power = power_negbin_ratio_2indep(lam0, lam0 * rr, n, nobs_ratio=r, exposure=t,
                                         value=1, alpha=0.05, dispersion=k,
                                         alternative="two-sided", method_var=method_var,
                                         return_results=False)
    ours = nb_power(n, lam0, rr, k, followup_years=t, allocation=r, method=method).power
    assert ours == pytest.approx(float(sm_power), rel=1e-10)


# --------------------------------------------------------------------------------------
# inverse relations
# --------------------------------------------------------------------------------------
def test_sample_size_is_smallest_n_with_target_power():
    res = nb_sample_size(0.35, 0.82, 1.5)
    assert nb_power(res.n_control, 0.35, 0.82, 1.5).power >= 0.8
    assert nb_power(res.n_control - 1, 0.35, 0.82, 1.5).power < 0.8
    curve = nb_power([500, 1000, 2000], 0.35, 0.82, 1.5)
    assert isinstance(curve.power, np.ndarray) and np.all(np.diff(curve.power) > 0)
    assert curve.table["n_control"].tolist() == [500, 1000, 2000]


@pytest.mark.parametrize("direction", ["decrease", "increase"])
def test_mde_inverts_power(direction):
    m = nb_mde(2000, 0.35, 1.5, power=0.8, direction=direction)
    assert (m.rate_ratio < 1) if direction == "decrease" else (m.rate_ratio > 1)
    assert nb_power(2000, 0.35, m.rate_ratio, 1.5).power == pytest.approx(0.8, abs=1e-9)
    assert m.percent_change == pytest.approx(100 * (m.rate_ratio - 1))


def test_mde_with_too_few_members():
    # Even wiping out the referred arm's events cannot give 99.9% power with 3 members.
    with pytest.raises(ParamsError, match="more members are needed"):
        nb_mde(3, 0.35, 1.5, power=0.999)


# --------------------------------------------------------------------------------------
# 3. seeded simulation
# --------------------------------------------------------------------------------------
def simulated_power(n0, n1, lam0, rr, k, t, reps, seed):
    """Share of replicates whose NB GLM Wald test rejects at 5% (dispersion fixed at k)."""
    rng = np.random.default_rng(seed)
    arm = np.r_[np.zeros(n0), np.ones(n1)]
    X = sm.add_constant(arm)
    mu = np.where(arm == 1, lam0 * rr * t, lam0 * t)
    exposure = np.full(n0 + n1, t)
    rejected = 0
    for _ in range(reps):
        frailty = rng.gamma(shape=1 / k, scale=k, size=n0 + n1)  # mean 1, variance k
        y = rng.poisson(mu * frailty)                            # NB: Var = μ + k μ²
        fit = sm.GLM(y, X, family=sm.families.NegativeBinomial(alpha=k),
                     exposure=exposure).fit()
        rejected += fit.pvalues[1] < 0.05
    return rejected / reps


@pytest.mark.parametrize("lam0, rr, k, t, r, seed", [
    (1.0, 0.70, 0.5, 1.0, 1.0, 20240611),
    (0.6, 0.65, 1.0, 2.0, 2.0, 8675309),
])
def test_formula_power_matches_simulation(lam0, rr, k, t, r, seed):
    res = nb_sample_size(lam0, rr, k, followup_years=t, allocation=r)
    reps = 400
    sim = simulated_power(res.n_control, res.n_treated, lam0, rr, k, t, reps, seed)
    se = math.sqrt(res.power * (1 - res.power) / reps)   # Monte-Carlo SE, about 0.02
    assert abs(sim - res.power) < 3 * se, (sim, res.power)


# --------------------------------------------------------------------------------------
# bad inputs
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, match", [
    (dict(rate_ratio=1.0), "must differ from 1"),
    (dict(rate_ratio=-0.8), "rate_ratio must be > 0"),
    (dict(baseline_rate=0), "baseline_rate must be > 0"),
    (dict(dispersion=-0.1), "dispersion must be >= 0"),
    (dict(followup_years=0), "followup_years must be > 0"),
    (dict(alpha=1.2), "alpha"),
    (dict(power=1.0), "power must be > 0 and < 1"),
    (dict(allocation=0), "allocation must be > 0"),
    (dict(method=4), "method must be 1, 2 or 3"),
    (dict(alternative="less"), "alternative must be one of"),
])
def test_bad_inputs(kw, match):
    args = dict(baseline_rate=0.35, rate_ratio=0.82, dispersion=1.5)
    args.update(kw)
    with pytest.raises(ParamsError, match=match):
        nb_sample_size(**args)


def test_bad_n():
    with pytest.raises(ParamsError, match="n_per_arm"):
        nb_power(0, 0.35, 0.82, 1.5)
    with pytest.raises(ParamsError, match="direction"):
        nb_mde(2000, 0.35, 1.5, direction="sideways")
