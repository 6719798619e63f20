"""Prepare a run's analysis database.

:func:`prepare` does the heavy, private part of a run once, before any workbook starts:
it makes or reads the source data, checks it against the contract (quarantining bad
rows), builds the cohort and the member x window table, all inside DuckDB, and stores
them in ``analysis.duckdb`` in the ``work`` folder of the run. That file holds
member-level data: it is the analyst's working copy and is never published. The
workbooks read it through :class:`evalkit.analysis.study.Study`.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from . import cohort as _cohort
from . import utilization
from .analysis import spec as _spec
from .analysis.spec import SPEC_FILE, AnalysisSpec, with_treatment
from .data import synthetic, synthetic_person
from .data.load import (
    LoadReport,
    _columns,
    _lit,
    check_claims_tables,
    load_claims,
    load_report,
    scan_sql,
)
from .data.omop import omop_sources
from .data.person import load_person
from .data.problems import plant_problems
from .data.synthea import MH_CODES, synthea_sources
from .errors import DataValidationError
from .limits import default_memory_limit
from .params import OmopParams, Params
from .privacy import redact_params, scrub
from .results import DESIGN_FILE, DESIGN_META, write_json_atomic

DB_NAME = "analysis.duckdb"


def _connect(path: Path, params: Params, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A connection to the run's database with the params' engine settings.

    DuckDB's allocator (jemalloc) returns freed memory to the system from a background
    thread: without it, memory a query freed stays with the process until later
    allocations purge it (at 1M members, reading the analysis frame, 155 MB, left a
    workbook's kernel 883 MB, against 548 MB with the thread, two seconds on)."""
    con = duckdb.connect(str(path), read_only=read_only)
    if params.engine.threads:
        con.execute(f"SET threads = {int(params.engine.threads)}")
    con.execute(f"SET memory_limit = '{params.engine.memory_limit or default_memory_limit()}'")
    if con.execute("SELECT count(*) FROM duckdb_settings() "
                   "WHERE name = 'allocator_background_threads'").fetchall()[0][0]:
        con.execute("SET allocator_background_threads = true")   # not in every DuckDB
    return con


def fingerprint(paths: list[Path]) -> str:
    """SHA-256 over the bytes of the input files (in the given order)."""
    h = hashlib.sha256()
    for p in paths:
        files = sorted(p.rglob("*")) if p.is_dir() else [p]
        for f in files:
            if f.is_file():
                h.update(f.name.encode())
                with open(f, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        h.update(block)
    return h.hexdigest()


def _attach_source(con, path: str, encryption_key: str | None) -> None:
    """Attach the user's DuckDB database read-only as ``src`` (decrypting it if a key is
    given); the key is never echoed in an error."""
    options = "READ_ONLY" + (f", ENCRYPTION_KEY {_lit(encryption_key)}" if encryption_key else "")
    try:
        con.execute(f"ATTACH {_lit(path)} AS src ({options})")
    except duckdb.Error as err:
        msg = str(err).replace(encryption_key, "***") if encryption_key else str(err)
        hint = (" (is the encryption key right?)" if encryption_key else
                " (if the file is encrypted, give data.encryption_key)")
        raise DataValidationError(f"cannot open the database {path}: {msg.strip()}{hint}") from None


def _check_arms(counts, what: str, steps: pd.DataFrame | None = None) -> None:
    """Stop before any workbook runs when there is nothing to compare: no members, or
    members in one arm only."""
    n_t, n_c = int(counts["self_help_members"]), int(counts["control_members"])
    if n_t and n_c:
        return
    trail = ""
    if steps is not None:
        trail = " Members at each step: " + "; ".join(
            f"{r.step}: {r.self_help_members:,} self_help / {r.control_members:,} control"
            for r in steps.itertuples()) + "."
    if not n_t and not n_c:
        raise DataValidationError(f"{what} is empty: no member passed the selection.{trail} "
                                  "Check the index dates against the enrollment spells and "
                                  "the windows params.")
    empty = "self_help" if not n_t else "control"
    raise DataValidationError(
        f"{what} has no {empty} members ({n_t:,} self_help, {n_c:,} control): a comparison "
        f"needs both arms.{trail} Check the exposure table's group values and data.group_map.")


@dataclass(frozen=True)
class Prepared:
    database: Path
    fingerprint: str
    report: LoadReport
    truth: dict | None


def prepare(params: Params, out_dir: str | Path, progress: bool = False) -> Prepared:
    """Build the run's ``analysis.duckdb`` (in its ``work`` folder) from the data source.

    Written to a temporary file and renamed when complete, so a failed preparation
    never leaves a database that looks finished.
    """
    work = Path(out_dir) / "work"
    work.mkdir(parents=True, exist_ok=True)
    for stale in (DESIGN_FILE, DESIGN_META):   # a design of an earlier run is stale
        (work / stale).unlink(missing_ok=True)
    final = work / DB_NAME
    tmp = work / (DB_NAME + ".partial")
    tmp.unlink(missing_ok=True)
    d = params.data
    truth = None
    con = _connect(tmp, params)
    ok = False
    try:
        con.execute(f"SET temp_directory = '{work / 'spill'}'")
        if params.mode == "summary":         # published figures only: nothing to load
            con.execute('CREATE TABLE load_counts ("table" VARCHAR, rows_in BIGINT)')
            con.execute('CREATE TABLE quarantine ("table" VARCHAR, source_row BIGINT, '
                        'reason VARCHAR, record VARCHAR)')
            inputs = []
        elif params.mode == "person":
            p = d.person
            src, inputs, truth = _person_source(con, params, work)
            # negative-control columns (design section) are loaded and checked as outcomes
            nc_cols = [c for c in params.design.negative_controls.outcomes if c not in p.outcomes]
            load_person(con, src, p.treatment, p.treated_value, [*p.outcomes, *nc_cols], p.exposure,
                        p.covariates, p.id, duration=p.duration, event=p.event, groups=p.groups,
                        signed=p.signed_outcomes)
        else:
            sources, inputs, truth = _claims_sources(con, params, work, progress)
            load_claims(con, sources, d.columns, d.category_map, d.group_map, d.date_format,
                        d.max_line_amount, max_invalid_dates=d.max_invalid_dates)
            w = params.windows
            attrition = _cohort.build_cohort(con, w.baseline_days, w.followup_days,
                                             w.require_enrolled_at_index, w.min_followup_months)
            _check_arms(attrition.iloc[-1], "the analysis cohort", attrition)
            con.register("_attrition", attrition)
            con.execute("CREATE TABLE attrition AS SELECT * FROM _attrition")
            con.unregister("_attrition")
            if params.engine.name == "spark":   # same SQL, translated and run by Spark
                from .engines import spark as _spark     # optional: pyspark, sqlglot
                session = _spark.spark_session(params.engine.spark_master,
                                               params.engine.spark_conf)
                _spark.build_member_windows_spark(con, session, work)
            else:
                utilization.build_member_windows(con)
        report = load_report(con)
        fp = fingerprint(inputs) if inputs else hashlib.sha256(
            json.dumps(params.to_dict(), sort_keys=True).encode()).hexdigest()
        con.execute("CREATE TABLE run_info AS SELECT ? AS fingerprint, ? AS truth, ? AS mode",
                    [fp, json.dumps(truth), params.mode])
        con.execute("CHECKPOINT")
        ok = True
    finally:
        con.close()
        if not ok:
            tmp.unlink(missing_ok=True)
            Path(str(tmp) + ".wal").unlink(missing_ok=True)
    os.replace(tmp, final)
    con = _connect(final, params, read_only=True)
    try:
        # the spec repeats free text of the params (the title as the study's question):
        # secrets in it are removed as they are from params.json
        spec = scrub(resolve_spec(params, con).to_dict(), redact_params(params.to_dict())[1])
        write_json_atomic(Path(out_dir) / SPEC_FILE, spec)
    finally:
        con.close()
    return Prepared(final, fp, report, truth)


def resolve_spec(params: Params, con) -> AnalysisSpec:
    """The run's analysis spec (:func:`evalkit.analysis.spec.resolve`) from the params and the
    prepared database."""
    if params.mode == "summary":
        return _spec.resolve(params)
    frame = _analysis_frame(con, params.mode)
    p = params.data.person
    if params.mode == "person":
        exposure, extra = (p.exposure and "member_months"), []
        if p.treatment is not None:
            frame = with_treatment(frame)
    else:
        exposure = "member_months"
        cols = con.execute("SELECT * FROM cohort LIMIT 0").df().columns
        extra = [c for c in cols if c not in _spec.CLAIMS_COHORT_COLUMNS]
        frame = with_treatment(frame)
    return _spec.resolve(params, frame, extra, has_exposure=bool(exposure), exposure=exposure)


def _analysis_frame(con, mode: str) -> pd.DataFrame:
    """One row per member: follow-up outcomes plus baseline covariates (see
    :meth:`Study.analysis_frame`)."""
    if mode == "person":
        return con.execute("SELECT * FROM persons ORDER BY member_id").df()
    out = list(_spec.CLAIMS_OUTCOMES) + ["member_months"]
    bl = ", ".join(f"b.{c} AS baseline_{c}" for c in out)
    fu = ", ".join(f"f.{c}" for c in out)
    return con.execute(f"""
        SELECT c.* EXCLUDE (bl_start, fu_start, fu_end, bl_member_months, fu_member_months),
               CAST(c.sex = 'F' AS INTEGER) AS female, {bl}, {fu}
        FROM cohort c
        JOIN member_windows b ON b.member_id = c.member_id AND b.period = 'baseline'
        JOIN member_windows f ON f.member_id = c.member_id AND f.period = 'followup'
        ORDER BY c.member_id""").df()


def check_data(params: Params) -> pd.DataFrame | None:
    """Open the data sources the params name and check their structure, without
    preparing a run (``evalkit validate --data``).

    Claims mode: each of the four tables is there and not empty, has every required
    column under its mapped name, and its dates and numbers can be read as such
    (:func:`evalkit.data.load.check_claims_tables`). Person mode: the table has every
    column the params name and numeric outcomes, and its rows are checked as a run would
    (:func:`evalkit.data.person.load_person`, in memory). No cohort is built and no
    analysis runs.

    Returns
    -------
    DataFrame or None
        One row per table checked (``table``, ``rows``, ``columns``, and for person mode
        ``accepted`` and ``quarantined``); None when there is nothing to open (summary
        mode, or synthetic data, which are generated when the run starts).

    Raises
    ------
    DataValidationError
        A source that cannot be opened, or every structural problem found.
    """
    d = params.data
    if params.mode == "summary" or (d.source == "synthetic" and not (
            params.mode == "person" and d.person.path)):
        return None
    con = duckdb.connect()
    try:
        if params.mode == "person":
            p = d.person
            src, _, _ = _person_source(con, params, Path("."))
            nc_cols = [c for c in params.design.negative_controls.outcomes if c not in p.outcomes]
            load_person(con, src, p.treatment, p.treated_value, [*p.outcomes, *nc_cols],
                        p.exposure, p.covariates, p.id, duration=p.duration, event=p.event,
                        groups=p.groups, signed=p.signed_outcomes)
            counts = load_report(con).counts
            return pd.DataFrame({"table": ["person"], "rows": counts.rows_in.astype(int),
                                 "columns": [len(_columns(con, src))],
                                 "accepted": counts.accepted.astype(int),
                                 "quarantined": counts.quarantined.astype(int)})
        sources, _, _ = _claims_sources(con, params, Path("."))
        check_claims_tables(con, sources, d.columns, d.date_format, d.max_invalid_dates,
                            d.category_map)
        return pd.DataFrame([
            {"table": t, "rows": con.execute(f"SELECT count(*) FROM {rel}").fetchall()[0][0],
             "columns": len(_columns(con, rel))} for t, rel in sources.items()])
    finally:
        con.close()


def _person_source(con, params: Params, work: Path) -> tuple[str, list[Path], dict | None]:
    """The person-level table as a DuckDB relation, the input files, and the synthetic
    scenario's truth (a synthetic scenario is written into ``work`` first)."""
    d, truth = params.data, None
    p = d.person
    path = p.path
    if path is None:                 # a synthetic person-level scenario
        written = synthetic_person.write(work / "synthetic_person", d.scenario,
                                         params.seed, **d.scenario_options)
        path, truth = str(written.path), written.truth
    src = f"src.{p.table}" if p.table else scan_sql(path, "person", params.data.encoding)
    if p.table:
        _attach_source(con, path, d.encryption_key)
    return src, [Path(path)], truth


def _claims_sources(con, params: Params, work: Path, progress: bool = False
                    ) -> tuple[dict[str, str], list[Path], dict | None]:
    """The four claims tables as DuckDB relations (table -> expression), the input files
    and the synthetic plan's truth (a synthetic plan is generated into ``work`` first)."""
    d, truth = params.data, None
    if d.source == "synthetic":
        syn_dir = work / "synthetic"
        if syn_dir.exists():
            shutil.rmtree(syn_dir)
        plan = synthetic.generate(syn_dir, scenario=d.scenario, members=d.members,
                                  seed=params.seed, progress=progress,
                                  **d.scenario_options)
        truth = plan.truth
        if d.plant_problems:
            truth = {**truth, "planted_problems": plant_problems(
                syn_dir, params.seed, params.engine.memory_limit or default_memory_limit(),
                params.engine.threads)}
        paths = {t: str(syn_dir / f"{t}.parquet") for t in
                 ("members", "enrollment", "encounters", "exposure")}
        sources = {t: scan_sql(pth, t) for t, pth in paths.items()}
        inputs = [Path(paths[t]) for t in sorted(paths)]
    elif d.source == "files":
        sources = {t: scan_sql(pth, t, d.encoding) for t, pth in d.tables.items()}
        inputs = [Path(d.tables[t]) for t in sorted(d.tables)]
    elif d.source == "omop":            # OMOP CDM tables, recoded by views
        if not Path(d.database).is_file():
            raise DataValidationError(f"data.database: file not found: {d.database}")
        _attach_source(con, d.database, d.encryption_key)
        o = d.omop or OmopParams()
        sources = omop_sources(
            con, f"src.{o.cdm_schema}" if o.cdm_schema else "src",
            enrollment=o.enrollment, visit_concepts=o.visit_concepts,
            er_inpatient=o.er_inpatient, mh_condition_concepts=o.mh_condition_concepts,
            mh_condition_snomed=o.mh_condition_snomed,
            mh_specialty_concepts=o.mh_specialty_concepts, exposure_file=o.exposure_file,
            exposure_cohort_table=o.exposure_cohort_table,
            exposure_cohorts=o.exposure_cohorts, encoding=d.encoding)
        inputs = [Path(d.database)] + ([Path(o.exposure_file)] if o.exposure_file else [])
    elif d.source == "synthea":         # Synthea CSV export, recoded by views
        s = d.synthea
        sources = synthea_sources(
            con, s.folder, s.exposure_file, enrollment=s.enrollment, payers=s.payers,
            class_map=s.class_map, mh_codes=MH_CODES if s.mh_codes is None else s.mh_codes,
            amount=s.amount, encoding=d.encoding)
        inputs = [Path(s.folder) / f"{t}.csv" for t in
                  ("encounters", "patients", "payer_transitions", "payers")
                  if (Path(s.folder) / f"{t}.csv").is_file()] + [Path(s.exposure_file)]
    else:
        if not Path(d.database).is_file():
            raise DataValidationError(f"data.database: file not found: {d.database}")
        _attach_source(con, d.database, d.encryption_key)
        sources = {t: f"src.{d.tables.get(t, t)}" for t in
                   ("members", "enrollment", "encounters", "exposure")}
        inputs = [Path(d.database)]
    return sources, inputs, truth


def prepare_run_folder(params: Params, out_dir: str | Path, progress: bool = False) -> Path:
    """:func:`prepare`, then ``params.json`` written as the runner writes it (secrets
    redacted); returns the path of ``params.json``."""
    prepare(params, out_dir, progress=progress)
    params_file = Path(out_dir) / "params.json"
    write_json_atomic(params_file, redact_params(params.to_dict())[0])
    return params_file


#: Member ids shorter than this cannot be told apart from ordinary numbers in a scan: they
#: are looked for where they would identify someone (after a word naming an id, in the
#: free text of the params such as the title), not as every number of the outputs.
MIN_SCANNABLE_ID = 6


@functools.lru_cache(maxsize=2)
def _private_values_of(db: str, state: tuple) -> tuple[tuple[str, ...], tuple]:
    """Every member id and every date of service of the run whose working database is
    ``db`` (none in summary mode: it holds no cohort or persons). ``state`` (the file's
    inode, size and change and modification times) keys the cache: a database written
    again is read again."""
    con = duckdb.connect(db, read_only=True)
    try:
        if con.execute("SELECT mode FROM run_info").fetchall()[0][0] == "summary":
            return (), ()
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables")
                  .fetchall()}
        table = "cohort" if "cohort" in tables else "persons"
        ids = tuple(str(r[0]) for r in con.execute(f"SELECT DISTINCT member_id FROM {table}")
                    .fetchall())
        dates = ()
        if "encounters" in tables:
            dates = tuple(r[0] for r in con.execute(
                "SELECT DISTINCT d FROM (SELECT service_date AS d FROM encounters UNION ALL "
                "SELECT end_date FROM encounters) WHERE d IS NOT NULL").fetchall())
    finally:
        con.close()
    return ids, dates


def scan_targets(out_dir: Path) -> dict:
    """What a run's outputs are scanned for, as keyword arguments of
    :func:`evalkit.privacy.scan_outputs`: ``member_ids`` (ids of ``MIN_SCANNABLE_ID``
    characters or more), ``context_ids`` (shorter ones) and ``dates_of_service``.

    The working database is read once for the brief's scan and the run's: the values
    are kept while the database file is unchanged."""
    db = Path(out_dir) / "work" / DB_NAME
    st = db.stat()
    ids, dates = _private_values_of(str(db.resolve()),
                                    (st.st_ino, st.st_size, st.st_ctime_ns, st.st_mtime_ns))
    return {"member_ids": [i for i in ids if len(i) >= MIN_SCANNABLE_ID],
            "context_ids": [i for i in ids if len(i) < MIN_SCANNABLE_ID],
            "dates_of_service": list(dates)}
