"""The analysis spec: what a study is, said once, from its params and its data.

Every module downstream of the params reads what a study is from here, never from a
column name or from free text. The spec is resolved once per run, before any workbook
starts (:func:`evalkit.prepare.prepare`), saved as ``spec.json`` in the run folder and
recorded in ``results.json``. It names

* the **study**: question, intervention and comparison labels, the unit (members,
  patients, groups) and whether assignment was randomized (``study`` params section);
* each **outcome**: its kind (``count``, ``cost``, ``continuous``, ``binary``,
  ``time_to_event``), the reader's label and unit, its exposure, which direction is good
  and its primary analysis (``study.outcomes``);
* the **covariates** as terms, exactly as they enter every model: a column as written
  (``baseline_age``, ``log1p_baseline_cost``), or with an explicit transform
  (``log1p(baseline_total_cost)``, ``C(region)``). One adjustment set serves the
  propensity and the outcome models unless ``design.covariates`` or ``design.formula``
  say otherwise;
* the windows, alpha and the design.

Defaults
--------
Where the params are silent the defaults below are written out in the spec, so a reader
sees them; they reproduce what evalkit did before the spec existed:

* claims mode, outcomes: :data:`CLAIMS_OUTCOMES` (ER visits, outpatient mental-health
  visits and inpatient days are counts per member-month; total cost is a cost);
* claims mode, covariates: :data:`CLAIMS_COVARIATES`: age and sex, every numeric column
  of the members table beyond the contract's (e.g. ``comorbidity``) as written, then
  ``log1p`` of the baseline use and cost, whose long right tails would otherwise let a few
  members dominate a fit. Extra *text* columns are not adjusted for by default (in the
  built-in plans they name the program or the community, which tell the arm); the spec
  lists them under ``not_adjusted`` with the reason, and
  ``study.covariates: [..., C(region)]`` adds one. A column that tells the arm is not
  described in Table 1 either;
* person mode, covariates: ``data.person.covariates`` as written (a text column as
  ``C(column)``); outcomes: a count when the data have an exposure column or the values
  are whole numbers >= 0, else continuous (``study.outcomes.<name>.kind`` or
  ``design.outcome_types`` say otherwise);
* the intervention and comparison: "referred to self-help groups" and "not referred"
  (claims mode), else the values of the treatment column.

A covariate that is constant, or the treatment in disguise, cannot be estimated: it is
listed under ``not_adjusted`` with the reason, never dropped silently.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataValidationError, ParamsError, StatisticalWarning
from ..results import SPEC_FILE
from ..terms import Term, parse_term, term_columns

#: Kinds of outcome.
KINDS = ("count", "cost", "continuous", "binary", "time_to_event")
#: Program costs (``econ``) that, when the params leave them out, are evalkit's defaults:
#: assumptions, not the program's own costs (listed in the spec's ``assumed``).
ECON_COST_FIELDS = ("coordination", "facilitation", "materials", "fixed_startup")
#: The arms of a claims study whose params do not name them: referral vs none.
CLAIMS_ARMS = ("referred to self-help groups", "not referred")
#: Whom a per-person figure of the claims default arms is per (one, all).
CLAIMS_PER = ("referred member", "referred members")


@dataclass(frozen=True)
class OutcomeDefault:
    kind: str
    label: str
    plain: str
    unit: str
    good: str = "lower"
    truth: str | None = None   # key of a synthetic plan's true effect
    event: tuple | None = None  # time to event: what happens, (in brief, in plain words)
    #: its name when the figures come from published studies (summary mode) and ``label``
    #: would say more than they measured (None: ``label``)
    published: str | None = None


#: Claims mode: the built-in outcomes of the member x window table. The one table of
#: outcome labels; ``study.outcomes`` overrides any field.
CLAIMS_OUTCOMES = {
    "er_visits": OutcomeDefault("count", "ER visits", "emergency-room visits", "visits",
                                truth="er"),
    "outpatient_mh_visits": OutcomeDefault(
        "count", "outpatient mental-health visits",
        "visits to outpatient mental-health services", "visits", truth="outpatient_mh",
        published="professional outpatient visits"),
    "inpatient_days": OutcomeDefault("count", "inpatient days", "days in hospital", "days",
                                     truth="inpatient_days"),
    "total_cost": OutcomeDefault("cost", "total cost of care", "health-care costs", "dollars",
                                 truth="cost", published="health-care cost"),
}
#: Claims mode: the outcome whose visits averted measure effectiveness in the economics.
CLAIMS_EFFECT_OUTCOME = "er_visits"
#: Claims mode: the default adjustment set for the built-in columns: age and sex, then
#: (after any extra numeric column of the members table) the baseline use and cost.
CLAIMS_DEMOGRAPHICS = ("age_at_index", "female")
CLAIMS_BASELINE = ("log1p(baseline_er_visits)", "log1p(baseline_outpatient_mh_visits)",
                   "log1p(baseline_inpatient_days)", "log1p(baseline_total_cost)")
CLAIMS_COVARIATES = CLAIMS_DEMOGRAPHICS + CLAIMS_BASELINE
#: Claims mode: columns of the cohort table that are the contract's, not covariates.
CLAIMS_COHORT_COLUMNS = ("member_id", "group", "index_date", "bl_start", "fu_start", "fu_end",
                         "bl_member_months", "fu_member_months", "sex", "dose", "age_at_index")
#: Time-to-event outcomes the claims workbooks estimate (not columns of the data).
CLAIMS_TIME_OUTCOMES = {
    "time_to_first_er": OutcomeDefault("time_to_event", "time to the first ER visit",
                                       "a first emergency-room visit", "days",
                                       event=("have a first ER visit",
                                              "make a first emergency-room visit")),
    "inpatient_readmission": OutcomeDefault("time_to_event", "inpatient readmission",
                                            "a readmission to hospital", "days",
                                            event=("be readmitted", "be readmitted to hospital")),
}


#: Summary mode: the kind of an outcome that is not a built-in one, from the measure its
#: studies use (risks and odds: binary; means: continuous; rates: count).
MEASURE_KINDS = {"RR": "binary", "OR": "binary", "RD": "binary", "MD": "continuous",
                 "SMD": "continuous", "ROM": "continuous", "IRR": "count"}


def published_label(outcome: str, spec: AnalysisSpec | None = None) -> str:
    """A readable name for an outcome of published studies (summary mode): the spec's
    label (``study.outcomes.<name>.label`` in the params, resolved into the spec), else the
    name the outcomes table gives it for published figures, else its label, else the name
    spaced."""
    o = spec.outcomes.get(outcome) if spec is not None else None
    if o is not None:
        return o.label
    d = CLAIMS_OUTCOMES.get(outcome)
    if d is None:
        return outcome.replace("_", " ")
    return d.published or d.label


def outcome_label(outcome: str, spec: AnalysisSpec | None = None) -> str:
    """The reader's name of an outcome: the spec's label (params, or the default the spec
    resolved), else the built-in outcomes table's, else the name spaced. The one reading
    of the outcome labels: tables, figures and sentences go through it (or
    :func:`published_label` for published figures)."""
    o = spec.outcomes.get(outcome) if spec is not None else None
    if o is not None:
        return o.label
    d = CLAIMS_OUTCOMES.get(outcome) or CLAIMS_TIME_OUTCOMES.get(outcome)
    return d.label if d is not None else str(outcome).replace("_", " ")


def outcome_title(outcome: str, spec: AnalysisSpec | None = None) -> str:
    """:func:`outcome_label` with a capital first letter: an outcome as a chart's title,
    axis or legend entry, or as a table's row name."""
    label = outcome_label(outcome, spec)
    return label[:1].upper() + label[1:]


@dataclass(frozen=True)
class ModelFrame:
    """Rows ready for a model: the frame with any ``log1p_*`` columns added, the formula
    names of the terms kept, the frame columns they read, and the terms left out."""

    frame: pd.DataFrame
    names: list
    columns: list
    left_out: list
    adjusted_for: list   # the terms kept, as written (results' ``adjusted_for``)


def with_treatment(frame: pd.DataFrame, group: str = "group", treated="self_help") -> pd.DataFrame:
    """A copy of ``frame`` with a 0/1 ``treated`` column (1 = self-help arm)."""
    out = frame.copy()
    out["treated"] = (out[group] == treated).astype(int)
    if out["treated"].nunique() < 2:
        raise DataValidationError("both arms are needed for a comparison, but only one arm "
                                  f"has members: {out[group].unique().tolist()}")
    return out


def model_frame(frame: pd.DataFrame, terms, treatment: str = "treated") -> ModelFrame:
    """``frame`` with the columns the terms need, the formula names, and what was left out.

    Each term enters exactly as written: a column as it is, ``log1p(x)`` as a new
    ``log1p_x`` column, ``C(x)`` as categories. A term whose column is constant in these
    rows, or identical to the treatment, cannot be estimated: it is left out, listed
    (term, reason) so the caller can record what was adjusted for, and named in a
    :class:`~evalkit.errors.StatisticalWarning` (a workbook shows it).

    Parameters
    ----------
    frame : one row per member.
    terms : :class:`Term` objects or their written forms.
    treatment : the 0/1 treatment column, if any.

    Returns
    -------
    ModelFrame
    """
    terms = [t if isinstance(t, Term) else parse_term(t) for t in terms]
    missing = [t.column for t in terms if t.column not in frame.columns]
    if missing:
        raise DataValidationError(f"covariate(s) {missing} are not columns of the analysis "
                                  f"frame (columns: {', '.join(map(str, frame.columns[:30]))})")
    names, columns, written, left_out, added = [], [], [], [], {}
    for t in terms:
        x = frame[t.column]
        reason = _unusable(x, frame[treatment] if treatment in frame.columns else None, t)
        if reason:
            left_out.append({"term": t.expression, "reason": reason})
            continue
        if t.transform == "log1p":
            if t.name in frame.columns:
                raise DataValidationError(
                    f"covariate {t.expression}: the data already have a column {t.name!r}; "
                    f"name that column as the term, or rename it")
            values = pd.to_numeric(x, errors="coerce").astype(float)
            if (values < 0).any():
                raise DataValidationError(f"covariate {t.expression}: {int((values < 0).sum())} "
                                          "negative value(s); log1p needs values >= 0")
            added[t.name] = np.log1p(values)
        elif t.transform is None and not _is_numeric(x):
            raise DataValidationError(f"covariate {t.column!r} is text: write C({t.column}) to "
                                      "adjust for its categories")
        names.append(t.name)
        columns.append(t.name if t.transform == "log1p" else t.column)
        written.append(t.expression)
    if left_out:
        warnings.warn("covariate term(s) left out of the model, which is not adjusted for "
                      "them: " + "; ".join(f"{d['term']} ({d['reason']})" for d in left_out),
                      StatisticalWarning, stacklevel=2)
    out = frame.assign(**added) if added else frame
    return ModelFrame(out, names, columns, left_out, written)


def _is_numeric(x: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(x) and not pd.api.types.is_bool_dtype(x)


def _arm_itself(x: pd.Series, treated: pd.Series | None, levels: bool) -> str | None:
    """Why column ``x`` tells the arm (None when it does not): it is the 0/1 treatment
    recoded, or, read by its ``levels`` (a text column or a ``C()`` term), every level
    is in one arm only (the arm's own name, or programs nested in the arms)."""
    if treated is None or x.nunique(dropna=True) < 2:
        return None
    if _is_numeric(x) and x.nunique() == 2 and \
            abs(np.corrcoef(x.astype(float), treated.astype(float))[0, 1]) > 0.999:
        return "identical to the treatment"
    if levels and (pd.crosstab(x, treated) > 0).sum(axis=1).max() < 2:
        return "nested in the arms (every level in one arm only)"
    return None


def _unusable(x: pd.Series, treated: pd.Series | None, term: Term) -> str | None:
    """Why a term cannot be estimated on these rows (None when it can)."""
    if x.nunique(dropna=True) < 2:
        return "constant in these rows"
    return _arm_itself(x, treated, term.transform == "C")


# ------------------------------------------------------------------------------ spec
@dataclass(frozen=True)
class OutcomeSpec:
    """One outcome: what it is and how it is read."""

    name: str
    kind: str
    label: str
    plain: str
    unit: str
    exposure: str | None
    good: str
    primary: str
    source: str


@dataclass(frozen=True)
class StudySpec:
    question: str
    intervention: str
    comparison: str
    unit: str
    randomized: bool

    def per_treated(self, mode: str) -> tuple[str, str]:
        """Whom a per-person figure (a saving, a program cost) is per, one and all
        (:func:`per_treated`)."""
        return per_treated(mode, self.intervention, self.comparison, self.unit)


def singular(unit: str) -> str:
    """One of a study's units: 'members' -> 'member', 'patients' -> 'patient'."""
    u = unit or "members"
    return u[:-1] if u.endswith("s") and not u.endswith("ss") else u


def per_treated(mode: str, intervention: str, comparison: str, unit: str) -> tuple[str, str]:
    """Whom a per-person figure is per, one and all: ('referred member', 'referred
    members') for the claims default arms (referral vs none) and for published summaries,
    else the intervention arm in the spec's words ('patient treated in 12-step-oriented
    programs', 'patients treated in 12-step-oriented programs')."""
    if mode == "summary" or (mode == "claims" and (intervention, comparison) == CLAIMS_ARMS):
        return CLAIMS_PER
    return (f"{singular(unit)} {intervention}".strip(),
            f"{unit or 'members'} {intervention}".strip())


@dataclass(frozen=True)
class AnalysisSpec:
    """The resolved analysis spec of a run (see the module docstring).

    Attributes
    ----------
    mode : claims, person or summary.
    study : StudySpec
    outcomes : dict name -> OutcomeSpec, in order.
    covariates : the adjustment set, as :class:`Term` objects.
    not_adjusted : columns or terms left out of the adjustment set, with the reason.
    described : the baseline columns Table 1 describes, adjusted for or not; never a
        column that tells the arm (the 0/1 treatment recoded, or a text column every level
        of which is in one arm only, such as the arm's own name or a program nested in it).
    propensity : the propensity model's right-hand side, as written (the adjustment set
        unless ``design.covariates`` or ``design.formula`` say otherwise).
    windows : baseline_days, followup_days (claims).
    alpha : 1 - the confidence level of every interval.
    design : method and estimand of the cohort design.
    assumed : inputs taken from evalkit's defaults because the params do not give them
        (``{"input": "econ.coordination", "value": 120.0, "why": ...}``): the program
        costs behind any savings or budget figure.
    """

    mode: str
    study: StudySpec
    outcomes: dict
    covariates: tuple
    not_adjusted: tuple
    described: tuple
    propensity: str | None
    propensity_source: str
    windows: dict
    alpha: float
    design: dict
    assumed: tuple = ()

    # -------------------------------------------------------------- reading
    def outcome(self, name: str) -> OutcomeSpec | None:
        return self.outcomes.get(name)

    def kind(self, name: str) -> str | None:
        o = self.outcomes.get(name)
        return o.kind if o else None

    def label(self, name: str) -> str:
        """The reader's name of outcome ``name`` (:func:`outcome_label`)."""
        return outcome_label(name, self)

    def outcomes_of(self, *kinds: str) -> list[str]:
        """Outcome names of the given kinds, in order."""
        return [n for n, o in self.outcomes.items() if o.kind in kinds]

    @property
    def terms(self) -> list[str]:
        """The adjustment set as written (``age_at_index``, ``log1p(baseline_total_cost)``)."""
        return [t.expression for t in self.covariates]

    # -------------------------------------------------------------- storing
    def to_dict(self) -> dict:
        d = asdict(self)
        d["outcomes"] = {n: asdict(o) for n, o in self.outcomes.items()}
        d["covariates"] = [{"term": t.expression, **asdict(t)} for t in self.covariates]
        d["not_adjusted"] = list(self.not_adjusted)
        d["described"] = list(self.described)
        d["assumed"] = list(self.assumed)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "AnalysisSpec":
        return cls(mode=d["mode"], study=StudySpec(**d["study"]),
                   outcomes={n: OutcomeSpec(**o) for n, o in d["outcomes"].items()},
                   covariates=tuple(Term(c["column"], c["transform"], c["source"])
                                    for c in d["covariates"]),
                   not_adjusted=tuple(d["not_adjusted"]),
                   described=tuple(d.get("described", ())),
                   propensity=d["propensity"],
                   propensity_source=d["propensity_source"], windows=d["windows"],
                   alpha=d["alpha"], design=d["design"],
                   assumed=tuple(d.get("assumed", ())))


def load(run_dir: str | Path) -> AnalysisSpec | None:
    """The spec saved in a run folder (None when the run has none)."""
    path = Path(run_dir) / SPEC_FILE
    if not path.is_file():
        return None
    return AnalysisSpec.from_dict(json.loads(path.read_text()))


# ------------------------------------------------------------------------------ resolving
def _study(params) -> StudySpec:
    s = params.study
    if params.mode == "claims":
        (iv, cmp_), unit = CLAIMS_ARMS, "members"
    elif params.mode == "person":
        p = params.data.person
        iv = (str(p.treated_value).replace("_", " ") if p.treatment else "")
        cmp_ = f"not {iv}" if iv else ""
        unit = "people"
    else:
        iv, cmp_, unit = "self-help groups", "comparison", "studies"
    return StudySpec(question=s.question or params.title, intervention=s.intervention or iv,
                     comparison=s.comparison or cmp_, unit=s.unit or unit,
                     randomized=bool(s.randomized))


def _default_primary(kind: str, mode: str = "claims") -> str:
    if mode == "summary":
        return "synthesis"
    return "survival" if kind == "time_to_event" else "adjusted"


def _summary_defaults(summary) -> dict:
    """Summary mode: the outcomes of the published studies, in order of first mention,
    named in the words that suit published figures (:func:`published_label`)."""
    out = {}
    for s in summary.studies if summary is not None else ():
        if s.outcome in out:
            continue
        d = CLAIMS_OUTCOMES.get(s.outcome)
        spaced = s.outcome.replace("_", " ")
        out[s.outcome] = OutcomeDefault(
            d.kind if d else MEASURE_KINDS[s.measure], published_label(s.outcome),
            d.plain if d else spaced, d.unit if d else "", d.good if d else "lower")
    return out


def _outcomes(params, data: pd.DataFrame | None, has_exposure: bool,
              exposure: str | None) -> dict:
    given = params.study.outcomes
    overrides = params.design.outcome_types
    if params.mode == "claims":
        names = [*CLAIMS_OUTCOMES, *CLAIMS_TIME_OUTCOMES]
        defaults = {**CLAIMS_OUTCOMES, **CLAIMS_TIME_OUTCOMES}
    elif params.mode == "person":
        p = params.data.person
        names = list(p.outcomes) + ([p.duration] if p.duration else [])
        defaults = {}
        for n in p.outcomes:
            kind = "count" if has_exposure or (data is not None and n in data and
                                              _whole_nonnegative(data[n])) else "continuous"
            defaults[n] = OutcomeDefault(kind, n.replace("_", " "), n.replace("_", " "), "")
        if p.duration:
            defaults[p.duration] = OutcomeDefault("time_to_event", p.duration.replace("_", " "),
                                                  p.duration.replace("_", " "), p.duration_unit)
    else:
        defaults = _summary_defaults(params.summary)
        names = list(defaults)
    unknown = [o for o in [*given, *overrides] if o not in names]
    if unknown:
        raise ParamsError(f"study.outcomes / design.outcome_types name {sorted(set(unknown))}, "
                          f"which are not outcomes of this study ({', '.join(names)})")
    out = {}
    for n in names:
        d, g = defaults[n], given.get(n)
        kind = (g.kind if g and g.kind else None) or overrides.get(n) or d.kind
        src = "params" if (g and g.kind) or n in overrides else "default"
        out[n] = OutcomeSpec(
            name=n, kind=kind, label=(g.label if g and g.label else d.label),
            plain=(g.label if g and g.label else d.plain),
            unit=(g.unit if g and g.unit is not None else d.unit),
            exposure=exposure if kind == "count" else None,
            good=(g.good if g and g.good else d.good),
            primary=(g.primary if g and g.primary else _default_primary(kind, params.mode)),
            source=src)
    return out


def _whole_nonnegative(x: pd.Series) -> bool:
    v = pd.to_numeric(x, errors="coerce")
    return bool(v.notna().all() and (v >= 0).all() and (v % 1 == 0).all())


def _covariates(params, data: pd.DataFrame | None, extra_columns: list[str]
                ) -> tuple[list[Term], list[dict], list[str]]:
    """The adjustment set, what was not adjusted for (with reasons), and the baseline
    columns a reader sees described (Table 1), adjusted for or not."""
    not_adjusted: list[dict] = []
    if params.study.covariates is not None:
        terms = [parse_term(t, "params") for t in params.study.covariates]
        described = term_columns(terms)
    elif params.mode == "claims":
        terms = [parse_term(t, "default") for t in CLAIMS_DEMOGRAPHICS]
        for c in extra_columns:
            if data is not None and c in data and not _is_numeric(data[c]):
                arm = _arm_itself(data[c], data.get("treated"), levels=True)
                not_adjusted.append({"term": c, "reason": arm or "text column of the members "
                                     f"table; add C({c}) to study.covariates to adjust for it"})
            else:
                terms.append(Term(c, None, "default: members table column"))
        terms += [parse_term(t, "default") for t in CLAIMS_BASELINE]
        described = [*CLAIMS_DEMOGRAPHICS, *extra_columns, *term_columns(CLAIMS_BASELINE)]
    elif params.mode == "person":
        terms = [parse_term(t, "params") for t in params.data.person.covariates]
        described = term_columns(terms)
    else:
        return [], [], []
    if data is not None:
        missing = [t.column for t in terms if t.column not in data.columns]
        if missing:
            raise DataValidationError(f"covariate(s) {missing} are not in the data (columns: "
                                      f"{', '.join(map(str, data.columns[:30]))})")
        treated = data.get("treated")
        categorical = {t.column for t in terms if t.transform == "C"}
        kept = []
        for t in terms:
            if t.transform is None and not _is_numeric(data[t.column]):
                t = Term(t.column, "C", t.source + "; text column enters as categories")
            reason = _unusable(data[t.column], treated, t)
            if reason:
                not_adjusted.append({"term": t.expression, "reason": reason})
            else:
                kept.append(t)
        terms = kept
        # a column that tells the arm is what is compared, not a characteristic of the
        # people compared: Table 1 leaves it out (its reason is under not_adjusted)
        described = [c for c in described if c not in data or not _arm_itself(
            data[c], treated, levels=c in categorical or not _is_numeric(data[c]))]
    return terms, not_adjusted, described


def _assumed(params) -> list[dict]:
    """Program costs the params leave to evalkit's defaults (see :data:`ECON_COST_FIELDS`)."""
    given = params.econ.model_fields_set
    return [{"input": f"econ.{k}", "value": getattr(params.econ, k),
             "why": "evalkit's default; the params do not give the program's cost"}
            for k in ECON_COST_FIELDS if k not in given]


def resolve(params, data: pd.DataFrame | None = None, extra_columns: list[str] = (),
            has_exposure: bool = False, exposure: str | None = None) -> AnalysisSpec:
    """Resolve the analysis spec from validated params and the loaded analysis frame.

    Parameters
    ----------
    params : validated :class:`evalkit.params.Params`.
    data : the analysis frame (one row per member, with a 0/1 ``treated`` column where
        there are two arms); None in summary mode.
    extra_columns : claims mode: the members table's columns beyond the contract's.
    has_exposure, exposure : whether the data have member-months, and the column.
    """
    terms, not_adjusted, described = _covariates(params, data, list(extra_columns))
    ds = params.design
    if ds.formula:
        propensity, psrc = " ".join(ds.formula.split()), "design.formula"
    elif ds.covariates is not None:
        pterms = [parse_term(t) for t in ds.covariates]
        if data is not None:
            pterms = [Term(t.column, "C", t.source) if t.transform is None and
                      t.column in data and not _is_numeric(data[t.column]) else t
                      for t in pterms]
        propensity, psrc = " + ".join(t.expression for t in pterms), "design.covariates"
    else:
        propensity = " + ".join(t.expression for t in terms) or None
        psrc = "the adjustment set"
    windows = ({"baseline_days": params.windows.baseline_days,
                "followup_days": params.windows.followup_days} if params.mode == "claims"
               else {})
    return AnalysisSpec(
        mode=params.mode, study=_study(params),
        outcomes=_outcomes(params, data, has_exposure, exposure),
        covariates=tuple(terms), not_adjusted=tuple(not_adjusted),
        described=tuple(described), propensity=propensity,
        propensity_source=psrc, windows=windows, alpha=params.study.alpha,
        design={"method": ds.method, "estimand": ds.resolved_estimand},
        assumed=tuple(_assumed(params)))

