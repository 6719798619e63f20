"""Difference-in-differences on a unit x period panel.

Two-way fixed effects (unit and period), the treated x post coefficient as the effect,
cluster-robust errors, an event study (period-by-period effects relative to a reference
period) and a joint pre-trend test; linear (``gaussian``) or Poisson with a member-months
offset (effect = rate ratio). :func:`event_study_plot` draws the event study.

References
----------
Angrist & Pischke (2009), *Mostly Harmless Econometrics*, ch. 5. Wooldridge (1999),
"Distribution-free estimation of some nonlinear panel data models", *J. Econometrics*
90:77-97 (Poisson fixed effects). Cameron & Miller (2015), "A practitioner's guide to
cluster-robust inference", *J. Human Resources* 50:317-372.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter
import numpy as np
import pandas as pd
from scipy import linalg, stats

from evalkit.errors import DataValidationError, ParamsError, StatisticalWarning
from evalkit.models.base import EffectResult, ModelResult, effect_table, wald_table
from evalkit.models.effects import (
    build_matrix,
    check_alpha,
    drop_bad_exposure,
    one_blas_thread,
    prepare_frame,
    sandwich,
)
from evalkit.models.fixed_effects import IndicatorDesign, PanelData, fe_fit
from evalkit.models.panel_design import (
    binary_column,
    check_family,
    check_name,
    covariate_rhs,
    numeric_outcome,
    wald_quantile,
)

__all__ = ["DiDResult", "did", "event_study_plot"]

# Below these counts cluster-robust inference is unreliable (Cameron & Miller 2015, sec. VI).
_FEW_CLUSTERS = 20
_FEW_ARM_CLUSTERS = 5


@dataclass(frozen=True)
class DiDResult(ModelResult):
    """A difference-in-differences fit (a :class:`~evalkit.models.base.ModelResult`).

    ``effect()`` gives the treated x post effect as an
    :class:`~evalkit.models.base.EffectResult`.

    Attributes
    ----------
    table : DataFrame
        ``term, estimate, std_error, ci_low, ci_high, p_value`` of the two-way
        fixed-effects model: the treated x post term and any covariates (unit and period
        effects are not listed). Log scale for ``poisson``.
    event_study : DataFrame or None
        One row per period: ``period``, ``event_time`` (periods since the first
        post-intervention period), ``term``, ``estimate``, ``std_error``, ``ci_low``,
        ``ci_high``, ``p_value``, ``post``, ``reference``; the reference period has
        estimate 0 and no SE. For ``poisson`` also ``rate_ratio`` with its interval.
    pretrend : dict
        ``run`` (bool), ``test``, ``statistic``, ``df``, ``p_value``, ``f_statistic``,
        ``f_df``, ``f_p_value`` and ``reason`` (why it was not run, when it was not).
    family : str
    """

    event_study: pd.DataFrame | None = None
    pretrend: dict = field(default_factory=dict)
    family: str = "gaussian"
    _effect: EffectResult | None = field(default=None, repr=False)

    def effect(self) -> EffectResult:
        """The treated x post effect: one row, term ``difference`` (``gaussian``) or
        ``rate_ratio`` (``poisson``, with ``percent_change = 100 (rate ratio - 1)`` and
        its interval ``percent_ci_low``, ``percent_ci_high``)."""
        return self._effect

    def summary(self) -> str:
        lines = [super().summary(), "", "effect:",
                 self._effect.table.to_string(index=False, float_format=lambda v: f"{v:.6g}")]
        pt = self.pretrend
        if pt.get("run"):
            lines.append(f"pre-trend test: {pt['test']}: statistic {pt['statistic']:.4g} on "
                         f"{pt['df']} df, p = {pt['p_value']:.4g}")
        else:
            lines.append(f"pre-trend test not run: {pt.get('reason')}")
        if self.event_study is not None:
            cols = ["period", "event_time", "estimate", "std_error", "ci_low", "ci_high"]
            lines += ["", "event study:", self.event_study[cols].to_string(
                index=False, float_format=lambda v: f"{v:.4g}")]
        return "\n".join(lines)


def _fmt(v):
    return v.isoformat()[:10] if isinstance(v, pd.Timestamp) else v


@one_blas_thread
def did(data: pd.DataFrame, outcome: str, unit: str, time: str, treated: str,
        post: str | None = None, covariates=None, family: str = "gaussian",
        exposure: str | None = None, cluster: str | None = None, event_study: bool = True,
        reference_period=None, alpha: float = 0.05, intervention_time=None,
        small_sample: str = "nested") -> DiDResult:
    r"""Difference-in-differences with unit and period fixed effects.

    What it estimates
    -----------------
    With ``D_it = treated_i * post_t``, the two-way fixed-effects (TWFE) model

    .. math:: g(E[y_{it}]) = \alpha_i + \lambda_t + \delta D_{it} + x_{it}'\beta

    (``g`` = identity for ``gaussian``; log for ``poisson``, with ``log(exposure)`` as an
    offset). ``delta`` is the average effect on the treated after the intervention
    under *parallel trends* (without the intervention, treated and comparison units
    would have changed alike -- on the additive scale for ``gaussian``, the
    multiplicative scale for ``poisson``). With one intervention date and a balanced
    panel, the linear ``delta`` equals the 2x2 difference of the four means
    ``(treated post - treated pre) - (comparison post - comparison pre)``. For
    ``poisson`` ``exp(delta)`` is the rate ratio (e.g. 0.82 = an 18% drop) and
    ``effect().at("rate_ratio", "percent_change") = 100 (exp(delta) - 1)``.

    Event study: the same model with ``delta D_it`` replaced by
    ``sum_{s != ref} gamma_s treated_i 1[t = s]``, so ``gamma_s`` is the treated-vs-
    comparison gap in period ``s`` relative to the reference period (default: the last
    pre-intervention period). Pre-period ``gamma_s`` should be near 0; the pre-trend
    test is the joint (cluster-robust) Wald test that they all are:
    ``W = g' V^{-1} g ~ chi2(q)``, ``q`` = pre-periods - 1; ``f_statistic = W / q`` on
    ``(q, G - 1)`` df is the few-clusters version. It needs at least two pre-periods;
    otherwise ``pretrend["run"]`` is False, ``pretrend["reason"]`` says why and a
    :class:`~evalkit.errors.StatisticalWarning` is issued. A non-significant pre-trend
    test does not prove parallel trends (it may lack power); look at the event-study plot.

    How it is fitted
    ----------------
    * ``gaussian``: least squares with the unit effects absorbed by the within
      transformation (unit demeaning) and period dummies; no dummy matrix for units is
      built, so 100,000 members x 36 months are fine.
    * ``poisson``: Poisson GLM (log link) with unit and period effects; the unit effects
      are concentrated out analytically (Poisson fixed-effects / conditional
      multinomial likelihood), which gives exactly the estimates and SEs of R's
      ``glm(y ~ D + factor(unit) + factor(time) + offset(log(exposure)), poisson)`` for
      any number of units. Non-integer outcomes are allowed (pseudo-Poisson).

    Standard errors are cluster-robust, by ``unit`` unless ``cluster`` names another
    column, exactly as ``sandwich::vcovCL(fit, cluster = ~unit, type = "HC1")`` on that
    dummy-variable fit: ``V = c (B M B)`` with bread ``B`` = inverse (X'WX), meat ``M``
    = sum over clusters of the outer product of the summed scores and
    ``c = G/(G-1) * (n-1)/(n-k)``. With ``small_sample="nested"`` (default) the unit
    effects are left out of ``k`` when every unit lies within one cluster (always so
    when clustering by unit), as ``fixest`` and Stata's ``reghdfe`` do: absorbed effects
    nested in the clusters cost no degrees of freedom of the cluster-robust variance.
    With ``small_sample="dummies"`` ``k`` counts every coefficient of the dummy-variable
    model (``k = N + K``), exactly ``sandwich::vcovCL`` on that ``glm``/``lm``; with few
    periods per unit this inflates the variance by about ``T/(T-1)`` (2 for a pre/post
    panel), and intervals over-cover. Intervals and p-values use ``t(n - k)`` for ``gaussian`` (as
    ``lmtest::coeftest`` on ``lm``) and the normal for ``poisson``. With fewer than 20
    clusters, or fewer than 5 treated or comparison clusters, cluster-robust SEs are too
    small and a :class:`~evalkit.errors.StatisticalWarning` says so; with two
    communities and nothing finer, use :func:`its` with ``control=``.

    Parameters
    ----------
    data : DataFrame
        Long panel, one row per unit x period (repeated rows are allowed). Not modified.
    outcome : str
        Numeric outcome (counts for ``poisson``: ER visits per member-month cell).
    unit : str
        Unit id (member, small area, community); unit fixed effects.
    time : str
        Period (month number, date, or any sortable value); period fixed effects.
    treated : str
        0/1 or bool column marking treated units; must be constant within a unit.
    post : str, optional
        0/1 column marking periods after the intervention; must be constant within a
        period and, in time order, switch from 0 to 1 once (a single intervention date;
        staggered adoption is not supported). Give this or ``intervention_time``.
    covariates : list of str or str, optional
        Time-varying covariates (``["age", "comorbidity"]`` or ``"age + I(age**2)"``).
        Covariates constant within units are absorbed by the unit effects and rejected.
    family : {"gaussian", "poisson"}
    exposure : str, optional
        Member-months; ``log(exposure)`` is the offset (``poisson`` only).
    cluster : str, optional
        Cluster column for the robust variance (default: ``unit``).
    event_study : bool
        Also fit the event-study model and the pre-trend test.
    reference_period : optional
        A pre-intervention value of ``time`` used as the event-study reference (default:
        the last pre-intervention period).
    alpha : float
        1 - confidence level.
    intervention_time : optional
        First post-intervention value of ``time``; ``post = time >= intervention_time``.

    Returns
    -------
    DiDResult
        ``table``, ``effect()``, ``event_study``, ``pretrend``, ``summary()``; ``extra``
        holds counts (units, periods, clusters), ``k``, the small-sample factor and, for
        ``poisson``, the deviance and Newton iterations.

    Raises
    ------
    DataValidationError
        Missing columns, non-binary ``treated``/``post``, ``treated`` varying within a
        unit, ``post`` varying within a period or not switching once, no pre- or
        post-intervention periods, no treated or no comparison units, an empty
        treated/comparison x pre/post cell, a constant outcome, a cell without events
        (``poisson``), terms absorbed by the fixed effects.
    ParamsError
        Unknown family, both or neither of ``post``/``intervention_time``, ``exposure``
        with ``gaussian``, a reference period that is not a pre-intervention period,
        fewer than 2 clusters.
    ConvergenceError
        The Poisson fit did not converge.

    Examples
    --------
    >>> res = did(panel, "er_visits", unit="area", time="month", treated="healthwise",
    ...           intervention_time=25, family="poisson", exposure="member_months")
    >>> res.effect().table  # rate ratio, e.g. 0.82 -> percent_change -18   # doctest: +SKIP
    >>> res.pretrend["p_value"]                                            # doctest: +SKIP
    >>> event_study_plot(res)                                              # doctest: +SKIP

    References
    ----------
    Angrist & Pischke (2009), ch. 5; Wooldridge (1999) for Poisson fixed effects;
    Cameron & Miller (2015) for cluster-robust inference; Zeileis, Koell & Graham (2020),
    "Various versatile variances", *JSS* 95(1) (``vcovCL``).
    """
    what = f"did({family})"
    check_family(family, "did")
    alpha = check_alpha(alpha, what)
    frame, dropped, cov_rhs, cluster_col = _did_frame(
        data, outcome, unit, time, treated, post, covariates, family, exposure, cluster,
        intervention_time, what)
    y, offset = _did_outcome(frame, outcome, family, exposure, what)
    p = _did_structure(frame, unit, time, treated, post, intervention_time, what)
    _check_cells(y, p, outcome, family, what)
    c_codes, G = _clusters(frame[cluster_col], p["tr"], cluster_col, what)
    Z, znames = _covariate_matrix(cov_rhs, frame, what)

    n, N, T = len(y), p["N"], p["T"]
    d = PanelData(y, offset, p["u_codes"], N, c_codes, G)
    # period dummies for periods 1..T-1 (period 0 is the reference of the period effects)
    period_block = (p["t_codes"] - 1, T - 1)
    period_names = [f"factor({time}){_fmt(v)}" for v in p["t_uniques"][1:]]
    did_term = f"{treated}:{p['post_name']}"
    D = (p["tr"] * p["post_row"]).astype(bool)
    X = IndicatorDesign(n, [period_block, (np.where(D, 0, -1), 1)], Z)
    names = period_names + [did_term] + znames
    fit = fe_fit(d, X, names, family, what)
    K = X.K
    k = N + K
    if n - k <= 0:
        raise DataValidationError(f"{what}: {n} rows for {k} coefficients (incl. {N} unit "
                                  "effects); no residual degrees of freedom.")
    if small_sample not in ("nested", "dummies"):
        raise ParamsError(f"{what}: small_sample must be 'nested' or 'dummies', got {small_sample!r}")
    units_nested = bool(np.all(pd.Series(c_codes).groupby(p["u_codes"]).nunique() == 1))
    k_adj = K if (small_sample == "nested" and units_nested) else k
    adj = G / (G - 1) * (n - 1) / (n - k_adj)
    V = _cluster_vcov(fit, adj)
    se = np.sqrt(np.clip(np.diag(V), 0, None))
    tdf = n - k if family == "gaussian" else None
    sel = slice(T - 1, K)
    table = wald_table(names[sel], fit["beta"][sel], se[sel], alpha, df=tdf)
    effect = _did_effect(table.iloc[0], family, alpha, tdf)

    ref_idx = _reference_index(p, reference_period, time, what)
    es_table = None
    if not event_study:
        pretrend = _pretrend_not_run("event_study=False: the event-study model was not fitted.")
    else:
        es_table, pretrend = _event_study(d, p, y, Z, znames, period_block, period_names,
                                          ref_idx, k_adj == K, treated, time, family, alpha,
                                          what)

    extra = {
        "n_units": N, "n_treated_units": int(p["unit_treated"].sum()), "n_periods": T,
        "n_pre_periods": p["n_pre"], "n_post_periods": T - p["n_pre"], "n_clusters": G,
        "cluster": cluster_col, "time_column": time, "k": k, "df_residual": n - k,
        "small_sample_factor": adj,
        "reference_period": _fmt(p["t_uniques"][ref_idx]),
        "first_post_period": _fmt(p["t_uniques"][p["n_pre"]]),
    }
    if family == "poisson":
        extra.update(deviance=fit["deviance"], iterations=fit["iterations"],
                     rate_ratio=float(effect["estimate"].iloc[0]),
                     percent_change=float(effect["percent_change"].iloc[0]))
        if exposure:
            extra["exposure"] = exposure
    else:
        extra["rss"] = fit["rss"]
    method, formula = _did_description(outcome, unit, time, did_term, znames, exposure,
                                       family, cluster_col)
    result_effect = EffectResult(
        table=effect, treatment=did_term, nobs=n, method=method, vcov=f"cluster({cluster_col})",
        alpha=alpha, estimand="ATT", extra={"family": family})
    return DiDResult(table=table, method=method, formula=formula, nobs=n,
                     dropped=dropped, loglik=float(fit["loglik"]), alpha=alpha, extra=extra,
                     model={"vcov": V[sel, sel], "terms": names[sel]},
                     event_study=es_table, pretrend=pretrend, family=family,
                     _effect=result_effect)


# --------------------------------------------------------------------------- steps
def _did_frame(data, outcome, unit, time, treated, post, covariates, family, exposure,
               cluster, intervention_time, what):
    """Check the arguments; the complete rows of the columns used (and rows dropped)."""
    for arg, val in (("outcome", outcome), ("unit", unit), ("time", time), ("treated", treated)):
        check_name(val, arg, what)
    check_name(post, "post", what, optional=True)
    check_name(exposure, "exposure", what, optional=True)
    check_name(cluster, "cluster", what, optional=True)
    if (post is None) == (intervention_time is None):
        raise ParamsError(f"{what}: give either post (a 0/1 column) or intervention_time "
                          "(the first post-intervention value of time), not both or neither.")
    if exposure is not None and family != "poisson":
        raise ParamsError(f"{what}: exposure (log offset) needs family='poisson'; for a linear "
                          "DiD on rates compute the rate column and use it as the outcome.")
    cov_rhs = covariate_rhs(covariates, what)
    cluster_col = cluster if cluster is not None else unit
    cols = [outcome, unit, time, treated] + [c for c in (post, exposure, cluster) if c]
    frame, dropped = prepare_frame(data, [cov_rhs] if cov_rhs else [],
                                   list(dict.fromkeys(cols)), what)
    if exposure is not None:
        frame, dropped = drop_bad_exposure(frame, exposure, dropped, what, stacklevel=5)
    return frame, dropped, cov_rhs, cluster_col


def _did_outcome(frame, outcome, family, exposure, what):
    """Outcome and log-exposure offset; refuses negative counts and a constant outcome."""
    y = numeric_outcome(frame, outcome, what)
    if family == "poisson" and (y < 0).any():
        raise DataValidationError(f"{what}: outcome {outcome!r} has negative values; a Poisson "
                                  "model needs counts (or non-negative amounts).")
    offset = np.log(frame[exposure].to_numpy(dtype=float)) if exposure else np.zeros(len(y))
    level = y / np.exp(offset) if family == "poisson" else y
    if np.ptp(level) == 0:
        raise DataValidationError(
            f"{what}: outcome {outcome!r} is constant ({level[0]:g}"
            f"{' per unit of exposure' if exposure else ''}) in all {len(y)} rows used; "
            "there is no change to analyse.")
    return y, offset


def _did_structure(frame, unit, time, treated, post, intervention_time, what) -> dict:
    """Units, periods, treated units and post periods, checked for a single intervention
    date: ``u_codes, N, t_codes, t_uniques, T, tr, unit_treated, post_row, post_name,
    period_post, n_pre``."""
    u_codes, u_uniques = pd.factorize(frame[unit], sort=False)
    try:
        t_codes, t_uniques = pd.factorize(frame[time], sort=True)
    except TypeError:
        raise DataValidationError(f"{what}: time column {time!r} cannot be sorted; use month "
                                  "numbers or dates.") from None
    N, T = len(u_uniques), len(t_uniques)
    tr = binary_column(frame[treated], treated, what)
    n_per_unit = np.bincount(u_codes, minlength=N)
    tr_sum = np.bincount(u_codes, weights=tr, minlength=N)
    varying = (tr_sum > 0) & (tr_sum < n_per_unit)
    if varying.any():
        ex = list(u_uniques[np.flatnonzero(varying)[:5]])
        raise DataValidationError(
            f"{what}: {treated!r} must be constant within each {unit!r} (it marks treated "
            f"units, not treated periods); it varies for {int(varying.sum())} units, e.g. "
            f"{ex}. Give the period switch as post= or intervention_time=.")
    unit_treated = tr_sum > 0
    if not unit_treated.any() or unit_treated.all():
        which = "treated" if not unit_treated.any() else "comparison"
        raise DataValidationError(
            f"{what}: there are no {which} units ({treated!r} is "
            f"{0 if which == 'treated' else 1} for all {N} units); DiD needs both groups.")
    post_row, post_name = _post_rows(frame, time, post, intervention_time, what)
    period_post, n_pre = _post_periods(t_codes, t_uniques, post_row, post_name, what)
    return {"u_codes": u_codes, "N": N, "t_codes": t_codes, "t_uniques": t_uniques, "T": T,
            "tr": tr, "unit_treated": unit_treated, "post_row": post_row,
            "post_name": post_name, "period_post": period_post, "n_pre": n_pre}


def _post_rows(frame, time, post, intervention_time, what):
    """The 0/1 post indicator of each row and its name."""
    if intervention_time is None:
        return binary_column(frame[post], post, what), post
    tcol = frame[time]
    it_value = intervention_time
    if pd.api.types.is_datetime64_any_dtype(tcol):
        it_value = pd.Timestamp(intervention_time)
    try:
        return (tcol >= it_value).to_numpy(dtype=int), "post"
    except TypeError:
        raise ParamsError(f"{what}: intervention_time {intervention_time!r} cannot be "
                          f"compared with the values of {time!r} ({tcol.dtype}).") from None


def _post_periods(t_codes, t_uniques, post_row, post_name, what):
    """Post indicator per period (the same for every row of a period, switching 0 -> 1
    once) and the number of pre-intervention periods (at least one of each kind)."""
    T = len(t_uniques)
    n_per_t = np.bincount(t_codes, minlength=T)
    post_sum = np.bincount(t_codes, weights=post_row, minlength=T)
    mixed = (post_sum > 0) & (post_sum < n_per_t)
    if mixed.any():
        raise DataValidationError(
            f"{what}: {post_name!r} must be the same for every row of a period (one "
            f"intervention date); it differs within period(s) {list(t_uniques[mixed][:5])}. "
            "Staggered adoption is not supported by this estimator.")
    period_post = (post_sum > 0).astype(int)
    if np.any(np.diff(period_post) < 0):
        raise DataValidationError(
            f"{what}: {post_name!r} switches back from 1 to 0 in time order; it must mark "
            "all periods from the intervention on.")
    n_pre = int((period_post == 0).sum())
    if n_pre == 0:
        raise DataValidationError(
            f"{what}: no pre-intervention periods (every period has {post_name} = 1); "
            "DiD needs data before the intervention.")
    if n_pre == T:
        raise DataValidationError(
            f"{what}: no post-intervention periods (every period has {post_name} = 0); "
            "nothing after the intervention to compare.")
    return period_post, n_pre


def _check_cells(y, p, outcome, family, what) -> None:
    """Each arm x pre/post cell has rows (and, for ``poisson``, events; so has each period)."""
    tr, post_row = p["tr"], p["post_row"]
    for g_lab, g in (("treated", 1), ("comparison", 0)):
        for p_lab, pp in (("pre", 0), ("post", 1)):
            m = (tr == g) & (post_row == pp)
            if not m.any():
                raise DataValidationError(
                    f"{what}: no rows for {g_lab} units in the {p_lab}-intervention periods; "
                    "the treated x post effect is not identified.")
            if family == "poisson" and not (y[m] > 0).any():
                raise DataValidationError(
                    f"{what}: no events ({outcome} > 0) among {g_lab} units in the "
                    f"{p_lab}-intervention periods; the rate ratio is 0 or infinite. Check "
                    "the data or pool periods.")
    if family == "poisson":
        ev_t = np.bincount(p["t_codes"], weights=y, minlength=p["T"])
        if (ev_t == 0).any():
            raise DataValidationError(
                f"{what}: no events in period(s) {list(p['t_uniques'][ev_t == 0][:5])}; their "
                "period effects are minus infinity. Drop or pool those periods.")


def _clusters(column: pd.Series, tr, cluster_col: str, what: str):
    """Cluster codes and count, warning when there are too few clusters (overall or per arm)."""
    c_codes, c_uniques = pd.factorize(column, sort=False)
    G = len(c_uniques)
    if G < 2:
        raise ParamsError(f"{what}: cluster-robust SEs need at least 2 clusters in "
                          f"{cluster_col!r}; found {G}.")
    c_tr = np.bincount(c_codes, weights=tr, minlength=G)
    c_n = np.bincount(c_codes, minlength=G)
    nested = np.all((c_tr == 0) | (c_tr == c_n))
    g_treat = int((c_tr > 0).sum()) if nested else None
    g_comp = G - g_treat if nested else None
    if G < _FEW_CLUSTERS or (nested and min(g_treat, g_comp) < _FEW_ARM_CLUSTERS):
        arms = f" ({g_treat} treated, {g_comp} comparison)" if nested else ""
        warnings.warn(
            f"{what}: only {G} clusters{arms} in {cluster_col!r}; cluster-robust standard "
            "errors are too small with few clusters (Cameron & Miller 2015). Read the "
            "intervals as optimistic, use finer units, or use its() with a comparison series.",
            StatisticalWarning, stacklevel=4)
    return c_codes, G


def _covariate_matrix(cov_rhs, frame, what):
    """Dense covariate columns (no intercept) and their R names."""
    if not cov_rhs:
        return None, []
    _, Zfull, zn, _ = build_matrix(cov_rhs, frame, what)
    keep = [j for j, nm in enumerate(zn) if nm != "(Intercept)"]
    return Zfull[:, keep], [zn[j] for j in keep]


def _cluster_vcov(fit: dict, adj: float) -> np.ndarray:
    """``adj * B M B`` from a fixed-effects fit's bread and cluster-summed scores."""
    return adj * sandwich(fit["cluster_scores"], fit["bread"], "HC0", adjust=False)


def _reference_index(p, reference_period, time, what) -> int:
    """Index of the event-study reference period (default: the last pre-period)."""
    if reference_period is None:
        return p["n_pre"] - 1
    t_uniques = p["t_uniques"]
    hits = np.flatnonzero(t_uniques == reference_period) if len(t_uniques) else []
    if len(hits) == 0:
        raise ParamsError(f"{what}: reference_period {reference_period!r} is not a value "
                          f"of {time!r}.")
    ref_idx = int(hits[0])
    if p["period_post"][ref_idx]:
        raise ParamsError(f"{what}: reference_period {reference_period!r} is after the "
                          "intervention; choose a pre-intervention period.")
    return ref_idx


def _event_study(d, p, y, Z, znames, period_block, period_names, ref_idx, nested_k,
                 treated, time, family, alpha, what):
    """The event-study fit: its table and the joint pre-trend test."""
    T, n, N, t_codes, tr = p["T"], len(y), p["N"], p["t_codes"], p["tr"]
    t_uniques, period_post, n_pre, G = p["t_uniques"], p["period_post"], p["n_pre"], d.G
    ev_periods = [s for s in range(T) if s != ref_idx]
    col_of = np.full(T, -1)
    col_of[ev_periods] = np.arange(T - 1)
    ev_block = (np.where(tr == 1, col_of[t_codes], -1), T - 1)
    ev_names = [f"{treated}:factor({time}){_fmt(t_uniques[s])}" for s in ev_periods]
    if family == "poisson":
        ev_y = np.bincount(t_codes[tr == 1], weights=y[tr == 1], minlength=T)
        empty = [s for s in ev_periods if ev_y[s] == 0]
        if empty:
            raise DataValidationError(
                f"{what}: no events among treated units in period(s) "
                f"{[_fmt(t_uniques[s]) for s in empty][:5]}; their event-study "
                "coefficients are minus infinity. Pool periods or set event_study=False.")
    Xe = IndicatorDesign(n, [period_block, ev_block], Z)
    enames = period_names + ev_names + znames
    efit = fe_fit(d, Xe, enames, family, what + " event study")
    k_e = N + Xe.K
    if n - k_e <= 0:
        raise DataValidationError(f"{what}: {n} rows for the {k_e} coefficients of the "
                                  "event-study model; set event_study=False.")
    adj_e = G / (G - 1) * (n - 1) / (n - (Xe.K if nested_k else k_e))
    Ve_full = _cluster_vcov(efit, adj_e)
    idx = np.arange(T - 1, 2 * (T - 1))
    ge = efit["beta"][idx]
    Ve = Ve_full[np.ix_(idx, idx)]
    es_table = _event_table(t_uniques, ev_periods, ref_idx, ge, Ve, period_post, n_pre,
                            ev_names, treated, time, alpha,
                            n - k_e if family == "gaussian" else None, family)
    lead_pos = [j for j, s in enumerate(ev_periods) if not period_post[s]]
    if len(lead_pos) == 0:
        reason = (f"only {n_pre} pre-intervention period (the reference); the pre-trend "
                  "test needs at least 2 pre-intervention periods.")
        warnings.warn(f"{what}: pre-trend test not run: {reason} Parallel trends cannot be "
                      "checked from these data.", StatisticalWarning, stacklevel=4)
        return es_table, _pretrend_not_run(reason)
    gq = ge[lead_pos]
    Vq = Ve[np.ix_(lead_pos, lead_pos)]
    W = float(gq @ linalg.solve(Vq, gq, assume_a="sym"))
    q = len(lead_pos)
    return es_table, {
        "run": True, "test": "joint Wald chi-square, cluster-robust (pre-period "
        "event-study coefficients = 0)", "statistic": W, "df": q,
        "p_value": float(stats.chi2.sf(W, q)), "f_statistic": W / q,
        "f_df": (q, G - 1), "f_p_value": float(stats.f.sf(W / q, q, G - 1)),
        "reason": None,
    }


def _did_description(outcome, unit, time, did_term, znames, exposure, family, cluster_col):
    """The method sentence and the dummy-variable formula of the fit."""
    vc = f"cluster-robust by {cluster_col} (vcovCL HC1: G/(G-1)*(n-1)/(n-k))"
    if family == "gaussian":
        method = ("difference-in-differences: linear two-way fixed effects (unit effects "
                  f"absorbed by within transformation, period dummies); {vc}")
    else:
        method = ("difference-in-differences: Poisson GLM, log link"
                  + (f", offset log({exposure})" if exposure else "")
                  + ", unit and period fixed effects (unit effects concentrated out, "
                  f"identical to the dummy-variable GLM); {vc}")
    rhs = f"{did_term} + factor({unit}) + factor({time})"
    if znames:
        rhs += " + " + " + ".join(znames)
    if exposure:
        rhs += f" + offset(log({exposure}))"
    return method, f"{outcome} ~ {rhs}"


def _pretrend_not_run(reason: str) -> dict:
    return {"run": False, "test": None, "statistic": np.nan, "df": 0, "p_value": np.nan,
            "f_statistic": np.nan, "f_df": None, "f_p_value": np.nan, "reason": reason}


def _did_effect(row, family, alpha, tdf) -> pd.DataFrame:
    q = wald_quantile(alpha, tdf)
    b, se, p = float(row["estimate"]), float(row["std_error"]), float(row["p_value"])
    if family == "gaussian":
        return effect_table([("difference", b, se, b - q * se, b + q * se, p)])
    rr = np.exp(b)
    lo, hi = np.exp(b - q * se), np.exp(b + q * se)
    out = effect_table([("rate_ratio", rr, rr * se, lo, hi, p)])
    out["percent_change"] = 100 * (rr - 1)
    out["percent_ci_low"] = 100 * (lo - 1)
    out["percent_ci_high"] = 100 * (hi - 1)
    return out


def _event_table(t_uniques, ev_periods, ref_idx, ge, Ve, period_post, n_pre, ev_names,
                 treated, time, alpha, tdf, family):
    T = len(t_uniques)
    est = np.zeros(T)
    se = np.full(T, np.nan)
    est[ev_periods] = ge
    se[ev_periods] = np.sqrt(np.clip(np.diag(Ve), 0, None))
    terms = [""] * T
    for s, nm in zip(ev_periods, ev_names):
        terms[s] = nm
    terms[ref_idx] = f"{treated}:factor({time}){_fmt(t_uniques[ref_idx])} (reference)"
    tab = wald_table(terms, est, np.where(np.isnan(se), 1.0, se), alpha, df=tdf)
    ref = np.arange(T) == ref_idx
    for c in ("std_error", "ci_low", "ci_high", "p_value"):
        tab.loc[ref, c] = np.nan
    tab.loc[ref, ["ci_low", "ci_high"]] = 0.0
    tab.insert(0, "event_time", np.arange(T) - n_pre)
    tab.insert(0, "period", list(t_uniques))
    tab["post"] = period_post.astype(bool)
    tab["reference"] = ref
    if family == "poisson":
        tab["rate_ratio"] = np.exp(tab["estimate"])
        tab["rr_ci_low"] = np.exp(tab["ci_low"])
        tab["rr_ci_high"] = np.exp(tab["ci_high"])
    return tab


def event_study_plot(result: DiDResult, ax=None):
    """Event-study coefficients with confidence intervals, by period.

    Pre-intervention points should hover around the null (0, or a rate ratio of 1 for
    ``poisson``); the reference period is drawn hollow at the null; a dashed line marks
    the intervention. Returns the matplotlib ``ax``.
    """

    es = getattr(result, "event_study", None)
    if es is None:
        raise ParamsError("event_study_plot: the result has no event study; fit with "
                          "did(..., event_study=True).")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.8))
    periods = es["period"]
    dated = pd.api.types.is_datetime64_any_dtype(periods)
    numeric = pd.api.types.is_numeric_dtype(periods) or dated
    x = periods.to_numpy() if numeric else es["event_time"].to_numpy()
    ratio = result.family == "poisson"
    if ratio:
        yv, lo, hi, null = es["rate_ratio"], es["rr_ci_low"], es["rr_ci_high"], 1.0
        ylabel = "rate ratio vs reference period"
    else:
        yv, lo, hi, null = es["estimate"], es["ci_low"], es["ci_high"], 0.0
        ylabel = "difference vs reference period"
    yv, lo, hi = (np.asarray(v, dtype=float) for v in (yv, lo, hi))
    ref = es["reference"].to_numpy()
    post = es["post"].to_numpy()
    ax.axhline(null, color="0.5", lw=0.8)
    for mask, color, label in ((~post & ~ref, "#762a83", "before"), (post, "#1b7837", "after")):
        ax.errorbar(x[mask], yv[mask], yerr=np.vstack([yv[mask] - lo[mask], hi[mask] - yv[mask]]),
                    fmt="o", color=color, capsize=2, ms=4, label=label)
    ax.plot(x[ref], yv[ref], "o", mfc="white", color="0.3", ms=5, label="reference")
    first_post = int(np.argmax(post))
    if not numeric:
        xline = -0.5                                    # x is event time
    elif first_post == 0:
        xline = x[0]
    elif dated:
        before, after = periods.iloc[first_post - 1], periods.iloc[first_post]
        xline = before + (after - before) / 2
    else:
        xline = (float(x[first_post - 1]) + float(x[first_post])) / 2
    ax.axvline(xline, color="0.3", ls="--", lw=0.8)
    if ratio:
        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
    ax.set_ylabel(ylabel)
    ax.set_xlabel(result.extra.get("time_column", "period") if numeric
                  else "periods since the intervention")
    ax.legend(frameon=False, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return ax
