"""What empirical calibration returns: the empirical null, the systematic error
model and a calibrated estimate, as frozen values with tidy tables."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from evalkit.errors import ParamsError


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
