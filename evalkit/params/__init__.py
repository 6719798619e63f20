"""Run parameters: one validated object, checked before any work starts.

A params file is YAML. Every key is checked: an unknown key, a wrong type or a bad value
is a :class:`~evalkit.errors.ParamsError` that names the key (dotted) and what is
allowed. Overrides given as ``--set data.members=100000`` are applied to the raw mapping
*before* validation, so they are checked the same way.

The sections' models are in :mod:`~evalkit.params.data` (data, windows, engine),
:mod:`~evalkit.params.methods` (models, economics, planning, design, study, report) and
:mod:`~evalkit.params.summary` (published figures); :mod:`~evalkit.params.schema` holds the
whole file and the checks across sections, :mod:`~evalkit.params.load` reads and validates
a file, :mod:`~evalkit.params.reference` writes the reference page and the JSON Schema.
"""
from .base import MAX_PARAMS_BYTES, MEMORY_UNITS, PUBLIC_MIN_CELL, RUN_ID_KEY, TableName
from .data import DataParams, EngineParams, OmopParams, PersonParams, SyntheaParams, WindowParams
from .methods import (BudgetParams, BudgetScenarioParams, DesignParams, EconParams, ModelParams,
                      NegativeControlParams, OutcomeParams, PlanningParams, ReportParams,
                      StudyParams)
from .summary import (ArmFigures, ComparisonItem, MEASURE_NEEDS, Measure, ProjectionOutcome,
                      ProjectionParams, ProportionItem, RATIO_MEASURES, ReportedEffect,
                      StudyFigures, SummaryParams)
from .schema import Params
from .load import (apply_overrides, expand_env, load, override_value, resolve_paths, safe_yaml,
                   validate)
from .reference import REFERENCE_INTRO, reference_markdown, schema_json, write_reference

__all__ = [
    "ArmFigures", "BudgetParams", "BudgetScenarioParams", "ComparisonItem", "DataParams",
    "DesignParams", "EconParams", "EngineParams", "MAX_PARAMS_BYTES", "MEASURE_NEEDS",
    "MEMORY_UNITS", "Measure", "ModelParams", "NegativeControlParams", "OmopParams",
    "OutcomeParams", "PUBLIC_MIN_CELL", "Params", "PersonParams", "PlanningParams",
    "ProjectionOutcome", "ProjectionParams", "ProportionItem", "RATIO_MEASURES",
    "REFERENCE_INTRO", "RUN_ID_KEY", "ReportParams", "ReportedEffect", "StudyFigures",
    "StudyParams", "SummaryParams", "SyntheaParams", "TableName", "WindowParams",
    "apply_overrides", "expand_env", "load", "override_value", "reference_markdown",
    "resolve_paths", "safe_yaml", "schema_json", "validate", "write_reference",
]
