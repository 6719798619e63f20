"""Plain-language display of results for the workbooks: sentences and tidy tables.

Computing lives elsewhere; these functions only turn result tables into what a reader
sees (strings and DataFrames with readable column names).
"""
from __future__ import annotations

import pandas as pd
from IPython.display import Markdown

from ..data.notes import NOTE_TEXT
from .plots import ARM_LABELS, OUTCOME_LABELS


def _label(outcome: str) -> str:
    return OUTCOME_LABELS.get(outcome, outcome.replace("_", " "))


def rates_table(rates: pd.DataFrame) -> pd.DataFrame:
    """Rates per 1,000 member-months as 'rate (low-high)' in one row per outcome x period."""
    r = rates.copy()
    r["value"] = [f"{v:,.1f} ({lo:,.1f}-{hi:,.1f})" for v, lo, hi in
                  zip(r["rate"], r["ci_low"], r["ci_high"])]
    r["arm"] = r["arm"].map(ARM_LABELS)
    index = [c for c in ("outcome", "period") if c in r]
    wide = r.pivot_table(index=index, columns="arm", values="value", aggfunc="first")
    members = r.pivot_table(index=index, columns="arm", values="members", aggfunc="first")
    wide = wide.join(members.add_suffix(": members"))
    wide.columns.name = None
    return wide.reset_index().assign(outcome=lambda d: d["outcome"].map(_label))


def contrasts_table(contrasts: pd.DataFrame) -> pd.DataFrame:
    """Rate ratios and differences with 95% CIs and p-values, readable."""
    c = contrasts.copy()
    c["outcome"] = c["outcome"].map(_label)
    c["95% CI"] = [f"{lo:,.3g} to {hi:,.3g}" for lo, hi in zip(c["ci_low"], c["ci_high"])]
    c["p"] = [("<0.001" if p < 0.001 else f"{p:.3f}") for p in c["p_value"]]
    keep = [k for k in ("outcome", "period", "scale", "estimate", "95% CI", "p") if k in c]
    return c[keep].round({"estimate": 3})


def findings(contrasts: pd.DataFrame, rates: pd.DataFrame, period: str = "followup") -> list[str]:
    """One sentence per outcome comparing the arms in ``period`` (for the finance committee)."""
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
            f"{_label(outcome)}: {t['rate']:,.1f} per 1,000 member-months with self-help referral "
            f"vs {c['rate']:,.1f} without, {abs(diff['estimate']):,.1f} {direction} per 1,000 "
            f"member-months (95% CI {diff['ci_low']:,.1f} to {diff['ci_high']:,.1f}); "
            f"rate ratio {rr['estimate']:.2f} (95% CI {rr['ci_low']:.2f} to {rr['ci_high']:.2f}).")
    return out


def quarantine(report):
    """The quarantine counts by table and reason, or a sentence when nothing was set aside."""
    q = report.quarantine
    if q.empty:
        return Markdown("**No rows were quarantined**: every source row passed the row-level checks.")
    return q.rename(columns={"example_rows": "example source rows"})


def set_aside(notes: pd.DataFrame):
    """The set-aside notes (:meth:`evalkit.analysis.study.Study.set_aside`) as a readable table,
    or a sentence when there is nothing to note."""
    if notes.empty:
        return Markdown("**Nothing to note**: no person with claim lines lacks coverage, no "
                        "category code is unmapped, and no inpatient stay lacks a usable "
                        "discharge date (person-level data have no claim lines to check).")
    t = notes.assign(what=notes["note"].map(NOTE_TEXT), code=notes["code"].fillna(""),
                     nights=notes["nights"].astype("object").where(notes["nights"].notna(), ""))
    return t[["what", "code", "persons", "visits", "lines", "nights", "amount"]].rename(
        columns={"code": "code (category)", "amount": "allowed $"})


def mental_health_concepts(concepts: pd.DataFrame | None):
    """The OMOP mental-health concept list (:meth:`evalkit.analysis.study.Study.mental_health_concepts`),
    or a sentence for other sources."""
    if concepts is None:
        return Markdown("Not an OMOP source: mental-health visits come from the category "
                        "codes (or, for Synthea, the SNOMED codes in data.synthea.mh_codes).")
    if concepts.empty:
        return Markdown("**No mental-health concept was found in this CDM**: no outpatient "
                        "visit is counted as a mental-health visit. Check the vocabulary "
                        "(`concept`) or set data.omop.mh_condition_concepts.")
    return concepts


def family_choice(adjusted) -> pd.DataFrame:
    """The model comparison behind each outcome's choice of count family."""
    parts = [c.comparison.assign(outcome=_label(o)) for o, c in adjusted.choices.items()]
    t = pd.concat(parts, ignore_index=True)
    return t[["outcome", "family", "loglik", "n_params", "aic", "delta_aic", "note"]].round(1)


def effects_table(records: pd.DataFrame) -> pd.DataFrame:
    """Effect records (results vocabulary) with readable labels and intervals."""
    r = records.copy()
    r["outcome"] = r["outcome"].map(_label)
    r["95% CI"] = [f"{lo:,.3g} to {hi:,.3g}" for lo, hi in zip(r["ci_low"], r["ci_high"])]
    r["p"] = [("<0.001" if p < 0.001 else f"{p:.3f}") for p in r["p_value"]]
    return r[["outcome", "scale", "estimate", "95% CI", "p"]].round({"estimate": 3})


def methods_table(comparison: pd.DataFrame) -> pd.DataFrame:
    """Ratios by outcome and method side by side, as 'ratio (low-high)'."""
    c = comparison.copy()
    c["value"] = [f"{v:.2f} ({lo:.2f}-{hi:.2f})" for v, lo, hi in
                  zip(c["ratio"], c["ci_low"], c["ci_high"])]
    wide = c.pivot_table(index="outcome", columns="method", values="value", aggfunc="first",
                         sort=False)
    order = list(dict.fromkeys(c["method"]))
    wide = wide[order]
    if "true_ratio" in c:
        wide["true effect (synthetic data)"] = c.groupby("outcome", sort=False)["true_ratio"].first()
    wide.index = [_label(o) for o in wide.index]
    wide.columns.name = None
    return wide


def adjustment(spec):
    """What the adjusted models of a run adjust for, from its analysis spec (Markdown):
    each term as it enters the models, and any term left out with the reason."""
    terms = ", ".join(f"`{t}`" for t in spec.terms) or "nothing (no covariates)"
    text = f"**Adjusted for** (the run's analysis spec, `spec.json`): {terms}."
    if spec.not_adjusted:
        text += " **Not adjusted for:** " + "; ".join(
            f"`{r['term']}` ({r['reason']})" for r in spec.not_adjusted) + "."
    return Markdown(text)
