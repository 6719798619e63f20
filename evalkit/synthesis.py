"""Summary-data synthesis: effect sizes, inverse-variance meta-analysis and proportions.

Checked against R (``metafor::escalc`` / ``metafor::rma``, ``prop.test``, ``binom.test``);
see ``tests/test_synthesis.py`` and ``tests/reference/r/meta_bcg.R``, ``r/proportions.R``.

What comes from a library and what is written here
---------------------------------------------------
* Pooling (FE, DL, REML): written here. ``statsmodels.stats.meta_analysis.combine_effects``
  agrees with ``rma`` for FE and for DL when Q > k - 1, but it does not truncate the
  DerSimonian-Laird tau^2 at 0 (with Q < k - 1 it returns a negative tau^2 and NaN
  standard errors), and it has no REML. The Fisher-scoring REML below is metafor's
  algorithm, iterated to a tight tolerance. (The tests cross-check FE/DL against
  combine_effects.)
* I^2, H^2 and SE(tau^2): written here, with metafor's definitions (statsmodels reports
  I^2 = (Q - df)/Q, which equals metafor's only for DL).
* Effect sizes: log RR, log OR and RD formulas from
  ``statsmodels.stats.meta_analysis.effectsize_2proportions`` after metafor's zero-cell
  adjustment (done here so that all of metafor's ``to`` options are available). MD, SMD
  IRR and ROM are written here: statsmodels has no MD, IRR or ROM helper, and its SMD uses an
  approximate bias correction and a different variance than ``escalc``.
* Proportion CIs: ``statsmodels.stats.proportion.proportion_confint`` (Wilson,
  Clopper-Pearson, Jeffreys, Wald); the continuity-corrected Wilson interval of
  ``prop.test`` is written here (statsmodels has none). Newcombe's interval for a
  difference: ``confint_proportions_2indep(method="newcomb")``; tests from scipy.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import special, stats
from statsmodels.stats.meta_analysis import effectsize_2proportions
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint

from evalkit.errors import (
    ConvergenceError,
    DataDroppedWarning,
    DataValidationError,
    ParamsError,
    StatisticalWarning,
)
from evalkit.models.base import EffectResult, TermTable, effect_table
from evalkit.models.effects import check_alpha

__all__ = [
    "MetaAnalysisResult",
    "ProportionComparison",
    "meta_analysis",
    "forest_plot",
    "effect_size",
    "proportion_ci",
    "compare_proportions",
]


_check_alpha = check_alpha   # the one alpha check (evalkit.models.effects)


def _vector(values, name: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise DataValidationError(f"{name} must be numeric.") from exc
    return np.atleast_1d(arr)


# --------------------------------------------------------------------------------------
# meta-analysis
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetaAnalysisResult(TermTable):
    """Pooled estimate of an inverse-variance meta-analysis, as ``metafor::rma``.

    Attributes
    ----------
    method : str
        ``"FE"``, ``"DL"`` or ``"REML"``.
    estimate, std_error, ci_low, ci_high, z_value, p_value : float
        Pooled effect (on the scale of ``yi``) with its Wald (normal) interval and test.
    tau2 : float
        Between-study variance (0 for FE).
    tau2_se : float or None
        SE of tau^2 as metafor reports it (DL: its approximation; REML: from the Fisher
        information); None for FE.
    i2 : float
        I^2 in percent, ``100 * tau2 / (tau2 + s2)`` with metafor's typical within-study
        variance ``s2 = (k-1) sum(w) / ((sum w)^2 - sum(w^2))``, ``w = 1/vi``; for FE
        ``100 * max(0, (Q - df) / Q)``.
    h2 : float
        ``(tau2 + s2) / s2`` (FE: ``Q / df``).
    q, q_df, q_p : float, int, float
        Cochran's Q (fixed-effect weights), its df (k - 1) and chi-square p-value.
    k : int
        Number of studies.
    studies : DataFrame
        ``label, yi, vi, std_error, ci_low, ci_high, weight`` (weight in percent of the
        model's total inverse-variance weight, as ``weights(rma)``).
    """

    method: str
    estimate: float
    std_error: float
    ci_low: float
    ci_high: float
    z_value: float
    p_value: float
    tau2: float
    tau2_se: float | None
    i2: float
    h2: float
    q: float
    q_df: int
    q_p: float
    k: int
    alpha: float = 0.05
    studies: pd.DataFrame = field(default=None, repr=False, compare=False)
    dropped: dict = field(default_factory=dict)
    iterations: int | None = None

    @property
    def table(self) -> pd.DataFrame:
        """The pooled estimate keyed by term (``pooled``), on the scale of ``yi``."""
        return effect_table([("pooled", self.estimate, self.std_error, self.ci_low,
                              self.ci_high, self.p_value)])

    def effect(self, scale: str = "difference", exponentiate: bool = False) -> EffectResult:
        """The pooled effect keyed by its scale.

        With ``exponentiate`` (``yi`` are log ratios) the estimate and interval are
        exponentiated and ``std_error`` is the ratio's delta-method SE (``ratio * se``),
        e.g. ``res.effect("rate_ratio", exponentiate=True)``.
        """
        est, se, lo, hi = self.estimate, self.std_error, self.ci_low, self.ci_high
        if exponentiate:
            est, lo, hi = np.exp(est), np.exp(lo), np.exp(hi)
            se = est * se
        return EffectResult(
            table=effect_table([(scale, float(est), float(se), float(lo), float(hi),
                                 self.p_value)]),
            treatment="pooled over studies", nobs=self.k,
            method=f"inverse-variance meta-analysis ({self.method})", alpha=self.alpha,
            estimand="pooled effect", extra={"tau2": self.tau2, "i2": self.i2})

    def to_frame(self) -> pd.DataFrame:
        """One-row summary table."""
        keys = ["method", "estimate", "std_error", "ci_low", "ci_high", "z_value", "p_value",
                "tau2", "tau2_se", "i2", "h2", "q", "q_df", "q_p", "k"]
        return pd.DataFrame([{k: getattr(self, k) for k in keys}])

    def plot(self, ax=None, **kwargs):
        """Forest plot; see :func:`forest_plot`."""
        return forest_plot(self, ax=ax, **kwargs)


def _reml_tau2(yi: np.ndarray, vi: np.ndarray, tol: float, maxiter: int) -> tuple[float, int]:
    """REML estimate of tau^2 for the intercept-only model by Fisher scoring (metafor's rule).

    Start at the Hedges (HE) estimate; step ``(y'PPy - tr P) / tr(PP)`` with
    ``P = W - w w'/sum(w)``, ``W = diag(1/(vi + tau2))``; halve steps that would cross 0.
    """
    k = yi.size
    tau2 = max(0.0, (np.sum((yi - yi.mean()) ** 2) - np.sum(vi) * (k - 1) / k) / (k - 1))
    for it in range(1, maxiter + 1):
        w = 1 / (vi + tau2)
        sw = w.sum()
        mu = np.sum(w * yi) / sw
        py = w * (yi - mu)                       # P y
        tr_p = sw - np.sum(w ** 2) / sw
        tr_pp = np.sum(w ** 2) - 2 * np.sum(w ** 3) / sw + np.sum(w ** 2) ** 2 / sw ** 2
        step = (py @ py - tr_p) / tr_pp
        while tau2 + step < 0:
            step /= 2
        new = tau2 + step
        if abs(new - tau2) < tol:
            if new <= 10 * tol and _reml_slope(yi, vi, 0.0) <= 0:
                new = 0.0       # crept down to the boundary: the maximum is at tau2 = 0
            return new, it
        tau2 = new
    raise ConvergenceError(f"meta_analysis: REML Fisher scoring did not converge in {maxiter} "
                           "iterations; try method='DL' or check for extreme vi values.")


def _reml_slope(yi, vi, tau2):
    """Derivative of the restricted log-likelihood in tau2 (times 2): y'PPy - tr(P)."""
    w = 1 / (vi + tau2)
    sw = w.sum()
    py = w * (yi - np.sum(w * yi) / sw)
    return py @ py - (sw - np.sum(w ** 2) / sw)


def _reml_loglik(yi, vi, tau2):
    w = 1 / (vi + tau2)
    mu = np.sum(w * yi) / w.sum()
    return -0.5 * (np.sum(np.log(vi + tau2)) + np.log(w.sum()) + np.sum(w * (yi - mu) ** 2))


def meta_analysis(yi, vi, method: str = "REML", alpha: float = 0.05, labels=None, *,
                  tol: float = 1e-12, maxiter: int = 1000) -> MetaAnalysisResult:
    """Fixed-effect or random-effects inverse-variance meta-analysis (``metafor::rma``).

    Each study i contributes an estimate ``yi`` with known sampling variance ``vi``. The
    random-effects model is ``yi = mu + u_i + e_i`` with ``u_i ~ N(0, tau2)``,
    ``e_i ~ N(0, vi)``; the pooled estimate is ``sum(w yi) / sum(w)`` with
    ``w = 1/(vi + tau2)`` and SE ``1/sqrt(sum w)``, and the interval is Wald (normal).
    The fixed-effect ("FE", metafor's "equal effects") model sets tau2 = 0.

    Parameters
    ----------
    yi, vi : array_like
        Study effect sizes and sampling variances (e.g. from :func:`effect_size`).
    method : {"REML", "DL", "FE"}
        How tau2 is estimated. "REML" (metafor's default): restricted maximum likelihood.
        "DL": DerSimonian-Laird moment estimator ``max(0, (Q - (k-1)) / (sum w -
        sum w^2 / sum w))``. "FE": no between-study variance.
    alpha : float
        1 - confidence level.
    labels : sequence, optional
        Study names for ``studies`` and the forest plot.
    tol, maxiter : float, int
        REML convergence threshold on the change in tau2 (metafor's ``threshold``;
        the default is much tighter than metafor's 1e-5) and iteration limit.

    Returns
    -------
    MetaAnalysisResult

    Raises
    ------
    DataValidationError
        Lengths differ, fewer than 2 studies, or a non-positive variance.
    ConvergenceError
        REML did not converge.

    Warns
    -----
    DataDroppedWarning
        Studies with a missing ``yi`` or ``vi`` were left out (count in ``dropped``).

    Examples
    --------
    >>> es = effect_size("RR", ai=bcg.tpos, bi=bcg.tneg, ci=bcg.cpos, di=bcg.cneg)
    >>> res = meta_analysis(es.yi, es.vi, method="DL")
    >>> round(res.estimate, 4), round(res.tau2, 4)           # doctest: +SKIP
    (-0.7141, 0.3088)
    >>> forest_plot(res, transform=np.exp)                      # doctest: +SKIP

    References
    ----------
    DerSimonian R, Laird N (1986). Controlled Clinical Trials 7:177-188. Higgins JPT,
    Thompson SG (2002). Quantifying heterogeneity in a meta-analysis. Stat Med
    21:1539-1558. Viechtbauer W (2005). J Educ Behav Stat 30:261-293; (2010) metafor,
    J Stat Softw 36(3).
    """
    alpha = _check_alpha(alpha)
    method = str(method).upper()
    if method not in ("REML", "DL", "FE"):
        raise ParamsError(f"method must be 'REML', 'DL' or 'FE' (got {method!r}).")
    y = _vector(yi, "yi")
    v = _vector(vi, "vi")
    if y.shape != v.shape or y.ndim != 1:
        raise DataValidationError(f"yi and vi must be 1-d and of the same length "
                                  f"(got {y.shape} and {v.shape}).")
    lab = np.arange(1, y.size + 1).astype(str) if labels is None else np.asarray(labels, dtype=object)
    if lab.shape != y.shape:
        raise DataValidationError("labels must have one entry per study.")
    missing = np.isnan(y) | np.isnan(v)
    dropped: dict = {}
    if missing.any():
        dropped["missing_values"] = int(missing.sum())
        warnings.warn(f"meta_analysis: {int(missing.sum())} of {y.size} studies have a missing "
                      "yi or vi and were left out.", DataDroppedWarning, stacklevel=2)
        y, v, lab = y[~missing], v[~missing], lab[~missing]
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(v))):
        raise DataValidationError("meta_analysis: yi and vi must be finite.")
    if (v <= 0).any():
        raise DataValidationError(
            f"meta_analysis: {int((v <= 0).sum())} sampling variance(s) are <= 0; inverse-"
            "variance weights need vi > 0 (check the zero-cell correction in effect_size).")
    k = y.size
    if k < 2:
        raise DataValidationError(f"meta_analysis: need at least 2 studies (got {k}).")

    w_fe = 1 / v
    sw = w_fe.sum()
    s2 = (k - 1) * sw / (sw ** 2 - np.sum(w_fe ** 2))   # metafor's typical within-study variance
    mu_fe = np.sum(w_fe * y) / sw
    q = float(np.sum(w_fe * (y - mu_fe) ** 2))        # Cochran's Q
    iterations = None
    if method == "FE":
        tau2 = 0.0
    elif method == "DL":
        tau2 = max(0.0, (q - (k - 1)) / (sw - np.sum(w_fe ** 2) / sw))
    else:
        tau2, iterations = _reml_tau2(y, v, tol, maxiter)
        if tau2 > 0 and _reml_loglik(y, v, 0.0) > _reml_loglik(y, v, tau2):
            tau2 = 0.0                                   # metafor's check for a boundary maximum
    w = 1 / (v + tau2)
    est = float(np.sum(w * y) / w.sum())
    se = float(1 / np.sqrt(w.sum()))
    q_df = k - 1
    if method == "FE":
        i2 = 100 * max(0.0, (q - q_df) / q) if q > 0 else 0.0
        h2 = q / q_df
        tau2_se = None
    else:
        i2 = 100 * tau2 / (tau2 + s2)
        h2 = (tau2 + s2) / s2
        if method == "DL":
            tr_p = sw - np.sum(w_fe ** 2) / sw
            sum_pp = np.sum(w_fe ** 2) - 2 * np.sum(w_fe ** 3) / sw + np.sum(w_fe ** 2) ** 2 / sw ** 2
            tau2_se = float(np.sqrt(2 * q_df + 4 * tau2 * tr_p + 2 * tau2 ** 2 * sum_pp) / tr_p)
        else:
            w = 1 / (v + tau2)
            s = w.sum()
            sum_pp = np.sum(w ** 2) - 2 * np.sum(w ** 3) / s + np.sum(w ** 2) ** 2 / s ** 2
            tau2_se = float(np.sqrt(2 / sum_pp))
    zcrit = stats.norm.ppf(1 - alpha / 2)
    zval = est / se
    weights = 1 / (v + tau2)
    studies = pd.DataFrame({
        "label": lab, "yi": y, "vi": v, "std_error": np.sqrt(v),
        "ci_low": y - zcrit * np.sqrt(v), "ci_high": y + zcrit * np.sqrt(v),
        "weight": 100 * weights / weights.sum(),
    })
    return MetaAnalysisResult(
        method=method, estimate=est, std_error=se, ci_low=est - zcrit * se,
        ci_high=est + zcrit * se, z_value=zval, p_value=float(2 * stats.norm.sf(abs(zval))),
        tau2=tau2, tau2_se=tau2_se, i2=float(i2), h2=float(h2), q=q, q_df=q_df,
        q_p=float(stats.chi2.sf(q, q_df)), k=k, alpha=alpha, studies=studies, dropped=dropped,
        iterations=iterations)


def forest_plot(result: MetaAnalysisResult, ax=None, transform=None, xlabel: str | None = None,
                null_value: float | None = None):
    """Forest plot: each study's estimate and CI (square sized by weight) and the pooled diamond.

    Parameters
    ----------
    result : MetaAnalysisResult
    ax : matplotlib Axes, optional
    transform : callable, optional
        Applied to estimates and limits before plotting, e.g. ``np.exp`` to show risk
        ratios from log risk ratios (the x axis is then logarithmic).
    xlabel : str, optional
    null_value : float, optional
        Where to draw the line of no effect (default 0, or 1 when ``transform`` is given).

    Returns
    -------
    matplotlib Axes
    """

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 0.35 * result.k + 1.5))
    f = transform if transform is not None else (lambda x: x)
    s = result.studies
    rows = np.arange(result.k, 0, -1) + 1.0
    ax.hlines(rows, f(s["ci_low"].to_numpy()), f(s["ci_high"].to_numpy()), color="black", lw=1)
    sizes = 20 + 180 * s["weight"].to_numpy() / s["weight"].max()
    ax.scatter(f(s["yi"].to_numpy()), rows, s=sizes, marker="s", color="black", zorder=3)
    lo, est, hi = f(np.array([result.ci_low, result.estimate, result.ci_high]))
    ax.fill([lo, est, hi, est], [0.5, 0.8, 0.5, 0.2], color="black")
    null = null_value if null_value is not None else (1.0 if transform is not None else 0.0)
    ax.axvline(null, color="grey", ls="--", lw=0.8)
    if transform is not None:
        ax.set_xscale("log")
    ax.set_yticks(list(rows) + [0.5])
    ax.set_yticklabels([str(x) for x in s["label"]] + [f"{result.method} model"])
    ax.set_ylim(-0.2, rows.max() + 0.8)
    ax.set_xlabel(xlabel or ("effect" if transform is None else "effect (transformed)"))
    return ax


# --------------------------------------------------------------------------------------
# effect sizes
# --------------------------------------------------------------------------------------
def _adjust_zero(cells: list[np.ndarray], add: float, to: str) -> list[np.ndarray]:
    """metafor's add/to rule: add ``add`` to every cell of (some) studies with a zero cell."""
    if to == "none" or add == 0:
        return cells
    if to == "all":
        return [c + add for c in cells]
    zero = np.zeros(cells[0].shape, bool)
    for c in cells:
        zero |= c == 0
    if to == "only0":
        return [c + add * zero for c in cells]
    if to == "if0all":
        return [c + add for c in cells] if zero.any() else cells
    raise ParamsError(f"to must be 'only0', 'all', 'if0all' or 'none' (got {to!r}).")


def _cmi(m: np.ndarray) -> np.ndarray:
    """Exact small-sample correction of Hedges' g: Gamma(m/2) / (sqrt(m/2) Gamma((m-1)/2))."""
    return np.exp(special.gammaln(m / 2) - 0.5 * np.log(m / 2) - special.gammaln((m - 1) / 2))


def effect_size(measure: str, *, ai=None, bi=None, ci=None, di=None, n1i=None, n2i=None,
                m1i=None, m2i=None, sd1i=None, sd2i=None, x1i=None, x2i=None, t1i=None,
                t2i=None, add: float = 0.5, to: str = "only0") -> pd.DataFrame:
    """Study-level effect sizes and sampling variances from summary data (``metafor::escalc``).

    Argument names follow ``escalc``. Group 1 is the treated/exposed group.

    Measures
    --------
    ``"RR"`` log risk ratio ``log(p1/p2)``, ``vi = 1/ai - 1/n1 + 1/ci - 1/n2``.
    ``"OR"`` log odds ratio, ``vi = 1/ai + 1/bi + 1/ci + 1/di``.
    ``"RD"`` risk difference ``p1 - p2``, ``vi = p1(1-p1)/n1 + p2(1-p2)/n2``.
        (2x2 inputs: ``ai`` events / ``bi`` non-events in group 1, ``ci`` / ``di`` in
        group 2; ``n1i``/``n2i`` may replace ``bi``/``di``.) For all three, ``add`` (1/2)
        is added to every cell of studies with a zero cell (``to="only0"``; also
        ``"all"``, ``"if0all"``, ``"none"``), as escalc does.
    ``"MD"`` mean difference ``m1 - m2``, ``vi = sd1^2/n1 + sd2^2/n2`` (escalc's default
        heteroscedastic variance).
    ``"SMD"`` Hedges' g: ``J(m) (m1 - m2) / s_pooled`` with ``m = n1 + n2 - 2`` and the
        exact correction ``J(m) = Gamma(m/2) / (sqrt(m/2) Gamma((m-1)/2))``;
        ``vi = 1/n1 + 1/n2 + g^2 / (2 (n1 + n2))`` (escalc's "LS" variance).
    ``"IRR"`` log incidence rate ratio ``log((x1/t1)/(x2/t2))``, ``vi = 1/x1 + 1/x2``
        (events ``x1i``, ``x2i`` over person-time ``t1i``, ``t2i``); ``add`` goes to both
        event counts of studies with a zero count.
    ``"ROM"`` log ratio of means ``log(m1/m2)`` (means > 0), ``vi = sd1^2/(n1 m1^2) +
        sd2^2/(n2 m2^2)`` (delta method; escalc's "ROM", Hedges, Gurevitch & Curtis 1999).

    Returns
    -------
    DataFrame with columns ``yi`` and ``vi`` (one row per study); feed to
    :func:`meta_analysis`.

    Examples
    --------
    >>> es = effect_size("RR", ai=bcg.tpos, bi=bcg.tneg, ci=bcg.cpos, di=bcg.cneg)
    >>> es = effect_size("SMD", m1i=[5.1], sd1i=[2.0], n1i=[40], m2i=[4.3], sd2i=[2.2], n2i=[38])

    References
    ----------
    Hedges LV (1981). J Educ Stat 6:107-128. Borenstein M et al. (2009). Introduction to
    Meta-Analysis, ch. 4-6. Viechtbauer W (2010). J Stat Softw 36(3). Hedges LV, Gurevitch
    J, Curtis PS (1999). The meta-analysis of response ratios in experimental ecology.
    Ecology 80:1150-1156.
    """
    measure = str(measure).upper()
    if not np.isfinite(add) or add < 0:
        raise ParamsError(f"add must be a non-negative number (got {add!r}).")

    def need(**kw):
        missing = [k for k, val in kw.items() if val is None]
        if missing:
            raise ParamsError(f"effect_size('{measure}') needs {missing}.")
        arrays = [_vector(val, k) for k, val in kw.items()]
        try:
            arrays = np.broadcast_arrays(*arrays)
        except ValueError as exc:
            raise DataValidationError(f"effect_size('{measure}'): inputs differ in length.") from exc
        return [a.astype(float) for a in arrays]

    if measure in ("RR", "OR", "RD"):
        if bi is None and n1i is not None and ai is not None:
            bi = np.asarray(n1i, float) - np.asarray(ai, float)
        if di is None and n2i is not None and ci is not None:
            di = np.asarray(n2i, float) - np.asarray(ci, float)
        a, b, c, d = need(ai=ai, bi=bi, ci=ci, di=di)
        if (np.stack([a, b, c, d]) < 0).any():
            raise DataValidationError(f"effect_size('{measure}'): counts must be >= 0 (events "
                                      "cannot exceed group sizes).")
        a, b, c, d = _adjust_zero([a, b, c, d], add, to)
        stat = {"RR": "risk-ratio", "OR": "odds-ratio", "RD": "diff"}[measure]
        with np.errstate(divide="ignore", invalid="ignore"):
            yi, vi = effectsize_2proportions(a, a + b, c, c + d, statistic=stat)
    elif measure == "MD":
        m1, s1, n1, m2, s2, n2 = need(m1i=m1i, sd1i=sd1i, n1i=n1i, m2i=m2i, sd2i=sd2i, n2i=n2i)
        _check_sd_n(s1, s2, n1, n2, measure)
        yi = m1 - m2
        vi = s1 ** 2 / n1 + s2 ** 2 / n2
    elif measure == "SMD":
        m1, s1, n1, m2, s2, n2 = need(m1i=m1i, sd1i=sd1i, n1i=n1i, m2i=m2i, sd2i=sd2i, n2i=n2i)
        _check_sd_n(s1, s2, n1, n2, measure)
        m = n1 + n2 - 2
        sp = np.sqrt(((n1 - 1) * s1 ** 2 + (n2 - 1) * s2 ** 2) / m)
        yi = _cmi(m) * (m1 - m2) / sp
        vi = 1 / n1 + 1 / n2 + yi ** 2 / (2 * (n1 + n2))
    elif measure == "ROM":
        m1, s1, n1, m2, s2, n2 = need(m1i=m1i, sd1i=sd1i, n1i=n1i, m2i=m2i, sd2i=sd2i, n2i=n2i)
        _check_sd_n(s1, s2, n1, n2, measure)
        if (np.stack([m1, m2]) <= 0).any():
            raise DataValidationError("effect_size('ROM'): a ratio of means needs means > 0.")
        yi = np.log(m1 / m2)
        vi = s1 ** 2 / (n1 * m1 ** 2) + s2 ** 2 / (n2 * m2 ** 2)
    elif measure == "IRR":
        x1, t1, x2, t2 = need(x1i=x1i, t1i=t1i, x2i=x2i, t2i=t2i)
        if (np.stack([x1, x2]) < 0).any() or (np.stack([t1, t2]) <= 0).any():
            raise DataValidationError("effect_size('IRR'): event counts must be >= 0 and "
                                      "person-time > 0.")
        x1, x2 = _adjust_zero([x1, x2], add, to)
        with np.errstate(divide="ignore"):
            yi = np.log(x1 / t1) - np.log(x2 / t2)
            vi = 1 / x1 + 1 / x2
    else:
        raise ParamsError(f"measure must be one of RR, OR, RD, MD, SMD, IRR, ROM "
                          f"(got {measure!r}).")
    yi = np.asarray(yi, float)
    vi = np.asarray(vi, float)
    if not (np.all(np.isfinite(yi)) and np.all(np.isfinite(vi))):
        warnings.warn(f"effect_size('{measure}'): some studies give a non-finite effect or "
                      "variance (zero cells with add=0, or all/no events); they will be "
                      "rejected by meta_analysis.", StatisticalWarning, stacklevel=2)
    return pd.DataFrame({"yi": yi, "vi": vi})


def _check_sd_n(s1, s2, n1, n2, measure):
    if (np.stack([s1, s2]) < 0).any() or (np.stack([n1, n2]) < 2).any():
        raise DataValidationError(f"effect_size('{measure}'): SDs must be >= 0 and group "
                                  "sizes >= 2.")


# --------------------------------------------------------------------------------------
# proportions
# --------------------------------------------------------------------------------------
_PROP_METHODS = {"wilson": "wilson", "clopper_pearson": "beta", "jeffreys": "jeffreys",
                 "wald": "normal", "agresti_coull": "agresti_coull"}


def _counts(x, n, where: str) -> tuple[np.ndarray, np.ndarray]:
    xa = _vector(x, "x")
    na = _vector(n, "n")
    try:
        xa, na = np.broadcast_arrays(xa, na)
    except ValueError as exc:
        raise DataValidationError(f"{where}: x and n differ in length.") from exc
    if not (np.all(np.isfinite(xa)) and np.all(np.isfinite(na))):
        raise DataValidationError(f"{where}: x and n must be finite (no missing values).")
    if (na <= 0).any() or (xa < 0).any() or (xa > na).any():
        raise DataValidationError(f"{where}: need 0 <= x <= n and n > 0.")
    if (xa != np.round(xa)).any() or (na != np.round(na)).any():
        raise DataValidationError(f"{where}: x and n must be whole numbers (counts).")
    return xa.astype(float), na.astype(float)


def _wilson_cc(x: np.ndarray, n: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Continuity-corrected score interval exactly as R's prop.test(x, n) (default p = 0.5).

    R shrinks the correction to |x - n/2| when that is below 1/2, and clips at 0 and 1.
    """
    z = stats.norm.ppf(1 - alpha / 2)
    p = x / n
    yates = np.minimum(0.5, np.abs(x - n * 0.5))
    z22n = z ** 2 / (2 * n)
    pc = p + yates / n
    with np.errstate(invalid="ignore"):
        upper = np.where(pc >= 1, 1.0, (pc + z22n + z * np.sqrt(pc * (1 - pc) / n + z22n / (2 * n)))
                         / (1 + 2 * z22n))
        pc = p - yates / n
        lower = np.where(pc <= 0, 0.0, (pc + z22n - z * np.sqrt(pc * (1 - pc) / n + z22n / (2 * n)))
                         / (1 + 2 * z22n))
    return lower, upper


def proportion_ci(x, n, method: str = "wilson", alpha: float = 0.05) -> pd.DataFrame:
    """Confidence interval for a binomial proportion x/n (vectorised over x and n).

    Methods
    -------
    ``"wilson"`` score interval, ``= prop.test(x, n, correct = FALSE)$conf.int``; good
        default coverage.
    ``"wilson_cc"`` with continuity correction, ``= prop.test(x, n)$conf.int``.
    ``"clopper_pearson"`` exact, ``= binom.test(x, n)$conf.int``
        (Beta(alpha/2; x, n-x+1), Beta(1-alpha/2; x+1, n-x)); conservative.
    ``"jeffreys"`` Beta(x + 1/2, n - x + 1/2) quantiles (no boundary modification).
    ``"wald"`` ``p +/- z sqrt(p(1-p)/n)``, clipped to [0, 1]; poor for small n or p near
        0/1, given for comparison only.
    ``"agresti_coull"`` also available.

    Returns
    -------
    DataFrame with ``x, n, proportion, ci_low, ci_high``.

    Examples
    --------
    >>> proportion_ci([44, 57], [74, 63], method="clopper_pearson")      # doctest: +SKIP

    References
    ----------
    Wilson EB (1927). JASA 22:209-212. Clopper CJ, Pearson ES (1934). Biometrika 26:404-413.
    Newcombe RG (1998). Two-sided confidence intervals for the single proportion. Stat Med
    17:857-872. Brown LD, Cai TT, DasGupta A (2001). Stat Sci 16:101-133.
    """
    alpha = _check_alpha(alpha)
    xa, na = _counts(x, n, "proportion_ci")
    if method == "wilson_cc":
        low, high = _wilson_cc(xa, na, alpha)
    elif method in _PROP_METHODS:
        low, high = proportion_confint(xa, na, alpha=alpha, method=_PROP_METHODS[method])
    else:
        raise ParamsError(f"method must be one of {sorted([*_PROP_METHODS, 'wilson_cc'])} "
                          f"(got {method!r}).")
    return pd.DataFrame({"x": xa.astype(int), "n": na.astype(int), "proportion": xa / na,
                         "ci_low": np.asarray(low, float), "ci_high": np.asarray(high, float)})


@dataclass(frozen=True)
class ProportionComparison(TermTable):
    """Two independent proportions compared (group 1 minus group 2).

    Attributes
    ----------
    p1, p2 : float
    risk_difference, ci_low, ci_high : float
        ``p1 - p2`` with Newcombe's hybrid (Wilson) score interval (his method 10).
    chi2, chi2_p_value : float
        Pearson chi-square test of the 2x2 table (Yates-corrected if ``correct``).
    fisher_p_value : float
        Two-sided Fisher exact test.
    min_expected : float
        Smallest expected cell count; below 5 prefer the Fisher p-value.
    correct : bool
    alpha : float
    n1, n2 : int
        Group sizes.
    """

    p1: float
    p2: float
    risk_difference: float
    ci_low: float
    ci_high: float
    chi2: float
    chi2_p_value: float
    fisher_p_value: float
    min_expected: float
    correct: bool = False
    alpha: float = 0.05
    n1: int = 0
    n2: int = 0

    @property
    def table(self) -> pd.DataFrame:
        """``risk_difference`` keyed by term, with its Newcombe interval and the
        chi-square p-value (``std_error`` is NaN: the interval is not a Wald interval)."""
        return effect_table([("risk_difference", self.risk_difference, np.nan, self.ci_low,
                              self.ci_high, self.chi2_p_value)])

    def effect(self) -> EffectResult:
        """The risk difference (group 1 minus group 2) as an
        :class:`~evalkit.models.base.EffectResult`."""
        return EffectResult(table=self.table, treatment="group 1 vs group 2", nobs=self.n1 + self.n2,
                            method="Newcombe hybrid score interval; Pearson chi-square test",
                            alpha=self.alpha, estimand="risk difference",
                            extra={"p1": self.p1, "p2": self.p2,
                                   "fisher_p_value": self.fisher_p_value})


def compare_proportions(x1, n1, x2, n2, alpha: float = 0.05,
                        correct: bool = False) -> ProportionComparison:
    """Risk difference of two independent proportions with a Newcombe CI and tests.

    The interval is Newcombe's method 10: with Wilson limits (l1, u1) for p1 and (l2, u2)
    for p2, ``RD - sqrt((p1-l1)^2 + (u2-p2)^2)`` to ``RD + sqrt((u1-p1)^2 + (p2-l2)^2)``;
    unlike the Wald interval it stays inside [-1, 1] and behaves near 0 and 1. The tests
    are Pearson's chi-square (``chisq.test(tab, correct = correct)``; R's ``prop.test``
    default is ``correct = TRUE``) and Fisher's exact test (``fisher.test``).

    Parameters
    ----------
    x1, n1, x2, n2 : int
        Events and group sizes. Pass counts, not percentages: e.g. a survey reporting
        87% vs 42% with problems needs the two group sizes to give an interval.
    alpha : float
    correct : bool
        Yates continuity correction in the chi-square test.

    Returns
    -------
    ProportionComparison

    Warns
    -----
    StatisticalWarning
        An expected count is below 5: use ``fisher_p_value``.

    Examples
    --------
    >>> compare_proportions(56, 70, 48, 80)         # Newcombe (1998), example (a)  # doctest: +SKIP
    ProportionComparison(p1=0.8, p2=0.6, risk_difference=0.2, ci_low=0.0524..., ci_high=0.3338...)

    References
    ----------
    Newcombe RG (1998). Interval estimation for the difference between independent
    proportions: comparison of eleven methods. Stat Med 17:873-890.
    """
    alpha = _check_alpha(alpha)
    xs, ns = _counts([x1, x2], [n1, n2], "compare_proportions")
    if xs.size != 2:
        raise DataValidationError("compare_proportions: give one count and size per group.")
    a, c = xs
    na_, nc = ns
    p1, p2 = a / na_, c / nc
    low, high = confint_proportions_2indep(a, na_, c, nc, method="newcomb", compare="diff",
                                           alpha=alpha)
    table = np.array([[a, na_ - a], [c, nc - c]])
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    if (table.sum(0) == 0).any():
        chi2, chi2_p = float("nan"), float("nan")
    else:
        chi2, chi2_p, _, _ = stats.chi2_contingency(table, correction=correct)
    fisher_p = stats.fisher_exact(table.astype(int)).pvalue
    min_expected = float(expected.min())
    if min_expected < 5:
        warnings.warn(f"compare_proportions: smallest expected count is {min_expected:.2f} (< 5); "
                      "the chi-square p-value is unreliable, use fisher_p_value.",
                      StatisticalWarning, stacklevel=2)
    return ProportionComparison(
        p1=float(p1), p2=float(p2), risk_difference=float(p1 - p2), ci_low=float(low),
        ci_high=float(high), chi2=float(chi2), chi2_p_value=float(chi2_p),
        fisher_p_value=float(fisher_p), min_expected=min_expected, correct=bool(correct),
        alpha=alpha, n1=int(na_), n2=int(nc))
