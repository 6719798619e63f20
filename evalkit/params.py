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
from .errors import ParamsError


TableName = Literal["members", "enrollment", "encounters", "exposure"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PersonParams(_Strict):
    """Person-level mode: one row per member with outcomes already computed."""

    path: str = Field(description="CSV, Parquet or DuckDB file with one row per member")
    table: str | None = Field(None, description="table name when path is a DuckDB database")
    id: str | None = Field(None, description="member id column (optional)")
    treatment: str = Field(description="column holding the arm")
    treated_value: Any = Field(1, description="value of `treatment` that marks the self-help arm")
    outcomes: list[str] = Field(min_length=1, description="count or cost outcome columns")
    exposure: str | None = Field(None, description="member-months (or person-time) column")
    covariates: list[str] = Field(default_factory=list, description="columns to adjust for")


class DataParams(_Strict):
    source: Literal["synthetic", "files", "duckdb"] = Field(
        "synthetic", description="built-in synthetic plan, your files, or a DuckDB database")
    scenario: str = Field("demo", description="synthetic: demo, humphreys_moos or healthwise_er")
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
    person: PersonParams | None = None

    @field_validator("category_map")
    @classmethod
    def _categories(cls, v):
        bad = {k: c for k, c in v.items() if c not in CATEGORIES}
        if bad:
            raise ValueError(f"category_map maps onto unknown categories {bad}; "
                             f"allowed: {', '.join(CATEGORIES)}")
        return v

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
    name: Literal["duckdb"] = Field("duckdb", description="database engine for the aggregation")
    threads: int | None = Field(None, gt=0, description="engine threads (default: all cores)")
    memory_limit: str | None = Field(None, description="e.g. '2GB'; DuckDB spills beyond it")


class ModelParams(_Strict):
    """Choices of the outcome models."""

    bootstrap_replicates: int = Field(1000, ge=0, le=100_000, description="bootstrap replicates "
                                      "for the cost effect's interval (0: delta method only)")


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


class ReportParams(_Strict):
    public: bool = Field(False, description="outputs are meant for the public: after the "
                         "workbooks run, every output (not work/) is scanned for member ids "
                         "and cells of fewer than min_cell people, and the run fails if any "
                         "is found")
    min_cell: int = Field(11, ge=1, description="smallest count of people shown in public output")


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
    econ: EconParams = EconParams()
    workbooks: list[str] = Field(default_factory=list,
                                 description="workbooks to run (default: every workbook "
                                             "for the mode); they run in the package's order")

    @model_validator(mode="before")
    @classmethod
    def _default_workbooks(cls, data):
        if isinstance(data, dict) and "workbooks" not in data:
            data = {**data, "workbooks": default_workbooks(data.get("mode", "claims"))}
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
        if self.mode == "person":
            if d.person is None:
                raise ValueError("mode 'person' needs data.person (path, treatment, outcomes)")
        elif d.source == "files":
            missing = [t for t in CLAIMS_TABLES if t not in d.tables]
            if missing:
                raise ValueError(f"data.source 'files' needs data.tables for {missing}")
        elif d.source == "duckdb":
            if not d.database:
                raise ValueError("data.source 'duckdb' needs data.database (path of the file)")
        return self

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    def digest(self) -> str:
        """SHA-256 of the canonical JSON form of the validated params, secrets redacted
        (so the hash a run records matches its params.json)."""
        from .privacy import redact_params
        text = json.dumps(redact_params(self.to_dict())[0], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


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
        node[parts[-1]] = yaml.safe_load(value) if isinstance(value, str) else value
    return out


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
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ParamsError(f"{path}: not valid YAML: {err}") from None
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
    if not updates:
        return params
    return params.model_copy(update={"data": d.model_copy(update=updates)})


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
    "that name the key. Override any key with `--set KEY=VALUE` (dotted keys, YAML values). "
    "This page is generated from `evalkit/params.py` (`make docs`); a test keeps it current.\n\n")


def write_reference(path: str | Path) -> None:
    """Write docs/params.md: :data:`REFERENCE_INTRO` followed by :func:`reference_markdown`."""
    Path(path).write_text(REFERENCE_INTRO + reference_markdown())
