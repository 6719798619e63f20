"""E-values: how strong would unmeasured confounding have to be to explain an effect away?"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from evalkit.errors import ParamsError

_SCALES = ("RR", "HR", "OR", "MD")


@dataclass(frozen=True)
class EValue:
    """E-values for a point estimate and its confidence interval.

    Attributes
    ----------
    point : float
        E-value of the point estimate.
    ci : float or None
        E-value of the confidence limit closest to the null (1 if the interval
        includes the null); None when no interval was given.
    rr, rr_ci_low, rr_ci_high : float
        The estimate and limits on the (approximate) risk-ratio scale used.
    scale : str
        Scale of the input (``RR``, ``HR``, ``OR``, ``MD``).
    rare : bool
        Whether a HR/OR was treated as a risk ratio (outcome rare, < 15%).
    """

    point: float
    ci: float | None
    rr: float
    rr_ci_low: float | None
    rr_ci_high: float | None
    scale: str
    rare: bool

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{"scale": self.scale, "rr": self.rr, "rr_ci_low": self.rr_ci_low,
                              "rr_ci_high": self.rr_ci_high, "evalue_point": self.point,
                              "evalue_ci": self.ci}])

    def summary(self) -> str:
        ci = "no CI given" if self.ci is None else f"E-value for the CI: {self.ci:.3g}"
        return (f"E-value for the point estimate: {self.point:.3g}; {ci} (risk-ratio scale "
                f"estimate {self.rr:.3g}). An unmeasured confounder associated with both "
                f"treatment and outcome by a risk ratio of {self.point:.3g} each, above the "
                "measured covariates, could explain away the estimate; weaker confounding "
                "could not.")


def _e(rr: float) -> float:
    """E = RR + sqrt(RR (RR - 1)) for RR >= 1, applied to 1/RR below 1."""
    if rr < 1:
        rr = 1 / rr
    return rr + math.sqrt(rr * (rr - 1))


def _to_rr(x: float, scale: str, rare: bool) -> float:
    if scale == "RR" or rare:
        return x
    if scale == "OR":
        return math.sqrt(x)
    # common outcome HR (VanderWeele 2020 / VanderWeele & Ding 2017 appendix)
    return (1 - 0.5 ** math.sqrt(x)) / (1 - 0.5 ** math.sqrt(1 / x))


def evalue(estimate: float, ci_low: float | None = None, ci_high: float | None = None,
           scale: str = "RR", rare: bool = True, sd: float | None = None,
           se: float | None = None) -> EValue:
    """E-value of an observed association (VanderWeele & Ding 2017).

    The E-value is the minimum strength of association, on the risk-ratio scale, that
    an unmeasured confounder would need to have with both the treatment and the
    outcome, conditional on the measured covariates, to fully explain away the observed
    association. For a risk ratio RR >= 1

        E = RR + sqrt(RR * (RR - 1)),

    and for RR < 1 the same formula is applied to 1/RR. For the confidence interval,
    the E-value is computed for the limit closest to the null (the lower limit when
    RR > 1, the upper when RR < 1), and is 1 when the interval contains 1.

    Other scales are first converted to an approximate risk ratio:

    * ``"OR"``, ``"HR"`` with a rare outcome (``rare=True``, outcome < 15% by the end
      of follow-up): used as a risk ratio;
    * ``"OR"`` with a common outcome: RR ~ sqrt(OR);
    * ``"HR"`` with a common outcome: RR ~ (1 - 0.5^sqrt(HR)) / (1 - 0.5^sqrt(1/HR));
    * ``"MD"`` (difference in means of a continuous outcome): with d = MD / sd (``sd``
      = outcome SD), RR ~ exp(0.91 d); with ``se`` (SE of the MD) the interval is
      exp(0.91 d -/+ 1.78 se/sd) as in the paper; without ``se`` the given CI limits
      are converted the same way as the estimate.

    Parameters
    ----------
    estimate : float
        RR, HR or OR (> 0), or a mean difference.
    ci_low, ci_high : float, optional
        Confidence limits on the same scale.
    scale : {"RR", "HR", "OR", "MD"}
    rare : bool
        Outcome rare (< 15%)? Only used for HR and OR.
    sd : float
        Standard deviation of the outcome (required for ``"MD"``).
    se : float, optional
        Standard error of the mean difference (``"MD"`` only).

    Returns
    -------
    EValue

    Examples
    --------
    >>> round(evalue(3.9, 1.8, 8.7).point, 2)   # VanderWeele & Ding's example
    7.26
    >>> round(evalue(3.9, 1.8, 8.7).ci, 2)
    3.0

    References
    ----------
    VanderWeele TJ, Ding P (2017). Sensitivity analysis in observational research:
    introducing the E-value. Ann Intern Med 167:268-274.
    """
    scale = str(scale).upper()
    if scale not in _SCALES:
        raise ParamsError(f"evalue: scale must be one of {_SCALES}, not '{scale}'.")
    vals = [v for v in (estimate, ci_low, ci_high) if v is not None]
    if any(not math.isfinite(float(v)) for v in vals):
        raise ParamsError("evalue: estimate and limits must be finite numbers.")
    if ci_low is not None and ci_high is not None and not ci_low <= estimate <= ci_high:
        raise ParamsError(f"evalue: the estimate {estimate} is not inside its CI "
                          f"[{ci_low}, {ci_high}]; check the order of the limits and the scale.")
    if scale == "MD":
        if sd is None or not sd > 0:
            raise ParamsError("evalue: scale='MD' needs sd > 0, the outcome's standard deviation.")
        d = estimate / sd
        rr = math.exp(0.91 * d)
        if se is not None:
            if not se > 0:
                raise ParamsError("evalue: se must be > 0.")
            lo, hi = math.exp(0.91 * d - 1.78 * se / sd), math.exp(0.91 * d + 1.78 * se / sd)
        else:
            lo = None if ci_low is None else math.exp(0.91 * ci_low / sd)
            hi = None if ci_high is None else math.exp(0.91 * ci_high / sd)
    else:
        if se is not None or sd is not None:
            raise ParamsError("evalue: sd and se are only used with scale='MD'.")
        if any(float(v) <= 0 for v in vals):
            raise ParamsError(f"evalue: a {scale} and its limits must be > 0.")
        rr = _to_rr(estimate, scale, rare)
        lo = None if ci_low is None else _to_rr(ci_low, scale, rare)
        hi = None if ci_high is None else _to_rr(ci_high, scale, rare)
    point = _e(rr)
    ci = None
    if lo is not None or hi is not None:
        if rr >= 1:
            if lo is None:
                ci = None
            else:
                ci = 1.0 if lo <= 1 else _e(lo)
        else:
            if hi is None:
                ci = None
            else:
                ci = 1.0 if hi >= 1 else _e(hi)
    return EValue(point=point, ci=ci, rr=rr, rr_ci_low=lo, rr_ci_high=hi, scale=scale,
                  rare=bool(rare))
