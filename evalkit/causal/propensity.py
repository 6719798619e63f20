"""Propensity scores: the probability of treatment given the measured covariates.

The score is fitted by logistic regression exactly as R's ``glm(..., family = binomial())``
does it (same IRLS start, same stopping rule), so that scores, and therefore matches
that depend on their order, agree with R/MatchIt to ~1e-12.

This module also holds the small helpers the other ``evalkit.causal`` modules share:
formula parsing, checking and dropping incomplete rows, and R-style term names.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import patsy
from statsmodels.genmod import families
from statsmodels.genmod.generalized_linear_model import GLM
from statsmodels.tools.sm_exceptions import PerfectSeparationWarning
from threadpoolctl import threadpool_limits

from evalkit.errors import (
    ConvergenceError,
    DataDroppedWarning,
    DataValidationError,
    ParamsError,
    StatisticalWarning,
)
from evalkit.models.base import ModelResult, wald_table
from evalkit.models.effects import formula_variables
from evalkit.terms import r_term_name

# scores closer than this to 0 or 1 trigger a quasi-separation / positivity warning
_EXTREME = 1e-6

# R's binomial()$linkinv clamps the linear predictor at +-30 (family.c, THRESH/MTHRESH).
_R_THRESH = 30.0
_DBL_EPS = np.finfo(float).eps


# --------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------
def split_formula(formula: str, treatment: str | None = None) -> str:
    """Return the right-hand side of ``formula``.

    ``formula`` may be a right-hand side (``"age + educ"``) or a full formula
    (``"treat ~ age + educ"``); in the latter case the left-hand side must be
    ``treatment`` when that is given.
    """
    if not isinstance(formula, str) or not formula.strip():
        raise ParamsError("formula must be a non-empty string such as 'age + educ + C(race)'.")
    if "~" in formula:
        lhs, rhs = formula.split("~", 1)
        lhs = lhs.strip()
        if treatment is not None and lhs and lhs != treatment:
            raise ParamsError(
                f"formula '{formula}' has '{lhs}' on its left-hand side but treatment="
                f"'{treatment}'. Pass only the right-hand side, or make them agree.")
    else:
        rhs = formula
    rhs = rhs.strip()
    if not rhs:
        raise ParamsError(f"formula '{formula}' has no covariates on its right-hand side.")
    return rhs


def formula_columns(rhs: str, data: pd.DataFrame) -> list[str]:
    """Data columns referenced by a patsy right-hand side; unknown names raise
    (:func:`evalkit.models.effects.formula_variables`)."""
    return formula_variables(rhs, data.columns)


def check_treatment(data: pd.DataFrame, treatment: str) -> None:
    """Raise unless ``treatment`` is a column holding two arms coded 0/1 (or bool)."""
    if not isinstance(data, pd.DataFrame):
        raise ParamsError("data must be a pandas DataFrame.")
    if treatment not in data.columns:
        raise DataValidationError(
            f"treatment column '{treatment}' is not in the data.",
            [{"table": "data", "column": treatment, "reason": "missing_column", "count": 1,
              "examples": []}])
    values = pd.unique(data[treatment].dropna())
    bad = [v for v in values if v not in (0, 1, True, False)]
    if bad:
        raise DataValidationError(
            f"treatment column '{treatment}' must be coded 0/1 (or False/True); found "
            f"{sorted(map(str, bad))[:5]}. Recode it, e.g. data[col].eq('yes').astype(int).",
            [{"table": "data", "column": treatment, "reason": "not_binary",
              "count": int(data[treatment].isin(bad).sum()), "examples": bad[:5]}])


def complete_rows(data: pd.DataFrame, columns: list[str], what: str) -> tuple[pd.Index, dict]:
    """Index of rows with no missing value in ``columns``; warn about the rest."""
    cols = list(dict.fromkeys(c for c in columns if c is not None))
    miss = data[cols].isna()
    bad = miss.any(axis=1)
    dropped = {}
    if bad.any():
        per_col = {c: int(n) for c, n in miss.sum().items() if n}
        n_bad = int(bad.sum())
        dropped = {"missing values": n_bad}
        warnings.warn(
            f"{what}: {n_bad} of {len(data)} rows have missing values in "
            f"{per_col} and were left out. Impute or filter them first to keep them.",
            DataDroppedWarning, stacklevel=3)
    return data.index[~bad.to_numpy()], dropped


def treatment_vector(data: pd.DataFrame, treatment: str) -> np.ndarray:
    return data[treatment].astype(float).to_numpy().astype(int)


def design_matrix(rhs: str, data: pd.DataFrame, what: str) -> pd.DataFrame:
    """Patsy design matrix with columns in R's order.

    Patsy puts terms without numeric factors first; R's model.matrix keeps the formula
    order, main effects before interactions. Columns are reordered to R's order so
    coefficient tables read like R's.
    """
    try:
        X = patsy.dmatrix(rhs, data, return_type="dataframe", NA_action="raise")
    except patsy.PatsyError as exc:
        raise DataValidationError(f"{what}: cannot build the design for '{rhs}': {exc}") from None
    info = X.design_info
    desc = patsy.ModelDesc.from_formula(rhs)
    wanted = sorted(desc.rhs_termlist, key=lambda term: len(term.factors))  # stable
    slices = info.term_slices
    cols = []
    for term in wanted:
        if term in slices:
            cols.extend(range(slices[term].start, slices[term].stop))
    if sorted(cols) != list(range(X.shape[1])):  # pragma: no cover - defensive
        return X
    return X.iloc[:, cols]


# --------------------------------------------------------------------------------------
# the propensity score
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class PropensityScore:
    """A fitted propensity score as a value.

    Attributes
    ----------
    scores : Series
        P(treatment = 1 | covariates), aligned to the input index (NaN for rows left out).
    linear_predictor : Series
        The logit of ``scores`` (same index).
    treatment, formula : str
        Treatment column and right-hand side used.
    fit : ModelResult
        The logistic regression (R term names, Wald CIs).
    used : Index
        Input rows that entered the fit.
    dropped : dict
        Rows left out and why.
    overlap : dict
        Range of the score in each arm and the share of each arm outside the other
        arm's range (a quick common-support check).
    """

    scores: pd.Series
    linear_predictor: pd.Series
    treatment: str
    formula: str
    fit: ModelResult
    used: pd.Index
    dropped: dict = field(default_factory=dict)
    overlap: dict = field(default_factory=dict)

    def summary(self) -> str:
        o = self.overlap
        return "\n".join([
            f"propensity score: {self.treatment} ~ {self.formula}",
            f"rows used: {len(self.used)}" + (f" (dropped: {self.dropped})" if self.dropped else ""),
            f"treated score range [{o['treated_min']:.4g}, {o['treated_max']:.4g}], "
            f"control [{o['control_min']:.4g}, {o['control_max']:.4g}]",
            self.fit.table.to_string(index=False, float_format=lambda v: f"{v:.6g}"),
        ])


def _r_logit_linkinv(eta: np.ndarray) -> np.ndarray:
    """R's binomial()$linkinv: exp(eta) / (1 + exp(eta)), clamped at |eta| = 30."""
    inside = np.exp(np.clip(eta, -_R_THRESH, _R_THRESH))
    tmp = np.where(eta < -_R_THRESH, _DBL_EPS, np.where(eta > _R_THRESH, 1.0 / _DBL_EPS, inside))
    return tmp / (1.0 + tmp)


def table_terms_with_huge_se(columns, beta, se) -> list[str]:
    """Terms whose |estimate| > 10 and SE > 100: the signature of separation."""
    return [r_term_name(c) for c, b, s in zip(columns, beta, se)
            if c != "Intercept" and abs(b) > 10 and s > 100]


def _check_design(X: pd.DataFrame, what: str) -> None:
    """Constant or collinear covariates make the logistic fit unidentified: say which."""
    values = X.to_numpy(dtype=float)
    const = [c for c in X.columns if c != "Intercept" and np.ptp(X[c].to_numpy(dtype=float)) == 0]
    if const:
        raise DataValidationError(
            f"{what}: covariate column(s) {[r_term_name(c) for c in const]} are constant in the "
            "rows used, so their coefficients cannot be estimated. Drop them from the formula.",
            [{"table": "data", "column": r_term_name(c), "reason": "constant", "count": len(X),
              "examples": [X[c].iloc[0]]} for c in const])
    rank = np.linalg.matrix_rank(values)
    if rank < values.shape[1]:
        # find a column that is a linear combination of earlier ones
        offenders = []
        for j in range(1, values.shape[1]):
            if np.linalg.matrix_rank(values[:, : j + 1]) <= np.linalg.matrix_rank(values[:, :j]):
                offenders.append(r_term_name(X.columns[j]))
        raise DataValidationError(
            f"{what}: the covariates are collinear (design rank {rank} < {values.shape[1]} "
            f"columns); {offenders} are linear combinations of earlier terms. Remove them.",
            [{"table": "data", "column": o, "reason": "collinear", "count": len(X),
              "examples": []} for o in offenders])


def _fit_logit_like_r(y: np.ndarray, X: np.ndarray, maxit: int = 25, epsilon: float = 1e-8):
    """IRLS logistic fit with R glm.fit's start and stopping rule.

    statsmodels' GLM IRLS starts from the same mu = (y + 0.5) / 2 as R; R stops when
    |dev - dev_old| / (|dev| + 0.1) < epsilon, i.e. |dev - dev_old| < 0.1 eps + eps |dev|,
    which is statsmodels' allclose test with atol = 0.1 eps and rtol = eps. Using the same
    rule makes the scores agree with R's to ~1e-12 rather than ~1e-8.
    """
    model = GLM(y, X, family=families.Binomial())
    # one BLAS thread: tall-skinny least squares is faster single-threaded here
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore", PerfectSeparationWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        res = model.fit(method="IRLS", maxiter=maxit, tol=0.1 * epsilon, rtol=epsilon,
                        tol_criterion="deviance")
    return res


def propensity(data: pd.DataFrame, treatment: str, formula: str, alpha: float = 0.05
               ) -> PropensityScore:
    """Fit a logistic propensity score, P(treatment = 1 | covariates).

    The propensity score e(x) = P(T = 1 | X = x) summarises all measured confounders in
    one number: treated and control units with the same e(x) have, on average, the same
    covariate distribution (Rosenbaum & Rubin 1983). It is fitted here by maximum
    likelihood logistic regression, logit e(x) = x'beta, exactly like R's
    ``glm(T ~ ..., family = binomial())`` (the ``distance = "glm"`` default of MatchIt).

    Parameters
    ----------
    data : DataFrame
        One row per unit. Not modified.
    treatment : str
        Column coded 0/1 (or bool): 1 = treated.
    formula : str
        Right-hand side in Wilkinson/patsy notation, e.g.
        ``"age + educ + C(race) + married + nodegree + re74 + re75"``, or a full
        ``"treat ~ ..."`` formula. String columns are treated as categorical with the
        first level (alphabetical) as reference, as R does for factors.
    alpha : float
        1 - confidence level for the coefficient table.

    Returns
    -------
    PropensityScore
        ``scores`` aligned to ``data.index`` (NaN where a row was left out), the
        linear predictor, the fit as a :class:`~evalkit.models.base.ModelResult` with R
        term names (``(Intercept)``, ``racehispan``), and an ``overlap`` summary.

    Raises
    ------
    DataValidationError
        Missing columns, non-binary treatment, an empty arm, constant or collinear
        covariates, or no overlap at all (perfect separation: the covariates predict
        treatment exactly, so no treated unit has a comparable control).
    ConvergenceError
        IRLS did not converge in 25 iterations (R's default).

    Warns
    -----
    DataDroppedWarning
        Rows with missing values in the treatment or a covariate were left out.
    StatisticalWarning
        Fitted probabilities numerically 0 or 1 (quasi-separation; R warns the same).

    Examples
    --------
    >>> ps = propensity(lalonde, "treat", "age + educ + race + married + nodegree + re74 + re75")
    >>> ps.scores.head()                                              # doctest: +SKIP

    References
    ----------
    Rosenbaum PR, Rubin DB (1983). The central role of the propensity score in
    observational studies for causal effects. Biometrika 70:41-55.
    """
    check_treatment(data, treatment)
    rhs = split_formula(formula, treatment)
    cols = formula_columns(rhs, data)
    if treatment in cols:
        raise ParamsError(f"the treatment '{treatment}' cannot also be a covariate in '{rhs}'.")
    used, dropped = complete_rows(data, [treatment, *cols], "propensity")
    sub = data.loc[used]
    t = treatment_vector(sub, treatment)
    n1, n0 = int(t.sum()), int(len(t) - t.sum())
    if n1 == 0 or n0 == 0:
        raise DataValidationError(
            f"propensity: treatment '{treatment}' has {n1} treated and {n0} control rows after "
            "dropping incomplete rows; both arms are needed.",
            [{"table": "data", "column": treatment, "reason": "empty_arm", "count": 0,
              "examples": []}])
    X = design_matrix(rhs, sub, "propensity")
    _check_design(X, "propensity")
    Xv = X.to_numpy(dtype=float)
    res = _fit_logit_like_r(t.astype(float), Xv)
    beta = np.asarray(res.params, dtype=float)
    # identical covariate rows must get bit-identical scores (ties decide matches), so
    # every row takes the linear predictor of the first row with the same covariates
    eta = Xv @ beta
    row_hash = pd.util.hash_pandas_object(pd.DataFrame(Xv), index=False).to_numpy()
    _, first, inverse = np.unique(row_hash, return_index=True, return_inverse=True)
    eta = eta[first][inverse.ravel()]
    ps = _r_logit_linkinv(eta)

    ps1, ps0 = ps[t == 1], ps[t == 0]
    if ps1.min() > ps0.max() or ps1.max() < ps0.min():
        raise DataValidationError(
            "propensity: no overlap between arms - the covariates separate treated from "
            f"control units perfectly (treated scores [{ps1.min():.3g}, {ps1.max():.3g}], "
            f"control [{ps0.min():.3g}, {ps0.max():.3g}]). No comparison is possible; find the "
            "covariate(s) that determine treatment (e.g. an eligibility rule) and restrict "
            "the cohort or drop them.")
    converged = bool(getattr(res, "converged", True))
    if not converged:
        raise ConvergenceError(
            "propensity: the logistic regression did not converge in 25 IRLS iterations. "
            "This usually means quasi-separation: a category or covariate range with only "
            "one arm. Merge sparse categories or restrict the cohort to common support.")
    # R warns only below 10 * machine epsilon; scores within 1e-6 of 0 or 1 already mean
    # quasi-separation (a covariate pattern seen in one arm only: its coefficient runs off
    # towards infinity and IRLS stops on the deviance) or units with no counterpart.
    n_extreme = int(np.sum((ps < _EXTREME) | (ps > 1 - _EXTREME)))
    if n_extreme:
        big = table_terms_with_huge_se(X.columns, np.asarray(res.params), np.asarray(res.bse))
        hint = f" Coefficients with runaway estimates: {big}." if big else ""
        warnings.warn(
            f"propensity: {n_extreme} rows have fitted probabilities within {_EXTREME:g} of 0 "
            f"or 1 (quasi-separation or no overlap).{hint} Those units have no comparable "
            "counterparts; merge sparse categories, drop the offending covariate, or restrict "
            "the cohort to common support.", StatisticalWarning, stacklevel=2)

    terms = [r_term_name(c) for c in X.columns]
    se = np.asarray(res.bse, dtype=float)
    table = wald_table(terms, beta, se, alpha=alpha)
    fit = ModelResult(
        table=table, method="logistic regression (propensity score, IRLS as R glm)",
        formula=f"{treatment} ~ {rhs}", nobs=len(sub), dropped=dropped,
        loglik=float(res.llf), alpha=alpha,
        extra={"deviance": float(res.deviance), "iterations": int(res.fit_history["iteration"]),
               "converged": converged},
        model=res)
    scores = pd.Series(np.nan, index=data.index, name="propensity_score")
    scores.loc[used] = ps
    lp = pd.Series(np.nan, index=data.index, name="linear_predictor")
    lp.loc[used] = eta
    overlap = {
        "treated_min": float(ps1.min()), "treated_max": float(ps1.max()),
        "control_min": float(ps0.min()), "control_max": float(ps0.max()),
        "share_treated_above_control_max": float(np.mean(ps1 > ps0.max())),
        "share_control_below_treated_min": float(np.mean(ps0 < ps1.min())),
    }
    return PropensityScore(scores=scores, linear_predictor=lp, treatment=treatment,
                           formula=rhs, fit=fit, used=used, dropped=dropped, overlap=overlap)
