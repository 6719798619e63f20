"""Run parameters: one validated object, checked before any work starts.

A params file is YAML. Every key is checked: an unknown key, a wrong type or a bad value
is a :class:`~evalkit.errors.ParamsError` that names the key (dotted) and what is
allowed. Overrides given as ``--set data.members=100000`` are applied to the raw mapping
*before* validation, so they are checked the same way.
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .catalog import BY_NAME, WORKBOOKS, default_workbooks
from .data.contract import ARMS, CATEGORIES, CLAIMS_TABLES
from .data.synthetic_person import PERSON_SCENARIOS
from .errors import ParamsError
from .privacy import redact_params
from .terms import formula_names, parse_term, term_columns


TableName = Literal["members", "enrollment", "encounters", "exposure"]

#: Units ``engine.memory_limit`` accepts (DuckDB's).
MEMORY_UNITS = ("B", "KB", "MB", "GB", "TB", "KiB", "MiB", "GiB", "TiB")
_MEMORY_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(" + "|".join(MEMORY_UNITS) + r")\s*",
                          re.IGNORECASE)
#: Smallest ``report.min_cell`` of a public run (the CMS cell-size rule: 1 to 10 people
#: are never shown). Internal runs may set a lower value.
PUBLIC_MIN_CELL = 11
#: Largest params file read, in bytes: a real params file is a few kilobytes.
MAX_PARAMS_BYTES = 1_000_000
#: Key of the run id the runner adds to ``params.json``; removed before validation.
RUN_ID_KEY = "run_id"


def _contract_categories(mapping: dict, key: str) -> dict:
    """A mapping onto the contract's categories: every target must be one of them."""
    bad = {k: c for k, c in mapping.items() if c not in CATEGORIES}
    if bad:
        raise ValueError(f"{key} maps onto unknown categories {bad}; "
                         f"allowed: {', '.join(CATEGORIES)}")
    return mapping


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PersonParams(_Strict):
    """Person-level mode: one row per member with outcomes already computed."""

    path: str | None = Field(None, description="CSV, Parquet or DuckDB file with one row per "
                             "member; leave out with a synthetic person-level scenario "
                             "(data.scenario: support_group_survival or group_types), whose "
                             "file is written into the run's work folder")
    table: str | None = Field(None, description="table name when path is a DuckDB database")
    id: str | None = Field(None, description="member id column (optional)")
    treatment: str | None = Field(None, description="column holding the arm (two-arm "
                                  "workbooks); may be left out when `groups` is given")
    treated_value: Any = Field(1, description="value of `treatment` that marks the self-help "
                               "arm, compared by value (1, 1.0, '1' and true are one value)")
    outcomes: list[str] = Field(default_factory=list, description="count or cost outcome "
                                "columns (needed by utilization, costs and cost_benefit)")
    exposure: str | None = Field(None, description="member-months (or person-time) column")
    covariates: list[str] = Field(default_factory=list, description="columns to adjust for")
    signed_outcomes: list[str] = Field(default_factory=list, description="outcomes that may be "
                                       "negative (e.g. a change in weight); other outcomes' "
                                       "negative values are quarantined")
    duration: str | None = Field(None, description="time-to-event: follow-up time column "
                                 "(time to the event or to censoring, >= 0)")
    event: str | None = Field(None, description="time-to-event: 1 = the event happened at "
                              "`duration`, 0 = censored (still event-free then)")
    duration_unit: str = Field("months", description="unit of `duration`, used in labels")
    groups: str | None = Field(None, description="column of a k-level grouping (e.g. a "
                               "group's leadership type) compared by the group_comparison "
                               "workbook")
    people: str | None = Field(None, description="when each row is a group of people: the "
                               "column holding its number of people; small-cell suppression "
                               "then counts these people, not rows")

    @model_validator(mode="after")
    def _roles(self):
        if self.treatment is None and self.groups is None:
            raise ValueError("data.person needs `treatment` (a two-arm comparison) or `groups` "
                             "(a k-group comparison)")
        if (self.duration is None) != (self.event is None):
            raise ValueError("data.person: give `duration` and `event` together (time to the "
                             "event or censoring, and 1 = event / 0 = censored)")
        if not self.outcomes and self.duration is None:
            raise ValueError("data.person needs `outcomes` (count or cost columns) or "
                             "`duration` and `event` (time to an event)")
        roles = [c for c in (self.treatment, self.groups, self.duration, self.event) if c]
        if len(set(roles)) < len(roles):
            raise ValueError(f"data.person: treatment, groups, duration and event must be "
                             f"different columns (got {roles})")
        return self


class OmopParams(_Strict):
    """data.source omop: an OMOP CDM v5.4 database (a DuckDB file) read as claims."""

    cdm_schema: str | None = Field(None, description="schema of data.database holding the "
                                   "CDM tables (default: main)")
    enrollment: Literal["observation_period", "payer_plan_period"] = Field(
        "observation_period", description="table whose periods are the coverage spells")
    visit_concepts: dict[int, str] = Field(
        default_factory=dict, description="visit_concept_id -> contract category, added to "
        "9201 inpatient, 9202 outpatient, 9203 er, 262 er+inpatient; other visits are "
        "quarantined as unknown_category")
    er_inpatient: Literal["inpatient", "er"] = Field(
        "inpatient", description="category of concept 262 (an ER visit that led to an admission)")
    mh_condition_snomed: list[str] = Field(
        default_factory=lambda: ["74732009"], description="SNOMED codes (and, with "
        "concept_ancestor, their descendants) that make an outpatient visit mental-health")
    mh_condition_concepts: list[int] = Field(default_factory=list, description="condition "
                                             "concept ids that make an outpatient visit mental-health")
    mh_specialty_concepts: list[int] = Field(default_factory=list, description="provider "
                                             "specialty concept ids of mental-health visits")
    exposure_file: str | None = Field(None, description="CSV/Parquet with member_id (person_id), "
                                      "group, index_date; or use exposure_cohorts")
    exposure_cohort_table: str = Field("cohort", description="cohort table in the CDM schema")
    exposure_cohorts: dict[Literal["self_help", "control"], int] = Field(
        default_factory=dict, description="arm -> cohort_definition_id; the cohort start "
        "date is the index date")

    @field_validator("visit_concepts")
    @classmethod
    def _visit_categories(cls, v):
        return _contract_categories(v, "visit_concepts")


class SyntheaParams(_Strict):
    """data.source synthea: a Synthea CSV export read as claims."""

    folder: str = Field(description="the export's csv folder (patients.csv, encounters.csv, "
                        "payer_transitions.csv)")
    exposure_file: str = Field(description="CSV/Parquet with member_id (patient Id), group, "
                               "index_date")
    enrollment: Literal["payer_transitions", "encounters"] = Field(
        "payer_transitions", description="coverage from payer_transitions.csv, or from each "
        "patient's first to last encounter")
    payers: list[str] = Field(default_factory=list, description="payer Ids whose coverage "
                              "counts (default: every payer but NO_INSURANCE)")
    class_map: dict[str, str] = Field(default_factory=dict, description="ENCOUNTERCLASS -> "
                                      "contract category, over the built-in map")
    mh_codes: list[str] | None = Field(None, description="SNOMED codes (CODE or REASONCODE) "
                                       "of mental-health encounters (default: a built-in list)")
    amount: Literal["TOTAL_CLAIM_COST", "BASE_ENCOUNTER_COST"] = Field(
        "TOTAL_CLAIM_COST", description="encounters.csv column used as the allowed amount")

    @field_validator("class_map")
    @classmethod
    def _class_categories(cls, v):
        return _contract_categories(v, "class_map")


class DataParams(_Strict):
    source: Literal["synthetic", "files", "duckdb", "omop", "synthea"] = Field(
        "synthetic", description="built-in synthetic plan, your files, a DuckDB database, "
        "an OMOP CDM database (DuckDB file) or a Synthea CSV export")
    scenario: str = Field("demo", description="synthetic: demo, humphreys_moos or healthwise_er; "
                          "person mode: support_group_survival or group_types")
    members: int | None = Field(None, gt=0, description="synthetic: number of members")
    scenario_options: dict[str, Any] = Field(default_factory=dict,
                                             description="synthetic: scenario overrides")
    plant_problems: bool = Field(False, description="synthetic: add a known number of bad "
                                 "rows (duplicates, claims outside coverage, ...) to show the checks")
    tables: dict[TableName, str] = Field(default_factory=dict,
                                         description="files: path of each contract table; "
                                                     "duckdb: table name of each")
    database: str | None = Field(None, description="duckdb: path of the database file")
    encryption_key: str | None = Field(
        None, description="duckdb: key of an encrypted database file; write it as "
        "${env:NAME} to keep it out of the params file; it never appears in any output")
    columns: dict[TableName, dict[str, str]] = Field(
        default_factory=dict, description="contract role -> your column name, per table")
    category_map: dict[str, str] = Field(
        default_factory=dict, description="your category code -> contract category")
    group_map: dict[str, str] = Field(
        default_factory=dict, description="your group label -> self_help or control")
    date_format: str | None = Field(None, description="strptime format of dates in CSV files")
    max_line_amount: float = Field(10_000_000, gt=0, description="claim lines with an amount "
                                   "above this are quarantined as absurd (placeholders, unit errors)")
    max_invalid_dates: float = Field(
        0.01, ge=0, le=0.5, description="share of a date column's values that may be "
        "unreadable (an impossible date such as 2023-02-30): up to it those rows are "
        "quarantined as invalid_date and the run goes on; above it the load stops, "
        "suggesting data.date_format. Claim-line end dates count on inpatient lines only "
        "(other categories do not use them)")
    encoding: Literal["utf-8", "utf-16", "latin-1"] = Field(
        "utf-8", description="text encoding of CSV files (latin-1 for many files saved by "
        "older spreadsheet programs)")
    person: PersonParams | None = None
    omop: OmopParams | None = None
    synthea: SyntheaParams | None = None

    @field_validator("category_map")
    @classmethod
    def _categories(cls, v):
        return _contract_categories(v, "category_map")

    @field_validator("group_map")
    @classmethod
    def _groups(cls, v):
        bad = {k: g for k, g in v.items() if g not in ARMS}
        if bad:
            raise ValueError(f"group_map maps onto unknown arms {bad}; allowed: {', '.join(ARMS)}")
        return v

    @field_validator("columns")
    @classmethod
    def _roles(cls, v):
        for table, mapping in v.items():
            roles = set(CLAIMS_TABLES[table].names)
            bad = sorted(set(mapping) - roles)
            if bad:
                raise ValueError(f"columns.{table}: unknown role(s) {bad}; "
                                 f"roles of {table}: {', '.join(sorted(roles))}")
        return v


class WindowParams(_Strict):
    baseline_days: int = Field(365, gt=0, le=3660, description="days before the index date")
    followup_days: int = Field(365, gt=0, le=3660, description="days from the index date on")
    require_enrolled_at_index: bool = Field(True, description="analyse only members covered "
                                            "on their index date")
    min_followup_months: float = Field(0.0, ge=0, description="exclude members with less follow-up")


class EngineParams(_Strict):
    name: Literal["duckdb", "spark"] = Field(
        "duckdb", description="engine of the member x window aggregation: embedded DuckDB, "
        "or Apache Spark (same SQL, translated; needs pyspark and Java 17+)")
    threads: int | None = Field(None, gt=0, description="engine threads (default: all cores)")
    memory_limit: str | None = Field(None, description="e.g. '3GB' (a positive size with a "
                                     "unit: KB, MB, GB, TB or KiB ... TiB); DuckDB spills to "
                                     "disk beyond it (unset: half of the machine's memory)")
    spark_master: str = Field("local[2]", description="spark: `local[N]` (N cores of this "
                              "machine) or a cluster URL such as spark://host:7077 or yarn")
    spark_conf: dict[str, str | bool | int | float] = Field(
        default_factory=dict, description="spark: extra Spark settings, e.g. "
        "{spark.executor.memory: 4g, spark.sql.shuffle.partitions: 64}")

    @field_validator("memory_limit")
    @classmethod
    def _memory_limit(cls, v):
        if v is None:
            return v
        m = _MEMORY_SIZE.fullmatch(str(v))
        if not m or float(m[1]) <= 0:
            raise ValueError(f"must be a positive size with a unit, e.g. '3GB' or '512MiB' "
                             f"(units: {', '.join(MEMORY_UNITS)})")
        return f"{m[1]}{m[2].upper().replace('IB', 'iB')}"


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
    referral_rate_by_year: list[float] | None = Field(
        None, min_length=1, max_length=5, description="share of eligible members referred, "
        "one value per year or one for all (default: as in the base case)")
    uptake_by_year: list[float] | None = Field(
        None, min_length=1, max_length=5, description="share of referred members who take "
        "part, per year or one for all (default: as in the base case)")

    @field_validator("referral_rate_by_year", "uptake_by_year")
    @classmethod
    def _shares(cls, v):
        if v is not None and any(not 0 <= x <= 1 for x in v):
            raise ValueError(f"every value must be a share between 0 and 1, got {v}")
        return v


class BudgetParams(_Strict):
    """Budget impact for a named plan (ISPOR: Mauskopf et al. 2007; Sullivan et al. 2014):
    each year's programme cost, savings and net impact, undiscounted by default."""

    plan_name: str = Field("an illustrative plan of 100,000 members (set econ.budget)",
                           description="the plan the budget is for, shown in titles")
    plan_members: int = Field(100_000, gt=0, description="members enrolled in the plan")
    prevalence: float = Field(0.02, ge=0, le=1, description="share of plan members with the "
                              "condition, i.e. eligible for referral")
    referral_rate_by_year: list[float] = Field(
        [0.1, 0.2, 0.3], min_length=1, max_length=5, description="share of eligible members "
        "referred each year (1 to 5 values, or one value for every year)")
    uptake_by_year: list[float] | None = Field(
        None, min_length=1, max_length=5, description="share of referred members who take "
        "part each year (default: econ.uptake every year)")
    years: int | None = Field(None, ge=1, le=5, description="horizon in years (default: the "
                              "length of referral_rate_by_year)")
    discount_rate: float = Field(0.0, ge=0, lt=1, description="0: undiscounted, as the ISPOR "
                                 "reports advise for budget impact")
    low: BudgetScenarioParams = Field(BudgetScenarioParams(), description="pessimistic scenario")
    high: BudgetScenarioParams = Field(BudgetScenarioParams(), description="optimistic scenario")

    @field_validator("referral_rate_by_year", "uptake_by_year")
    @classmethod
    def _shares(cls, v):
        if v is not None and any(not 0 <= x <= 1 for x in v):
            raise ValueError(f"every value must be a share between 0 and 1, got {v}")
        return v

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


def _check_beta(mean: float, sd: float, name: str = "uptake") -> None:
    """A share drawn from a beta distribution needs sd^2 < mean (1 - mean)."""
    if sd > 0 and (mean >= 1 or sd ** 2 >= mean * (1 - mean)):
        raise ValueError(f"{name}_sd {sd:g} is too large for {name} {mean:g} (a beta "
                         f"distribution needs sd^2 < {name} (1 - {name}); an {name} of 1 "
                         f"cannot vary: set {name}_sd to 0)")


class EconParams(_Strict):
    """Program costs and how the economics are judged (cost-benefit workbook)."""

    uptake: float = Field(1.0, gt=0, le=1, description="share of referred members who take "
                          "part; keep 1 when the cost effect was measured per referred member")
    uptake_sd: float = Field(0.0, ge=0, description="uncertainty of uptake (beta SD) in the PSA")
    coordination: float = Field(120.0, ge=0, description="$ per referred member: staff time")
    facilitation: float = Field(0.0, ge=0, description="$ per referred member: group facilitation")
    materials: float = Field(30.0, ge=0, description="$ per referred member: materials")
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
                           "averted shown ($)")
    wtp_values: list[float] = Field([0.0, 1000.0, 2000.0], min_length=1, description="willingness-"
                                    "to-pay values ($ per ER visit averted) at which net monetary "
                                    "benefit is recorded")
    budget: BudgetParams = Field(BudgetParams(), description="budget impact for a named plan")

    @model_validator(mode="after")
    def _uptake(self):
        _check_beta(self.uptake, self.uptake_sd)
        return self

    @field_validator("wtp_values")
    @classmethod
    def _wtp(cls, v):
        if any(x < 0 for x in v):
            raise ValueError(f"willingness to pay cannot be negative, got {v}")
        return v


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


#: Effect measures of summary mode (as metafor::escalc names them); ROM = ratio of means.
Measure = Literal["RR", "OR", "RD", "MD", "SMD", "IRR", "ROM"]
#: Measures analysed on the log scale (their published value is a ratio).
RATIO_MEASURES = ("RR", "OR", "IRR", "ROM")
#: What each measure needs from both arms (``events`` may be given as ``percent``).
MEASURE_NEEDS = {"RR": ("n", "events"), "OR": ("n", "events"), "RD": ("n", "events"),
                 "MD": ("n", "mean", "sd"), "SMD": ("n", "mean", "sd"),
                 "ROM": ("n", "mean", "sd"), "IRR": ("events", "person_time")}


def _round_half_up(x: float) -> int:
    return int(x + 0.5)


class ArmFigures(_Strict):
    """One arm's published figures; give the ones the study's measure needs."""

    n: int | None = Field(None, gt=0, description="people in the arm")
    mean: float | None = Field(None, description="mean per person (MD, SMD, ROM): visits "
                               "per patient, dollars per patient...")
    sd: float | None = Field(None, ge=0, description="standard deviation per person (MD, "
                             "SMD, ROM); when the source does not publish it, give an assumed "
                             "value and set the study's sd_assumed")
    events: float | None = Field(None, ge=0, description="people with the outcome (RR, OR, "
                                 "RD) or events counted (IRR)")
    percent: float | None = Field(None, ge=0, le=100, description="RR, OR, RD: the published "
                                  "percentage with the outcome when the count is not "
                                  "published; events = percent x n / 100, rounded")
    person_time: float | None = Field(None, gt=0, description="person-years at risk (IRR)")

    @model_validator(mode="after")
    def _one_count(self):
        if self.events is not None and self.percent is not None:
            raise ValueError("give events or percent, not both")
        if self.events is not None and self.n is not None and self.events > self.n and \
                self.person_time is None:
            raise ValueError(f"events ({self.events:g}) exceed n ({self.n}): for counts of "
                             "visits use person_time and measure IRR")
        return self

    @property
    def count(self) -> float | None:
        """Events, or the published percentage turned into a whole count."""
        if self.events is not None:
            return self.events
        if self.percent is not None and self.n is not None:
            return float(_round_half_up(self.percent * self.n / 100))
        return None


class ReportedEffect(_Strict):
    """An effect the source publishes already computed (no per-arm figures)."""

    estimate: float = Field(description="the published effect on its natural scale: a ratio "
                            "for RR, OR, IRR, ROM (e.g. 0.82 for an 18% drop), a difference "
                            "for RD, MD, SMD")
    ci_low: float | None = Field(None, description="lower limit of its 95% interval")
    ci_high: float | None = Field(None, description="upper limit of its 95% interval")
    std_error: float | None = Field(None, gt=0, description="instead of an interval: its "
                                    "standard error (of the log for ratio measures)")
    assumed: str | None = Field(None, description="what had to be assumed because the source "
                                "does not publish it (e.g. the interval); shown with the result")

    @model_validator(mode="after")
    def _spread(self):
        has_ci = self.ci_low is not None or self.ci_high is not None
        if has_ci == (self.std_error is not None):
            raise ValueError("give either ci_low and ci_high or std_error (the effect's "
                             "uncertainty; if the source gives none, assume one and say so "
                             "in `assumed`)")
        if has_ci:
            if self.ci_low is None or self.ci_high is None:
                raise ValueError("give both ci_low and ci_high")
            if not self.ci_low < self.estimate < self.ci_high:
                raise ValueError(f"need ci_low < estimate < ci_high, got {self.ci_low:g}, "
                                 f"{self.estimate:g}, {self.ci_high:g}")
        return self


class StudyFigures(_Strict):
    """One study's published figures for one outcome (self-help arm vs comparison)."""

    name: str = Field(min_length=1, description="short name shown in tables and plots")
    citation: str = Field("", description="where the figures come from")
    outcome: str = Field(min_length=1, description="what was measured: er_visits, "
                         "outpatient_mh_visits, inpatient_days, total_cost or your own name; "
                         "studies with the same outcome are pooled")
    measure: Measure = Field(description="effect to compute: RR, OR, RD (people with the "
                             "outcome), MD, SMD, ROM (ratio of means) from means and SDs, IRR "
                             "from events and person-time")
    treated: ArmFigures | None = Field(None, description="the self-help arm's figures")
    control: ArmFigures | None = Field(None, description="the comparison arm's figures")
    reported: ReportedEffect | None = Field(None, description="the effect as published, when "
                                            "per-arm figures are not available")
    sd_assumed: bool = Field(False, description="the SDs are not published and the values "
                             "given are assumptions; the synthesis workbook shows how the "
                             "result moves when they are scaled (summary.sd_sensitivity)")

    @model_validator(mode="after")
    def _figures(self):
        who = f"study '{self.name}' ({self.measure})"
        if self.reported is not None:
            if self.treated is not None or self.control is not None:
                raise ValueError(f"{who}: give per-arm figures (treated, control) or the "
                                 "reported effect, not both")
            r = self.reported
            if self.measure in RATIO_MEASURES and (r.estimate <= 0 or (r.ci_low or 1) <= 0):
                raise ValueError(f"{who}: a {self.measure} and its interval must be > 0")
            return self
        missing = [a for a in ("treated", "control") if getattr(self, a) is None]
        if missing:
            raise ValueError(f"{who}: the {' and '.join(missing)} arm is missing; give both "
                             "arms' figures or a reported effect")
        needs = MEASURE_NEEDS[self.measure]
        for arm in ("treated", "control"):
            fig = getattr(self, arm)
            lacking = [k for k in needs
                       if (fig.count if k == "events" else getattr(fig, k)) is None]
            if lacking:
                alt = " (or percent)" if "events" in lacking and self.measure != "IRR" else ""
                raise ValueError(f"{who}: {arm} lacks {', '.join(lacking)}{alt}; "
                                 f"{self.measure} needs {', '.join(needs)} for both arms")
            if self.measure in ("MD", "SMD", "ROM") and fig.n < 2:
                raise ValueError(f"{who}: {arm}.n must be at least 2 for a mean and SD")
            if self.measure == "ROM" and fig.mean <= 0:
                raise ValueError(f"{who}: a ratio of means needs positive means "
                                 f"({arm}.mean = {fig.mean:g})")
        return self


class ProportionItem(_Strict):
    """A survey proportion: x of n people said or did something."""

    label: str = Field(min_length=1, description="what the proportion is, in words")
    x: int | None = Field(None, ge=0, description="people with the characteristic")
    percent: float | None = Field(None, ge=0, le=100, description="the published percentage "
                                  "when x is not published: x = percent x n / 100, rounded")
    n: int = Field(gt=0, description="people asked")
    group: str | None = Field(None, description="group the item belongs to (shown in tables)")
    assumed: str | None = Field(None, description="what was assumed to get x or n (shown "
                                "next to the figure)")

    @model_validator(mode="after")
    def _count(self):
        if (self.x is None) == (self.percent is None):
            raise ValueError(f"proportion '{self.label}': give x (a count) or percent, one of them")
        if self.x is not None and self.x > self.n:
            raise ValueError(f"proportion '{self.label}': x ({self.x}) is larger than n ({self.n})")
        return self

    @property
    def count(self) -> int:
        return self.x if self.x is not None else _round_half_up(self.percent * self.n / 100)


class ComparisonItem(_Strict):
    """Two proportions compared: first minus second."""

    label: str = Field(min_length=1, description="what is compared, in words")
    first: str = Field(description="label of an item of summary.proportions")
    second: str = Field(description="label of another item of summary.proportions")


class ProjectionOutcome(_Strict):
    outcome: str = Field(description="an outcome of summary.studies whose (pooled) ratio is "
                         "applied")
    label: str | None = Field(None, description="name shown (default: the outcome's)")
    baseline_per_member_year: float = Field(gt=0, description="visits, days or dollars per "
                                            "participating member per year in the target plan "
                                            "without the program")
    unit: Literal["visits", "days", "dollars"] = Field("visits", description="unit of the baseline")


class ProjectionParams(_Strict):
    """What the published effects would mean for a target plan."""

    plan: str = Field("target plan", description="name of the plan, shown in titles")
    members: int = Field(gt=0, description="members of the target plan")
    uptake: float = Field(gt=0, le=1, description="share of the plan's members expected to "
                          "take part in self-help groups after referral")
    uptake_sd: float = Field(0.0, ge=0, description="uncertainty of uptake (beta SD; 0: fixed)")
    outcomes: list[ProjectionOutcome] = Field(min_length=1, description="outcomes to project "
                                              "with the plan's baseline rates")
    draws: int = Field(10_000, ge=100, le=1_000_000, description="Monte Carlo draws")

    @model_validator(mode="after")
    def _uptake(self):
        _check_beta(self.uptake, self.uptake_sd)
        return self


class SummaryParams(_Strict):
    """Summary mode: published figures only (no member data)."""

    studies: list[StudyFigures] = Field(default_factory=list, description="published per-arm "
                                        "figures by study (synthesis workbook)")
    proportions: list[ProportionItem] = Field(default_factory=list, description="survey "
                                              "proportions (proportions workbook)")
    comparisons: list[ComparisonItem] = Field(default_factory=list, description="pairs of "
                                              "proportions to compare")
    projection: ProjectionParams | None = Field(None, description="project the effects onto "
                                                "a target plan")
    method: Literal["REML", "DL", "FE"] = Field("REML", description="pooling: random effects "
                                                "by REML or DerSimonian-Laird, or fixed effect")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="1 - confidence level")
    ci_method: Literal["wilson", "wilson_cc", "clopper_pearson", "jeffreys", "agresti_coull",
                       "wald"] = Field("wilson", description="interval for survey proportions")
    yates: bool = Field(False, description="Yates continuity correction in the chi-square test")
    sd_sensitivity: list[float] = Field([0.5, 1.0, 1.5, 2.0], min_length=1, description=(
        "factors applied to assumed SDs to show how the result depends on them"))

    @field_validator("sd_sensitivity")
    @classmethod
    def _factors(cls, v):
        if any(f <= 0 for f in v):
            raise ValueError(f"SD factors must be > 0, got {v}")
        return v

    @model_validator(mode="after")
    def _links(self):
        keys = [(s.name, s.outcome) for s in self.studies]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise ValueError(f"studies: one entry per study and outcome, repeated: {dup}")
        by_outcome: dict[str, set] = {}
        for s in self.studies:
            by_outcome.setdefault(s.outcome, set()).add(s.measure)
        mixed = {o: sorted(m) for o, m in by_outcome.items() if len(m) > 1}
        if mixed:
            raise ValueError(f"studies of one outcome must use one measure to be pooled: {mixed}")
        labels = [p.label for p in self.proportions]
        dup = sorted({n for n in labels if labels.count(n) > 1})
        if dup:
            raise ValueError(f"proportions: labels must be unique, repeated: {dup}")
        for c in self.comparisons:
            bad = [g for g in (c.first, c.second) if g not in labels]
            if bad:
                raise ValueError(f"comparison '{c.label}': {bad} not among the proportions' "
                                 f"labels ({', '.join(labels) or 'none given'})")
            if c.first == c.second:
                raise ValueError(f"comparison '{c.label}': first and second are the same item")
        if self.projection is not None:
            for o in self.projection.outcomes:
                if o.outcome not in by_outcome:
                    raise ValueError(f"projection outcome '{o.outcome}' has no study; outcomes "
                                     f"of summary.studies: {', '.join(by_outcome) or 'none'}")
                measure = next(iter(by_outcome[o.outcome]))
                if measure not in ("RR", "IRR", "ROM"):
                    raise ValueError(f"projection outcome '{o.outcome}': its studies use "
                                     f"{measure}; projecting onto a plan's baseline needs a "
                                     "ratio of rates or means (RR, IRR or ROM)")
        return self


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
    fill the rest, see docs/params.md and :mod:`evalkit.spec`)."""

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

    @model_validator(mode="after")
    def _public_floor(self):
        if self.public and self.min_cell < PUBLIC_MIN_CELL:
            raise ValueError(f"min_cell {self.min_cell} is below {PUBLIC_MIN_CELL}, the "
                             "smallest allowed for a public run (cells of 1 to 10 people are "
                             "never published); raise it, or set public: false for an "
                             "internal run")
        return self


class Params(_Strict):
    title: str = Field("Self-help referral evaluation", description="shown on every output")
    mode: Literal["claims", "person", "summary"] = Field(
        "claims", description="claims tables; one row per member with outcomes computed "
        "(person); or published per-arm figures, no member data (summary)")
    seed: int = Field(20240611, ge=0, description="fixes every random number of the run")
    data: DataParams = DataParams()
    windows: WindowParams = WindowParams()
    engine: EngineParams = EngineParams()
    report: ReportParams = ReportParams()
    models: ModelParams = ModelParams()
    study: StudyParams = StudyParams()
    design: DesignParams = DesignParams()
    econ: EconParams = EconParams()
    planning: PlanningParams = PlanningParams()
    summary: SummaryParams | None = Field(None, description="summary mode: published "
                                          "figures by study, survey proportions, projection")
    workbooks: list[str] = Field(default_factory=list,
                                 description="workbooks to run (default: every workbook "
                                             "for the mode); they run in the package's order")

    @model_validator(mode="before")
    @classmethod
    def _default_workbooks(cls, data):
        if isinstance(data, dict) and "workbooks" not in data:
            data = {**data, "workbooks": default_workbooks(data.get("mode", "claims"))}
            if data.get("mode") == "summary" and isinstance(data.get("summary"), dict):
                data["workbooks"] = _summary_workbooks(data["summary"], data["workbooks"])
        return data

    @field_validator("workbooks")
    @classmethod
    def _workbooks(cls, v):
        bad = [w for w in v if w not in WORKBOOKS]
        if bad:
            raise ValueError(f"unknown workbook(s) {bad}; available: {', '.join(WORKBOOKS)}")
        if not v:
            raise ValueError("at least one workbook is needed")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        d = self.data
        wrong = [w for w in self.workbooks if self.mode not in BY_NAME[w].modes]
        if wrong:
            raise ValueError(f"workbook(s) {wrong} cannot run in {self.mode} mode; for "
                             f"{self.mode} mode: {', '.join(default_workbooks(self.mode))}")
        pl = self.planning
        if "planning" in self.workbooks and self.mode != "claims" and \
                (pl.baseline_rate is None or pl.dispersion is None):
            raise ValueError(f"planning.baseline_rate and planning.dispersion are needed in "
                             f"{self.mode} mode (only claims have a baseline window to estimate "
                             "them from), e.g. baseline_rate: 0.35, dispersion: 1.5")
        if self.mode == "summary" and (self.summary is not None or self.workbooks != ["planning"]):
            # the planning workbook alone reads only the planning section
            _check_summary(self.summary, self.workbooks)
        elif self.summary is not None:
            raise ValueError(f"the summary section is read only in summary mode (this is "
                             f"{self.mode} mode); set mode: summary or remove it")
        if self.mode == "person":
            if d.person is None:
                raise ValueError("mode 'person' needs data.person (path, treatment, outcomes)")
            _check_person(d, self.workbooks)
        elif d.source == "synthetic" and d.scenario in PERSON_SCENARIOS:
            raise ValueError(f"data.scenario '{d.scenario}' is person-level data: set "
                             "mode: person and map its columns in data.person")
        elif d.source == "files":
            missing = [t for t in CLAIMS_TABLES if t not in d.tables]
            if missing:
                raise ValueError(f"data.source 'files' needs data.tables for {missing}")
        elif d.source == "duckdb":
            if not d.database:
                raise ValueError("data.source 'duckdb' needs data.database (path of the file)")
        elif d.source == "omop":
            if not d.database:
                raise ValueError("data.source 'omop' needs data.database (the CDM's DuckDB file)")
            o = d.omop or OmopParams()
            if not o.exposure_file and not o.exposure_cohorts:
                raise ValueError("data.source 'omop' needs data.omop.exposure_file or "
                                 "data.omop.exposure_cohorts (arm -> cohort_definition_id)")
        elif d.source == "synthea":
            if d.synthea is None:
                raise ValueError("data.source 'synthea' needs data.synthea (folder, exposure_file)")
        return self

    @model_validator(mode="after")
    def _design_columns(self):
        d = self.data.person
        if self.mode != "person" or d is None:
            return self
        loaded = {*d.covariates, *d.outcomes, *([d.exposure] if d.exposure else [])}
        stray = [c for c in d.signed_outcomes if c not in d.outcomes]
        if stray:
            raise ValueError(f"data.person.signed_outcomes {stray} are not in "
                             "data.person.outcomes; list each there too")
        ds = self.design
        used = formula_names(ds.formula) if ds.formula else list(ds.covariates or [])
        terms = term_columns(self.study.covariates or [])
        missing = [c for c in [*used, *ds.exact, *terms] if c not in d.covariates]
        if missing:
            raise ValueError(f"design or study.covariates use column(s) {missing} that are not in "
                             f"data.person.covariates; add them there so they are loaded")
        clash = [c for c in ds.negative_controls.outcomes if c in loaded or c == d.treatment]
        if clash:
            raise ValueError(f"design.negative_controls.outcomes {clash} are also outcomes, "
                             "covariates or the exposure; a negative control must be an "
                             "outcome the program cannot change")
        return self

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    def digest(self) -> str:
        """SHA-256 of the canonical JSON form of the validated params, secrets redacted
        (so the hash a run records matches its params.json)."""
        text = json.dumps(redact_params(self.to_dict())[0], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def _summary_workbooks(summary: dict, defaults: list[str]) -> list[str]:
    """Summary mode's default workbooks: those the summary section has figures for."""
    has = {"synthesis": bool(summary.get("studies")),
           "proportions": bool(summary.get("proportions") or summary.get("comparisons"))}
    return [w for w in defaults if has.get(w, True)] or defaults


def _check_summary(summary: "SummaryParams | None", workbooks: list[str]) -> None:
    if summary is None:
        raise ValueError("mode 'summary' needs a summary section: studies (published per-arm "
                         "figures) and/or proportions (survey counts); see docs/params.md")
    if "synthesis" in workbooks and not summary.studies:
        raise ValueError("workbook 'synthesis' needs summary.studies (published per-arm figures)")
    if "proportions" in workbooks and not (summary.proportions or summary.comparisons):
        raise ValueError("workbook 'proportions' needs summary.proportions (label, x, n)")
    if not summary.studies and not summary.proportions:
        raise ValueError("the summary section holds no figures: give studies or proportions")


#: Person-mode workbooks that compare k groups and need no two-arm `treatment`.
_K_GROUP_WORKBOOKS = ("group_comparison",)
#: Person-mode workbooks that need count or cost `outcomes`.
_OUTCOME_WORKBOOKS = ("utilization", "costs", "cost_benefit")


def _check_person(d: "DataParams", workbooks: list[str]) -> None:
    """Person mode: the data source and the roles each requested workbook needs."""
    p = d.person
    generated = d.source == "synthetic" and d.scenario in PERSON_SCENARIOS
    if generated and p.path:
        raise ValueError(f"data.person.path and the synthetic scenario '{d.scenario}' are two "
                         "sources: remove data.person.path to use the scenario, or set "
                         "data.source: files to read the file")
    if not generated and not p.path:
        raise ValueError("mode 'person' needs data.person.path (your file), or data.source: "
                         "synthetic with a person-level data.scenario "
                         f"({', '.join(PERSON_SCENARIOS)})")
    if generated and d.members is not None:
        raise ValueError(f"data.members does not apply to the person-level scenario "
                         f"'{d.scenario}'; its sizes are set in data.scenario_options")
    if p.treatment is None:
        two_arm = [w for w in workbooks if w not in _K_GROUP_WORKBOOKS]
        if two_arm:
            raise ValueError(f"workbook(s) {two_arm} compare two arms and need "
                             "data.person.treatment; without it list only "
                             f"{', '.join(_K_GROUP_WORKBOOKS)} in workbooks")
    if not p.outcomes:
        need = [w for w in workbooks if w in _OUTCOME_WORKBOOKS]
        if need:
            raise ValueError(f"workbook(s) {need} need data.person.outcomes (count or cost "
                             "columns)")
    if "survival" in workbooks and p.duration is None:
        raise ValueError("workbook 'survival' needs data.person.duration and data.person.event")
    if "group_comparison" in workbooks and p.groups is None:
        raise ValueError("workbook 'group_comparison' needs data.person.groups (the column "
                         "of the k-level grouping)")


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            parent = _model_at(e["loc"][:-1])
            allowed = list(parent.model_fields) if parent else []
            near = difflib.get_close_matches(str(e["loc"][-1]), allowed, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            lines.append(f"  {key}: unknown key{hint}; allowed here: "
                         f"{', '.join(allowed) or 'see docs/params.md'}")
        else:
            got = e.get("input")
            shown = f" (got {got!r})" if isinstance(got, (str, int, float, bool)) else ""
            lines.append(f"  {key}: {e['msg']}{shown}")
    return "invalid params:\n" + "\n".join(lines)


def _model_at(loc) -> type[BaseModel] | None:
    model: type[BaseModel] = Params
    for part in loc:
        if isinstance(part, int):      # an item of a list: same model as the list's
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        nxt = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if nxt is None:
            return None
        model = nxt
    return model


def apply_overrides(raw: dict, overrides: list[str] | dict | None) -> dict:
    """Apply ``KEY=VALUE`` overrides (dotted keys, YAML values) to a raw params mapping."""
    out = copy.deepcopy(raw)
    if not overrides:
        return out
    items = overrides.items() if isinstance(overrides, dict) else (_split(o) for o in overrides)
    for key, value in items:
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ParamsError(f"--set {key}: '{p}' is not a section, it holds {nxt!r}")
            node = nxt
        node[parts[-1]] = override_value(key, value) if isinstance(value, str) else value
    return out


class _AliasRefused(yaml.composer.ComposerError):
    """An anchor or alias in params YAML (see :class:`_NoAliasLoader`)."""


class _NoAliasLoader(yaml.SafeLoader):
    """YAML's safe loader without anchors and aliases (``&a`` / ``*a``): an alias lets
    a few lines expand to billions of nodes (a "billion laughs" bomb), and params never
    need one."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _AliasRefused(
                None, None, f"alias *{event.anchor} is not allowed in params (write the "
                "value out in full)", event.start_mark)
        event = self.peek_event()
        if getattr(event, "anchor", None):
            raise _AliasRefused(
                None, None, f"anchor &{event.anchor} is not allowed in params (write the "
                "value out in full)", event.start_mark)
        return super().compose_node(parent, index)


def safe_yaml(text: str, where: str):
    """Parse params YAML: safe types only, no anchors or aliases, at most
    ``MAX_PARAMS_BYTES``; a :class:`ParamsError` naming ``where`` otherwise."""
    if len(text) > MAX_PARAMS_BYTES:
        raise ParamsError(f"{where}: {len(text):,} characters, more than params may hold "
                          f"({MAX_PARAMS_BYTES:,})")
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise ParamsError(f"{where}: not valid YAML: {err}") from None


def override_value(key: str, text: str) -> Any:
    """The value of ``--set KEY=TEXT``: TEXT read as YAML, else TEXT itself.

    ``100000``, ``true``, ``0.5``, ``null``, ``[a, b]`` and ``{ED: er}`` are read as YAML.
    Text that YAML reads as something else than a scalar or a bracketed list or mapping
    (``Plan: 2023`` would be a mapping, ``- x`` a list), or cannot read at all
    (``%d/%m/%Y``), is kept as the plain string. A value that starts with ``[`` or ``{``
    must be valid YAML: a ParamsError names the key otherwise.

    >>> override_value("title", "Plan: 2023"), override_value("data.members", "2000")
    ('Plan: 2023', 2000)
    """
    if len(text) > MAX_PARAMS_BYTES:
        raise ParamsError(f"--set {key}: {len(text):,} characters, more than params may hold "
                          f"({MAX_PARAMS_BYTES:,})")
    flow = text.lstrip().startswith(("[", "{"))
    try:
        value = yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except _AliasRefused as err:
        raise ParamsError(f"--set {key}: {err.problem}") from None
    except yaml.YAMLError as err:
        if flow:
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ParamsError(f"--set {key}: {text!r} is not a valid YAML list or mapping "
                              f"({problem}); quote it to pass it as text") from None
        return text
    if isinstance(value, (dict, list)) and not flow:
        return text
    return value


def _split(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ParamsError(f"--set {item!r}: expected KEY=VALUE, e.g. --set data.members=100000")
    key, value = item.split("=", 1)
    if not key.strip():
        raise ParamsError(f"--set {item!r}: the key is empty")
    return key.strip(), value


def validate(raw: dict) -> Params:
    """Validate a raw mapping into :class:`Params`, or raise a ParamsError naming every bad key."""
    if not isinstance(raw, dict):
        raise ParamsError(f"params must be a mapping of keys to values, got {type(raw).__name__}")
    if RUN_ID_KEY in raw:            # params.json of a run: the id of the run that wrote it
        raw = {k: v for k, v in raw.items() if k != RUN_ID_KEY}
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(_format_errors(err)) from None


def load(path: str | Path | None = None, overrides: list[str] | dict | None = None,
         base_dir: Path | None = None) -> Params:
    """Read a YAML params file (or start from defaults), apply overrides, validate.

    Relative data paths in the file are resolved against the file's folder.
    """
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ParamsError(f"params file not found: {path}")
        size = path.stat().st_size
        if size > MAX_PARAMS_BYTES:
            raise ParamsError(f"{path}: {size:,} bytes, more than a params file may hold "
                              f"({MAX_PARAMS_BYTES:,}); is it the right file?")
        raw = safe_yaml(path.read_text(), str(path)) or {}
        base_dir = base_dir or path.resolve().parent
    params = validate(expand_env(apply_overrides(raw, overrides)))
    return resolve_paths(params, base_dir) if base_dir else params


_ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(raw, _key: str = ""):
    """Replace ``${env:NAME}`` in every string value by the environment variable NAME.

    This keeps secrets (an encryption key, a password) out of params files: write
    ``encryption_key: ${env:PLAN_DB_KEY}``. An unset variable is a ParamsError naming
    the key. Secret values are removed from every output of a run (see
    :func:`evalkit.privacy.redact_params`).
    """
    if isinstance(raw, dict):
        return {k: expand_env(v, f"{_key}.{k}" if _key else str(k)) for k, v in raw.items()}
    if isinstance(raw, list):
        return [expand_env(v, f"{_key}[{i}]") for i, v in enumerate(raw)]
    if isinstance(raw, str):
        missing = [n for n in _ENV_REF.findall(raw) if n not in os.environ]
        if missing:
            raise ParamsError(f"{_key}: environment variable(s) {', '.join(missing)} not set "
                              f"(the params refer to them as ${{env:NAME}})")
        return _ENV_REF.sub(lambda m: os.environ[m.group(1)], raw)
    return raw


def resolve_paths(params: Params, base_dir: Path) -> Params:
    """Make the data paths absolute, relative to ``base_dir`` (the params file's folder)."""
    d = params.data

    def fix(p: str | None) -> str | None:
        if p is None:
            return None
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else (base_dir / q).resolve())

    updates: dict[str, Any] = {}
    if d.source == "files":
        updates["tables"] = {k: fix(v) for k, v in d.tables.items()}
    if d.database:
        updates["database"] = fix(d.database)
    if d.person is not None:
        updates["person"] = d.person.model_copy(update={"path": fix(d.person.path)})
    if d.omop is not None and d.omop.exposure_file:
        updates["omop"] = d.omop.model_copy(update={"exposure_file": fix(d.omop.exposure_file)})
    if d.synthea is not None:
        updates["synthea"] = d.synthea.model_copy(update={
            "folder": fix(d.synthea.folder), "exposure_file": fix(d.synthea.exposure_file)})
    if not updates:
        return params
    return params.model_copy(update={"data": d.model_copy(update=updates)})


def schema_json() -> str:
    """The JSON Schema of a params file (pydantic's ``model_json_schema`` of
    :class:`Params`), as the text ``evalkit params-schema`` prints and
    ``docs/params.schema.json`` holds. Editors that read JSON Schema (VS Code's YAML
    extension, PyCharm) check a params file against it while it is written."""
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              **Params.model_json_schema()}
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def reference_markdown() -> str:
    """Every params key with its type, default and meaning, as a Markdown table
    (the source of docs/params.md)."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            key = f"{prefix}{name}"
            ann = field.annotation
            sub = next((c for c in (ann, *getattr(ann, "__args__", ()))
                        if isinstance(c, type) and issubclass(c, BaseModel)), None)
            if sub is not None and sub is not Params:
                walk(sub, key + ".")
                continue
            if getattr(ann, "__origin__", None) is Literal:
                kind = "one of " + ", ".join(map(str, ann.__args__))
            else:
                kind = getattr(ann, "__name__", None) or str(ann).replace("typing.", "")
            default = field.get_default(call_default_factory=True)
            shown = "(required)" if field.is_required() else f"`{json.dumps(default, default=str)}`"
            desc = (field.description or "").replace("|", "\\|")
            lines.append(f"| `{key}` | {kind.replace('|', ' or ')} | {shown} | {desc} |")

    walk(Params, "")
    return "\n".join(lines) + "\n"


REFERENCE_INTRO = (
    "# Params reference\n\n"
    "Every key a params file may hold. Unknown keys, wrong types and bad values are errors "
    "that name the key. Override any key with `--set KEY=VALUE` (dotted keys; the value is "
    "read as YAML, and kept as plain text when YAML would read it as anything but a number, "
    "a boolean, null, text or a bracketed list or mapping: `--set 'title=Plan: 2023'`, "
    "`--set data.date_format=%d/%m/%Y`). "
    "This page is generated from `evalkit/params.py` (`make docs`); a test keeps it current. "
    "The same schema as JSON Schema, for editors that check YAML files against one, is "
    "[params.schema.json](params.schema.json) (`evalkit params-schema`); with VS Code's YAML "
    "extension, for instance, a params file whose first line is "
    "`# yaml-language-server: $schema=<path to docs/params.schema.json>` is checked as it "
    "is written.\n\n")


def write_reference(path: str | Path, schema_path: str | Path | None = None) -> None:
    """Write docs/params.md: :data:`REFERENCE_INTRO` followed by :func:`reference_markdown`;
    and, when ``schema_path`` is given, the JSON Schema (:func:`schema_json`) there."""
    Path(path).write_text(REFERENCE_INTRO + reference_markdown())
    if schema_path is not None:
        Path(schema_path).write_text(schema_json())
