"""Running an estimator on every negative-control outcome and collecting its log
estimates and standard errors."""
from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from evalkit.errors import ConvergenceError, DataValidationError, ParamsError, StatisticalWarning

from .checks import _check_alpha

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
