"""Shared machinery of the count and cost models.

What :mod:`evalkit.models.count` and :mod:`evalkit.models.twopart` both need:

* model matrices from a data frame and a Wilkinson formula, with R's column names
  (``(Intercept)``, ``I(age^2)``, ``sexM``) and R's column order, after dropping
  incomplete rows with a :class:`~evalkit.errors.DataDroppedWarning`
  (:func:`prepare_frame`, :func:`build_matrix`), and checks that name the offending term
  (constant or collinear terms, separation);
* GLM fits converged to the optimum (:func:`fit_glm`: statsmodels' IRLS iteration, its
  steps solved from the normal equations, plus a few Fisher-scoring steps);
* sandwich (heteroskedasticity- and cluster-robust) variances scaled as R's ``sandwich``
  package scales them (:func:`sandwich`);
* average treatment effects by *recycled predictions* with delta-method standard errors,
  returned as an :class:`EffectResult` (:func:`recycled_effect`).
"""
from __future__ import annotations

import ast
import functools
import numbers
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import patsy
from scipy import linalg, stats
from statsmodels.genmod import families
from threadpoolctl import threadpool_limits

from evalkit.errors import (
    ConvergenceError, DataDroppedWarning, DataValidationError, ParamsError, StatisticalWarning,
)
from evalkit.models.base import EffectResult, effect_table
from evalkit.terms import FORMULA_FUNCTIONS, r_term_name

__all__ = [
    "EffectResult",
    "GLMFit",
    "fit_glm",
    "check_fitted_probabilities",
    "r_term_name",
    "formula_variables",
    "prepare_frame",
    "drop_bad_exposure",
    "build_matrix",
    "parse_vcov",
    "sandwich",
    "sandwich_adjustment",
    "recycled_effect",
]


# The namespace formulas are evaluated in (patsy adds its own builtins C, I, Q, ...).
_EVAL_ENV = patsy.EvalEnvironment([{
    "np": np, "numpy": np, "log": np.log, "log1p": np.log1p, "exp": np.exp,
    "sqrt": np.sqrt, "abs": np.abs,
}])


def one_blas_thread(func):
    """Run ``func`` with BLAS limited to one thread.

    Model fits are tall-skinny linear algebra (a million rows, a few columns), which
    multi-threaded OpenBLAS runs several times slower than one thread; parallelise across
    models or replicates instead.
    """
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with threadpool_limits(limits=1, user_api="blas"):
            return func(*args, **kwargs)
    return wrapper


# --------------------------------------------------------------------------- frames
def formula_variables(formula: str, columns) -> list[str]:
    """Columns of the data a formula (or a right-hand side) refers to, in order of first
    use: the one formula parser of the models, causal and survival code.

    Raises a ParamsError when the formula cannot be parsed or uses ``offset()``, and a
    DataValidationError naming the names that are neither columns nor formula functions.
    """
    if "offset(" in formula.replace(" ", ""):
        raise ParamsError(
            f"formula {formula!r} uses offset(); pass the exposure column instead, e.g. "
            "count_model(data, formula, exposure='member_months') (log offset)."
        )
    try:
        desc = patsy.ModelDesc.from_formula(formula)
    except patsy.PatsyError as exc:
        raise ParamsError(f"cannot parse formula {formula!r}: {exc}") from None
    columns = set(map(str, columns))
    used: list[str] = []
    unknown: list[str] = []
    for term in list(desc.lhs_termlist) + list(desc.rhs_termlist):
        for factor in term.factors:
            code = factor.name()
            try:
                tree = ast.parse(code, mode="eval")
            except SyntaxError:
                raise ParamsError(f"cannot parse the term {code!r} of formula {formula!r}") from None
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Name):
                    names = [node.id]
                elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                      and node.func.id == "Q" and node.args
                      and isinstance(node.args[0], ast.Constant)):
                    names = [str(node.args[0].value)]
                for nm in names:
                    if nm in columns:
                        if nm not in used:
                            used.append(nm)
                    elif nm not in FORMULA_FUNCTIONS and nm not in unknown:
                        unknown.append(nm)
    if unknown:
        raise DataValidationError(
            f"formula {formula!r} uses column(s) {unknown} that are not in the data "
            f"(available: {sorted(columns)}). Check the spelling or add the column.",
            failures=[{"table": "data", "column": nm, "reason": "missing_column",
                       "count": 0, "examples": []} for nm in unknown],
        )
    return used


def prepare_frame(data: pd.DataFrame, formulas, extra_columns=(), what: str = "model"):
    """Select the columns a model uses and set aside rows with missing values.

    Parameters
    ----------
    data : DataFrame
        Input; never modified.
    formulas : list of str
        Every formula of the model (their variables are collected).
    extra_columns : sequence of str
        Other columns the fit needs (exposure, cluster id).
    what : str
        Name of the model, used in messages.

    Returns
    -------
    frame : DataFrame
        The used columns of the complete rows (original index kept).
    dropped : dict
        ``{"missing values": k}`` when rows were left out, else empty.

    Raises
    ------
    DataValidationError
        A column is missing or no complete rows remain.
    """
    if not isinstance(data, pd.DataFrame):
        raise DataValidationError(f"{what}: data must be a pandas DataFrame, got {type(data).__name__}.")
    used: list[str] = []
    for f in formulas:
        for nm in formula_variables(f, data.columns):
            if nm not in used:
                used.append(nm)
    missing = [c for c in extra_columns if c not in data.columns]
    if missing:
        raise DataValidationError(
            f"{what}: column(s) {missing} not found in the data (available: "
            f"{sorted(map(str, data.columns))}).",
            failures=[{"table": "data", "column": c, "reason": "missing_column",
                       "count": 0, "examples": []} for c in missing],
        )
    for c in extra_columns:
        if c not in used:
            used.append(c)
    frame = data.loc[:, used]
    isna = frame.isna()
    bad = isna.any(axis=1).to_numpy()
    dropped: dict = {}
    if bad.any():
        per_column = {c: int(n) for c, n in isna.sum().items() if n}
        n_bad = int(bad.sum())
        dropped["missing values"] = n_bad
        warnings.warn(
            f"{what}: {n_bad} of {len(frame)} rows left out because of missing values "
            f"(per column: {per_column}); fill or drop them upstream to silence this.",
            DataDroppedWarning, stacklevel=4,
        )
        frame = frame.loc[~bad]
    if len(frame) == 0:
        raise DataValidationError(f"{what}: no complete rows left to fit the model.")
    return frame, dropped


def drop_bad_exposure(frame, exposure, dropped, what, stacklevel: int = 4):
    """Leave out rows without time at risk (exposure not positive), with a
    :class:`~evalkit.errors.DataDroppedWarning`; returns the frame and the updated ``dropped``."""
    e = frame[exposure]
    if not pd.api.types.is_numeric_dtype(e) or pd.api.types.is_bool_dtype(e):
        raise DataValidationError(f"{what}: exposure {exposure!r} must be numeric member-months.")
    v = e.to_numpy(dtype=float)
    bad = ~(v > 0) | ~np.isfinite(v)
    if bad.any():
        k = int(bad.sum())
        if k == len(frame):
            raise DataValidationError(f"{what}: exposure {exposure!r} is not positive in any row.")
        warnings.warn(f"{what}: {k} rows with exposure {exposure!r} <= 0 left out (no time at "
                      "risk).", DataDroppedWarning, stacklevel=stacklevel)
        dropped = {**dropped, "exposure <= 0": k}
        frame = frame.loc[~bad]
    return frame, dropped


@dataclass(frozen=True)
class MatrixSpec:
    """How to rebuild a model matrix on new rows: patsy's design plus R's column order."""

    info: patsy.DesignInfo
    order: np.ndarray


def _r_column_order(info: patsy.DesignInfo, formula: str) -> np.ndarray:
    """Column permutation from patsy's order to R's.

    patsy puts terms without numeric factors (categoricals) before numeric ones; R keeps
    the formula's order within each interaction degree (intercept, main effects, then
    two-way interactions, ...).
    """
    formula_terms = list(patsy.ModelDesc.from_formula(formula).rhs_termlist)
    position = {term: i for i, term in enumerate(formula_terms)}
    terms = list(info.terms)
    ranked = sorted(terms, key=lambda t: (len(t.factors), position.get(t, len(position))))
    order = []
    for term in ranked:
        sl = info.term_slices[term]
        order.extend(range(sl.start, sl.stop))
    return np.asarray(order, dtype=int)


def build_matrix(formula_or_spec, frame: pd.DataFrame, what: str = "model"):
    """Model matrix (and response) for ``frame``, columns in R's order with R's names.

    Parameters
    ----------
    formula_or_spec : str or MatrixSpec
        A formula (``"y ~ x1 + x2"`` or a right-hand side ``"~ x1 + x2"``) or the
        :class:`MatrixSpec` of an earlier call (to rebuild the matrix on new data, e.g.
        with the treatment set to 1 for everyone).
    frame : DataFrame

    Returns
    -------
    y : ndarray or None
    X : ndarray (float, C-contiguous)
    names : list of str  (R names)
    spec : MatrixSpec
    """
    if isinstance(formula_or_spec, MatrixSpec):
        (X,) = patsy.build_design_matrices([formula_or_spec.info], frame, NA_action="raise")
        X = np.asarray(X, dtype=float)[:, formula_or_spec.order]
        return None, np.ascontiguousarray(X), None, formula_or_spec
    formula = formula_or_spec
    try:
        if "~" in formula and formula.split("~", 1)[0].strip():
            y, X = patsy.dmatrices(formula, frame, eval_env=_EVAL_ENV, NA_action="raise")
            if y.shape[1] != 1:
                raise DataValidationError(
                    f"{what}: the outcome of {formula!r} must be one numeric column "
                    f"(got columns {y.design_info.column_names}); code it as 0/1 or a number."
                )
            y = np.asarray(y, dtype=float)[:, 0]
        else:
            y = None
            X = patsy.dmatrix(formula, frame, eval_env=_EVAL_ENV, NA_action="raise")
    except patsy.PatsyError as exc:
        raise DataValidationError(f"{what}: cannot build the model matrix of {formula!r}: {exc}") from None
    spec = MatrixSpec(X.design_info, _r_column_order(X.design_info, formula))
    names = [r_term_name(X.design_info.column_names[j]) for j in spec.order]
    return y, np.ascontiguousarray(np.asarray(X, dtype=float)[:, spec.order]), names, spec


def check_full_rank(X: np.ndarray, names, what: str) -> None:
    """Raise a clear error when a column is constant or a combination of others."""
    if X.shape[0] < X.shape[1]:
        raise DataValidationError(
            f"{what}: {X.shape[0]} rows for {X.shape[1]} coefficients; use more data or fewer terms."
        )
    # Pivoted QR on column-scaled X names the columns that add nothing (R would report NA).
    scale = np.sqrt((X * X).sum(axis=0))
    scale[scale == 0] = 1.0
    R, piv = linalg.qr(X / scale, mode="r", pivoting=True)     # Q is not needed
    d = np.abs(np.diag(R))
    tol = max(X.shape) * np.finfo(float).eps * (d[0] if d.size else 0.0) * 1e3
    rank = int((d > tol).sum())
    if rank < X.shape[1]:
        aliased = [names[j] for j in piv[rank:]]
        constant = [nm for nm, col in zip(names, X.T) if nm != "(Intercept)" and np.ptp(col) == 0]
        hint = (f" ({constant} constant in the rows used)" if constant else "")
        raise DataValidationError(
            f"{what}: term(s) {aliased} are constant or a linear combination of other terms"
            f"{hint}; R would report them as NA. Drop them from the formula."
        )


def binary_columns(X: np.ndarray, names):
    """Indices of non-intercept columns that only hold 0 and 1 (dummies, 0/1 covariates)."""
    out = []
    for j, nm in enumerate(names):
        if nm == "(Intercept)":
            continue
        col = X[:, j]
        if np.all((col == 0) | (col == 1)):
            out.append(j)
    return out


def check_no_empty_cells(X, names, event, what: str, event_label: str, non_event_label=None):
    """Each 0/1 column must have events (and, if asked, non-events) at both its levels.

    A 0/1 covariate (e.g. the treatment) whose rows at one level have no events makes the
    likelihood increase without bound as its coefficient goes to minus infinity
    (separation); the fit would stop at an arbitrary large value.
    """
    event = np.asarray(event, dtype=bool)
    for j in binary_columns(X, names):
        col = X[:, j] == 1
        for lev, mask in ((1, col), (0, ~col)):
            if not mask.any():
                continue
            if not event[mask].any():
                raise DataValidationError(
                    f"{what}: no {event_label} among the {int(mask.sum())} rows with "
                    f"{names[j]} = {lev}; its coefficient is not finite (separation). "
                    "Check the data (an arm with no events?), merge levels or drop the term."
                )
            if non_event_label and event[mask].all():
                raise DataValidationError(
                    f"{what}: every one of the {int(mask.sum())} rows with {names[j]} = {lev} "
                    f"has {event_label}, none {non_event_label}; its coefficient is not finite "
                    "(perfect separation). Merge levels or drop the term."
                )


# --------------------------------------------------------------------------- GLM fits
@dataclass(frozen=True)
class GLMFit:
    """A converged GLM: coefficients, means and the unscaled inverse Fisher information."""

    params: np.ndarray
    fittedvalues: np.ndarray
    bread: np.ndarray          # (X'WX)^-1 at the final means, dispersion not applied
    deviance: float
    llf: float                 # log-likelihood at dispersion 1 (Poisson, binomial, NB)
    iterations: int


def _irls(y, X, family, off, start, rtol: float, maxiter: int) -> tuple[np.ndarray, int, bool]:
    """statsmodels' IRLS (``GLM.fit(method="IRLS")``, unit weights), each weighted least
    squares step solved from its normal equations: coefficients, iterations, converged.

    The same iteration as statsmodels': the same starting means (``family.starting_mu``
    or ``start``), the same working response and weights, and the same stopping rule (the
    deviance, divided for families whose scale is estimated by the Pearson scale at the
    previous means, changed by at most ``rtol`` relative). statsmodels solves each step
    by an SVD of the weighted rows (``lstsq``) and ends with a pseudo-inverse of them,
    0.2 s and 0.8 s at a million rows by eight columns; the normal equations take 0.02 s,
    and the Fisher-scoring steps of :func:`fit_glm`, which already use them, fix the
    optimum. A step whose normal equations are not positive definite (collinear columns)
    is solved as statsmodels solves it. statsmodels has no option for this (its ``qr``
    and ``pinv`` methods decompose the weighted rows too), hence this loop.
    """
    n, p = X.shape
    fixed = isinstance(family, (families.Binomial, families.Poisson, families.NegativeBinomial))

    def scale(mu):          # statsmodels' Pearson estimate, 1 for families with none
        return 1.0 if fixed else np.sum((y - mu) ** 2 / family.variance(mu)) / (n - p)

    if start is None:
        mu = family.starting_mu(y)
        eta = family.predict(mu)
    else:
        eta = X @ start + off
        mu = family.fitted(eta)
    phi = scale(mu)
    dev = family.deviance(y, mu) / phi
    if np.isnan(dev):
        raise ValueError("the deviance at the starting values is not a number")
    for it in range(1, maxiter + 1):
        w = family.weights(mu)
        z = eta + family.link.deriv(mu) * (y - mu) - off
        if not (np.all(np.isfinite(w)) and np.all(np.isfinite(z))):
            raise ValueError("IRLS weights or working response are not finite")
        Xw = X * w[:, None]
        try:
            beta = linalg.cho_solve(linalg.cho_factor(Xw.T @ X, check_finite=False),
                                    Xw.T @ z, check_finite=False)
        except linalg.LinAlgError:
            sw = np.sqrt(w)
            beta = np.linalg.lstsq(X * sw[:, None], z * sw, rcond=-1)[0]
        eta = X @ beta + off
        mu = family.fitted(eta)
        # as statsmodels: the new deviance over the scale of the previous means
        dev, previous = family.deviance(y, mu) / phi, dev
        phi = scale(mu)
        if np.allclose(previous, dev, atol=0.0, rtol=rtol):
            return beta, it, True
    return beta, maxiter, False


def fit_glm(y, X, family, offset=None, start=None, what: str = "model",
            rtol: float = 1e-12, maxiter: int = 200) -> GLMFit:
    """Fit a GLM by IRLS (:func:`_irls`, statsmodels' iteration), then finish with
    Fisher-scoring steps.

    IRLS stops when the deviance changes by less than ``rtol`` (relative), as R's
    ``glm`` does. For non-canonical links (gamma/log, probit, NB2/log) Fisher
    scoring converges only linearly, so that rule can leave coefficients ~1e-7 (relative)
    short of the optimum; a few extra scoring steps, stopped when every step is below
    1e-10 standard errors, remove that. The returned ``bread`` is ``(X'WX)^-1`` at the
    final means (R's and statsmodels' reported covariances use the weights of the
    last-but-one iteration).
    """
    off = 0.0 if offset is None else offset
    failed = ConvergenceError(
        f"{what}: IRLS reached means or weights that are not finite (a linear predictor "
        "overflows). Rescale large covariates (dollars in thousands), merge sparse "
        "categories, or simplify the formula.")
    y = np.asarray(y, dtype=float)
    X = np.asarray(X, dtype=float)
    try:
        with np.errstate(all="ignore"):
            b, it, converged = _irls(y, X, family, off, start, rtol, maxiter)
    except (ValueError, FloatingPointError, ZeroDivisionError, np.linalg.LinAlgError):
        raise failed from None
    if not converged:
        raise ConvergenceError(
            f"{what}: IRLS did not converge in {maxiter} iterations. Rescale large "
            "covariates (dollars in thousands), merge sparse categories, or simplify the formula."
        )
    link, variance = family.link, family.variance

    def pieces(beta):
        with np.errstate(all="ignore"):
            eta = X @ beta + off
            mu = link.inverse(eta)
            dmu = link.inverse_deriv(eta)
            w = dmu ** 2 / variance(mu)
            XWX = X.T @ (w[:, None] * X)
        if not (np.all(np.isfinite(beta)) and np.all(np.isfinite(XWX))):
            raise failed
        try:
            return mu, dmu, w, np.linalg.inv(XWX)
        except np.linalg.LinAlgError:
            raise failed from None

    mu, dmu, w, bread = pieces(b)
    if rtol <= 1e-10:                           # starting-value fits skip the polish
        for _ in range(25):
            with np.errstate(all="ignore"):
                step = bread @ (X.T @ ((y - mu) * dmu / variance(mu)))
            if not np.all(np.isfinite(step)):
                raise failed
            b = b + step
            mu, dmu, w, bread = pieces(b)
            it += 1
            if np.all(np.abs(step) <= 1e-10 * np.sqrt(np.diag(bread))):
                break
    return GLMFit(params=b, fittedvalues=mu, bread=bread,
                  deviance=float(family.deviance(y, mu)), llf=float(family.loglike(y, mu, scale=1.0)),
                  iterations=it)


def check_fitted_probabilities(p, what: str, stacklevel: int = 3) -> bool:
    """Warn, as R's ``glm.fit`` does, when fitted probabilities are numerically 0 or 1.

    "0 or 1" uses R's threshold in ``glm.fit`` (10 machine epsilons). Such probabilities
    come from an extreme but legitimate covariate value or from quasi-complete
    separation; either way the fit converged (IRLS raises ConvergenceError otherwise) and
    its predictions, hence recycled-prediction effects, are well defined, so R keeps the
    fit with a warning and so does evalkit (a :class:`StatisticalWarning`). The
    coefficient that runs off and its standard error should not be read. Complete
    separation on a 0/1 term is refused earlier (:func:`check_no_empty_cells`).

    Returns
    -------
    bool
        True when some fitted probability is numerically 0 or 1.
    """
    extreme = bool(np.min(np.minimum(p, 1 - p)) < 10 * np.finfo(float).eps)
    if extreme:
        warnings.warn(
            f"{what}: fitted probabilities numerically 0 or 1 occurred (an extreme covariate "
            "value or quasi-complete separation). The fit and its predictions are kept, as R "
            "keeps them; the coefficient of the separating term and its standard error are "
            "not meaningful.", StatisticalWarning, stacklevel=stacklevel)
    return extreme


# --------------------------------------------------------------------------- variance
def parse_vcov(vcov, what: str = "model"):
    """Normalise the ``vcov`` option to ``("model"|"HC0"|"HC1", None)`` or ``("cluster", col)``."""
    if isinstance(vcov, str) and vcov in ("model", "HC0", "HC1"):
        return vcov, None
    if isinstance(vcov, dict) and set(vcov) == {"cluster"} and isinstance(vcov["cluster"], str):
        return "cluster", vcov["cluster"]
    raise ParamsError(
        f"{what}: vcov must be 'model', 'HC0', 'HC1' or {{'cluster': 'column'}}, got {vcov!r}."
    )


def sandwich_adjustment(kind: str, n: int, k: int, groups=None) -> float:
    """Small-sample factor of R's sandwich estimators.

    ``HC0``: 1. ``HC1``: ``n/(n-k)``. ``cluster``: ``G/(G-1) * (n-1)/(n-k)`` with ``G``
    clusters (``sandwich::vcovCL``, type HC1, ``cadjust = TRUE``).
    """
    if kind == "cluster":
        G = len(pd.unique(pd.Series(np.asarray(groups))))
        if G < 2:
            raise ParamsError("cluster-robust variance needs at least 2 clusters; found "
                              f"{G}. Use vcov='HC1' or a cluster column with more groups.")
        return G / (G - 1) * (n - 1) / (n - k)
    if kind == "HC1":
        return n / (n - k)
    return 1.0


def sandwich(scores: np.ndarray, bread: np.ndarray, kind: str, groups=None,
             n_coef: int | None = None, adjust: bool = True) -> np.ndarray:
    """Sandwich variance ``c * B (S'S) B`` as R's ``sandwich`` package computes it.

    Parameters
    ----------
    scores : (n, p) ndarray
        Per-row score contributions (derivatives of each row's log-likelihood, or
        quasi-likelihood, with respect to the parameters), dispersion taken as 1.
    bread : (p, p) ndarray
        Inverse of the negative Hessian (for a GLM, ``(X'WX)^-1`` without dispersion).
    kind : {"HC0", "HC1", "cluster"}
        For ``cluster`` the scores are first summed within clusters.
    groups : array-like, for ``cluster``
    n_coef : int, optional
        ``k`` in the small-sample factor (default ``p``), see :func:`sandwich_adjustment`.
    adjust : bool
        Apply the small-sample factor ``c`` (else ``c = 1``).

    Notes
    -----
    statsmodels offers these per GLM (``cov_type=``), but the zero-inflated and hurdle
    likelihoods here are written by hand and two-part models stack two fits, so one small
    function serves all of them, scaled exactly as ``sandwich::vcovHC`` / ``vcovCL``.
    """
    n, p = scores.shape
    k = p if n_coef is None else n_coef
    if kind == "cluster":
        codes, uniques = pd.factorize(pd.Series(np.asarray(groups)), use_na_sentinel=False)
        G = len(uniques)
        summed = np.column_stack([np.bincount(codes, weights=scores[:, j], minlength=G)
                                  for j in range(p)])
        meat = summed.T @ summed
    else:
        meat = scores.T @ scores
    c = sandwich_adjustment(kind, n, k, groups) if adjust else 1.0
    return c * (bread @ meat @ bread)


# --------------------------------------------------------------------------- effects
def design_matrices(info, *frames: pd.DataFrame) -> list[np.ndarray]:
    """The model matrix of ``info`` (a fitted model's design information) for each of
    ``frames``, e.g. the counterfactual frames of :func:`counterfactual_frames`."""
    return [build_matrix(info, f)[1] for f in frames]


def counterfactual_frames(frame: pd.DataFrame, treatment: str, what: str):
    """Copies of ``frame`` with ``treatment`` set to 1 (True) and to 0 (False) for all rows."""
    if not isinstance(treatment, str) or treatment not in frame.columns:
        raise ParamsError(
            f"{what}: treatment {treatment!r} is not a column used by the model "
            f"(model columns: {list(frame.columns)}); name the 0/1 treatment column of the formula."
        )
    col = frame[treatment]
    if pd.api.types.is_bool_dtype(col):
        one, zero = True, False
    elif pd.api.types.is_numeric_dtype(col) and set(np.unique(col.to_numpy())) <= {0, 1}:
        one, zero = 1, 0
    else:
        raise ParamsError(
            f"{what}: treatment {treatment!r} must be coded 0/1 or True/False "
            f"(found values such as {list(pd.unique(col))[:5]})."
        )
    f1 = frame.assign(**{treatment: pd.Series(one, index=frame.index, dtype=col.dtype)})
    f0 = frame.assign(**{treatment: pd.Series(zero, index=frame.index, dtype=col.dtype)})
    return f1, f0


def recycled_effect(mean_and_gradient: Callable, frame: pd.DataFrame, treatment: str,
                    vcov: np.ndarray, alpha: float, difference_scale: str,
                    ratio_scale: str, row_scale=None, method: str = "",
                    vcov_label: str = "model", what: str = "model",
                    extra: dict | None = None) -> EffectResult:
    """Average effect of setting ``treatment`` from 0 to 1 for everyone.

    Estimand and formulas
    ---------------------
    With ``m_i(t)`` the model's predicted mean for row ``i`` with the treatment set to
    ``t`` and ``s_i`` a per-row scale (``1000 / exposure_i`` for rates per 1,000
    member-months, else 1)::

        A1 = mean_i s_i m_i(1),  A0 = mean_i s_i m_i(0)
        difference = A1 - A0,   ratio = A1 / A0

    Standard errors by the delta method with the parameter covariance ``V``: with
    ``g_t = dA_t / d(params)``, ``Var(difference) = (g1 - g0)' V (g1 - g0)`` and
    ``Var(log ratio) = (g1/A1 - g0/A0)' V (g1/A1 - g0/A0)``. The difference gets a Wald
    interval; the ratio's interval and p-value are computed on the log scale and
    exponentiated; its ``std_error`` is the delta-method SE of the ratio itself
    (``ratio * se(log ratio)``). Covariates are held at their observed values (the
    variance treats them as fixed, as Stata's ``margins`` and R's ``marginaleffects`` do).

    Parameters
    ----------
    mean_and_gradient : callable
        ``f(frame_t, s) -> (A_t, g_t)`` for a counterfactual frame.
    """
    f1, f0 = counterfactual_frames(frame, treatment, what)
    n = len(frame)
    s = np.ones(n) if row_scale is None else np.asarray(row_scale, dtype=float)
    a1, g1 = mean_and_gradient(f1, s)
    a0, g0 = mean_and_gradient(f0, s)
    gd = g1 - g0
    if not np.any(gd != 0) and a1 == a0:
        raise ParamsError(
            f"{what}: setting {treatment!r} to 1 or 0 does not change the predictions; "
            "the treatment must enter the model formula."
        )
    z = stats.norm.ppf(1 - alpha / 2)
    diff = a1 - a0
    se_diff = float(np.sqrt(max(gd @ vcov @ gd, 0.0)))
    p_diff = 2 * stats.norm.sf(abs(diff) / se_diff) if se_diff > 0 else np.nan
    rows = [(difference_scale, diff, se_diff, diff - z * se_diff, diff + z * se_diff, p_diff)]
    if a1 > 0 and a0 > 0:
        ratio = a1 / a0
        gl = g1 / a1 - g0 / a0
        se_log = float(np.sqrt(max(gl @ vcov @ gl, 0.0)))
        p_ratio = 2 * stats.norm.sf(abs(np.log(ratio)) / se_log) if se_log > 0 else np.nan
        rows.append((ratio_scale, ratio, ratio * se_log, ratio * np.exp(-z * se_log),
                     ratio * np.exp(z * se_log), p_ratio))
    return EffectResult(table=effect_table(rows), treatment=treatment, mean_treated=float(a1),
                        mean_control=float(a0), nobs=n, method=method, vcov=vcov_label,
                        alpha=alpha, extra=dict(extra or {}))


def vcov_label(kind: str, cluster: str | None) -> str:
    return f"cluster({cluster})" if kind == "cluster" else kind


def check_alpha(alpha, what: str = "alpha") -> float:
    """``alpha`` as a float, or a ParamsError naming ``what``: the one alpha check of
    every model, survival, synthesis and calibration function.

    ``alpha`` must be a real number (not a bool or a string) strictly between 0 and 1;
    0.05 gives 95% intervals.
    """
    if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, numbers.Real) \
            or not 0 < float(alpha) < 1:
        raise ParamsError(f"{what}: alpha must be a number strictly between 0 and 1 (e.g. "
                          f"0.05 for 95% intervals), got {alpha!r}.")
    return float(alpha)

