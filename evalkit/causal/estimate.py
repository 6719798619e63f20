"""Treatment effects after confounding control: matching, weighting, or regression."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from statsmodels.genmod import families
from statsmodels.genmod.generalized_linear_model import GLM
from statsmodels.regression.linear_model import WLS
from statsmodels.tools.sm_exceptions import SpecificationWarning

from evalkit.causal.balance import Balance, balance
from evalkit.causal.matching import MatchResult, match
from evalkit.causal.propensity import (
    check_treatment,
    complete_rows,
    design_matrix,
    formula_columns,
    propensity,
    split_formula,
)
from evalkit.causal.weighting import WeightResult, ess, weights
from evalkit.errors import DataValidationError, ParamsError, StatisticalWarning
from evalkit.limits import release_fits
from evalkit.models.base import EffectResult, TermTable, effect_table, wald_table
from evalkit.models.effects import sandwich
from evalkit.terms import r_term_name

_VCOVS = ("cluster", "cluster_HC0", "HC0", "HC1", "HC2", "HC3", "model")


@dataclass(frozen=True, eq=False)
class Effect(TermTable):
    """An estimated treatment effect as a value.

    ``.at(term)`` reads the outcome model's ``table``; ``effect()`` gives the treatment
    effect as the one effect type, :class:`~evalkit.models.base.EffectResult`.

    Attributes
    ----------
    estimate, std_error, ci_low, ci_high, p_value : float
        The treatment coefficient, its SE (see ``diagnostics["vcov"]``), the
        (1 - alpha) CI and two-sided p-value (t distribution, residual df).
    n_treated, n_control : int
        Units with positive weight in each arm.
    method, estimand, scale : str
        ``"match"``/``"ipw"``/``"regression"``; ``"ATT"``...; ``"difference"``,
        ``"risk_difference"`` or ``"rate_ratio"`` (``outcome_type="count"``: then
        ``estimate`` and the CI are ratios and ``std_error`` is on the log scale).
    balance : Balance
        Covariate balance before (and after) adjustment.
    diagnostics : dict
        ``max_abs_smd`` after adjustment (before, for regression; see
        ``balance_stage``) and ``balance_ok`` (all |SMD| < 0.1);
        ``equipoise`` (Walker et al. 2013 preference-score shares); ``ess`` per arm;
        ``vcov``, ``df_resid``, ``n_clusters``, ...
    table : DataFrame
        Full outcome-model coefficient table (R term names).
    adjustment : MatchResult or WeightResult or None
        The matching or weighting behind the estimate.
    """

    estimate: float
    std_error: float
    ci_low: float
    ci_high: float
    p_value: float
    n_treated: int
    n_control: int
    method: str
    estimand: str
    balance: Balance | None
    diagnostics: dict
    outcome: str = ""
    treatment: str = ""
    scale: str = "difference"
    alpha: float = 0.05
    table: pd.DataFrame | None = None
    adjustment: MatchResult | WeightResult | None = field(default=None, repr=False)
    model: Any = field(default=None, repr=False)

    def effect(self) -> EffectResult:
        """The treatment effect: one row keyed by its scale (``difference``,
        ``risk_difference`` or ``rate_ratio``). As for every effect the ratio's
        ``std_error`` is that of the ratio itself (delta method); ``log_std_error`` keeps
        the SE on the log scale (the ``std_error`` field of this value)."""
        ratio = self.scale == "rate_ratio"
        se = self.estimate * self.std_error if ratio else self.std_error
        table = effect_table([(self.scale, self.estimate, se, self.ci_low, self.ci_high,
                               self.p_value, self.std_error if ratio else np.nan)],
                             extra_columns=["log_std_error"])
        return EffectResult(table=table, treatment=self.treatment,
                            nobs=self.n_treated + self.n_control, method=self.method,
                            vcov=str(self.diagnostics.get("vcov", "")), alpha=self.alpha,
                            estimand=self.estimand, extra={"outcome": self.outcome})

    def to_frame(self) -> pd.DataFrame:
        """One-row tidy table in the results.json vocabulary."""
        return pd.DataFrame([{
            "outcome": self.outcome, "contrast": f"{self.treatment}: 1 vs 0",
            "estimand": self.estimand, "method": self.method, "scale": self.scale,
            "estimate": self.estimate, "std_error": self.std_error, "ci_low": self.ci_low,
            "ci_high": self.ci_high, "p_value": self.p_value, "n_treated": self.n_treated,
            "n_control": self.n_control}])

    def summary(self) -> str:
        d = self.diagnostics
        lvl = round(100 * (1 - self.alpha))
        lines = [
            f"{self.estimand} of {self.treatment} on {self.outcome} by {self.method} "
            f"({self.scale}): {self.estimate:.6g} (SE {self.std_error:.6g}, {lvl}% CI "
            f"{self.ci_low:.6g} to {self.ci_high:.6g}, p = {self.p_value:.3g})",
            f"n treated {self.n_treated}, control {self.n_control}; SE: {d.get('vcov')}",
        ]
        if "max_abs_smd" in d:
            lines.append(f"max |SMD| {d.get('balance_stage', 'after adjustment')} "
                         f"{d['max_abs_smd']:.3f} "
                         f"({'ok' if d['balance_ok'] else 'NOT balanced'} at 0.1)")
        if d.get("equipoise"):
            eq = d["equipoise"]
            lines.append(f"equipoise (preference score 0.3-0.7): treated {eq['share_treated']:.0%}, "
                         f"control {eq['share_control']:.0%}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return f"<pre>{self.summary()}</pre>" + self.to_frame().to_html(index=False)


# --------------------------------------------------------------------------------------
def equipoise(scores, treatment, lower: float = 0.3, upper: float = 0.7) -> dict:
    """Share of units in empirical equipoise (Walker et al. 2013).

    The preference score F rescales the propensity score e for the prevalence P of
    treatment: ln(F / (1 - F)) = ln(e / (1 - e)) - ln(P / (1 - P)). Units with F in
    [0.3, 0.7] are in equipoise; Walker et al. suggest at least half of each arm should
    be. Returns the shares overall and per arm and ``in_equipoise`` (both arms >= 0.5).
    """
    e = np.asarray(scores, dtype=float)
    t = np.asarray(treatment, dtype=float)
    ok = ~(np.isnan(e) | np.isnan(t))
    e, t = e[ok], t[ok]
    p = t.mean()
    lf = np.log(e / (1 - e)) - np.log(p / (1 - p))
    f = 1 / (1 + np.exp(-lf))
    inside = (f >= lower) & (f <= upper)
    s1, s0 = float(inside[t == 1].mean()), float(inside[t == 0].mean())
    return {"share_all": float(inside.mean()), "share_treated": s1, "share_control": s0,
            "in_equipoise": bool(s1 >= 0.5 and s0 >= 0.5), "bounds": (lower, upper)}


def _cluster_labels(groups: np.ndarray) -> np.ndarray:
    """Matched-set labels as statsmodels' cluster covariance takes them fastest: as
    floats (exact: the labels are integers far below 2**53).

    statsmodels calls ``np.unique`` on the labels up to four times a fit; numpy 2.4 finds
    the distinct integers of an array by hashing, 0.8 s on the 570,000 matched members of
    the 1M-member demo plan, and those of a float array by sorting, 0.06 s (the same
    clusters either way: the 11 negative-control fits there took 28 s less)."""
    labels = np.asarray(groups)
    return labels.astype(float) if labels.dtype.kind in "iu" else labels


def _fit_weighted_ols(df: pd.DataFrame, outcome: str, treatment: str, adjust_rhs: str | None,
                      w: np.ndarray, vcov: str, groups: np.ndarray | None, alpha: float):
    """WLS of outcome on treatment (+ covariates) with the requested sandwich.

    ``cluster`` is sandwich::vcovCL(type = "HC1"): G/(G-1) * (n-1)/(n-k) * B M B, which
    is statsmodels' cluster covariance with its default small-sample correction;
    ``cluster_HC0`` is vcovCL(type = "HC0"), G/(G-1) only. HC0-HC3 are
    sandwich::vcovHC types; ``model`` is the classical lm covariance.
    """
    work = df.copy()
    work[treatment] = work[treatment].astype(float)
    rhs = treatment + (f" + {adjust_rhs}" if adjust_rhs else "")
    X = design_matrix(rhs, work, "estimate")
    y = work[outcome].astype(float).to_numpy()
    fit = WLS(y, X.to_numpy(float), weights=w).fit()
    n, k = X.shape
    if vcov in ("cluster", "cluster_HC0"):
        rob = fit.get_robustcov_results(cov_type="cluster", groups=_cluster_labels(groups),
                                        use_correction=True)
        cov = rob.cov_params()
        if vcov == "cluster_HC0":
            cov = cov * (n - k) / (n - 1)
    elif vcov == "model":
        cov = fit.cov_params()
    else:
        cov = fit.get_robustcov_results(cov_type=vcov).cov_params()
    se = np.sqrt(np.diag(cov))
    terms = [r_term_name(c) for c in X.columns]
    table = wald_table(terms, fit.params, se, alpha=alpha, df=fit.df_resid)
    j = terms.index(treatment)
    return fit, table, j, float(np.sqrt(fit.cov_params()[j, j]))


def _hc_glm(fit, X: np.ndarray, w: np.ndarray, vcov: str) -> np.ndarray:
    """HC0-HC3 sandwich of a weighted Poisson GLM, as ``sandwich::vcovHC`` computes it.

    Bread H = X' diag(w mu) X, meat sum u_i^2 x_i x_i' with score residuals
    u_i = w_i (y_i - mu_i), scaled by n/(n-k) (HC1) or divided by (1 - h_i) (HC2) or
    (1 - h_i)^2 (HC3), with h_i the diagonal of the GLM hat matrix
    W^(1/2) X H^-1 X' W^(1/2), W = diag(w mu); the scaled scores go to the shared
    :func:`~evalkit.models.effects.sandwich`. Written out because statsmodels' GLM
    offers HC1-HC3 only without prior weights.
    """
    mu = np.asarray(fit.mu, dtype=float)
    y = np.asarray(fit.model.endog, dtype=float)
    wt = w * mu
    bread = np.linalg.inv((X * wt[:, None]).T @ X)
    u = w * (y - mu)
    if vcov in ("HC2", "HC3"):
        h = np.einsum("ij,jk,ik->i", X * np.sqrt(wt)[:, None], bread, X * np.sqrt(wt)[:, None])
        u = u / (1 - h) ** (0.5 if vcov == "HC2" else 1.0)
    return sandwich(X * u[:, None], bread, "HC1" if vcov == "HC1" else "HC0")


def _fit_weighted_poisson(df: pd.DataFrame, outcome: str, treatment: str, adjust_rhs: str | None,
                          w: np.ndarray, vcov: str, groups: np.ndarray | None, alpha: float,
                          exposure: str | None):
    """Weighted Poisson regression (log link, log(exposure) offset) with a sandwich SE.

    The pseudo-likelihood of R's ``glm(y ~ treat, family = quasipoisson, weights = w,
    offset = log(exposure))`` (statsmodels ``var_weights``); the sandwich makes the
    variance robust to overdispersion, so the Poisson form is only a working model for
    the mean (Wooldridge 1999). ``cluster`` is ``vcovCL`` type HC1 (G/(G-1) (n-1)/(n-k)).
    """
    work = df.copy()
    work[treatment] = work[treatment].astype(float)
    rhs = treatment + (f" + {adjust_rhs}" if adjust_rhs else "")
    X = design_matrix(rhs, work, "estimate")
    y = work[outcome].astype(float).to_numpy()
    offset = None if exposure is None else np.log(work[exposure].astype(float).to_numpy())
    model = GLM(y, X.to_numpy(float), family=families.Poisson(), offset=offset,
                   var_weights=w)
    n, k = X.shape
    with warnings.catch_warnings():
        # statsmodels warns that robust covariances with var_weights are "not fully
        # supported"; for the Poisson score w x (y - mu) its HC0 and cluster sandwiches
        # equal the hand-computed H^-1 B H^-1 (tests/test_cohort_balance.py checks it)
        warnings.simplefilter("ignore", SpecificationWarning)
        if vcov in ("cluster", "cluster_HC0"):
            fit = model.fit(cov_type="cluster", cov_kwds={"groups": _cluster_labels(groups),
                                                          "use_correction": True})
            cov = fit.cov_params()
            if vcov == "cluster_HC0":
                cov = cov * (n - k) / (n - 1)
        elif vcov == "model":
            fit = model.fit()
            cov = fit.cov_params()
        else:
            fit = model.fit(cov_type="HC0")
            cov = _hc_glm(fit, X.to_numpy(float), w, vcov)
    se = np.sqrt(np.diag(cov))
    terms = [r_term_name(c) for c in X.columns]
    table = wald_table(terms, fit.params, se, alpha=alpha)
    j = terms.index(treatment)
    return fit, table, j, float(se[j])


def _check_arguments(data: pd.DataFrame, outcome: str, treatment: str, method: str,
                     outcome_type: str, vcov: str | None, exposure: str | None, design,
                     options: dict) -> None:
    """The checks :func:`estimate` makes on its arguments before using any row."""
    check_treatment(data, treatment)
    if outcome not in data.columns:
        raise DataValidationError(f"estimate: outcome column '{outcome}' is not in the data.")
    if outcome == treatment:
        raise ParamsError("estimate: outcome and treatment must be different columns.")
    if outcome_type not in ("continuous", "binary", "count"):
        raise ParamsError(f"estimate: outcome_type must be 'continuous', 'binary' or 'count', "
                          f"not '{outcome_type}'. For other models use evalkit.models.")
    if exposure is not None and outcome_type != "count":
        raise ParamsError("estimate: exposure is only used with outcome_type='count'.")
    if exposure is not None and exposure not in data.columns:
        raise DataValidationError(f"estimate: exposure column '{exposure}' is not in the data.")
    if design is not None:
        if options:
            raise ParamsError(f"estimate: options {sorted(options)} cannot be combined with a "
                              "fitted design; they were fixed when the design was made.")
        want = {"match": MatchResult, "ipw": WeightResult}.get(method)
        if want is None or not isinstance(design, want):
            raise ParamsError(f"estimate: design must be a MatchResult for method='match' or a "
                              f"WeightResult for method='ipw'; got {type(design).__name__} with "
                              f"method='{method}'.")
        if design.treatment != treatment:
            raise ParamsError(f"estimate: the design was fitted for treatment "
                              f"'{design.treatment}', not '{treatment}'.")
    if vcov is not None and vcov not in _VCOVS:
        raise ParamsError(f"estimate: vcov must be one of {_VCOVS}, not '{vcov}'.")


def _check_outcome_values(sub: pd.DataFrame, outcome: str, treatment: str,
                          outcome_type: str, exposure: str | None) -> None:
    """The checks :func:`estimate` makes on the outcome (and exposure) of the rows used;
    warns (for its caller) when an arm of a binary outcome has no or only events."""
    if outcome_type == "binary":
        vals = set(pd.unique(sub[outcome]))
        if not vals <= {0, 1, True, False}:
            raise DataValidationError(f"estimate: outcome_type='binary' but '{outcome}' holds "
                                      f"values other than 0/1: {sorted(map(str, vals))[:5]}.")
        t = sub[treatment].astype(float)
        if sub[outcome].nunique() < 2:
            raise DataValidationError(
                f"estimate: '{outcome}' has {'no' if not sub[outcome].astype(float).any() else 'only'} "
                "events in both arms; there is no contrast to estimate.")
        for arm, g in (("treated", 1), ("control", 0)):
            yv = sub.loc[t == g, outcome].astype(float)
            if yv.sum() == 0 or yv.sum() == len(yv):
                warnings.warn(
                    f"estimate: the {arm} arm has {'no' if yv.sum() == 0 else 'only'} events in "
                    f"'{outcome}'; the risk difference and its SE are unreliable.",
                    StatisticalWarning, stacklevel=3)
    elif sub[outcome].nunique() < 2:
        raise DataValidationError(f"estimate: outcome '{outcome}' is constant in the rows used.")
    if outcome_type == "count":
        yv = sub[outcome].astype(float)
        if (yv < 0).any():
            raise DataValidationError(f"estimate: outcome_type='count' but '{outcome}' has "
                                      f"{int((yv < 0).sum())} negative values.")
        if exposure is not None and not (sub[exposure].astype(float) > 0).all():
            raise DataValidationError(f"estimate: exposure '{exposure}' must be > 0 in every row "
                                      "used (it enters as log(exposure)).")


def estimate(data: pd.DataFrame, outcome: str, treatment: str, formula: str,
             method: str = "match", estimand: str = "ATT", outcome_type: str = "continuous",
             adjust: str | None = None, vcov: str | None = None, alpha: float = 0.05,
             exposure: str | None = None, design=None, **options) -> Effect:
    """Estimate a treatment effect with confounding control.

    ``method="match"`` (default) reproduces the MatchIt workflow:
    ``m <- matchit(treat ~ covariates, data, method = "nearest", ...)``, then
    ``lm(outcome ~ treat, data = match.data(m), weights = weights)`` and
    ``coeftest(fit, vcov. = vcovCL, cluster = ~subclass)``: the coefficient on the
    treatment in a weighted regression on the matched sample, with standard errors
    clustered on matched sets (sandwich's HC1 type: G/(G-1) * (n-1)/(n-k)), and
    t-based CI/p-value with the residual degrees of freedom. After matching with
    replacement the matched sets overlap, so HC3 robust SEs are used instead.

    ``method="ipw"``: weights from :func:`~evalkit.causal.weights` (``estimand`` ATE,
    ATT, ATC or ATO; options ``stabilize``, ``trim``), then a weighted least-squares
    regression of the outcome on treatment with HC0 (plain sandwich) SEs. These ignore
    the estimation of the propensity score, which makes them conservative for the ATE.

    ``method="regression"``: ordinary least squares of the outcome on treatment plus the
    ``formula`` covariates, HC1 SEs. The coefficient is the conditional effect; it equals
    the ATE only if the effect is the same for everyone, so ``estimand`` is reported as
    "ATE" with that caveat in ``diagnostics``.

    Parameters
    ----------
    data : DataFrame
        One row per unit; not modified.
    outcome, treatment : str
        Outcome column; 0/1 treatment column.
    formula : str
        Confounders, as a right-hand side or ``"treat ~ ..."``: the propensity model for
        match/ipw, the adjustment set for regression.
    method : {"match", "ipw", "regression"}
    estimand : str
        ``"ATT"``/``"ATC"`` for matching; ``"ATE"``, ``"ATT"``, ``"ATC"``, ``"ATO"`` for ipw.
    outcome_type : {"continuous", "binary", "count"}
        ``"binary"`` (0/1 outcome) gives a risk difference (linear probability model).
        ``"count"`` (visits, days) gives a rate ratio: a weighted Poisson regression
        (log link, ``log(exposure)`` offset) with the same sandwich SEs, normal-based CI;
        ``estimate``, ``ci_low`` and ``ci_high`` are then ratios and ``std_error`` is the
        SE of the log rate ratio (the results vocabulary). Other ratio measures belong to
        ``evalkit.models``.
    adjust : str, optional
        Extra covariates for the outcome regression after matching/weighting
        (doubly robust flavour), e.g. ``"age + educ"``.
    vcov : {"cluster", "cluster_HC0", "HC0", "HC1", "HC2", "HC3", "model"}, optional
        Override the default SE type described above.
    alpha : float
        1 - confidence level.
    exposure : str, optional
        Person-time column (e.g. member-months) for ``outcome_type="count"``.
    design : MatchResult or WeightResult, optional
        A matching (``method="match"``) or weighting (``method="ipw"``) already fitted on
        ``data``, reused instead of being refitted: every outcome of a study is then
        estimated on the very same matched sets or weights (and ``**options`` must be
        empty).
    **options
        Passed to :func:`~evalkit.causal.match` (``ratio``, ``replace``, ``caliper``,
        ``exact``, ``order``, ``distance``, ``seed``) or :func:`~evalkit.causal.weights`
        (``stabilize``, ``trim``).

    Returns
    -------
    Effect

    Examples
    --------
    >>> eff = estimate(lalonde, "re78", "treat",
    ...                "age + educ + race + married + nodegree + re74 + re75")
    >>> round(eff.estimate, 2), round(eff.std_error, 2)               # doctest: +SKIP
    (894.37, 705.23)

    References
    ----------
    Stuart EA (2010). Matching methods for causal inference: a review and a look forward.
    Stat Sci 25:1-21.
    Austin PC (2011). An introduction to propensity score methods for reducing the
    effects of confounding in observational studies. Multivar Behav Res 46:399-424.
    Walker AM et al. (2013). A tool for assessing the feasibility of comparative
    effectiveness research. Comp Eff Res 3:11-20.
    """
    release_fits(len(data))   # earlier fits' arrays, before this one's
    _check_arguments(data, outcome, treatment, method, outcome_type, vcov, exposure, design,
                     options)
    rhs = split_formula(formula, treatment)
    if adjust is not None:
        adjust = split_formula(adjust)
        formula_columns(adjust, data)
    # rows with a missing outcome are left out before anything is fitted
    base_cols = [treatment, outcome, *formula_columns(rhs, data)]
    if exposure is not None:
        base_cols.append(exposure)
    if adjust:
        base_cols += formula_columns(adjust, data)
    used, dropped = complete_rows(data, base_cols, "estimate")
    sub = data.loc[used]
    _check_outcome_values(sub, outcome, treatment, outcome_type, exposure)
    scale = {"binary": "risk_difference", "count": "rate_ratio"}.get(outcome_type, "difference")
    fit_outcome = (
        (lambda df, adj, w, vc, groups: _fit_weighted_poisson(
            df, outcome, treatment, adj, w, vc, groups, alpha, exposure))
        if outcome_type == "count" else
        (lambda df, adj, w, vc, groups: _fit_weighted_ols(
            df, outcome, treatment, adj, w, vc, groups, alpha)))

    diagnostics: dict = {"dropped": dropped}
    if method == "match":
        unknown = set(options) - {"ratio", "replace", "caliper", "exact", "order", "distance", "seed"}
        if unknown:
            raise ParamsError(f"estimate: unknown option(s) for method='match': {sorted(unknown)}.")
        if design is None:
            m = match(sub, treatment, rhs, estimand=estimand, **options)
            md = m.data
        else:   # the matched sets of the design, on the rows (and columns) of `data`
            m = design
            keep = m.data.index[m.data.index.isin(sub.index)]
            md = sub.loc[keep].assign(**{c: m.data.loc[keep, c]
                                         for c in ("distance", "weights", "subclass")})
        vc = vcov or ("HC3" if m.replace else "cluster")
        groups = None
        if vc.startswith("cluster"):
            if m.replace:
                raise ParamsError("estimate: matched sets overlap after matching with replacement; "
                                  "use vcov='HC3' (default) instead of cluster.")
            groups = md["subclass"].to_numpy(dtype=np.int64)
        w = md["weights"].to_numpy(float)
        fit, table, j, se_model = fit_outcome(md, adjust, w, vc, groups)
        bal = m.balance()
        adjustment = m
        ps_scores, ps_t = m.propensity.scores.loc[sub.index], sub[treatment]
        t_md = md[treatment].astype(float).to_numpy()
        ess_arm = {"treated": ess(w[t_md == 1]), "control": ess(w[t_md == 0])}
        n1, n0 = int((t_md == 1).sum()), int((t_md == 0).sum())
        est_label = m.estimand
        diagnostics.update({
            "n_clusters": None if groups is None else int(len(np.unique(groups))),
            "caliper": m.caliper, "n_unmatched_focal": int(len(m.unmatched_focal))})
        if len(m.unmatched_focal):
            diagnostics["estimand_note"] = (
                f"{len(m.unmatched_focal)} focal units were not matched (caliper/exact); the "
                "estimate refers to the matched focal units only.")
    elif method == "ipw":
        unknown = set(options) - {"stabilize", "trim"}
        if unknown:
            raise ParamsError(f"estimate: unknown option(s) for method='ipw': {sorted(unknown)}.")
        wr = design if design is not None else weights(sub, treatment, rhs, estimand=estimand,
                                                        **options)
        w = wr.weights.loc[sub.index].to_numpy(float)
        vc = vcov or "HC0"
        if vc.startswith("cluster"):
            raise ParamsError("estimate: there are no clusters after weighting; use HC0-HC3.")
        fit, table, j, se_model = fit_outcome(sub, adjust, w, vc, None)
        bal = wr.balance()
        adjustment = wr
        ps_scores, ps_t = wr.propensity.scores.loc[sub.index], sub[treatment]
        t_all = sub[treatment].astype(float).to_numpy()
        ess_arm = dict(wr.ess)
        n1, n0 = int((t_all == 1).sum()), int((t_all == 0).sum())
        est_label = wr.estimand
    elif method == "regression":
        if options:
            raise ParamsError(f"estimate: method='regression' takes no options {sorted(options)}.")
        vc = vcov or "HC1"
        if vc.startswith("cluster"):
            raise ParamsError("estimate: no clusters for method='regression'; use HC0-HC3.")
        adj = rhs + (f" + {adjust}" if adjust else "")
        w = np.ones(len(sub))
        fit, table, j, se_model = fit_outcome(sub, adj, w, vc, None)
        bal = balance(sub, treatment, rhs, estimand="ATE")
        adjustment = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StatisticalWarning)
            try:
                ps = propensity(sub, treatment, rhs)
                ps_scores, ps_t = ps.scores, sub[treatment]
            except Exception:  # equipoise is a diagnostic only
                ps_scores = None
        t_all = sub[treatment].astype(float).to_numpy()
        n1, n0 = int((t_all == 1).sum()), int((t_all == 0).sum())
        ess_arm = {"treated": float(n1), "control": float(n0)}
        est_label = "ATE"
        diagnostics["balance_stage"] = "before adjustment (regression does not reweight)"
        diagnostics["estimand_note"] = ("regression coefficient = conditional effect; equals the "
                                        "ATE only if the effect is homogeneous")
    else:
        raise ParamsError(f"estimate: method must be 'match', 'ipw' or 'regression', not '{method}'.")

    row = table.iloc[j]
    if outcome_type == "count":   # report the rate ratio; the SE stays on the log scale
        row = row.copy()
        for c in ("estimate", "ci_low", "ci_high"):
            row[c] = float(np.exp(row[c]))
    mx = bal.max_abs_smd() if bal is not None else float("nan")
    diagnostics.update({
        "max_abs_smd": mx, "balance_ok": bool(mx < 0.1),
        "equipoise": equipoise(ps_scores, ps_t) if ps_scores is not None else None,
        "ess": ess_arm, "vcov": vc, "df_resid": float(fit.df_resid), "se_model": se_model,
        "outcome_type": outcome_type, "exposure": exposure,
    })
    return Effect(
        estimate=float(row["estimate"]), std_error=float(row["std_error"]),
        ci_low=float(row["ci_low"]), ci_high=float(row["ci_high"]),
        p_value=float(row["p_value"]), n_treated=n1, n_control=n0, method=method,
        estimand=est_label, balance=bal, diagnostics=diagnostics, outcome=outcome,
        treatment=treatment, scale=scale, alpha=alpha, table=table, adjustment=adjustment,
        model=fit)
