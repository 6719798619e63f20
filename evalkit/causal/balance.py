"""Covariate balance: are treated and comparison units alike after matching or weighting?

The statistics and their conventions are those of ``summary()`` in R's MatchIt
(``summary.matchit(standardize = TRUE)``), which cobalt shares except for binary
variables (see ``binary``). They are computed by hand because no Python library
reproduces these exact conventions.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import patsy

from evalkit.causal.propensity import (
    check_treatment,
    complete_rows,
    formula_columns,
    split_formula,
)
from evalkit.errors import DataValidationError, ParamsError
from evalkit.style import ARM_COLORS, MUTED_COLOR, PASS_COLOR
from evalkit.terms import r_term_name

_TOL = np.sqrt(np.finfo(float).eps)
STAT_COLUMNS = ["means_treated", "means_control", "smd", "var_ratio", "ecdf_mean", "ecdf_max"]


# --------------------------------------------------------------------------------------
# covariates -> numeric matrix with R/MatchIt names
# --------------------------------------------------------------------------------------
def _is_categorical(s: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s))


def _levels(s: pd.Series) -> list:
    if isinstance(s.dtype, pd.CategoricalDtype):
        return list(s.cat.categories)
    return sorted(pd.unique(s.dropna()), key=lambda v: (str(type(v)), v))


def _covariate_terms(covariates) -> list[str]:
    if isinstance(covariates, str):
        rhs = split_formula(covariates)
        desc = patsy.ModelDesc.from_formula(rhs)
        return [t.name() for t in desc.rhs_termlist if t.factors]
    if isinstance(covariates, (list, tuple, pd.Index)):
        if not len(covariates):
            raise ParamsError("balance: covariates is empty.")
        return [str(c) for c in covariates]
    raise ParamsError("balance: covariates must be a formula string or a list of column names.")


def covariate_frame(data: pd.DataFrame, covariates) -> pd.DataFrame:
    """Numeric covariate matrix as MatchIt's ``summary()`` builds it.

    Numeric and 0/1 columns are kept as they are; a categorical column (string,
    category, or wrapped in ``C()``) is expanded into one 0/1 column per level, ALL
    levels, named column + level (``raceblack``, ``racehispan``, ``racewhite``); bool
    columns become 0/1. Other terms (``I(age**2)``, ``age:educ``) are evaluated by patsy
    and named as R would name them.
    """
    terms = _covariate_terms(covariates)
    out: dict[str, np.ndarray] = {}
    for term in terms:
        col = term.strip()
        m = patsy.ModelDesc.from_formula(col).rhs_termlist
        code = m[-1].factors[0].code if m and len(m[-1].factors) == 1 else None
        cat_col = None
        if code is not None:
            c = re.fullmatch(r"C\(\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(?:,.*)?\)", code)
            if c and c.group(1) in data.columns:
                cat_col = c.group(1)
            elif code in data.columns and _is_categorical(data[code]):
                cat_col = code
        if cat_col is not None:
            s = data[cat_col]
            for lev in _levels(s):
                out[f"{cat_col}{lev}"] = (s == lev).to_numpy(dtype=float)
        elif code is not None and code in data.columns:
            out[code] = data[code].astype(float).to_numpy()
        else:
            try:
                mat = patsy.dmatrix(f"0 + {col}", data, return_type="dataframe",
                                    NA_action="raise")
            except patsy.PatsyError as exc:
                raise DataValidationError(f"balance: cannot evaluate covariate '{col}': {exc}") from None
            for c in mat.columns:
                out[r_term_name(c)] = mat[c].to_numpy(dtype=float)
    return pd.DataFrame(out, index=data.index)


# --------------------------------------------------------------------------------------
# the statistics (MatchIt's bal1var / wvar / qqsum / pairdistsubC)
# --------------------------------------------------------------------------------------
def _wvar(x: np.ndarray, binary: bool, w: np.ndarray | None = None) -> float:
    """Weighted variance: p(1-p) for 0/1 variables, else reliability weights (cov.wt)."""
    if w is None:
        w = np.ones(len(x))
    w = w / w.sum()
    mx = float(np.sum(w * x))
    if binary:
        return mx * (1 - mx)
    return float(np.sum(w * (x - mx) ** 2) / (1 - np.sum(w ** 2)))


def _ecdf_stats(x: np.ndarray, t: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Mean and max |F_treated(x) - F_control(x)| over the distinct values of x."""
    w = w.astype(float).copy()
    for g in (0, 1):
        s = w[t == g].sum()
        if s > 0:
            w[t == g] /= s
    o = np.argsort(x, kind="stable")
    xs, ws, ts = x[o], w[o], t[o]
    signed = np.where(ts == ts[0], -ws, ws)
    cs = np.abs(np.cumsum(signed))
    last = np.append(np.diff(xs) != 0, True)
    ed = cs[last]
    return float(ed.mean()), float(ed.max())


def _pair_index(t: np.ndarray, subclass: np.ndarray | None):
    """All (treated, control) position pairs that share a subclass."""
    if subclass is None:
        return None
    ok = ~pd.isna(subclass)
    pos = np.arange(len(t))
    df = pd.DataFrame({"pos": pos[ok], "s": np.asarray(subclass[ok], dtype=np.int64), "t": t[ok]})
    tr = df[df.t == 1][["s", "pos"]]
    co = df[df.t == 0][["s", "pos"]]
    pr = tr.merge(co, on="s", suffixes=("_t", "_c"))
    return pr["pos_t"].to_numpy(), pr["pos_c"].to_numpy()


def _denominator(x, t, binary, estimand):
    v1, v0 = _wvar(x[t == 1], binary), _wvar(x[t == 0], binary)
    pooled = np.sqrt((v1 + v0) / 2)
    std = {"ATT": np.sqrt(v1), "ATC": np.sqrt(v0)}.get(estimand, pooled)
    if not np.isfinite(std) or std < _TOL:
        std = pooled
    return float(std)


def _stats_table(X: pd.DataFrame, t: np.ndarray, w: np.ndarray | None, estimand: str,
                 binary_rule: str, pairs=None, std_all: dict | None = None) -> pd.DataFrame:
    rows = {}
    ww = np.ones(len(t)) if w is None else w
    i1, i0 = t == 1, t == 0
    too_small = np.sum(ww[i1] != 0) < 2 and np.sum(ww[i0] != 0) < 2
    for name in X.columns:
        x = X[name].to_numpy(dtype=float)
        is_bin = bool(np.all((x == 0) | (x == 1)))
        r = dict.fromkeys(STAT_COLUMNS + ["std_pair_dist"], np.nan)
        r["means_treated"] = float(np.sum(x[i1] * ww[i1]) / np.sum(ww[i1]))
        r["means_control"] = float(np.sum(x[i0] * ww[i0]) / np.sum(ww[i0]))
        mdiff = r["means_treated"] - r["means_control"]
        pdist = None
        if pairs is not None:
            pdist = float(np.mean(np.abs(x[pairs[0]] - x[pairs[1]]))) if len(pairs[0]) else np.nan
        if is_bin and binary_rule == "raw":
            r["smd"] = mdiff
            r["std_pair_dist"] = pdist if pdist is not None else np.nan
        elif abs(mdiff) > _TOL:
            if not too_small:
                std = std_all[name]
                r["smd"] = mdiff / std
                if pdist is not None:
                    r["std_pair_dist"] = pdist / std if abs(pdist) > 1e-8 else pdist
        else:
            r["smd"] = mdiff
            if pdist is not None:
                r["std_pair_dist"] = pdist
        if is_bin:
            r["ecdf_mean"] = r["ecdf_max"] = abs(mdiff)
        elif not too_small:
            r["var_ratio"] = _wvar(x[i1], False, ww[i1]) / _wvar(x[i0], False, ww[i0])
            r["ecdf_mean"], r["ecdf_max"] = _ecdf_stats(x, t, ww)
        rows[name] = r
    cols = STAT_COLUMNS + (["std_pair_dist"] if pairs is not None else [])
    out = pd.DataFrame.from_dict(rows, orient="index")[cols]
    out.index.name = "term"
    return out


def _sample_sizes(t: np.ndarray, w: np.ndarray | None) -> pd.DataFrame:
    def ess(v):
        return float(v.sum() ** 2 / np.sum(v ** 2)) if np.sum(v ** 2) > 0 else 0.0
    rows = {"all": [float((t == 0).sum()), float((t == 1).sum())]}
    if w is not None:
        rows["adjusted"] = [float(np.sum(w[t == 0] > 0)), float(np.sum(w[t == 1] > 0))]
        rows["adjusted (ESS)"] = [ess(w[t == 0]), ess(w[t == 1])]
    return pd.DataFrame(rows, index=["control", "treated"]).T


# --------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Balance:
    """Balance statistics before (and after) adjustment.

    Attributes
    ----------
    before, after : DataFrame
        Indexed by term, columns ``means_treated``, ``means_control``, ``smd``
        (MatchIt's "Std. Mean Diff."), ``var_ratio`` ("Var. Ratio"), ``ecdf_mean``,
        ``ecdf_max`` ("eCDF Mean/Max"); ``after`` also ``std_pair_dist`` ("Std. Pair
        Dist.") when subclasses were given. ``after`` is None without weights.
    sd_denominator : Series
        The SD each SMD was divided by (from the unadjusted sample).
    n : DataFrame
        Sample sizes per arm: all units, units with positive weight, effective sample
        size (sum w)^2 / sum w^2.
    """

    before: pd.DataFrame
    after: pd.DataFrame | None
    estimand: str
    binary: str
    threshold: float
    sd_denominator: pd.Series
    n: pd.DataFrame

    @property
    def table(self) -> pd.DataFrame:
        """Tidy side-by-side table: term, smd/var_ratio/ecdf_max before and after."""
        out = pd.DataFrame({"term": self.before.index})
        for stat in ("means_treated", "means_control", "smd", "var_ratio", "ecdf_mean", "ecdf_max"):
            out[f"{stat}_before"] = self.before[stat].to_numpy()
            if self.after is not None:
                out[f"{stat}_after"] = self.after[stat].to_numpy()
        return out

    def max_abs_smd(self, after: bool = True, include_distance: bool = False) -> float:
        """Largest |SMD| over covariates (the ``distance`` row excluded by default)."""
        tab = self.after if (after and self.after is not None) else self.before
        smd = tab["smd"]
        if not include_distance:
            smd = smd.drop(index="distance", errors="ignore")
        return float(np.nanmax(np.abs(smd.to_numpy(dtype=float)))) if len(smd) else float("nan")

    def passes(self, threshold: float | None = None) -> bool:
        """True when every covariate's |SMD| (after, if available) is below ``threshold``."""
        thr = self.threshold if threshold is None else threshold
        return bool(self.max_abs_smd() < thr)

    def to_frame(self) -> pd.DataFrame:
        return self.table

    def summary(self) -> str:
        lines = [f"balance ({self.estimand}; SMD denominator: "
                 f"{ {'ATT': 'treated SD', 'ATC': 'control SD'}.get(self.estimand, 'pooled SD')}"
                 f"; binary: {self.binary})",
                 self.table.to_string(index=False, float_format=lambda v: f"{v:.4f}"),
                 f"max |SMD| {'after' if self.after is not None else 'before'}: "
                 f"{self.max_abs_smd():.4f} ({'pass' if self.passes() else 'FAIL'} at "
                 f"{self.threshold})",
                 self.n.to_string()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return self.table.to_html(index=False, float_format=lambda v: f"{v:.4f}")


def _aligned(data: pd.DataFrame, value, what: str) -> pd.Series | None:
    if value is None:
        return None
    if isinstance(value, str):
        if value not in data.columns:
            raise DataValidationError(f"balance: {what} column '{value}' is not in the data.")
        return data[value]
    if isinstance(value, pd.Series):
        missing = data.index.difference(value.index)
        if len(missing):
            raise DataValidationError(
                f"balance: {what} is missing for {len(missing)} rows of data "
                f"(e.g. index {list(missing[:3])}); align it to data.index.")
        return value.loc[data.index]
    arr = np.asarray(value)
    if arr.shape != (len(data),):
        raise DataValidationError(
            f"balance: {what} has shape {arr.shape}; expected ({len(data)},) like the data.")
    return pd.Series(arr, index=data.index)


def balance(data: pd.DataFrame, treatment: str, covariates, weights=None,
            estimand: str = "ATT", distance=None, subclass=None, binary: str = "std",
            threshold: float = 0.1) -> Balance:
    """Covariate balance between arms, before and after weighting/matching.

    For each covariate (categorical ones expanded to all levels) it reports the
    (weighted) means in each arm and

    * **standardized mean difference** SMD = (mean_T - mean_C) / s, with weighted means
      after adjustment and the *same* denominator s before and after, computed on the
      full unweighted sample:

      - ``estimand="ATT"``: s = SD of the treated group (MatchIt/cobalt for the ATT);
      - ``"ATC"``: SD of the control group;
      - ``"ATE"``/``"ATO"``: pooled sqrt((s_T^2 + s_C^2) / 2);

      where SD is the n-1 sample SD, except for 0/1 variables, where s = sqrt(p(1-p))
      (no n-1). If s is ~0 the pooled SD is used; if |mean difference| < 1.5e-8 the raw
      difference is reported. With ``binary="raw"`` 0/1 variables report the raw
      difference in proportions instead (cobalt's default);
    * **variance ratio** var_T / var_C with reliability-weighted variances
      sum w (x - m)^2 / (1 - sum w^2) (weights normalised to 1), not computed for 0/1
      variables;
    * **eCDF mean / max**: mean and maximum over the distinct values of x of
      |F_T(x) - F_C(x)|, the weighted empirical CDFs (max = weighted Kolmogorov-Smirnov
      statistic); for 0/1 variables both equal |difference in proportions|;
    * **std. pair distance** (matched data with ``subclass``): mean |x_t - x_c| over all
      treated-control pairs sharing a subclass, divided by s.

    These are exactly the columns of ``summary(matchit_object)`` in R's MatchIt
    (``standardize = TRUE``); a ``distance`` row (the propensity score) comes first
    when ``distance`` is given.

    Parameters
    ----------
    data : DataFrame
        All units (not only the matched ones); not modified.
    treatment : str
        0/1 treatment column.
    covariates : str or list of str
        Formula right-hand side (``"age + educ + C(race)"``) or column names.
    weights : str, Series or array, optional
        Matching or IPW weights aligned to ``data`` (0 = not in the adjusted sample).
        Without weights only ``before`` is computed.
    estimand : {"ATT", "ATC", "ATE", "ATO"}
        Chooses the SMD denominator.
    distance : str, Series or array, optional
        Propensity score to report as the first row, ``distance``.
    subclass : str, Series or array, optional
        Matched-set ids, for the pair distance.
    binary : {"std", "raw"}
        Standardize 0/1 variables (MatchIt) or report raw differences (cobalt).
    threshold : float
        |SMD| threshold used by :meth:`Balance.passes` (0.1 is the usual rule).

    Returns
    -------
    Balance

    Examples
    --------
    >>> m = match(lalonde, "treat", "age + educ + race + married + nodegree + re74 + re75")
    >>> bal = balance(lalonde, "treat", "age + educ + race + married + nodegree + re74 + re75",
    ...               weights=m.weights, distance=m.propensity.scores, subclass=m.subclass)
    >>> bal.after.loc["age", "smd"]                                   # doctest: +SKIP
    0.0718

    References
    ----------
    Austin PC (2009). Balance diagnostics for comparing the distribution of baseline
    covariates between treatment groups in propensity-score matched samples.
    Stat Med 28:3083-3107.
    Stuart EA, Lee BK, Leacy FP (2013). Prognostic score-based balance measures can be
    a useful diagnostic for propensity score methods. J Clin Epidemiol 66:S84-S90.
    """
    check_treatment(data, treatment)
    estimand = str(estimand).upper()
    if estimand not in ("ATT", "ATC", "ATE", "ATO"):
        raise ParamsError(f"balance: estimand must be ATT, ATC, ATE or ATO, not '{estimand}'.")
    if binary not in ("std", "raw"):
        raise ParamsError(f"balance: binary must be 'std' or 'raw', not '{binary}'.")
    if isinstance(covariates, str):
        cols = formula_columns(split_formula(covariates, treatment), data)
    else:
        cols = [c for c in covariates if c in data.columns]
        for c in covariates:
            if c not in data.columns:
                cols += formula_columns(c, data)
    w_s = _aligned(data, weights, "weights")
    d_s = _aligned(data, distance, "distance")
    s_s = _aligned(data, subclass, "subclass")
    extra = pd.DataFrame({k: v for k, v in (("__w", w_s), ("__d", d_s)) if v is not None},
                         index=data.index)
    frame = pd.concat([data[[treatment, *cols]], extra], axis=1)
    used, _ = complete_rows(frame, list(frame.columns), "balance")
    sub = data.loc[used]
    t = sub[treatment].astype(float).to_numpy().astype(int)
    if t.min() == t.max():
        raise DataValidationError(f"balance: only one arm of '{treatment}' is present.")
    X = covariate_frame(sub, covariates)
    if d_s is not None:
        X.insert(0, "distance", d_s.loc[used].to_numpy(dtype=float))
    w = None
    if w_s is not None:
        w = w_s.loc[used].to_numpy(dtype=float)
        if np.any(w < 0):
            raise DataValidationError("balance: weights must be >= 0.")
        if w[t == 1].sum() == 0 or w[t == 0].sum() == 0:
            raise DataValidationError("balance: one arm has all weights 0; nothing to compare.")
    std_all = {}
    for name in X.columns:
        x = X[name].to_numpy(dtype=float)
        std_all[name] = _denominator(x, t, bool(np.all((x == 0) | (x == 1))), estimand)
    before = _stats_table(X, t, None, estimand, binary, None, std_all)
    after = None
    if w is not None:
        pairs = _pair_index(t, s_s.loc[used].to_numpy() if s_s is not None else None)
        if pairs is not None and w is not None:
            keep = (w[pairs[0]] > 0) & (w[pairs[1]] > 0)
            pairs = (pairs[0][keep], pairs[1][keep])
        after = _stats_table(X, t, w, estimand, binary, pairs, std_all)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        n = _sample_sizes(t, w)
    return Balance(before=before, after=after, estimand=estimand, binary=binary,
                   threshold=float(threshold), sd_denominator=pd.Series(std_all, name="sd"),
                   n=n)


def love_plot(bal: Balance, ax=None, threshold: float | None = None, absolute: bool = True,
              include_distance: bool = False):
    """Love plot: |SMD| of each covariate before (open) and after (filled) adjustment.

    A dashed line marks the threshold (default the Balance's, usually 0.1). Colours are
    evalkit's (:mod:`evalkit.style`: grey before, blue after). Returns the matplotlib
    Axes; nothing is shown.
    """

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 0.35 * len(bal.before) + 1.5))
    before = bal.before["smd"]
    after = bal.after["smd"] if bal.after is not None else None
    if not include_distance:
        before = before.drop(index="distance", errors="ignore")
        if after is not None:
            after = after.drop(index="distance", errors="ignore")
    f = np.abs if absolute else (lambda v: v)
    y = np.arange(len(before))[::-1]
    ax.scatter(f(before.to_numpy(dtype=float)), y, facecolors="none", edgecolors=MUTED_COLOR,
               label="before", zorder=3)
    if after is not None:
        ax.scatter(f(after.to_numpy(dtype=float)), y, color=PASS_COLOR, label="after", zorder=3)
    thr = bal.threshold if threshold is None else threshold
    ax.axvline(thr, ls="--", color="grey", lw=1)
    if not absolute:
        ax.axvline(-thr, ls="--", color="grey", lw=1)
        ax.axvline(0, color="black", lw=0.5)
    ax.set_yticks(y)
    ax.set_yticklabels(list(before.index))
    ax.set_xlabel(("absolute " if absolute else "") + "standardized mean difference")
    ax.legend(loc="best", frameon=False)
    return ax


def overlap_plot(scores, treatment, ax=None, bins: int = 30):
    """Histograms of the propensity score by arm (treated above, control mirrored below).

    ``scores`` and ``treatment`` are aligned arrays/Series (e.g. ``ps.scores`` and
    ``data["treat"]``); missing scores are ignored. Regions where one arm has no
    counterpart show lack of overlap (positivity problems). Returns the Axes.
    """

    s = np.asarray(scores, dtype=float)
    t = np.asarray(treatment, dtype=float)
    if s.shape != t.shape:
        raise DataValidationError("overlap_plot: scores and treatment must have the same length.")
    ok = ~(np.isnan(s) | np.isnan(t))
    s, t = s[ok], t[ok]
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    edges = np.histogram_bin_edges(s, bins=bins)
    h1, _ = np.histogram(s[t == 1], bins=edges, density=True)
    h0, _ = np.histogram(s[t == 0], bins=edges, density=True)
    width = np.diff(edges)
    ax.bar(edges[:-1], h1, width=width, align="edge", color=ARM_COLORS["self_help"], alpha=0.7,
           label="treated")
    ax.bar(edges[:-1], -h0, width=width, align="edge", color=ARM_COLORS["control"], alpha=0.7,
           label="control")
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xlabel("propensity score")
    ax.set_ylabel("density (control mirrored)")
    ax.legend(loc="best", frameon=False)
    return ax
