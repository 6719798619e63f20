"""Planning a study: members needed to detect a drop in an overdispersed count.

Health-care use (ER visits, admissions) is a count with more spread than a Poisson
count: a few members use a lot. The negative binomial (NB) model captures this with a
dispersion k, ``Var(Y) = μ + k μ²`` for a member's count Y with mean μ over follow-up.
The functions here size a two-arm comparison of NB rates analysed by the log rate ratio
(e.g. an NB regression with an arm indicator and a Wald test):

* :func:`nb_sample_size` -- members per arm for a given power;
* :func:`nb_power` -- power for a given number of members;
* :func:`nb_mde` -- the smallest rate ratio detectable with a given number of members.

The formula (Zhu & Lakkis 2014)
-------------------------------
With control rate λ0 (events per member-year), rate ratio R (referred / control),
λ1 = R λ0, follow-up t years (so mean counts μ_i = λ_i t), dispersion k, allocation
r = n1 / n0 (referred / control members) and θ = log R, the ML estimate of θ has variance
V1 / n0 with

    V1 = 1 / (t λ0) + 1 / (r t λ1) + (1 + r) k / r.

A two-sided level-α test then needs

    n0 = (z_{1-α/2} √V0 + z_{1-β} √V1)² / θ²,     n1 = r n0,

where V0 is the variance under the null hypothesis, for which Zhu & Lakkis give three
choices: method 1, V0 = V1 (the true rates); method 2, both rates equal to the control
rate, V0 = (1 + r) / (r t λ0) + (1 + r) k / r; **method 3 (default)**, both rates equal
to the rate pooled over the arms under the null, λ̄ = (λ0 + r λ1) / (1 + r), i.e.
V0 = (1 + r)² / (r t (λ0 + r λ1)) + (1 + r) k / r. Zhu & Lakkis recommend methods 2 or 3
from their simulations; method 3 is statsmodels' ``method_var="ftotal"``.

Power is ``Φ((|θ| √n0 - z √V0) / √V1)`` plus the (negligible) far tail, computed with
:func:`statsmodels.stats.power.normal_power_het`. The sample size uses the closed form
above; statsmodels has the NB power (``power_negbin_ratio_2indep``) but not method 2 or
the sample-size inversion, so the variances are written out here (the tests cross-check
methods 1 and 3 against statsmodels).

Assumptions: every member is followed for the same t; k is the same in both arms and is
the dispersion of the count over the follow-up (a gamma frailty constant over time);
counts are independent across members.

Reference
---------
Zhu H, Lakkis H (2014). Sample size calculation for comparing two negative binomial rates.
*Statistics in Medicine* 33(3):376-387. doi:10.1002/sim.5947
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, stats
from statsmodels.stats.power import normal_power_het

from evalkit.econ.costbenefit import _real
from evalkit.errors import ParamsError
from evalkit.models.base import TermTable

__all__ = ["NBSampleSize", "NBPower", "NBMDE", "nb_sample_size", "nb_power", "nb_mde",
           "nb_variances"]

_METHODS = {1: "Zhu & Lakkis method 1 (null variance at the true rates, V0 = V1)",
            2: "Zhu & Lakkis method 2 (null variance at the control rate)",
            3: "Zhu & Lakkis method 3 (null variance at the pooled rate)"}
_SIDES = ("two-sided", "one-sided")


def _check_common(baseline_rate, dispersion, followup_years, alpha, allocation, method,
                  alternative):
    lam0 = _real("baseline_rate", baseline_rate, low=0, low_open=True,
                 hint="Events per member-year in the comparison arm, e.g. 0.35 ER visits.")
    k = _real("dispersion", dispersion, low=0,
              hint="NB dispersion k in Var = mu + k mu^2 (0 = Poisson).")
    t = _real("followup_years", followup_years, low=0, low_open=True)
    a = _real("alpha", alpha, low=0, high=1, low_open=True, high_open=True)
    r = _real("allocation", allocation, low=0, low_open=True,
              hint="allocation = referred members / comparison members (1 = equal arms).")
    if method not in _METHODS:
        raise ParamsError(f"method must be 1, 2 or 3 (Zhu & Lakkis 2014), got {method!r}.")
    if alternative not in _SIDES:
        raise ParamsError(f"alternative must be one of {_SIDES}, got {alternative!r}.")
    return lam0, k, t, a, r


def _check_ratio(rate_ratio) -> float:
    rr = _real("rate_ratio", rate_ratio, low=0, low_open=True,
               hint="e.g. 0.82 for an 18% drop.")
    if rr == 1:
        raise ParamsError("rate_ratio must differ from 1: there is no effect to detect.")
    return rr


def nb_variances(baseline_rate: float, rate_ratio: float, dispersion: float,
                 followup_years: float, allocation: float = 1.0, method: int = 3
                 ) -> tuple[float, float]:
    """(V0, V1): per-control-member variances of the log rate ratio under H0 and H1.

    See the module docstring for the formulas (Zhu & Lakkis 2014, methods 1-3).
    """
    lam0, k, t = baseline_rate, dispersion, followup_years
    r = allocation
    lam1 = lam0 * rate_ratio
    disp = (1 + r) * k / r
    v1 = 1 / (t * lam0) + 1 / (r * t * lam1) + disp
    if method == 1:
        v0 = v1
    elif method == 2:
        v0 = (1 + r) / (r * t * lam0) + disp
    else:
        v0 = (1 + r) ** 2 / (r * t * (lam0 + r * lam1)) + disp
    return v0, v1


def _figures_table(inputs: dict, results: dict) -> pd.DataFrame:
    """A one-answer result as a table keyed by ``term``: the inputs, then the results,
    told apart by ``kind``."""
    rows = [{"term": k, "kind": kind, "estimate": float(v)}
            for kind, figures in (("input", inputs), ("result", results))
            for k, v in figures.items()]
    return pd.DataFrame(rows)


def _power(n0, lam0, rr, k, t, a, r, method, alternative) -> np.ndarray:
    v0, v1 = nb_variances(lam0, rr, k, t, r, method)
    # normal_power_het: 'larger' is one-sided in the direction of the effect once |θ| is used.
    side = "two-sided" if alternative == "two-sided" else "larger"
    return np.asarray(normal_power_het(abs(math.log(rr)), n0, a, std_null=math.sqrt(v0),
                                       std_alternative=math.sqrt(v1), alternative=side),
                      dtype=float)


@dataclass(frozen=True, eq=False)
class NBSampleSize(TermTable):
    """Members needed per arm to detect a rate ratio in an NB count.

    Attributes
    ----------
    n_control, n_treated : int
        Comparison and referred members (rounded up); ``n_per_arm`` is ``n_control``
        and equals ``n_treated`` under equal allocation.
    n_control_exact : float
        Before rounding.
    power : float
        Power achieved at the rounded numbers (>= the target).
    v0, v1 : float
        Variances of the log rate ratio per control member under H0 and H1.
    table : DataFrame
        The inputs and results, keyed by ``term``: ``term, kind (input/result),
        estimate``; e.g. ``res.at("n_total")``. The test's sides and the variance
        method are in ``alternative`` and ``method``.
    """

    n_control: int
    n_treated: int
    n_control_exact: float
    power: float
    target_power: float
    baseline_rate: float
    rate_ratio: float
    dispersion: float
    followup_years: float
    alpha: float
    allocation: float
    method: str
    alternative: str
    v0: float
    v1: float
    table: pd.DataFrame

    @property
    def n_per_arm(self) -> int:
        return self.n_control

    @property
    def n_total(self) -> int:
        return self.n_control + self.n_treated

    def to_frame(self) -> pd.DataFrame:
        return self.table.copy()


def nb_sample_size(baseline_rate: float, rate_ratio: float, dispersion: float,
                   followup_years: float = 1.0, alpha: float = 0.05, power: float = 0.8,
                   allocation: float = 1.0, *, method: int = 3,
                   alternative: str = "two-sided") -> NBSampleSize:
    """Members per arm to detect a given rate ratio in an overdispersed count.

    Parameters
    ----------
    baseline_rate : float
        Events per member-year in the comparison arm (e.g. 0.35 ER visits).
    rate_ratio : float
        Rate in the referred arm / comparison rate to detect (0.82 = an 18% drop).
    dispersion : float
        NB dispersion k of a member's count over the follow-up: Var = μ + k μ²
        (statsmodels' NB2 ``alpha``; R's ``1 / theta``). 0 is Poisson.
    followup_years : float, default 1
        Follow-up per member.
    alpha : float, default 0.05
    power : float, default 0.8
    allocation : float, default 1
        Referred members per comparison member (r = n1 / n0).
    method : {1, 2, 3}, default 3
        Zhu & Lakkis's variance under the null; 3 uses the pooled rate.
    alternative : {"two-sided", "one-sided"}

    Returns
    -------
    NBSampleSize

    Examples
    --------
    Members per arm for 80% power to see an 18% drop in ER use (0.35 visits a year,
    dispersion 1.5, one year of follow-up):

    >>> nb_sample_size(0.35, 0.82, 1.5).n_per_arm
    1854
    """
    lam0, k, t, a, r = _check_common(baseline_rate, dispersion, followup_years, alpha,
                                     allocation, method, alternative)
    rr = _check_ratio(rate_ratio)
    target = _real("power", power, low=0, high=1, low_open=True, high_open=True)
    v0, v1 = nb_variances(lam0, rr, k, t, r, method)
    za = stats.norm.ppf(1 - a / 2) if alternative == "two-sided" else stats.norm.ppf(1 - a)
    zb = stats.norm.ppf(target)
    n0 = (za * math.sqrt(v0) + zb * math.sqrt(v1)) ** 2 / math.log(rr) ** 2
    # Guard against 1e-12 floating error turning an exact integer into the next one.
    n_control = math.ceil(n0 - 1e-9)
    n_treated = math.ceil(r * n0 - 1e-9)
    achieved = float(_power(n_control, lam0, rr, k, t, a, r, method, alternative))
    table = _figures_table(
        {"baseline_rate": lam0, "rate_ratio": rr, "dispersion": k, "followup_years": t,
         "alpha": a, "target_power": target, "allocation": r},
        {"n_control": n_control, "n_treated": n_treated, "n_total": n_control + n_treated,
         "n_control_exact": n0, "power": achieved})
    return NBSampleSize(n_control=n_control, n_treated=n_treated, n_control_exact=float(n0),
                        power=achieved, target_power=target, baseline_rate=lam0, rate_ratio=rr,
                        dispersion=k, followup_years=t, alpha=a, allocation=r,
                        method=_METHODS[method], alternative=alternative, v0=v0, v1=v1,
                        table=table)


@dataclass(frozen=True, eq=False)
class NBPower(TermTable):
    """Power of the NB rate comparison.

    Attributes
    ----------
    power : float or ndarray
        A float for one ``n_per_arm``; an array (one per value) for several.
    table : DataFrame
        Keyed by ``term`` (always ``power``) with the arm sizes as qualifiers, one row
        per ``n_per_arm``: ``term, n_control, n_treated, rate_ratio, estimate`` (the
        power); e.g. ``res.at("power", n_control=2000)``.
    method : str
    """

    power: float | np.ndarray
    table: pd.DataFrame
    method: str

    def to_frame(self) -> pd.DataFrame:
        return self.table.copy()


def nb_power(n_per_arm, baseline_rate: float, rate_ratio: float, dispersion: float,
             followup_years: float = 1.0, alpha: float = 0.05, allocation: float = 1.0, *,
             method: int = 3, alternative: str = "two-sided") -> NBPower:
    """Power to detect ``rate_ratio`` with ``n_per_arm`` comparison members.

    ``n_per_arm`` is the comparison arm's size (the referred arm has
    ``allocation * n_per_arm``); give an array for a power curve. Other parameters as
    in :func:`nb_sample_size`.

    Examples
    --------
    Could a plan see an 18% drop in ER use with 2,000 members per arm?

    >>> round(float(nb_power(2000, 0.35, 0.82, 1.5).power), 3)
    0.829
    """
    lam0, k, t, a, r = _check_common(baseline_rate, dispersion, followup_years, alpha,
                                     allocation, method, alternative)
    rr = _check_ratio(rate_ratio)
    n = np.atleast_1d(np.asarray(n_per_arm, dtype=float))
    if n.ndim != 1 or not np.isfinite(n).all() or (n <= 0).any():
        raise ParamsError(f"n_per_arm must be one or more positive numbers of members, got {n_per_arm!r}.")
    p = _power(n, lam0, rr, k, t, a, r, method, alternative)
    table = pd.DataFrame({"term": "power", "n_control": n, "n_treated": r * n,
                          "rate_ratio": rr, "estimate": p})
    out = float(p[0]) if np.ndim(n_per_arm) == 0 else p
    return NBPower(power=out, table=table, method=_METHODS[method])


@dataclass(frozen=True, eq=False)
class NBMDE(TermTable):
    """Minimum detectable rate ratio.

    Attributes
    ----------
    rate_ratio : float
        The rate ratio detectable with the requested power.
    percent_change : float
        100 (rate_ratio - 1): e.g. -18 for an 18% drop.
    table : DataFrame
        The inputs and results, keyed by ``term``: ``term, kind (input/result),
        estimate``; e.g. ``res.at("rate_ratio")``.
    """

    rate_ratio: float
    percent_change: float
    power: float
    n_control: float
    n_treated: float
    method: str
    table: pd.DataFrame

    def to_frame(self) -> pd.DataFrame:
        return self.table.copy()


def nb_mde(n_per_arm: float, baseline_rate: float, dispersion: float,
           followup_years: float = 1.0, alpha: float = 0.05, power: float = 0.8,
           allocation: float = 1.0, *, method: int = 3, alternative: str = "two-sided",
           direction: str = "decrease") -> NBMDE:
    """Smallest change in the rate detectable with ``n_per_arm`` comparison members.

    Solves ``nb_power(n_per_arm, ..., rate_ratio=R) = power`` for R by root-finding
    (Brent's method, :func:`scipy.optimize.brentq`).

    Parameters
    ----------
    direction : {"decrease", "increase"}, default "decrease"
        Look for R < 1 (a drop) or R > 1.

    Notes
    -----
    The search is confined to 0.001 <= R <= 1000. Near R = 0 the referred arm has
    almost no events, the variance 1/(r t λ1) explodes and the normal approximation
    stops meaning anything (the power formula is not even monotone there). For a
    decrease the root is looked for between the R of highest power in [0.001, 1) and 1;
    if no R in range reaches the target power, a ParamsError says more members are
    needed.

    Examples
    --------
    >>> round(nb_mde(2000, 0.35, 1.5).rate_ratio, 4)
    0.8263
    """
    lam0, k, t, a, r = _check_common(baseline_rate, dispersion, followup_years, alpha,
                                     allocation, method, alternative)
    target = _real("power", power, low=0, high=1, low_open=True, high_open=True)
    n0 = _real("n_per_arm", n_per_arm, low=0, low_open=True)
    if direction not in ("decrease", "increase"):
        raise ParamsError(f"direction must be 'decrease' or 'increase', got {direction!r}.")
    floor = a / 2 if alternative == "two-sided" else a
    if target <= floor:
        raise ParamsError(f"power must exceed {floor:g} (the rejection rate with no effect).")

    def f(log_rr):
        return float(_power(n0, lam0, math.exp(log_rr), k, t, a, r, method, alternative)) - target

    if direction == "decrease":
        best = optimize.minimize_scalar(lambda x: -f(x), bounds=(math.log(1e-3), -1e-12),
                                        method="bounded", options={"xatol": 1e-10})
        lo_x = math.log(1e-3)
        if f(lo_x) > -best.fun:  # a monotone curve peaks at the bound itself
            best = optimize.OptimizeResult(x=lo_x, fun=-f(lo_x))
        if -best.fun < 0:
            raise ParamsError(
                f"with {n0:g} comparison members no drop in the rate reaches {target:.0%} power "
                f"(at most {target - best.fun:.1%}); more members are needed "
                "(see nb_sample_size).")
        log_rr = optimize.brentq(f, best.x, -1e-12, xtol=1e-12)
    else:
        hi = math.log(1e3)
        if f(hi) < 0:
            raise ParamsError(
                f"with {n0:g} comparison members not even a 1000-fold increase in the rate "
                f"reaches {target:.0%} power; more members are needed (see nb_sample_size).")
        log_rr = optimize.brentq(f, 1e-12, hi, xtol=1e-12)
    rr = math.exp(log_rr)
    table = _figures_table(
        {"n_control": n0, "n_treated": r * n0, "baseline_rate": lam0, "dispersion": k,
         "followup_years": t, "alpha": a, "power": target},
        {"rate_ratio": rr, "percent_change": 100 * (rr - 1)})
    return NBMDE(rate_ratio=rr, percent_change=100 * (rr - 1), power=target, n_control=n0,
                 n_treated=r * n0, method=_METHODS[method], table=table)
