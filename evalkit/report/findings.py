"""Key findings as sentences, in the words of each audience and of each study.

The estimates of a run (``results.json``) are grouped by outcome. For each outcome one
**main result** leads: the records marked ``primary`` (:func:`evalkit.results.mark_primary`)
of the outcome's primary analysis in the spec. Every other analysis of that outcome
follows under its own label, saying what it measures (pre/post, time series at month N,
design-adjusted, adjusted for named terms). The intervention, comparison and unit are
the study's own (:class:`evalkit.report.story.Study`); numbers come straight from the
records.

Audiences:

``hmo``
    per 1,000 members per year, PMPM, net savings and ROI, with 95% confidence intervals.
``research``
    the estimate on its own scale, its interval and p-value, and the method.
``clearinghouse``
    plain words: no model names, no "hazard", and an interval is a "range of plausible
    values".

Numbers for readers: estimates and intervals to 2-3 significant figures, dollars to the
dollar, totals in millions (``$1.56 million``), differences of proportions in percentage
points, ratios also as a percent change in words.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pandas as pd

from ..analysis.spec import CLAIMS_TIME_OUTCOMES
from ..results import PRIMARY_ORDER
from .story import ANALYSIS_LABELS, Study, article

AUDIENCES = ("hmo", "research", "clearinghouse")

#: time-to-event outcome -> what happens (brief words, plain words), from the spec
EVENTS = {n: d.event for n, d in CLAIMS_TIME_OUTCOMES.items() if d.event}
RATIO_SCALES = ("rate_ratio", "hazard_ratio", "ratio", "odds_ratio")
VALUE_SCALES = ("net_savings_per_member", "roi", "benefit_cost_ratio", "probability_cost_saving")
#: Analyses told apart from an outcome's comparisons (their own findings).
APART = ("budget", "power", "valuation", "projection", "descriptive")


def _finite(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


# ------------------------------------------------------------------ number formatting
def num(x, digits: int | None = None) -> str:
    """A number for readers: thousands separators, 3 significant figures below 100
    (whole numbers from 100 up) unless ``digits`` is given."""
    if not _finite(x):
        return "n/a"
    x = float(x)
    if digits is None:
        a = abs(x)
        if a >= 100 or a == 0:
            digits = 0
        else:
            digits = max(0, 2 - math.floor(math.log10(a)))
    s = f"{x:,.{digits}f}"
    return "0" if s.strip("-0.,") == "" else s


def money(x, cents: bool = False) -> str:
    """Dollars to the dollar (``cents``: to the cent, for PMPM figures); a million or more
    in millions to 3 significant figures (``$1.56 million``)."""
    if not _finite(x):
        return "n/a"
    x = float(x)
    if abs(x) >= 1e6:
        s = f"${num(abs(x) / 1e6)} million"
    else:
        s = f"${abs(x):,.2f}" if cents else f"${abs(x):,.0f}"
    return ("-" if x < 0 and s.strip("$0.,") else "") + s


def total(x) -> str:
    """A total in dollars (a plan's budget, a projection): 3 significant figures, in
    thousands or millions (``$496 thousand``, ``$1.56 million``)."""
    if not _finite(x):
        return "n/a"
    x = float(x)
    a = abs(x)
    s = (f"${num(a / 1e6)} million" if a >= 1e6 else f"${num(a / 1e3)} thousand" if a >= 1e4
         else f"${a:,.0f}")
    return ("-" if x < 0 and a >= 0.5 else "") + s


def pct(x, digits: int = 0) -> str:
    if not _finite(x):
        return "n/a"
    x, edge = float(x), 0.5 * 10 ** (-digits) / 100
    if 0 <= x < 1 and x >= 1 - edge:          # do not round a probability up to certainty
        return f"more than {100 - 10 ** -digits:.{digits}f}%"
    if 0 < x <= edge:
        return f"less than {10 ** -digits:.{digits}f}%"
    return f"{100 * x:.{digits}f}%"


def points(x) -> str:
    """A difference of two proportions in percentage points: 0.125 -> '12.5 percentage
    points'."""
    if not _finite(x):
        return "n/a"
    return f"{num(100 * abs(float(x)))} percentage points"


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
    if text.strip("$0.,%") == "" or text.startswith("0 "):
        return "no difference"
    return f"{text} {less if x < 0 else more}"


def _range(lo, hi, fmt, less: str = "fewer", more: str = "more") -> str:
    """An interval of signed changes: '0.80 to 2.54 million lower' reads from the smaller
    change to the larger when both ends point the same way."""
    if not (_finite(lo) and _finite(hi)):
        return ""
    if lo < 0 and hi < 0:
        return f"{fmt(abs(hi))} to {fmt(abs(lo))} {less}"
    if lo > 0 and hi > 0:
        return f"{fmt(lo)} to {fmt(hi)} {more}"
    return f"{_signed(lo, fmt, less, more)} to {_signed(hi, fmt, less, more)}"


def _ratio_change(r, less: str = "fewer", more: str = "more") -> str:
    """A ratio as a percent change: 0.82 -> '18% fewer'."""
    return _signed(float(r) - 1, lambda v: f"{100 * v:.0f}%", less, more)


def _ratio_range(lo, hi, less="fewer", more="more") -> str:
    if not (_finite(lo) and _finite(hi)):
        return ""
    return _range(float(lo) - 1, float(hi) - 1, lambda v: f"{100 * v:.0f}%", less, more)


def _excludes(lo, hi, null: float) -> bool:
    return _finite(lo) and _finite(hi) and (lo > null or hi < null)


def _iv(audience: str) -> str:
    return "range of plausible values: " if audience == "clearinghouse" else "95% CI "


# ------------------------------------------------------------------ choosing estimates
def method_rank(row) -> int:
    """0 adjusted (a covariate-adjusted model, or a design for the ATE), 1 other ATT
    (pre/post, interrupted time series, matched), 2 anything else, 3 crude. Read from the
    record's ``analysis``, ``estimand`` and ``adjusted_for`` fields, never from its
    ``method`` sentence (used for records written before ``primary`` existed)."""
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
    return isinstance(x, (list, tuple)) and len(x) > 0


def analysis_tag(row) -> str:
    """A short word for the kind of comparison a record is (from its fields)."""
    return str(row.get("analysis") or "other").replace("prepost", "pre/post")


def comparable(estimates: pd.DataFrame) -> pd.DataFrame:
    """Estimates that compare the arms in follow-up: baseline-period rows and descriptive
    rows (analysis ``descriptive``: one arm's or one group's figure, e.g. the share
    without an ER visit in one arm) are left out, by the records' fields."""
    if estimates.empty:
        return estimates
    e = estimates.copy()
    if "period" in e:
        e = e[e["period"].fillna("").astype(str) != "baseline"]
    if "analysis" in e:
        e = e[e["analysis"].fillna("").astype(str) != "descriptive"]
    return e[e["estimate"].notna()]


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


def _by_scale(recs: list[dict]) -> dict:
    """One record per scale: the primary one, else a bootstrap interval, else the first."""
    chosen: dict = {}
    for r in recs:
        old = chosen.get(r["scale"])
        if old is None or (r.get("primary") is True and old.get("primary") is not True) or (
                r.get("primary") == old.get("primary") and r.get("interval") == "bootstrap"
                and old.get("interval") != "bootstrap"):
            chosen[r["scale"]] = r
    return chosen


def _adjusted_key(r) -> tuple:
    terms = r.get("adjusted_for")
    return tuple(terms) if isinstance(terms, (list, tuple)) else ()


@dataclass(frozen=True)
class OutcomeResults:
    """An outcome's estimates: the main analysis and its records by scale, then the
    other analyses, each ``(label, {scale: record})``."""

    outcome: str
    analysis: str
    main: dict
    others: list


def outcome_results(estimates: pd.DataFrame, primary: dict | None = None) -> list[OutcomeResults]:
    """Each outcome's main result and other analyses (see the module docstring).

    The main analysis is the spec's primary analysis for the outcome (``primary``: outcome
    -> analysis) when a record of it is marked primary, else the analysis of the outcome's
    primary records that comes first in :data:`evalkit.results.PRIMARY_ORDER`; records
    without ``primary`` fall back to :func:`method_rank`.
    """
    e = comparable(estimates)
    if e.empty:
        return []
    e = e[~e["analysis"].fillna("").astype(str).isin(APART)] if "analysis" in e else e
    if "wtp" in e:        # net monetary benefit at a willingness to pay of $0 is net savings
        e = e[~((e["scale"] == "nmb") & (e["wtp"].fillna(-1) == 0))]
    e = e[~e["scale"].isin(VALUE_SCALES)]
    order = {a: i for i, a in enumerate(PRIMARY_ORDER)}
    out = []
    for outcome, g in e.groupby("outcome", sort=False):
        recs = _headline_quantity(g).to_dict("records")
        prim = [r for r in recs if r.get("primary") is True]
        want = (primary or {}).get(outcome)
        if any(r.get("analysis") == want for r in prim):
            main_an = want
        elif prim:
            main_an = min(prim, key=lambda r: order.get(r.get("analysis"), len(order)))[
                "analysis"]
        else:
            main_an = min(recs, key=method_rank).get("analysis")
        main_recs = [r for r in recs if r.get("analysis") == main_an]
        keys = [_adjusted_key(r) for r in main_recs if r.get("primary") is True] or \
            [_adjusted_key(main_recs[0])]
        main = _by_scale([r for r in main_recs if _adjusted_key(r) == keys[0]])
        groups: dict = {}
        for r in recs:
            if r.get("analysis") == main_an and _adjusted_key(r) == keys[0]:
                continue
            groups.setdefault((r.get("analysis"), _adjusted_key(r)), []).append(r)
        others = [(_other_label(an, adj, rs), _by_scale(rs)) for (an, adj), rs in
                  sorted(groups.items(), key=lambda kv: order.get(kv[0][0], len(order)))]
        out.append(OutcomeResults(outcome, main_an, main, others))
    return out


def _other_label(analysis, adjusted_for: tuple, recs: list[dict]) -> str:
    label = ANALYSIS_LABELS.get(analysis, str(analysis))
    if analysis == "its":
        q = next((str(r.get("quantity")) for r in recs if r.get("quantity")), "")
        m = re.search(r"at (\d+) periods? after", q)
        design = next((str(r.get("design")) for r in recs if r.get("design")), "")
        if m:
            label += ((" against the comparison series" if design == "controlled" else "")
                      + f": the rate with the intervention over the rate expected without it, "
                      f"{m.group(1)} months after the index date (the main result covers the "
                      "whole follow-up)")
    elif adjusted_for and analysis == "survival":
        label += f", adjusted for {', '.join(adjusted_for)}".replace("_", " ")
    elif analysis == "survival":
        label += ", unadjusted"
    return label


def primary_estimates(estimates: pd.DataFrame, primary: dict | None = None) -> dict:
    """``{outcome: {scale: record}}`` of each outcome's main result."""
    return {o.outcome: o.main for o in outcome_results(estimates, primary)}


#: Scales on which no difference is 0 (the ratio scales' is 1).
DIFFERENCE_SCALES = ("difference", "rate_difference_per_1000_mm", "cost_difference",
                     "pmpm_difference", "risk_difference")


def direction(main: dict) -> str | None:
    """Which way an outcome's main result went: ``lower`` or ``higher`` in the
    intervention arm, from its record (a ratio against 1, else a difference against 0),
    or None when it has neither or sits exactly on no difference. ``main`` is one
    outcome's ``{scale: record}`` (:func:`primary_estimates`)."""
    for scales, null in ((RATIO_SCALES, 1.0), (DIFFERENCE_SCALES, 0.0)):
        for scale in scales:
            r = main.get(scale)
            if r is not None and _finite(r.get("estimate")) and r["estimate"] != null:
                return "lower" if r["estimate"] < null else "higher"
    return None


def budget_rows(estimates: pd.DataFrame) -> pd.DataFrame:
    """Budget-impact records (analysis ``budget``), one per year and scale."""
    if estimates.empty or "analysis" not in estimates:
        return estimates.iloc[0:0]
    return estimates[estimates["analysis"].fillna("").astype(str) == "budget"]


# ------------------------------------------------------------------ sentences
@dataclass(frozen=True)
class BriefFinding:
    """One key finding.

    Attributes
    ----------
    topic : ``use``, ``time``, ``cost``, ``value``, ``budget``, ``power``, ``other``.
    outcome : the outcome it is about.
    text : the sentence (for an outcome's results, without the outcome's name).
    clear : whether its interval excludes no difference.
    role : ``main`` (an outcome's main result), ``other`` (another analysis of the same
        outcome) or ``summary`` (value, budget, planning: not tied to one outcome).
    label : the outcome's name (main), the analysis's name (other), or a heading.
    """

    topic: str
    outcome: str
    text: str
    clear: bool
    role: str = "main"
    label: str = ""


def _flag(*recs) -> str:
    """' Interval unreliable: ...' when a record's resampling lost more than 5%."""
    for r in recs:
        if r is not None and isinstance(r.get("replicates_flag"), str) and \
                _finite(r.get("n_replicates")):
            n, f = int(r["n_replicates"]), int(r.get("n_failed") or 0)
            return (f" Interval unreliable: {f:,} of {n:,} resampling replicates "
                    f"({f / n:.0%}) failed.")
    return ""


def _use(outcome, s, st: Study, audience) -> tuple[str, bool] | None:
    rr, rd = s.get("rate_ratio"), s.get("rate_difference_per_1000_mm")
    if rr is None and rd is None:
        return None
    unit = st.unit_of(outcome) or "events"
    label = st.label(outcome, audience)
    clear = (_excludes(rd["ci_low"], rd["ci_high"], 0) if rd is not None
             else _excludes(rr["ci_low"], rr["ci_high"], 1))
    per_year = lambda v: num(v, 0 if v >= 10 else 1)
    if audience == "clearinghouse":
        if rd is not None:
            d = rd["estimate"]
            body = (f"{st.treated} had about {_signed(12 * d, per_year)} {unit} per 1,000 "
                    f"{st.unit if st.mode != 'summary' else 'members'} a year than "
                    f"{st.control} (range of plausible values: "
                    f"{_range(12 * rd['ci_low'], 12 * rd['ci_high'], lambda v: num(v, 0))}).")
        else:
            body = (f"about {_ratio_change(rr['estimate'])} {unit} {st.versus}"
                    + (f" (range of plausible values: "
                       f"{_ratio_range(rr['ci_low'], rr['ci_high'])})"
                       if _finite(rr.get("ci_low")) else "") + ".")
        tail = (" The whole range points the same way." if clear else
                " The range includes no change, so the difference could be due to chance.")
        return body + tail + _flag(rd, rr), clear
    if audience == "research":
        parts = []
        if rr is not None:
            parts.append(f"rate ratio {ratio(rr['estimate'])} ({_ratio_change(rr['estimate'])} "
                         f"{st.versus}; 95% CI {ratio(rr['ci_low'])} to {ratio(rr['ci_high'])}"
                         + (f"; {pvalue(rr['p_value'])}" if _finite(rr.get("p_value")) else "")
                         + ")")
        if rd is not None:
            parts.append(f"rate difference {num(rd['estimate'])} per 1,000 member-months "
                         f"(95% CI {num(rd['ci_low'])} to {num(rd['ci_high'])})")
        return ", ".join(parts) + "." + _flag(rd, rr), clear
    if rd is not None:
        d = rd["estimate"]
        text = (f"{_signed(12 * d, per_year)} {label} per 1,000 {st.unit} per year {st.versus} "
                f"(95% CI {_range(12 * rd['ci_low'], 12 * rd['ci_high'], lambda v: num(v, 0))}"
                f"; {_signed(d, num)} per 1,000 member-months)")
        if rr is not None:
            text += (f", a rate ratio of {ratio(rr['estimate'])} (95% CI {ratio(rr['ci_low'])} "
                     f"to {ratio(rr['ci_high'])})")
    else:
        text = (f"{_ratio_change(rr['estimate'])} {unit} {st.versus}, a rate ratio of "
                f"{ratio(rr['estimate'])}"
                + (f" (95% CI {ratio(rr['ci_low'])} to {ratio(rr['ci_high'])})"
                   if _finite(rr.get("ci_low")) else ""))
    return _cap(text) + "." + _flag(rd, rr), clear


def _time(outcome, s, st: Study, audience) -> tuple[str, bool] | None:
    hr = s.get("hazard_ratio")
    if hr is None:
        return None
    clear = _excludes(hr["ci_low"], hr["ci_high"], 1)
    label = st.label(outcome, audience)
    event = EVENTS.get(outcome)
    change = _ratio_change(hr["estimate"], "lower", "higher")
    rng = _ratio_range(hr["ci_low"], hr["ci_high"], "lower", "higher")
    if event:
        who = "members" if st.mode == "summary" else st.unit
        what = (f"the rate at which {who} would "
                f"{event[1 if audience == 'clearinghouse' else 0]}")
    else:
        what = f"the rate of {label}"
    if audience == "clearinghouse":
        text = (f"at any point during follow-up, {what} was about {change} {st.versus} "
                f"(range of plausible values: {rng}).")
    elif audience == "research":
        p = f"; {pvalue(hr['p_value'])}" if _finite(hr.get("p_value")) else ""
        text = (f"hazard ratio {ratio(hr['estimate'])} (95% CI {ratio(hr['ci_low'])} to "
                f"{ratio(hr['ci_high'])}{p}): {what} {change} {st.versus}.")
    else:
        text = (f"at any point in follow-up, {what} was {change} {st.versus} (hazard ratio "
                f"{ratio(hr['estimate'])}, 95% CI {ratio(hr['ci_low'])} to "
                f"{ratio(hr['ci_high'])}).")
    rm = s.get("difference")
    if rm is not None and _finite(rm.get("tau")):     # a restricted mean has its horizon
        unit = st.outcomes.get(outcome, ("", "", ""))[2] or ""
        tau = rm.get("tau")
        longer = lambda v: f"{num(v)} {unit}".strip()
        text += (f" Over the first {longer(tau)}, the average time before {label} was "
                 f"{_signed(rm['estimate'], longer, 'shorter', 'longer')} ({_iv(audience)}"
                 f"{_range(rm['ci_low'], rm['ci_high'], longer, 'shorter', 'longer')}).")
    return _cap(text) + _flag(hr), clear


def _cost(outcome, s, st: Study, audience, followup_days) -> tuple[str, bool] | None:
    cd, pm, rt = s.get("cost_difference"), s.get("pmpm_difference"), s.get("ratio")
    if cd is None and pm is None:
        return None
    main = cd or pm
    clear = _excludes(main["ci_low"], main["ci_high"], 0)
    span = f"the {followup_days}-day follow-up"
    cents = lambda v: money(v, True)
    who = st.one
    if audience == "clearinghouse":
        if cd is not None:
            body = (f"about {_signed(cd['estimate'], money, 'less', 'more')} per {who} over "
                    f"{span} {st.versus} (range of plausible values: "
                    f"{_range(cd['ci_low'], cd['ci_high'], money, 'less', 'more')}).")
        else:
            body = (f"about {_signed(pm['estimate'], cents, 'less', 'more')} per {who} each "
                    f"month {st.versus} (range of plausible values: "
                    f"{_range(pm['ci_low'], pm['ci_high'], cents, 'less', 'more')}).")
        return body + ("" if clear else " The range includes no change.") + _flag(cd, pm), clear
    if audience == "research":
        parts = []
        if cd is not None:
            parts.append(f"difference {money(cd['estimate'])} per {who} over {span} (95% CI "
                         f"{money(cd['ci_low'])} to {money(cd['ci_high'])})")
        if rt is not None:
            p = f"; {pvalue(rt['p_value'])}" if _finite(rt.get("p_value")) else ""
            parts.append(f"cost ratio {ratio(rt['estimate'])} (95% CI {ratio(rt['ci_low'])} to "
                         f"{ratio(rt['ci_high'])}{p})")
        if pm is not None:
            parts.append(f"PMPM difference {money(pm['estimate'], True)} (95% CI "
                         f"{money(pm['ci_low'], True)} to {money(pm['ci_high'], True)})")
        return ", ".join(parts) + "." + _flag(cd, pm), clear
    parts = []
    if pm is not None:
        parts.append(f"{_signed(pm['estimate'], cents, 'lower', 'higher')} PMPM {st.versus} "
                     f"(95% CI {_range(pm['ci_low'], pm['ci_high'], cents, 'lower', 'higher')})")
    if cd is not None:
        parts.append(f"{_signed(cd['estimate'], money, 'lower', 'higher')} per {who} over "
                     f"{span} (95% CI {_range(cd['ci_low'], cd['ci_high'], money, 'lower', 'higher')})")
    return _cap("; ".join(parts)) + "." + _flag(cd, pm), clear


_SCALE_WORDS = {
    "odds_ratio": ("odds ratio", "relative odds"),
    "risk_difference": ("difference", "difference"),
    "difference": ("difference", "difference"),
    "ratio": ("ratio", "ratio"),
    "proportion": ("proportion", "share"),
    "mean": ("mean", "average"),
    "icer": ("incremental cost-effectiveness ratio", "extra cost per unit of benefit"),
    "nmb": ("net monetary benefit", "net value in dollars"),
}


def _other(outcome, s, st: Study, audience) -> list[tuple[str, bool]]:
    """Estimates on scales without a dedicated sentence (published figures, survey
    proportions, person-mode differences)."""
    out = []
    for scale, r in s.items():
        if scale in ("rate_ratio", "rate_difference_per_1000_mm", "hazard_ratio",
                     "cost_difference", "pmpm_difference", *VALUE_SCALES):
            continue
        if scale == "ratio" and ("cost_difference" in s or "pmpm_difference" in s):
            continue
        if scale == "difference" and "hazard_ratio" in s:
            continue                      # told with the hazard ratio
        if audience == "clearinghouse" and scale in ("nmb", "icer"):
            continue                      # economists' measures: not for a lay brief
        is_ratio = scale in RATIO_SCALES
        clear = _excludes(r.get("ci_low"), r.get("ci_high"), 1.0 if is_ratio else 0.0)
        has_ci = _finite(r.get("ci_low")) and _finite(r.get("ci_high"))
        unit = str(r.get("unit") or st.unit_of(outcome) or "")
        dollars = unit.startswith("dollars") or scale in ("nmb", "icer", "cost_difference")
        p = (f"; {pvalue(r['p_value'])}" if audience == "research" and
             _finite(r.get("p_value")) else "")
        src = f"; {r['study']}" if r.get("study") else ""
        assumed = "; interval assumed" if "interval" in str(r.get("assumed") or "") else ""
        if is_ratio and audience == "clearinghouse":
            less, more = ("lower", "higher") if dollars or scale != "rate_ratio" else (
                "fewer", "more")
            body = (f"about {_ratio_change(r['estimate'], less, more)} {st.versus}"
                    + (f" (range of plausible values: "
                       f"{_ratio_range(r['ci_low'], r['ci_high'], less, more)}{src})"
                       if has_ci else "") + ".")
        elif is_ratio:
            less, more = ("lower", "higher") if dollars or scale != "rate_ratio" else (
                "fewer", "more")
            body = (f"{_ratio_change(r['estimate'], less, more)} {st.versus}"
                    f" ({_SCALE_WORDS.get(scale, (scale.replace('_', ' '),))[0]} "
                    f"{ratio(r['estimate'])}" +
                    (f", {_iv(audience)}{ratio(r['ci_low'])} to {ratio(r['ci_high'])}"
                     if has_ci else "") + f"{p}{src}{assumed}).")
        elif scale == "risk_difference":
            first, _, second = str(r.get("contrast") or "").partition(" vs ")
            pts = lambda v: num(100 * v)
            body = (f"{points(r['estimate'])} {'higher' if r['estimate'] >= 0 else 'lower'} "
                    f"for {first or 'the first group'} than for {second or 'the second'}"
                    + (f" ({_iv(audience)}{pts(r['ci_low'])} to {pts(r['ci_high'])} "
                       f"percentage points{p})" if has_ci else "") + ".")
        elif scale == "proportion":
            n = f" of {num(r['n'], 0)}" if _finite(r.get("n")) else ""
            body = (f"{pct(r['estimate'], 1)}{n}" +
                    (f" ({_iv(audience)}{pct(r['ci_low'], 1)} to {pct(r['ci_high'], 1)})"
                     if has_ci else "") + ".")
        else:
            fmt = money if dollars else num
            noun = "" if dollars else (" " + unit.replace(" per year", "") if unit else "")
            per = " a year" if "per year" in unit else ""
            less, more = ("fewer", "more") if unit.split(" ")[0] in ("visits", "days",
                                                                      "events") else (
                "lower", "higher")
            where = ""
            estimand = str(r.get("estimand") or "")
            if " " in estimand and estimand not in ("as published", "difference in means"):
                where = f" ({estimand})"
            if scale == "difference":
                with_unit = lambda v, f=fmt, u=noun: f"{f(v)}{u}"
                body = (f"{_signed(r['estimate'], with_unit, less, more)}{per} {st.versus}"
                        f"{where}" +
                        (f" ({_iv(audience)}"
                         f"{_range(r['ci_low'], r['ci_high'], with_unit, less, more)}{p})"
                         if has_ci else "") + ".")
            else:
                word = _SCALE_WORDS.get(scale, (scale.replace("_", " "),) * 2)
                body = (f"{word[1 if audience == 'clearinghouse' else 0]} "
                        f"{fmt(r['estimate'])}{noun}{where}" +
                        (f" ({_iv(audience)}{fmt(r['ci_low'])} to {fmt(r['ci_high'])}{p})"
                         if has_ci else "") + ".")
        out.append((body + _flag(r), clear))
    return out


def _bodies(outcome, s, st, audience, followup_days) -> list[tuple[str, bool, str]]:
    out = []
    for topic, f in (("use", _use(outcome, s, st, audience)),
                     ("time", _time(outcome, s, st, audience)),
                     ("cost", _cost(outcome, s, st, audience, followup_days))):
        if f is not None:
            out.append((f[0], f[1], topic))
    out += [(t, c, "other") for t, c in _other(outcome, s, st, audience)]
    return out


def _chance(p) -> str:
    """A simulated probability: never 'certain' (0% or 100%) from a finite number of draws."""
    if _finite(p) and p >= 0.995:
        return "more than 99%"
    if _finite(p) and p <= 0.005:
        return "less than 1%"
    return pct(p)


def _value(s, st: Study, audience, horizon_years, headline, discount,
           uptake=1.0) -> BriefFinding | None:
    ns, roi = s.get("net_savings_per_member"), s.get("roi")
    prob, bcr = s.get("probability_cost_saving"), s.get("benefit_cost_ratio")
    if ns is None and roi is None and prob is None:
        return None
    yrs = f"{horizon_years} year" + ("s" if horizon_years != 1 else "")
    clear = ns is not None and _excludes(ns["ci_low"], ns["ci_high"], 0)
    bits = []
    parts = {r.get("quantity"): r.get("estimate") for r in headline or []}
    if all(_finite(parts.get(k)) for k in ("gross_savings", "program_cost", "net_savings")):
        cost, net = float(parts["program_cost"]), float(parts["net_savings"])
        gross = net + cost      # savings over the horizon, after uptake and discounting
        how = (f"{money(parts['gross_savings'])} a year"
               + (f", discounted at {discount:.0%} a year" if discount else "")
               + (f", times the {pct(uptake)} who take part" if uptake < 1 else ""))
        bits.append(f"Savings are shown as positive. Per {st.per_treated} over {yrs}: gross "
                    f"savings {money(gross)} ({how}) minus program cost {money(cost)} = net "
                    f"savings {money(net)}")
    if audience == "clearinghouse":
        if ns is not None:
            verb = "save" if ns["estimate"] >= 0 else "lose"
            bits.append(f"After paying for the program, the health plan would {verb} about "
                        f"{money(abs(ns['estimate']))} per {st.per_treated} over {yrs} (range of "
                        f"plausible values: "
                        f"{_range(ns['ci_low'], ns['ci_high'], money, 'lost', 'saved')})")
        if prob is not None:
            c = _chance(prob["estimate"])
            bits.append("The chance that the program saves money overall is "
                        f"{'' if c.startswith(('more', 'less')) else 'about '}{c}")
        return BriefFinding("value", "net savings", ". ".join(bits) + "." + _flag(ns), clear,
                       "summary", "What the program is worth")
    if ns is not None:
        bits.append((f"net savings 95% interval {money(ns['ci_low'])} to "
                     f"{money(ns['ci_high'])} (probabilistic sensitivity analysis)") if bits else
                    f"Net savings of {money(ns['estimate'])} per {st.per_treated} over {yrs} "
                    f"after program costs (95% interval {money(ns['ci_low'])} to "
                    f"{money(ns['ci_high'])})")
    if roi is not None:
        iv = (f" (95% interval {pct(roi['ci_low'])} to {pct(roi['ci_high'])})"
              if _finite(roi.get("ci_low")) else "")
        bits.append(f"a return on investment of {pct(roi['estimate'])}{iv}")
    if bcr is not None and audience == "research":
        bits.append(f"benefit-cost ratio {ratio(bcr['estimate'])}")
    if prob is not None:
        bits.append(f"a {_chance(prob['estimate'])} probability that the program saves money")
    text = "; ".join(bits) + "."
    return BriefFinding("value", "net savings", _cap(text) + _flag(ns), clear, "summary",
                   "What the program is worth")


def _budget(rows: pd.DataFrame, audience: str) -> BriefFinding | None:
    """One sentence on the budget impact (first year, and all years together)."""
    net = rows[rows["scale"] == "cost_difference"] if not rows.empty else rows
    if net.empty or audience == "clearinghouse":
        return None
    pm = rows[rows["scale"] == "pmpm_difference"]
    first = net.iloc[0]
    word = lambda v: "adds" if v >= 0 else "saves"
    text = (f"in {first['period']} the program {word(first['estimate'])} "
            f"{total(abs(first['estimate']))} net to the plan's budget")
    if not pm.empty:
        text += f" ({money(abs(pm.iloc[0]['estimate']), True)} per plan member per month)"
    if len(net) > 1:
        all_years = float(net["estimate"].sum())
        text += (f"; over {len(net)} years it {word(all_years)} {total(abs(all_years))} "
                 "(the sum of the yearly figures)")
    return BriefFinding("budget", "budget", f"{_cap(text)}.", False, "summary",
                   "Budget impact")


def _planning(e: pd.DataFrame, tables: dict, st: Study, audience: str) -> list[BriefFinding]:
    """Power and sample size in words, from the planning records and tables."""
    rows = e[e["analysis"] == "power"] if "analysis" in e else e.iloc[0:0]
    if rows.empty:
        return []
    out = []
    power = rows[rows["scale"] == "proportion"]
    mdr = rows[rows["scale"] == "rate_ratio"]
    ss = {r.get("term"): r.get("estimate") for r in tables.get("planning.sample_size") or []}
    inputs = {r.get("quantity"): r.get("value") for r in tables.get("planning.inputs") or []}
    outcome = str(rows["outcome"].iloc[0])
    label = st.label(outcome, audience)
    drop = inputs.get("drop to detect")
    target = ss.get("target_power")
    if not power.empty:
        r = power.iloc[0]
        n_c, n_t = r.get("n_control"), r.get("n_treated")
        out.append(BriefFinding(
            "power", outcome,
            f"With {num(n_c, 0)} comparison and {num(n_t, 0)} intervention members, a study "
            f"has {pct(r['estimate'])} power to detect {article(pct(drop))} "
            f"{pct(drop)} drop in {label}"
            + (f" (target {pct(target)})" if _finite(target) else "") + ": "
            + ("large enough." if _finite(target) and r["estimate"] >= target else
               "not large enough.") + " Power is the chance that a study of this size "
            "finds the drop if it is real.", False, "summary", "Power"))
    if ss.get("n_control") is not None:
        out.append(BriefFinding(
            "power", outcome,
            f"{num(ss['n_control'], 0)} members per arm ({num(ss['n_total'], 0)} in all) give "
            f"{pct(target)} power to detect {article(pct(drop))} {pct(drop)} drop in {label}.",
            False, "summary",
            "Sample size"))
    if not mdr.empty:
        r = mdr.iloc[0]
        out.append(BriefFinding(
            "power", outcome,
            f"The smallest drop the planned study detects with {pct(target)} power is "
            f"{pct(1 - r['estimate'], 1)} (a rate ratio of {ratio(r['estimate'])}).", False,
            "summary", "Smallest detectable drop"))
    return out


def _groups(e: pd.DataFrame, tables: dict, st: Study, audience: str) -> list[BriefFinding]:
    """A k-group comparison: each outcome's group means (or medians of time to an event)
    and the overall test lead; pairwise differences follow."""
    out = []
    tests = {r.get("outcome"): r for r in tables.get("group_comparison.tests") or []}
    for outcome, g in e.groupby("outcome", sort=False):
        label = st.label(outcome, audience)
        means = g[g["scale"] == "mean"]
        if not means.empty:
            means = means.sort_values("estimate", ascending=False)
            parts = [f"{r['contrast']} {num(r['estimate'])} ({_iv(audience)}"
                     f"{num(r['ci_low'])} to {num(r['ci_high'])}; {num(r['n_treated'], 0)} "
                     f"{st.unit})" for r in means.to_dict("records")]
            t = tests.get(outcome) or {}
            p_all = t.get("anova_p")
            differ = _finite(p_all) and p_all < 0.05
            k = len(parts)
            if not _finite(p_all):
                test = ""
            elif audience == "clearinghouse":
                test = (f"; the {k} groups differ by more than chance would explain" if differ
                        else f"; the {k} groups may differ only by chance")
            else:
                test = (f"; the {k} groups differ (one-way ANOVA {pvalue(p_all)})" if differ
                        else f"; no clear difference between the {k} groups (one-way ANOVA "
                        f"{pvalue(p_all)})")
            out.append(BriefFinding("other", outcome, f"mean per {st.one}: " + "; ".join(parts)
                               + test + ".", differ, "main", _cap(label)))
        life = tables.get("group_comparison.lifetime") or []
        hrs = g[g["scale"] == "hazard_ratio"]
        if not hrs.empty and life:
            parts = [f"{r['group']} {num(r['median'])}" for r in life if _finite(r.get("median"))]
            unit = st.outcomes.get(outcome, ("", "", ""))[2] or ""
            out.append(BriefFinding("time", outcome, f"median {label}: " + "; ".join(parts)
                               + (f" {unit}" if unit else "") + ".", False, "main",
                               _cap(label)))
        for r in g[g["scale"].isin(["difference", "hazard_ratio"])].to_dict("records"):
            a, _, b = str(r["contrast"]).partition(" vs ")
            if r["scale"] == "difference":
                text = (f"{a} vs {b}: {_signed(r['estimate'], num, 'lower', 'higher')} in {a} "
                        f"({_iv(audience)}{num(r['ci_low'])} to {num(r['ci_high'])}")
            else:
                text = (f"{a} vs {b}: hazard ratio of ending {ratio(r['estimate'])} "
                        f"({_iv(audience)}{ratio(r['ci_low'])} to {ratio(r['ci_high'])}")
            holm = r.get("p_value_holm")
            text += (f"; Holm-adjusted {pvalue(holm)}" if _finite(holm) else
                     f"; {pvalue(r.get('p_value'))}" if _finite(r.get("p_value")) else "") + ")."
            out.append(BriefFinding("other", outcome, text,
                               _excludes(r["ci_low"], r["ci_high"],
                                         1.0 if r["scale"] == "hazard_ratio" else 0.0),
                               "other", "pairwise comparison"))
    return out


def key_findings(estimates: pd.DataFrame, audience: str, *, study: Study | None = None,
                 tables: dict | None = None, followup_days: int = 365,
                 horizon_years: int = 1, discount_rate: float = 0.0,
                 uptake: float = 1.0) -> list[BriefFinding]:
    """The key findings of a run: per outcome one main result, then the other analyses.

    Parameters
    ----------
    estimates : the ``estimates`` of results.json as a DataFrame.
    audience : ``hmo``, ``research`` or ``clearinghouse``.
    study : the study's shape and words (:func:`evalkit.report.story.study_of`); default:
        a claims study of self-help referral.
    tables : the run's named tables (planning and group-comparison findings read them).
    followup_days, horizon_years, discount_rate, uptake : from the params, to say over
        what time a cost runs, how it is discounted and for what share of the referred.

    Returns
    -------
    list of :class:`BriefFinding`, outcomes in the order the workbooks recorded them.
    """
    if audience not in AUDIENCES:
        raise ValueError(f"audience must be one of {', '.join(AUDIENCES)}, got {audience!r}")
    st = study or Study("two_arm", "claims", "referred to self-help groups", "not referred",
                        "members", False)
    tables = tables or {}
    if estimates.empty:
        return []
    if st.shape == "planning":
        return _planning(estimates, tables, st, audience)
    if st.shape == "k_groups":
        found = _groups(estimates, tables, st, audience)
        return [f for f in found if f.role == "main" or audience != "clearinghouse"]
    out: list[BriefFinding] = []
    for o in outcome_results(estimates, st.primary):
        label = _cap(re.sub(r"^(a|an) ", "", st.label(o.outcome, audience)))
        bodies = _bodies(o.outcome, o.main, st, audience, followup_days)
        if not bodies:
            continue
        text = " ".join(b[0] for b in bodies)
        out.append(BriefFinding(bodies[0][2], o.outcome, text, any(b[1] for b in bodies), "main",
                           label))
        if audience == "clearinghouse":
            continue                 # one plain result per outcome
        for name, s in o.others:
            for t, c, topic in _bodies(o.outcome, s, st, audience, followup_days):
                out.append(BriefFinding(topic, o.outcome, t, c, "other", name))
    value = comparable(estimates)
    value = value[value["scale"].isin(VALUE_SCALES) & (value.get("analysis") != "projection")]
    if not value.empty:
        recs = _by_scale(value.to_dict("records"))
        f = _value(recs, st, audience, horizon_years, tables.get("cost_benefit.headline"),
                   discount_rate, uptake)
        if f is not None:
            out.append(f)
    out += _projection(estimates, st, audience)
    b = _budget(budget_rows(estimates), audience)
    if b is not None:
        out.append(b)
    return out


def _projection(estimates: pd.DataFrame, st: Study, audience: str) -> list[BriefFinding]:
    """Changes projected onto a plan (summary mode), with the chance that its costs fall
    (before program costs)."""
    if "analysis" not in estimates:
        return []
    rows = comparable(estimates)
    rows = rows[rows["analysis"] == "projection"]
    out = []
    for r in rows.to_dict("records"):
        unit = str(r.get("unit") or "")
        label = st.label(r["outcome"], audience)
        if r["scale"] == "probability_cost_saving":
            out.append(BriefFinding("value", r["outcome"],
                               f"The chance that the plan's health-care costs fall (before "
                               f"paying for the program) is {_chance(r['estimate'])}.", False,
                               "summary", "Projection onto the plan"))
            continue
        dollars = unit.startswith("dollars")
        fmt = total if dollars else (lambda v: num(v, 0))
        less, more = ("lower", "higher") if dollars else ("fewer", "more")
        noun = "" if dollars else f" {unit.replace(' per year', '')}"
        out.append(BriefFinding(
            "value", r["outcome"],
            f"{_cap(label)}: {_signed(r['estimate'], fmt, less, more)}{noun} a year "
            f"({r.get('estimand')}; {_iv(audience)}"
            f"{_range(r.get('ci_low'), r.get('ci_high'), fmt, less, more)}).",
            _excludes(r.get("ci_low"), r.get("ci_high"), 0), "summary",
            "Projection onto the plan"))
    return out
