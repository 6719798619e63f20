"""The whole params file (:class:`Params`) and the checks that span its sections."""
from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..catalog import BY_NAME, WORKBOOKS, default_workbooks
from ..data.contract import CLAIMS_TABLES
from ..data.synthetic_person import PERSON_SCENARIOS
from ..privacy import redact_params
from ..terms import formula_names, term_columns
from .base import _Strict
from .data import DataParams, EngineParams, OmopParams, WindowParams
from .methods import (DesignParams, EconParams, ModelParams, PlanningParams, ReportParams,
                      StudyParams)
from .summary import SummaryParams


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
