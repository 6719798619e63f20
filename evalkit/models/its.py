"""Interrupted time series (segmented regression) on a monthly series.

Level change and slope change at the intervention, Newey-West (HAC) errors, optional
month-of-year terms and an optional comparison series (comparative ITS), plus the
relative effect "with vs without the intervention" at a chosen horizon and on average
over the post period, which is how a statement such as "an 18% drop" is read off.
:func:`its_plot` draws the series, the fitted segments and the counterfactual.

References
----------
Wagner, Soumerai, Zhang & Ross-Degnan (2002), "Segmented regression analysis of
interrupted time series studies in medication use research", *J. Clin. Pharm. Ther.*
27:299-309. Newey & West (1987, 1994). Driscoll & Kraay (1998), *Rev. Econ. Stat.*
80:549-560.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.genmod import families
from statsmodels.genmod.generalized_linear_model import GLM
from statsmodels.regression.linear_model import OLS

from evalkit.errors import (
    ConvergenceError,
    DataValidationError,
    ParamsError,
    StatisticalWarning,
)
from evalkit.models.base import EffectResult, ModelResult, wald_table
from evalkit.models.effects import (
    check_alpha,
    check_full_rank,
    drop_bad_exposure,
    one_blas_thread,
    prepare_frame,
)
from evalkit.models.panel_design import (
    binary_column,
    check_family,
    check_name,
    numeric_outcome,
    wald_quantile,
)

__all__ = ["ITSResult", "its", "its_plot", "newey_west_lags"]

# Fewer points than this on either side of an interruption give weak ITS estimates
# (Wagner et al. 2002 suggest about 12 monthly points before and after).
_FEW_ITS_POINTS = 8
EFFECT_COLUMNS = ["term", "estimate", "std_error", "ci_low", "ci_high", "p_value", "scale",
                  "quantity", "percent_change"]


def newey_west_lags(n_times: int) -> int:
    """Default Newey-West truncation lag ``floor(4 (T/100)^(2/9))`` (Newey & West 1994),
    with ``T`` the number of time points; e.g. 3 for 36 to 100+ monthly points."""
    return int(np.floor(4 * (n_times / 100.0) ** (2.0 / 9.0)))


class _ITSFit:
    """Design and estimates needed to predict with and without the intervention."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def design(self, t, g, counterfactual: bool, season_codes=None, season_avg=False):
        """Model rows at relative times ``t`` for series ``g`` (1 = intervention)."""
        t = np.asarray(t, dtype=float)
        g = np.asarray(g, dtype=float) * np.ones_like(t)
        post = (t >= self.t0).astype(float)
        cols = [np.ones_like(t), t, post, (t - self.t0) * post]
        if self.control:
            on = 0.0 if counterfactual else 1.0
            cols += [g, g * t, on * g * post, on * g * (t - self.t0) * post]
        elif counterfactual:
            cols[2] = cols[2] * 0.0
            cols[3] = cols[3] * 0.0
        X = np.column_stack(cols)
        if self.season_levels is not None and getattr(self, "harmonics", 0):
            # Fourier terms sin/cos(2 pi j s / period), j = 1..harmonics; each averages
            # to zero over a whole cycle, so the deseasonalised row is all zeros.
            H = self.harmonics
            if season_avg:
                S = np.zeros((len(t), 2 * H))
            else:
                ang = 2 * np.pi * np.asarray(season_codes, dtype=float) / self.period
                S = np.column_stack([f(j * ang) for j in range(1, H + 1)
                                     for f in (np.sin, np.cos)])
            X = np.column_stack([X, S])
        elif self.season_levels is not None:
            lv = self.season_levels[1:]
            if season_avg:
                S = np.full((len(t), len(lv)), 1.0 / len(self.season_levels))
            else:
                S = (np.asarray(season_codes)[:, None] == np.asarray(lv)[None, :]).astype(float)
            X = np.column_stack([X, S])
        return X


@dataclass(frozen=True)
class ITSResult(ModelResult):
    """An interrupted time series fit (a :class:`~evalkit.models.base.ModelResult`).

    ``effect()`` gives the effects as an :class:`~evalkit.models.base.EffectResult`.

    Attributes
    ----------
    table : DataFrame
        All coefficients with HAC standard errors: ``(Intercept)``, ``time`` (pre slope
        per period), ``level_change``, ``slope_change`` (+ ``intervention``,
        ``intervention:time``, ``intervention:level_change``,
        ``intervention:slope_change`` with a comparison series; + month or season
        terms). Log scale for ``poisson``.
    fitted : DataFrame
        ``series, time, observed, fitted, counterfactual`` on the analysis scale (rate per
        1,000 exposure units when ``exposure`` is given), for :func:`its_plot`.
    horizon : float
        Periods after the intervention at which the ``ratio_at_horizon`` effect is taken.
    lags : int
        Newey-West truncation lag used.
    family : str
    """

    fitted: pd.DataFrame | None = None
    horizon: float = 0.0
    lags: int = 0
    family: str = "gaussian"
    _effect: EffectResult | None = field(default=None, repr=False)

    def effect(self) -> EffectResult:
        """The effects of the intervention, keyed by ``term``:

        * ``level_change`` and ``slope_change`` (per period) -- or, with a comparison
          series, their differences from the comparison's changes;
        * ``ratio_at_horizon`` -- the ratio with/without the intervention ``horizon``
          periods after it (see :meth:`relative_effect`);
        * ``average_ratio`` -- the ratio over the observed post-intervention period.

        Further columns: ``scale`` (``rate_ratio`` or ``difference`` for the changes,
        ``ratio`` for the ratios), ``quantity`` (the row in words) and ``percent_change``.
        """
        return self._effect

    def summary(self) -> str:
        return "\n".join([super().summary(), "", "effects:", self._effect.table.to_string(
            index=False, float_format=lambda v: f"{v:.6g}")])

    def relative_effect(self, horizon: float, alpha: float | None = None) -> pd.DataFrame:
        """Predicted outcome with vs without the intervention ``horizon`` periods after it.

        For the intervention series at time ``intervention_time + horizon`` (``horizon =
        0`` is the intervention period itself):

        * ``gaussian``: ``ratio = x1'b / x0'b`` where ``x1`` includes the level and slope
          changes and ``x0`` does not (the counterfactual continues the pre-intervention
          trend; with a comparison series it also follows the comparison's changes).
          Month/season terms enter at their average, so the ratio is deseasonalised.
          Delta method on the log ratio: ``se^2 = g'Vg``, ``g = x1/(x1'b) - x0/(x0'b)``.
        * ``poisson``: ``ratio = exp(level_change + horizon * slope_change)`` (season and
          exposure cancel), interval ``exp(log ratio +/- q se)``.

        Returns a one-row DataFrame: ``horizon, predicted_with, predicted_without,
        ratio, std_error, ci_low, ci_high, p_value, percent_change`` (predictions on the
        analysis scale, e.g. visits per 1,000 member-months).
        """
        alpha = self.alpha if alpha is None else check_alpha(alpha, "relative_effect")
        return _relative_effect(self.model, horizon, alpha)


def _relative_effect(fit: _ITSFit, horizon, alpha: float) -> pd.DataFrame:
    h = float(horizon)
    if not np.isfinite(h) or h < 0:
        raise ParamsError(f"relative_effect: horizon must be >= 0 periods after the "
                          f"intervention, got {horizon!r}.")
    if h > fit.h_max:
        warnings.warn(f"relative_effect: horizon {h:g} is beyond the last observed "
                      f"post-intervention period ({fit.h_max:g}); the ratio extrapolates "
                      "the fitted segments.", StatisticalWarning, stacklevel=3)
    t = np.array([fit.t0 + h])
    x1 = fit.design(t, 1, False, season_avg=True)[0]
    x0 = fit.design(t, 1, True, season_avg=True)[0]
    row = _ratio_row(x1, x0, fit.params, fit.vcov, fit.family, alpha, fit.tdf, fit.scale)
    return pd.DataFrame([{"horizon": h, **row}])


def _ratio_row(x1, x0, b, V, family, alpha, tdf, scale):
    q = wald_quantile(alpha, tdf)
    if family == "poisson":
        m1, m0 = np.exp(x1 @ b), np.exp(x0 @ b)
        grad = x1 - x0
    else:
        m1, m0 = x1 @ b, x0 @ b
        if not (m1 > 0 and m0 > 0):
            warnings.warn("its: a predicted value with or without the intervention is not "
                          "positive, so their ratio is not defined; read the level and slope "
                          "changes instead.", StatisticalWarning, stacklevel=3)
            return {"predicted_with": m1 * scale, "predicted_without": m0 * scale,
                    "ratio": np.nan, "std_error": np.nan, "ci_low": np.nan, "ci_high": np.nan,
                    "p_value": np.nan, "percent_change": np.nan}
        grad = x1 / m1 - x0 / m0
    lr = np.log(m1 / m0)
    se = float(np.sqrt(max(grad @ V @ grad, 0.0)))
    dist = stats.norm if tdf is None else stats.t(tdf)
    p = float(2 * dist.sf(abs(lr) / se)) if se > 0 else np.nan
    r = float(np.exp(lr))
    return {"predicted_with": float(m1 * scale), "predicted_without": float(m0 * scale),
            "ratio": r, "std_error": r * se, "ci_low": float(np.exp(lr - q * se)),
            "ci_high": float(np.exp(lr + q * se)), "p_value": p, "percent_change": 100 * (r - 1)}


def _month_number(values) -> np.ndarray:
    """Dates (or date strings) -> absolute month numbers ``year * 12 + month - 1``."""
    ts = pd.to_datetime(pd.Series(values))
    return (ts.dt.year * 12 + ts.dt.month - 1).to_numpy(dtype=float)


def _season(t_abs: np.ndarray, period: int, dated: bool) -> np.ndarray:
    """Season codes: calendar month 1..12 for dates, else ``time mod period``."""
    pos = np.round(t_abs).astype(int) % period
    return pos + 1 if (dated and period == 12) else pos


@one_blas_thread
def its(data: pd.DataFrame, outcome: str, time: str, intervention_time,
        exposure: str | None = None, control: str | None = None, lags: int | None = None,
        seasonal=False, family: str = "gaussian", alpha: float = 0.05,
        horizon: float | None = None, harmonics: int = 0) -> ITSResult:
    r"""Interrupted time series: segmented regression with Newey-West standard errors.

    What it estimates
    -----------------
    For one series observed at times ``t`` with the intervention at ``t0``
    (``post = t >= t0``)

    .. math:: g(E[y_t]) = b_0 + b_1 (t - t_{first}) + b_2\,post_t
              + b_3 (t - t_0)\,post_t\;[+ \text{month-of-year terms}]

    ``b_2`` (``level_change``) is the jump at the intervention and ``b_3``
    (``slope_change``) the change in trend per period; the counterfactual is the
    pre-intervention segment extended. ``g`` is the identity for ``gaussian`` (the
    outcome itself, or ``1000 * outcome / exposure`` -- a rate per 1,000 member-months --
    when ``exposure`` is given) and log for ``poisson`` (counts, ``log(exposure)``
    offset; ``exp(b_2)`` is then the rate ratio at the intervention and ``exp(b_3)``
    the ratio per period).

    With a comparison series (``control``: 1 marks the comparison rows, 0 the
    intervention rows), comparative ITS stacks both series and adds ``intervention``
    (1 for the intervention series) times each term: ``intervention:level_change`` and
    ``intervention:slope_change`` are the *differences* in level and slope change
    (intervention minus comparison); month terms are shared. The counterfactual for the
    intervention series then follows its own pre-trend plus the comparison's changes.

    Relative effect: the ratio of the predicted outcome with vs without the
    intervention, at ``horizon`` periods after ``t0`` (deseasonalised; see
    :meth:`ITSResult.relative_effect`) and averaged over the observed post-intervention
    periods (``sum of predictions with / sum without``, observed months and exposure);
    100 * (ratio - 1) is the percentage change ("ER use fell by 18%" = ratio 0.82).
    Intervals by the delta method on the log ratio.

    Standard errors: Newey-West HAC (Bartlett kernel, no prewhitening) with truncation
    lag ``lags``; default ``floor(4 (T/100)^(2/9))`` with ``T`` the number of time
    points (:func:`newey_west_lags`; 3 for 36-125 months). The small-sample factor
    ``n/(n-k)`` **is** applied, i.e. statsmodels ``cov_type="HAC"`` with
    ``use_correction=True`` (= R ``sandwich::NeweyWest(fit, lag, prewhite = FALSE,
    adjust = TRUE)``). For ``poisson`` the sandwich uses the Poisson scores, so
    overdispersion is allowed for. With a comparison series the scores of both series
    are summed within each time point before the Newey-West weighting (Driscoll-Kraay;
    statsmodels ``cov_type="hac-groupsum"``, ``use_correction="hac"``), which also
    allows the two series to share shocks. ``gaussian`` intervals use ``t(n-k)``,
    ``poisson`` the normal. Rows are assumed equally spaced in time; gaps give a
    :class:`~evalkit.errors.StatisticalWarning`.

    Parameters
    ----------
    data : DataFrame
        One row per time point (per series). Not modified.
    outcome : str
        The series (a rate, or counts with ``exposure``).
    time : str
        Month number (any numeric period index) or dates (taken as calendar months).
    intervention_time
        First period of the post-intervention segment, in the units of ``time``.
    exposure : str, optional
        Member-months per time point: offset for ``poisson``; for ``gaussian`` the
        outcome is analysed as ``1000 * outcome / exposure``.
    control : str, optional
        0/1 column, 1 = comparison series (comparative ITS).
    lags : int, optional
        Newey-West truncation lag (default: the rule above).
    seasonal : bool or int
        Add season dummies: calendar month for dates; for numeric time ``time mod 12``
        (or ``time mod seasonal`` when an int, e.g. 4 for quarters).
    harmonics : int
        With ``seasonal``: model the season by this many sine/cosine pairs of the cycle
        (``sin(2 pi j s / period)``, ``cos(...)``, ``j = 1..harmonics``, terms ``sin1,
        cos1, ...``) instead of one dummy per season. 0 (default) = dummies. A short
        series needs this: with 12 months before and 12 after an intervention at a
        year boundary, the pre-intervention trend is a linear combination of 11 month
        dummies and the level change, so it cannot be estimated; one or two harmonics
        (2 or 4 terms) keep it identified (Bhaskaran et al. 2013, "Time series
        regression studies in environmental epidemiology", *Int. J. Epidemiol.*
        42:1187-1195).
    family : {"gaussian", "poisson"}
    alpha : float
    horizon : float, optional
        Periods after the intervention for the ``ratio_at_horizon`` effect (default: the last
        observed post-intervention period of the intervention series).

    Returns
    -------
    ITSResult
        ``table``, ``effect()``, ``fitted``, ``relative_effect(h)``, ``summary()``.

    Raises
    ------
    DataValidationError
        Missing columns, no points before or after ``intervention_time``, repeated time
        points within a series, a constant outcome, a comparison series given but
        missing, terms that cannot be estimated.
    ParamsError
        Unknown family, bad ``lags``/``seasonal``/``horizon``.

    Examples
    --------
    >>> res = its(monthly, "er_visits", "month", intervention_time=25,
    ...           exposure="member_months", family="poisson", seasonal=True, horizon=12)
    >>> res.effect().table  # level, slope, ratio at 12 months, average ratio  # doctest: +SKIP
    >>> its_plot(res)                                                        # doctest: +SKIP

    References
    ----------
    Wagner et al. (2002); Bernal, Cummins & Gasparrini (2017), "Interrupted time series
    regression for the evaluation of public health interventions: a tutorial", *Int. J.
    Epidemiol.* 46:348-355; Linden (2015), "Conducting interrupted time-series analysis
    for single- and multiple-group comparisons", *Stata Journal* 15:480-500; Newey & West
    (1987, 1994); Driscoll & Kraay (1998).
    """
    what = f"its({family})"
    check_family(family, "its")
    alpha = check_alpha(alpha, what)
    check_name(outcome, "outcome", what)
    check_name(time, "time", what)
    check_name(exposure, "exposure", what, optional=True)
    check_name(control, "control", what, optional=True)
    if intervention_time is None:
        raise ParamsError(f"{what}: intervention_time is required (first post-intervention "
                          "value of time).")
    period = _season_period(seasonal, harmonics, what)
    cols = [outcome, time] + [c for c in (exposure, control) if c]
    frame, dropped = prepare_frame(data, [], list(dict.fromkeys(cols)), what)
    if exposure is not None:
        frame, dropped = drop_bad_exposure(frame, exposure, dropped, what)
    y_raw = numeric_outcome(frame, outcome, what)
    t_abs, it_abs, dated = _time_axis(frame[time], intervention_time, time, what)
    season_prefix = "month" if (dated and period == 12) else "season"
    g = _series(frame, control, what)
    frame, y_raw, t_rel, t_abs, g, t0 = _sorted_series(frame, y_raw, t_abs, it_abs, g,
                                                      frame[time], control, what)
    _check_segments(t_rel, g, t0, intervention_time, what)
    y, offset, scale_rows, scale, level = _analysis_scale(frame, y_raw, outcome, exposure,
                                                          family, what)

    # --- design and fit
    season_codes = _season(t_abs, period, dated) if period else None
    season_levels = np.unique(season_codes) if period else None
    fit_info = _ITSFit(t0=t0, control=control is not None, season_levels=season_levels,
                       harmonics=int(harmonics), period=period, family=family)
    X = fit_info.design(t_rel, g, False, season_codes)
    names = _its_names(control is not None, period, harmonics, season_prefix, season_levels)
    check_full_rank(X, names, what)
    t_codes, t_uniques = pd.factorize(t_rel, sort=True)
    n_times = len(t_uniques)
    lags, lag_rule = _lags(lags, n_times, what)
    res, vc = _hac_fit(y, X, offset, family, t_codes, lags, control is not None, what)
    b = np.asarray(res.params)
    V = np.asarray(res.cov_params())
    n, k = X.shape
    tdf = n - k if family == "gaussian" else None
    if tdf is not None and tdf <= 0:
        raise DataValidationError(f"{what}: {n} time points for {k} coefficients; use a "
                                  "longer series or fewer terms (seasonal=False).")
    se = np.sqrt(np.clip(np.diag(V), 0, None))
    table = wald_table(names, b, se, alpha, df=tdf)

    h_max = float(t_rel[g == 1].max() - t0)
    fit_info.__dict__.update(params=b, vcov=V, tdf=tdf, scale=scale, h_max=h_max)
    if horizon is None:
        horizon = h_max
    effect = _its_effects(table, fit_info, control is not None, family, alpha, tdf,
                          horizon, h_max, g, t_rel, t0, season_codes, offset)
    fitted_df = _fitted_frame(fit_info, X, g, t_rel, t0, season_codes, offset, scale_rows,
                              level, frame[time])

    method, formula = _its_description(outcome, exposure, control, period, harmonics,
                                       season_prefix, family, vc)
    extra = {"n_times": n_times, "lags": lags, "lag_rule": lag_rule,
             "scale_label": (f"{outcome} per 1,000 {exposure}" if exposure else outcome),
             "time_column": time,
             "intervention_time": intervention_time, "t0_relative": t0,
             "horizon": float(horizon), "df_residual": n - k}
    if family == "poisson":
        extra["deviance"] = float(res.deviance)
        extra["pearson_chi2"] = float(res.pearson_chi2)
        extra["dispersion_ratio"] = float(res.pearson_chi2) / (n - k)
    loglik = float(res.llf)
    result_effect = EffectResult(
        table=effect, treatment="intervention", nobs=n, method=method, vcov=vc, alpha=alpha,
        estimand="ATT", extra={"family": family, "horizon": float(horizon)})
    return ITSResult(table=table, method=method, formula=formula, nobs=n,
                     dropped=dropped, loglik=loglik, alpha=alpha, extra=extra, model=fit_info,
                     fitted=fitted_df, horizon=float(horizon), lags=lags,
                     family=family, _effect=result_effect)


# --------------------------------------------------------------------------- steps
def _season_period(seasonal, harmonics, what) -> int | None:
    """The season's cycle length (None without seasonal terms), harmonics checked."""
    if isinstance(seasonal, bool):
        period = 12 if seasonal else None
    elif isinstance(seasonal, (int, np.integer)) and seasonal >= 2:
        period = int(seasonal)
    else:
        raise ParamsError(f"{what}: seasonal must be True/False or a cycle length >= 2, got "
                          f"{seasonal!r}.")
    if isinstance(harmonics, bool) or not isinstance(harmonics, (int, np.integer)) or \
            harmonics < 0 or (period and harmonics and 2 * harmonics >= period):
        raise ParamsError(f"{what}: harmonics must be a whole number from 0 to "
                          f"{(period - 1) // 2 if period else 'period/2'} (sine/cosine pairs "
                          f"below the Nyquist frequency), got {harmonics!r}.")
    if harmonics and not period:
        raise ParamsError(f"{what}: harmonics={harmonics} needs seasonal=True (or a cycle "
                          "length).")
    return period


def _time_axis(tcol: pd.Series, intervention_time, time: str, what: str):
    """Absolute times (month numbers for dates), the intervention's, and whether dated."""
    dated = pd.api.types.is_datetime64_any_dtype(tcol) or not pd.api.types.is_numeric_dtype(tcol)
    if dated:
        try:
            return _month_number(tcol), float(_month_number([intervention_time])[0]), True
        except (ValueError, TypeError):
            raise DataValidationError(
                f"{what}: time {time!r} must be numeric (month numbers) or dates, and "
                f"intervention_time ({intervention_time!r}) of the same kind.") from None
    t_abs = tcol.to_numpy(dtype=float)
    try:
        it_abs = float(intervention_time)
    except (TypeError, ValueError):
        raise ParamsError(f"{what}: intervention_time must be a number like the values "
                          f"of {time!r}, got {intervention_time!r}.") from None
    return t_abs, it_abs, False


def _series(frame, control, what) -> np.ndarray:
    """1 for rows of the intervention series, 0 for the comparison series."""
    if control is None:
        return np.ones(len(frame), dtype=int)
    g = 1 - binary_column(frame[control], control, what)
    if g.all() or not g.any():
        which = "comparison (control = 1)" if g.all() else "intervention (control = 0)"
        raise DataValidationError(f"{what}: no {which} rows; comparative ITS needs both "
                                  "series.")
    return g


def _sorted_series(frame, y_raw, t_abs, it_abs, g, tcol, control, what):
    """Rows sorted by series then time (one row per time point and series), with times
    relative to the first (``t_rel``) and the intervention's relative time ``t0``."""
    key = pd.DataFrame({"g": g, "t": t_abs})
    dup = key.duplicated()
    if dup.any():
        raise DataValidationError(
            f"{what}: {int(dup.sum())} repeated time point(s) within a series (e.g. "
            f"{list(tcol[dup.to_numpy()][:3])}); aggregate to one row per time point"
            + (" and series." if control else " (or give control= for two series)."))
    t_first = float(t_abs.min())
    t_rel = t_abs - t_first
    t0 = it_abs - t_first
    order = np.lexsort((t_rel, g))             # by series, then time
    return frame.iloc[order], y_raw[order], t_rel[order], t_abs[order], g[order], t0


def _check_segments(t_rel, g, t0, intervention_time, what) -> None:
    """Each series has points on both sides of the intervention (warn when few, or gaps)."""
    for lab, m in (("intervention", g == 1), ("comparison", g == 0)):
        if not m.any():
            continue
        n_before, n_after = int((t_rel[m] < t0).sum()), int((t_rel[m] >= t0).sum())
        if n_before == 0 or n_after == 0:
            side = "before" if n_before == 0 else "at or after"
            raise DataValidationError(
                f"{what}: the {lab} series has no time points {side} intervention_time "
                f"{intervention_time!r}; ITS needs data on both sides.")
        if min(n_before, n_after) < _FEW_ITS_POINTS:
            warnings.warn(
                f"{what}: the {lab} series has {n_before} points before and {n_after} after "
                f"the intervention; with fewer than {_FEW_ITS_POINTS} on a side level and "
                "slope changes are poorly determined (about 12 each is the usual advice).",
                StatisticalWarning, stacklevel=4)
        steps = np.diff(np.sort(t_rel[m]))
        if steps.size and not np.allclose(steps, steps.min()):
            warnings.warn(
                f"{what}: the {lab} series has gaps in time (steps {sorted(set(steps))[:5]}); "
                "Newey-West lags count rows, so fill missing periods if you can.",
                StatisticalWarning, stacklevel=4)


def _analysis_scale(frame, y_raw, outcome, exposure, family, what):
    """Outcome on the analysis scale: ``y, offset, scale_rows, scale, level``."""
    if exposure is not None:
        expo = frame[exposure].to_numpy(dtype=float)
    if family == "poisson":
        if (y_raw < 0).any():
            raise DataValidationError(f"{what}: outcome {outcome!r} has negative values; a "
                                      "Poisson model needs counts.")
        y = y_raw
        offset = np.log(expo) if exposure is not None else None
        scale_rows = 1000.0 / expo if exposure is not None else np.ones(len(y))
        scale = 1000.0 if exposure is not None else 1.0
        level = y * scale_rows
    else:
        y = 1000.0 * y_raw / expo if exposure is not None else y_raw
        offset = None
        scale_rows = np.ones(len(y))
        scale = 1.0
        level = y
    if np.ptp(level) == 0:
        raise DataValidationError(f"{what}: outcome {outcome!r} is constant ({level[0]:g}) "
                                  "over the whole series; there is no change to analyse.")
    return y, offset, scale_rows, scale, level


def _its_names(comparative: bool, period, harmonics, season_prefix, season_levels) -> list:
    """Coefficient names in the order of :meth:`_ITSFit.design`."""
    names = ["(Intercept)", "time", "level_change", "slope_change"]
    if comparative:
        names += ["intervention", "intervention:time", "intervention:level_change",
                  "intervention:slope_change"]
    if period and harmonics:
        names += [f"{f}{j}" for j in range(1, harmonics + 1) for f in ("sin", "cos")]
    elif period:
        names += [f"{season_prefix}{s}" for s in season_levels[1:]]
    return names


def _lags(lags, n_times: int, what: str):
    """Newey-West truncation lag and how it was chosen."""
    if lags is None:
        lags, lag_rule = newey_west_lags(n_times), "floor(4*(T/100)^(2/9))"
    else:
        if isinstance(lags, bool) or not isinstance(lags, (int, np.integer)) or lags < 0:
            raise ParamsError(f"{what}: lags must be a non-negative integer, got {lags!r}.")
        lags, lag_rule = int(lags), "given"
    if lags >= n_times:
        raise ParamsError(f"{what}: lags ({lags}) must be smaller than the number of time "
                          f"points ({n_times}).")
    return lags, lag_rule


def _hac_fit(y, X, offset, family, t_codes, lags, comparative, what):
    """OLS or Poisson GLM with statsmodels' Newey-West (or Driscoll-Kraay) covariance,
    and the sentence describing that covariance."""
    if not comparative:
        cov_type, cov_kwds = "HAC", {"maxlags": lags, "use_correction": True}
        vc = f"Newey-West HAC, Bartlett kernel, {lags} lags, small-sample factor n/(n-k)"
    else:
        cov_type = "hac-groupsum"
        cov_kwds = {"time": t_codes, "maxlags": lags, "use_correction": "hac"}
        vc = (f"Driscoll-Kraay HAC (scores summed over series per time point), Bartlett "
              f"kernel, {lags} lags, small-sample factor n/(n-k)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if family == "gaussian":
            res = OLS(y, X).fit(cov_type=cov_type, cov_kwds=cov_kwds)
        else:
            model = GLM(y, X, family=families.Poisson(), offset=offset)
            res = model.fit(method="IRLS", atol=1e-10, rtol=1e-12, maxiter=100,
                            cov_type=cov_type, cov_kwds=cov_kwds)
    if family == "poisson" and not res.converged:
        raise ConvergenceError(f"{what}: the Poisson fit did not converge; check for months "
                               "with no events or extreme values.")
    return res, vc


def _its_effects(table, fit_info, comparative, family, alpha, tdf, horizon, h_max, g, t_rel,
                 t0, season_codes, offset) -> pd.DataFrame:
    """The effect table: level and slope changes, the ratio at ``horizon`` and the
    average ratio over the observed post period (see :meth:`ITSResult.effect`)."""
    rows = []
    lvl, slp = (("intervention:level_change", "intervention:slope_change") if comparative
                else ("level_change", "slope_change"))
    labels = {lvl: "difference in level change (intervention - comparison)" if comparative
              else "level change", slp: "difference in slope change per period "
              "(intervention - comparison)" if comparative else "slope change per period"}
    for key, term in (("level_change", lvl), ("slope_change", slp)):
        r = table.loc[table["term"] == term].iloc[0]
        if family == "poisson":
            e = np.exp(r["estimate"])
            rows.append({"term": key, "quantity": labels[term], "scale": "rate_ratio",
                         "estimate": e, "std_error": e * r["std_error"],
                         "ci_low": np.exp(r["ci_low"]), "ci_high": np.exp(r["ci_high"]),
                         "p_value": r["p_value"], "percent_change": 100 * (e - 1)})
        else:
            rows.append({"term": key, "quantity": labels[term], "scale": "difference",
                         "estimate": r["estimate"], "std_error": r["std_error"],
                         "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                         "p_value": r["p_value"], "percent_change": np.nan})
    with warnings.catch_warnings():
        if horizon <= h_max:
            warnings.simplefilter("ignore", StatisticalWarning)
        hz_row = _relative_effect(fit_info, horizon, alpha).iloc[0]
    rows.append({"term": "ratio_at_horizon",
                 "quantity": f"ratio with/without intervention at {horizon:g} periods after",
                 "scale": "ratio", "estimate": hz_row["ratio"], "std_error": hz_row["std_error"],
                 "ci_low": hz_row["ci_low"], "ci_high": hz_row["ci_high"],
                 "p_value": hz_row["p_value"], "percent_change": hz_row["percent_change"]})
    average = _average_ratio(fit_info, family, alpha, tdf, g, t_rel, t0, season_codes, offset)
    if average is not None:
        rows.append(average)
    return pd.DataFrame(rows, columns=EFFECT_COLUMNS)


def _average_ratio(fit_info, family, alpha, tdf, g, t_rel, t0, season_codes, offset):
    """Sum of predictions with / without the intervention over the observed post period
    of the intervention series, with a delta-method interval (None when undefined)."""
    b, V = fit_info.params, fit_info.vcov
    q = wald_quantile(alpha, tdf)
    pm = (g == 1) & (t_rel >= t0)
    sc_post = season_codes[pm] if season_codes is not None else None
    X1 = fit_info.design(t_rel[pm], 1, False, sc_post)
    X0 = fit_info.design(t_rel[pm], 1, True, sc_post)
    if family == "poisson":
        off_p = offset[pm] if offset is not None else np.zeros(pm.sum())
        w1, w0 = np.exp(X1 @ b + off_p), np.exp(X0 @ b + off_p)
        a1, a0 = w1.sum(), w0.sum()
        grad = (X1.T @ w1) / a1 - (X0.T @ w0) / a0
    else:
        a1, a0 = (X1 @ b).sum(), (X0 @ b).sum()
        grad = X1.sum(0) / a1 - X0.sum(0) / a0 if (a1 > 0 and a0 > 0) else None
    if grad is None:
        return None
    lr = np.log(a1 / a0)
    se_lr = float(np.sqrt(max(grad @ V @ grad, 0.0)))
    dist = stats.norm if tdf is None else stats.t(tdf)
    ratio = float(np.exp(lr))
    return {"term": "average_ratio", "quantity": "average ratio with/without intervention "
            "over the post-intervention period", "scale": "ratio", "estimate": ratio,
            "std_error": ratio * se_lr, "ci_low": float(np.exp(lr - q * se_lr)),
            "ci_high": float(np.exp(lr + q * se_lr)),
            "p_value": float(2 * dist.sf(abs(lr) / se_lr)) if se_lr > 0 else np.nan,
            "percent_change": 100 * (ratio - 1)}


def _fitted_frame(fit_info, X, g, t_rel, t0, season_codes, offset, scale_rows, level,
                  times: pd.Series) -> pd.DataFrame:
    """Observed, fitted and counterfactual values for :func:`its_plot`."""
    b = fit_info.params
    n = len(g)
    Xcf = fit_info.design(t_rel, g, True, season_codes)
    if fit_info.family == "poisson":
        off_all = offset if offset is not None else np.zeros(n)
        fitted = np.exp(X @ b + off_all) * scale_rows
        cf = np.exp(Xcf @ b + off_all) * scale_rows
    else:
        fitted, cf = X @ b, Xcf @ b
    cf = np.where((g == 1) & (t_rel >= t0), cf, np.nan)
    return pd.DataFrame({
        "series": np.where(g == 1, "intervention", "comparison"),
        "time": times.to_numpy(), "post": t_rel >= t0,
        "observed": level, "fitted": fitted, "counterfactual": cf,
    })


def _its_description(outcome, exposure, control, period, harmonics, season_prefix, family,
                     vc):
    """The method sentence and the formula of the fit."""
    scale_txt = ("rate per 1,000 " + exposure if exposure and family == "gaussian" else outcome)
    if family == "gaussian":
        method = f"interrupted time series: segmented linear regression (OLS) of {scale_txt}; {vc}"
    else:
        method = ("interrupted time series: segmented Poisson regression (log link"
                  + (f", offset log({exposure})" if exposure else "") + f"); {vc}")
    rhs = "time + level_change + slope_change"
    if control:
        rhs += " + intervention * (time + level_change + slope_change)"
    if period and harmonics:
        rhs += f" + {harmonics} sine/cosine pair(s) of {season_prefix} (period {period})"
    elif period:
        rhs += f" + factor({season_prefix})"
    lhs = f"I(1000 * {outcome} / {exposure})" if exposure and family == "gaussian" else outcome
    if exposure and family == "poisson":
        rhs += f" + offset(log({exposure}))"
    return method, f"{lhs} ~ {rhs}"


def its_plot(result: ITSResult, ax=None):
    """Observed points, fitted segments before and after the intervention, and the
    counterfactual (pre-intervention trend continued, dashed) for an :func:`its` fit.

    Returns the matplotlib ``ax``; a dotted vertical line marks the intervention.
    """

    fd = getattr(result, "fitted", None)
    if fd is None:
        raise ParamsError("its_plot: expects the result of its().")
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 4))
    colors = {"intervention": "#1b7837", "comparison": "#762a83"}
    for series, sub in fd.groupby("series", sort=False):
        col = colors.get(series, "0.3")
        ax.plot(sub["time"], sub["observed"], "o", color=col, ms=3.5, alpha=0.7,
                label=f"{series}: observed")
        for is_post in (False, True):
            seg = sub[sub["post"] == is_post]
            ax.plot(seg["time"], seg["fitted"], "-", color=col, lw=1.6,
                    label=f"{series}: fitted" if not is_post else None)
        cf = sub[sub["counterfactual"].notna()]
        if len(cf):
            ax.plot(cf["time"], cf["counterfactual"], "--", color=col, lw=1.3,
                    label="counterfactual (no intervention)")
    first_post = fd.loc[fd["post"], "time"].min()
    ax.axvline(first_post, color="0.4", ls=":", lw=1)
    ax.set_xlabel(result.extra.get("time_column", "time"))
    ax.set_ylabel(result.extra.get("scale_label", "outcome"))
    ax.legend(frameon=False, fontsize=7)
    ax.spines[["top", "right"]].set_visible(False)
    return ax
