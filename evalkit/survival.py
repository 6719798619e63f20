"""Time-to-event analysis: Kaplan-Meier curves, the log-rank test and Cox regression.

Everything here is checked against R's ``survival`` package (``survfit``, ``survdiff``,
``coxph``, ``concordance``); see ``tests/test_survival.py``,
``tests/reference/r/cox_rossi.R`` and ``tests/reference/r/cox_cluster_strata.R``.

What comes from a library and what is written here
---------------------------------------------------
* Kaplan-Meier estimates and Greenwood standard errors: ``statsmodels.duration.SurvfuncRight``.
  The confidence intervals of R's ``conf.type`` "log", "log-log" and "plain", the look-up
  at arbitrary times (R's ``summary(fit, times = ...)``) and the median are added here,
  because statsmodels offers neither R's pointwise intervals nor that look-up.
* Cox partial likelihood (Efron and Breslow ties, optionally summed over strata),
  coefficients and model-based standard errors:
  ``statsmodels.duration.hazard_regression.PHReg`` with ``strata=`` (agrees with
  ``coxph`` to ~1e-13).
* Robust (sandwich) standard errors, per subject or clustered: written here (the sum
  over clusters is :func:`evalkit.models.effects.sandwich`). ``PHReg``'s robust covariance
  (``fit(groups=...)``) uses Breslow-type score residuals even for Efron ties, so it
  differs from ``coxph(robust = TRUE)`` or ``+ cluster(inst)`` by ~0.5% (0.46% on the
  lung data); lifelines' ``CoxPHFitter(cluster_col=...)`` differs by ~0.3% (lifelines
  0.30.3, lung data) and is not a dependency. The score residuals below follow the
  Efron approximation exactly as ``coxph`` does, and agree with it to ~1e-13.
* Harrell's concordance and its standard error: written here (no Python library in the
  environment computes ``survival::concordance``'s infinitesimal-jackknife SE, nor its
  stratified and clustered forms).
* Log-rank test: written here. ``statsmodels.duration.survfunc.survdiff`` returns only
  the statistic and p-value; the observed and expected counts R reports need the same
  sums, so the whole test is computed in one place (it is cross-checked against
  ``survdiff`` in the tests).
* Restricted mean survival time with its Greenwood-type variance (:func:`restricted_mean`):
  written here; neither scipy nor statsmodels computes it (checked against a hand-worked
  example and, without censoring, against the sample mean).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import patsy
from scipy import stats
from statsmodels.duration.hazard_regression import PHReg
from statsmodels.duration.survfunc import SurvfuncRight
from statsmodels.tools.sm_exceptions import ConvergenceWarning

from evalkit.errors import (
    ConvergenceError,
    DataDroppedWarning,
    DataValidationError,
    ParamsError,
    StatisticalWarning,
)
from evalkit.models.base import EffectResult, ModelResult, TermTable, effect_table, wald_table
from evalkit.models.effects import check_alpha, sandwich
from evalkit.terms import r_term_name

__all__ = [
    "KaplanMeierResult",
    "LogRankResult",
    "CoxResult",
    "kaplan_meier",
    "logrank",
    "cox",
    "concordance_index",
    "RestrictedMeanResult",
    "restricted_mean",
]

_KM_COLUMNS = ["group", "time", "n_risk", "n_event", "survival", "std_error", "ci_low", "ci_high"]


# --------------------------------------------------------------------------------------
# input checks shared by the three entry points
# --------------------------------------------------------------------------------------
_check_alpha = check_alpha   # the one alpha check (evalkit.models.effects)


def _require_columns(data: pd.DataFrame, columns: list[str], where: str) -> None:
    if not isinstance(data, pd.DataFrame):
        raise DataValidationError(f"{where}: data must be a pandas DataFrame, got {type(data).__name__}.")
    missing = [c for c in columns if c not in data.columns]
    if missing:
        failures = [{"table": "data", "column": c, "reason": "missing column", "count": 1,
                     "examples": []} for c in missing]
        raise DataValidationError(
            f"{where}: column(s) {missing} not found in data; available columns: "
            f"{list(data.columns)}.", failures)


def _survival_frame(data: pd.DataFrame, duration: str, event: str, extra: list[str],
                    where: str) -> tuple[pd.DataFrame, dict]:
    """Copy of the used columns with missing rows removed (warned about) and types checked."""
    cols = [duration, event] + [c for c in extra if c not in (duration, event)]
    _require_columns(data, cols, where)
    frame = data.loc[:, cols].copy()
    missing = frame.isna().any(axis=1).to_numpy()
    dropped: dict = {}
    if missing.any():
        count = int(missing.sum())
        dropped["missing_values"] = count
        warnings.warn(f"{where}: {count} of {len(frame)} rows have a missing value in "
                      f"{cols} and were left out.", DataDroppedWarning, stacklevel=3)
        frame = frame.loc[~missing]
    if len(frame) == 0:
        raise DataValidationError(f"{where}: no rows left after removing missing values.")
    try:
        time = frame[duration].to_numpy(dtype=float)
    except (TypeError, ValueError) as exc:
        raise DataValidationError(f"{where}: duration column {duration!r} must be numeric.") from exc
    if not np.all(np.isfinite(time)) or (time < 0).any():
        bad = int((~np.isfinite(time) | (time < 0)).sum())
        raise DataValidationError(
            f"{where}: duration column {duration!r} has {bad} negative or infinite value(s); "
            "follow-up times must be finite and >= 0.",
            [{"table": "data", "column": duration, "reason": "negative or infinite", "count": bad,
              "examples": []}])
    raw = frame[event]
    try:
        status = raw.to_numpy(dtype=float)
    except (TypeError, ValueError) as exc:
        raise DataValidationError(f"{where}: event column {event!r} must be 0/1 or boolean.") from exc
    bad = ~np.isin(status, (0.0, 1.0))
    if bad.any():
        raise DataValidationError(
            f"{where}: event column {event!r} must be coded 0 (censored) / 1 (event); found "
            f"{sorted(set(status[bad].tolist()))[:5]}.",
            [{"table": "data", "column": event, "reason": "not 0/1", "count": int(bad.sum()),
              "examples": sorted(set(status[bad].tolist()))[:5]}])
    frame[duration] = time
    frame[event] = status
    return frame, dropped


def _column_list(value, what: str, where: str) -> list[str]:
    """``None``, a column name or a list of names -> list of names."""
    if value is None:
        return []
    names = [value] if isinstance(value, str) else value
    if (not isinstance(names, (list, tuple)) or not names
            or not all(isinstance(c, str) and c for c in names)):
        raise ParamsError(f"{where}: {what} must be a column name or a list of column names "
                          f"(got {value!r}).")
    return list(names)


def _check_complete(data: pd.DataFrame, columns: list[str], what: str, unit: str,
                    where: str) -> None:
    """Every row must have a value in the columns that define strata or clusters.

    A row without one cannot be placed in its risk set or its cluster, and dropping it
    would change the analysis population silently, so this is an error, not a warning.
    """
    for col in columns:
        missing = data[col].isna().to_numpy()
        if missing.any():
            count = int(missing.sum())
            raise DataValidationError(
                f"{where}: {what} column {col!r} has {count} missing value(s) in {len(data)} "
                f"rows; every row must belong to a {unit}. Give those rows a value "
                "or remove them before the analysis.",
                [{"table": "data", "column": col, "reason": f"missing {what} value",
                  "count": count, "examples": []}])


def _stratum_codes(frame: pd.DataFrame, columns: list[str], where: str = "") -> np.ndarray:
    """Integer code per row of the observed combination of ``columns`` (all 0 without any).

    With ``where`` given, a single combination is an error: stratifying by it changes
    nothing, which usually means the wrong column was named.
    """
    if not columns:
        return np.zeros(len(frame), dtype=np.int64)
    codes = frame.groupby(columns, sort=True).ngroup().to_numpy(np.int64)
    if where and codes.max() == 0:
        values = frame[columns].iloc[0].tolist()
        raise DataValidationError(
            f"{where}: strata {columns} take a single value ({values}) in the {len(frame)} rows "
            "used, so stratifying changes nothing; remove strata= or name the column that "
            "defines the strata.",
            [{"table": "data", "column": c, "reason": "single stratum", "count": len(frame),
              "examples": [v]} for c, v in zip(columns, values)])
    return codes


def _stratum_rows(codes: np.ndarray) -> list[np.ndarray]:
    """Row positions of each stratum, in code order."""
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    return np.split(order, bounds)


def _z(alpha: float) -> float:
    return float(stats.norm.ppf(1 - alpha / 2))


# --------------------------------------------------------------------------------------
# Kaplan-Meier
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Curve:
    """One group's Kaplan-Meier curve at its event times plus the raw data for look-ups."""

    times: np.ndarray          # distinct event times
    surv: np.ndarray           # S(t) just after each event time
    se_log: np.ndarray         # sqrt(Greenwood sum) = SE of log S (= SE of the cumulative hazard)
    obs_time: np.ndarray       # every subject's follow-up time (sorted)
    obs_status: np.ndarray     # matching event indicators


@dataclass(frozen=True)
class KaplanMeierResult:
    """Kaplan-Meier survival curves, one per group, as a value.

    A curve is not a term-keyed estimate: it has a value at every time, so this result
    has no ``.at(term)`` and no ``effect()``. Read it at chosen times with
    :meth:`survival_at` (one row per group and time); compare the curves with
    :func:`logrank` (whose ``.table`` is keyed by ``term``) or :func:`restricted_mean`.

    Attributes
    ----------
    table : DataFrame
        ``group, time, n_risk, n_event, survival, std_error, ci_low, ci_high`` at the
        requested times (or at every event time when none were requested), laid out as
        R's ``summary(survfit(...), times = ...)``: ``n_risk`` is the number still under
        observation at ``time``; ``n_event`` counts events since the previous listed time;
        ``std_error`` is the Greenwood standard error of S(t).
    median : DataFrame
        ``group, n, events, median, ci_low, ci_high``: median survival time per group and
        its confidence interval (NaN when the curve, or the confidence band, never
        reaches 0.5), as R's ``print(survfit(...))``.
    alpha : float
    conf_type : {"log", "log-log", "plain"}
        How the pointwise intervals were formed (R's ``survfit(conf.type = ...)``); see
        :func:`kaplan_meier`.
    group : str or None
        Name of the grouping column.
    """

    table: pd.DataFrame
    median: pd.DataFrame
    alpha: float = 0.05
    conf_type: str = "log"
    group: str | None = None
    curves: dict = field(default_factory=dict, repr=False, compare=False)

    def survival_at(self, times) -> pd.DataFrame:
        """Survival, its SE and CI at the given times for every group (same columns as ``table``)."""
        times = _as_times(times)
        frames = [_curve_at(label, curve, times, self.alpha, self.conf_type)
                  for label, curve in self.curves.items()]
        return pd.concat(frames, ignore_index=True)

    def plot(self, ax=None, ci: bool = True, **step_kwargs):
        """Step curves with shaded confidence bands; returns the matplotlib Axes.

        Censoring times are marked with ``+`` (as R's ``plot.survfit(mark.time = TRUE)``).
        """

        if ax is None:
            _, ax = plt.subplots()
        z = _z(self.alpha)
        for label, curve in self.curves.items():
            t = np.concatenate([[0.0], curve.times])
            s = np.concatenate([[1.0], curve.surv])
            se = np.concatenate([[0.0], curve.se_log])
            if curve.obs_time[-1] > t[-1]:          # carry the curve to the last follow-up
                t, s, se = np.append(t, curve.obs_time[-1]), np.append(s, s[-1]), np.append(se, se[-1])
            name = "all" if self.group is None else f"{self.group}={label}"
            line, = ax.step(t, s, where="post", label=name, **step_kwargs)
            if ci:
                low, high = _conf_band(s, se, z, self.conf_type)
                ax.fill_between(t, low, high, step="post", alpha=0.2, color=line.get_color(),
                                linewidth=0)
            cens = curve.obs_time[curve.obs_status == 0]
            if cens.size:
                idx = np.searchsorted(t, cens, side="right") - 1
                y = s[np.maximum(idx, 0)]
                ax.plot(cens, y, "+", color=line.get_color(), markersize=5)
        ax.set_xlabel("time")
        ax.set_ylabel("survival probability")
        ax.set_ylim(0, 1.02)
        if len(self.curves) > 1:
            ax.legend()
        return ax


def _as_times(times) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(times, dtype=float))
    if arr.ndim != 1 or not np.all(np.isfinite(arr)) or (arr < 0).any():
        raise ParamsError(f"times must be finite non-negative numbers (got {times!r}).")
    return np.sort(arr)


CONF_TYPES = ("log", "log-log", "plain")


def _check_conf_type(conf_type) -> str:
    if conf_type not in CONF_TYPES:
        raise ParamsError(f"conf_type must be one of {list(CONF_TYPES)} (R's survfit conf.type), "
                          f"got {conf_type!r}.")
    return conf_type


def _conf_band(surv, se_log, z, conf_type):
    """Pointwise interval for S(t) from ``se_log``, the Greenwood SE of log S (= of the
    cumulative hazard), exactly as ``survival:::survfit_confint``:

    * ``log``: ``S exp(-/+ z se)``, upper end capped at 1;
    * ``log-log``: ``exp(-exp(log(-log S) -/+ z se / log S))``;
    * ``plain``: ``S -/+ z se S`` clipped to [0, 1].

    Where S = 1 (before the first event) the interval is [1, 1], as ``summary.survfit``
    reports it; where S = 0 (or the SE is infinite) it is undefined (NaN), as in R.
    """
    surv = np.asarray(surv, float)
    se_log = np.asarray(se_log, float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if conf_type == "log":
            low = surv * np.exp(-z * se_log)
            high = np.minimum(surv * np.exp(z * se_log), 1.0)
        elif conf_type == "log-log":
            log_s = np.log(surv)
            centre = np.log(-log_s)
            shift = z * se_log / log_s          # negative: log S < 0
            low = np.exp(-np.exp(centre - shift))
            high = np.exp(-np.exp(centre + shift))
        else:
            half = z * se_log * surv
            low = np.maximum(surv - half, 0.0)
            high = np.minimum(surv + half, 1.0)
    start = surv == 1.0
    bad = ~(surv > 0) | ~np.isfinite(se_log)
    low = np.where(bad, np.nan, np.where(start, 1.0, low))
    high = np.where(bad, np.nan, np.where(start, 1.0, high))
    return low, high


def _curve_at(label, curve: _Curve, times: np.ndarray, alpha: float,
              conf_type: str) -> pd.DataFrame:
    """R's summary.survfit(times=) for one curve: step look-up and counts between times."""
    # prepend time 0 (S = 1, SE 0) so that times before the first event, and groups
    # without events, need no special case
    grid = np.concatenate([[-np.inf], curve.times])
    idx = np.searchsorted(grid, times, side="right") - 1
    surv = np.concatenate([[1.0], curve.surv])[idx]
    se_log = np.concatenate([[0.0], curve.se_log])[idx]
    # beyond the last follow-up time nothing is observed: R drops such rows; keep them as NaN
    after = times > curve.obs_time[-1]
    surv = np.where(after, np.nan, surv)
    se_log = np.where(after, np.nan, se_log)
    n_risk = len(curve.obs_time) - np.searchsorted(curve.obs_time, times, side="left")
    event_times = curve.obs_time[curve.obs_status == 1]
    cum_events = np.searchsorted(event_times, times, side="right")
    n_event = np.diff(np.concatenate([[0], cum_events]))
    low, high = _conf_band(surv, se_log, _z(alpha), conf_type)
    with np.errstate(invalid="ignore"):
        std_error = surv * se_log
    return pd.DataFrame({
        "group": [label] * len(times), "time": times, "n_risk": n_risk.astype(int),
        "n_event": n_event.astype(int), "survival": surv, "std_error": std_error,
        "ci_low": low, "ci_high": high,
    }, columns=_KM_COLUMNS)


def _first_below_half(times: np.ndarray, values: np.ndarray) -> float:
    """Smallest time at which a step curve is <= 0.5 (midpoint rule when it sits at 0.5)."""
    tol = np.sqrt(np.finfo(float).eps)
    hit = np.flatnonzero(values <= 0.5 + tol)
    if hit.size == 0:
        return float("nan")
    i = hit[0]
    if abs(values[i] - 0.5) < tol:
        later = np.flatnonzero(values[i + 1:] < 0.5 - tol)
        if later.size:
            return float((times[i] + times[i + 1 + later[0]]) / 2)
    return float(times[i])


def kaplan_meier(data: pd.DataFrame, duration: str, event: str, group: str | None = None,
                 times=None, alpha: float = 0.05, conf_type: str = "log") -> KaplanMeierResult:
    """Kaplan-Meier estimate of the survival function, overall or per group.

    Estimates S(t) = P(T > t) from right-censored follow-up. At each distinct event time
    t_j with n_j subjects at risk and d_j events, ``S(t) = prod_{t_j <= t} (1 - d_j / n_j)``.
    The variance is Greenwood's, ``Var[log S(t)] = sum_{t_j <= t} d_j / (n_j (n_j - d_j))``;
    with ``se = sqrt(Var[log S(t)])`` and ``z = z_{1-alpha/2}`` the pointwise interval is

    * ``"log"`` (R's default): ``S(t) * exp(+/- z se)``, upper end capped at 1;
    * ``"log-log"``: ``exp(-exp(log(-log S(t)) +/- z se / log S(t)))``, which stays inside
      (0, 1) and behaves better than "log" in the tails (Kalbfleisch and Prentice);
    * ``"plain"``: ``S(t) +/- z se S(t)`` clipped to [0, 1] (Greenwood's linear interval).

    This is ``survival::survfit(Surv(duration, event) ~ group, conf.type = conf_type)`` and,
    for the table, ``summary(fit, times = times)``.

    Parameters
    ----------
    data : DataFrame
        One row per subject. Not modified.
    duration : str
        Follow-up time column (>= 0).
    event : str
        1 = event observed, 0 = censored (booleans accepted).
    group : str, optional
        Column defining the curves; one curve per distinct value (sorted).
    times : array_like, optional
        Times at which to report the curve. Default: every event time of each group.
    alpha : float
        1 - confidence level.
    conf_type : {"log", "log-log", "plain"}
        Scale of the pointwise interval (R's ``conf.type``); the median's interval is read
        off the same bands.

    Returns
    -------
    KaplanMeierResult
        ``.table`` at ``times``; ``.survival_at(times)`` for other times; ``.median`` per group;
        ``.plot(ax)`` draws the curves.

    Notes
    -----
    Rows with a missing value in the used columns are dropped with a
    ``DataDroppedWarning``. A time beyond a group's last follow-up gives NaN survival
    (R omits such rows). Before the first event the interval is [1, 1]; when S(t)
    reaches 0 every interval is undefined (NaN), as in R.

    Examples
    --------
    >>> km = kaplan_meier(rossi, "week", "arrest", group="fin", times=[10, 20, 52])
    >>> km.table[["group", "time", "survival", "ci_low", "ci_high"]]   # doctest: +SKIP
    >>> km.plot()                                                       # doctest: +SKIP

    References
    ----------
    Kaplan EL, Meier P (1958). Nonparametric estimation from incomplete observations.
    JASA 53:457-481. Greenwood M (1926). The natural duration of cancer. Therneau TM,
    Grambsch PM (2000). Modeling Survival Data, ch. 2. Kalbfleisch JD, Prentice RL (2002).
    The Statistical Analysis of Failure Time Data, 2nd ed. (log-log interval).
    """
    alpha = _check_alpha(alpha)
    conf_type = _check_conf_type(conf_type)
    frame, _ = _survival_frame(data, duration, event, [] if group is None else [group],
                               "kaplan_meier")
    labels = ["all"] if group is None else sorted(frame[group].unique().tolist())
    curves: dict[Any, _Curve] = {}
    z = _z(alpha)
    medians = []
    for label in labels:
        sub = frame if group is None else frame.loc[frame[group] == label]
        t = sub[duration].to_numpy(float)
        s = sub[event].to_numpy(float)
        order = np.argsort(t, kind="stable")
        t, s = t[order], s[order]
        if s.sum() > 0:
            sf = SurvfuncRight(t, s)
            with np.errstate(divide="ignore", invalid="ignore"):
                se_log = sf.surv_prob_se / sf.surv_prob
            # at S = 0 Greenwood's sum is infinite (n_j = d_j); keep it infinite
            se_log = np.where(sf.surv_prob > 0, se_log, np.inf)
            curve = _Curve(np.asarray(sf.surv_times, float), np.asarray(sf.surv_prob, float),
                           se_log, t, s)
        else:
            curve = _Curve(np.array([]), np.array([]), np.array([]), t, s)
        curves[label] = curve
        low, high = _conf_band(curve.surv, curve.se_log, z, conf_type)
        medians.append({
            "group": label, "n": len(t), "events": int(s.sum()),
            "median": _first_below_half(curve.times, curve.surv),
            # the lower band reaches 0.5 first (lower limit), the upper band last; an
            # undefined band (S = 0) does not count as reaching it, so the limit is NaN
            "ci_low": _first_below_half(curve.times, low),
            "ci_high": _first_below_half(curve.times, high),
        })
    if times is None:
        table = pd.concat([_curve_at(label, c, c.times, alpha, conf_type)
                           for label, c in curves.items()], ignore_index=True)
    else:
        grid = _as_times(times)
        table = pd.concat([_curve_at(label, c, grid, alpha, conf_type)
                           for label, c in curves.items()], ignore_index=True)
    return KaplanMeierResult(table=table, median=pd.DataFrame(medians), alpha=alpha,
                             conf_type=conf_type, group=group, curves=curves)


# --------------------------------------------------------------------------------------
# log-rank test
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LogRankResult(TermTable):
    """Log-rank (Mantel-Haenszel) test of equal survival curves, as R's ``survdiff``.

    Attributes
    ----------
    chisq, df, p_value : float, int, float
    groups : DataFrame
        ``group, n, observed, expected, o_minus_e, oe2_over_e, oe2_over_v`` per group
        (the last two are R's ``(O-E)^2/E`` and ``(O-E)^2/V`` columns).
    variance : ndarray
        The hypergeometric variance-covariance matrix of O - E.
    table : DataFrame
        The test as the one result contract: one row, term ``chisq``, whose
        ``estimate`` is the chi-square statistic and ``p_value`` its p-value, with its
        degrees of freedom in ``df`` (``std_error`` and the interval are NaN: a test
        statistic has none). ``lr.at("chisq", "p_value")`` reads the p-value.
    """

    chisq: float
    df: int
    p_value: float
    groups: pd.DataFrame
    variance: np.ndarray = field(repr=False, compare=False)
    group: str = ""
    strata: list[str] | None = None

    @property
    def table(self) -> pd.DataFrame:
        """The test keyed by ``term`` (``chisq``), with ``df``."""
        return effect_table([("chisq", self.chisq, np.nan, np.nan, np.nan, self.p_value,
                              self.df)], extra_columns=("df",))


def _logrank_sums(t: np.ndarray, s: np.ndarray, g: np.ndarray, k: int):
    """Observed and expected events per group and the variance of O - E (one stratum)."""
    utime = np.unique(t[s == 1])
    # at risk (time >= t_j) and events (time == t_j) per group and event time
    n_at = np.empty((utime.size, k))
    d_at = np.empty((utime.size, k))
    for gi in range(k):
        tg = np.sort(t[g == gi])
        n_at[:, gi] = tg.size - np.searchsorted(tg, utime, side="left")
        te = np.sort(t[(g == gi) & (s == 1)])
        d_at[:, gi] = (np.searchsorted(te, utime, side="right")
                       - np.searchsorted(te, utime, side="left"))
    n_tot = n_at.sum(1)
    d_tot = d_at.sum(1)
    share = n_at / n_tot[:, None]
    observed = d_at.sum(0)
    expected = (d_tot[:, None] * share).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(n_tot > 1, d_tot * (n_tot - d_tot) / (n_tot - 1), 0.0)
    variance = np.diag((factor[:, None] * share).sum(0)) - (factor[:, None, None] * share[:, :, None]
                                                           * share[:, None, :]).sum(0)
    return observed, expected, variance


def logrank(data: pd.DataFrame, duration: str, event: str, group: str,
            strata: str | list[str] | None = None) -> LogRankResult:
    """Log-rank test that the survival curves of all groups are the same.

    At each distinct event time t_j the expected number of events in group g under the
    null is ``d_j * n_gj / n_j``; summing gives E_g. The test statistic is
    ``(O - E)' V^- (O - E)`` with the hypergeometric variance
    ``V_gh = sum_j d_j (n_j - d_j)/(n_j - 1) * n_gj/n_j * (delta_gh - n_hj/n_j)``,
    using all groups but one, referred to chi-square with (groups - 1) df. This is
    ``survival::survdiff(Surv(duration, event) ~ group)`` (rho = 0).

    With ``strata`` the risk sets are formed within each stratum, and O, E and V are
    summed over strata before the statistic is formed: the groups are compared within
    strata (``survdiff(Surv(duration, event) ~ group + strata(s))``).

    Parameters
    ----------
    data : DataFrame
    duration, event, group : str
        Column names; ``event`` is 1 = event, 0 = censored.
    strata : str or list of str, optional
        Column(s) whose observed combinations define the strata. A missing value there is
        an error (a row cannot be placed in a stratum).

    Returns
    -------
    LogRankResult

    Notes
    -----
    A group without events still enters the test (its O = 0) but a
    ``StatisticalWarning`` is raised: the test then has little to compare, and a Cox
    model with that group as a covariate would not converge.

    Examples
    --------
    >>> lr = logrank(rossi, "week", "arrest", "fin")
    >>> round(lr.chisq, 2), round(lr.p_value, 3)                 # doctest: +SKIP
    (3.84, 0.05)

    References
    ----------
    Mantel N (1966). Cancer Chemotherapy Reports 50:163-170. Peto R, Peto J (1972).
    JRSS A 135:185-207.
    """
    strata_cols = _column_list(strata, "strata", "logrank")
    _require_columns(data, strata_cols, "logrank")
    _check_complete(data, strata_cols, "strata", "stratum", "logrank")
    frame, _ = _survival_frame(data, duration, event, [group, *strata_cols], "logrank")
    labels = sorted(frame[group].unique().tolist())
    if len(labels) < 2:
        raise DataValidationError(f"logrank: column {group!r} has a single value ({labels}); "
                                  "need at least two groups to compare.")
    t = frame[duration].to_numpy(float)
    s = frame[event].to_numpy(float)
    g = pd.Categorical(frame[group], categories=labels).codes
    k = len(labels)
    if not (s == 1).any():
        raise DataValidationError("logrank: no events in the data; nothing to test.")
    codes = _stratum_codes(frame, strata_cols, "logrank")
    observed, expected, variance = np.zeros(k), np.zeros(k), np.zeros((k, k))
    for rows in _stratum_rows(codes):
        o, e, v = _logrank_sums(t[rows], s[rows], g[rows], k)
        observed, expected, variance = observed + o, expected + e, variance + v
    diff = observed - expected
    keep = np.flatnonzero(expected > 0)
    use = keep[1:] if keep.size else keep
    df = int(keep.size - 1)
    sub = variance[np.ix_(use, use)]
    chisq = float(diff[use] @ np.linalg.pinv(sub) @ diff[use]) if df > 0 else 0.0
    p_value = float(stats.chi2.sf(chisq, df)) if df > 0 else float("nan")
    no_events = [lab for lab, o in zip(labels, observed) if o == 0]
    if no_events:
        warnings.warn(f"logrank: group(s) {no_events} of {group!r} have no events; the test "
                      "only reflects the remaining groups' timing. Report the event counts, "
                      "and do not fit a Cox model with this group as a covariate.",
                      StatisticalWarning, stacklevel=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        groups = pd.DataFrame({
            "group": labels, "n": np.bincount(g, minlength=k).astype(int),
            "observed": observed, "expected": expected, "o_minus_e": diff,
            "oe2_over_e": diff ** 2 / expected, "oe2_over_v": diff ** 2 / np.diag(variance),
        })
    return LogRankResult(chisq=chisq, df=df, p_value=p_value, groups=groups, variance=variance,
                         group=group, strata=strata_cols or None)


# --------------------------------------------------------------------------------------
# concordance
# --------------------------------------------------------------------------------------
def _count_lower_left(pc: np.ndarray, px: np.ndarray, qc: np.ndarray, qx: np.ndarray) -> np.ndarray:
    """For every query q: number of points p with pc < qc and px < qx (integer px, qx >= 0).

    O(n log^2 n) with numpy only: the prefix of points (sorted by pc) below each query is
    split into power-of-two blocks, and within each block the px values are sorted once per
    level and searched.
    """
    out = np.zeros(qc.shape[0], dtype=np.int64)
    n = pc.shape[0]
    if n == 0 or qc.shape[0] == 0:
        return out
    order = np.argsort(pc, kind="stable")
    pcs = pc[order]
    pxs = px[order].astype(np.int64)
    k = np.searchsorted(pcs, qc, side="left")
    width = int(max(pxs.max(), qx.max())) + 2
    pos = np.arange(n, dtype=np.int64)
    level = 0
    while (1 << level) <= n:
        sel = np.flatnonzero((k >> level) & 1)
        if sel.size:
            keys = np.sort((pos >> level) * width + pxs)
            block = (k[sel] >> level) - 1
            lo = np.searchsorted(keys, block * width, side="left")
            hi = np.searchsorted(keys, block * width + qx[sel], side="left")
            out[sel] += hi - lo
        level += 1
    return out


def _pair_counts(time: np.ndarray, status: np.ndarray, risk: np.ndarray) -> dict:
    """Per-subject and total concordant / discordant / tied pair counts (one stratum).

    ``conc``, ``disc``, ``tie`` count, for each subject, the comparable pairs it belongs to
    (as the earlier event or as the later member); the totals count each pair once.
    """
    trank = np.unique(time, return_inverse=True)[1].astype(np.int64)
    key = 2 * trank + (status == 0)            # censored sort after events at the same time
    xr = np.unique(risk, return_inverse=True)[1].astype(np.int64)
    ev = np.flatnonzero(status == 1)
    # i (event) as the earlier member: partners j with key_j > key_i
    lt = _count_lower_left(-key, xr, -key[ev], xr[ev])
    le = _count_lower_left(-key, xr, -key[ev], xr[ev] + 1)
    n_after = key.size - np.searchsorted(np.sort(key), key[ev], side="right")
    conc_e = lt                                  # partner has lower risk: concordant
    tie_e = le - lt
    disc_e = n_after - le
    # j (anyone) as the later member: earlier events i with key_i < key_j
    kev, xev = key[ev], xr[ev]
    lt2 = _count_lower_left(kev, xev, key, xr)
    le2 = _count_lower_left(kev, xev, key, xr + 1)
    n_before = np.searchsorted(np.sort(kev), key, side="left")
    conc = (n_before - le2).astype(float)        # earlier event had the higher risk
    disc = lt2.astype(float)                     # earlier event had the lower risk
    tie = (le2 - lt2).astype(float)
    conc[ev] += conc_e
    disc[ev] += disc_e
    tie[ev] += tie_e
    # tied on y: pairs of events at the same time (split by whether risk ties too)
    ev_pairs = pd.DataFrame({"t": time[ev], "x": xr[ev]})
    same_t = ev_pairs.groupby("t").size()
    same_tx = ev_pairs.groupby(["t", "x"]).size()
    tied_xy = float((same_tx * (same_tx - 1) / 2).sum())
    return {"conc": conc, "disc": disc, "tie": tie, "concordant": float(conc_e.sum()),
            "discordant": float(disc_e.sum()), "tied_x": float(tie_e.sum()),
            "tied_y": float((same_t * (same_t - 1) / 2).sum()) - tied_xy, "tied_xy": tied_xy}


def concordance_index(time, status, risk, strata=None, cluster=None) -> dict:
    """Harrell's C for right-censored data with its standard error, as ``survival::concordance``.

    A pair (i, j) is comparable when the shorter time is an event (a subject censored at
    the same time as an event counts as surviving longer; two events at the same time are
    "tied on y" and left out). It is concordant when the subject that failed first has the
    higher ``risk`` (a Cox linear predictor), discordant when lower, and ties in ``risk``
    count 1/2: ``C = (concordant + tied_x / 2) / (concordant + discordant + tied_x)``.
    The standard error is the infinitesimal-jackknife one of survival >= 3.0 (each
    subject's share of concordant/discordant/tied pairs gives its influence on Somers' d;
    ``var(C) = sum(influence^2) / 4``), with time weights "n" (all pairs weighted 1).

    With ``strata`` only pairs within a stratum are compared (the counts are summed over
    strata), as ``coxph`` reports the concordance of a stratified model. With ``cluster``
    the influences are summed within each cluster before squaring (a grouped jackknife),
    as ``coxph(... + cluster(id))`` does.

    Parameters
    ----------
    time, status, risk : array_like
        Follow-up time, event indicator (1 = event) and predicted risk (higher = earlier
        event expected), one value per subject.
    strata, cluster : array_like, optional
        Stratum and cluster label per subject.

    Returns
    -------
    dict with ``concordance``, ``std_error``, ``concordant``, ``discordant``, ``tied_x``,
    ``tied_y``, ``tied_xy``.
    """
    time = np.asarray(time, float)
    status = np.asarray(status, float)
    risk = np.asarray(risk, float)
    codes = (np.zeros(time.size, dtype=np.int64) if strata is None
             else pd.factorize(pd.Series(np.asarray(strata)))[0])
    counts = ("concordant", "discordant", "tied_x", "tied_y", "tied_xy")
    total = dict.fromkeys(counts, 0.0)
    conc, disc, tie = np.zeros(time.size), np.zeros(time.size), np.zeros(time.size)
    for rows in _stratum_rows(codes):
        part = _pair_counts(time[rows], status[rows], risk[rows])
        conc[rows], disc[rows], tie[rows] = part["conc"], part["disc"], part["tie"]
        for name in counts:
            total[name] += part[name]
    npair = total["concordant"] + total["discordant"] + total["tied_x"]
    if npair == 0:
        return {"concordance": float("nan"), "std_error": float("nan"), **total}
    somers = (total["concordant"] - total["discordant"]) / npair
    influence = (conc - disc) / npair - somers / npair * (conc + disc + tie)
    if cluster is not None:
        groups = pd.factorize(pd.Series(np.asarray(cluster)))[0]
        influence = np.bincount(groups, weights=influence)
    return {"concordance": float((somers + 1) / 2),
            "std_error": float(np.sqrt(np.sum(influence ** 2) / 4)), **total}


# --------------------------------------------------------------------------------------
# Cox regression
# --------------------------------------------------------------------------------------
class CoxResult(ModelResult):
    """A fitted Cox model: ``ModelResult`` plus survival-specific accessors.

    ``table`` holds log-hazard coefficients (``estimate``) with the standard six columns,
    followed by ``hazard_ratio``, ``hr_ci_low`` and ``hr_ci_high``.
    """

    @property
    def concordance(self) -> float:
        """Harrell's C of the linear predictor (``summary(coxph)$concordance["C"]``)."""
        return self.extra["concordance"]

    @property
    def concordance_se(self) -> float:
        return self.extra["concordance_se"]

    def effect(self, treatment: str = "treated") -> EffectResult:
        """The hazard ratio of one term (the 0/1 treatment): one row, term
        ``hazard_ratio``, with the ratio's delta-method ``std_error`` (``HR * se(log HR)``),
        its interval and the Wald p-value of the coefficient."""
        if treatment not in set(self.table["term"]):
            raise ParamsError(f"cox: no term {treatment!r}; terms here: "
                              f"{self.table['term'].tolist()}.")
        r = self.table.loc[self.table["term"] == treatment].iloc[0]
        hr = float(r["hazard_ratio"])
        table = effect_table([("hazard_ratio", hr, hr * float(r["std_error"]),
                               float(r["hr_ci_low"]), float(r["hr_ci_high"]),
                               float(r["p_value"]))])
        return EffectResult(table=table, treatment=treatment, nobs=self.nobs,
                            method=self.method, vcov=str(self.extra.get("vcov", "")),
                            alpha=self.alpha, estimand="conditional hazard ratio")

    @property
    def hazard_ratios(self) -> pd.Series:
        return pd.Series(self.table["hazard_ratio"].to_numpy(), index=self.table["term"],
                         name="hazard_ratio")


def _design(data: pd.DataFrame, rhs: str, where: str) -> pd.DataFrame:
    """Design matrix without intercept, columns in formula order, rows with NA dropped."""
    try:
        desc = patsy.ModelDesc.from_formula(rhs)
        dm = patsy.dmatrix(rhs, data, return_type="dataframe", NA_action="drop")
    except patsy.PatsyError as exc:
        raise DataValidationError(f"{where}: cannot build the design for '{rhs}': {exc}. "
                                  "Check that every variable is a column of data.") from exc
    slices = dm.design_info.term_name_slices
    cols: list[str] = []
    for term in desc.rhs_termlist:
        tname = term.name()
        if tname == "Intercept":
            continue
        cols.extend(dm.columns[slices[tname]])
    out = dm.loc[:, cols]
    out.columns = [r_term_name(c) for c in cols]
    return out


def _score_residuals(time: np.ndarray, status: np.ndarray, X: np.ndarray, beta: np.ndarray,
                     ties: str, strata: np.ndarray | None = None) -> np.ndarray:
    """Per-subject score residuals of the Cox partial likelihood (Efron or Breslow).

    With ``strata`` (an integer code per subject) the risk sets are formed within each
    stratum; the residuals do not depend on how X is centred, so each stratum is handled
    on its own.

    Written here because statsmodels' ``PHReg.score_residuals`` uses the Breslow form for
    every tie method; ``coxph(robust = TRUE)`` uses the Efron form with Efron ties. With d
    tied events at t_j the Efron risk-set sums are S0 - (k/d) E0, k = 0..d-1, where E0
    sums over the tied events; each tied event carries weight (1 - k/d) in sub-step k.
    The residuals add up to the score vector.
    """
    if strata is not None:
        resid = np.zeros(X.shape)
        for rows in _stratum_rows(np.asarray(strata)):
            resid[rows] = _score_residuals(time[rows], status[rows], X[rows], beta, ties)
        return resid
    n, p = X.shape
    Xc = X - X.mean(0)
    eta = Xc @ beta
    r = np.exp(eta - eta.max())
    utime, inv = np.unique(time, return_inverse=True)
    m = utime.size

    def by_time(w):
        return np.bincount(inv, weights=w, minlength=m)

    def rev_cumsum(a):
        return np.cumsum(a[::-1], axis=0)[::-1]

    rx = r[:, None] * Xc
    S0 = rev_cumsum(by_time(r))
    S1 = rev_cumsum(np.column_stack([by_time(rx[:, c]) for c in range(p)]))
    E0 = by_time(r * status)
    E1 = np.column_stack([by_time(rx[:, c] * status) for c in range(p)])
    deaths = by_time(status)
    ev = np.flatnonzero(deaths > 0)
    d = deaths[ev].astype(np.int64)
    j = np.repeat(ev, d)
    step = np.arange(j.size) - np.repeat(np.cumsum(d) - d, d)
    frac = step / np.repeat(d, d) if ties == "efron" else np.zeros(j.size)
    den = S0[j] - frac * E0[j]
    xbar = (S1[j] - frac[:, None] * E1[j]) / den[:, None]

    def per_time(w):
        return np.bincount(j, weights=w, minlength=m)

    A = per_time(1 / den)
    B = np.column_stack([per_time(xbar[:, c] / den) for c in range(p)])
    Ad = per_time((1 - frac) / den)
    Bd = np.column_stack([per_time((1 - frac) * xbar[:, c] / den) for c in range(p)])
    with np.errstate(invalid="ignore", divide="ignore"):
        xbar_mean = np.column_stack([per_time(xbar[:, c]) for c in range(p)]) / deaths[:, None]
    cumA, cumB = np.cumsum(A), np.cumsum(B, axis=0)
    cumA_lt, cumB_lt = cumA - A, cumB - B
    dead = status == 1
    hz_a = np.where(dead, cumA_lt[inv] + Ad[inv], cumA[inv])
    hz_b = np.where(dead[:, None], cumB_lt[inv] + Bd[inv], cumB[inv])
    resid = -r[:, None] * (Xc * hz_a[:, None] - hz_b)
    resid[dead] += Xc[dead] - xbar_mean[inv[dead]]
    return resid


def _wald_statistic(var: np.ndarray, b: np.ndarray,
                    toler: float = np.finfo(float).eps ** 0.75) -> tuple[float, int]:
    """``b' V^- b`` and the rank of V, exactly as ``survival:::coxph.wtest``.

    R's generalized Cholesky (``cholesky2`` / ``chsolve2`` in survival's C code) skips a
    pivot below ``toler * max(diag V)`` (``coxph.control()$toler.chol``), so a singular
    variance (e.g. a cluster-robust one from fewer clusters than coefficients) gives a
    finite statistic instead of an overflow. The loops run over p x p only.
    """
    m = np.array(var, dtype=float)
    n = m.shape[0]
    m = np.triu(m) + np.triu(m, 1).T                     # symmetric from the upper triangle
    top = max(float(np.max(np.diag(m))), 0.0)
    eps = toler if top == 0 else top * toler
    rank = 0
    for i in range(n):
        pivot = m[i, i]
        if not np.isfinite(pivot) or pivot < eps:
            m[i, i] = 0.0
            continue
        rank += 1
        for j in range(i + 1, n):
            temp = m[j, i] / pivot
            m[j, i] = temp
            m[j, j] -= temp * temp * pivot
            m[j + 1:, j] -= temp * m[j + 1:, i]
    y = np.array(b, dtype=float)
    for i in range(n):                                    # L z = b
        y[i] -= y[:i] @ m[i, :i]
    for i in range(n - 1, -1, -1):                        # D L' x = z
        if m[i, i] == 0:
            y[i] = 0.0
        else:
            y[i] = y[i] / m[i, i] - y[i + 1:] @ m[i + 1:, i]
    return float(np.dot(b, y)), rank


def _check_covariates(X: np.ndarray, terms: list[str], stratum: np.ndarray | None,
                      strata_cols: list[str]) -> None:
    """Refuse covariates a Cox model cannot estimate: constant ones and linear dependence.

    Without strata a constant column has nothing to contrast; with strata a column that
    is constant within every stratum is absorbed by the stratum-specific baseline hazards.
    """
    if stratum is None:
        centred = X - X.mean(0)
    else:
        means = np.stack([np.bincount(stratum, weights=X[:, c]) for c in range(X.shape[1])], 1)
        centred = X - (means / np.bincount(stratum)[:, None])[stratum]
    by = pd.DataFrame(X).groupby(np.zeros(len(X)) if stratum is None else stratum)
    spread = (by.max() - by.min()).max(axis=0).to_numpy()   # exact: no rounding of means
    constant = [t for t, sd in zip(terms, spread) if sd == 0]
    if constant:
        where = ("in the rows used; drop them from the formula (a Cox model has no intercept "
                 "to absorb them)." if stratum is None else
                 f"within every stratum of {strata_cols}; the stratum-specific baseline hazards "
                 "absorb them, so drop them from the formula or from strata.")
        raise DataValidationError(
            f"cox: covariate(s) {constant} are constant {where}",
            [{"table": "data", "column": c, "reason": "constant covariate", "count": len(X),
              "examples": []} for c in constant])
    if np.linalg.matrix_rank(centred) < X.shape[1]:
        raise DataValidationError(f"cox: the covariates {terms} are linearly dependent"
                                  f"{'' if stratum is None else ' within strata'}; "
                                  "remove the redundant term(s).")


def _fit_phreg(time: np.ndarray, X: np.ndarray, status: np.ndarray, ties: str,
               stratum: np.ndarray | None, terms: list[str]):
    """Fit the partial likelihood for :func:`cox`: the model, its fit, the coefficients,
    their model-based variance and the terms whose coefficient looks infinite (warned
    about for the caller of :func:`cox`); a fit that did not converge otherwise is an
    error."""
    # statsmodels' PHReg sums the partial likelihood over strata (agrees with coxph to
    # ~1e-13); cox computes the robust variance itself (see _score_residuals)
    model = PHReg(time, X, status=status, ties=ties, strata=stratum)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fitted = model.fit(tol=1e-10, maxiter=100)
        except np.linalg.LinAlgError as exc:
            raise ConvergenceError(
                "cox: Newton-Raphson failed (singular information matrix). A covariate may "
                "separate events from non-events; check event counts per level.") from exc
    not_converged = any(issubclass(w.category, ConvergenceWarning) for w in caught)
    beta = np.asarray(fitted.params, float)
    naive_cov = np.asarray(fitted.cov_params(), float)
    if not np.all(np.isfinite(beta)):
        raise ConvergenceError("cox: the fit produced non-finite coefficients; a covariate "
                               "may separate events from non-events.")
    # R's check for infinite coefficients (coxph.fit): the next Newton step is still large
    # relative to the coefficient.
    score = np.asarray(model.score(beta), float)
    with np.errstate(all="ignore"):
        try:
            next_step = np.abs(np.linalg.solve(-np.asarray(model.hessian(beta)), score))
        except np.linalg.LinAlgError:
            next_step = np.full(beta.shape, np.inf)
    infinite = [t for t, s, b in zip(terms, next_step, beta)
                if s > 1e-9 and s > np.sqrt(1e-9) * abs(b)]
    if infinite:
        warnings.warn(
            f"cox: coefficient(s) for {infinite} appear to be infinite (monotone partial "
            "likelihood: e.g. one level has no events). Their estimates and SEs are not "
            "usable; merge sparse levels, drop the term, or report a log-rank test and "
            "event counts instead.", StatisticalWarning, stacklevel=3)
    elif not_converged:
        raise ConvergenceError("cox: Newton-Raphson did not converge in 100 iterations. "
                               "Rescale covariates (e.g. age in decades) or simplify the model.")
    return model, fitted, beta, naive_cov, infinite


def cox(data: pd.DataFrame, formula: str, duration: str, event: str, ties: str = "efron",
        robust: bool = False, alpha: float = 0.05, cluster: str | None = None,
        strata: str | list[str] | None = None) -> CoxResult:
    """Cox proportional-hazards regression, as R's ``survival::coxph``.

    Models the hazard as ``h(t | x) = h0(t) exp(x' beta)`` with h0 left unspecified, and
    estimates beta by maximising the partial likelihood. Tied event times are handled by
    Efron's approximation (R's default) or Breslow's. Coefficients are log hazard ratios;
    ``exp(beta)`` is the hazard ratio per unit of the covariate.

    With ``strata`` every stratum has its own baseline hazard, ``h(t | x, s) = h0_s(t)
    exp(x' beta)``, and the partial likelihood is the product of the strata's partial
    likelihoods (risk sets never cross strata); beta is shared. This is
    ``coxph(Surv(duration, event) ~ ... + strata(s))``: use it for a factor whose effect
    is not proportional, or that need not be estimated (e.g. site).

    With ``cluster`` the standard errors allow outcomes to be correlated within a cluster
    (e.g. members of one plan site): the per-subject dfbeta residuals ``D_i = U_i I^-1``
    (score residual times the inverse information) are summed within each cluster and
    ``V = sum_g D_g' D_g``, with no small-sample factor, as
    ``coxph(Surv(duration, event) ~ ... + cluster(id))``. Both options can be combined.

    Parameters
    ----------
    data : DataFrame
        One row per subject. Not modified.
    formula : str
        Right-hand side in Wilkinson/patsy notation, e.g. ``"fin + age + C(educ)"``;
        anything left of ``~`` is ignored (so ``"Surv(week, arrest) ~ fin + age"`` works).
        There is no intercept in a Cox model.
    duration, event : str
        Follow-up time column and event indicator (1 = event, 0 = censored).
    ties : {"efron", "breslow"}
    robust : bool
        If True, standard errors (and CIs, p-values, Wald test) use the sandwich estimator
        ``V = I^-1 (sum_i U_i U_i') I^-1`` built from per-subject score residuals U_i, as
        ``coxph(..., robust = TRUE)`` (its "dfbeta" residuals D = U I^-1 give V = D'D). The
        model-based SEs stay in ``extra["naive_std_error"]``.
    alpha : float
        1 - confidence level of the Wald intervals.
    cluster : str, optional
        Column holding the cluster of each row; implies ``robust`` (as in R). Every row
        needs a cluster (a missing value is an error) and there must be at least two.
        With few clusters (say fewer than 30) the robust SEs are themselves imprecise.
    strata : str or list of str, optional
        Column(s) whose observed combinations define the strata (R's ``strata(a, b)``).
        Every row needs a value, and there must be at least two strata. A covariate that
        is constant within every stratum is absorbed by the strata and is an error.

    Returns
    -------
    CoxResult
        ``table``: term, estimate (log HR), std_error, ci_low, ci_high, p_value,
        hazard_ratio, hr_ci_low, hr_ci_high. ``loglik``: partial log-likelihood at the
        estimate. ``concordance`` / ``concordance_se``: Harrell's C (see
        :func:`concordance_index`). ``extra``: ``loglik_null``, ``lr_test``,
        ``wald_test``, ``score_test`` (each ``(statistic, df, p_value)``), ``n_events``,
        ``ties``, ``robust``, ``naive_std_error``, ``vcov`` (the variance matrix behind
        ``std_error``, a DataFrame keyed by term), ``concordance_counts``, ``strata``,
        ``n_strata``, ``cluster``, ``n_clusters`` and, with robust SEs,
        ``robust_score_test`` (R's "Robust" score test: score residuals at beta = 0, summed
        within clusters). With robust SEs the Wald test uses the robust variance, as in R.

    Raises
    ------
    DataValidationError
        Missing columns, no events, a constant or collinear covariate, a missing cluster or
        stratum value, a single stratum or a single cluster.
    ConvergenceError
        Newton-Raphson did not converge.

    Warns
    -----
    DataDroppedWarning
        Rows with missing values were left out (count in ``dropped``).
    StatisticalWarning
        A coefficient appears infinite (monotone likelihood, e.g. a group with no
        events); as in R, the estimate and its SE are then meaningless.

    Examples
    --------
    >>> fit = cox(rossi, "fin + age + race + wexp + mar + paro + prio", "week", "arrest")
    >>> fit.table[["term", "estimate", "std_error", "hazard_ratio"]]      # doctest: +SKIP
    >>> fit.concordance                                                  # doctest: +SKIP
    0.6403...
    >>> by_site = cox(lung, "age + ph_ecog + wt_loss", "time", "dead", strata="sex",
    ...               cluster="inst")                                    # doctest: +SKIP

    References
    ----------
    Cox DR (1972). Regression models and life-tables. JRSS B 34:187-220. Efron B (1977).
    JASA 72:557-565. Lin DY, Wei LJ (1989). The robust inference for the Cox proportional
    hazards model. JASA 84:1074-1078. Lee EW, Wei LJ, Amato DA (1992). Cox-type regression
    analysis for large numbers of small groups of correlated failure time observations. In
    Survival Analysis: State of the Art, 237-247. Therneau TM, Grambsch PM (2000). Modeling
    Survival Data: Extending the Cox Model. Springer (ch. 3.3 strata, ch. 8.2 clusters).
    """
    alpha = _check_alpha(alpha)
    if ties not in ("efron", "breslow"):
        raise ParamsError(f"ties must be 'efron' or 'breslow' (got {ties!r}).")
    if not isinstance(formula, str) or not formula.split("~")[-1].strip():
        raise ParamsError(f"formula must name at least one covariate, e.g. 'x1 + x2' (got {formula!r}).")
    rhs = formula.split("~")[-1].strip()
    strata_cols = _column_list(strata, "strata", "cox")
    cluster_cols = _column_list(cluster, "cluster", "cox")
    if len(cluster_cols) > 1:
        raise ParamsError(f"cox: cluster must name one column (got {cluster!r}).")
    _require_columns(data, [duration, event, *strata_cols, *cluster_cols], "cox")
    _check_complete(data, strata_cols, "strata", "stratum", "cox")
    _check_complete(data, cluster_cols, "cluster", "cluster", "cox")
    frame_all = data.reset_index(drop=True)
    # rows with a missing value in any used column: patsy drops them from the design; the
    # response columns are checked here, and one warning reports the total
    design = _design(frame_all, rhs, "cox")
    keep = design.index[frame_all.loc[design.index, [duration, event]].notna().all(axis=1)]
    n_input = len(frame_all)
    dropped: dict = {}
    if len(keep) < n_input:
        dropped["missing_values"] = n_input - len(keep)
        warnings.warn(f"cox: {n_input - len(keep)} of {n_input} rows have a missing value in "
                      f"{duration!r}, {event!r} or the covariates and were left out.",
                      DataDroppedWarning, stacklevel=2)
    frame, _ = _survival_frame(frame_all.loc[keep], duration, event,
                               [*strata_cols, *cluster_cols], "cox")
    design = design.loc[frame.index]
    X = design.to_numpy(dtype=float)
    terms = list(design.columns)
    time = frame[duration].to_numpy(float)
    status = frame[event].to_numpy(float)
    n_events = int(status.sum())
    if n_events == 0:
        raise DataValidationError("cox: there are no events; a Cox model cannot be fitted. "
                                  "Check the event column coding (1 = event).")
    stratum = _stratum_codes(frame, strata_cols, "cox") if strata_cols else None
    groups = None
    if cluster_cols:
        groups = pd.factorize(frame[cluster_cols[0]])[0]
        if groups.max() < 1:
            raise DataValidationError(
                f"cox: cluster column {cluster_cols[0]!r} has a single value in the "
                f"{len(frame)} rows used; cluster-robust SEs need at least two clusters "
                "(remove cluster= or name the column that identifies the clusters).")
    _check_covariates(X, terms, stratum, strata_cols)

    model, fitted, beta, naive_cov, infinite = _fit_phreg(time, X, status, ties, stratum,
                                                          terms)

    naive_se = np.sqrt(np.diag(naive_cov))
    robust = bool(robust) or groups is not None
    robust_score = None
    if robust:
        # coxph: V = D'D with D the dfbeta residuals U I^-1 summed within clusters (each
        # subject its own cluster without cluster=), no small-sample factor
        kind = "HC0" if groups is None else "cluster"
        U = _score_residuals(time, status, X, beta, ties, stratum)
        cov = sandwich(U, naive_cov, kind, groups, adjust=False)
        # R's robust score test: score residuals at beta = 0, summed within clusters
        U0 = _score_residuals(time, status, X, np.zeros_like(beta), ties, stratum)
        meat0 = sandwich(U0, np.eye(len(beta)), kind, groups, adjust=False)
        u0_sum = U0.sum(0)
        robust_score, _ = _wald_statistic(meat0, u0_sum)
    else:
        cov = naive_cov
    se = np.sqrt(np.diag(cov))
    table = wald_table(terms, beta, se, alpha=alpha)
    with np.errstate(over="ignore"):          # infinite coefficients give inf limits
        table["hazard_ratio"] = np.exp(table["estimate"])
        table["hr_ci_low"] = np.exp(table["ci_low"])
        table["hr_ci_high"] = np.exp(table["ci_high"])

    loglik = float(model.loglike(beta))
    loglik_null = float(model.loglike(np.zeros_like(beta)))
    p = len(beta)
    lr = 2 * (loglik - loglik_null)
    wald, rank = _wald_statistic(cov, beta)
    if robust and rank < len(beta):
        n_groups = len(time) if groups is None else int(groups.max()) + 1
        warnings.warn(
            f"cox: the {'cluster-' if groups is not None else ''}robust variance is singular "
            f"(rank {rank} for {len(beta)} coefficients, {n_groups} "
            f"{'clusters' if groups is not None else 'subjects'}); the robust SEs and the Wald "
            "test are not usable. Use more clusters or fewer covariates.",
            StatisticalWarning, stacklevel=2)
    u0 = np.asarray(model.score(np.zeros_like(beta)), float)
    score_stat = float(u0 @ np.linalg.solve(-np.asarray(model.hessian(np.zeros_like(beta))), u0))
    conc = concordance_index(time, status, X @ beta, strata=stratum, cluster=groups)
    extra = {
        "concordance": conc["concordance"],
        "concordance_se": conc["std_error"],
        "concordance_counts": {k: conc[k] for k in ("concordant", "discordant", "tied_x",
                                                     "tied_y", "tied_xy")},
        "loglik_null": loglik_null,
        "lr_test": (lr, p, float(stats.chi2.sf(lr, p))),
        "wald_test": (wald, p, float(stats.chi2.sf(wald, p))),
        "score_test": (score_stat, p, float(stats.chi2.sf(score_stat, p))),
        "n_events": n_events,
        "ties": ties,
        "robust": robust,
        "naive_std_error": dict(zip(terms, naive_se)),
        "vcov": pd.DataFrame(cov, index=terms, columns=terms),
        "possibly_infinite": infinite,
        "strata": strata_cols or None,
        "n_strata": 1 if stratum is None else int(stratum.max()) + 1,
        "cluster": cluster_cols[0] if cluster_cols else None,
        "n_clusters": None if groups is None else int(groups.max()) + 1,
    }
    if robust:
        extra["robust_score_test"] = (robust_score, p, float(stats.chi2.sf(robust_score, p)))
    specials = "".join([f" + strata({', '.join(strata_cols)})" if strata_cols else "",
                        f" + cluster({cluster_cols[0]})" if cluster_cols else ""])
    options = [f"{ties} ties"]
    if strata_cols:
        options.append(f"stratified by {', '.join(strata_cols)}")
    if robust:
        options.append("robust SE" + (f" clustered by {cluster_cols[0]}" if cluster_cols else ""))
    method = f"Cox proportional hazards ({', '.join(options)})"
    return CoxResult(table=table, method=method,
                     formula=f"Surv({duration}, {event}) ~ {rhs}{specials}",
                     nobs=len(time), dropped=dropped, loglik=loglik, alpha=alpha, extra=extra,
                     model=fitted)


# --------------------------------------------------------------------------------------
# restricted mean survival time
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RestrictedMeanResult(TermTable):
    """Restricted mean survival time (RMST) per group, and between two groups, as a value.

    ``effect()`` gives the difference between two groups.

    Attributes
    ----------
    table : DataFrame
        ``term`` (the group, as text), ``estimate`` (the RMST), ``std_error``,
        ``ci_low``, ``ci_high``, ``p_value`` (NaN: no test per group), ``group``, ``n``,
        ``events``, ``tau`` per group.
    tau : float
        The horizon: RMST is the area under the Kaplan-Meier curve from 0 to ``tau``.
    alpha : float
    """

    table: pd.DataFrame
    tau: float
    alpha: float = 0.05
    _effect: EffectResult | None = field(default=None, repr=False)

    def effect(self) -> EffectResult:
        """With exactly two groups, the second (in sorted order, or as given by ``order``)
        minus the first: one row, term ``difference`` (time units), and its ``contrast``
        (``"b vs a"``)."""
        if self._effect is None:
            raise ParamsError("restricted_mean: the difference needs exactly two groups; "
                              f"there are {len(self.table)}.")
        return self._effect


def _km_steps(t: np.ndarray, s: np.ndarray):
    """Distinct event times, numbers at risk and events there, and S just after each."""
    utime = np.unique(t[s == 1])
    ts = np.sort(t)
    n_risk = ts.size - np.searchsorted(ts, utime, side="left")
    te = np.sort(t[s == 1])
    d = np.searchsorted(te, utime, side="right") - np.searchsorted(te, utime, side="left")
    surv = np.cumprod(1 - d / n_risk)
    return utime, n_risk.astype(float), d.astype(float), surv


def restricted_mean(data: pd.DataFrame, duration: str, event: str, group: str | None = None,
                    tau: float | None = None, alpha: float = 0.05,
                    order: list | None = None) -> RestrictedMeanResult:
    """Restricted mean survival time: the area under the Kaplan-Meier curve up to ``tau``.

    ``RMST(tau) = int_0^tau S(t) dt`` is the expected event-free time within the first
    ``tau`` units of follow-up. Unlike the mean, it is identified from censored data (the
    mean needs the whole curve, which censoring hides); unlike the median, it uses the
    whole curve up to ``tau``. With the KM step function, the integral is a sum of
    rectangles. Its variance is the Greenwood-type estimate

    .. math::

        \\widehat{Var} = \\sum_{t_j \\le \\tau} A_j^2 \\frac{d_j}{n_j (n_j - d_j)}, \\qquad
        A_j = \\int_{t_j}^{\\tau} \\hat S(u) \\, du,

    over the distinct event times ``t_j`` (``n_j`` at risk, ``d_j`` events; a term with
    ``n_j = d_j`` has ``A_j = 0`` and adds nothing). The interval is ``RMST +/- z se``,
    and two groups are compared by their difference with ``se = sqrt(se_1^2 + se_2^2)``
    (the groups are independent). This is the estimator of R's ``survRM2::rmst2`` and of
    ``print(survfit(...), rmean = tau)``. Without censoring and with ``tau`` at the
    largest time it is the sample mean, and the variance is ``sum (x - mean)^2 / n^2``.

    Written here because neither scipy nor statsmodels computes the RMST.

    Parameters
    ----------
    data : DataFrame
        One row per subject. Not modified.
    duration, event : str
        Follow-up time and event indicator (1 = event, 0 = censored).
    group : str, optional
        Column defining the groups.
    tau : float, optional
        The horizon. Default: the largest time up to which every curve is known: the
        smallest of the groups' last follow-up times (survRM2's default), where a group
        whose curve has dropped to 0 (its last subject died) is known at every time and
        does not limit it; when every curve reaches 0, the largest follow-up time. A
        ``tau`` beyond a group's last follow-up is an error unless that group's curve has
        reached 0.
    alpha : float
        1 - confidence level.
    order : list, optional
        Order of the groups (default: sorted); the difference is ``order[1] - order[0]``.

    Returns
    -------
    RestrictedMeanResult

    References
    ----------
    Royston P, Parmar MKB (2013). Restricted mean survival time: an alternative to the
    hazard ratio for the design and analysis of randomized trials with a time-to-event
    outcome. BMC Med Res Methodol 13:152. Klein JP, Moeschberger ML (2003). Survival
    Analysis, section 4.5. Uno H et al. (2014). Moving beyond the hazard ratio in
    quantifying the between-group difference in survival analysis. J Clin Oncol
    32:2380-2385.
    """
    alpha = _check_alpha(alpha)
    frame, _ = _survival_frame(data, duration, event, [] if group is None else [group],
                               "restricted_mean")
    labels = ["all"] if group is None else sorted(frame[group].unique().tolist())
    if order is not None:
        if sorted(map(str, order)) != sorted(map(str, labels)):
            raise ParamsError(f"restricted_mean: order {order} must list the groups "
                              f"{labels} exactly.")
        labels = list(order)
    parts = {lab: (frame if group is None else frame.loc[frame[group] == lab]) for lab in labels}
    last = {lab: float(p[duration].max()) for lab, p in parts.items()}
    # a curve is known beyond its last time only when that last subject had the event
    # and nobody was censored at that time (S drops to 0 there)
    ends_at_zero = {lab: bool(((p[duration] == last[lab]) & (p[event] == 0)).sum() == 0)
                    for lab, p in parts.items()}
    if tau is None:
        limits = [last[lab] for lab in labels if not ends_at_zero[lab]]
        tau = min(limits) if limits else max(last.values())
    tau = float(tau)
    if not np.isfinite(tau) or tau <= 0:
        raise ParamsError(f"restricted_mean: tau must be a positive number (got {tau!r}).")
    z = _z(alpha)
    rows = []
    for lab, p in parts.items():
        t = p[duration].to_numpy(float)
        s = p[event].to_numpy(float)
        utime, n_risk, d, surv = _km_steps(t, s)
        if tau > last[lab] and not ends_at_zero[lab]:
            raise DataValidationError(
                f"restricted_mean: tau = {tau:g} is beyond the last follow-up of group {lab!r} "
                f"({last[lab]:g}), where its curve is unknown; choose tau <= {last[lab]:g}.")
        keep = utime <= tau
        utime, n_risk, d, surv = utime[keep], n_risk[keep], d[keep], surv[keep]
        # S is 1 on [0, t_1), surv[j] on [t_j, t_{j+1}), the last value up to tau
        edges = np.concatenate([[0.0], utime, [tau]])
        heights = np.concatenate([[1.0], surv])
        pieces = heights * np.diff(edges)
        rmst = float(pieces.sum())
        area_after = np.cumsum(pieces[::-1])[::-1][1:]        # A_j for each event time
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(n_risk > d, area_after ** 2 * d / (n_risk * (n_risk - d)), 0.0)
        se = float(np.sqrt(terms.sum()))
        rows.append({"term": str(lab), "estimate": rmst, "std_error": se,
                     "ci_low": rmst - z * se, "ci_high": rmst + z * se, "p_value": np.nan,
                     "group": lab, "n": int(t.size), "events": int(s.sum()), "tau": tau})
    table = pd.DataFrame(rows)
    difference = None
    if len(labels) == 2:
        a, b = table.iloc[0], table.iloc[1]
        est = float(b["estimate"] - a["estimate"])
        se = float(np.hypot(a["std_error"], b["std_error"]))
        p_value = float(2 * stats.norm.sf(abs(est / se))) if se > 0 else float("nan")
        difference = EffectResult(
            table=effect_table([("difference", est, se, est - z * se, est + z * se, p_value,
                                 f"{b['group']} vs {a['group']}")], ["contrast"]),
            treatment=str(b["group"]), nobs=int(a["n"] + b["n"]),
            method=f"difference in restricted mean survival to {tau:g}", alpha=alpha,
            estimand="difference in restricted mean survival", extra={"tau": tau})
    return RestrictedMeanResult(table=table, tau=tau, alpha=alpha, _effect=difference)
