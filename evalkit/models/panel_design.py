"""What difference-in-differences and interrupted time series share: the checks of a
panel's or series' columns (names, 0/1 columns, outcome, covariates), the model families,
and the Wald quantile of their intervals (exposure is checked by
:func:`evalkit.models.effects.drop_bad_exposure`, shared with the count models)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from evalkit.errors import DataValidationError, ParamsError

__all__ = ["FAMILIES", "binary_column", "check_family", "check_name", "covariate_rhs",
           "numeric_outcome", "wald_quantile"]

FAMILIES = ("gaussian", "poisson")


def check_family(family, fn: str) -> None:
    """Raise a ParamsError unless ``family`` is one of :data:`FAMILIES`."""
    if family not in FAMILIES:
        raise ParamsError(f"{fn}: family must be one of {list(FAMILIES)}, got {family!r}.")


def wald_quantile(alpha: float, tdf: float | None) -> float:
    """``1 - alpha/2`` quantile of the normal (``tdf`` None) or of ``t(tdf)``."""
    return (stats.norm if tdf is None else stats.t(tdf)).ppf(1 - alpha / 2)


def check_name(value, arg: str, what: str, optional: bool = False):
    """``value`` if it is a column name (a string, or None when ``optional``), else a ParamsError."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ParamsError(f"{what}: {arg} must be a column name (a string), got {value!r}.")
    return value


def binary_column(col: pd.Series, name: str, what: str) -> np.ndarray:
    """A 0/1 or True/False column as an int array (anything else is an error)."""
    if pd.api.types.is_bool_dtype(col):
        return col.to_numpy(dtype=int)
    if pd.api.types.is_numeric_dtype(col):
        v = col.to_numpy(dtype=float)
        if np.all((v == 0) | (v == 1)):
            return v.astype(int)
    examples = [x for x in pd.unique(col) if x not in (0, 1, True, False)][:5]
    raise DataValidationError(
        f"{what}: column {name!r} must be coded 0/1 or True/False; found values such as "
        f"{examples}. Recode it (1 = yes) and call again.",
        failures=[{"table": "data", "column": name, "reason": "not_binary",
                   "count": 0, "examples": examples}],
    )


def numeric_outcome(frame: pd.DataFrame, outcome: str, what: str) -> np.ndarray:
    """The outcome column as finite floats (a DataValidationError otherwise)."""
    col = frame[outcome]
    if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        raise DataValidationError(f"{what}: outcome {outcome!r} must be numeric (got {col.dtype}).")
    y = col.to_numpy(dtype=float)
    if not np.all(np.isfinite(y)):
        raise DataValidationError(f"{what}: outcome {outcome!r} has infinite values.")
    return y


def covariate_rhs(covariates, what: str) -> str | None:
    """Covariates (a list of columns or a right-hand side) as ``"~ a + b"``, or None."""
    if covariates is None:
        return None
    if isinstance(covariates, str):
        rhs = covariates.split("~", 1)[-1].strip()
    elif isinstance(covariates, (list, tuple)) and all(isinstance(c, str) for c in covariates):
        if not covariates:
            return None
        rhs = " + ".join(covariates)
    else:
        raise ParamsError(f"{what}: covariates must be a list of column names or a formula "
                          f"right-hand side such as 'age + comorbidity', got {covariates!r}.")
    return "~ " + rhs if rhs else None

