"""The cohort design: confounding control fitted once, checked, then used for every outcome.

A study of referral to self-help groups compares members who were referred with members
who were not. They differ before any referral (sicker members are referred more often),
so the comparison is made on a *design* that makes the arms alike on measured baseline
characteristics: propensity-score matching, inverse-probability (or overlap) weighting,
or outcome regression (:mod:`evalkit.causal` does the statistics).

As in OHDSI's CohortMethod, the design is judged *before* any effect is read:

1. :func:`fit_design` fits the propensity model and the matching or weighting the params
   ask for (``design:`` section, :class:`evalkit.params.DesignParams`);
2. :func:`diagnostics` says whether the arms are now alike (largest standardised mean
   difference), whether there is enough overlap (empirical equipoise), whether the
   weights leave enough information (effective sample size) and, once negative controls
   have been run, how large the design's systematic error is (EASE). Each row passes or
   fails; the estimates of a failing design are still shown and recorded, marked as not
   passing;
3. :func:`effects` estimates every outcome on the same design (:func:`evalkit.causal.estimate`
   with the fitted design reused); counts are rate ratios with member-months as exposure,
   costs dollar differences and ratios of means;
4. :func:`run_negative_controls` estimates outcomes the program cannot change on the same
   design, fits the empirical null and calibrates the main estimates (Schuemie et al.
   2014, 2018).

The design is stored in the run's ``work`` folder (:func:`save_design`: member id,
treatment, propensity score, weight, matched set), so later workbooks can add the
design-adjusted estimate beside their own (:func:`effects_from_table`).

References
----------
Schuemie MJ et al. (2020). Principles of Large-scale Evidence Generation and Evaluation
across a Network of Databases (LEGEND). JAMIA 27:1331-1337 (the study diagnostics).
Walker AM et al. (2013). A tool for assessing the feasibility of comparative
effectiveness research. Comp Eff Res 3:11-20 (empirical equipoise).
Austin PC (2011). Optimal caliper widths for propensity-score matching. Pharm Stat
10:150-161 (a caliper of 0.2 SD of the logit).
"""
from __future__ import annotations

import json
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats

from .. import causal
from ..causal import evalue
from ..causal.estimate import _fit_weighted_ols, _fit_weighted_poisson
from ..data.load import _lit, _q
from ..errors import DataValidationError, ParamsError, StatisticalWarning
from ..limits import release_fits
from ..results import DESIGN_FILE, DESIGN_META
from ..style import FAIL_COLOR, PASS_COLOR, ratio_axis
from ..terms import Term, formula_names, parse_term, term_columns
from .spec import model_frame

#: Prefix of negative-control outcome columns built from condition codes.
NC_PREFIX = "nc_"
TREATMENT = "treated"



# --------------------------------------------------------------------------------------
# params helpers
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DesignSpec:
    """The resolved design: what the params ask for, with defaults filled in.

    ``formula`` is the propensity model's right-hand side on the columns of the frame
    returned by :func:`design_frame` (a ``log1p(x)`` term enters as column ``log1p_x``).
    """

    method: str
    estimand: str
    formula: str
    options: dict
    max_smd: float = 0.1
    min_equipoise: float = 0.5
    min_ess_share: float = 0.1
    max_ease: float = 0.25
    terms: list | None = None   # the covariate terms as written (None: design.formula)
    left_out: list = field(default_factory=list)   # terms that could not be estimated

    @property
    def label(self) -> str:
        """How the design is described in tables and results.json."""
        if self.method == "match":
            o = self.options
            cal = (f", caliper {o['caliper']:g} SD of the {'logit of the ' if o['distance'] == 'logit' else ''}"
                   "propensity score") if o.get("caliper") else ""
            rep = "with" if o.get("replace") else "without"
            ex = f", exact on {', '.join(o['exact'])}" if o.get("exact") else ""
            return (f"propensity-score matching {o.get('ratio', 1)}:1 {rep} replacement{cal}{ex}")
        if self.method == "ipw":
            o = self.options
            kind = {"ATE": "inverse-probability", "ATT": "odds (ATT)",
                    "ATO": "overlap"}[self.estimand]
            stab = " stabilised" if self.estimand == "ATE" and o.get("stabilize") else ""
            trim = f", trimmed at the {o['trim']:g} quantile" if o.get("trim") else ""
            return f"{kind}{stab} propensity-score weighting{trim}"
        return "outcome regression on the baseline covariates"


def _categorical(s: pd.Series) -> bool:
    return pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s)


def _numeric_text(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Text columns whose every value is a number become numbers (a CSV read as text).

    Person-level files read from CSV arrive as text; a column such as ``age`` must enter
    the propensity model as a number, while ``C(sex)`` still makes a coded column a
    category.
    """
    out = None
    for c in dict.fromkeys(columns):
        if c not in frame.columns or pd.api.types.is_numeric_dtype(frame[c]) \
                or pd.api.types.is_bool_dtype(frame[c]):
            continue
        s = frame[c]
        num = pd.to_numeric(s, errors="coerce")
        if num.notna().sum() == s.notna().sum() and s.notna().any():
            out = frame.copy() if out is None else out
            whole = num.notna().all() and bool((num % 1 == 0).all())
            out[c] = num.astype("int64" if whole else float)
    return frame if out is None else out


def design_frame(frame: pd.DataFrame, params, default_covariates: list[str]
                 ) -> tuple[pd.DataFrame, DesignSpec]:
    """The frame the design is fitted on, and the resolved :class:`DesignSpec`.

    Parameters
    ----------
    frame : DataFrame
        One row per member with a 0/1 ``treated`` column (``Study.treated_frame()``).
    params : DesignParams
        The ``design`` section of the params.
    default_covariates : list of str
        Covariate terms used when the params give neither ``covariates`` nor ``formula``:
        the spec's adjustment set (``Study.covariates()``), so the propensity and the
        outcome models adjust for the same terms. Each term enters as written
        (:func:`evalkit.analysis.spec.model_frame`); a text column as ``C(column)``; a term that
        is constant or the treatment in disguise is left out.

    Returns
    -------
    frame, spec
        A copy of ``frame`` with a ``log1p_x`` column for each ``log1p(x)`` term, and
        the spec.
    """
    if TREATMENT not in frame.columns:
        raise DataValidationError(f"design: the frame needs a 0/1 '{TREATMENT}' column "
                                  "(use Study.treated_frame()).")
    given = params.covariates is not None
    terms = [parse_term(t) for t in (params.covariates if given else default_covariates)]
    frame = _numeric_text(frame, formula_names(params.formula) if params.formula
                          else term_columns(terms))
    if params.formula:
        missing = [c for c in formula_names(params.formula) if c not in frame.columns]
        if missing:
            raise DataValidationError(
                f"design.formula uses column(s) {missing} that are not in the analysis frame "
                f"(columns: {', '.join(map(str, frame.columns[:25]))}). Check the spelling.")
        out, rhs = frame.copy(), params.formula
    else:
        missing = [t.column for t in terms if t.column not in frame.columns]
        if missing:
            raise DataValidationError(
                f"{'design' if given else 'study'}.covariates {missing} are not in the analysis "
                f"frame (columns: {', '.join(map(str, frame.columns[:25]))}). Check the spelling.")
        # a text (or true/false) column enters as categories, as the spec writes it
        terms = [Term(t.column, "C", t.source) if t.transform is None and
                 _categorical(frame[t.column]) else t for t in terms]
        mf = model_frame(frame, terms, TREATMENT)
        if not mf.names:
            raise DataValidationError(
                "design: no usable covariate (varying, not the treatment) among "
                f"{[t.expression for t in terms]}: {mf.left_out}; name them in "
                "study.covariates, design.covariates or design.formula.")
        out, rhs = mf.frame.copy(), " + ".join(mf.names)
    for c in params.exact:
        if c not in frame.columns:
            raise DataValidationError(f"design.exact: column '{c}' is not in the analysis frame.")
    method = params.method
    estimand = params.estimand or ("ATT" if method == "match" else "ATE")
    if method == "match":
        options = {"ratio": params.ratio, "replace": params.replace, "caliper": params.caliper,
                   "distance": params.distance, "exact": list(params.exact) or None}
    elif method == "ipw":
        options = {"stabilize": params.stabilize, "trim": params.trim}
    else:
        options = {}
    return out, DesignSpec(method, estimand, rhs, options, params.max_smd, params.min_equipoise,
                           params.min_ess_share, params.max_ease,
                           None if params.formula else mf.adjusted_for,
                           [] if params.formula else mf.left_out)


# --------------------------------------------------------------------------------------
# fitting the design
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class CohortDesign:
    """A fitted design as a value.

    Attributes
    ----------
    spec : DesignSpec
    frame : DataFrame
        The rows the design was fitted on (with ``log1p_*`` columns); not modified.
    propensity : PropensityScore
        The fitted propensity model (also for regression, as a diagnostic).
    adjustment : MatchResult, WeightResult or None
        The matching or weighting (None for regression).
    weights : Series
        Design weight per row of ``frame`` (0 = not in the matched sample; 1 for all
        rows with regression).
    subclass : Series
        Matched set per row (<NA> when unmatched, with weighting or regression, or when
        matching with replacement).
    balance : Balance
        Covariate balance before and (matching, weighting) after adjustment.
    equipoise : dict
        :func:`evalkit.causal.equipoise` of the propensity score.
    ess : dict
        Effective sample size per arm under the design weights.
    """

    spec: DesignSpec
    frame: pd.DataFrame = field(repr=False)
    propensity: object = field(repr=False)
    adjustment: object = field(repr=False)
    weights: pd.Series = field(repr=False)
    subclass: pd.Series = field(repr=False)
    balance: object = field(repr=False)
    equipoise: dict = field(repr=False)
    ess: dict = field(repr=False)
    n: pd.DataFrame = field(default=None, repr=False)

    def __repr__(self) -> str:   # never the member-level frame
        return self.summary()

    def table(self) -> pd.DataFrame:
        """The design per member: member_id, treated, propensity_score, weight, subclass."""
        return pd.DataFrame({
            "member_id": self.frame["member_id"].to_numpy(),
            TREATMENT: self.frame[TREATMENT].astype(int).to_numpy(),
            "propensity_score": self.propensity.scores.reindex(self.frame.index).to_numpy(float),
            "weight": self.weights.reindex(self.frame.index).to_numpy(float),
            "subclass": self.subclass.reindex(self.frame.index).astype("Int64").to_numpy(),
        })

    def summary(self) -> str:
        return (f"{self.spec.label} ({self.spec.estimand}); propensity model: treated ~ "
                f"{self.spec.formula}\n" + self.n.to_string())

    def _repr_html_(self) -> str:
        return f"<pre>{self.summary()}</pre>"


def fit_design(frame: pd.DataFrame, spec: DesignSpec) -> CohortDesign:
    """Fit the propensity model and the matching or weighting of ``spec`` on ``frame``.

    ``frame`` is the first value returned by :func:`design_frame`. Matching uses
    :func:`evalkit.causal.match` (greedy nearest neighbour, MatchIt's algorithm),
    weighting :func:`evalkit.causal.weights`; regression fits the propensity model only
    for the overlap and equipoise diagnostics.
    """
    t = frame[TREATMENT].astype(int).to_numpy()
    if spec.method == "match":
        adj = causal.match(frame, TREATMENT, spec.formula, estimand="ATT", **spec.options)
        ps = adj.propensity
        w = adj.weights.reindex(frame.index).fillna(0.0)
        sub = adj.subclass.reindex(frame.index)
        bal = adj.balance()
    elif spec.method == "ipw":
        adj = causal.weights(frame, TREATMENT, spec.formula, estimand=spec.estimand, **spec.options)
        ps = adj.propensity
        w = adj.weights.reindex(frame.index).fillna(0.0)
        sub = pd.Series(pd.NA, index=frame.index, dtype="Int64")
        bal = adj.balance()
    elif spec.method == "regression":
        adj = None
        ps = causal.propensity(frame, TREATMENT, spec.formula)
        w = pd.Series(1.0, index=frame.index)
        sub = pd.Series(pd.NA, index=frame.index, dtype="Int64")
        bal = causal.balance(frame, TREATMENT, spec.formula, estimand="ATE",
                             distance=ps.scores.loc[ps.used])
    else:  # pragma: no cover - params allow only the three
        raise ParamsError(f"design.method '{spec.method}' is unknown")
    eq = causal.equipoise(ps.scores.reindex(frame.index), t)
    wv = w.to_numpy(float)
    ess = {"treated": causal.ess(wv[(t == 1) & (wv > 0)]),
           "control": causal.ess(wv[(t == 0) & (wv > 0)])}
    n = pd.DataFrame({
        "members": [int((t == 1).sum()), int((t == 0).sum())],
        "in the design (weight > 0)": [int(((t == 1) & (wv > 0)).sum()),
                                        int(((t == 0) & (wv > 0)).sum())],
        "effective sample size": [round(ess["treated"], 1), round(ess["control"], 1)],
    }, index=["referred (self_help)", "comparison (control)"])
    return CohortDesign(spec, frame, ps, adj, w, sub, bal, eq, ess, n)


def diagnostics(design: CohortDesign, null=None) -> pd.DataFrame:
    """The design's diagnostics, each with its threshold and whether it passes.

    * **balance**: the largest |standardised mean difference| of a covariate after
      matching or weighting must be below ``max_smd`` (0.1; Austin 2009). Regression
      does not make the arms alike (it models the outcome), so there the row shows the
      unadjusted imbalance and does not gate;
    * **equipoise**: in each arm, the share of members whose preference score (the
      propensity score rescaled for the share referred) lies in [0.3, 0.7] must be at
      least ``min_equipoise`` (Walker et al. 2013): otherwise the arms barely overlap
      and any adjustment leans on a few members;
    * **effective sample size**: under the design weights each arm must keep at least
      ``min_ess_share`` of its members' worth of information;
    * **systematic error** (with ``null``): the expected absolute systematic error
      (EASE, log scale) of the empirical null from the negative controls must be below
      ``max_ease`` (0.25, as OHDSI's study diagnostics).

    Returns
    -------
    DataFrame
        ``diagnostic, value, threshold, passed, note``; ``passed`` is True/False, or None
        when the row does not gate.
    """
    s = design.spec
    rows = []
    mx = design.balance.max_abs_smd()
    if s.method == "regression":
        rows.append({"diagnostic": "balance: largest |SMD| (before adjustment)", "value": mx,
                     "threshold": f"< {s.max_smd:g}", "passed": None,
                     "note": "regression does not reweight; shown, not gating"})
    else:
        rows.append({"diagnostic": "balance: largest |SMD| after adjustment", "value": mx,
                     "threshold": f"< {s.max_smd:g}", "passed": bool(mx < s.max_smd),
                     "note": ""})
    eq = design.equipoise
    low = min(eq["share_treated"], eq["share_control"])
    rows.append({"diagnostic": "equipoise: smallest share of an arm with preference score "
                               "0.3-0.7", "value": low, "threshold": f">= {s.min_equipoise:g}",
                 "passed": bool(low >= s.min_equipoise),
                 "note": f"referred {eq['share_treated']:.0%}, comparison {eq['share_control']:.0%}"})
    n = design.n
    shares = [design.ess["treated"] / max(n.iloc[0]["members"], 1),
              design.ess["control"] / max(n.iloc[1]["members"], 1)]
    rows.append({"diagnostic": "effective sample size: smallest share of an arm's members",
                 "value": min(shares), "threshold": f">= {s.min_ess_share:g}",
                 "passed": bool(min(shares) >= s.min_ess_share),
                 "note": f"referred {design.ess['treated']:.0f}, comparison "
                         f"{design.ess['control']:.0f}"})
    if null is not None:
        e = ease(null)
        rows.append({"diagnostic": "systematic error: EASE from the negative controls",
                     "value": e, "threshold": f"< {s.max_ease:g}", "passed": bool(e < s.max_ease),
                     "note": f"empirical null mean {null.mu:+.3f}, SD {null.sigma:.3f} (log scale)"})
    else:
        rows.append({"diagnostic": "systematic error: EASE from the negative controls",
                     "value": float("nan"), "threshold": f"< {s.max_ease:g}", "passed": None,
                     "note": "no negative controls were run"})
    out = pd.DataFrame(rows)
    out["passed"] = out["passed"].astype(object)
    return out


def passes(diag: pd.DataFrame) -> bool:
    """True when no gating diagnostic failed."""
    return not any(v is False for v in diag["passed"])


def ease(null) -> float:
    r"""Expected absolute systematic error of an empirical null N(mu, sigma^2).

    .. math:: E|X| = \sigma \sqrt{2/\pi}\, e^{-\mu^2 / 2\sigma^2} + \mu (1 - 2\Phi(-\mu/\sigma)),

    the mean of a folded normal (Schuemie et al. 2020, ``EmpiricalCalibration::
    computeExpectedAbsoluteSystematicError`` for a fitted null); ``|mu|`` when sigma is 0.
    Written out here because it is one line of algebra that no library exposes.
    """
    mu, sigma = float(null.mu), float(null.sigma)
    if sigma <= 0:
        return abs(mu)
    return float(sigma * math.sqrt(2 / math.pi) * math.exp(-mu * mu / (2 * sigma * sigma))
                 + mu * (1 - 2 * stats.norm.cdf(-mu / sigma)))


# --------------------------------------------------------------------------------------
# outcomes
# --------------------------------------------------------------------------------------
_SCALE = {"continuous": "difference", "binary": "risk_difference", "count": "rate_ratio",
          "cost": "cost_difference"}


def _method_label(design_or_spec, kind: str, vcov: str) -> str:
    spec = design_or_spec.spec if isinstance(design_or_spec, CohortDesign) else design_or_spec
    model = {"count": "weighted Poisson (member-months offset)",
             "cost": "weighted difference in means", "continuous": "weighted difference in means",
             "binary": "weighted difference in proportions"}[kind]
    if spec.method == "regression":
        model = model.replace("weighted ", "") + " adjusted for the covariates"
    se = {"cluster": "SEs clustered on matched sets", "HC3": "HC3 robust SEs",
          "HC0": "robust (sandwich) SEs", "HC1": "HC1 robust SEs"}.get(vcov, vcov)
    return f"{spec.label}; {model}; {se}"


def _record(eff, outcome: str, kind: str, design, n: dict | None = None) -> dict:
    scale = _SCALE[kind]
    return {"outcome": outcome, "contrast": "self_help vs control", "estimand": eff.estimand,
            "method": _method_label(design, kind, eff.diagnostics.get("vcov")),
            "scale": scale, "estimate": eff.estimate, "std_error": eff.std_error,
            "ci_low": eff.ci_low, "ci_high": eff.ci_high, "p_value": eff.p_value,
            "n_treated": eff.n_treated, "n_control": eff.n_control,
            **_structured(design.spec if isinstance(design, CohortDesign) else design, kind)}


def _structured(spec: "DesignSpec", kind: str) -> dict:
    """The structured fields of a design record: analysis, model, family, adjusted_for."""
    model = {"count": "Poisson regression", "ratio": "quasi-Poisson regression"}.get(
        kind, "linear regression" if spec.method == "regression" else "difference in means")
    return {"analysis": "design", "model": f"{spec.method}: {model}",
            "family": "poisson" if kind in ("count", "ratio") else "gaussian",
            "adjusted_for": list(spec.terms) if spec.terms is not None
            else [f"propensity model: {spec.formula}"]}


def _estimate(design: CohortDesign, data: pd.DataFrame, outcome: str, kind: str,
              exposure: str | None):
    s = design.spec
    outcome_type = {"cost": "continuous"}.get(kind, kind)
    kw = {"exposure": exposure} if kind == "count" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StatisticalWarning)
        if s.method == "regression":
            return causal.estimate(data, outcome, TREATMENT, s.formula, method="regression",
                                   outcome_type=outcome_type, **kw)
        return causal.estimate(data, outcome, TREATMENT, s.formula, method=s.method,
                               estimand=s.estimand, outcome_type=outcome_type,
                               design=design.adjustment, **kw)


def effects(design: CohortDesign, outcomes: list[str], kinds: dict[str, str],
            exposure: str | None = "member_months", data: pd.DataFrame | None = None
            ) -> tuple[pd.DataFrame, dict]:
    """Every outcome estimated on the same fitted design.

    Counts give the rate ratio (weighted Poisson regression with a log member-months
    offset and sandwich SEs: clustered on matched sets after matching without
    replacement, HC3 with replacement, HC0 after weighting, HC1 for regression); costs
    give the difference in dollars per member (``cost_difference``) and the ratio of
    means (``ratio``, weighted quasi-Poisson); continuous and binary outcomes the
    difference in means or proportions. All by :func:`evalkit.causal.estimate` with the
    design reused, so every outcome sees the same matched sets or weights.

    Parameters
    ----------
    design : CohortDesign
    outcomes : list of str
    kinds : dict
        From :meth:`evalkit.analysis.study.Study.design_outcomes`.
    exposure : str, optional
        Member-months column for counts (None: counts per member).
    data : DataFrame, optional
        Rows of ``design.frame`` with extra outcome columns (e.g. negative controls);
        default ``design.frame``.

    Returns
    -------
    records, fits
        Records in the results vocabulary (ratio SEs on the log scale), and the
        :class:`~evalkit.causal.Effect` of each outcome (cost ratios under
        ``"<outcome>:ratio"``).
    """
    data = design.frame if data is None else data
    if exposure is not None and exposure not in data.columns:
        exposure = None
    rows, fits = [], {}
    for o in outcomes:
        kind = kinds[o]
        eff = _estimate(design, data, o, kind, exposure)
        fits[o] = eff
        rows.append(_record(eff, o, kind, design))
        if kind == "cost":
            ratio = _estimate(design, data, o, "count", None)
            fits[f"{o}:ratio"] = ratio
            rec = _record(ratio, o, "count", design)
            rec.update(_structured(design.spec, "ratio"))
            rec.update(scale="ratio", method=rec["method"].replace(
                "weighted Poisson (member-months offset)", "weighted quasi-Poisson (ratio of means)"))
            rows.append(rec)
    return pd.DataFrame(rows), fits


def crude_effects(frame: pd.DataFrame, outcomes: list[str], kinds: dict[str, str],
                  exposure: str | None = "member_months", alpha: float = 0.05) -> pd.DataFrame:
    """Unadjusted comparisons on the same scales as :func:`effects` (for contrast).

    The same outcome models with every member weighted 1 and no covariates, HC0 robust
    SEs: what a naive comparison of the arms says.
    """
    expo = exposure if exposure in frame.columns else None
    w = np.ones(len(frame))
    n1, n0 = int((frame[TREATMENT] == 1).sum()), int((frame[TREATMENT] == 0).sum())
    rows = []
    for o in outcomes:
        for k, scale in _fits_for(kinds[o]):
            r = _fit_scaled(frame, o, k, None, w, "HC0", None, alpha, expo)
            rows.append({"outcome": o, "contrast": "self_help vs control", "estimand": "crude",
                         "method": "crude comparison (no adjustment); robust SEs", "scale": scale,
                         **r, "n_treated": n1, "n_control": n0, "analysis": "crude",
                         "model": {"count": "Poisson regression", "ratio":
                                   "quasi-Poisson regression"}.get(k, "difference in means"),
                         "family": "poisson" if k in ("count", "ratio") else "gaussian",
                         "adjusted_for": []})
    return pd.DataFrame(rows)


def _fits_for(kind: str) -> list[tuple[str, str]]:
    """(model kind, results scale) pairs for one outcome: costs also as a ratio of means."""
    return [(kind, _SCALE[kind])] + ([("ratio", "ratio")] if kind == "cost" else [])


def _fit_scaled(d: pd.DataFrame, outcome: str, k: str, adjust, w, vcov, groups, alpha,
                exposure) -> dict:
    """One weighted outcome model, read on its results scale: rate ratios and ratios of
    means (``k`` count/ratio: weighted Poisson, exponentiated; ``std_error`` of the log)
    or differences (weighted least squares)."""
    release_fits(len(d))   # earlier fits' arrays, before this one's
    if k in ("count", "ratio"):
        _, t, j, _ = _fit_weighted_poisson(d, outcome, TREATMENT, adjust, w, vcov, groups,
                                           alpha, exposure if k == "count" else None)
        r = t.iloc[j]
        est, lo, hi = (math.exp(r[c]) for c in ("estimate", "ci_low", "ci_high"))
    else:
        _, t, j, _ = _fit_weighted_ols(d, outcome, TREATMENT, adjust, w, vcov, groups, alpha)
        r = t.iloc[j]
        est, lo, hi = (float(r[c]) for c in ("estimate", "ci_low", "ci_high"))
    return {"estimate": est, "std_error": float(r["std_error"]), "ci_low": lo, "ci_high": hi,
            "p_value": float(r["p_value"])}


def balance_table(design: CohortDesign) -> pd.DataFrame:
    """Standardised mean differences before and after adjustment, one row per covariate."""
    t = design.balance.table
    keep = {"term": "covariate", "means_treated_before": "referred mean",
            "means_control_before": "comparison mean (before)", "smd_before": "SMD before"}
    if "smd_after" in t:
        keep |= {"means_control_after": "comparison mean (after)", "smd_after": "SMD after",
                 "var_ratio_after": "variance ratio after"}
    out = t[list(keep)].rename(columns=keep)
    out = out[out["covariate"] != "distance"]
    return out.round(3).reset_index(drop=True)


def effects_display(records: pd.DataFrame, truth: dict | None = None) -> pd.DataFrame:
    """Estimates with their intervals, calibrated intervals and the diagnostics verdict,
    readable (one row per outcome x scale). Outcomes keep their names
    (``show.table(..., spec=...)`` shows the spec's labels)."""
    r = records.copy()
    fmt = _num
    out = pd.DataFrame({
        "outcome": r["outcome"], "scale": r["scale"],
        "estimate": r["estimate"].round(3),
        "95% CI": [f"{fmt(lo)} to {fmt(hi)}" for lo, hi in zip(r["ci_low"], r["ci_high"])],
        "p": [("<0.001" if p < 0.001 else f"{p:.3f}") for p in r["p_value"]]})
    if "calibrated_ci_low" in r:
        out["calibrated 95% CI"] = [
            "-" if not np.isfinite(lo) else f"{fmt(lo)} to {fmt(hi)}"
            for lo, hi in zip(r["calibrated_ci_low"], r["calibrated_ci_high"])]
        out["calibrated p"] = ["-" if not np.isfinite(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")
                               for p in r["calibrated_p_value"]]
    if truth:
        out["true effect (synthetic data)"] = [
            truth.get(o) if sc in ("rate_ratio", "ratio") else None
            for o, sc in zip(r["outcome"], r["scale"])]
    if "diagnostics_passed" in r:
        out["diagnostics"] = r["diagnostics_passed"].map({True: "PASS", False: "FAIL"}).fillna("-")
    return out


def _num(v: float) -> str:
    """A number for a table: whole dollars from 100 up, else three significant digits."""
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def crude_vs_adjusted(crude: pd.DataFrame, adjusted: pd.DataFrame,
                      truth: dict | None = None) -> pd.DataFrame:
    """The crude and the design-adjusted estimate of each outcome and scale side by side,
    as 'estimate (low to high)', with the true ratio when the data are synthetic.
    Outcomes keep their names (``show.table(..., spec=...)`` shows the spec's labels)."""
    def fmt(r) -> str:
        return f"{_num(r['estimate'])} ({_num(r['ci_low'])} to {_num(r['ci_high'])})"

    a = adjusted.set_index(["outcome", "scale"])
    rows = []
    for _, r in crude.iterrows():
        row = {"outcome": r["outcome"], "scale": r["scale"], "crude": fmt(r)}
        if (r["outcome"], r["scale"]) in a.index:
            row["design-adjusted"] = fmt(a.loc[(r["outcome"], r["scale"])])
        if truth:
            row["true effect (synthetic data)"] = (truth.get(r["outcome"]) if r["scale"] in
                                                   ("rate_ratio", "ratio") else None)
        rows.append(row)
    return pd.DataFrame(rows)


def evalues(records: pd.DataFrame, data: pd.DataFrame) -> pd.DataFrame:
    """E-values (VanderWeele & Ding 2017) of each estimate: how strongly an unmeasured
    confounder would have to be tied to both referral and the outcome to explain it away.

    Rate ratios and ratios of means are read as risk ratios; differences are converted
    with the outcome's standard deviation (``MD`` scale of :func:`evalkit.causal.evalue`).
    """
    rows = []
    for r in records.itertuples():
        try:
            if r.scale in ("rate_ratio", "ratio"):
                ev = evalue(r.estimate, r.ci_low, r.ci_high, scale="RR")
            else:
                sd = float(data[r.outcome].astype(float).std())
                ev = evalue(r.estimate, scale="MD", sd=sd, se=r.std_error)
        except (ParamsError, ValueError, ZeroDivisionError):
            continue
        rows.append({"outcome": r.outcome, "scale": r.scale, "estimate": r.estimate,
                     "evalue_estimate": ev.point, "evalue_ci": ev.ci})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------
# negative controls
# --------------------------------------------------------------------------------------
def nc_column(code: str) -> str:
    """Outcome column name of a condition code: ``nc_`` + the code made SQL-safe."""
    return NC_PREFIX + re.sub(r"[^0-9A-Za-z_]", "_", str(code)).lower()


def condition_counts(con, codes: list[str], column: str = "condition") -> pd.DataFrame:
    """Follow-up visits for each negative-control condition, one row per cohort member.

    A visit is a distinct (member, category, date of service), as for every other count
    (see :mod:`evalkit.utilization`); it counts for a condition when any of its claim
    lines carries the code in ``column``. Runs inside DuckDB on the run's ``cohort`` and
    ``encounters`` tables.

    Raises
    ------
    DataValidationError
        The encounters table has no column ``column``, or a code never occurs.
    """
    cols = [r[0] for r in con.execute("DESCRIBE encounters").fetchall()]
    if column not in cols:
        raise DataValidationError(
            f"negative controls: the encounters table has no column '{column}' holding "
            f"condition codes (columns: {', '.join(cols)}). Set design.negative_controls.column, "
            "or list ready-made outcome columns in design.negative_controls.outcomes.")
    if not codes:
        raise ParamsError("negative controls: no condition codes given.")
    found = dict(con.execute(
        f"SELECT CAST({_q(column)} AS VARCHAR), count(*) FROM encounters WHERE "
        f"CAST({_q(column)} AS VARCHAR) IN ({', '.join(_lit(c) for c in codes)}) GROUP BY 1"
    ).fetchall())
    absent = [c for c in codes if c not in found]
    if absent:
        raise DataValidationError(
            f"negative controls: code(s) {absent} never occur in encounters.{column}. Check "
            "the codes, or leave them out of design.negative_controls.codes.")
    names = {c: nc_column(c) for c in codes}
    # the visits are made distinct once, by grouping, and then counted per code: 11
    # DISTINCT aggregates took 17 s on the 1M-member demo plan, this 4.8 s (same table)
    aggs = ", ".join(f"count(v.code) FILTER (WHERE v.code = {_lit(c)}) AS {_q(n)}"
                     for c, n in names.items())
    return con.execute(f"""
        WITH v AS (
          SELECT DISTINCT e.member_id, e.category, e.service_date,
                 CAST(e.{_q(column)} AS VARCHAR) AS code
          FROM encounters e JOIN cohort c USING (member_id)
          WHERE e.service_date >= c.fu_start AND e.service_date < c.fu_end
            AND CAST(e.{_q(column)} AS VARCHAR) IN ({', '.join(_lit(c) for c in codes)}))
        SELECT c.member_id, {aggs}
        FROM cohort c LEFT JOIN v USING (member_id)
        GROUP BY c.member_id ORDER BY c.member_id""").df()


@dataclass(frozen=True, eq=False)
class NegativeControlResult:
    """Negative controls run on a design, and the empirical null they give.

    Attributes
    ----------
    controls : DataFrame
        One row per control: ``outcome, log_estimate, std_error, ci_low, ci_high,
        p_value, error`` (:func:`evalkit.causal.negative_controls`), plus ``estimate``
        (the rate ratio, or the difference when ``count`` is False) and
        ``calibrated_p_value``.
    null : Null or None
        :func:`evalkit.causal.fit_null` of the controls (None with fewer than 3).
    count : bool
        Whether the controls are counts (log rate ratios) or differences.
    """

    controls: pd.DataFrame
    null: object
    count: bool = True

    def table(self) -> pd.DataFrame:
        """The controls as shown to readers: estimate and 95% CI on the ratio scale (or
        the difference scale), p-value and calibrated p-value."""
        c = self.controls
        f = np.exp if self.count else (lambda v: v)
        return pd.DataFrame({
            "negative control": [o.removeprefix(NC_PREFIX).replace("_", " ") for o in c["outcome"]],
            "estimate": f(c["log_estimate"]), "ci_low": f(c["ci_low"]), "ci_high": f(c["ci_high"]),
            "p_value": c["p_value"], "calibrated_p_value": c["calibrated_p_value"]}).round(3)

    def null_table(self) -> pd.DataFrame:
        """The empirical null as a one-row table (with EASE), empty without a null."""
        if self.null is None:
            return pd.DataFrame(columns=["mu", "sigma", "n", "ease"])
        n = self.null
        return pd.DataFrame([{"mu": n.mu, "sigma": n.sigma, "se_mu": n.se_mu, "n": n.n,
                              "ease": ease(n)}])


def run_negative_controls(design: CohortDesign, data: pd.DataFrame, outcomes: list[str],
                          count: bool = True, exposure: str | None = "member_months",
                          alpha: float = 0.05) -> NegativeControlResult:
    """Estimate the negative controls on ``design`` and fit the empirical null.

    Each control is estimated exactly like the main count outcomes (same design, same
    outcome model, :func:`evalkit.causal.estimate` with the design reused), so its
    estimate carries the design's systematic error while its true effect is null (rate
    ratio 1). :func:`evalkit.causal.fit_null` then fits N(mu, sigma^2) to the log rate
    ratios, as ``EmpiricalCalibration::fitNull``. ``data`` holds the rows of
    ``design.frame`` (same index) with the control columns added.
    """
    kind = "count" if count else "continuous"
    expo = exposure if (count and exposure in data.columns) else None

    def fn(d, y):
        eff = _estimate(design, d, y, kind, expo)
        if count:
            return math.log(eff.estimate), eff.std_error
        return eff.estimate, eff.std_error

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StatisticalWarning)
        controls = causal.negative_controls(data, outcomes, fn, alpha=alpha)
    controls["estimate"] = np.exp(controls["log_estimate"]) if count else controls["log_estimate"]
    ok = (controls["log_estimate"].notna() & controls["std_error"].notna()).to_numpy()
    null = None
    controls["calibrated_p_value"] = np.nan
    if int(ok.sum()) >= 3:
        null = causal.fit_null(controls.loc[ok, "log_estimate"], controls.loc[ok, "std_error"])
        controls.loc[ok, "calibrated_p_value"] = causal.calibrate_p(
            controls.loc[ok, "log_estimate"].to_numpy(float),
            controls.loc[ok, "std_error"].to_numpy(float), null)
    else:
        warnings.warn(f"negative controls: only {int(ok.sum())} control(s) could be estimated; "
                      "at least 3 are needed to fit the empirical null, so nothing is "
                      "calibrated.", StatisticalWarning, stacklevel=2)
    return NegativeControlResult(controls, null, count)


def calibrated_records(records: pd.DataFrame, nc: NegativeControlResult | None,
                       alpha: float = 0.05) -> pd.DataFrame:
    """``records`` with calibrated p-value and CI columns (NaN where not calibrated).

    Ratio estimates (``rate_ratio``, ``ratio``) are calibrated against a null fitted on
    count controls (log scale), differences against a null fitted on difference-scale
    controls, with :func:`evalkit.causal.calibrate` (``EmpiricalCalibration::calibrateP``
    and ``calibrateConfidenceInterval`` with the systematic error model of the null).
    """
    out = records.copy()
    for c in ("calibrated_p_value", "calibrated_ci_low", "calibrated_ci_high"):
        out[c] = np.nan
    if nc is None or nc.null is None:
        return out
    scales = ("rate_ratio", "ratio") if nc.count else ("difference",)
    for i, r in out.iterrows():
        if r["scale"] not in scales or not (np.isfinite(r["std_error"]) and r["std_error"] > 0):
            continue
        y = math.log(r["estimate"]) if nc.count else r["estimate"]
        c = causal.calibrate(y, r["std_error"], nc.null, alpha=alpha, label=r["outcome"])
        f = math.exp if nc.count else (lambda v: v)
        out.loc[i, "calibrated_p_value"] = c.calibrated_p_value
        out.loc[i, "calibrated_ci_low"] = f(c.calibrated_ci_low)
        out.loc[i, "calibrated_ci_high"] = f(c.calibrated_ci_high)
    return out


def verdict(diag: pd.DataFrame) -> str:
    """A Markdown paragraph saying whether the design passes, for the top of the results."""
    failed = diag[diag["passed"].map(lambda v: v is False)]
    if failed.empty:
        return ("**PASS: every diagnostic passes.** The arms are alike on the measured "
                "covariates, they overlap, and the weights keep enough information. The "
                "estimates below can be read as this design's best answer (measured "
                "confounding only: see the E-values and the negative controls).")
    names = "; ".join(f"{r.diagnostic} = {r.value:.3g} (needs {r.threshold})"
                      for r in failed.itertuples())
    return ("**FAIL: the design does not pass its diagnostics.** " + names + ". The "
            "estimates below are shown so that nothing is hidden, but they are recorded in "
            "results.json with `diagnostics_passed: false` and should not be acted on. Try "
            "another method (e.g. `design.method: ipw` with `estimand: ATO`), a different "
            "caliper, or more covariates.")


def forest_plot(controls: pd.DataFrame, ax=None, truth: float = 1.0, exponentiate: bool = True):
    """Negative-control estimates with their 95% CIs, one row each, against the truth.

    A design without systematic error scatters the controls around 1 (the dashed line),
    with about 5% of intervals missing it; a shared shift shows residual confounding.
    Takes an ``ax`` and returns it.
    """
    c = controls.dropna(subset=["log_estimate", "std_error"]).sort_values("log_estimate")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 0.3 * len(c) + 1.2))
    f = np.exp if exponentiate else (lambda v: v)
    y = np.arange(len(c))
    est, lo, hi = f(c["log_estimate"]), f(c["ci_low"]), f(c["ci_high"])
    miss = (lo > truth) | (hi < truth)
    ax.hlines(y, lo, hi, color=np.where(miss, FAIL_COLOR, PASS_COLOR), lw=1.5)
    ax.scatter(est, y, color=np.where(miss, FAIL_COLOR, PASS_COLOR), zorder=3, s=18)
    ax.axvline(truth, color="black", ls="--", lw=0.8)
    ax.set_yticks(y, [o.removeprefix(NC_PREFIX).replace("_", " ") for o in c["outcome"]])
    if exponentiate:
        ax.set_xscale("log")
        ratio_axis(ax, "x")
        ax.set_xlabel("rate ratio (log axis); true value 1")
    else:
        ax.set_xlabel("difference; true value 0")
    ax.set_title(f"{len(c)} negative controls: {int(miss.sum())} intervals miss the truth",
                 fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    return ax


# --------------------------------------------------------------------------------------
# storing the design for later workbooks
# --------------------------------------------------------------------------------------
def save_design(design: CohortDesign, work_dir: str | Path, passed: bool | None = None) -> Path:
    """Write the design to ``work_dir/design.parquet`` (+ ``design.json``), atomically.

    The Parquet file holds one row per member (member_id, treated, propensity_score,
    weight, subclass): member-level, so it stays in the private ``work`` folder. The
    JSON holds the spec (method, estimand, formula, options) and whether the
    diagnostics passed.
    """
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    path, meta = work / DESIGN_FILE, work / DESIGN_META
    tmp = work / (DESIGN_FILE + ".partial")
    design.table().to_parquet(tmp, index=False)
    tmp_meta = work / (DESIGN_META + ".partial")
    s = design.spec
    tmp_meta.write_text(json.dumps({"method": s.method, "estimand": s.estimand,
                                    "formula": s.formula, "terms": s.terms, "options": s.options,
                                    "label": s.label, "passed": passed}, indent=2, default=str))
    os.replace(tmp, path)
    os.replace(tmp_meta, meta)
    return path


def load_design(work_dir: str | Path) -> tuple[pd.DataFrame, dict] | None:
    """The stored design table and its spec, or None when no design was saved."""
    work = Path(work_dir)
    path, meta = work / DESIGN_FILE, work / DESIGN_META
    if not (path.is_file() and meta.is_file()):
        return None
    return pd.read_parquet(path), json.loads(meta.read_text())


def effects_from_table(frame: pd.DataFrame, table: pd.DataFrame, meta: dict,
                       outcomes: list[str], kinds: dict[str, str],
                       exposure: str | None = "member_months", alpha: float = 0.05
                       ) -> pd.DataFrame:
    """Design-adjusted estimates from a stored design (for the later workbooks).

    Joins ``table`` (:func:`load_design`) to ``frame`` on member_id and fits the same
    weighted outcome models as :func:`effects`, with the same standard errors
    (clustered on matched sets, HC3 after matching with replacement, HC0 after
    weighting), so the numbers equal the cohort-balance workbook's. A regression design
    refits the covariate-adjusted model on ``meta['formula']``.
    """
    d = frame.merge(table[["member_id", "weight", "subclass"]], on="member_id", how="inner",
                    validate="one_to_one")
    if len(d) != len(frame):
        raise DataValidationError(
            f"the stored design covers {len(d)} of {len(frame)} members of this analysis; "
            "it was made for other data. Re-run the cohort_balance workbook.")
    method = meta["method"]
    adjust = None
    if method == "regression":
        if meta.get("terms") is not None:   # rebuilt from the terms, never from the formula
            d = model_frame(d, meta["terms"], TREATMENT).frame
        adjust = meta["formula"]
    else:
        d = d[d["weight"] > 0]
    w = d["weight"].to_numpy(float)
    replace = bool(meta.get("options", {}).get("replace"))
    if method == "match":
        vc = "HC3" if replace else "cluster"
    else:
        vc = "HC0" if method == "ipw" else "HC1"
    groups = d["subclass"].to_numpy(dtype=np.int64) if vc == "cluster" else None
    expo = exposure if exposure in d.columns else None
    spec = DesignSpec(method, meta["estimand"], meta["formula"], meta.get("options", {}),
                      terms=meta.get("terms"))
    n1, n0 = int((d[TREATMENT] == 1).sum()), int((d[TREATMENT] == 0).sum())
    rows = []
    for o in outcomes:
        kind = kinds[o]
        for k, scale in _fits_for(kind):
            r = _fit_scaled(d, o, k, adjust, w, vc, groups, alpha, expo)
            label = _method_label(spec, "count" if k in ("count", "ratio") else kind, vc)
            if k == "ratio":
                label = label.replace("weighted Poisson (member-months offset)",
                                      "weighted quasi-Poisson (ratio of means)")
            rows.append({"outcome": o, "contrast": "self_help vs control",
                         "estimand": meta["estimand"], "method": label, "scale": scale,
                         **r, "n_treated": n1, "n_control": n0, **_structured(spec, k)})
    return pd.DataFrame(rows)


__all__ = [
    "CohortDesign", "DesignSpec", "NegativeControlResult", "calibrated_records", "verdict",
    "balance_table", "condition_counts", "crude_effects", "crude_vs_adjusted", "design_frame", "effects_display", "diagnostics", "ease", "effects", "effects_from_table",
    "evalues", "fit_design", "forest_plot", "load_design", "nc_column",
    "passes", "run_negative_controls", "save_design",
]
