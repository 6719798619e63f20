"""The brief's tables, built from results.json and made safe to publish.

Every table is built from named columns of a recorded table or of the estimates (never
"all columns"), so a member-level column that found its way into results.json is not
carried along. When the brief is public, every table holding counts of people goes
through :func:`evalkit.privacy.suppress` (primary and complementary suppression, and
figures computed from a hidden count hidden with it) before it is formatted; tables
without counts of people (dollar figures, ratios) have nothing to suppress.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..econ.costbenefit import figure_units
from ..privacy import DEFAULT_ID_HEADERS, PrivacyError, suppress, suppress_together
from .findings import comparable, money, num, pct, pvalue, ratio, total
from .story import CLAIMS_STUDY, Study

ARMS = (("self_help", "self-help referral"), ("control", "comparison"))
#: the cohort table's row of each arm
ARM_ROWS = {"self_help": "Self-help referral", "control": "Comparison"}
#: the estimates' column counting each arm
ARM_COUNTS = {"self_help": "n_treated", "control": "n_control"}


@dataclass(frozen=True)
class BriefTable:
    """A table ready to print: ``frame`` holds display strings only."""

    key: str
    title: str
    frame: pd.DataFrame
    note: str = ""
    suppressed: int = 0
    caption: str = ""
    numeric: tuple = field(default_factory=tuple)   # columns aligned right


def is_id_column(name) -> bool:
    """A column named like a member-level id (``member_id``, ``patient_id``, ``mrn`` ...)."""
    words = re.findall(r"[a-z0-9]+", str(name).lower())
    joined = "_".join(words)
    names = ["_".join(re.findall(r"[a-z0-9]+", h.lower())) for h in DEFAULT_ID_HEADERS]
    return bool(words) and any(joined == n or joined.endswith("_" + n) for n in names)


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA


def _safe(df: pd.DataFrame, counts: list[str], *, public: bool, min_cell: int,
          derived: dict | None = None, **kw):
    """Suppress ``counts`` (and ``derived``) when public; returns (frame, mask, report)."""
    counts = [c for c in counts if c in df]
    mask = pd.DataFrame(False, index=df.index, columns=df.columns)
    if not public or not counts or df.empty:
        return df, mask, None
    for c in counts:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    res = suppress(df, counts, min_cell=min_cell, derived=derived, **kw)
    return res.table, res.mask, res


def _fmt(frame, mask, col, f):
    """Format a column, leaving suppressed cells as the marker."""
    return [v if (m or isinstance(v, str)) else ("" if _missing(v) else f(v))
            for v, m in zip(frame[col], mask[col])]


def _note(res) -> tuple[str, int]:
    if res is None or res.n_suppressed == 0:
        return "", 0
    return res.footnote, res.n_suppressed


def _cohort_frame(results: dict, estimates: pd.DataFrame) -> pd.DataFrame | None:
    """Members per arm and their total: from the attrition table's last step, else from
    the estimates' ``n_treated`` / ``n_control``."""
    att = results.get("tables", {}).get("data_quality.attrition") or []
    n_t = n_c = None
    if att:
        last = att[-1]
        n_t, n_c = last.get("self_help_members"), last.get("control_members")
    elif not estimates.empty and {"n_treated", "n_control"} <= set(estimates):
        e = estimates.dropna(subset=["n_treated", "n_control"])
        if not e.empty:
            n_t, n_c = int(e["n_treated"].max()), int(e["n_control"].max())
    if _missing(n_t) or _missing(n_c):
        return None
    return pd.DataFrame({"members": [float(n_t), float(n_c), float(n_t) + float(n_c)]},
                        index=[ARM_ROWS["self_help"], ARM_ROWS["control"], "Total"])


def cohort_table(results: dict, estimates: pd.DataFrame, *, public: bool, min_cell: int,
                 hide=(), arms: tuple = ("Self-help referral", "Comparison"),
                 unit: str = "members"):
    """Members analysed per arm (and the total): from the attrition table's last step,
    else from the estimates' ``n_treated`` / ``n_control``. ``hide``: cells hidden because
    the same count is hidden in another table (:func:`linked_cells`). ``arms`` names the
    two rows (the study's intervention and comparison), ``unit`` the count's column."""
    df = _cohort_frame(results, estimates)
    if df is None:
        return None
    # rows are the arms and their total: a column relation
    frame, mask, res = _safe(df, ["members"], public=public, min_cell=min_cell,
                             col_total="Total", hide=hide)
    shown = {ARM_ROWS["self_help"]: arms[0], ARM_ROWS["control"]: arms[1], "Total": "Total"}
    out = pd.DataFrame({"group": [shown[i] for i in df.index],
                        unit: _fmt(frame, mask, "members", lambda v: f"{v:,.0f}")})
    note, n = _note(res)
    return BriefTable("cohort", f"{unit[:1].upper()}{unit[1:]} compared", out, note, n,
                      numeric=(unit,))


def rates_table(results: dict, audience: str, *, public: bool, min_cell: int,
                study: Study = CLAIMS_STUDY):
    """Use of care per 1,000 member-months by arm (follow-up; research: both periods);
    the arms' columns and the outcomes are named as the ``study`` (the run's spec) names
    them."""
    arms = tuple(zip((a for a, _ in ARMS), study.arms))
    rows = results.get("tables", {}).get("utilization.rates") or []
    if not rows:
        return None
    r = pd.DataFrame(rows)
    need = {"outcome", "arm", "events", "rate", "ci_low", "ci_high"}
    if not need <= set(r):
        return None
    if "period" not in r:
        r["period"] = "followup"
    if audience != "research":
        r = r[r["period"] == "followup"]
    wide = {}
    for _, x in r.iterrows():
        key = (x["outcome"], x["period"])
        d = wide.setdefault(key, {"outcome": x["outcome"], "period": x["period"]})
        d[f"events_{x['arm']}"] = x["events"]
        for c in ("rate", "ci_low", "ci_high"):
            d[f"{c}_{x['arm']}"] = x[c]
    df = pd.DataFrame(list(wide.values())).reset_index(drop=True)
    counts = [f"events_{a}" for a, _ in ARMS if f"events_{a}" in df]
    derived = {f"{c}_{a}": f"events_{a}" for a, _ in ARMS for c in ("rate", "ci_low", "ci_high")
               if f"{c}_{a}" in df and f"events_{a}" in df}
    frame, mask, res = _safe(df, counts, public=public, min_cell=min_cell, derived=derived)
    out = pd.DataFrame({"outcome": [study.label(o, audience) for o in df["outcome"]]})
    if audience == "research":
        out["period"] = [str(p).replace("followup", "follow-up") for p in df["period"]]
    for a, label in arms:
        if f"rate_{a}" not in df:
            continue
        vals = []
        for i in range(len(df)):
            if any(mask[f"{c}_{a}"].iloc[i] for c in ("rate", "ci_low", "ci_high")):
                vals.append(res.marker)
            else:
                vals.append(f"{num(df[f'rate_{a}'].iloc[i], 1)} ({num(df[f'ci_low_{a}'].iloc[i], 1)}"
                            f" to {num(df[f'ci_high_{a}'].iloc[i], 1)})")
        out[label] = vals
    note, n = _note(res)
    cap = ("Visits or days per 1,000 member-months of coverage, with "
           + ("the range of plausible values" if audience == "clearinghouse" else "95% CI")
           + "; a member-month is one month of one member's coverage.")
    return BriefTable("rates", "Use of care by group", out, note, n, caption=cap,
                      numeric=tuple(label for _, label in arms))


_SCALE_TITLES = {"rate_ratio": "rate ratio", "rate_difference_per_1000_mm":
                 "difference per 1,000 member-months", "hazard_ratio": "hazard ratio",
                 "cost_difference": "cost difference ($ per member)", "pmpm_difference":
                 "PMPM difference ($)", "net_savings_per_member": "net savings ($ per member)",
                 "roi": "return on investment", "probability_cost_saving":
                 "probability of saving money", "benefit_cost_ratio": "benefit-cost ratio"}


def _value_fmt(scale: str):
    if scale in ("cost_difference", "net_savings_per_member", "nmb", "icer"):
        return money
    if scale == "pmpm_difference":
        return lambda v: money(v, True)
    if scale in ("roi", "probability_cost_saving", "proportion", "risk_difference"):
        return lambda v: pct(v, 1)
    if scale.endswith("ratio") or scale == "ratio":
        return ratio
    return lambda v: num(v)


def _estimate_groups(estimates: pd.DataFrame, primary_only: bool):
    """(workbook, its estimates) in the order recorded."""
    if estimates.empty:
        return []
    e = comparable(estimates.copy()) if primary_only else estimates.copy()
    return [(wb, g.reset_index(drop=True)) for wb, g in e.groupby("workbook", sort=False)]


def _estimate_frame(g: pd.DataFrame):
    """The numbers of one workbook's estimates table: (frame, count columns, derived)."""
    df = pd.DataFrame({
        "n_treated": pd.to_numeric(g.get("n_treated"), errors="coerce"),
        "n_control": pd.to_numeric(g.get("n_control"), errors="coerce"),
        "estimate": g["estimate"], "ci_low": g["ci_low"], "ci_high": g["ci_high"],
        "p_value": g["p_value"]})
    counts = ["n_treated", "n_control"] if df[["n_treated", "n_control"]].notna().any().any() else []
    derived = {c: ["n_treated", "n_control"] for c in ("estimate", "ci_low", "ci_high", "p_value")} \
        if counts else None
    return df, counts, derived


def linked_cells(results: dict, estimates: pd.DataFrame, *, public: bool, min_cell: int,
                 audience: str = "research", primary_only: bool = False) -> dict:
    """Cells of the brief's tables to hide because the same count is hidden in another.

    The size of an arm appears in the cohort table and, in the research brief, as ``n``
    beside every estimate made on the whole arm and as the number at risk on the first
    day of follow-up. A size hidden in one place (a small arm, or the other arm as its
    complement: the total minus it would give it back) must be hidden everywhere, and
    an ``n`` hidden beside an estimate must be hidden in the cohort table too. The
    tables the audience's brief shows are suppressed together
    (:func:`evalkit.privacy.suppress_together`); this returns, per table key
    (``cohort``, ``estimates.<workbook>``, ``survival``), the ``(row, column)`` cells
    that the link hid, for :func:`cohort_table` and :func:`survival_table` (``hide``)
    and :func:`estimate_tables` (``linked``). Empty when not public.
    """
    cohort = _cohort_frame(results, estimates) if public else None
    if cohort is None:
        return {}
    specs = {"cohort": {"table": cohort, "count_columns": ["members"], "col_total": "Total"}}
    links = []

    def link(key: str, cells: list) -> None:
        if cells:
            links.append([("cohort", cells[0][0], "members"),
                          *((key, i, col) for _, i, col in cells)])
    shown = audience == "research"
    for wb, g in _estimate_groups(estimates, primary_only) if shown else []:
        df, counts, derived = _estimate_frame(g)
        if not counts:
            continue
        key = f"estimates.{wb}"
        specs[key] = {"table": df, "count_columns": counts, "derived": derived}
        for arm, col in ARM_COUNTS.items():
            row = ARM_ROWS[arm]
            link(key, [(row, i, col) for i in df.index
                       if df.loc[i, col] == cohort.loc[row, "members"]])
    got = _survival_frame(results) if shown else None
    if got is not None:
        s, df = got
        specs["survival"] = {"table": df, "count_columns": ["n_risk", "n_event"],
                             "derived": _SURVIVAL_DERIVED}
        for arm, row in ARM_ROWS.items():
            link("survival", [(row, i, "n_risk") for i in df.index if s.loc[i, "group"] == arm
                              and df.loc[i, "n_risk"] == cohort.loc[row, "members"]])
    together = suppress_together(specs, links, min_cell)
    return {key: [(r.row, r.column) for r in res.report.itertuples() if r.rule == "linked"]
            for key, res in together.items()}


def _scale_title(scale: str, unit: str) -> str:
    """The scale's name in a table; a plain difference carries the outcome's unit."""
    if scale == "difference" and unit and unit != "dollars":
        return f"difference ({unit})"
    return _SCALE_TITLES.get(scale, str(scale).replace("_", " "))


def estimate_tables(estimates: pd.DataFrame, audience: str, *, public: bool, min_cell: int,
                    primary_only: bool = False, linked: dict | None = None,
                    study: Study = CLAIMS_STUDY) -> list[BriefTable]:
    """One table of estimates per workbook: outcome (the spec's label), method, scale,
    estimate, 95% CI, p, n per arm (named by the study's arms; a comparison of several
    groups also names each row's contrast). When public, ``n_treated`` / ``n_control``
    are suppressed and the estimate, interval and p-value of a row with a hidden n are
    hidden with it; so are the cells ``linked`` names (:func:`linked_cells`)."""
    out = []
    for wb, g in _estimate_groups(estimates, primary_only):
        df, counts, derived = _estimate_frame(g)
        frame, mask, res = _safe(df, counts, public=public, min_cell=min_cell, derived=derived,
                                 hide=(linked or {}).get(f"estimates.{wb}", ()))
        tab = pd.DataFrame({
            "outcome": [study.label(o, audience) for o in g["outcome"]],
            "period": [("" if _missing(p) else str(p).replace("followup", "follow-up"))
                       for p in (g["period"] if "period" in g else [None] * len(g))],
            "method": [str(m) for m in g["method"].fillna("")],
            "scale": [_scale_title(s, study.unit_of(o)) for s, o in zip(g["scale"], g["outcome"])],
        })
        fmts = [_value_fmt(s) for s in g["scale"]]
        tab["estimate"] = [v if (m or isinstance(v, str)) else f(v) for v, m, f in
                           zip(frame["estimate"], mask["estimate"], fmts)]
        tab["95% CI"] = ["*" if (mask["ci_low"].iloc[i] or mask["ci_high"].iloc[i]) else
                         ("" if _missing(df["ci_low"].iloc[i]) or _missing(df["ci_high"].iloc[i])
                          else f"{fmts[i](df['ci_low'].iloc[i])} to {fmts[i](df['ci_high'].iloc[i])}")
                         for i in range(len(df))]
        tab["p"] = ["*" if mask["p_value"].iloc[i] else pvalue(df["p_value"].iloc[i])
                    .replace("p = ", "").replace("p ", "") for i in range(len(df))]
        n_cols = tuple(f"n {a[:1].lower()}{a[1:]}" for a in study.arms)
        if counts:
            tab[n_cols[0]] = _fmt(frame, mask, "n_treated", lambda v: f"{v:,.0f}")
            tab[n_cols[1]] = _fmt(frame, mask, "n_control", lambda v: f"{v:,.0f}")
        if study.shape == "k_groups" and "contrast" in g:
            tab.insert(1, "compared", ["" if _missing(c) else str(c) for c in g["contrast"]])
        if not tab["period"].astype(bool).any():
            tab = tab.drop(columns="period")
        note, n = _note(res)
        out.append(BriefTable(f"estimates.{wb}", f"Estimates: {str(wb).replace('_', ' ')}", tab,
                              note, n, numeric=("estimate", "p", *n_cols)))
    return out


def table1(results: dict, *, public: bool, min_cell: int, study: Study = CLAIMS_STUDY):
    """Characteristics at the start by arm (named as the ``study`` names them), with
    standardized mean differences.

    A share of a yes/no characteristic times the arm's size gives a count of people,
    so when public the implied counts (with and without the characteristic) are
    suppressed and the shares computed from a hidden count are hidden with them."""
    rows = results.get("tables", {}).get("data_quality.table1") or []
    if not rows:
        return None
    t = pd.DataFrame(rows)
    if not {"covariate", "kind", "mean_treated", "mean_control"} <= set(t):
        return None
    size = t[t["kind"] == "count"]
    t = t[t["kind"] != "count"].reset_index(drop=True)
    if t.empty:
        return None
    n_t = float(size["mean_treated"].iloc[0]) if not size.empty else np.nan
    n_c = float(size["mean_control"].iloc[0]) if not size.empty else np.nan
    binary = (t["kind"] == "binary").to_numpy()
    df = pd.DataFrame({
        "with_t": np.where(binary, np.round(t["mean_treated"].astype(float) * n_t), np.nan),
        "with_c": np.where(binary, np.round(t["mean_control"].astype(float) * n_c), np.nan),
        "mean_treated": t["mean_treated"], "mean_control": t["mean_control"],
        "smd": t.get("smd")})
    df["without_t"] = n_t - df["with_t"]
    df["without_c"] = n_c - df["with_c"]
    if public and binary.any() and not (np.isfinite(n_t) and np.isfinite(n_c)):
        raise PrivacyError("table1 has yes/no characteristics but no arm sizes (the 'members' "
                           "row), so its shares cannot be checked for small counts")
    counts = ["with_t", "without_t", "with_c", "without_c"]
    derived = {"mean_treated": ["with_t", "without_t"], "mean_control": ["with_c", "without_c"],
               "smd": counts}
    frame, mask, res = _safe(df, counts, public=public, min_cell=min_cell, derived=derived,
                             protect_rows=False)

    def show(col, sd_col):
        vals = []
        for i in range(len(t)):
            if mask[col].iloc[i]:
                vals.append("*")
            elif binary[i]:
                vals.append(pct(t[col].iloc[i], 1))
            else:
                sd = t[sd_col].iloc[i] if sd_col in t else None
                vals.append(num(t[col].iloc[i]) + ("" if _missing(sd) else f" (SD {num(sd)})"))
        return vals
    out = pd.DataFrame({"characteristic": [str(c).replace("_", " ") for c in t["covariate"]],
                        study.arms[0]: show("mean_treated", "sd_treated"),
                        study.arms[1]: show("mean_control", "sd_control"),
                        "SMD": ["*" if mask["smd"].iloc[i] else
                                ("" if _missing(t["smd"].iloc[i]) else num(t["smd"].iloc[i], 2))
                                for i in range(len(t))]})
    note, n = _note(res)
    return BriefTable("table1", f"{study.before}: how the groups differed", out, note, n,
                      caption="Mean (SD) or share; SMD is the standardized mean difference "
                              "(|SMD| above 0.1 is a notable imbalance).",
                      numeric=(*study.arms, "SMD"))


_SURVIVAL_DERIVED = {"survival": "n_event", "ci_low": "n_event", "ci_high": "n_event"}


def _survival_frame(results: dict):
    """The recorded survival table and the numbers of the brief's copy, or None."""
    rows = results.get("tables", {}).get("time_to_event.survival_at") or []
    if not rows:
        return None
    s = pd.DataFrame(rows)
    if not {"group", "time", "n_risk", "n_event", "survival"} <= set(s):
        return None
    return s, s[["n_risk", "n_event", "survival", "ci_low", "ci_high"]].copy()


def survival_table(results: dict, *, public: bool, min_cell: int, hide=(),
                   study: Study = CLAIMS_STUDY):
    """The share of each arm yet to have the event by time of follow-up, with the numbers
    at risk; the event, its time unit, the arms and the unit are the ``study``'s words
    for the table's ``outcome`` (a run recorded without it is told in general words).
    ``hide``: cells hidden because the same count is hidden in another table."""
    got = _survival_frame(results)
    if got is None:
        return None
    s, df = got
    outcome = s["outcome"].dropna().iloc[0] if "outcome" in s and s["outcome"].notna().any() \
        else None
    event = study.label(outcome, "clearinghouse") if outcome else "the event"
    tunit = study.unit_of(outcome) if outcome else ""
    step = tunit[:-1] if tunit.endswith("s") else (tunit or "time")
    names = dict(zip((a for a, _ in ARMS), study.arms))
    share = f"share without {event} (95% CI)"
    frame, mask, res = _safe(df, ["n_risk", "n_event"], public=public, min_cell=min_cell,
                             derived=_SURVIVAL_DERIVED, hide=hide)
    out = pd.DataFrame({
        "group": [names.get(g, str(g)) for g in s["group"]],
        step: [f"{t:,.0f}" for t in s["time"]],
        "n at risk": _fmt(frame, mask, "n_risk", lambda v: f"{v:,.0f}"),
        "n events": _fmt(frame, mask, "n_event", lambda v: f"{v:,.0f}"),
        share: [
            "*" if mask["survival"].iloc[i] else
            f"{pct(s['survival'].iloc[i], 1)} ({pct(s['ci_low'].iloc[i], 1)} to "
            f"{pct(s['ci_high'].iloc[i], 1)})" for i in range(len(s))]})
    note, n = _note(res)
    return BriefTable("survival", f"{study.unit[:1].upper()}{study.unit[1:]} without {event}, "
                      f"by {step} of follow-up", out, note, n,
                      numeric=("n at risk", "n events", share))


def _headline_figures(study: Study, horizon_years: float | None) -> dict:
    """The headline's figures by quantity, per the study's own treated unit."""
    per = f"per {study.per_treated}"
    over = ("over the horizon" if horizon_years is None else
            f"over {horizon_years:g} year" + ("" if horizon_years == 1 else "s"))
    return {"gross_savings": f"gross savings {per} per year",
            "program_cost": f"program cost {per} (incl. start-up share)",
            "net_savings": f"net savings {per} {over}",
            "roi": "return on investment",
            "probability_cost_saving": "probability the program saves money"}


def headline_table(results: dict, audience: str, study: Study = CLAIMS_STUDY,
                   horizon_years: float | None = None):
    """The cost-benefit headline figures (dollars, shares: no counts of people), named
    by their ``quantity`` in the study's words (per whom, over which horizon); a figure
    of another quantity keeps its recorded name."""
    rows = results.get("tables", {}).get("cost_benefit.headline") or []
    if not rows:
        return None
    h = pd.DataFrame(rows)
    if not {"figure", "estimate"} <= set(h):
        return None
    iv = "range of plausible values" if audience == "clearinghouse" else "95% interval"

    def fmt(unit, v):
        if _missing(v):
            return ""
        return pct(v) if unit == "share" else money(v)
    units = h["unit"] if "unit" in h else ["dollars"] * len(h)
    names = _headline_figures(study, horizon_years)
    quantities = h["quantity"] if "quantity" in h else [None] * len(h)
    out = pd.DataFrame({
        "figure": [names.get(q, str(f)) for q, f in zip(quantities, h["figure"])],
        "estimate": [fmt(u, v) for u, v in zip(units, h["estimate"])],
        iv: [("" if _missing(lo) or _missing(hi) else f"{fmt(u, lo)} to {fmt(u, hi)}")
             for u, lo, hi in zip(units, h.get("ci_low", [None] * len(h)),
                                  h.get("ci_high", [None] * len(h)))]})
    return BriefTable("value", "What the program is worth", out, numeric=("estimate", iv))


def budget_table(budget: pd.DataFrame):
    """Budget impact per year as net savings to the plan (savings positive, the sign used
    throughout the brief), and per plan member per month."""
    if budget.empty:
        return None
    rows = []
    for period, g in budget.groupby("period", sort=False):
        d = {r["scale"]: r for r in g.to_dict("records")}
        net, pm = d.get("cost_difference"), d.get("pmpm_difference")

        def saved(v, cents=False):
            return ("" if _missing(v) else money(-v, True) if cents else total(-v))

        def rng(r, cents=False):
            lo, hi = r.get("scenario_low"), r.get("scenario_high")
            if r is None or _missing(lo) or _missing(hi):
                return ""
            a, b = sorted((-lo, -hi))
            return f"{saved(-a, cents)} to {saved(-b, cents)}"
        rows.append({"year": str(period),
                     "net savings": saved(net["estimate"]) if net else "",
                     "scenario range": rng(net) if net else "",
                     "per plan member per month": saved(pm["estimate"], True) if pm else "",
                     "PMPM scenario range": rng(pm, True) if pm else ""})
    return BriefTable("budget", "Budget impact: net savings to the plan (savings minus program "
                      "cost)", pd.DataFrame(rows),
                      caption="Savings are shown as positive; a negative figure means the plan "
                              "spends more. Ranges are across the budget scenarios, not "
                              "confidence intervals.",
                      numeric=("net savings", "per plan member per month"))


def model_choice_table(results: dict):
    rows = results.get("tables", {}).get("utilization.model_choice") or []
    if not rows:
        return None
    m = pd.DataFrame(rows)
    if not {"outcome", "family", "aic"} <= set(m):
        return None
    out = pd.DataFrame({
        "outcome": [str(o) for o in m["outcome"]], "model": [str(f) for f in m["family"]],
        "AIC": ["" if _missing(a) else f"{a:,.1f}" for a in m["aic"]],
        "ΔAIC": ["" if _missing(a) else f"{a:,.1f}" for a in m.get("delta_aic", [None] * len(m))],
        "note": [("" if _missing(n) else str(n).split(":")[0][:60]) for n in
                 m.get("note", [None] * len(m))]})
    return BriefTable("model_choice", "Diagnostics: count model chosen by fit (AIC)", out,
                      numeric=("AIC", "ΔAIC"))


def _figure_name(term) -> str:
    """A cost-benefit figure's name from its term, without whom it is per (the unit says
    that): 'net_savings_per_member' -> 'net savings', 'net_savings_pmpm' -> 'monthly net
    savings'."""
    name = re.sub(r"_per_(member|referred)$", "", str(term))
    if name.endswith("_pmpm"):
        name = "monthly_" + name[:-len("_pmpm")]
    return name.replace("_", " ")


def sensitivity_table(results: dict, study: Study = CLAIMS_STUDY, recurring: bool = True):
    """The cost-benefit figures at the ends of the cost effect's interval, each in its unit
    per the study's own treated unit (a figure of another term keeps its recorded unit).
    ``recurring``: program costs recur each year (as the params' ``econ`` costs do)."""
    rows = results.get("tables", {}).get("cost_benefit.cost_benefit") or []
    if not rows:
        return None
    c = pd.DataFrame(rows)
    if not {"term", "unit", "estimate", "at_ci_low", "at_ci_high"} <= set(c):
        return None
    units = figure_units(study.per_treated_all, recurring)
    c["unit"] = [units.get(t, u) for t, u in zip(c["term"], c["unit"])]

    def fmt(unit, v):
        if _missing(v) or (isinstance(v, float) and math.isinf(v)):
            return ""
        u = str(unit)
        if u.startswith("$"):
            return money(v, "month" in u)
        if "share" in u:
            return pct(v)
        return num(v)
    out = pd.DataFrame({
        "figure": [_figure_name(f) for f in c["term"]], "unit": [str(u) for u in c["unit"]],
        "estimate": [fmt(u, v) for u, v in zip(c["unit"], c["estimate"])],
        "at low end of cost effect": [fmt(u, v) for u, v in zip(c["unit"], c["at_ci_low"])],
        "at high end": [fmt(u, v) for u, v in zip(c["unit"], c["at_ci_high"])]})
    return BriefTable("sensitivity", "Sensitivity: the cost-benefit at the ends of the cost "
                      "effect's interval", out,
                      numeric=("estimate", "at low end of cost effect", "at high end"))


#: words that make a column a count of people (as the privacy scan reads headers), and
#: words that make it something else (a rate, a share, money)
_COUNT_WORDS = {"n", "count", "members", "patients", "people", "persons", "participants",
                "subjects", "individuals", "events", "cases", "deaths", "x", "x1", "x2",
                "n1", "n2", "n_treated", "n_control"}
_NOT_COUNT = {"pct", "percent", "rate", "mean", "per", "share", "cost", "ratio", "proportion",
              "ci", "low", "high", "estimate", "months", "days", "years"}
SENSITIVITY_WORDS = ("sensitivity", "tornado", "one_way")


def _is_count_column(name) -> bool:
    words = re.findall(r"[a-z0-9]+", str(name).lower())
    if not words or any(w in _NOT_COUNT for w in words):
        return False
    return "_".join(words) in _COUNT_WORDS or words[0] in _COUNT_WORDS or words[-1] in _COUNT_WORDS


_ISO_DATE = r"^\d{4}-\d{2}-\d{2}([ T][0-9:.+-]*)?$"


def _holds_dates(column: pd.Series) -> bool:
    """Whether a column's values are dates (by their values, not the column's name)."""
    if pd.api.types.is_datetime64_any_dtype(column):
        return True
    v = column.dropna()
    return bool(len(v)) and v.map(lambda x: isinstance(x, str)).all() and \
        bool(v.str.match(_ISO_DATE).all())


def generic_table(name: str, rows: list, *, public: bool, min_cell: int):
    """Any other recorded table (e.g. a sensitivity analysis), shown as recorded.

    Member-level id columns and columns whose values are dates are never shown. When public, columns that
    read as counts of people are suppressed, and every other number in a row with a
    hidden count is hidden with it (how such numbers were computed is not known, so the
    cautious choice is taken)."""
    if not rows:
        return None
    t = pd.DataFrame(rows)
    keep = [c for c in t.columns if not is_id_column(c) and not _holds_dates(t[c])]
    t = t[keep].reset_index(drop=True)
    if t.empty or not keep:
        return None
    counts = [c for c in keep if _is_count_column(c) and pd.api.types.is_numeric_dtype(t[c])]
    others = [c for c in keep if c not in counts and pd.api.types.is_numeric_dtype(t[c])]
    df = t.copy()
    frame, mask, res = _safe(df, counts, public=public, min_cell=min_cell,
                             derived={c: counts for c in others} if counts else None,
                             protect_rows=False)
    out = pd.DataFrame({str(c).replace("_", " "): _fmt(frame, mask, c, lambda v: num(v))
                        if c in counts + others else
                        ["" if _missing(v) else str(v) for v in t[c]] for c in keep})
    note, n = _note(res)
    wb, _, short = str(name).partition(".")
    return BriefTable(f"generic.{name}", f"{short.replace('_', ' ').capitalize()} ({wb.replace('_', ' ')})",
                      out, note, n, numeric=tuple(str(c).replace("_", " ") for c in counts + others))
