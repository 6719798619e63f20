"""The sections that say how the analysis is done: ``models``, ``econ`` (with the
budget), ``planning``, ``design``, ``study`` (the outcomes and covariates) and
``report``."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from ..terms import formula_names, parse_term
from .base import PUBLIC_MIN_CELL, SHARES, _Strict, _WithUptake, each


class ModelParams(_Strict):
    """Choices of the outcome models."""

    bootstrap_replicates: int = Field(1000, ge=0, le=100_000, description="bootstrap replicates "
                                      "for the cost effect's interval (0: delta method only)")


class BudgetScenarioParams(_Strict):
    """One named scenario of the budget impact analysis: what differs from the base case."""

    savings: Literal["estimate", "ci_low", "ci_high"] | None = Field(
        None, description="saving per participant in this scenario: the estimate or one end "
        "of its 95% interval (default: ci_low in the low scenario, ci_high in the high one)")
    prevalence: float | None = Field(None, ge=0, le=1, description="share of plan members "
                                     "eligible (default: as in the base case)")
    referral_rate_by_year: Annotated[list[float] | None, SHARES] = Field(
        None, min_length=1, max_length=5, description="share of eligible members referred, "
        "one value per year or one for all (default: as in the base case)")
    uptake_by_year: Annotated[list[float] | None, SHARES] = Field(
        None, min_length=1, max_length=5, description="share of referred members who take "
        "part, per year or one for all (default: as in the base case)")


class BudgetParams(_Strict):
    """Budget impact for a named plan (ISPOR: Mauskopf et al. 2007; Sullivan et al. 2014):
    each year's programme cost, savings and net impact, undiscounted by default."""

    plan_name: str = Field("an illustrative plan of 100,000 members (set econ.budget)",
                           description="the plan the budget is for, shown in titles")
    plan_members: int = Field(100_000, gt=0, description="members enrolled in the plan")
    prevalence: float = Field(0.02, ge=0, le=1, description="share of plan members with the "
                              "condition, i.e. eligible for referral")
    referral_rate_by_year: Annotated[list[float], SHARES] = Field(
        [0.1, 0.2, 0.3], min_length=1, max_length=5, description="share of eligible members "
        "referred each year (1 to 5 values, or one value for every year)")
    uptake_by_year: Annotated[list[float] | None, SHARES] = Field(
        None, min_length=1, max_length=5, description="share of referred members who take "
        "part each year (default: econ.uptake every year)")
    years: int | None = Field(None, ge=1, le=5, description="horizon in years (default: the "
                              "length of referral_rate_by_year)")
    discount_rate: float = Field(0.0, ge=0, lt=1, description="0: undiscounted, as the ISPOR "
                                 "reports advise for budget impact")
    low: BudgetScenarioParams = Field(BudgetScenarioParams(), description="pessimistic scenario")
    high: BudgetScenarioParams = Field(BudgetScenarioParams(), description="optimistic scenario")

    @model_validator(mode="after")
    def _lengths(self):
        n = self.horizon
        for where, sc in (("", self), ("low.", self.low), ("high.", self.high)):
            for key in ("referral_rate_by_year", "uptake_by_year"):
                v = getattr(sc, key)
                if v is not None and len(v) not in (1, n):
                    raise ValueError(f"{where}{key} has {len(v)} values but the horizon is {n} "
                                     "year(s): give one value per year or a single value")
        return self

    @property
    def horizon(self) -> int:
        """Years of the budget impact analysis."""
        return self.years or len(self.referral_rate_by_year)


class EconParams(_WithUptake):
    """Program costs and how the economics are judged (cost-benefit workbook)."""

    uptake: float = Field(1.0, gt=0, le=1, description="share of the intervention arm (referred "
                          "members in the claims default) who take part; keep 1 when the cost "
                          "effect was measured per member of that arm")
    uptake_sd: float = Field(0.0, ge=0, description="uncertainty of uptake (beta SD) in the PSA")
    coordination: float = Field(120.0, ge=0, description="$ per member of the intervention "
                                "arm (a referred member in the claims default): staff time")
    facilitation: float = Field(0.0, ge=0, description="$ per member of the "
                                "intervention arm: group facilitation")
    materials: float = Field(30.0, ge=0, description="$ per member of the intervention arm: "
                             "materials")
    fixed_startup: float = Field(25000.0, ge=0, description="$ one-off start-up cost")
    cost_uncertainty: float = Field(0.2, ge=0, description="coefficient of variation of the "
                                    "per-referred cost in the PSA")
    horizon_years: int = Field(1, ge=1, le=30, description="years over which savings and "
                               "recurring costs are counted")
    discount_rate: float = Field(0.03, ge=0, lt=1, description="annual discount rate")
    perspective: Literal["plan", "society"] = Field("plan", description="whose costs count")
    psa_draws: int = Field(5000, ge=100, le=1_000_000, description="Monte Carlo draws")
    joint_replicates: int = Field(100, ge=0, le=10_000, description="bootstrap replicates that "
                                  "refit the cost and ER models on the same resampled members, "
                                  "so the PSA draws saving and effect jointly (0: independent "
                                  "draws from each estimate's standard error)")
    wtp_max: float = Field(5000.0, gt=0, description="largest willingness to pay per ER visit "
                           "avoided shown ($)")
    wtp_values: Annotated[list[float], each(lambda x: x >= 0, "willingness to pay cannot be "
                                            "negative")] = Field(
        [0.0, 1000.0, 2000.0], min_length=1, description="willingness-"
                                    "to-pay values ($ per ER visit avoided) at which net monetary "
                                    "benefit is recorded")
    budget: BudgetParams = Field(BudgetParams(), description="budget impact for a named plan")


class PlanningParams(_Strict):
    """Study planning (planning workbook): could a study of this size see the drop?"""

    outcome: Literal["er_visits", "outpatient_mh_visits", "inpatient_days"] = Field(
        "er_visits", description="the count whose drop is to be detected")
    baseline_rate: float | None = Field(None, gt=0, description="events per member-year in "
                                        "the comparison arm (claims mode: estimated from the "
                                        "comparison arm's baseline window when not given)")
    dispersion: float | None = Field(None, ge=0, description="negative binomial dispersion k "
                                     "(Var = mu + k mu^2; 0 = Poisson); claims mode: estimated "
                                     "when not given")
    followup_years: float = Field(1.0, gt=0, le=10, description="follow-up per member")
    allocation: float = Field(1.0, gt=0, le=10, description="referred members per comparison member")
    relative_reduction: float = Field(0.18, gt=0, lt=1, description="the drop to detect, as a "
                                      "share of the comparison rate (0.18 = 18%)")
    members_per_arm: int = Field(2000, ge=2, description="comparison members available "
                                 "(the referred arm has allocation times as many)")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="two-sided significance level")
    power: float = Field(0.8, gt=0.05, lt=1, description="target power")
    method: Literal[1, 2, 3] = Field(3, description="Zhu & Lakkis (2014) variance under the "
                                     "null: 1 true rates, 2 control rate, 3 pooled rate")


class NegativeControlParams(_Strict):
    """Negative-control outcomes: outcomes the program cannot plausibly change."""

    codes: list[str] | None = Field(
        None, description="claims: condition codes (values of `column` in the encounters "
        "table); each gives one negative-control outcome, the follow-up visits with a line "
        "carrying the code. Default: the conditions recorded with a synthetic plan; none "
        "for other data")
    column: str = Field("condition", description="claims: the encounters column that holds "
                        "the condition (diagnosis group) code")
    outcomes: list[str] = Field(default_factory=list, description="outcome columns used as "
                                "negative controls as they are (claims: member x window "
                                "columns such as primary_care_visits; person mode: columns "
                                "of the person file, loaded with it)")
    count: bool = Field(True, description="the controls are counts (rate ratios, with "
                        "member-months as exposure when there are any); false: differences")


class DesignParams(_Strict):
    """Confounding control of the cohort-balance workbook (matching, weighting or
    regression), its diagnostics, and the negative controls that calibrate it."""

    method: Literal["match", "ipw", "regression"] = Field(
        "match", description="nearest-neighbour propensity-score matching, inverse-"
        "probability (or overlap) weighting, or outcome regression on the covariates")
    estimand: Literal["ATT", "ATE", "ATO"] | None = Field(
        None, description="whose effect: the referred (ATT), everyone (ATE) or the members "
        "most alike between arms (ATO, overlap weights); default ATT for match, ATE for ipw "
        "and regression")
    covariates: list[str] | None = Field(
        None, description="terms the propensity model uses when it should differ from the "
        "outcome models, each a column as written, log1p(column) or C(column); a text column "
        "enters as C(column) (default: the study's adjustment set, study.covariates)")
    formula: str | None = Field(
        None, description="propensity model as a formula right-hand side instead of "
        "covariates, e.g. 'C(sex) + age + I(age**2)' (C(): categories, I(): arithmetic)")
    caliper: float | None = Field(0.2, gt=0, description="match: largest allowed distance, "
                                  "in standard deviations of the matching distance (the "
                                  "logit of the propensity score by default; null: none)")
    distance: Literal["logit", "ps"] = Field("logit", description="match on the logit of the "
                                             "propensity score or on the score itself")
    ratio: int = Field(1, ge=1, le=10, description="match: comparison members per referred member")
    replace: bool = Field(False, description="match: a comparison member may serve several")
    exact: list[str] = Field(default_factory=list, description="match: columns on which "
                             "matched members must agree exactly")
    trim: float | None = Field(None, gt=0.5, lt=1, description="ipw: cap weights at this "
                               "quantile, e.g. 0.99 (null: no trimming)")
    stabilize: bool = Field(True, description="ipw: stabilised ATE weights")
    outcome_types: dict[str, Literal["count", "continuous", "binary", "cost"]] = Field(
        default_factory=dict, description="outcome -> kind, where the default is wrong (the "
        "same as study.outcomes.<name>.kind, which wins; see there for the defaults)")
    max_smd: float = Field(0.1, gt=0, le=1, description="diagnostic: largest |standardised "
                           "mean difference| after adjustment that passes")
    min_equipoise: float = Field(0.5, ge=0, le=1, description="diagnostic: share of each arm "
                                 "with preference score in [0.3, 0.7] that passes")
    min_ess_share: float = Field(0.1, ge=0, le=1, description="diagnostic: smallest effective "
                                 "sample size of an arm, as a share of its members, that passes")
    max_ease: float = Field(0.25, gt=0, description="diagnostic: largest expected absolute "
                            "systematic error (log scale, from the negative controls) that passes")
    negative_controls: NegativeControlParams = Field(
        NegativeControlParams(), description="outcomes the program cannot change")

    @model_validator(mode="after")
    def _options_fit_method(self):
        # options changed from their defaults (a validated file dumps every key, so only
        # values that differ from the default can show the user meant them)
        fields = type(self).model_fields
        changed = [k for k in ("caliper", "distance", "ratio", "replace", "exact", "trim",
                               "stabilize")
                   if getattr(self, k) != fields[k].get_default(call_default_factory=True)]
        match_only = [k for k in changed if k in ("caliper", "distance", "ratio", "replace", "exact")]
        ipw_only = [k for k in changed if k in ("trim", "stabilize")]
        if self.method != "match" and match_only:
            raise ValueError(f"design.{', design.'.join(match_only)} only apply to method "
                             f"'match', not '{self.method}'; remove them or set method: match")
        if self.method != "ipw" and ipw_only:
            raise ValueError(f"design.{', design.'.join(ipw_only)} only apply to method 'ipw', "
                             f"not '{self.method}'; remove them or set method: ipw")
        if self.method == "match" and self.estimand not in (None, "ATT"):
            raise ValueError(f"design.estimand '{self.estimand}' cannot be estimated by "
                             "matching referred members to comparison members (that gives the "
                             "ATT); use method: ipw for the ATE or ATO")
        if self.method == "regression" and self.estimand not in (None, "ATE"):
            raise ValueError(f"design.estimand '{self.estimand}' is not what regression "
                             "estimates (a conditional effect, read as the ATE); use method: "
                             "ipw")
        if self.covariates is not None and self.formula is not None:
            raise ValueError("give design.covariates or design.formula, not both (the formula "
                             "names its columns itself)")
        if self.covariates is not None and not self.covariates:
            raise ValueError("design.covariates is empty; leave it out for the default set")
        if self.formula is not None:
            formula_names(self.formula)   # raises ValueError on a formula that cannot parse
        return self

    @property
    def resolved_estimand(self) -> str:
        """The estimand with its default filled in."""
        return self.estimand or ("ATT" if self.method == "match" else "ATE")


class OutcomeParams(_Strict):
    """What one outcome is and how it is read (every key optional: the spec's defaults
    fill the rest, see docs/params.md and :mod:`evalkit.analysis.spec`)."""

    kind: Literal["count", "cost", "continuous", "binary", "time_to_event"] | None = Field(
        None, description="count (rates per member-month, rate ratios), cost (two-part "
        "model, dollar differences), continuous, binary or time_to_event (default: claims "
        "outcomes as built in; person mode: count with an exposure column or whole numbers "
        ">= 0, else continuous)")
    label: str | None = Field(None, description="the reader's name for the outcome")
    unit: str | None = Field(None, description="what one unit of the outcome is, e.g. visits, "
                             "days, dollars, kg")
    good: Literal["lower", "higher"] | None = Field(
        None, description="which direction is good (default lower: less use of care)")
    primary: Literal["adjusted", "design", "crude", "prepost", "its", "survival"] | None = Field(
        None, description="the analysis whose estimate is the outcome's primary one on each "
        "scale (default adjusted; survival for time to event)")


class StudyParams(_Strict):
    """What the study is: its question, its arms, its outcomes and what it adjusts for."""

    question: str | None = Field(None, description="the question the study answers "
                                 "(default: the title)")
    intervention: str | None = Field(None, description="label of the intervention arm, e.g. "
                                     "'12-step-oriented programs' (default claims mode: "
                                     "'referred to self-help groups'; person mode: the "
                                     "treated value)")
    comparison: str | None = Field(None, description="label of the comparison arm, e.g. "
                                   "'cognitive-behavioral programs' (default claims mode: "
                                   "'not referred')")
    unit: str | None = Field(None, description="who is compared: members, patients, groups "
                             "(default: members in claims mode, people in person mode)")
    randomized: bool = Field(False, description="assignment to the arms was randomized")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="1 - confidence level of the "
                         "workbooks' intervals (0.05: 95% intervals)")
    outcomes: dict[str, OutcomeParams] = Field(
        default_factory=dict, description="outcome name -> kind, label, unit, good, primary "
        "(only where the defaults are wrong)")
    covariates: list[str] | None = Field(
        None, description="the adjustment set as terms, each a column as written "
        "(baseline_age, log1p_baseline_cost), log1p(column) or C(column); used by the "
        "propensity and the outcome models unless design.covariates or design.formula say "
        "otherwise (default claims mode: age_at_index, female, log1p of the baseline use and "
        "cost, and the members table's other numeric columns as written; person mode: "
        "data.person.covariates as written)")

    @field_validator("covariates")
    @classmethod
    def _terms(cls, v):
        if v is None:
            return v
        if not v:
            raise ValueError("study.covariates is empty; leave it out for the default set")
        for t in v:
            parse_term(t)
        return v


class ReportParams(_Strict):
    public: bool = Field(False, description="outputs are meant for the public: after the "
                         "workbooks run, every output (not work/) is scanned for member ids, "
                         "dates of service, secrets and cells (or shares) of fewer than "
                         "min_cell people, and the run fails if any is found")
    min_cell: int = Field(11, ge=1, description="smallest count of people shown in public "
                          "output; a public run may not go below 11 (the CMS cell-size "
                          "rule), an internal one may")
    audience: Literal["hmo", "research", "clearinghouse"] = Field(
        "hmo", description="who the brief (brief.html, brief.pdf) is written for: plan "
        "leadership (PMPM, ROI, budget impact), researchers (methods, diagnostics, every "
        "estimate table) or a clearinghouse (plain language, referral guidance)")
    show_code: bool = Field(False, description="keep the workbooks' code cells in their "
                            "HTML exports (for researchers); by default the HTML shows "
                            "only the prose, tables and figures a reader needs")

    @model_validator(mode="after")
    def _public_floor(self):
        if self.public and self.min_cell < PUBLIC_MIN_CELL:
            raise ValueError(f"min_cell {self.min_cell} is below {PUBLIC_MIN_CELL}, the "
                             "smallest allowed for a public run (cells of 1 to 10 people are "
                             "never published); raise it, or set public: false for an "
                             "internal run")
        return self
