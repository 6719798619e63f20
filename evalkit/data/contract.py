"""The data contract: the tables evalkit reads, their columns and types.

This module only *describes* the contract; the checks that enforce it live in
:mod:`evalkit.data.checks`, so that the schema and the code that checks it stay apart.
See ``docs/data-contract.md`` for the prose version.
"""
from __future__ import annotations

from dataclasses import dataclass

#: Encounter categories of the contract. Source codes are mapped onto these by params.
CATEGORIES = (
    "er",
    "inpatient",
    "outpatient_mh",
    "outpatient_other",
    "primary_care",
    "pharmacy",
    "other",
)

#: Exposure arms: the self-help-oriented arm and the comparison arm.
ARMS = ("self_help", "control")


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # "id", "int", "float", "date", "str", "category"
    required: bool = True
    description: str = ""


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    description: str = ""

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


MEMBERS = TableSpec(
    "members",
    (
        Column("member_id", "id", description="unique member identifier"),
        Column("birth_year", "int", description="year of birth (or give birth_date)"),
        Column("sex", "str", description="F or M (other values are kept as given)"),
    ),
    key=("member_id",),
    description="one row per member; extra columns are kept and may be used as covariates",
)

ENROLLMENT = TableSpec(
    "enrollment",
    (
        Column("member_id", "id"),
        Column("start_date", "date", description="first day of the coverage spell"),
        Column("end_date", "date", description="last day of the coverage spell (inclusive)"),
    ),
    key=("member_id", "start_date"),
    description="one row per coverage spell",
)

ENCOUNTERS = TableSpec(
    "encounters",
    (
        Column("claim_id", "id", required=False,
               description="claim line id; when absent, duplicates are judged on all columns"),
        Column("member_id", "id"),
        Column("service_date", "date", description="date of service (admission date for inpatient)"),
        Column("end_date", "date", required=False,
               description="discharge date for inpatient stays (exclusive of the discharge day)"),
        Column("category", "category", description="one of " + ", ".join(CATEGORIES)),
        Column("allowed_amount", "float", description="allowed amount in dollars"),
        Column("paid_amount", "float", required=False, description="paid amount in dollars"),
    ),
    key=("claim_id",),
    description="one row per claim line",
)

EXPOSURE = TableSpec(
    "exposure",
    (
        Column("member_id", "id"),
        Column("group", "category", description="self_help or control"),
        Column("index_date", "date", description="date of referral (self_help) or matched pseudo-index"),
        Column("dose", "float", required=False, description="e.g. self-help meetings attended"),
    ),
    key=("member_id",),
    description="one row per member in the evaluation",
)

CLAIMS_TABLES = {t.name: t for t in (MEMBERS, ENROLLMENT, ENCOUNTERS, EXPOSURE)}
