"""Negative-control outcomes and empirical calibration of p-values and confidence intervals.

An observational design (matching, weighting, regression on claims data) carries
systematic error from residual confounding, selection and measurement that the
standard error knows nothing about. *Negative-control outcomes* are outcomes the
program cannot plausibly change -- e.g. injury or dental visits for a mental-health
self-help referral -- so their true effect is null (log rate ratio 0). Running the
same design on many of them shows how far its estimates stray from the truth when
there is nothing to find: that spread is an estimate of the design's systematic error.

Empirical calibration (Schuemie et al. 2014, 2018; R package ``EmpiricalCalibration``)
models this error as a normal distribution and folds it into inference:

1. :func:`negative_controls` runs the estimation on every negative-control outcome and
   collects ``log_estimate`` and ``std_error``;
2. :func:`fit_null` fits the *empirical null* N(mu, sigma^2) by maximum likelihood;
3. :func:`calibrate_p` gives the calibrated p-value of an estimate of interest,
   :func:`calibrate_ci` its calibrated CI (optionally with a
   :func:`fit_systematic_error_model` that also uses positive controls), and
   :func:`calibrate` both as one :class:`Calibrated` value;
4. :func:`calibration_plot` draws the funnel of negative-control estimates against
   their SEs with the calibrated p < 0.05 boundary.

The estimates are on the log scale for ratio measures (log rate/odds/hazard ratios).
Nothing here uses the log itself, so differences (e.g. visits per member) can be
calibrated on their own scale, as long as controls and estimate share it.

The likelihood fits are written by hand (with scipy's optimiser and analytic
derivatives) because no Python library fits these models: the null is a
maximum-likelihood random-effects meta-analysis of the controls, which statsmodels
offers only with DerSimonian-Laird or Paule-Mandel variance estimators.

References
----------
Schuemie MJ, Ryan PB, DuMouchel W, Suchard MA, Madigan D (2014). Interpreting
observational studies: why empirical calibration is needed to correct p-values.
Stat Med 33:209-218.
Schuemie MJ, Hripcsak G, Ryan PB, Madigan D, Suchard MA (2018). Empirical confidence
interval calibration for population-level effect estimation studies in observational
healthcare data. PNAS 115:2571-2577.
Lipsitch M, Tchetgen Tchetgen E, Cohen T (2010). Negative controls: a tool for detecting
confounding and bias in observational studies. Epidemiology 21:383-388.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import optimize, stats

try:  # vectorised bracketing root finder, scipy >= 1.15
    from scipy.optimize.elementwise import find_root as _find_root
except ImportError:  # pragma: no cover - older scipy: one brentq call per estimate
    _find_root = None

from evalkit.errors import (
    ConvergenceError,
    DataDroppedWarning,
    DataValidationError,
    ParamsError,
    StatisticalWarning,
)
from evalkit.models.effects import check_alpha

_LOG_2PI = math.log(2 * math.pi)
MIN_CONTROLS = 3
FEW_CONTROLS = 5


# --------------------------------------------------------------------------------------
# result types
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Null:
    """An empirical null distribution of systematic error, N(mu, sigma^2).

    Attributes
    ----------
    mu : float
        Mean systematic error (bias) of the design on the estimate's scale; a negative
        control's estimate is expected at ``mu`` instead of 0.
    sigma : float
        SD of the systematic error across outcomes (>= 0; 0 means the controls scatter
        no more than their standard errors explain).
    se_mu, se_sigma : float
        Standard errors from the inverse observed information at the MLE. At the
        ``sigma = 0`` boundary ``se_sigma`` is NaN (the information for sigma vanishes
        there) and ``se_mu`` is the fixed-effect SE ``1 / sqrt(sum 1/se_i^2)``.
    loglik : float
        Maximised log-likelihood.
    n : int
        Negative controls used.
    cov : ndarray or None
        2 x 2 covariance of ``(mu, sigma)``.
    boundary : bool
        Whether the MLE is on the ``sigma = 0`` boundary.
    dropped : dict
        Controls left out and why (reason -> count).

    A ``Null`` can be written down directly, e.g. ``Null(mu=0.1, sigma=0.2)``, to
    calibrate with a null taken from elsewhere.
    """

    mu: float
    sigma: float
    se_mu: float = float("nan")
    se_sigma: float = float("nan")
    loglik: float = float("nan")
    n: int = 0
    cov: np.ndarray | None = field(default=None, repr=False)
    boundary: bool = False
    dropped: dict = field(default_factory=dict)

    def __post_init__(self):
        if not np.isfinite(self.mu):
            raise ParamsError(f"Null: mu must be finite, not {self.mu}.")
        if not (np.isfinite(self.sigma) and self.sigma >= 0):
            raise ParamsError(f"Null: sigma must be finite and >= 0, not {self.sigma}.")

    def to_frame(self) -> pd.DataFrame:
        """Two rows (``mu``, ``sigma``) with estimate, SE and 95% Wald CI."""
        z = stats.norm.ppf(0.975)
        rows = []
        for name, est, se in (("mu", self.mu, self.se_mu), ("sigma", self.sigma, self.se_sigma)):
            lo, hi = est - z * se, est + z * se
            if name == "sigma":
                lo = max(lo, 0.0)
            rows.append({"parameter": name, "estimate": est, "std_error": se,
                         "ci_low": lo, "ci_high": hi})
        return pd.DataFrame(rows)

    def summary(self) -> str:
        sd = ("0 (boundary)" if self.boundary
              else f"{self.sigma:.4g} (SE {self.se_sigma:.3g})")
        lines = [f"Empirical null from {self.n} negative controls: mean {self.mu:.4g} "
                 f"(SE {self.se_mu:.3g}), SD {sd}; log-likelihood {self.loglik:.6g}"]
        if self.boundary:
            lines.append("SD on the 0 boundary: the controls show no spread beyond their own "
                         "standard errors.")
        if self.dropped:
            lines.append("dropped: " + ", ".join(f"{k}={v}" for k, v in self.dropped.items()))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return f"<pre>{self.summary()}</pre>" + self.to_frame().to_html(index=False)


@dataclass(frozen=True, eq=False)
class SystematicErrorModel:
    """Systematic error as a function of the true effect (Schuemie et al. 2018).

    For a control with true effect ``t`` (log scale) the estimate is

        log_estimate ~ N(mean(t), sd(t)^2 + se^2),
        mean(t) = mean_intercept + mean_slope * t,
        log sd(t) = log_sd_intercept + log_sd_slope * t,

    i.e. the mean and the log SD of the error distribution are linear in the true effect
    (``EmpiricalCalibration::fitSystematicErrorModel(legacy = TRUE)``; the package's
    newer default makes the SD itself linear in ``|t|``). An unbiased design has
    ``mean_slope = 1`` and ``mean_intercept = 0``; a design biased towards the null has
    ``mean_slope < 1``.

    Attributes
    ----------
    mean_intercept, mean_slope, log_sd_intercept, log_sd_slope : float
        The model; ``log_sd_intercept`` is ``-inf`` when the SD is 0.
    cov : ndarray or None
        4 x 4 covariance of the parameters (inverse observed information) when fitted
        with positive controls.
    loglik : float
    n : int
        Controls used (negative and positive).
    source : str
        ``"fit"`` (positive and negative controls), ``"null"`` (from a null with
        assumed slopes, see :meth:`from_null`).
    null : Null or None
        The null behind a ``"null"`` model.
    """

    mean_intercept: float
    mean_slope: float
    log_sd_intercept: float
    log_sd_slope: float
    cov: np.ndarray | None = field(default=None, repr=False)
    loglik: float = float("nan")
    n: int = 0
    source: str = "fit"
    null: Null | None = field(default=None, repr=False)
    dropped: dict = field(default_factory=dict)

    @classmethod
    def from_null(cls, null: Null, mean_slope: float = 1.0,
                  log_sd_slope: float = 0.0) -> SystematicErrorModel:
        """Error model from a null alone (``EmpiricalCalibration::convertNullToErrorModel``).

        With negative controls only the slopes cannot be estimated; the default
        assumes the error distribution is the same for every true effect size. If the
        design is biased towards the null this assumption fails and calibrated CIs
        under-cover; positive controls and :func:`fit_systematic_error_model` fix that.
        """
        if not isinstance(null, Null):
            raise ParamsError("from_null: null must be a Null (see fit_null).")
        with np.errstate(divide="ignore"):
            log_sd = float(np.log(null.sigma))
        cov = None
        if null.cov is not None:
            # slopes are assumed (variance 0); delta method for log sigma:
            # d log(sigma) / d sigma = 1 / sigma (undefined on the sigma = 0 boundary)
            cov = np.zeros((4, 4))
            cov[0, 0] = null.cov[0, 0]
            if null.sigma > 0:
                cov[0, 2] = cov[2, 0] = null.cov[0, 1] / null.sigma
                cov[2, 2] = null.cov[1, 1] / null.sigma ** 2
            else:
                cov[0, 2] = cov[2, 0] = cov[2, 2] = np.nan
        return cls(mean_intercept=null.mu, mean_slope=float(mean_slope), log_sd_intercept=log_sd,
                   log_sd_slope=float(log_sd_slope), cov=cov, loglik=null.loglik, n=null.n,
                   source="null", null=null, dropped=dict(null.dropped))

    @property
    def params(self) -> np.ndarray:
        return np.array([self.mean_intercept, self.mean_slope, self.log_sd_intercept,
                         self.log_sd_slope])

    def mean(self, true_log_effect):
        """Expected estimate for a true effect ``t``: ``mean_intercept + mean_slope * t``."""
        return self.mean_intercept + self.mean_slope * np.asarray(true_log_effect, dtype=float)

    def sd(self, true_log_effect):
        """SD of the systematic error for a true effect ``t``."""
        with np.errstate(over="ignore"):
            return np.exp(self.log_sd_intercept
                          + self.log_sd_slope * np.asarray(true_log_effect, dtype=float))

    def to_frame(self) -> pd.DataFrame:
        names = ["mean_intercept", "mean_slope", "log_sd_intercept", "log_sd_slope"]
        se = (np.sqrt(np.diag(self.cov)) if self.cov is not None
              else np.full(4, np.nan))
        if self.source == "null":
            se = se.copy()
            se[[1, 3]] = np.nan      # assumed, not estimated
        return pd.DataFrame({"parameter": names, "estimate": self.params, "std_error": se})

    def summary(self) -> str:
        how = ("fitted to negative and positive controls" if self.source == "fit"
               else "from the empirical null, slopes assumed")
        return (f"Systematic error model ({how}, n = {self.n}): mean = "
                f"{self.mean_intercept:.4g} + {self.mean_slope:.4g} t; log SD = "
                f"{self.log_sd_intercept:.4g} + {self.log_sd_slope:.4g} t")

    def _repr_html_(self) -> str:
        return f"<pre>{self.summary()}</pre>" + self.to_frame().to_html(index=False)


@dataclass(frozen=True, eq=False)
class Calibrated:
    """An estimate with its ordinary and its empirically calibrated inference.

    Attributes
    ----------
    log_estimate, std_error, ci_low, ci_high, p_value : float
        The estimate as given, its SE, Wald (1 - alpha) CI and two-sided normal p-value.
    calibrated_estimate, calibrated_std_error, calibrated_ci_low, calibrated_ci_high : float
        The calibrated point estimate (the true effect whose error distribution has the
        observed estimate as its median), the calibrated CI and the SE implied by it,
        ``(high - low) / (2 z)``.
    calibrated_p_value : float
        Two-sided p-value against the empirical null.
    null : Null
    model : SystematicErrorModel
        Model used for the CI (``SystematicErrorModel.from_null(null)`` unless given).
    alpha : float
    label : str
    """

    log_estimate: float
    std_error: float
    ci_low: float
    ci_high: float
    p_value: float
    calibrated_estimate: float
    calibrated_std_error: float
    calibrated_ci_low: float
    calibrated_ci_high: float
    calibrated_p_value: float
    null: Null
    model: SystematicErrorModel = field(repr=False)
    alpha: float = 0.05
    label: str = ""

    def to_frame(self, exponentiate: bool = False) -> pd.DataFrame:
        """Two rows, ``uncalibrated`` and ``calibrated``.

        ``exponentiate=True`` reports ratios (exp of estimate and limits) for log-scale
        estimates; the SE stays on the log scale.
        """
        f = np.exp if exponentiate else (lambda v: v)
        rows = [
            {"label": self.label, "inference": "uncalibrated", "estimate": f(self.log_estimate),
             "std_error": self.std_error, "ci_low": f(self.ci_low), "ci_high": f(self.ci_high),
             "p_value": self.p_value},
            {"label": self.label, "inference": "calibrated",
             "estimate": f(self.calibrated_estimate), "std_error": self.calibrated_std_error,
             "ci_low": f(self.calibrated_ci_low), "ci_high": f(self.calibrated_ci_high),
             "p_value": self.calibrated_p_value},
        ]
        return pd.DataFrame(rows)

    def summary(self) -> str:
        lvl = round(100 * (1 - self.alpha))
        head = f"{self.label}: " if self.label else ""
        return (f"{head}estimate {self.log_estimate:.4g} ({lvl}% CI {self.ci_low:.4g} to "
                f"{self.ci_high:.4g}, p = {self.p_value:.3g}); calibrated "
                f"{self.calibrated_estimate:.4g} ({lvl}% CI {self.calibrated_ci_low:.4g} to "
                f"{self.calibrated_ci_high:.4g}, p = {self.calibrated_p_value:.3g}); empirical "
                f"null mean {self.null.mu:.3g}, SD {self.null.sigma:.3g} (n = {self.null.n})")

    def _repr_html_(self) -> str:
        return f"<pre>{self.summary()}</pre>" + self.to_frame().to_html(index=False)


# --------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------
def _as_vector(x, name: str, what: str) -> np.ndarray:
    if isinstance(x, (pd.Series, pd.Index)):
        x = x.to_numpy()
    try:
        arr = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as err:
        raise DataValidationError(f"{what}: {name} must be numeric ({err}).") from None
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ParamsError(f"{what}: {name} must be one-dimensional, got shape {arr.shape}.")
    return arr


def _controls(log_estimates, std_errors, what: str, extra=None, extra_name: str = ""):
    """Validate control estimates; drop non-finite rows with a warning (as R does)."""
    y = _as_vector(log_estimates, "log_estimates", what)
    se = _as_vector(std_errors, "std_errors", what)
    arrays = [y, se]
    if extra is not None:
        arrays.append(_as_vector(extra, extra_name, what))
    if len({a.size for a in arrays}) != 1:
        names = ["log_estimates", "std_errors"] + ([extra_name] if extra is not None else [])
        sizes = ", ".join(f"{n} {a.size}" for n, a in zip(names, arrays))
        raise ParamsError(f"{what}: inputs must have the same length ({sizes}).")
    bad_se = np.isfinite(se) & (se <= 0)
    if bad_se.any():
        raise DataValidationError(
            f"{what}: std_errors must be > 0; {int(bad_se.sum())} are <= 0 (e.g. "
            f"{se[bad_se][:3].tolist()}). A zero or negative SE usually means a failed fit; "
            "drop that control or fix its estimate.")
    keep = np.ones(y.size, dtype=bool)
    dropped: dict = {}
    for name, a in zip(["log_estimates", "std_errors", extra_name], arrays):
        bad = ~np.isfinite(a) & keep
        if bad.any():
            dropped[f"non-finite {name}"] = int(bad.sum())
            keep &= ~bad
    if dropped:
        warnings.warn(f"{what}: left out {sum(dropped.values())} control(s) with missing or "
                      f"infinite values ({dropped}).", DataDroppedWarning, stacklevel=3)
    arrays = [a[keep] for a in arrays]
    n = arrays[0].size
    if n < MIN_CONTROLS:
        raise DataValidationError(
            f"{what}: at least {MIN_CONTROLS} controls with finite estimates and SEs are "
            f"needed, got {n}. Add negative-control outcomes (dozens are usual).")
    if n < FEW_CONTROLS:
        warnings.warn(f"{what}: only {n} controls; the systematic error distribution is "
                      "poorly determined and its SD is biased low. Use many more (Schuemie et "
                      "al. used about 50).", StatisticalWarning, stacklevel=3)
    return (*arrays, dropped)


_check_alpha = check_alpha   # the one alpha check (evalkit.models.effects)


def _targets(log_estimate, std_error, what: str):
    """Estimates to calibrate: arrays of equal shape; SE must be > 0 where given."""
    scalar = np.ndim(log_estimate) == 0 and np.ndim(std_error) == 0
    y = np.atleast_1d(np.asarray(log_estimate, dtype=float))
    se = np.atleast_1d(np.asarray(std_error, dtype=float))
    if y.shape != se.shape:
        raise ParamsError(f"{what}: log_estimate and std_error must have the same shape "
                          f"({y.shape} vs {se.shape}).")
    if np.any(se[np.isfinite(se)] <= 0):
        raise DataValidationError(f"{what}: std_error must be > 0.")
    return y, se, scalar


def _as_model(null_or_model, what: str) -> SystematicErrorModel:
    if isinstance(null_or_model, SystematicErrorModel):
        return null_or_model
    if isinstance(null_or_model, Null):
        return SystematicErrorModel.from_null(null_or_model)
    raise ParamsError(f"{what}: expected a Null (fit_null) or a SystematicErrorModel "
                      f"(fit_systematic_error_model), got {type(null_or_model).__name__}.")


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


# --------------------------------------------------------------------------------------
# running the design on negative controls
# --------------------------------------------------------------------------------------
_CAUGHT = (DataValidationError, ConvergenceError, np.linalg.LinAlgError)


def _number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _extract(result, term: str | None, outcome: str) -> tuple[float, float]:
    """(estimate, SE) from what an estimation function returned."""
    if isinstance(result, Sequence) and not isinstance(result, str) and len(result) == 2 \
            and all(_number(v) for v in result):
        return float(result[0]), float(result[1])
    if isinstance(result, (Mapping, pd.Series)):
        keys = ("log_estimate", "estimate")
        for k in keys:
            if k in result and "std_error" in result:
                return float(result[k]), float(result["std_error"])
    est, se = getattr(result, "estimate", None), getattr(result, "std_error", None)
    if _number(est) and _number(se):
        return float(est), float(se)
    table = getattr(result, "table", None)
    if isinstance(table, pd.DataFrame) and {"term", "estimate", "std_error"} <= set(table.columns):
        if term is None:
            raise ParamsError(f"negative_controls: the result for '{outcome}' is a coefficient "
                              f"table; pass term= (one of {table['term'].tolist()}).")
        rows = table.loc[table["term"] == term]
        if len(rows) != 1:
            raise ParamsError(f"negative_controls: term '{term}' is not (uniquely) in the "
                              f"table for '{outcome}'; terms: {table['term'].tolist()}.")
        return float(rows["estimate"].iloc[0]), float(rows["std_error"].iloc[0])
    raise ParamsError(
        f"negative_controls: cannot read an estimate from a {type(result).__name__} "
        f"(outcome '{outcome}'). estimate_fn should return (log_estimate, std_error), a "
        "mapping with those keys, an object with float .estimate and .std_error (Effect), "
        "or a result with a coefficient table plus term=.")


def negative_controls(data, outcomes, estimate_fn: Callable, *, term: str | None = None,
                      alpha: float = 0.05, **kwargs) -> pd.DataFrame:
    """Run one estimation design on every negative-control outcome.

    Calls ``estimate_fn(data, outcome, **kwargs)`` for each outcome and collects the
    estimate of the program's effect and its SE in a tidy table, ready for
    :func:`fit_null`. Use the *same* design (cohort, covariates, matching/weighting,
    outcome model) as for the outcome of interest, so the controls carry its systematic
    error.

    Parameters
    ----------
    data : DataFrame
        Passed to ``estimate_fn`` unchanged (not modified here).
    outcomes : list of str
        Negative-control outcome columns (outcomes the program cannot plausibly change).
    estimate_fn : callable
        ``estimate_fn(data, outcome, **kwargs)`` returning one of

        * ``(log_estimate, std_error)``;
        * a mapping/Series with ``log_estimate`` (or ``estimate``) and ``std_error``;
        * an object with float ``estimate`` and ``std_error``, such as
          :class:`evalkit.causal.Effect` (difference scale);
        * a result with a coefficient ``table`` (``term``, ``estimate``, ``std_error``),
          such as :func:`evalkit.models.count.count_model` -- then pass ``term=``, the
          treatment term, whose coefficient is a log rate ratio.
    term : str, optional
        Row of a coefficient table to read.
    alpha : float
        For the Wald CIs in the table.
    **kwargs
        Passed to ``estimate_fn``.

    Returns
    -------
    DataFrame
        One row per outcome: ``outcome, log_estimate, std_error, ci_low, ci_high,
        p_value, error``. A control whose estimation failed with a data problem
        (``DataValidationError``, ``ConvergenceError``, singular matrix) gets NaN and the
        message in ``error``, with a ``StatisticalWarning``; other exceptions propagate.

    Examples
    --------
    >>> controls = negative_controls(
    ...     df, ["injury_visits", "dental_visits", "eye_exams"],
    ...     lambda d, y: count_model(d, f"{y} ~ treated + age + female", "negbin"),
    ...     term="treated")                                                # doctest: +SKIP
    >>> null = fit_null(controls["log_estimate"], controls["std_error"])  # doctest: +SKIP
    """
    what = "negative_controls"
    alpha = _check_alpha(alpha)
    if isinstance(outcomes, str):
        outcomes = [outcomes]
    outcomes = list(outcomes)
    if not outcomes:
        raise ParamsError(f"{what}: outcomes is empty.")
    if len(set(outcomes)) != len(outcomes):
        raise ParamsError(f"{what}: outcomes are repeated: {outcomes}.")
    if not callable(estimate_fn):
        raise ParamsError(f"{what}: estimate_fn must be callable.")
    if isinstance(data, pd.DataFrame):
        missing = [o for o in outcomes if o not in data.columns]
        if missing:
            raise DataValidationError(f"{what}: outcome column(s) not in the data: {missing}.")
    z = float(stats.norm.ppf(1 - alpha / 2))
    rows, failed = [], []
    for outcome in outcomes:
        try:
            est, se = _extract(estimate_fn(data, outcome, **kwargs), term, outcome)
            err = None
        except _CAUGHT as e:
            est, se, err = np.nan, np.nan, f"{type(e).__name__}: {e}"
            failed.append(outcome)
        ok = np.isfinite(est) and np.isfinite(se) and se > 0
        rows.append({"outcome": outcome, "log_estimate": est, "std_error": se,
                     "ci_low": est - z * se if ok else np.nan,
                     "ci_high": est + z * se if ok else np.nan,
                     "p_value": float(2 * stats.norm.sf(abs(est) / se)) if ok else np.nan,
                     "error": err})
    if failed:
        warnings.warn(f"{what}: estimation failed for {len(failed)} control(s) {failed}; "
                      "see the 'error' column. fit_null leaves them out.", StatisticalWarning,
                      stacklevel=2)
    out = pd.DataFrame(rows)
    out["error"] = out["error"].astype(object)
    return out


# --------------------------------------------------------------------------------------
# plot
# --------------------------------------------------------------------------------------
def _control_arrays(controls):
    if isinstance(controls, pd.DataFrame):
        col = "log_estimate" if "log_estimate" in controls.columns else "estimate"
        if col not in controls.columns or "std_error" not in controls.columns:
            raise DataValidationError("calibration_plot: controls need columns 'log_estimate' "
                                      "and 'std_error' (see negative_controls).")
        y, se = controls[col].to_numpy(float), controls["std_error"].to_numpy(float)
    else:
        try:
            y, se = (np.asarray(a, dtype=float) for a in controls)
        except (TypeError, ValueError):
            raise ParamsError("calibration_plot: controls must be a DataFrame or a pair "
                              "(log_estimates, std_errors).") from None
    if y.shape != se.shape:
        raise ParamsError("calibration_plot: estimates and SEs differ in length.")
    ok = np.isfinite(y) & np.isfinite(se)
    return y[ok], se[ok]


def calibration_plot(null: Null, controls, ax=None, estimates=None, alpha: float = 0.05,
                     exponentiate: bool = True):
    """Funnel plot of negative-control estimates with the calibrated significance boundary.

    Each control is a point at (estimate, SE). The dashed lines are the ordinary
    boundary ``|estimate| = z * SE``: controls outside it are "significant" though their
    true effect is null. The solid lines are the calibrated boundary
    ``|estimate - mu| = z * sqrt(sigma^2 + SE^2)``; the shaded area outside it is where
    calibrated p < alpha. Controls there are drawn in orange, the others in blue; a
    well-calibrated design has about alpha of them outside (as
    ``EmpiricalCalibration::plotCalibrationEffect``).

    Parameters
    ----------
    null : Null
    controls : DataFrame or (log_estimates, std_errors)
        The table from :func:`negative_controls`, or two arrays.
    ax : matplotlib Axes, optional
        Drawn on; a new figure is made when None.
    estimates : DataFrame or (log_estimates, std_errors), optional
        Estimates of interest, drawn as black diamonds.
    alpha : float
    exponentiate : bool
        Log-scale estimates shown as ratios on a log axis (default); False plots the
        estimates as they are (e.g. difference scale).

    Returns
    -------
    matplotlib Axes
    """

    alpha = _check_alpha(alpha)
    if not isinstance(null, Null):
        raise ParamsError("calibration_plot: null must be a Null from fit_null.")
    y, se = _control_arrays(controls)
    ey = ese = None
    if estimates is not None:
        ey, ese = _control_arrays(estimates)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4.5))
    z = float(stats.norm.ppf(1 - alpha / 2))
    all_se = se if ese is None else np.concatenate([se, ese])
    se_max = 1.1 * float(np.max(all_se)) if all_se.size else 1.0
    grid = np.linspace(0, se_max, 200)
    width = z * np.sqrt(null.sigma ** 2 + grid ** 2)
    lo_b, hi_b = null.mu - width, null.mu + width
    all_y = y if ey is None else np.concatenate([y, ey])
    span = max(float(np.max(np.abs(all_y - null.mu))) if all_y.size else 0.0,
               float(np.max(width)), z * se_max) * 1.15
    xmin, xmax = null.mu - span, null.mu + span
    f = np.exp if exponentiate else (lambda v: v)
    ax.fill_betweenx(grid, f(np.full_like(grid, xmin)), f(lo_b), color="#fdd49e", alpha=0.5,
                     lw=0, label=f"calibrated p < {alpha:g}")
    ax.fill_betweenx(grid, f(hi_b), f(np.full_like(grid, xmax)), color="#fdd49e", alpha=0.5,
                     lw=0)
    ax.plot(f(lo_b), grid, color="#d7301f", lw=1.2)
    ax.plot(f(hi_b), grid, color="#d7301f", lw=1.2)
    ax.plot(f(-z * grid), grid, color="grey", ls="--", lw=1, label=f"uncalibrated p = {alpha:g}")
    ax.plot(f(z * grid), grid, color="grey", ls="--", lw=1)
    p = calibrate_p(y, se, null) if y.size else np.array([])
    out = p < alpha
    ax.scatter(f(y[~out]), se[~out], s=18, color="#2c7fb8", alpha=0.8, zorder=3,
               label="negative controls")
    ax.scatter(f(y[out]), se[out], s=18, color="#f16913", alpha=0.9, zorder=3)
    if ey is not None:
        ax.scatter(f(ey), ese, marker="D", s=36, color="black", zorder=4, label="estimate")
    ax.axvline(f(0.0), color="black", lw=0.6)
    ax.set_ylim(0, se_max)
    if exponentiate:
        ax.set_xscale("log")
        ax.set_xlabel("effect estimate (ratio, log axis)")
        ax.set_ylabel("standard error (log scale)")
    else:
        ax.set_xlabel("effect estimate")
        ax.set_ylabel("standard error")
    ax.set_xlim(f(xmin), f(xmax))
    n_out = int(out.sum())
    n_trad = int(np.sum(np.abs(y) > z * se))
    ax.set_title(f"{len(y)} negative controls: {n_trad} with p < {alpha:g}, {n_out} after "
                 "calibration", fontsize=10)
    ax.legend(frameon=False, fontsize=8, loc="upper left")
    ax.spines[["top", "right"]].set_visible(False)
    return ax


__all__ = [
    "Calibrated", "Null", "SystematicErrorModel", "calibrate", "calibrate_ci", "calibrate_p",
    "calibration_plot", "fit_null", "fit_systematic_error_model", "negative_controls",
]
