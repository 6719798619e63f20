"""One description of a run's data source, for every place that names it.

The brief's provenance, the data-quality workbook's run table, the runner's console line
and ``results.json`` (``run.data_source``) all describe the source through
:func:`describe_source`, so every ``data.source`` (synthetic, files, duckdb, omop,
synthea), person mode (a generated scenario, a file or a database table) and summary
mode is described, and described alike everywhere. Only file *names* are given, never
folders, so a description can go into a public brief.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SourceDescription:
    """A data source in two lengths.

    Attributes
    ----------
    kind : short label: ``synthetic``, ``files``, ``duckdb``, ``omop``, ``synthea``,
        ``synthetic person-level``, ``person file``, ``person table`` or ``published
        figures``.
    text : one sentence fragment for readers (the brief's "Data" line).
    """

    kind: str
    text: str


def _name(path) -> str:
    return Path(str(path)).name


def describe_source(params) -> SourceDescription:
    """Describe the data source of validated params (:class:`evalkit.params.Params`).

    Returns
    -------
    SourceDescription
    """
    d = params.data
    if params.mode == "summary":
        return SourceDescription("published figures", "published per-group figures given in "
                                 "the params (no member-level data)")
    if params.mode == "person":
        p = d.person
        if p is None or p.path is None:          # a synthetic person-level scenario
            return SourceDescription("synthetic person-level", (
                f"synthetic person-level data, scenario '{d.scenario}' (generated; no real "
                "people)"))
        if p.table:
            return SourceDescription("person table", (
                f"person-level table {p.table} of DuckDB database {_name(p.path)} (one row "
                "per member)"))
        return SourceDescription("person file", f"person-level file {_name(p.path)} (one row "
                                 "per member)")
    if d.source == "synthetic":
        return SourceDescription("synthetic", (f"synthetic health plan, scenario "
                                               f"'{d.scenario}' (generated; no real members)"))
    if d.source == "files":
        return SourceDescription("files", "the plan's claims files ("
                                 + ", ".join(f"{t}: {_name(d.tables[t])}" for t in sorted(d.tables))
                                 + ")")
    if d.source == "omop":
        o = d.omop
        where = f"schema {o.cdm_schema} of " if o is not None and o.cdm_schema else ""
        coverage = o.enrollment if o is not None else "observation_period"
        exposure = (f"exposure from {_name(o.exposure_file)}" if o is not None and o.exposure_file
                    else "exposure from the cohort table")
        return SourceDescription("omop", (f"OMOP CDM v5.4, {where}DuckDB database "
                                          f"{_name(d.database)} (coverage from {coverage}; "
                                          f"{exposure})"))
    if d.source == "synthea":
        s = d.synthea
        return SourceDescription("synthea", (f"Synthea CSV export, folder {_name(s.folder)} "
                                             f"(coverage from {s.enrollment}; exposure from "
                                             f"{_name(s.exposure_file)})"))
    tables = ", ".join(f"{t}: {d.tables[t]}" for t in sorted(d.tables))
    return SourceDescription("duckdb", f"DuckDB database {_name(d.database)}"
                             + (f" (tables {tables})" if tables else ""))


__all__ = ["SourceDescription", "describe_source"]
