"""Prepare a run's analysis database, and read it back from the workbooks.

:func:`prepare` does the heavy, private part of a run once, before any workbook starts:
it makes or reads the source data, checks it against the contract (quarantining bad
rows), builds the cohort and the member x window table, all inside DuckDB, and stores
them in ``analysis.duckdb`` in the ``work`` folder of the run. That file holds
member-level data: it is the analyst's working copy and is never published.

:class:`Study` opens that file read-only; each workbook calls its methods and shows the
result.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from . import cohort as _cohort
from . import describe, utilization
from .data.load import LoadReport, load_claims, load_report, scan_sql
from .data.person import load_person
from .errors import DataValidationError
from .params import Params

DB_NAME = "analysis.duckdb"


def _connect(path: Path, params: Params, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path), read_only=read_only)
    if params.engine.threads:
        con.execute(f"SET threads = {int(params.engine.threads)}")
    if params.engine.memory_limit:
        con.execute(f"SET memory_limit = '{params.engine.memory_limit}'")
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
    from .data.load import _lit
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
            src = f"src.{p.table}" if p.table else scan_sql(p.path, "person")
            if p.table:
                _attach_source(con, p.path, d.encryption_key)
            load_person(con, src, p.treatment, p.treated_value, p.outcomes, p.exposure,
                        p.covariates, p.id)
            inputs = [Path(p.path)]
        else:
            if d.source == "synthetic":
                from .data import synthetic
                syn_dir = work / "synthetic"
                if syn_dir.exists():
                    shutil.rmtree(syn_dir)
                plan = synthetic.generate(syn_dir, scenario=d.scenario, members=d.members,
                                          seed=params.seed, progress=progress,
                                          **d.scenario_options)
                truth = plan.truth
                if d.plant_problems:
                    from .data.problems import plant_problems
                    truth = {**truth, "planted_problems": plant_problems(syn_dir, params.seed)}
                paths = {t: str(syn_dir / f"{t}.parquet") for t in
                         ("members", "enrollment", "encounters", "exposure")}
                sources = {t: scan_sql(pth, t) for t, pth in paths.items()}
                inputs = [Path(paths[t]) for t in sorted(paths)]
            elif d.source == "files":
                sources = {t: scan_sql(pth, t) for t, pth in d.tables.items()}
                inputs = [Path(d.tables[t]) for t in sorted(d.tables)]
            else:
                if not Path(d.database).is_file():
                    raise DataValidationError(f"data.database: file not found: {d.database}")
                _attach_source(con, d.database, d.encryption_key)
                sources = {t: f"src.{d.tables.get(t, t)}" for t in
                           ("members", "enrollment", "encounters", "exposure")}
                inputs = [Path(d.database)]
            load_claims(con, sources, d.columns, d.category_map, d.group_map, d.date_format,
                        d.max_line_amount)
            w = params.windows
            attrition = _cohort.build_cohort(con, w.baseline_days, w.followup_days,
                                             w.require_enrolled_at_index, w.min_followup_months)
            _check_arms(attrition.iloc[-1], "the analysis cohort", attrition)
            con.register("_attrition", attrition)
            con.execute("CREATE TABLE attrition AS SELECT * FROM _attrition")
            con.unregister("_attrition")
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
    return Prepared(final, fp, report, truth)


class Study:
    """Read access to a prepared run, for the workbooks.

    Parameters
    ----------
    params_path : the validated ``params.json`` the runner wrote into the output folder.
    """

    def __init__(self, params_path: str | Path):
        from .params import validate
        self.params_path = Path(params_path)
        self.output_dir = self.params_path.parent
        self.params = validate(json.loads(self.params_path.read_text()))
        db = self.output_dir / "work" / DB_NAME
        if not db.exists():
            raise FileNotFoundError(f"{db} is missing: run the analysis with `evalkit run`, "
                                    "which prepares it before the workbooks start")
        self.con = _connect(db, self.params, read_only=True)

    def recorder(self, workbook: str):
        """A :class:`~evalkit.results.Recorder` for this run's ``workbook``."""
        from .results import Recorder
        return Recorder(self.output_dir, workbook)

    def describe_run(self) -> pd.DataFrame:
        """The run's provenance, as a small two-column table."""
        p = self.params
        fp = self.con.execute("SELECT fingerprint FROM run_info").fetchall()[0][0]
        from . import __version__
        rows = [("title", p.title), ("mode", p.mode),
                ("data source", {"claims": p.data.source, "summary": "published figures (params)"}
                 .get(p.mode) or p.data.person.path),
                ("scenario", p.data.scenario if p.data.source == "synthetic" else "-"),
                ("seed", p.seed), ("params hash", p.digest()[:16]),
                ("data fingerprint", fp[:16]), ("evalkit version", __version__)]
        if p.mode == "claims":
            rows += [("baseline window", f"{p.windows.baseline_days} days before the index date"),
                     ("follow-up window", f"{p.windows.followup_days} days from the index date")]
        return pd.DataFrame(rows, columns=["item", "value"]).astype({"value": str})

    def sql(self, query: str) -> pd.DataFrame:
        return self.con.execute(query).df()

    @property
    def mode(self) -> str:
        return self.params.mode

    @property
    def truth(self) -> dict | None:
        raw = self.con.execute("SELECT truth FROM run_info").fetchall()[0][0]
        return json.loads(raw) if raw else None

    def load_report(self) -> LoadReport:
        return load_report(self.con)

    def attrition(self) -> pd.DataFrame:
        if self.mode == "person":
            counts = self.sql('SELECT "group", count(*) AS n FROM persons GROUP BY 1')
            n = dict(zip(counts["group"], counts["n"]))
            return pd.DataFrame([{"step": "accepted person-level rows",
                                  "self_help_members": int(n.get("self_help", 0)),
                                  "control_members": int(n.get("control", 0)),
                                  "total_members": int(sum(n.values())),
                                  "excluded_members": 0}])
        return self.sql("SELECT * FROM attrition")

    def outcomes(self) -> list[str]:
        if self.mode == "person":
            return list(self.params.data.person.outcomes)
        return list(utilization.OUTCOMES)

    def member_windows(self) -> pd.DataFrame:
        """One row per member x period (claims mode) or per member (person mode)."""
        if self.mode == "person":
            return self.sql("SELECT *, 'followup' AS period FROM persons")
        return self.sql("SELECT * FROM member_windows ORDER BY member_id, period")

    def analysis_frame(self) -> pd.DataFrame:
        """One row per member: follow-up outcomes plus baseline covariates.

        Claims mode: cohort covariates (age at index, female, comorbidity and the
        members table's other columns), baseline utilization and cost (``baseline_*``),
        follow-up outcomes and member-months.
        """
        if self.mode == "person":
            return self.sql("SELECT * FROM persons ORDER BY member_id")
        out = list(utilization.OUTCOMES) + ["total_cost", "member_months"]
        bl = ", ".join(f"b.{c} AS baseline_{c}" for c in out)
        fu = ", ".join(f"f.{c}" for c in out)
        return self.sql(f"""
            SELECT c.* EXCLUDE (bl_start, fu_start, fu_end, bl_member_months, fu_member_months),
                   CAST(c.sex = 'F' AS INTEGER) AS female, {bl}, {fu}
            FROM cohort c
            JOIN member_windows b ON b.member_id = c.member_id AND b.period = 'baseline'
            JOIN member_windows f ON f.member_id = c.member_id AND f.period = 'followup'
            ORDER BY c.member_id""")

    def covariates(self) -> list[str]:
        if self.mode == "person":
            return list(self.params.data.person.covariates)
        frame_cols = self.sql("SELECT * FROM cohort LIMIT 0").columns
        skip = {"member_id", "group", "index_date", "bl_start", "fu_start", "fu_end",
                "bl_member_months", "fu_member_months", "sex", "dose"}
        extra = [c for c in frame_cols if c not in skip and c != "age_at_index"]
        base = ["baseline_" + c for c in (*utilization.OUTCOMES, "total_cost")]
        return ["age_at_index", "female", *extra, *base]

    def treated_frame(self) -> pd.DataFrame:
        """:meth:`analysis_frame` with a 0/1 ``treated`` column (1 = self-help arm)."""
        from .outcomes import with_treatment
        return with_treatment(self.analysis_frame())

    def adjusted_counts(self, **kwargs):
        """Covariate-adjusted count models per outcome (see
        :func:`evalkit.outcomes.adjusted_count_effects`)."""
        from .outcomes import adjusted_count_effects
        exposure = "member_months" if self.mode == "claims" or \
            self.params.data.person.exposure else None
        return adjusted_count_effects(self.treated_frame(), self.count_outcomes(),
                                      self.covariates(), exposure=exposure, **kwargs)

    def count_outcomes(self) -> list[str]:
        return [o for o in self.outcomes() if "cost" not in o]

    def prepost(self, outcomes: list[str] | None = None) -> pd.DataFrame | None:
        """Difference-in-differences against each member's own baseline (claims mode only;
        person-level data have no baseline window, and this returns None)."""
        if self.mode != "claims":
            return None
        from .outcomes import prepost_effects
        return prepost_effects(self.member_windows(), outcomes or self.outcomes())

    def cost_effect(self, **kwargs):
        """Two-part model of follow-up cost (see :func:`evalkit.outcomes.cost_effect`)."""
        from .outcomes import cost_effect
        months = self.params.windows.followup_days * 12 / 365
        kwargs.setdefault("n_boot", self.params.models.bootstrap_replicates)
        kwargs.setdefault("seed", self.params.seed)
        return cost_effect(self.treated_frame(), self.covariates(), months=months, **kwargs)

    def value_program(self, cost=None):
        """Program economics from the adjusted cost difference and the params' ``econ``
        section (see :func:`evalkit.valuation.value_program`)."""
        from .valuation import value_program
        cost = cost or self.cost_effect(n_boot=0)
        referred = int((self.treated_frame()["treated"] == 1).sum())
        return value_program(cost.effects, self.params.econ, referred,
                             self.params.windows.followup_days, self.params.seed)

    def time_to_first(self, category: str = "er") -> pd.DataFrame:
        """Days from the index date to the first visit of ``category`` in the follow-up
        window, one row per member (claims mode).

        ``event`` is 1 when such a visit happened; otherwise the member is censored at
        the end of the coverage spell that holds the index date or at the end of the
        follow-up window, whichever is first (``days``). Covariates as in
        :meth:`analysis_frame`, with the 0/1 ``treated`` column.
        """
        from .data.contract import CATEGORIES
        if self.mode != "claims":
            raise DataValidationError("time to first visit needs claims (encounter dates)")
        if category not in CATEGORIES:
            raise DataValidationError(f"unknown category {category!r}; one of {', '.join(CATEGORIES)}")
        times = self.sql(f"""
            WITH first AS (
              SELECT e.member_id, min(e.service_date) AS first_date
              FROM encounters e JOIN cohort c USING (member_id)
              WHERE e.category = '{category}' AND e.service_date >= c.fu_start
                AND e.service_date < c.fu_end
              GROUP BY 1),
            spell AS (
              SELECT c.member_id, max(s.end_date) + 1 AS covered_until
              FROM cohort c JOIN enrollment s ON s.member_id = c.member_id
               AND c.index_date BETWEEN s.start_date AND s.end_date
              GROUP BY 1)
            SELECT c.member_id,
                   least(c.fu_end, coalesce(sp.covered_until, c.fu_end)) AS censor_date,
                   f.first_date
            FROM cohort c LEFT JOIN first f USING (member_id) LEFT JOIN spell sp USING (member_id)
            ORDER BY c.member_id""")
        event = times["first_date"].notna() & (times["first_date"] < times["censor_date"])
        end = times["first_date"].where(event, times["censor_date"])
        frame = self.treated_frame().set_index("member_id")
        out = frame.assign(
            days=(pd.to_datetime(end.to_numpy()) - pd.to_datetime(frame["index_date"].to_numpy())).days,
            event=event.astype(int).to_numpy())
        return out.reset_index()

    def time_to_event(self, category: str = "er", **kwargs):
        """Time to the first ``category`` visit after the index date, by arm (see
        :func:`evalkit.outcomes.time_to_event_effects`)."""
        from .outcomes import time_to_event_effects
        frame = self.time_to_first(category)
        return time_to_event_effects(frame, self.covariates(), f"time_to_first_{category}", **kwargs)

    def true_effects(self, outcomes: list[str] | None = None) -> dict:
        """The true ratios of a synthetic plan (empty for real data)."""
        from .outcomes import true_ratios
        return true_ratios(self.truth, outcomes or self.outcomes())

    def table1(self) -> pd.DataFrame:
        return describe.table1(self.analysis_frame(), "group", self.covariates())

    def rates(self, per_period: bool = True):
        frame = self.member_windows()
        if self.mode == "person" and self.params.data.person.exposure is None:
            frame = frame.assign(member_months=1.0)
        return describe.rates(frame, self.outcomes(), "group", "member_months",
                              by="period" if per_period else None)

    def close(self) -> None:
        self.con.close()
