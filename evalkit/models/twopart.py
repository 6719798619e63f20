"""Two-part models for health-care costs, and the modified Park test.

Costs are zero for many members and skewed when positive. The two-part model splits
``E[cost | x]`` into the probability of any cost and the mean cost among those with any:

    E[y | x] = P(y > 0 | x) * E[y | y > 0, x]

Part 1 (``any``) is a logistic (or probit) regression of ``y > 0`` on all members; part 2
(``positive``) a GLM with log link on members with ``y > 0`` (gamma by default). As in R,
``glm(any ~ ..., binomial)`` and ``glm(y ~ ..., Gamma(link = "log"), subset = y > 0)``.
:func:`park_test` helps choose part 2's variance family.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.genmod import families

from evalkit.errors import DataValidationError, ParamsError
from evalkit.limits import release_fits
from evalkit.models.base import ModelResult, wald_table
from evalkit.models.effects import (
    EffectResult, build_matrix, check_alpha, check_fitted_probabilities, check_full_rank,
    check_no_empty_cells, fit_glm, one_blas_thread, parse_vcov, prepare_frame, recycled_effect,
    sandwich, sandwich_adjustment, vcov_label,
)

__all__ = ["two_part", "TwoPartResult", "park_test", "ParkTestResult"]

_FIRST = {"logit": families.links.Logit, "probit": families.links.Probit}
_SECOND = {
    "gamma": families.Gamma,
    "poisson": families.Poisson,            # quasi-Poisson: Pearson dispersion
    "inverse_gaussian": families.InverseGaussian,
}
_PARK_FAMILIES = {0: "gaussian", 1: "poisson", 2: "gamma", 3: "inverse_gaussian"}


def part_family(part: str):
    """The statsmodels family :func:`two_part` fits a part with: ``"logit"`` or
    ``"probit"`` (binomial, first part), ``"gamma"``, ``"poisson"`` or
    ``"inverse_gaussian"`` (log link, positive part)."""
    if part in _FIRST:
        return families.Binomial(link=_FIRST[part]())
    return _SECOND[part](link=families.links.Log())


def _score_factor(family, y, mu):
    """Per-row quasi-score factor ``(y - mu) / V(mu) * dmu/deta`` (dispersion 1)."""
    return (y - mu) / family.variance(mu) / family.link.deriv(mu)


def _positive_loglik(second, y, mu, deviance):
    """R's ``logLik`` of the positive part: ML dispersion ``deviance / n`` plugged in."""
    n = len(y)
    disp = deviance / n
    if second == "gamma":
        shape = 1.0 / disp
        return float(np.sum(stats.gamma.logpdf(y, a=shape, scale=mu * disp)))
    if second == "inverse_gaussian":
        return float(-0.5 * n * (np.log(2 * np.pi * disp) + 1) - 1.5 * np.sum(np.log(y)))
    return None                                   # quasi-Poisson has no likelihood


# =========================================================================== result
@dataclass(frozen=True)
class TwoPartResult(ModelResult):
    """A fitted two-part model; ``table`` has ``part`` = ``any`` / ``positive``."""

    @one_blas_thread
    def effect(self, treatment: str = "treated", alpha: float = 0.05) -> EffectResult:
        """Average treatment effect on mean cost per member, by recycled predictions.

        ``E[y|x] = P(y>0|x) * exp(x'b)`` is predicted for every member with ``treatment``
        set to 1, then to 0, and averaged over all members used in the fit:
        ``cost_difference = mean(E1) - mean(E0)`` (dollars per member over the outcome
        period) and ``ratio = mean(E1) / mean(E0)``. Delta-method SEs use both parts'
        covariance (block-diagonal for ``vcov="model"``; a joint sandwich of the stacked
        scores otherwise). Matches R's recycled-prediction ATE in
        ``tests/reference/r/twopart_synth.R``.

        Parameters
        ----------
        treatment : str
            A 0/1 (or True/False) column of the formula.
        alpha : float

        Returns
        -------
        EffectResult
            Rows ``cost_difference`` and ``ratio``.
        """
        alpha = check_alpha(alpha, "effect")
        fit: _TwoPartFit = self.model
        return recycled_effect(
            fit.mean_and_gradient, fit.frame, treatment, fit.vcov, alpha,
            "cost_difference", "ratio", method=f"recycled predictions from {self.method}",
            vcov_label=fit.vcov_label, what="effect",
        )


@dataclass
class _TwoPartFit:
    frame: pd.DataFrame
    info: object
    fam1: object
    params1: np.ndarray
    params2: np.ndarray
    vcov: np.ndarray
    vcov_label: str

    def mean_and_gradient(self, frame, s):
        _, X, _, _ = build_matrix(self.info, frame)
        n = X.shape[0]
        eta1 = X @ self.params1
        p = self.fam1.link.inverse(eta1)
        dp = self.fam1.link.inverse_deriv(eta1)
        m = np.exp(X @ self.params2)
        e = p * m
        A = np.mean(s * e)
        grad = np.concatenate([X.T @ (s * dp * m) / n, X.T @ (s * e) / n])
        return A, grad


# =========================================================================== two_part
@one_blas_thread
def two_part(data: pd.DataFrame, formula: str, first: str = "logit", second: str = "gamma",
             vcov="model", alpha: float = 0.05) -> TwoPartResult:
    r"""Two-part model of a non-negative outcome (cost) with many zeros.

    Model
    -----
    .. math::

        P(y > 0 \mid x) = F(x'\alpha), \qquad
        E[y \mid y > 0, x] = \exp(x'\beta), \qquad
        E[y \mid x] = F(x'\alpha)\,\exp(x'\beta)

    Part 1 is a binary GLM on all rows (``F`` logistic or normal); part 2 a GLM with log
    link on rows with ``y > 0``. The likelihood factorises, so each part is fitted on its
    own (statsmodels GLM, IRLS to a relative deviance change of 1e-12).

    Parameters
    ----------
    data : DataFrame
        One row per member; not modified.
    formula : str
        ``"total_cost ~ treated + age + female + comorbidity + baseline_cost"``; both parts
        use the same right-hand side. Term names as R names them.
    first : {"logit", "probit"}
    second : {"gamma", "poisson", "inverse_gaussian"}
        Variance family of part 2 (``Var = phi mu^2``, ``phi mu`` quasi-Poisson,
        ``phi mu^3``); see :func:`park_test` to choose. The dispersion ``phi`` is R's
        Pearson estimate ``sum(((y - mu)/sqrt(V(mu)))^2) / (n_pos - k)``, and model SEs and
        p-values of part 2 use it with t(n_pos - k) reference distribution as
        ``summary.glm`` does.
    vcov : "model", "HC0", "HC1" or {"cluster": column}
        As in :func:`evalkit.models.count.count_model`, applied to each part (R's
        ``sandwich::vcovHC`` / ``vcovCL`` on each ``glm``).
    alpha : float

    Returns
    -------
    TwoPartResult
        ``table`` with ``part`` = ``any`` / ``positive``; ``loglik`` = sum of both parts'
        R ``logLik`` (``None`` for quasi-Poisson); ``extra`` holds ``dispersion``,
        ``n_positive``, ``loglik_any``, ``loglik_positive``. ``.effect(treatment)`` gives
        the cost difference per member and the ratio of means.

    Raises
    ------
    DataValidationError
        Negative or non-finite outcome, no zeros or no positive values, constant terms,
        a 0/1 covariate level where everybody (or nobody) has cost (separation).
    ConvergenceError
        IRLS did not converge.

    Warns
    -----
    StatisticalWarning
        Fitted probabilities of the first part numerically 0 or 1 (R's ``glm`` warns the
        same and keeps the fit; so does this, with ``extra["fitted_probabilities_0_or_1"]``).

    Examples
    --------
    >>> fit = two_part(members, "total_cost ~ treated + age + female + comorbidity")
    >>> fit.effect("treated").to_frame()        # doctest: +SKIP

    References
    ----------
    Duan, Manning, Morris & Newhouse (1983), "A comparison of alternative models for the
    demand for medical care", *J Bus Econ Stat* 1(2). Deb & Norton (2018), "Modeling
    health care expenditures and use", *Annu Rev Public Health* 39. Belotti, Deb, Manning
    & Norton (2015), "twopm: Two-part models", *Stata Journal* 15(1).
    """
    release_fits(len(data))   # earlier fits' arrays, before this one's
    what = "two_part"
    if first not in _FIRST:
        raise ParamsError(f"{what}: first must be one of {list(_FIRST)}, got {first!r}.")
    if second not in _SECOND:
        raise ParamsError(f"{what}: second must be one of {list(_SECOND)}, got {second!r}.")
    alpha = check_alpha(alpha, what)
    kind, cluster = parse_vcov(vcov, what)
    if not isinstance(formula, str) or "~" not in formula:
        raise ParamsError(f"{what}: formula must be a string like 'cost ~ x1 + x2', got {formula!r}.")

    frame, dropped = prepare_frame(data, [formula], [cluster] if cluster else [], what)
    outcome = formula.split("~", 1)[0].strip()
    y, X, names, info = build_matrix(formula, frame, what)
    bad = ~np.isfinite(y) | (y < 0)
    if bad.any():
        examples = pd.unique(y[bad])[:5].tolist()
        raise DataValidationError(
            f"{what}: outcome {outcome!r} must be finite and >= 0; {int(bad.sum())} rows are "
            f"not, e.g. {examples}. Net out refunds upstream or quarantine these rows.",
            failures=[{"table": "data", "column": outcome, "reason": "negative_or_infinite",
                       "count": int(bad.sum()), "examples": examples}],
        )
    pos = y > 0
    if pos.all() or not pos.any():
        state = "positive" if pos.all() else "zero"
        raise DataValidationError(
            f"{what}: every {outcome!r} is {state}; a two-part model needs both zeros and "
            "positive values. Fit a single GLM instead."
        )
    check_full_rank(X, names, what + " (any)")
    check_full_rank(X[pos], names, what + " (positive, rows with cost > 0)")
    check_no_empty_cells(X, names, pos, what, f"{outcome} > 0", f"{outcome} = 0")
    n, k = X.shape
    n_pos = int(pos.sum())

    fam1 = part_family(first)
    r1 = fit_glm(pos.astype(float), X, fam1, what=what + " (any)")
    p = r1.fittedvalues
    extreme = check_fitted_probabilities(p, f"{what} ({first} part)", stacklevel=4)
    fam2 = part_family(second)
    y2, X2 = y[pos], X[pos]
    r2 = fit_glm(y2, X2, fam2, what=what + " (positive)")
    mu2 = np.asarray(r2.fittedvalues)
    df2 = n_pos - k
    dispersion = float(np.sum((y2 - mu2) ** 2 / fam2.variance(mu2)) / df2)

    B1, B2 = r1.bread, r2.bread
    P = 2 * k
    V = np.zeros((P, P))
    if kind == "model":
        V[:k, :k] = B1
        V[k:, k:] = dispersion * B2
        t_df = df2
    else:
        s1 = X * _score_factor(fam1, pos.astype(float), p)[:, None]
        s2 = np.zeros((n, k))
        s2[pos] = X2 * _score_factor(fam2, y2, mu2)[:, None]
        groups = frame[cluster].to_numpy() if cluster else None
        # One sandwich of the stacked scores gives both parts' blocks and their
        # covariance (needed by effect()); each part then gets its own small-sample
        # factor, so the diagonal blocks equal R's vcovHC / vcovCL on each glm.
        bread = np.zeros((P, P))
        bread[:k, :k], bread[k:, k:] = B1, B2
        raw = sandwich(np.hstack([s1, s2]), bread, kind, groups, adjust=False)
        c1 = sandwich_adjustment(kind, n, k, groups)
        c2 = sandwich_adjustment(kind, n_pos, k, None if groups is None else groups[pos])
        V[:k, :k] = c1 * raw[:k, :k]
        V[k:, k:] = c2 * raw[k:, k:]
        V[:k, k:] = np.sqrt(c1 * c2) * raw[:k, k:]
        V[k:, :k] = V[:k, k:].T
        t_df = None
    se = np.sqrt(np.diag(V))
    table = pd.concat([
        wald_table(names, r1.params, se[:k], alpha, part="any"),
        wald_table(names, r2.params, se[k:], alpha, part="positive", df=t_df),
    ], ignore_index=True)

    ll1 = float(r1.llf)
    ll2 = _positive_loglik(second, y2, mu2, float(r2.deviance))
    extra = dict(first=first, second=second, dispersion=dispersion, n_positive=n_pos,
                 n_zero=n - n_pos, loglik_any=ll1, loglik_positive=ll2,
                 deviance_positive=float(r2.deviance), df_residual_positive=df2,
                 fitted_probabilities_0_or_1=extreme,
                 vcov=vcov_label(kind, cluster))
    fit = _TwoPartFit(frame=frame, info=info, fam1=fam1, params1=np.asarray(r1.params),
                      params2=np.asarray(r2.params), vcov=V, vcov_label=vcov_label(kind, cluster))
    method = f"two-part: {first} for any {outcome} + {second} GLM (log link) for {outcome} > 0"
    return TwoPartResult(table=table, method=method, formula=formula, nobs=n, dropped=dropped,
                         loglik=None if ll2 is None else ll1 + ll2, alpha=alpha, extra=extra,
                         model=fit)


# =========================================================================== Park test
@dataclass(frozen=True)
class ParkTestResult:
    """Outcome of the modified Park test.

    Attributes
    ----------
    coefficient, std_error, ci_low, ci_high : float
        ``lambda_1`` in ``Var(y|x) = exp(lambda_0) * mu(x)^lambda_1`` and its (robust) SE.
    p_values : dict
        Wald p-values of ``lambda_1 = 0, 1, 2, 3``.
    suggested_family : str
        Nearest of ``gaussian`` (0), ``poisson`` (1), ``gamma`` (2),
        ``inverse_gaussian`` (3).
    """

    coefficient: float
    std_error: float
    ci_low: float
    ci_high: float
    p_values: dict
    suggested_family: str
    nobs: int
    formula: str
    method: str
    alpha: float = 0.05
    extra: dict = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{"term": "log(mu)", "estimate": self.coefficient,
                              "std_error": self.std_error, "ci_low": self.ci_low,
                              "ci_high": self.ci_high, "suggested_family": self.suggested_family,
                              **{f"p_lambda_{k}": v for k, v in self.p_values.items()}}])

    def summary(self) -> str:
        ps = ", ".join(f"lambda={k}: p={v:.3g}" for k, v in self.p_values.items())
        return (f"modified Park test ({self.method}) on {self.nobs} rows: lambda_1 = "
                f"{self.coefficient:.4g} (SE {self.std_error:.3g}); {ps}; suggests "
                f"{self.suggested_family}")


@one_blas_thread
def park_test(data: pd.DataFrame, formula: str, family: str = "gamma", method: str = "glm",
              positive_only: bool = True, alpha: float = 0.05) -> ParkTestResult:
    r"""Modified Park test: how the variance of a cost grows with its mean.

    Fit a GLM with log link for ``formula`` (``family``, by default gamma), take the raw
    residuals ``r = y - mu`` and estimate

    .. math:: E[r^2 \mid x] = \exp(\lambda_0 + \lambda_1 \log \mu)

    ``lambda_1`` ~ 0 points to constant variance (Gaussian nonlinear least squares), ~1 to
    Poisson-like variance (quasi-Poisson), ~2 to gamma, ~3 to inverse Gaussian.

    Parameters
    ----------
    data : DataFrame
    formula : str
        The positive-part formula, e.g. ``"total_cost ~ treated + age + comorbidity"``.
    family : {"gamma", "poisson", "inverse_gaussian"}
        Family of the first GLM (its mean is consistent whatever the variance).
    method : {"glm", "ols"}
        ``glm`` (default; Manning & Mullahy 2001): a gamma GLM with log link of ``r^2`` on
        ``log(mu)``, with HC1 robust SE (as Stata's ``glm ..., robust``).
        ``ols``: the original Park regression of ``log(r^2)`` on ``log(mu)`` by least
        squares (HC1 SE); consistent only if the standardised residual's distribution
        does not depend on ``x``.
    positive_only : bool
        Use only rows with ``y > 0`` (the positive part of a two-part model).
    alpha : float

    Returns
    -------
    ParkTestResult

    References
    ----------
    Park (1966), "Estimation with heteroscedastic error terms", *Econometrica* 34(4).
    Manning & Mullahy (2001), "Estimating log models: to transform or not to transform?",
    *J Health Econ* 20(4).
    """
    what = "park_test"
    if family not in _SECOND:
        raise ParamsError(f"{what}: family must be one of {list(_SECOND)}, got {family!r}.")
    if method not in ("glm", "ols"):
        raise ParamsError(f"{what}: method must be 'glm' or 'ols', got {method!r}.")
    alpha = check_alpha(alpha, what)
    frame, dropped = prepare_frame(data, [formula], [], what)
    y, X, names, _ = build_matrix(formula, frame, what)
    if positive_only:
        keep = y > 0
        y, X = y[keep], X[keep]
    if np.any(y <= 0) or not np.all(np.isfinite(y)):
        raise DataValidationError(f"{what}: the outcome must be finite and > 0 in the rows used "
                                  "(use positive_only=True).")
    check_full_rank(X, names, what)
    fam = _SECOND[family](link=families.links.Log())
    r = fit_glm(y, X, fam, what=what)
    mu = np.asarray(r.fittedvalues)
    r2 = (y - mu) ** 2
    W = np.column_stack([np.ones_like(mu), np.log(mu)])
    n = len(y)
    if np.ptp(W[:, 1]) == 0:
        raise DataValidationError(f"{what}: the fitted means are all equal; add covariates.")
    if method == "glm":
        fam_p = families.Gamma(link=families.links.Log())
        if np.any(r2 == 0):
            raise DataValidationError(f"{what}: some residuals are exactly 0; use method='ols' "
                                      "or check for duplicated fitted values.")
        rp = fit_glm(r2, W, fam_p, what=what)
        lam = np.asarray(rp.params)
        m2 = np.asarray(rp.fittedvalues)
        bread = np.linalg.inv(W.T @ W)                  # gamma/log: Fisher weights are 1
        scores = W * ((r2 - m2) / m2)[:, None]
    else:
        with np.errstate(divide="ignore"):
            lr2 = np.log(r2)
        ok = np.isfinite(lr2)
        W, lr2 = W[ok], lr2[ok]
        lam = np.linalg.lstsq(W, lr2, rcond=None)[0]
        bread = np.linalg.inv(W.T @ W)
        scores = W * (lr2 - W @ lam)[:, None]
    V = sandwich(scores, bread, "HC1", n_coef=2)
    coef, se = float(lam[1]), float(np.sqrt(V[1, 1]))
    z = stats.norm.ppf(1 - alpha / 2)
    pvals = {k: float(2 * stats.norm.sf(abs(coef - k) / se)) for k in range(4)}
    suggestion = _PARK_FAMILIES[int(np.clip(np.rint(coef), 0, 3))]
    return ParkTestResult(coefficient=coef, std_error=se, ci_low=coef - z * se,
                          ci_high=coef + z * se, p_values=pvals, suggested_family=suggestion,
                          nobs=n, formula=formula, method=method, alpha=alpha,
                          extra={"lambda_0": float(lam[0]), "first_family": family,
                                 "dropped": dropped})

