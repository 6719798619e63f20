"""The ``data``, ``windows`` and ``engine`` sections: where the data are and how they
map onto the contract, the study windows, and the database engine."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from ..data.contract import ARMS, CLAIMS_TABLES
from .base import MEMORY_UNITS, ONTO_CATEGORIES, TableName, _MEMORY_SIZE, _Strict


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
    visit_concepts: Annotated[dict[int, str], ONTO_CATEGORIES] = Field(
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
    class_map: Annotated[dict[str, str], ONTO_CATEGORIES] = Field(
        default_factory=dict, description="ENCOUNTERCLASS -> "
                                      "contract category, over the built-in map")
    mh_codes: list[str] | None = Field(None, description="SNOMED codes (CODE or REASONCODE) "
                                       "of mental-health encounters (default: a built-in list)")
    amount: Literal["TOTAL_CLAIM_COST", "BASE_ENCOUNTER_COST"] = Field(
        "TOTAL_CLAIM_COST", description="encounters.csv column used as the allowed amount")


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
    category_map: Annotated[dict[str, str], ONTO_CATEGORIES] = Field(
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
                                     "disk beyond it (unset: half of the machine's memory, at "
                                     "most 2 GiB)")
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
