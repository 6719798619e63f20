"""Checks of calibration inputs: vectors of estimates and standard errors, enough
negative controls, a null or a systematic error model."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from evalkit.errors import DataDroppedWarning, DataValidationError, ParamsError, StatisticalWarning
from evalkit.models.effects import check_alpha

from .values import Null, SystematicErrorModel

MIN_CONTROLS = 3
FEW_CONTROLS = 5


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
