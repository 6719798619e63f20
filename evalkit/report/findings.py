"""Key findings as sentences, in the words of each audience.

The estimates of a run (``results.json``) are grouped by workbook and outcome; for each
group one *primary* comparison is chosen from the records' ``analysis`` field (an
adjusted comparison before a pre/post one, before a crude one; see
:func:`primary_estimates`) and written as one sentence whose
numbers and intervals come straight from the records. Which sentence is written depends
on the scales present, not on workbook names, so the brief works with whatever
workbooks ran, including summary-mode runs made from published figures.

Audiences:

``hmo``
    per 1,000 members per year, PMPM, net savings and ROI, with 95% confidence intervals.
``research``
    the estimate on its own scale, its interval and p-value, and the method.
``clearinghouse``
    plain words: no model names, no "hazard", and an interval is a "range of plausible
    values".
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from ..analysis.spec import CLAIMS_OUTCOMES, CLAIMS_TIME_OUTCOMES

AUDIENCES = ("hmo", "research", "clearinghouse")

#: outcome -> (short label, plain label, unit noun), from the spec's one table of labels
OUTCOMES = {n: (d.label, d.plain, "" if d.kind == "time_to_event" else d.unit)
            for n, d in {**CLAIMS_OUTCOMES, **CLAIMS_TIME_OUTCOMES}.items()}
#: time-to-event outcome -> what happens (brief words, plain words), from the spec
EVENTS = {n: d.event for n, d in CLAIMS_TIME_OUTCOMES.items() if d.event}
RATIO_SCALES = ("rate_ratio", "hazard_ratio", "ratio", "odds_ratio")
VALUE_SCALES = ("net_savings_per_member", "roi", "benefit_cost_ratio", "probability_cost_saving")


def outcome_label(outcome: str, audience: str = "hmo") -> str:
    """A readable name for an outcome (the column name, spaced, when unknown)."""
    short, plain, _ = OUTCOMES.get(outcome, (str(outcome).replace("_", " "),) * 2 + ("",))
    return plain if audience == "clearinghouse" else short


def _unit(outcome: str) -> str:
    return OUTCOMES.get(outcome, ("", "", "events"))[2] or "events"


def _finite(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


# ------------------------------------------------------------------ number formatting
def num(x, digits: int | None = None) -> str:
    """A number with thousands separators; digits chosen by size when not given."""
    if not _finite(x):
        return "n/a"
    x = float(x)
    if digits is None:
        a = abs(x)
        digits = 0 if a >= 100 else 1 if a >= 10 else 2 if a >= 0.1 else 3
    s = f"{x:,.{digits}f}"
    return "0" if s.strip("-0.,") == "" else s


def money(x, cents: bool = False) -> str:
    if not _finite(x):
        return "n/a"
    x = float(x)
    s = f"${abs(x):,.2f}" if cents else f"${abs(x):,.0f}"
    return ("-" if x < 0 and s.strip("$0.,") else "") + s


def pct(x, digits: int = 0) -> str:
    if not _finite(x):
        return "n/a"
    x, edge = float(x), 0.5 * 10 ** (-digits) / 100
    if 0 <= x < 1 and x >= 1 - edge:          # do not round a probability up to certainty
        return f"more than {100 - 10 ** -digits:.{digits}f}%"
    if 0 < x <= edge:
        return f"less than {10 ** -digits:.{digits}f}%"
    return f"{100 * x:.{digits}f}%"


def pvalue(p) -> str:
    if not _finite(p):
        return ""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def ratio(x) -> str:
    return num(x, 2)


def _signed(x, fmt, less: str = "fewer", more: str = "more") -> str:
    """``-26`` -> ``"26 fewer"``; ``0`` -> ``"no difference"``."""
    if not _finite(x):
        return "n/a"
    text = fmt(abs(float(x)))
    if text.strip("$0.,%") == "":
        return "no difference"
    return f"{text} {less if x < 0 else more}"


def _ratio_change(r, less: str = "fewer", more: str = "more") -> str:
    """A ratio as a percent change: 0.82 -> '18% fewer'."""
    return _signed(float(r) - 1, lambda v: f"{100 * v:.0f}%", less, more)


def _excludes(lo, hi, null: float) -> bool:
    return _finite(lo) and _finite(hi) and (lo > null or hi < null)


# ------------------------------------------------------------------ choosing estimates
def method_rank(row) -> int:
    """0 adjusted (a covariate-adjusted model, or a design for the ATE), 1 other ATT
    (pre/post, interrupted time series, matched), 2 anything else, 3 crude. Lower is
    preferred for the key findings. Read from the record's ``analysis``, ``estimand``
    and ``adjusted_for`` fields, never from its ``method`` sentence."""
    analysis = str(row.get("analysis") or "")
    estimand = str(row.get("estimand") or "")
    if analysis == "crude" or estimand == "crude":
        return 3
    if analysis == "adjusted" or estimand.startswith("ATE") or (
            analysis == "survival" and _has_items(row.get("adjusted_for"))):
        return 0
    if analysis in ("prepost", "its", "design") or estimand.startswith("ATT"):
        return 1
    return 2


def _has_items(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x)) and len(x) > 0


def analysis_tag(row) -> str:
    """A short word for the kind of comparison a record is (from its fields)."""
    return {0: "adjusted", 1: "pre/post", 3: "crude"}.get(method_rank(row), "other")


def comparable(estimates: pd.DataFrame) -> pd.DataFrame:
    """Estimates that compare the arms in follow-up: baseline-period rows and per-arm
    descriptive rows (e.g. the share without an ER visit in one arm) are left out."""
    if estimates.empty:
        return estimates
    e = estimates.copy()
    if "period" in e:
        e = e[e["period"].fillna("").astype(str) != "baseline"]
    contrast = e["contrast"].fillna("").astype(str)
    e = e[~contrast.str.endswith(" arm")]
    return e[e["estimate"].notna()]


def primary_estimates(estimates: pd.DataFrame) -> dict:
    """``{(workbook, outcome): {scale: record}}`` of the preferred comparison.

    Within a group the lowest :func:`method_rank` wins; for each scale the best row of
    that rank is kept, preferring a bootstrap interval over a delta-method one.
    Budget-impact rows (one per year) are kept apart by :func:`budget_rows`.
    """
    e = comparable(estimates)
    out: dict = {}
    if e.empty:
        return out
    if "analysis" in e:
        e = e[e["analysis"].fillna("").astype(str) != "budget"]
    if "wtp" in e:        # net monetary benefit at a willingness to pay of $0 is net savings
        e = e[~((e["scale"] == "nmb") & (e["wtp"].fillna(-1) == 0))]
    for (wb, outcome), g in e.groupby(["workbook", "outcome"], sort=False):
        g = _headline_quantity(g)
        recs = g.to_dict("records")
        best = min(method_rank(r) for r in recs)
        chosen: dict = {}
        for r in recs:
            if method_rank(r) != best:
                continue
            old = chosen.get(r["scale"])
            if old is None or (r.get("interval") == "bootstrap" and
                               old.get("interval") != "bootstrap"):
                chosen[r["scale"]] = r
        out[(wb, outcome)] = chosen
    return out


def _headline_quantity(g: pd.DataFrame) -> pd.DataFrame:
    """Interrupted time series record several quantities per outcome (level change, slope
    change, the ratio at a horizon) and two designs: the headline is the ratio at the
    horizon, from the design with a comparison series when there is one."""
    if "quantity" not in g:
        return g
    q = g["quantity"].fillna("").astype(str)
    if q.str.startswith("ratio").any():
        g = g[q.str.startswith("ratio") | (q == "")]
    if "design" in g and (g["design"] == "controlled").any():
        g = g[g["design"].isna() | (g["design"] == "controlled")]
    return g


def budget_rows(estimates: pd.DataFrame) -> pd.DataFrame:
    """Budget-impact records (analysis ``budget``), one per year and scale."""
    if estimates.empty or "analysis" not in estimates:
        return estimates.iloc[0:0]
    return estimates[estimates["analysis"].fillna("").astype(str) == "budget"]


# ------------------------------------------------------------------ sentences
@dataclass(frozen=True)
class Finding:
    """One key finding: the topic (``use``, ``time``, ``cost``, ``value``, ``other``),
    the outcome, the sentence, and whether its interval excludes no difference."""

    topic: str
    outcome: str
    text: str
    clear: bool


def _design_tag(rec: dict) -> str:
    return {0: "adjusted comparison", 1: "pre/post comparison",
            3: "unadjusted comparison"}.get(method_rank(rec), "comparison")


def _use(outcome, s, audience, followup_days) -> Finding | None:
    rr, rd = s.get("rate_ratio"), s.get("rate_difference_per_1000_mm")
    if rr is None and rd is None:
        return None
    unit = _unit(outcome)
    label = outcome_label(outcome, audience)
    main = rd or rr
    clear = (_excludes(rd["ci_low"], rd["ci_high"], 0) if rd is not None
             else _excludes(rr["ci_low"], rr["ci_high"], 1))
    if audience == "clearinghouse":
        if rd is not None:
            d = rd["estimate"]
            body = (f"members referred to self-help groups had about "
                    f"{_signed(12 * d, lambda v: num(v, 0 if v >= 10 else 1))} {unit} per "
                    f"1,000 members a year than similar members who were not referred (range "
                    f"of plausible values: {_signed(12 * rd['ci_low'], lambda v: num(v, 0))} to "
                    f"{_signed(12 * rd['ci_high'], lambda v: num(v, 0))}).")
        else:
            body = (f"members referred to self-help groups had about "
                    f"{_ratio_change(rr['estimate'])} {unit} than similar members who were not "
                    f"referred (range of plausible values: {_ratio_change(rr['ci_low'])} to "
                    f"{_ratio_change(rr['ci_high'])}).")
        tail = (" The whole range points the same way." if clear else
                " The range includes no change, so the difference could be due to chance.")
        return Finding("use", outcome, f"{label[0].upper()}{label[1:]}: {body}{tail}", clear)
    if audience == "research":
        parts = []
        if rr is not None:
            parts.append(f"rate ratio {ratio(rr['estimate'])} (95% CI {ratio(rr['ci_low'])} to "
                         f"{ratio(rr['ci_high'])}" + (f"; {pvalue(rr['p_value'])}" if
                                                      _finite(rr.get("p_value")) else "") + ")")
        if rd is not None:
            parts.append(f"rate difference {num(rd['estimate'], 1)} per 1,000 member-months "
                         f"(95% CI {num(rd['ci_low'], 1)} to {num(rd['ci_high'], 1)})")
        return Finding("use", outcome, f"{label[0].upper()}{label[1:]}: " + ", ".join(parts)
                       + f"; {main['estimand']}, {main['method']}.", clear)
    # hmo
    if rd is not None:
        d = rd["estimate"]
        text = (f"{_signed(12 * d, lambda v: num(v, 0 if v >= 10 else 1))} {label} per 1,000 "
                f"members per year with self-help referral (95% CI "
                f"{_signed(12 * rd['ci_low'], lambda v: num(v, 0))} to "
                f"{_signed(12 * rd['ci_high'], lambda v: num(v, 0))}; "
                f"{num(d, 1)} per 1,000 member-months)")
        text = text[0].upper() + text[1:]
        if rr is not None:
            text += (f", a rate ratio of {ratio(rr['estimate'])} (95% CI {ratio(rr['ci_low'])} "
                     f"to {ratio(rr['ci_high'])})")
    else:
        text = (f"{label[0].upper()}{label[1:]}: {_ratio_change(rr['estimate'])} with self-help "
                f"referral, a rate ratio of {ratio(rr['estimate'])} (95% CI "
                f"{ratio(rr['ci_low'])} to {ratio(rr['ci_high'])})")
    return Finding("use", outcome, f"{text}; {_design_tag(main)}.", clear)


def _time(outcome, s, audience) -> Finding | None:
    hr = s.get("hazard_ratio")
    if hr is None:
        return None
    clear = _excludes(hr["ci_low"], hr["ci_high"], 1)
    label = outcome_label(outcome, audience)
    event = EVENTS.get(outcome)
    if audience == "clearinghouse":
        text = (f"Time to {label}: at any point during follow-up, members referred to "
                f"self-help groups were about {_ratio_change(hr['estimate'], 'less', 'more')} "
                f"likely to {event[1]} (range of plausible values: "
                f"{_ratio_change(hr['ci_low'], 'less', 'more')} to "
                f"{_ratio_change(hr['ci_high'], 'less', 'more')} likely)."
                if event else
                f"{label[0].upper()}{label[1:]}: referred members reached it about "
                f"{_ratio_change(hr['estimate'], 'less', 'more')} often at any given time "
                f"(range of plausible values: {_ratio_change(hr['ci_low'], 'less', 'more')} "
                f"to {_ratio_change(hr['ci_high'], 'less', 'more')}).")
        return Finding("time", outcome, text, clear)
    if audience == "research":
        p = f"; {pvalue(hr['p_value'])}" if _finite(hr.get("p_value")) else ""
        return Finding("time", outcome, f"{label[0].upper()}{label[1:]}: hazard ratio "
                       f"{ratio(hr['estimate'])} (95% CI {ratio(hr['ci_low'])} to "
                       f"{ratio(hr['ci_high'])}{p}); {hr['estimand']}, {hr['method']}.", clear)
    return Finding("time", outcome, f"{label[0].upper()}{label[1:]}: at any point in follow-up, "
                   f"referred members were {_ratio_change(hr['estimate'], 'less', 'more')} likely "
                   f"to {event[0] if event else 'have the event'} (hazard ratio "
                   f"{ratio(hr['estimate'])}, 95% CI {ratio(hr['ci_low'])} to "
                   f"{ratio(hr['ci_high'])}); {_design_tag(hr)}.", clear)


def _cost(outcome, s, audience, followup_days) -> Finding | None:
    cd, pm, rt = s.get("cost_difference"), s.get("pmpm_difference"), s.get("ratio")
    if cd is None and pm is None:
        return None
    main = cd or pm
    clear = _excludes(main["ci_low"], main["ci_high"], 0)
    label = outcome_label(outcome, audience)
    span = f"the {followup_days}-day follow-up"
    if audience == "clearinghouse":
        if cd is not None:
            body = (f"about {_signed(cd['estimate'], money, 'less', 'more')} per referred member "
                    f"over {span} (range of plausible values: "
                    f"{_signed(cd['ci_low'], money, 'less', 'more')} to "
                    f"{_signed(cd['ci_high'], money, 'less', 'more')}).")
        else:
            body = (f"about {_signed(pm['estimate'], lambda v: money(v, True), 'less', 'more')} "
                    f"per referred member each month (range of plausible values: "
                    f"{_signed(pm['ci_low'], lambda v: money(v, True), 'less', 'more')} to "
                    f"{_signed(pm['ci_high'], lambda v: money(v, True), 'less', 'more')}).")
        tail = ("" if clear else " The range includes no change.")
        return Finding("cost", outcome, f"{label[0].upper()}{label[1:]}: {body}{tail}", clear)
    if audience == "research":
        parts = []
        if cd is not None:
            parts.append(f"difference {money(cd['estimate'])} per member over {span} (95% CI "
                         f"{money(cd['ci_low'])} to {money(cd['ci_high'])}; {cd['method']})")
        if rt is not None:
            p = f"; {pvalue(rt['p_value'])}" if _finite(rt.get("p_value")) else ""
            parts.append(f"cost ratio {ratio(rt['estimate'])} (95% CI {ratio(rt['ci_low'])} to "
                         f"{ratio(rt['ci_high'])}{p})")
        if pm is not None:
            parts.append(f"PMPM difference {money(pm['estimate'], True)} (95% CI "
                         f"{money(pm['ci_low'], True)} to {money(pm['ci_high'], True)})")
        return Finding("cost", outcome, f"{label[0].upper()}{label[1:]}: " + ", ".join(parts)
                       + ".", clear)
    parts = []
    if pm is not None:
        parts.append(f"{_signed(pm['estimate'], lambda v: money(v, True), 'lower', 'higher')} "
                     f"PMPM with self-help referral (95% CI "
                     f"{money(pm['ci_low'], True)} to {money(pm['ci_high'], True)})")
    if cd is not None:
        parts.append(f"{_signed(cd['estimate'], money, 'lower', 'higher')} per member over "
                     f"{span} (95% CI {money(cd['ci_low'])} to {money(cd['ci_high'])})")
    return Finding("cost", outcome, f"{label[0].upper()}{label[1:]}: " + "; ".join(parts)
                   + f"; {_design_tag(main)}.", clear)


def _chance(p) -> str:
    """A simulated probability: never 'certain' (0% or 100%) from a finite number of draws."""
    if _finite(p) and p >= 0.995:
        return "more than 99%"
    if _finite(p) and p <= 0.005:
        return "less than 1%"
    return pct(p)


def _value(s, audience, horizon_years) -> Finding | None:
    ns, roi = s.get("net_savings_per_member"), s.get("roi")
    prob, bcr = s.get("probability_cost_saving"), s.get("benefit_cost_ratio")
    if ns is None and roi is None and prob is None:
        return None
    yrs = f"{horizon_years} year" + ("s" if horizon_years != 1 else "")
    clear = ns is not None and _excludes(ns["ci_low"], ns["ci_high"], 0)
    if audience == "clearinghouse":
        bits = []
        if ns is not None:
            verb = "save" if ns["estimate"] >= 0 else "lose"
            bits.append(f"After paying for the program, the health plan would {verb} about "
                        f"{money(abs(ns['estimate']))} per referred member over {yrs} (range of "
                        f"plausible values: {_signed(ns['ci_low'], money, 'lost', 'saved')} to "
                        f"{_signed(ns['ci_high'], money, 'lost', 'saved')}).")
        if prob is not None:
            c = _chance(prob["estimate"])
            bits.append("The chance that the program saves money overall is "
                        f"{'' if c.startswith(('more', 'less')) else 'about '}{c}.")
        return Finding("value", "net savings", " ".join(bits), clear)
    bits = []
    if ns is not None:
        bits.append(f"Net savings of {money(ns['estimate'])} per referred member over {yrs} "
                    f"after program costs (95% interval {money(ns['ci_low'])} to "
                    f"{money(ns['ci_high'])})")
    pm = s.get("pmpm_difference")
    if pm is not None and audience == "hmo":
        bits[-1:] = [b + f", {money(pm['estimate'], True)} PMPM" for b in bits[-1:]]
    if roi is not None:
        iv = (f" (95% interval {pct(roi['ci_low'])} to {pct(roi['ci_high'])})"
              if _finite(roi.get("ci_low")) else "")
        bits.append(f"a return on investment of {pct(roi['estimate'])}{iv}")
    if bcr is not None and audience == "research":
        bits.append(f"benefit-cost ratio {ratio(bcr['estimate'])}")
    if prob is not None:
        bits.append(f"a {_chance(prob['estimate'])} probability that the program saves money")
    text = "; ".join(bits) + "."
    if audience == "research" and ns is not None:
        text += f" {ns['method']}."
    return Finding("value", "net savings", text[0].upper() + text[1:], clear)


_SCALE_WORDS = {
    "odds_ratio": ("odds ratio", "relative odds"),
    "risk_difference": ("risk difference", "difference in the share of people"),
    "difference": ("difference", "difference"),
    "ratio": ("ratio", "ratio"),
    "proportion": ("proportion", "share"),
    "mean": ("mean", "average"),
    "icer": ("incremental cost-effectiveness ratio", "extra cost per unit of benefit"),
    "nmb": ("net monetary benefit", "net value in dollars"),
}


def _other(outcome, s, audience) -> list[Finding]:
    """Estimates on scales without a dedicated sentence (e.g. published figures)."""
    out = []
    for scale, r in s.items():
        if scale in ("rate_ratio", "rate_difference_per_1000_mm", "hazard_ratio",
                     "cost_difference", "pmpm_difference", *VALUE_SCALES):
            continue
        if scale in ("ratio", "pmpm_difference") and (
                "cost_difference" in s or "pmpm_difference" in s):
            continue
        label = outcome_label(outcome, audience)
        is_ratio = scale in RATIO_SCALES
        null = 1.0 if is_ratio else 0.0
        clear = _excludes(r["ci_low"], r["ci_high"], null)
        share = scale in ("risk_difference", "proportion")
        dollars = _unit(outcome) == "dollars" or scale in ("nmb", "icer", "cost_difference")
        fmt = ((lambda v: pct(v, 1)) if share else ratio if is_ratio else
               money if dollars else num)
        has_ci = _finite(r.get("ci_low")) and _finite(r.get("ci_high"))
        word = _SCALE_WORDS.get(scale, (scale.replace("_", " "),) * 2)
        estimand = str(r.get("estimand") or "")
        if (scale in ("difference", "nmb", "icer", "mean") and " " in estimand
                and estimand != "as published"):
            word = (estimand, estimand)          # a described figure, e.g. a projection
        less, more = ("lower", "higher") if dollars else ("fewer", "more")
        sep = ":" if word[0] == estimand else ""
        if audience == "clearinghouse":
            if scale in ("nmb", "icer"):       # economists' measures: not for a lay brief
                continue
            if is_ratio:
                body = (f"about {_ratio_change(r['estimate'], less, more)} with self-help "
                        "referral" +
                        (f" (range of plausible values: {_ratio_change(r['ci_low'], less, more)}"
                         f" to {_ratio_change(r['ci_high'], less, more)})" if has_ci else ""))
            elif scale == "difference":
                body = (f"{word[1]}: {_signed(r['estimate'], fmt, less, more)}" +
                        (f" (range of plausible values: {_signed(r['ci_low'], fmt, less, more)}"
                         f" to {_signed(r['ci_high'], fmt, less, more)})" if has_ci else ""))
            else:
                body = (f"{word[1]} {fmt(r['estimate'])}" +
                        (f" (range of plausible values: {fmt(r['ci_low'])} to "
                         f"{fmt(r['ci_high'])})" if has_ci else ""))
            out.append(Finding("other", outcome, f"{label[0].upper()}{label[1:]}: {body}.", clear))
            continue
        ci = (f" (95% CI {fmt(r['ci_low'])} to {fmt(r['ci_high'])}" +
              (f"; {pvalue(r['p_value'])}" if audience == "research" and
               _finite(r.get("p_value")) else "") + ")") if has_ci else ""
        tail = f"; {r['method']}" if audience == "research" and r.get("method") else ""
        out.append(Finding("other", outcome, f"{label[0].upper()}{label[1:]}: {word[0]}{sep} "
                           f"{fmt(r['estimate'])}{ci}{tail}.", clear))
    return out


def key_findings(estimates: pd.DataFrame, audience: str, *, followup_days: int = 365,
                 horizon_years: int = 1) -> list[Finding]:
    """The key findings of a run, one or more sentences per workbook and outcome.

    Parameters
    ----------
    estimates : the ``estimates`` of results.json as a DataFrame.
    audience : ``hmo``, ``research`` or ``clearinghouse``.
    followup_days, horizon_years : from the params, to say over what time a cost runs.

    Returns
    -------
    list of :class:`Finding`, in the order the workbooks recorded them.
    """
    if audience not in AUDIENCES:
        raise ValueError(f"audience must be one of {', '.join(AUDIENCES)}, got {audience!r}")
    out: list[Finding] = []
    value_done = False
    for (wb, outcome), s in primary_estimates(estimates).items():
        is_value = any(k in s for k in VALUE_SCALES)
        for f in (_use(outcome, s, audience, followup_days), _time(outcome, s, audience),
                  None if is_value else _cost(outcome, s, audience, followup_days)):
            if f is not None:
                out.append(f)
        if is_value and not value_done:
            f = _value(s, audience, horizon_years)
            if f is not None:
                out.append(f)
                value_done = True
        out.extend(_other(outcome, s, audience))
    b = _budget(budget_rows(estimates), audience)
    if b is not None:
        out.append(b)
    return out


def _budget(rows: pd.DataFrame, audience: str) -> Finding | None:
    """One sentence on the budget impact (first year, and all years together)."""
    net = rows[rows["scale"] == "cost_difference"] if not rows.empty else rows
    if net.empty or audience == "clearinghouse":
        return None
    pm = rows[rows["scale"] == "pmpm_difference"]
    first = net.iloc[0]
    word = lambda v: "adds" if v >= 0 else "saves"  # noqa: E731
    text = (f"Budget impact: in {first['period']} the program {word(first['estimate'])} "
            f"{money(abs(first['estimate']))} net to the plan's budget")
    if not pm.empty:
        text += f" ({money(pm.iloc[0]['estimate'], True)} per plan member per month)"
    if len(net) > 1:
        total = float(net["estimate"].sum())
        text += (f"; over {len(net)} years it {word(total)} {money(abs(total))} "
                 "(the sum of the yearly figures)")
    return Finding("budget", "budget", text + ".", False)
