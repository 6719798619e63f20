"""The calibration funnel: negative-control estimates against their standard errors,
with the calibrated p < 0.05 boundary."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats

from evalkit.errors import DataValidationError, ParamsError
from evalkit.style import FAIL_COLOR, MUTED_COLOR, PASS_COLOR, ratio_axis

from .checks import _check_alpha
from .inference import calibrate_p
from .values import Null


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
    ax.fill_betweenx(grid, f(np.full_like(grid, xmin)), f(lo_b), color=FAIL_COLOR, alpha=0.12,
                     lw=0, label=f"calibrated p < {alpha:g}")
    ax.fill_betweenx(grid, f(hi_b), f(np.full_like(grid, xmax)), color=FAIL_COLOR, alpha=0.12,
                     lw=0)
    ax.plot(f(lo_b), grid, color=FAIL_COLOR, lw=1.2)
    ax.plot(f(hi_b), grid, color=FAIL_COLOR, lw=1.2)
    ax.plot(f(-z * grid), grid, color=MUTED_COLOR, ls="--", lw=1,
            label=f"uncalibrated p = {alpha:g}")
    ax.plot(f(z * grid), grid, color=MUTED_COLOR, ls="--", lw=1)
    p = calibrate_p(y, se, null) if y.size else np.array([])
    out = p < alpha
    ax.scatter(f(y[~out]), se[~out], s=18, color=PASS_COLOR, alpha=0.8, zorder=3,
               label="negative controls")
    ax.scatter(f(y[out]), se[out], s=18, color=FAIL_COLOR, alpha=0.9, zorder=3)
    if ey is not None:
        ax.scatter(f(ey), ese, marker="D", s=36, color="black", zorder=4, label="estimate")
    ax.axvline(f(0.0), color="black", lw=0.6)
    ax.set_ylim(0, se_max)
    if exponentiate:
        ax.set_xscale("log")
        ax.set_xlabel("effect estimate (ratio, log axis)")
        ax.set_ylabel("standard error of the log ratio")
    else:
        ax.set_xlabel("effect estimate")
        ax.set_ylabel("standard error")
    ax.set_xlim(f(xmin), f(xmax))
    ratio_axis(ax, "x")                     # readable ticks on the log axis (0.8, 1, 1.25)
    n_out = int(out.sum())
    n_trad = int(np.sum(np.abs(y) > z * se))
    ax.set_title(f"{len(y)} negative controls: {n_trad} with p < {alpha:g}, {n_out} after "
                 "calibration", fontsize=10)
    ax.legend(frameon=False, fontsize=8, loc="upper left")
    ax.spines[["top", "right"]].set_visible(False)
    return ax
