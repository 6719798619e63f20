"""What kind of study a run is, and the words the brief tells it in.

The brief's question, the sentence saying who was compared, the methods and the
limitations depend on the *shape* of the study, read from the run's analysis spec
(``spec`` in results.json; :mod:`evalkit.analysis.spec`), its params and the records'
``analysis`` fields, never from a column name:

``two_arm``
    two arms compared on use of care, cost or other outcomes (claims or person mode).
``time_to_event``
    two arms compared on the time to an event (a randomized trial or a cohort).
``k_groups``
    three or more groups compared (``data.person.groups``); the units may be groups.
``survey``
    survey proportions and differences between them (published figures).
``planning``
    power and sample size for a planned study (no data).
``synthesis``
    published figures by study, pooled, and projected onto a plan.

The intervention, comparison and unit are the spec's (``study`` params section);
whether assignment was randomized decides whether confounding is a limitation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from ..params import EconParams
from ..analysis.spec import (CLAIMS_ARMS, CLAIMS_OUTCOMES, CLAIMS_TIME_OUTCOMES, per_treated,
                             singular)
from ..terms import parse_term

SHAPES = ("two_arm", "time_to_event", "k_groups", "survey", "planning", "synthesis")
#: The words evalkit uses for a claims study whose params do not name the arms.
DEFAULT_ARMS = CLAIMS_ARMS
#: Program-cost fields of the params whose defaults are assumptions, not the program's.
COST_FIELDS = ("coordination", "facilitation", "materials", "fixed_startup")

#: How each kind of analysis is named beside its result (analysis -> label).
ANALYSIS_LABELS = {
    "adjusted": "adjusted model",
    "design": "design-adjusted comparison",
    "crude": "unadjusted comparison",
    "prepost": "pre/post comparison (difference-in-differences)",
    "its": "interrupted time series",
    "survival": "time-to-event model",
    "synthesis": "published figures",
    "projection": "projection onto the plan",
    "survey": "survey",
    "valuation": "cost-benefit",
    "power": "power calculation",
    "descriptive": "description",
}
#: What each kind of analysis measures, for the line that introduces it.
ANALYSIS_MEANS = {
    "adjusted": "the difference between the arms after adjusting for their differences "
                "before the index date",
    "design": "the difference between arms made alike by matching or weighting",
    "crude": "the raw difference between the arms, without adjustment",
    "prepost": "each arm's change from before to after the index date, compared",
    "its": "the change in the monthly series after the index date, against the trend "
           "before it",
    "survival": "how soon the event happened in each arm",
}


@dataclass(frozen=True)
class Study:
    """The study a brief tells: its shape and its own words.

    Attributes
    ----------
    shape : one of :data:`SHAPES`.
    mode : claims, person or summary.
    intervention, comparison, unit : the spec's words (``study`` params section).
    randomized : assignment to the arms was randomized (spec).
    question : the spec's question when the params give one, else None.
    outcomes : outcome name -> (label, plain label, unit), from the spec.
    primary : outcome name -> the spec's primary analysis.
    group_column : the column naming the groups of a k-group comparison.
    good : outcome name -> the direction the spec counts as good (``lower``/``higher``).
    """

    shape: str
    mode: str
    intervention: str
    comparison: str
    unit: str
    randomized: bool
    question: str | None = None
    outcomes: dict = field(default_factory=dict)
    primary: dict = field(default_factory=dict)
    group_column: str | None = None
    good: dict = field(default_factory=dict)

    @property
    def default_arms(self) -> bool:
        """The claims default arms (referral vs none), worded as evalkit always has."""
        return self.mode == "claims" and (self.intervention, self.comparison) == DEFAULT_ARMS

    @property
    def treated(self) -> str:
        """Who is in the intervention arm: 'members referred to self-help groups'."""
        if self.mode == "summary":
            return "the intervention arm"
        return f"{self.unit} {self.intervention}".strip()

    @property
    def control(self) -> str:
        """Who is in the comparison arm: 'similar members who were not referred'."""
        if self.mode == "summary":
            return "the comparison arm"
        if self.default_arms:
            return "similar members who were not referred"
        return f"{self.unit} {self.comparison}".strip()

    @property
    def versus(self) -> str:
        """The comparison after a change: 'with self-help referral' or 'among A than
        among B'."""
        if self.default_arms:
            return "with self-help referral"
        if self.mode == "summary":
            return "in the intervention arm than in the comparison arm"
        return f"among {self.treated} than among {self.control}"

    @property
    def one(self) -> str:
        """One unit, singular: 'member', 'patient', 'group'."""
        return singular(self.unit)

    @property
    def per_treated(self) -> str:
        """Who a per-person cost is per: 'referred member', 'patient treated in ...'."""
        return self.per_treated_all[0]

    @property
    def per_treated_all(self) -> tuple[str, str]:
        """Whom per-person figures are per, one and all: ('referred member', 'referred
        members'), or ('patient treated in ...', 'patients treated in ...')."""
        return per_treated(self.mode, self.intervention, self.comparison, self.unit)

    @property
    def arms(self) -> tuple[str, str]:
        """The two arms as a table names them: ('Self-help referral', 'Comparison') for the
        claims default, else the spec's intervention and comparison, capitalized (in a
        comparison of several groups: the first and second group a contrast names)."""
        if self.default_arms:
            return ("Self-help referral", "Comparison")
        if self.shape == "k_groups":
            return ("First named", "Second named")
        if not (self.intervention and self.comparison):
            return ("Intervention arm", "Comparison arm")
        return (_cap(self.intervention), _cap(self.comparison))

    @property
    def before(self) -> str:
        """When the arms' characteristics were measured, in a table's title."""
        if self.default_arms:
            return "Before referral"
        return "Before randomization" if self.randomized else "At the start"

    def label(self, outcome: str, audience: str = "hmo") -> str:
        """The outcome's name for readers (spec label, or plain words for a lay brief)."""
        short, plain, _ = self.outcomes.get(outcome, (str(outcome).replace("_", " "),) * 2
                                            + ("",))
        return plain if audience == "clearinghouse" else short

    def unit_of(self, outcome: str) -> str:
        return self.outcomes.get(outcome, ("", "", ""))[2]

    def good_of(self, outcome: str) -> str | None:
        """The direction the spec counts as good for the outcome, or None if unknown."""
        return self.good.get(outcome)


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _spec_good(spec: dict | None) -> dict:
    out = {n: d.good for n, d in {**CLAIMS_OUTCOMES, **CLAIMS_TIME_OUTCOMES}.items()}
    out.update({n: o["good"] for n, o in ((spec or {}).get("outcomes") or {}).items()
                if o.get("good")})
    return out


def _spec_outcomes(spec: dict | None) -> dict:
    out = {n: (d.label, d.plain, d.unit)
           for n, d in {**CLAIMS_OUTCOMES, **CLAIMS_TIME_OUTCOMES}.items()}
    for n, o in ((spec or {}).get("outcomes") or {}).items():
        out[n] = (o.get("label") or n, o.get("plain") or o.get("label") or n,
                  o.get("unit") or "")
    return out


#: The study a claims run tells when its spec names nothing else: the default arms.
CLAIMS_STUDY = Study(shape="two_arm", mode="claims", intervention=DEFAULT_ARMS[0],
                     comparison=DEFAULT_ARMS[1], unit="members", randomized=False,
                     outcomes=_spec_outcomes(None), good=_spec_good(None))


def shape_of(analyses: set, p, spec_outcomes: dict) -> str:
    """The study's shape (see the module docstring) from what the run recorded."""
    person = getattr(p.data, "person", None)
    if "power" in analyses and not analyses - {"power"}:
        return "planning"
    if p.mode == "summary":
        return "synthesis" if analyses & {"synthesis", "projection"} else "survey"
    if person is not None and getattr(person, "groups", None):
        return "k_groups"
    kinds = {o.get("kind") for o in spec_outcomes.values()}
    if kinds == {"time_to_event"} or (analyses and analyses <= {"survival", "descriptive"}):
        return "time_to_event"
    return "two_arm"


def study_of(results: dict, p) -> Study:
    """The :class:`Study` of a run, from its spec (results.json ``spec``), params and
    records."""
    spec = results.get("spec") or {}
    s = spec.get("study") or {}
    analyses = {str(r.get("analysis")) for r in results.get("estimates") or []
                if r.get("analysis")}
    outcomes = spec.get("outcomes") or {}
    shape = shape_of(analyses, p, outcomes)
    question = s.get("question")
    if not question or question == p.title:
        question = None
    person = getattr(p.data, "person", None)
    return Study(shape=shape, mode=p.mode,
                 intervention=s.get("intervention") or (DEFAULT_ARMS[0] if p.mode == "claims"
                                                        else ""),
                 comparison=s.get("comparison") or (DEFAULT_ARMS[1] if p.mode == "claims"
                                                    else ""),
                 unit=s.get("unit") or ("members" if p.mode == "claims" else "people"),
                 randomized=bool(s.get("randomized", False)), question=question,
                 outcomes=_spec_outcomes(spec),
                 primary={n: o.get("primary") for n, o in outcomes.items()},
                 good=_spec_good(spec),
                 group_column=getattr(person, "groups", None) if person is not None else None)


def article(text: str) -> str:
    """'a' or 'an' before a number or word as it is said: 'an 18% drop', 'a 20% drop'."""
    t = text.lstrip().lower()
    digits = t[: len(t) - len(t.lstrip("0123456789"))]
    if digits:
        return "an" if digits.startswith("8") or digits in ("11", "18") or (
            digits.startswith("18") and len(digits) in (2, 5, 6)) or (
            digits.startswith("11") and len(digits) in (2, 5, 6)) else "a"
    return "an" if t[:1] in "aeio" else "a"


# ---------------------------------------------------------------------- the question
_CLAIMS_QUESTIONS = {
    "hmo": "Does referring members to self-help and mutual-aid groups change how much "
           "professional care they use, and does it save the plan money?",
    "research": "Is referral to self-help and mutual-aid groups associated with a change in "
                "members' use of professional care and its cost, and how robust is the "
                "estimate to the method?",
    "clearinghouse": "When people are referred to a self-help or mutual-aid group, do they "
                     "end up needing less professional care, and is the referral worth it?",
}


def listed(words: list[str]) -> str:
    """'a', 'a and b', 'a, b and c' (repeats and empty words left out)."""
    words = [w for w in dict.fromkeys(words) if w]
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def question(study: Study, audience: str, outcomes: list[str], p) -> str:
    """The question the brief answers: the spec's own, else one for the study's shape."""
    if study.question:
        return study.question
    labels = listed([study.label(o, audience) for o in outcomes])
    if study.shape == "planning":
        pl = p.planning
        drop = f"{pl.relative_reduction:.0%}"
        return (f"How likely is a study with {pl.members_per_arm:,} members per arm to detect "
                f"{article(drop)} {drop} drop in {study.label(pl.outcome, audience)}, "
                "and how many members would it need?")
    if study.shape == "survey":
        return ("What share of the people surveyed reported each experience, and how far "
                "apart are the groups compared?")
    if study.shape == "synthesis":
        proj = p.summary.projection if p.summary else None
        where = f" for {proj.plan} ({proj.members:,} members)" if proj else ""
        return f"What do the published studies show, and what could their results mean{where}?"
    if study.shape == "k_groups":
        by = (study.group_column or "group").replace("_", " ")
        return f"How do {labels} differ between {study.unit} by {by}?"
    if study.default_arms:
        return _CLAIMS_QUESTIONS[audience]
    if study.shape == "time_to_event":
        return (f"How did the rate of {labels} compare between {study.treated} and "
                f"{study.control}?")
    return f"How did {labels} differ between {study.treated} and {study.control}?"


def who(study: Study, members) -> str | None:
    """'Compared: 887 patients treated in ... and 887 patients treated in ...'."""
    if study.shape not in ("two_arm", "time_to_event") or not members or \
            not (members[0] and members[1]):
        return None
    return f"Compared: {members[0]} {study.treated} and {members[1]} {study.control}."


# ---------------------------------------------------------------------- methods
def term_words(terms) -> str:
    """The columns adjusted for, in words: 'age, sex, baseline er visits'; a term that
    is not a plain covariate (a propensity formula) is kept as recorded."""
    out = []
    for t in terms:
        try:
            out.append(parse_term(t).column.replace("_", " "))
        except ValueError:
            out.append(str(t))
    return ", ".join(dict.fromkeys(out))


def _analyses(e: pd.DataFrame) -> set:
    return set(e.get("analysis", pd.Series(dtype=str)).dropna().astype(str))


def adjusted_terms(e: pd.DataFrame, analyses=("adjusted", "design", "survival")) -> list[str]:
    """The terms the estimates adjusted for, as recorded (``adjusted_for``), in order."""
    if e.empty or "analysis" not in e:
        return []
    rows = e[e["analysis"].isin(analyses)]
    return list(dict.fromkeys(t for terms in rows.get("adjusted_for", []) for t in
                              (terms if isinstance(terms, (list, tuple)) else []) or []))


def _families(e: pd.DataFrame) -> list[str]:
    if "family" not in e:
        return []
    rows = e[e["analysis"] == "adjusted"]
    return [str(f) for f in dict.fromkeys(rows["family"].dropna()) if str(f)]


def replicates(e: pd.DataFrame) -> list[dict]:
    """Resampling behind the estimates: one row per distinct (replicates, failed)
    with the outcomes it serves."""
    if e.empty or "n_replicates" not in e:
        return []
    rows = e[pd.to_numeric(e["n_replicates"], errors="coerce") > 0]
    out: dict = {}
    for r in rows.to_dict("records"):
        key = (int(r["n_replicates"]), int(r.get("n_failed") or 0))
        out.setdefault(key, []).append(r)
    return [{"n": n, "failed": f, "records": recs} for (n, f), recs in out.items()]


def methods(study: Study, p, e: pd.DataFrame, audience: str) -> list[str]:
    """What was done, for the study's shape, from what the records say ran."""
    plain = audience == "clearinghouse"
    an = _analyses(e)
    out = []
    if study.shape == "planning":
        pl = p.planning
        out.append(f"Power and sample size for comparing {study.label(pl.outcome, audience)} "
                   "between two arms, with a negative binomial model for the counts "
                   f"(comparison-arm rate {pl.baseline_rate:g} per member-year, dispersion "
                   f"{pl.dispersion:g}, follow-up {pl.followup_years:g} year(s), two-sided "
                   f"test at the {pl.alpha:.0%} level). No member data were used.")
        return out
    if p.mode == "summary":
        out.append("These results are worked out from figures that studies have published; no "
                   "information about individual people was used." if plain else
                   "Source: figures published for each group (sizes, means, events or "
                   "proportions); no member-level data were used.")
    elif p.mode == "claims":
        w = p.windows
        out.append(f"Health-plan records of {study.treated} were compared with those of "
                   f"{study.control}, counting use of care over the {w.followup_days} days "
                   f"from the index date, with the {w.baseline_days} days before as the "
                   "baseline; use is per member-month of coverage.")
    elif study.shape == "k_groups":
        out.append(f"One row per {study.one}; the "
                   f"{(study.group_column or 'group').replace('_', ' ')} groups are compared "
                   "by their means (t intervals), differences between each pair (Welch), "
                   "and for time to an event Kaplan-Meier curves and a Cox model.")
    else:
        out.append(f"One row per person: {study.treated} compared with {study.control}"
                   + (" (assigned at random)." if study.randomized else "."))
    terms = adjusted_terms(e)
    if terms and an & {"adjusted", "design"}:
        plain_terms = term_words(terms)
        fam = _families(e)
        out.append(f"Adjustment: differences between the groups before the index date "
                   f"({plain_terms}) are taken into account." if plain else
                   ("Adjusted comparison" if "adjusted" in an else
                    "Design-adjusted comparison (matching or weighting)")
                   + (f" ({' and '.join(fam)} models)" if fam else "")
                   + f", adjusting for {', '.join(terms)}.")
    if "prepost" in an:
        out.append("Before-and-after check: each group's change from the year before to the "
                   "year after is compared." if plain else
                   "Pre/post comparison: difference-in-differences, each member's follow-up "
                   "against their own baseline, with member and period fixed effects and "
                   "standard errors clustered by member.")
    if "its" in an:
        out.append("Time series: monthly use before and after the index date." if plain else
                   "Interrupted time series: monthly rates, the level and trend after the "
                   "index date against the trend before it; the ratio is read at the month "
                   "named beside it.")
    if "survival" in an and study.shape != "k_groups":
        out.append("Timing: how soon the event happened in each group." if plain else
                   "Time to event: Kaplan-Meier curves by arm and a Cox model; follow-up is "
                   "censored at its end.")
    if "valuation" in an:
        ec = p.econ
        out.append(f"Value: savings against program costs over {ec.horizon_years} year(s), "
                   f"from the {ec.perspective}'s point of view"
                   + (f", discounted at {ec.discount_rate:.0%} a year" if ec.discount_rate
                      else "") + ".")
    for r in replicates(e):
        if not plain:
            out.append(f"Resampling: {r['n']:,} replicates behind "
                       f"{listed(sorted({study.label(x['outcome']) for x in r['records']}))}"
                       f"; seed {p.seed}.")
    if audience == "research":
        ms = list(dict.fromkeys(str(m) for m in e.get("method", pd.Series(dtype=str)).dropna()
                                if str(m)))
        if ms:
            out.append("Methods as recorded:")
            out += [f"– {m}" for m in ms]
    return out


# ---------------------------------------------------------------------- limitations
def limitations(study: Study, p, e: pd.DataFrame, audience: str) -> list[str]:
    """What the results cannot tell, for the study's shape and design."""
    plain = audience == "clearinghouse"
    an = _analyses(e)
    out = []
    if p.mode == "claims" and p.data.source == "synthetic" or (
            p.mode == "person" and getattr(p.data, "source", None) == "synthetic"):
        out.append("These results come from generated (synthetic) data and only illustrate the "
                   "method; they say nothing about a real program.")
    if study.shape == "planning":
        out.append("A power calculation is a plan, not a result: it holds only if the "
                   "comparison-arm rate and the dispersion are right for the plan; both are "
                   "inputs, not measurements of this study.")
        return out
    if p.mode == "summary":
        out.append("The results come from published studies, not from your own members; "
                   "people, programs and health plans differ, so the figures may not carry "
                   "over." if plain else
                   "Published summary figures only: the comparison inherits the original "
                   "studies' designs and populations and cannot be adjusted further; "
                   "transferring it to another plan is an assumption.")
    if study.shape == "survey":
        out.append("Proportions describe the people who answered; differences between groups "
                   "are associations, not effects.")
    elif study.shape == "k_groups":
        out.append(f"The {study.unit} were not assigned to a "
                   f"{(study.group_column or 'group').replace('_', ' ')} at random, so "
                   "differences between the groups may reflect how they came to be of each "
                   "kind; several pairs are compared (Holm-adjusted p-values are given).")
    elif study.randomized:
        out.append(f"Assignment was randomized, so the arms differ only by chance at the "
                   f"start; with {study.unit} followed as randomized the comparison estimates "
                   "the effect of being offered the intervention.")
    elif p.mode != "summary":
        terms = adjusted_terms(e)
        adj = (f"the comparison was adjusted for {term_words(terms)}" if terms else "the comparison was not adjusted for any "
               "characteristic")
        out.append(f"Assignment was not random: {adj}. Those in each group may still differ "
                   "in ways the data do not show, so the results show what went together, "
                   "not proof of cause." if plain else
                   f"Observational design (assignment not randomized): {adj}. Adjustment "
                   "removes differences in measured characteristics only; unmeasured "
                   "confounding can bias the estimates, which show association, not proof "
                   "of cause.")
    if "prepost" in an:
        out.append("The before-and-after check assumes both groups would have changed in the "
                   "same way otherwise." if plain else
                   "Pre/post designs assume parallel trends: without the intervention both "
                   "groups would have changed alike; events at the index date can move both "
                   "use and assignment.")
    if "valuation" in an:
        out.append(f"Savings count the {p.econ.perspective}'s costs over "
                   f"{p.econ.horizon_years} year(s); other benefits (well-being, family, "
                   "work) are not counted.")
    if audience == "research" and len(set(e.get("outcome", []))) > 1:
        out.append("Several outcomes are compared without adjustment for multiplicity; "
                   "intervals are per comparison.")
    return out


# ---------------------------------------------------------------------- uncertainty
def _finite(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def replicate_notes(study: Study, e: pd.DataFrame, limit: float) -> list[str]:
    """What lost resampling replicates mean, one sentence per distinct count."""
    out = []
    for r in replicates(e):
        if not r["failed"]:
            continue
        share = r["failed"] / r["n"]
        what = listed(sorted({study.label(x["outcome"]) for x in r["records"]}))
        text = (f"{r['failed']:,} of {r['n']:,} resampling replicates ({share:.1%}) behind "
                f"the intervals for {what} could not be computed; the intervals rest on the "
                f"other {r['n'] - r['failed']:,}")
        out.append(text + (f". That is more than {limit:.0%}: these intervals are unreliable "
                           "and may be too narrow." if share > limit else
                           ", which changes them little."))
    return out


def assumptions(p, results: dict, e: pd.DataFrame, study: Study = CLAIMS_STUDY) -> list[str]:
    """Inputs assumed rather than given: the workbooks' ``*.assumptions`` tables, records'
    ``assumed`` fields, and program costs left at evalkit's defaults where they drive a
    savings or budget figure (per the study's own treated unit)."""
    out = []
    for name, rows in (results.get("tables") or {}).items():
        if name.endswith(".assumptions"):
            out += [str(r["assumption"]) for r in rows
                    if isinstance(r, dict) and r.get("assumption")]
    drives = not e.empty and (_analyses(e) & {"valuation", "budget"})
    if not drives:
        return out
    spec = results.get("spec") or {}
    if "assumed" in spec:           # the spec says which inputs were left to defaults
        costs = {a["input"].split(".", 1)[1]: a["value"] for a in spec["assumed"]
                 if str(a.get("input", "")).startswith("econ.")}
    else:                           # an older run: values equal to the defaults
        costs = {k: getattr(p.econ, k) for k in COST_FIELDS
                 if getattr(p.econ, k) == EconParams.model_fields[k].default}
    if costs:
        per = f"per {study.per_treated}"
        words = {"coordination": f"coordination {per}", "facilitation": f"facilitation {per}",
                 "materials": f"materials {per}", "fixed_startup": "start-up"}
        given = listed([f"${float(v):,.0f} {words.get(k, k)}" for k, v in costs.items()])
        out.append(f"Assumed program costs: the params do not give them, so evalkit's defaults "
                   f"are used ({given}); the net savings and budget figures rest on them. "
                   "Set the econ costs to the program's own.")
    return out
