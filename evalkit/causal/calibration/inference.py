"""Calibrated p-values and confidence intervals of an estimate of interest."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import optimize, stats

try:  # vectorised bracketing root finder, scipy >= 1.15
    from scipy.optimize.elementwise import find_root as _find_root
except ImportError:  # pragma: no cover - older scipy: one brentq call per estimate
    _find_root = None

from evalkit.errors import DataValidationError, ParamsError, StatisticalWarning

from .checks import _as_model, _check_alpha, _targets
from .values import Calibrated, Null, SystematicErrorModel


# --------------------------------------------------------------------------------------
# calibrated p-values
# --------------------------------------------------------------------------------------
def calibrate_p(log_estimate, std_error, null, alternative: str = "two-sided"):
    r"""Calibrated p-value of an estimate against the empirical null.

    Under the null hypothesis of no effect, an estimate from this design is distributed
    as the negative controls are, :math:`N(\mu, \sigma^2 + s^2)` with :math:`s` its own
    SE, instead of :math:`N(0, s^2)`. With
    :math:`z = (\hat\beta - \mu) / \sqrt{\sigma^2 + s^2}` the calibrated two-sided p-value
    is :math:`2\,\Phi(-|z|)` (Schuemie et al. 2014; ``EmpiricalCalibration::calibrateP``).
    With :math:`\mu = \sigma = 0` it is the ordinary Wald p-value.

    Parameters
    ----------
    log_estimate, std_error : float or array_like
        Estimate(s) of interest (same scale as the controls) and SE(s) > 0.
    null : Null or SystematicErrorModel
        From :func:`fit_null`; a model is evaluated at true effect 0.
    alternative : {"two-sided", "greater", "less"}
        ``"greater"``: :math:`P(\text{estimate} \ge \hat\beta)` under the null (R's
        ``twoSided = FALSE, upper = TRUE``); ``"less"``: the lower tail.

    Returns
    -------
    float or ndarray
        A float for scalar input; NaN where the estimate or SE is missing.

    Examples
    --------
    >>> calibrate_p(math.log(1.5), 0.1, Null(mu=0.1, sigma=0.2))      # doctest: +ELLIPSIS
    0.171...
    """
    what = "calibrate_p"
    y, se, scalar = _targets(log_estimate, std_error, what)
    model = _as_model(null, what)
    if alternative not in ("two-sided", "greater", "less"):
        raise ParamsError(f"{what}: alternative must be 'two-sided', 'greater' or 'less', "
                          f"not {alternative!r}.")
    mu, sd = float(model.mean(0.0)), float(model.sd(0.0))
    z = (y - mu) / np.sqrt(sd ** 2 + se ** 2)
    if alternative == "two-sided":
        p = 2 * stats.norm.sf(np.abs(z))
    elif alternative == "greater":
        p = stats.norm.sf(z)
    else:
        p = stats.norm.cdf(z)
    return float(p[0]) if scalar else p


# --------------------------------------------------------------------------------------
# calibrated confidence intervals
# --------------------------------------------------------------------------------------
def _standardised(x, y, se, a, b, c, d, zq):
    """g(x) = zq + (mean(x) - y) / sqrt(sd(x)^2 + se^2) for the model (a, b, c, d): zero
    where the estimate y sits at the ``Phi(zq)`` quantile of the distribution of estimates
    when the true effect is x."""
    m = a + b * x
    with np.errstate(over="ignore", invalid="ignore"):
        sd = np.exp(c + d * x)
        den = np.sqrt(sd ** 2 + se ** 2)
        out = zq + (m - y) / den
    # an infinite SD makes every estimate plausible; keep the sign so brackets stay valid
    # (as EmpiricalCalibration does)
    inf = ~np.isfinite(den)
    if np.any(inf):
        out = np.where(inf, zq + np.sign(m - y) * 1e-10, out)
    return out


def _bracketed_roots(lo, hi, y, se, par, zq):
    """Roots of _standardised inside valid brackets [lo, hi] (Chandrupatla's method)."""
    if _find_root is not None:
        sol = _find_root(_standardised, (lo, hi), args=(y, se, *par, zq))
        return np.where(sol.success, sol.x, np.nan)
    return np.array([optimize.brentq(lambda x: float(_standardised(x, yi, si, *par, zq)), a, b,
                                     xtol=1e-14, rtol=4 * np.finfo(float).eps)
                     for a, b, yi, si in zip(lo, hi, y, se)])


def _solve(y, se, model: SystematicErrorModel, zq: float):
    """Root in x of _standardised, vectorised over estimates.

    A grid over [-W, W] (201 points; W = 100 on the log scale, wider for large
    estimates) brackets the crossing -- the first from the left when the log SD slope is
    >= 0, from the right when it is negative, as EmpiricalCalibration's search -- then
    Chandrupatla's method (scipy.optimize.elementwise.find_root; brentq on older scipy)
    refines it.
    """
    out = np.full(y.shape, np.nan)
    ok = np.isfinite(y) & np.isfinite(se)
    if not ok.any():
        return out
    yy, ss = y[ok], se[ok]
    s0 = np.sqrt(float(model.sd(0.0)) ** 2 + ss ** 2)
    half = max(100.0, float(np.max(np.abs(yy) + 20 * s0)) * 1.05)
    grid = np.linspace(-half, half, 201)
    par = tuple(float(v) for v in model.params)
    g = _standardised(grid[None, :], yy[:, None], ss[:, None], *par, zq)
    cross = (np.sign(g[:, :-1]) * np.sign(g[:, 1:]) <= 0) & ~((g[:, :-1] == 0) & (g[:, 1:] == 0))
    has = cross.any(axis=1)
    if model.log_sd_slope >= 0:
        k = np.argmax(cross, axis=1)
    else:
        k = cross.shape[1] - 1 - np.argmax(cross[:, ::-1], axis=1)
    root = np.full(yy.shape, np.nan)
    rows = np.flatnonzero(has)
    if rows.size:
        lo, hi = grid[k[rows]], grid[k[rows] + 1]
        glo, ghi = g[rows, k[rows]], g[rows, k[rows] + 1]
        exact_lo, exact_hi = glo == 0, ghi == 0
        need = ~(exact_lo | exact_hi)
        r = np.where(exact_lo, lo, hi)
        if need.any():
            r[need] = _bracketed_roots(lo[need], hi[need], yy[rows][need], ss[rows][need],
                                       par, zq)
        root[rows] = r
    out[ok] = root
    return out


def calibrate_ci(log_estimate, std_error, model, alpha: float = 0.05) -> pd.DataFrame:
    r"""Calibrated confidence interval and point estimate (Schuemie et al. 2018).

    Inverting the calibrated test: the (1 - alpha) calibrated CI holds the true effects
    :math:`x` for which the observed estimate is not in either alpha/2 tail of the
    estimate's distribution under that truth,
    :math:`N(\text{mean}(x), \text{sd}(x)^2 + s^2)`. The limits solve

    .. math:: \frac{\hat\beta - \text{mean}(x)}{\sqrt{\text{sd}(x)^2 + s^2}} = \pm z_{1-\alpha/2},

    found by root-finding (``EmpiricalCalibration::calibrateConfidenceInterval``); the
    calibrated point estimate solves it with 0 on the right (the truth whose error
    distribution has the estimate as its median). The calibrated SE is
    ``(ci_high - ci_low) / (2 z)``.

    For a :class:`Null` (mean slope 1, constant SD) this is
    :math:`\hat\beta - \mu \pm z\sqrt{\sigma^2 + s^2}`; with :math:`\mu = \sigma = 0` it
    is the Wald interval.

    Parameters
    ----------
    log_estimate, std_error : float or array_like
        Estimate(s) and SE(s) > 0 on the controls' scale. Vectorised.
    model : SystematicErrorModel or Null
        From :func:`fit_systematic_error_model`, or a null (converted with
        :meth:`SystematicErrorModel.from_null`).
    alpha : float
        1 - confidence level.

    Returns
    -------
    DataFrame
        One row per estimate: ``log_estimate, std_error, ci_low, ci_high`` (all
        calibrated). NaN (with a ``StatisticalWarning``) where no root was found.

    Examples
    --------
    >>> calibrate_ci(0.5, 0.1, Null(mu=0.2, sigma=0.15))                 # doctest: +SKIP
       log_estimate  std_error    ci_low   ci_high
    0           0.3   0.180278 -0.053339  0.653339
    """
    what = "calibrate_ci"
    alpha = _check_alpha(alpha)
    y, se, _ = _targets(log_estimate, std_error, what)
    if y.ndim != 1:
        raise ParamsError(f"{what}: log_estimate must be a number or a 1-D array.")
    m = _as_model(model, what)
    z = float(stats.norm.ppf(1 - alpha / 2))
    point = _solve(y, se, m, 0.0)
    a = _solve(y, se, m, z)     # estimate in the upper alpha/2 tail: lower limit
    b = _solve(y, se, m, -z)    # lower tail: upper limit
    lo, hi = np.fmin(a, b), np.fmax(a, b)
    failed = np.isfinite(y) & np.isfinite(se) & ~(np.isfinite(point) & np.isfinite(lo)
                                                  & np.isfinite(hi))
    if failed.any():
        warnings.warn(f"{what}: no calibrated limit was found for {int(failed.sum())} "
                      "estimate(s) (the error model never reaches the required quantile); "
                      "they are NaN.", StatisticalWarning, stacklevel=2)
    return pd.DataFrame({"log_estimate": point, "std_error": (hi - lo) / (2 * z),
                         "ci_low": lo, "ci_high": hi})


def calibrate(log_estimate: float, std_error: float, null: Null,
              model: SystematicErrorModel | None = None, alpha: float = 0.05,
              label: str = "") -> Calibrated:
    """Calibrate one estimate: p-value against ``null``, CI with ``model``.

    Parameters
    ----------
    log_estimate, std_error : float
        The estimate of interest (log scale for ratios) and its SE.
    null : Null
        From :func:`fit_null` on the negative controls.
    model : SystematicErrorModel, optional
        For the CI; defaults to ``SystematicErrorModel.from_null(null)``.
    alpha : float
    label : str
        Name carried into the result (e.g. the outcome).

    Returns
    -------
    Calibrated

    Examples
    --------
    >>> res = calibrate(eff.table.set_index("term").loc["treat", "estimate"],
    ...                 eff.table.set_index("term").loc["treat", "std_error"], null)  # doctest: +SKIP
    >>> res.to_frame(exponentiate=True)                                           # doctest: +SKIP
    """
    what = "calibrate"
    alpha = _check_alpha(alpha)
    if not isinstance(null, Null):
        raise ParamsError(f"{what}: null must be a Null from fit_null, got {type(null).__name__}.")
    if np.ndim(log_estimate) != 0 or np.ndim(std_error) != 0:
        raise ParamsError(f"{what}: calibrates one estimate; use calibrate_p / calibrate_ci "
                          "for arrays.")
    y, se = float(log_estimate), float(std_error)
    if not (np.isfinite(y) and np.isfinite(se)):
        raise DataValidationError(f"{what}: log_estimate and std_error must be finite.")
    if se <= 0:
        raise DataValidationError(f"{what}: std_error must be > 0, not {se}.")
    m = SystematicErrorModel.from_null(null) if model is None else _as_model(model, what)
    z = float(stats.norm.ppf(1 - alpha / 2))
    ci = calibrate_ci(y, se, m, alpha=alpha).iloc[0]
    return Calibrated(
        log_estimate=y, std_error=se, ci_low=y - z * se, ci_high=y + z * se,
        p_value=float(2 * stats.norm.sf(abs(y) / se)),
        calibrated_estimate=float(ci["log_estimate"]),
        calibrated_std_error=float(ci["std_error"]), calibrated_ci_low=float(ci["ci_low"]),
        calibrated_ci_high=float(ci["ci_high"]), calibrated_p_value=calibrate_p(y, se, null),
        null=null, model=m, alpha=alpha, label=label)
