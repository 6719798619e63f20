"""The maximum-likelihood fits: the empirical null from negative controls, and the
systematic error model from negative and positive controls.

Written by hand (scipy's optimiser with analytic derivatives) because no Python library
fits these models: the null is a maximum-likelihood random-effects meta-analysis of the
controls, which statsmodels offers only with DerSimonian-Laird or Paule-Mandel variance
estimators."""
from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
from scipy import optimize

from evalkit.errors import ConvergenceError, ParamsError, StatisticalWarning

from .checks import _controls
from .values import Null, SystematicErrorModel

_LOG_2PI = math.log(2 * math.pi)


# --------------------------------------------------------------------------------------
# empirical null
# --------------------------------------------------------------------------------------
def _null_loglik(mu: float, sigma: float, y: np.ndarray, se: np.ndarray) -> float:
    v = sigma ** 2 + se ** 2
    return float(-0.5 * np.sum(_LOG_2PI + np.log(v) + (y - mu) ** 2 / v))


def _null_derivatives(mu: float, sigma: float, y: np.ndarray, se: np.ndarray):
    """Score and Hessian of the log-likelihood in (mu, sigma).

    l = -1/2 sum [log 2pi + log v_i + r_i^2 / v_i], v_i = sigma^2 + se_i^2, r_i = y_i - mu:
    dl/dmu = sum r/v;  dl/dsigma = sigma sum (r^2/v^2 - 1/v);
    d2l/dmu2 = -sum 1/v;  d2l/dmu dsigma = -2 sigma sum r/v^2;
    d2l/dsigma2 = sum (r^2/v^2 - 1/v + 2 sigma^2/v^2 - 4 sigma^2 r^2/v^3).
    """
    v = sigma ** 2 + se ** 2
    r = y - mu
    a = r ** 2 / v ** 2 - 1 / v
    grad = np.array([np.sum(r / v), sigma * np.sum(a)])
    h_mm = -np.sum(1 / v)
    h_ms = -2 * sigma * np.sum(r / v ** 2)
    h_ss = np.sum(a + 2 * sigma ** 2 / v ** 2 - 4 * sigma ** 2 * r ** 2 / v ** 3)
    return grad, np.array([[h_mm, h_ms], [h_ms, h_ss]])


def _newton_decrement(grad: np.ndarray, hess: np.ndarray) -> float:
    try:
        return float(-grad @ np.linalg.solve(hess, grad))
    except np.linalg.LinAlgError:
        return float("inf")


def _inverse_information(hess: np.ndarray, what: str) -> np.ndarray:
    """Covariance = inverse of the observed information (-Hessian); NaN if not p.d."""
    info = -hess
    if np.all(np.isfinite(info)) and np.all(np.linalg.eigvalsh(info) > 0):
        return np.linalg.inv(info)
    warnings.warn(f"{what}: the observed information is not positive definite at the "
                  "estimate, so standard errors are not available.", StatisticalWarning,
                  stacklevel=3)
    return np.full_like(hess, np.nan)


def fit_null(log_estimates, std_errors) -> Null:
    r"""Fit the empirical null distribution to negative-control estimates.

    Each negative control has true effect 0, so its estimate is systematic error plus
    random error. The empirical null (Schuemie et al. 2014) treats the systematic error
    as normal across outcomes:

    .. math::  \hat\beta_i \sim N(\mu, \sigma^2 + s_i^2),

    with :math:`s_i` the control's own standard error, and estimates :math:`\mu` (the
    design's average bias) and :math:`\sigma` (how much the bias varies across outcomes)
    by maximum likelihood. This is a random-effects meta-analysis of the controls with
    an ML estimate of the between-outcome SD, as ``EmpiricalCalibration::fitNull``.

    The likelihood is maximised over :math:`(\mu, \log\sigma)`, so :math:`\sigma \ge 0`
    holds: for fixed :math:`\sigma` the best :math:`\mu` is the weighted mean with
    weights :math:`1/(\sigma^2 + s_i^2)`, which leaves a one-dimensional profile
    likelihood in :math:`\log\sigma`. A grid finds its global mode (it can have two, e.g.
    with one outlying control), bounded Brent search refines it and Newton steps with
    analytic derivatives polish the joint maximum. The boundary :math:`\sigma = 0`
    (controls spread no more than their SEs explain) is checked separately: there
    :math:`\mu` is the inverse-variance weighted mean, and it is the answer when no
    interior point has a higher likelihood. SEs are from the inverse observed
    information in :math:`(\mu, \sigma)`.

    Parameters
    ----------
    log_estimates, std_errors : array_like
        One estimate (log scale for ratio measures) and its SE per negative control;
        e.g. the ``log_estimate`` and ``std_error`` columns of :func:`negative_controls`.
        Controls with a missing or infinite value are left out with a
        ``DataDroppedWarning`` (as R does); SEs must be > 0.

    Returns
    -------
    Null

    Raises
    ------
    DataValidationError
        Fewer than 3 usable controls; an SE <= 0.
    ParamsError
        Inputs of different lengths.

    Notes
    -----
    With few controls the ML estimate of :math:`\sigma` is biased low (as any ML
    variance component) and often lands on 0; a ``StatisticalWarning`` is raised below
    5 controls. ``EmpiricalCalibration`` optimises with Nelder-Mead over
    :math:`(\mu, 1/\sigma^2)`, which stops earlier; its estimates agree with the exact MLE
    here to a few decimals, not to machine precision.

    Examples
    --------
    >>> null = fit_null(controls["log_estimate"], controls["std_error"])  # doctest: +SKIP
    >>> null.mu, null.sigma                                              # doctest: +SKIP
    (0.18, 0.14)

    References
    ----------
    Schuemie MJ et al. (2014). Interpreting observational studies: why empirical
    calibration is needed to correct p-values. Stat Med 33:209-218.
    """
    what = "fit_null"
    y, se, dropped = _controls(log_estimates, std_errors, what)
    n = y.size

    # boundary candidate sigma = 0: the fixed-effect (inverse-variance) mean
    w = 1 / se ** 2
    mu_b = float(np.sum(w * y) / np.sum(w))
    ll_b = _null_loglik(mu_b, 0.0, y, se)

    # Interior optimum over (mu, log sigma). For fixed sigma the MLE of mu is the
    # inverse-variance mean with weights 1/(sigma^2 + se_i^2), so the likelihood is
    # maximised over log sigma alone (profile likelihood). The profile can have more than
    # one mode (e.g. one outlying control: a large sigma explains it, a small one fits
    # the rest), so a grid over log sigma locates the global mode, bounded Brent search
    # (scipy) refines it, and Newton steps in (mu, log sigma) with analytic derivatives
    # polish the joint maximum.
    def profile(log_sigma):
        v = np.exp(2 * np.asarray(log_sigma, dtype=float))[..., None] + se ** 2
        mu = np.sum(y / v, axis=-1, keepdims=True) / np.sum(1 / v, axis=-1, keepdims=True)
        return -0.5 * np.sum(_LOG_2PI + np.log(v) + (y - mu) ** 2 / v, axis=-1), mu[..., 0]

    med = float(np.median(se))
    upper = max(10 * float(np.std(y)), 10 * med)
    grid = np.linspace(math.log(1e-4 * float(np.min(se))), math.log(upper), 121)
    ll_grid, _ = profile(grid)
    k = int(np.argmax(ll_grid))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, grid.size - 1)]
    opt = optimize.minimize_scalar(lambda e: -float(profile(e)[0]), bounds=(lo, hi),
                                   method="bounded", options={"xatol": 1e-10})
    eta = float(opt.x)
    mu_i = float(profile(eta)[1])
    theta = np.array([mu_i, eta])
    for _ in range(20):
        s_ = math.exp(theta[1])
        g, h = _null_derivatives(theta[0], s_, y, se)
        g_eta = np.array([g[0], s_ * g[1]])
        h_eta = np.array([[h[0, 0], s_ * h[0, 1]], [s_ * h[0, 1], s_ ** 2 * h[1, 1] + s_ * g[1]]])
        if not np.all(np.linalg.eigvalsh(h_eta) < 0):
            break
        step = np.linalg.solve(h_eta, g_eta)
        theta = theta - step
        if np.max(np.abs(step)) < 1e-13:
            break
    mu_i, sigma_i = float(theta[0]), float(math.exp(theta[1]))
    ll_i = _null_loglik(mu_i, sigma_i, y, se)
    interior = (np.isfinite(ll_i) and ll_i > ll_b + 1e-12 * max(1.0, abs(ll_b))
                and sigma_i > 1e-8 * float(np.min(se)))

    if interior:
        g, h = _null_derivatives(mu_i, sigma_i, y, se)
        if not _newton_decrement(g, h) < 1e-10:
            raise ConvergenceError(
                f"fit_null: the maximum likelihood fit did not converge (score {g}). Check "
                "the controls for extreme estimates or SEs.")
        cov = _inverse_information(h, what)
        return Null(mu=mu_i, sigma=sigma_i, se_mu=float(np.sqrt(cov[0, 0])),
                    se_sigma=float(np.sqrt(cov[1, 1])), loglik=ll_i, n=n, cov=cov,
                    boundary=False, dropped=dropped)
    se_mu = float(1 / np.sqrt(np.sum(w)))
    cov = np.array([[se_mu ** 2, np.nan], [np.nan, np.nan]])
    return Null(mu=mu_b, sigma=0.0, se_mu=se_mu, se_sigma=float("nan"), loglik=ll_b, n=n,
                cov=cov, boundary=True, dropped=dropped)


# --------------------------------------------------------------------------------------
# systematic error model with positive controls
# --------------------------------------------------------------------------------------
def _model_derivatives(theta: np.ndarray, y, se, t):
    """Log-likelihood, score and Hessian of the systematic error model in (a, b, c, d).

    m = a + b t, g = c + d t, sd = exp(g), v = sd^2 + se^2, r = y - m.
    dl/dm = r/v;  dl/dg = sd^2 (r^2/v^2 - 1/v);
    d2l/dm2 = -1/v;  d2l/dm dg = -2 sd^2 r/v^2;
    d2l/dg2 = 2 sd^2 (r^2/v^2 - 1/v) + 2 sd^4 (1/v^2 - 2 r^2/v^3);
    then chain rule with dm/da = 1, dm/db = t, dg/dc = 1, dg/dd = t.
    """
    a, b, c, d = theta
    with np.errstate(over="ignore"):
        sd2 = np.exp(2 * (c + d * t))
    v = sd2 + se ** 2
    r = y - (a + b * t)
    ll = float(-0.5 * np.sum(_LOG_2PI + np.log(v) + r ** 2 / v))
    q = r ** 2 / v ** 2 - 1 / v
    lm, lg = r / v, sd2 * q
    lmm, lmg = -1 / v, -2 * sd2 * r / v ** 2
    lgg = 2 * sd2 * q + 2 * sd2 ** 2 * (1 / v ** 2 - 2 * r ** 2 / v ** 3)
    one = np.ones_like(t)
    dm = np.vstack([one, t, 0 * t, 0 * t])
    dg = np.vstack([0 * t, 0 * t, one, t])
    grad = dm @ lm + dg @ lg
    hess = (dm * lmm) @ dm.T + (dm * lmg) @ dg.T + (dg * lmg) @ dm.T + (dg * lgg) @ dg.T
    return ll, grad, hess


def fit_systematic_error_model(log_estimates, std_errors, true_log_effects) -> SystematicErrorModel:
    r"""Fit the systematic error model to negative and positive controls.

    Schuemie et al. (2018) extend the empirical null to controls with a known non-null
    effect :math:`t_i` (positive controls, usually made by injecting synthetic outcomes
    into negative controls):

    .. math::
        \hat\beta_i \sim N\big(a + b\,t_i,\; e^{2(c + d\,t_i)} + s_i^2\big),

    so both the mean and the log SD of the systematic error are linear in the true
    effect. The four parameters are estimated by maximum likelihood (trust-region Newton
    with analytic derivatives); their covariance is the inverse observed information.

    With negative controls only (all :math:`t_i = 0`) the slopes are not identified and
    the model reduces to the empirical null: :func:`fit_null` is fitted and converted with
    ``b = 1, d = 0`` (:meth:`SystematicErrorModel.from_null`).

    Parameters
    ----------
    log_estimates, std_errors : array_like
        Control estimates (log scale) and SEs > 0.
    true_log_effects : array_like
        True effect of each control on the same scale (0 for negative controls, e.g.
        ``log(2)`` for a positive control with an injected rate ratio of 2).

    Returns
    -------
    SystematicErrorModel

    Raises
    ------
    DataValidationError, ParamsError
        As :func:`fit_null`; all true effects equal and non-zero.
    ConvergenceError
        The fit did not converge.

    References
    ----------
    Schuemie MJ et al. (2018). Empirical confidence interval calibration for
    population-level effect estimation studies in observational healthcare data. PNAS
    115:2571-2577.
    """
    what = "fit_systematic_error_model"
    y, se, t, dropped = _controls(log_estimates, std_errors, what, true_log_effects,
                                  "true_log_effects")
    levels = np.unique(t)
    if levels.size == 1:
        if levels[0] != 0:
            raise ParamsError(f"{what}: every control has true effect {levels[0]}; the model "
                              "needs negative controls (true effect 0) and/or several "
                              "true effect sizes.")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StatisticalWarning)  # already warned above
            null = fit_null(y, se)
        null = dataclasses.replace(null, dropped=dropped)
        return SystematicErrorModel.from_null(null)

    # start: weighted least squares for the mean, common excess SD for the spread
    w = 1 / se ** 2
    X = np.column_stack([np.ones_like(t), t])
    beta = np.linalg.solve((X * w[:, None]).T @ X, (X * w[:, None]).T @ y)
    excess = np.mean((y - X @ beta) ** 2 - se ** 2)
    med = float(np.median(se))
    starts = {0.1 * med, med, max(math.sqrt(max(excess, 0.0)), 0.05)}
    res, best = None, -np.inf
    for s0 in sorted(starts):   # several starting spreads: the likelihood may be multimodal
        theta0 = np.array([beta[0], beta[1], math.log(s0), 0.0])
        r = optimize.minimize(lambda th: -_model_derivatives(th, y, se, t)[0], theta0,
                              jac=lambda th: -_model_derivatives(th, y, se, t)[1],
                              hess=lambda th: -_model_derivatives(th, y, se, t)[2],
                              method="trust-exact", options={"gtol": 1e-10, "maxiter": 1000})
        ll_r = -float(r.fun)
        if res is None or ll_r > best:
            res, best = r, ll_r
    ll, g, h = _model_derivatives(res.x, y, se, t)
    dec = _newton_decrement(g, h)
    if not (np.isfinite(ll) and (dec < 1e-10 or np.max(np.abs(g)) < 1e-8)):
        raise ConvergenceError(
            f"{what}: the maximum likelihood fit did not converge ({res.message}). The SD of "
            "the error may be collapsing to 0 at one true effect size; check the positive "
            "controls there, or use fit_null with negative controls only.")
    cov = _inverse_information(h, what)
    a, b, c, d = (float(v) for v in res.x)
    return SystematicErrorModel(mean_intercept=a, mean_slope=b, log_sd_intercept=c,
                                log_sd_slope=d, cov=cov, loglik=ll, n=y.size, source="fit",
                                dropped=dropped)
