"""Descriptive comparisons by arm: Table 1 with standardized differences, crude rates.

These are the unadjusted numbers a reader sees first. Adjusted effects live in
:mod:`evalkit.models` and :mod:`evalkit.causal`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

TREATED, CONTROL = "self_help", "control"


def _is_binary(x: pd.Series) -> bool:
    vals = pd.unique(x.dropna())
    return len(vals) <= 2 and set(np.asarray(vals, dtype=float)) <= {0.0, 1.0}


def table1(frame: pd.DataFrame, group: str = "group", covariates: list[str] | None = None,
           treated=TREATED, control=CONTROL) -> pd.DataFrame:
    """Table 1: covariate summaries by arm with standardized mean differences.

    Continuous covariates show mean (SD); binary (0/1) ones the share. The standardized
    mean difference (SMD) is ``(m_t - m_c) / sqrt((s_t^2 + s_c^2) / 2)`` with the arms'
    sample variances (for binary covariates ``p(1-p)``), the convention of Austin (2009),
    "Balance diagnostics for comparing the distribution of baseline covariates between
    treatment groups in propensity-score matched samples", Stat Med 28:3083-3107.
    ``|SMD| > 0.1`` is the usual flag for imbalance.

    Text covariates are expanded into one 0/1 row per level.

    Returns
    -------
    DataFrame with columns covariate, kind, mean_treated, sd_treated, mean_control,
    sd_control, smd, n_missing.
    """
    covariates = covariates or [c for c in frame.columns if c != group]
    missing = [c for c in [group, *covariates] if c not in frame.columns]
    if missing:
        raise KeyError(f"table1: columns not in the data: {missing}")
    t = frame[frame[group] == treated]
    c = frame[frame[group] == control]
    rows = []
    for cov in covariates:
        col = frame[cov]
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            for level in sorted(col.dropna().astype(str).unique()):
                rows.append(_row(f"{cov}={level}", "binary",
                                 (t[cov].astype(str) == level).astype(float)[t[cov].notna()],
                                 (c[cov].astype(str) == level).astype(float)[c[cov].notna()],
                                 int(col.isna().sum())))
            continue
        kind = "binary" if _is_binary(col) else "continuous"
        rows.append(_row(cov, kind, t[cov].dropna().astype(float), c[cov].dropna().astype(float),
                         int(col.isna().sum())))
    out = pd.DataFrame(rows)
    header = pd.DataFrame([{"covariate": "members", "kind": "count",
                            "mean_treated": float(len(t)), "sd_treated": np.nan,
                            "mean_control": float(len(c)), "sd_control": np.nan,
                            "smd": np.nan, "n_missing": 0}])
    return pd.concat([header, out], ignore_index=True)


def _row(name, kind, xt, xc, n_missing):
    mt, mc = xt.mean(), xc.mean()
    if kind == "binary":
        vt, vc = mt * (1 - mt), mc * (1 - mc)
    else:
        vt, vc = xt.var(ddof=1), xc.var(ddof=1)
    denom = np.sqrt((vt + vc) / 2)
    smd = (mt - mc) / denom if denom > 0 else (0.0 if mt == mc else np.inf)
    return {"covariate": name, "kind": kind, "mean_treated": mt,
            "sd_treated": np.sqrt(vt) if kind == "continuous" else np.nan,
            "mean_control": mc, "sd_control": np.sqrt(vc) if kind == "continuous" else np.nan,
            "smd": smd, "n_missing": n_missing}


def _ratio_estimate(y: np.ndarray, t: np.ndarray):
    """Rate sum(y)/sum(t) and the SE of its log, robust to overdispersion.

    The variance is the member-level (sandwich) variance of a ratio estimator,
    ``sum((y_i - r t_i)^2) / (sum y)^2`` for log r: the same as a Poisson GLM with only an
    intercept, a log(member-months) offset and HC0 standard errors. Unlike the Poisson
    variance ``1/sum(y)`` it does not assume every member has the same rate, so it stays
    honest for the overdispersed, zero-heavy counts of claims data.
    """
    ys, ts = y.sum(), t.sum()
    r = ys / ts if ts > 0 else np.nan
    if ys <= 0:
        return r, np.nan
    return r, np.sqrt(np.sum((y - r * t) ** 2)) / ys


def rates(frame: pd.DataFrame, outcomes: list[str], group: str = "group",
          exposure: str = "member_months", by: str | None = None, per: float = 1000.0,
          treated=TREATED, control=CONTROL, alpha: float = 0.05) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Crude rates per ``per`` member-months by arm, and their ratio and difference.

    Parameters
    ----------
    frame : one row per member (x period when ``by`` is given).
    outcomes : count columns (visits, days).
    exposure : person-time column, member-months by default.
    by : optional column to stratify by (e.g. ``period``: baseline / followup).

    Returns
    -------
    (rates, contrasts)
        ``rates``: by, outcome, arm, members, events, member_months, rate, ci_low, ci_high.
        ``contrasts``: by, outcome, scale (``rate_ratio`` or
        ``rate_difference_per_1000_mm``), estimate, std_error, ci_low, ci_high, p_value,
        n_treated, n_control. Intervals are Wald intervals on the log scale for rates and
        ratios, with the overdispersion-robust variance of :func:`_ratio_estimate`.
    """
    z = stats.norm.ppf(1 - alpha / 2)
    strata = [(None, frame)] if by is None else list(frame.groupby(by, sort=True))
    rate_rows, contrast_rows = [], []
    for level, sub in strata:
        for outcome in outcomes:
            est = {}
            for arm in (treated, control):
                s = sub[sub[group] == arm]
                y = s[outcome].to_numpy(dtype=float)
                t = s[exposure].to_numpy(dtype=float)
                r, se_log = _ratio_estimate(y, t)
                est[arm] = (r, se_log, len(s))
                rate_rows.append({
                    "by": level, "outcome": outcome, "arm": arm, "members": len(s),
                    "events": y.sum(), "member_months": t.sum(), "rate": r * per,
                    "ci_low": r * per * np.exp(-z * se_log), "ci_high": r * per * np.exp(z * se_log),
                })
            (r1, s1, n1), (r0, s0, n0) = est[treated], est[control]
            log_rr = np.log(r1 / r0) if r1 > 0 and r0 > 0 else np.nan
            se_rr = np.hypot(s1, s0)
            diff = (r1 - r0) * per
            se_diff = np.hypot(r1 * s1, r0 * s0) * per
            for scale, e, se, lo, hi, p in (
                ("rate_ratio", np.exp(log_rr), se_rr, np.exp(log_rr - z * se_rr),
                 np.exp(log_rr + z * se_rr), 2 * stats.norm.sf(abs(log_rr / se_rr))),
                ("rate_difference_per_1000_mm" if per == 1000 else f"rate_difference_per_{per:g}",
                 diff, se_diff, diff - z * se_diff, diff + z * se_diff,
                 2 * stats.norm.sf(abs(diff / se_diff))),
            ):
                contrast_rows.append({"by": level, "outcome": outcome, "scale": scale,
                                      "estimate": e, "std_error": se, "ci_low": lo,
                                      "ci_high": hi, "p_value": p,
                                      "n_treated": n1, "n_control": n0})
    r, c = pd.DataFrame(rate_rows), pd.DataFrame(contrast_rows)
    if by is None:
        r, c = r.drop(columns="by"), c.drop(columns="by")
    else:
        r, c = r.rename(columns={"by": by}), c.rename(columns={"by": by})
    return r, c
