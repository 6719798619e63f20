"""Inverse-probability and overlap weights built from a propensity score."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from evalkit.causal.balance import balance as _balance
from evalkit.causal.matching import balance_once
from evalkit.causal.propensity import PropensityScore, propensity
from evalkit.errors import ParamsError, StatisticalWarning

_ESTIMANDS = ("ATE", "ATT", "ATC", "ATO")


@dataclass(frozen=True, eq=False)
class WeightResult:
    """Propensity-score weights as a value.

    Attributes
    ----------
    weights : Series
        One weight per input row (NaN for rows left out of the propensity model).
    propensity : PropensityScore
    estimand : str
    stabilized : bool
        Whether ATE weights were multiplied by the marginal arm probabilities.
    trim : float or None
        Quantile at which weights were capped; ``n_trimmed`` units were capped.
    ess : dict
        Effective sample size per arm, (sum w)^2 / sum w^2 (Kish).
    max_weight : dict
        Largest weight per arm.
    """

    weights: pd.Series
    propensity: PropensityScore
    treatment: str
    formula: str
    estimand: str
    stabilized: bool
    trim: float | None
    n_trimmed: int
    ess: dict
    max_weight: dict
    dropped: dict = field(default_factory=dict)
    _source: pd.DataFrame | None = field(default=None, repr=False)
    # balance() on the propensity formula, computed once (see MatchResult)
    _default_balance: list = field(default_factory=list, repr=False)

    def balance(self, covariates=None, **kwargs):
        """Balance before and after weighting (see :func:`evalkit.causal.balance`)."""

        used = self.propensity.used
        covs = self.formula if covariates is None else covariates
        return balance_once(self._default_balance, covariates is None and not kwargs, lambda: _balance(
            self._source, self.treatment, covs, weights=self.weights.loc[used],
            estimand=self.estimand, distance=self.propensity.scores.loc[used], **kwargs))

    def summary(self) -> str:
        return (f"{self.estimand} weights{' (stabilized)' if self.stabilized else ''} for "
                f"{self.treatment} ~ {self.formula}; ESS treated {self.ess['treated']:.1f}, "
                f"control {self.ess['control']:.1f}; max weight treated "
                f"{self.max_weight['treated']:.3g}, control {self.max_weight['control']:.3g}"
                + (f"; trimmed at quantile {self.trim} ({self.n_trimmed} units)" if self.trim else ""))


def ess(w) -> float:
    """Kish effective sample size (sum w)^2 / sum w^2."""
    w = np.asarray(w, dtype=float)
    s2 = float(np.sum(w ** 2))
    return float(np.sum(w) ** 2 / s2) if s2 > 0 else 0.0


def weights(data: pd.DataFrame, treatment: str, formula: str, estimand: str = "ATE",
            stabilize: bool = True, trim: float | None = None) -> WeightResult:
    """Propensity-score weights for the ATE, ATT, ATC or overlap population (ATO).

    With e = P(T = 1 | X) from :func:`~evalkit.causal.propensity`:

    ========  =====================  =====================
    estimand  treated weight         control weight
    ========  =====================  =====================
    ATE       1 / e                  1 / (1 - e)
    ATT       1                      e / (1 - e)
    ATC       (1 - e) / e            1
    ATO       1 - e                  e
    ========  =====================  =====================

    ATE weights are *stabilized* (``stabilize=True``) by multiplying by the marginal
    probability of the unit's own arm, P(T = 1) or P(T = 0), which leaves the weighted
    means unchanged but keeps the weights' sum near n (Robins et al. 2000). ATT, ATC and
    ATO weights are already bounded in scale and are left as they are (as in WeightIt).
    Overlap weights (ATO; Li, Morgan & Zaslavsky 2018) target the population with the
    most clinical equipoise and are never extreme.

    Parameters
    ----------
    data : DataFrame
        Not modified; rows with missing values are left out (weight NaN).
    treatment, formula : str
        As for :func:`~evalkit.causal.propensity`.
    estimand : {"ATE", "ATT", "ATC", "ATO"}
    stabilize : bool
        Stabilize ATE weights.
    trim : float, optional
        Quantile (e.g. 0.99) at which to cap weights: larger weights are set to that
        quantile (R's default type-7 quantile). Only the non-focal arm is trimmed for the
        ATT/ATC (focal weights are 1), all units for the ATE. Trimming changes the
        estimand slightly in exchange for variance.

    Returns
    -------
    WeightResult

    Warns
    -----
    StatisticalWarning
        Extreme weights: a single unit carries more than 10% of its arm's total weight,
        or an arm's effective sample size is below 10% of its size. Consider ATO
        weights, trimming, or restricting to the region of common support.

    Examples
    --------
    >>> w = weights(lalonde, "treat", "age + educ + race + married + nodegree + re74 + re75",
    ...             estimand="ATT")
    >>> w.ess                                                         # doctest: +SKIP

    References
    ----------
    Robins JM, Hernan MA, Brumback B (2000). Marginal structural models and causal
    inference in epidemiology. Epidemiology 11:550-560.
    Li F, Morgan KL, Zaslavsky AM (2018). Balancing covariates via propensity score
    weighting. JASA 113:390-400.
    """
    estimand = str(estimand).upper()
    if estimand not in _ESTIMANDS:
        raise ParamsError(f"weights: estimand must be one of {_ESTIMANDS}, not '{estimand}'.")
    if trim is not None and not (0.5 < float(trim) < 1):
        raise ParamsError(f"weights: trim is a quantile in (0.5, 1), e.g. 0.99; got {trim}.")
    ps = propensity(data, treatment, formula)
    used = ps.used
    e = ps.scores.loc[used].to_numpy(dtype=float)
    t = data.loc[used, treatment].astype(float).to_numpy().astype(int)
    if estimand == "ATE":
        w = np.where(t == 1, 1 / e, 1 / (1 - e))
        if stabilize:
            p1 = t.mean()
            w = w * np.where(t == 1, p1, 1 - p1)
    elif estimand == "ATT":
        w = np.where(t == 1, 1.0, e / (1 - e))
    elif estimand == "ATC":
        w = np.where(t == 1, (1 - e) / e, 1.0)
    else:
        w = np.where(t == 1, 1 - e, e)
    stabilized = bool(stabilize and estimand == "ATE")
    n_trim = 0
    if trim is not None:
        sel = {"ATE": np.ones_like(t, bool), "ATO": np.ones_like(t, bool),
               "ATT": t == 0, "ATC": t == 1}[estimand]
        cap = float(np.quantile(w[sel], float(trim)))
        over = sel & (w > cap)
        n_trim = int(over.sum())
        w = np.where(over, cap, w)
    ess_arm = {"treated": ess(w[t == 1]), "control": ess(w[t == 0])}
    max_w = {"treated": float(w[t == 1].max()), "control": float(w[t == 0].max())}
    problems = []
    for arm, g in (("treated", 1), ("control", 0)):
        wa = w[t == g]
        share = float(wa.max() / wa.sum())
        if share > 0.1 and len(wa) > 10:
            problems.append(f"one {arm} unit carries {share:.0%} of the {arm} weight")
        if ess_arm[arm] < 0.1 * len(wa) and len(wa) > 10:
            problems.append(f"{arm} ESS {ess_arm[arm]:.1f} of {len(wa)} units")
    if problems:
        warnings.warn(
            f"weights ({estimand}): extreme weights - {'; '.join(problems)}. Estimates will be "
            "imprecise and sensitive to the propensity model; consider estimand='ATO', "
            "trim=0.99, or restricting to common support.", StatisticalWarning, stacklevel=2)
    out = pd.Series(np.nan, index=data.index, name="weights")
    out.loc[used] = w
    return WeightResult(weights=out, propensity=ps, treatment=treatment, formula=ps.formula,
                        estimand=estimand, stabilized=stabilized,
                        trim=None if trim is None else float(trim), n_trimmed=n_trim,
                        ess=ess_arm, max_weight=max_w, dropped=dict(ps.dropped),
                        _source=data.loc[used])
