"""Plain-language display of results for the workbooks: sentences and tidy tables.

Computing lives elsewhere; these functions only turn result tables into what a reader
sees (strings and DataFrames with readable column names). :func:`table` is how a
workbook shows any table (readers' labels and units, no row numbers, "not estimable"
for a figure that cannot be computed), :func:`table1` the publication-style Table 1,
and :class:`RunNotes` records the warnings of a workbook to list them once at its end.
"""
from __future__ import annotations

import math
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import numpy as np
import pandas as pd
from IPython.display import Markdown

from ..data.notes import NOTE_TEXT
from .plots import ARM_LABELS, arm_labels
from .spec import CLAIMS_ARMS, CLAIMS_OUTCOMES, outcome_title, singular

#: Readers' words (with units) for the results vocabulary's scales.
SCALE_LABELS = {
    "difference": "difference",
    "ratio": "ratio",
    "rate_ratio": "rate ratio",
    "rate_difference_per_1000_mm": "difference per 1,000 member-months",
    "hazard_ratio": "hazard ratio",
    "odds_ratio": "odds ratio",
    "risk_difference": "risk difference",
    "cost_difference": "cost difference per member ($, follow-up)",
    "pmpm_difference": "difference per member per month ($)",
    "net_savings_per_member": "net savings per member ($)",
    "roi": "return on investment",
    "benefit_cost_ratio": "benefit-cost ratio",
    "icer": "extra cost per unit of benefit ($)",
    "nmb": "net monetary benefit ($)",
    "probability_cost_saving": "probability of saving money",
    "proportion": "proportion",
    "mean": "mean",
}
#: Scales whose estimates are dollars.
MONEY_SCALES = frozenset({"cost_difference", "pmpm_difference", "net_savings_per_member",
                          "icer", "nmb"})
#: Scales whose estimates are shares (shown as percentages).
SHARE_SCALES = frozenset({"probability_cost_saving", "roi"})

#: Readers' labels of the columns evalkit's own tables use (not the user's data columns).
COLUMN_LABELS = {
    "estimate": "estimate", "std_error": "standard error", "ci_low": "95% CI, low",
    "ci_high": "95% CI, high", "p_value": "p", "calibrated_p_value": "calibrated p",
    "smd": "standardized difference", "n_missing": "missing", "rows_in": "rows read",
    "self_help_members": "referred", "control_members": "comparison",
    "total_members": "total", "excluded_members": "left out",
    "share_zero": "share with no cost", "p95": "95th percentile",
    "loglik": "log-likelihood", "n_params": "parameters", "aic": "AIC",
    "delta_aic": "AIC above the best", "at_ci_low": "at the 95% CI's low end",
    "at_ci_high": "at the 95% CI's high end", "base_value": "base value",
    "output_at_low": "net savings at low ($)", "output_at_high": "net savings at high ($)",
    "swing": "swing ($)", "program_cost": "program cost ($)", "savings": "savings ($)",
    "net_budget_impact": "net budget impact ($)", "pmpm_impact": "per member per month ($)",
    "total_program_cost": "program cost, all years ($)",
    "total_savings": "savings, all years ($)",
    "total_net_budget_impact": "net budget impact, all years ($)",
    "mean_pmpm_impact": "mean per member per month ($)",
    "min_pmpm_impact": "lowest per member per month ($)",
    "max_pmpm_impact": "highest per member per month ($)",
    "probability_cost_effective": "probability cost-effective",
    "evpi_per_member": "value of perfect information per member ($)",
    "evpi_population": "value of perfect information, population ($)",
    "wtp": "value of one ER visit averted ($)",
    "diagnostics_passed": "diagnostics passed", "evalue_estimate": "E-value (estimate)",
    "evalue_ci": "E-value (95% CI limit)", "q025": "2.5th percentile",
    "q975": "97.5th percentile", "sd": "SD", "se_mu": "standard error of the mean",
    "mu": "mean (log scale)", "sigma": "SD (log scale)", "n": "n",
    "n_risk": "at risk", "n_event": "events", "o_minus_e": "observed minus expected",
    "oe2_over_e": "(O-E)²/E", "oe2_over_v": "(O-E)²/V", "hr": "hazard ratio",
    "hr_ci_low": "hazard ratio, 95% CI low", "hr_ci_high": "hazard ratio, 95% CI high",
    "ease": "EASE",
}
#: evalkit's own columns that hold dollars.
MONEY_COLUMNS = frozenset({
    "program_cost", "savings", "net_budget_impact", "pmpm_impact", "total_program_cost",
    "total_savings", "total_net_budget_impact", "mean_pmpm_impact", "min_pmpm_impact",
    "max_pmpm_impact", "evpi_per_member", "evpi_population", "wtp", "output_at_low",
    "output_at_high", "swing"})
#: evalkit's own columns that hold shares (shown as percentages).
SHARE_COLUMNS = frozenset({"share_zero", "probability_cost_effective"})
#: Columns holding p-values.
P_COLUMNS = frozenset({"p_value", "calibrated_p_value", "p"})
#: Columns whose values (not only their header) are row estimates on the row's scale/unit.
VALUE_COLUMNS = frozenset({"estimate", "ci_low", "ci_high", "at_ci_low", "at_ci_high",
                           "std_error", "mean", "sd", "q025", "q975", "base_value", "low",
                           "high"})
#: What a reader sees in place of a figure that could not be computed (NaN or infinite).
NOT_ESTIMABLE = "not estimable"
#: Words a code name is made of, as a reader writes them.
_WORDS = {"er": "ER", "mh": "mental-health", "pmpm": "PMPM", "roi": "ROI", "smd": "SMD",
          "sd": "SD", "ci": "CI", "aic": "AIC", "mm": "member-months", "icer": "ICER",
          "nmb": "NMB", "evpi": "EVPI", "rmst": "RMST", "km": "Kaplan-Meier"}
#: Single-word codes as a reader writes them.
_SINGLE = {"followup": "follow-up", "roi": "ROI", "icer": "ICER", "nmb": "NMB",
           "self_help": "self-help", "negbin": "negative binomial", "zinb":
           "zero-inflated negative binomial", "poisson": "Poisson"}
_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9]*(_[A-Za-z0-9]+)+$")


def rates_table(rates: pd.DataFrame, spec=None) -> pd.DataFrame:
    """Rates per 1,000 member-months as 'rate (low-high)' in one row per outcome x period
    (outcomes named by ``spec``, the run's analysis spec, as in :func:`readable`)."""
    r = rates.copy()
    r["value"] = [f"{v:,.1f} ({lo:,.1f}-{hi:,.1f})" for v, lo, hi in
                  zip(r["rate"], r["ci_low"], r["ci_high"])]
    r["arm"] = r["arm"].map(arm_labels(spec))
    index = [c for c in ("outcome", "period") if c in r]
    wide = r.pivot_table(index=index, columns="arm", values="value", aggfunc="first")
    members = r.pivot_table(index=index, columns="arm", values="members", aggfunc="first")
    wide = wide.join(members.add_suffix(": members"))
    wide.columns.name = None
    return wide.reset_index().assign(
        outcome=lambda d: [_outcome_label(o, spec) for o in d["outcome"]])


def contrasts_table(contrasts: pd.DataFrame, spec=None) -> pd.DataFrame:
    """Rate ratios and differences with 95% CIs and p-values, readable (outcomes named
    by ``spec``)."""
    c = contrasts.copy()
    c["outcome"] = [_outcome_label(o, spec) for o in c["outcome"]]
    c["95% CI"] = [f"{lo:,.3g} to {hi:,.3g}" for lo, hi in zip(c["ci_low"], c["ci_high"])]
    c["p"] = [_cell(p, "p") for p in c["p_value"]]
    keep = [k for k in ("outcome", "period", "scale", "estimate", "95% CI", "p") if k in c]
    return c[keep].round({"estimate": 3})


def findings(contrasts: pd.DataFrame, rates: pd.DataFrame, period: str = "followup",
             spec=None) -> list[str]:
    """One sentence per outcome comparing the arms in ``period`` (for the finance
    committee; outcomes named by ``spec``)."""
    out = []
    sub = contrasts[contrasts.get("period", period) == period] if "period" in contrasts else contrasts
    rs = rates[rates["period"] == period] if "period" in rates else rates
    for outcome in dict.fromkeys(sub["outcome"]):
        rr = sub[(sub["outcome"] == outcome) & (sub["scale"] == "rate_ratio")].iloc[0]
        diff = sub[(sub["outcome"] == outcome) & (sub["scale"] != "rate_ratio")].iloc[0]
        t = rs[(rs["outcome"] == outcome) & (rs["arm"] == "self_help")].iloc[0]
        c = rs[(rs["outcome"] == outcome) & (rs["arm"] == "control")].iloc[0]
        change = (rr["estimate"] - 1) * 100
        direction = "fewer" if change < 0 else "more"
        out.append(
            f"{_outcome_label(outcome, spec)}: {t['rate']:,.1f} per 1,000 member-months with "
            f"self-help referral vs {c['rate']:,.1f} without, {abs(diff['estimate']):,.1f} "
            f"{direction} per 1,000 member-months (95% CI {diff['ci_low']:,.1f} to {diff['ci_high']:,.1f}); "
            f"rate ratio {rr['estimate']:.2f} (95% CI {rr['ci_low']:.2f} to {rr['ci_high']:.2f}).")
    return out


def quarantine(report):
    """The quarantine counts by table and reason, or a sentence when nothing was set aside."""
    q = report.quarantine
    if q.empty:
        return Markdown("**No rows were quarantined**: every source row passed the row-level checks.")
    return table(q.rename(columns={"example_rows": "example source rows"}))


def set_aside(notes: pd.DataFrame):
    """The set-aside notes (:meth:`evalkit.analysis.study.Study.set_aside`) as a readable table,
    or a sentence when there is nothing to note."""
    if notes.empty:
        return Markdown("**Nothing to note**: no person with claim lines lacks coverage, no "
                        "category code is unmapped, and no inpatient stay lacks a usable "
                        "discharge date (person-level data have no claim lines to check).")
    t = notes.assign(what=notes["note"].map(NOTE_TEXT), code=notes["code"].fillna(""),
                     nights=notes["nights"].astype("object").where(notes["nights"].notna(), ""))
    return table(t[["what", "code", "persons", "visits", "lines", "nights", "amount"]].rename(
        columns={"code": "code (category)"}), money_columns=("amount",), keep=("code (category)",),
        labels={"amount": "allowed amount ($)"})


def mental_health_concepts(concepts: pd.DataFrame | None, mode: str = "claims"):
    """The OMOP mental-health concept list (:meth:`evalkit.analysis.study.Study.mental_health_concepts`),
    or a sentence for other sources (``mode`` is the run's: person-level data count no
    visits)."""
    if concepts is None and mode != "claims":
        return Markdown("Person-level data: the outcomes arrive already computed, one row "
                        "per person, so no visit is classed as a mental-health visit here.")
    if concepts is None:
        return Markdown("Not an OMOP source: mental-health visits come from the category "
                        "codes (or, for Synthea, the SNOMED codes in data.synthea.mh_codes).")
    if concepts.empty:
        return Markdown("**No mental-health concept was found in this CDM**: no outpatient "
                        "visit is counted as a mental-health visit. Check the vocabulary "
                        "(`concept`) or set data.omop.mh_condition_concepts.")
    return table(concepts)


def family_choice(adjusted, spec=None) -> pd.DataFrame:
    """The model comparison behind each outcome's choice of count family (outcomes named
    by ``spec``)."""
    parts = [c.comparison.assign(outcome=_outcome_label(o, spec))
             for o, c in adjusted.choices.items()]
    t = pd.concat(parts, ignore_index=True)
    return t[["outcome", "family", "loglik", "n_params", "aic", "delta_aic", "note"]].round(1)


def effects_table(records: pd.DataFrame, spec=None) -> pd.DataFrame:
    """Effect records (results vocabulary) with readable labels (outcomes named by
    ``spec``) and intervals."""
    r = records.copy()
    r["outcome"] = [_outcome_label(o, spec) for o in r["outcome"]]
    r["95% CI"] = [f"{lo:,.3g} to {hi:,.3g}" for lo, hi in zip(r["ci_low"], r["ci_high"])]
    r["p"] = [_cell(p, "p") for p in r["p_value"]]
    keep = ["outcome", "scale", "estimate", "95% CI", "p"]
    if "n_replicates" in r and r["n_replicates"].notna().any():
        r["interval"] = [f"bootstrap, {n:,.0f} replicates" if pd.notna(n) else "model"
                         for n in r["n_replicates"]]
        keep.insert(4, "interval")
    return r[keep].round({"estimate": 3})


def methods_table(comparison: pd.DataFrame, spec=None) -> pd.DataFrame:
    """Ratios by outcome and method side by side, as 'ratio (low-high)' (outcomes named
    by ``spec``)."""
    c = comparison.copy()
    c["value"] = [f"{v:.2f} ({lo:.2f}-{hi:.2f})" for v, lo, hi in
                  zip(c["ratio"], c["ci_low"], c["ci_high"])]
    wide = c.pivot_table(index="outcome", columns="method", values="value", aggfunc="first",
                         sort=False)
    order = list(dict.fromkeys(c["method"]))
    wide = wide[order]
    if "true_ratio" in c:
        wide["true effect (synthetic data)"] = c.groupby("outcome", sort=False)["true_ratio"].first()
    wide.index = [_outcome_label(o, spec) for o in wide.index]
    wide.columns.name = None
    return wide


def adjustment(spec):
    """What the adjusted models of a run adjust for, from its analysis spec (Markdown):
    each term as it enters the models, and any term left out with the reason."""
    terms = ", ".join(words(t) for t in spec.terms) or "nothing (no covariates)"
    text = f"**Adjusted for** (the run's analysis spec, `spec.json`): {terms}."
    if spec.not_adjusted:
        text += " **Not adjusted for:** " + "; ".join(
            f"{words(r['term'])} ({r['reason']})" for r in spec.not_adjusted) + "."
    return Markdown(text)


# ------------------------------------------------------------------ readers' tables
def words(code) -> str:
    """A code name as words: ``log1p_baseline_er_visits`` -> ``log(1 + baseline ER
    visits)``, ``gross_savings_per_member`` -> ``gross savings per member``. Text that is
    not a code name (it has spaces, or no underscore) is returned unchanged."""
    text = str(code)
    if text in SCALE_LABELS and "_" in text:
        return SCALE_LABELS[text]
    m = re.fullmatch(r"(log1p)[_(](\w+)\)?", text)
    if m:
        return f"log(1 + {words(m[2]) if '_' in m[2] else m[2]})"
    if text in _SINGLE:
        return _SINGLE[text]
    if not _CODE.match(text):
        return text
    return " ".join(_WORDS.get(w.lower(), w) for w in text.split("_"))


def _decimals(a: float) -> int:
    """Decimals that keep about three significant digits of a number of size ``a``."""
    return 0 if a >= 1000 else 1 if a >= 10 else 2 if a >= 1 else 3


def _number(v: float, decimals: int | None = None) -> str:
    """A number for readers: whole numbers with thousands separators, others with about
    three significant digits (never in scientific notation)."""
    a = abs(v)
    if decimals is None and float(v).is_integer():
        return f"{v:,.0f}"
    if decimals is None and 0 < a < 0.001:
        return np.format_float_positional(v, precision=2, fractional=False, trim="-")
    return f"{v:,.{_decimals(a) if decimals is None else decimals}f}"


def money(v: float) -> str:
    """Dollars: whole dollars from $1,000 up (no cents on large totals), cents below."""
    sign = "-" if v < 0 else ""
    a = abs(v)
    return f"{sign}${a:,.0f}" if a >= 1000 or float(a).is_integer() else f"{sign}${a:,.2f}"


def p_value(v: float) -> str:
    """A p-value as readers print it (``<0.001``, ``0.042``)."""
    return "<0.001" if v < 0.001 else f"{v:.3f}"


def _cell(v, kind: str = "number") -> str:
    """One cell for readers: NaN and infinities read :data:`NOT_ESTIMABLE`."""
    if v is None or isinstance(v, str):
        if v is not None and v.strip().lower() in ("nan", "inf", "-inf"):
            return NOT_ESTIMABLE          # a figure already formatted as text
        return "" if v is None else words(v)
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (list, tuple, np.ndarray)):
        return ", ".join(str(x) for x in v)
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not math.isfinite(x):
        return NOT_ESTIMABLE
    if kind == "money":
        return money(x)
    if kind == "share":
        return f"{100 * x:.1f}%" if abs(x) < 0.1 else f"{100 * x:.0f}%"
    if kind == "p":
        return p_value(x)
    return _number(x)


def _row_kind(row: pd.Series) -> str:
    """How a row's estimate columns read, from its ``scale`` or ``unit`` (evalkit's own
    fields, never the user's column names)."""
    scale = str(row.get("scale", ""))
    unit = str(row.get("unit", "")).strip()
    if scale in MONEY_SCALES or unit == "dollars" or unit.startswith("$"):
        return "money"
    if scale in SHARE_SCALES or unit == "share":
        return "share"
    return "number"


def readable(df: pd.DataFrame, *, spec=None, hide=(), money_columns=(), labels=None,
             keep=(), index: bool | None = None) -> pd.DataFrame:
    """A table as readers see it: every cell a string in readers' words and units.

    Parameters
    ----------
    df : any of evalkit's result tables.
    spec : the run's :class:`evalkit.spec.AnalysisSpec`; outcome names are shown with its
        labels (otherwise the built-in labels, or the name in words).
    hide : columns left out (machine keys such as ``quantity``).
    money_columns : further columns holding dollars.
    labels : further ``{column: header}`` labels.
    keep : columns whose text is shown exactly as it is (e.g. the source's own codes).
    index : keep the index as the first column(s); by default a named or non-numeric
        index is kept and a plain row number is dropped.

    Codes become words (:func:`words`), scales their readers' labels, whole numbers get
    thousands separators and no decimals, dollars lose their cents from $1,000 up, shares
    become percentages and any NaN or infinite figure reads "not estimable".
    """
    t = df.copy()
    if index is None:
        index = not isinstance(t.index, pd.RangeIndex) and (
            any(n is not None for n in t.index.names)
            or not pd.api.types.is_integer_dtype(t.index.dtype))
    if index:
        t = t.rename_axis(index=[n if n is not None else "" for n in t.index.names]).reset_index()
    t = t.drop(columns=[c for c in hide if c in t.columns])
    kinds = t.apply(_row_kind, axis=1) if len(t) else pd.Series(dtype=object)
    out = pd.DataFrame(index=t.index)
    for col in t.columns:
        name = str(col)
        if name in keep:
            out[col] = ["" if v is None else str(v) for v in t[col]]
        elif name == "outcome":
            out[col] = [_outcome_label(o, spec) for o in t[col]]
        elif name in P_COLUMNS or name.startswith("p_") or name.endswith("_p"):
            out[col] = [_cell(v, "p") for v in t[col]]
        elif name in MONEY_COLUMNS or name in money_columns:
            out[col] = [_cell(v, "money") for v in t[col]]
        elif name in SHARE_COLUMNS:
            out[col] = [_cell(v, "share") for v in t[col]]
        elif name in VALUE_COLUMNS:
            out[col] = [_cell(v, k) for v, k in zip(t[col], kinds)]
        else:
            out[col] = [_cell(v) for v in t[col]]
    names = {**COLUMN_LABELS, **_study_labels(spec), **(labels or {})}
    out.columns = [names.get(str(c), words(c)) for c in out.columns]
    if spec is not None:
        for col in ("scale", "term"):
            if col in t.columns:
                out[names.get(col, words(col))] = [
                    _per_unit(v, spec) for v in out[names.get(col, words(col))]]
        out.columns = [_per_unit(c, spec) for c in out.columns]
    return out.reset_index(drop=True)


def _study_labels(spec) -> dict:
    """The arm columns' headers in the study's words (``referred`` and ``comparison``
    are the claims default arms' own)."""
    if spec is None or (spec.study.intervention, spec.study.comparison) == CLAIMS_ARMS:
        return {}
    return {"self_help_members": spec.study.intervention,
            "control_members": spec.study.comparison}


def _per_unit(label, spec) -> str:
    """A label of evalkit's vocabulary ('net savings per member ($)', 'difference per
    1,000 member-months') with the study's own unit (per patient, patient-months) when
    the study's unit is not members."""
    one = singular(spec.study.unit)
    text = str(label)
    if one == "member":
        return text
    return re.sub(r"\bmember(?=[- ]months?\b|\b)", one, text.replace("members", spec.study.unit))


def _outcome_label(name, spec=None) -> str:
    """An outcome as a table shows it: the spec's label (else the built-in one) with a
    capital, or the name in words when neither knows it."""
    if (spec is not None and name in spec.outcomes) or name in CLAIMS_OUTCOMES:
        return outcome_title(name, spec)
    return words(name)


#: The look of a readers' table: no cut-off labels (text wraps), numbers to the right.
_STYLES = [{"selector": "th", "props": "text-align: left; white-space: normal;"},
           {"selector": "td", "props": "text-align: right; white-space: normal;"},
           {"selector": "caption", "props": "caption-side: top; text-align: left;"}]


def table(df: pd.DataFrame | None, *, why: str | None = None, caption: str | None = None,
          **kw):
    """:func:`readable` as a styled HTML table with no row numbers (a :class:`Table`;
    None for None, so an absent table shows nothing).

    ``why`` says, under the table, why a figure reads "not estimable" (shown only when
    one does); ``caption`` goes above it. Other keywords go to :func:`readable`.
    """
    if df is None:
        return None
    t = readable(df, **kw)
    styler = t.style.hide(axis="index").set_table_styles(_STYLES)
    parts = [caption] if caption else []
    if why and (t == NOT_ESTIMABLE).any().any():
        parts.append(f"Not estimable: {why}")
    if parts:
        styler = styler.set_caption(" ".join(parts))
    return Table(t, styler)


@dataclass(frozen=True)
class Table:
    """A readers' table: ``frame`` holds the cells as shown (strings), ``styler`` the
    HTML. Jupyter shows the HTML; its plain-text form is the same cells, without row
    numbers."""

    frame: pd.DataFrame
    styler: object

    def _repr_html_(self) -> str:
        return self.styler.to_html()

    def __repr__(self) -> str:
        caption = self.styler.caption
        return (f"{caption}\n" if caption else "") + self.frame.to_string(index=False)


def table1(t1: pd.DataFrame, spec=None, min_cell: int | None = None):
    """Table 1 as published: one row per characteristic, each arm's ``n (%)`` (yes/no
    characteristics) or ``mean (SD)`` (continuous ones), and the standardized difference.

    ``t1`` is :meth:`evalkit.analysis.study.Study.table1` (columns covariate, kind, mean_treated,
    sd_treated, mean_control, sd_control, smd, n_missing). A share the run suppressed
    (NaN in a public run: it stands for fewer than ``min_cell`` people) reads
    "suppressed" and so does its standardized difference; counts are never derived from
    a suppressed share. Returns a :class:`Table`.
    """
    size = t1[t1["kind"] == "count"]
    n = {arm: float(size[f"mean_{arm}"].iloc[0]) for arm in ("treated", "control")}
    suppressed = "suppressed" + (f" (fewer than {min_cell})" if min_cell else "")
    arms = {"treated": spec.study.intervention if spec else ARM_LABELS["self_help"],
            "control": spec.study.comparison if spec else ARM_LABELS["control"]}
    rows = []
    for r in t1[t1["kind"] != "count"].itertuples(index=False):
        row = {"characteristic": words(r.covariate)}
        # one number of decimals per row, from its larger mean
        d = _decimals(np.nanmax(np.abs([r.mean_treated, r.mean_control, 0.0])))
        for arm in ("treated", "control"):
            mean, sd = getattr(r, f"mean_{arm}"), getattr(r, f"sd_{arm}")
            if r.kind == "binary":
                row[arm] = (suppressed if pd.isna(mean) else
                            f"{round(mean * n[arm]):,} ({100 * mean:.1f}%)")
                row["statistic"] = "n (%)"
            else:
                row[arm] = (suppressed if pd.isna(mean) else
                            f"{_number(mean, d)} ({_number(sd, d)})" if pd.notna(sd)
                            else _number(mean, d))
                row["statistic"] = "mean (SD)"
        row["SMD"] = suppressed if pd.isna(r.smd) else f"{r.smd:.2f}"
        row["missing"] = f"{int(r.n_missing):,}"
        rows.append(row)
    out = pd.DataFrame(rows, columns=["characteristic", "statistic", "treated", "control",
                                      "SMD", "missing"])
    out = out.rename(columns={a: f"{arms[a][:1].upper()}{arms[a][1:]} (n={n[a]:,.0f})"
                              for a in arms})
    return Table(out, out.style.hide(axis="index").set_table_styles(_STYLES))


# ------------------------------------------------------------------ notes on a run
_CATEGORY_WORDS = {
    "DataDroppedWarning": "Rows left out",
    "StatisticalWarning": "Statistical caution",
    "ConvergenceWarning": "A model did not converge",
    "RuntimeWarning": "Numerical",
    "FutureWarning": "Software notice",
    "DeprecationWarning": "Software notice",
    "UserWarning": "Note",
}
#: Absolute paths (an install or work folder) are left out of the notes.
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:/[\w.@+-]+){2,}/?")


@dataclass
class RunNotes:
    """Records the warnings raised while a workbook runs, instead of printing them
    between its tables, and lists each once, in words, at the end (:meth:`show`).

    Start it in a workbook's first cell (``notes = show.RunNotes.start()``); a warning
    filtered out (ignored) by the code that raised it is not recorded. Use as a context
    manager elsewhere: ``with RunNotes() as notes: ...``.
    """

    seen: Counter = field(default_factory=Counter)
    where: dict = field(default_factory=dict)
    _previous: object = None

    @classmethod
    def start(cls) -> Self:
        """A new recorder, recording from now on."""
        return cls().__enter__()

    def __enter__(self) -> Self:
        self._previous = warnings.showwarning
        warnings.showwarning = self._record
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop recording (warnings are printed again as before)."""
        if self._previous is not None:
            warnings.showwarning = self._previous
            self._previous = None

    def _record(self, message, category, filename, lineno, file=None, line=None) -> None:
        key = (category.__name__, _PATH.sub("", str(message)).strip())
        self.seen[key] += 1
        self.where.setdefault(key, _module(filename))

    def sentences(self) -> list[str]:
        """One sentence per distinct warning: what kind, what it said, how often, where."""
        out = []
        for (cat, msg), k in self.seen.items():
            # Python shows a warning once per place in the code (its default filter), so a
            # count says how often it was shown, from how many places, not how often raised
            about = [f"from {k} places" if k > 1 else "",
                     f"in {self.where[(cat, msg)]}" if self.where.get((cat, msg)) else ""]
            about = "; ".join(a for a in about if a)
            out.append(f"{_CATEGORY_WORDS.get(cat, words(cat))}"
                       + (f" ({about})" if about else "") + f": {msg}")
        return out

    def show(self) -> Markdown:
        """The notes as Markdown (a sentence when there were none)."""
        lines = self.sentences()
        if not lines:
            return Markdown("No warning was raised while this workbook ran.")
        return Markdown("Warnings raised while this workbook ran, each listed once:\n\n"
                        + "\n".join(f"- {line}" for line in lines))


def _module(filename: str) -> str:
    """The dotted module of a source file, without its install folder (``evalkit.models.count``)."""
    parts = Path(str(filename)).with_suffix("").parts
    for root in ("evalkit", "statsmodels", "pandas", "numpy", "scipy", "lifelines", "sklearn"):
        if root in parts:
            i = len(parts) - 1 - parts[::-1].index(root)
            return ".".join(parts[i:]).removesuffix(".__init__")
    return ""
