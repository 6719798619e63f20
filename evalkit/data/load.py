"""Load the contract tables into DuckDB, enforcing the data contract at the door.

Two kinds of problem are told apart:

* **structural** problems (a missing column, a column of the wrong type, unparseable
  dates, an empty table) stop the load with one :class:`DataValidationError` that lists
  *every* such problem with its table, column, count and example values;
* **row-level** problems (negative amount, service outside enrollment, end before start,
  unknown member, duplicate line, ...) set the row aside in the ``quarantine`` table with
  a reason code. Each source row is either accepted or quarantined (with its first
  failing reason), so rows in = rows accepted + rows quarantined, always.

Everything runs inside DuckDB: claim lines are never pulled into pandas.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from ..errors import DataValidationError
from .contract import ARMS, CATEGORIES, CLAIMS_TABLES, TableSpec

#: Row-level reason codes, per table, in the order they are tried.
REASONS = {
    "members": ("missing_value", "duplicate_member"),
    "enrollment": ("missing_value", "end_before_start", "unknown_member", "overlapping_spell"),
    "encounters": ("missing_value", "unknown_category", "negative_amount", "absurd_amount",
                   "implausible_date", "end_before_start",
                   "unknown_member", "duplicate_line", "service_outside_enrollment"),
    "exposure": ("missing_value", "unknown_group", "unknown_member", "duplicate_member"),
}

REASON_TEXT = {
    "missing_value": "a required value is empty",
    "duplicate_member": "the member appears more than once (the first row is kept)",
    "end_before_start": "the end date is before the start date",
    "unknown_member": "the member is not in the members table",
    "overlapping_spell": "the coverage spell overlaps an earlier spell of the same member",
    "unknown_category": "the category is not a contract category and is not in category_map",
    "negative_amount": "an amount is negative",
    "absurd_amount": "an amount is above data.max_line_amount for one claim line (a placeholder "
                     "such as 99999999, or a unit error)",
    "implausible_date": "the date of service is before 1900 or after 2100 (a placeholder date)",
    "duplicate_line": "the claim line repeats an earlier one (same claim_id, or all values equal)",
    "service_outside_enrollment": "the date of service is outside every coverage spell",
    "unknown_group": "the group is neither self_help nor control (see group_map)",
    "negative_value": "an outcome is negative",
    "nonpositive_exposure": "person-time (member-months) is zero or negative",
}
REASONS["person"] = ("missing_value", "negative_value", "nonpositive_exposure", "duplicate_member")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(value) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def scan_sql(path: str, table: str | None = None) -> str:
    """A DuckDB table expression that reads ``path`` (CSV, Parquet, or a DuckDB table)."""
    p = Path(path)
    if not p.exists():
        raise DataValidationError(f"input file not found: {path}",
                                  [{"table": table, "column": None, "reason": "file_not_found",
                                    "count": 0, "examples": [str(path)]}])
    suffix = "".join(p.suffixes).lower()
    if p.is_dir() or suffix.endswith(".parquet"):
        glob = str(p / "**" / "*.parquet") if p.is_dir() else str(p)
        return f"read_parquet({_lit(glob)})"
    if suffix.endswith((".csv", ".csv.gz", ".tsv", ".txt")):
        # read as text: types and dates are checked (and reported) by the contract checks,
        # never guessed by a sniffer (which may read 03/05/2023 as 3 May)
        return f"read_csv({_lit(str(p))}, header=true, all_varchar=true)"
    raise DataValidationError(
        f"{table or 'input'}: cannot tell the format of {path}; use .csv, .parquet "
        "or a folder of Parquet files (or data.source: duckdb for a database file)")


@dataclass(frozen=True)
class LoadReport:
    """What happened at the door: rows in, accepted and quarantined, per table and reason."""

    counts: pd.DataFrame       # table, rows_in, accepted, quarantined
    quarantine: pd.DataFrame   # table, reason, description, rows, example_rows

    def balanced(self) -> bool:
        c = self.counts
        return bool((c.rows_in == c.accepted + c.quarantined).all())

    def check(self) -> str:
        """Confirm every source row is accounted for; return that as a sentence."""
        c = self.counts
        if not self.balanced():
            bad = c[c.rows_in != c.accepted + c.quarantined]
            raise DataValidationError(f"rows were lost between source and analysis: {bad.to_dict('records')}")
        return (f"All {int(c.rows_in.sum()):,} source rows are accounted for: "
                f"{int(c.accepted.sum()):,} accepted and {int(c.quarantined.sum()):,} quarantined "
                f"({', '.join(f'{r.table} {r.quarantined:,}' for r in c.itertuples())}).")


def _columns(con: duckdb.DuckDBPyConnection, relation: str) -> dict[str, str]:
    rows = con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()
    return {r[0]: r[1] for r in rows}


def _structural_checks(con, spec: TableSpec, src: str, mapping: dict[str, str],
                       date_format: str | None, failures: list[dict]) -> str | None:
    """Check one raw table; return a SELECT that yields contract-typed columns, or None."""
    cols = _columns(con, src)
    n = con.execute(f"SELECT count(*) FROM {src}").fetchall()[0][0]
    if n == 0:
        failures.append({"table": spec.name, "column": None, "reason": "empty_table",
                         "count": 0, "examples": []})
        return None
    select, ok = [], True
    roles_present = set()
    for col in spec.columns:
        source_name = mapping.get(col.name, col.name)
        if source_name not in cols:
            if spec.name == "members" and col.name == "birth_year":
                bd = mapping.get("birth_date", "birth_date")
                if bd in cols:
                    select.append(f"year(TRY_CAST({_q(bd)} AS DATE))::INTEGER AS birth_year")
                    roles_present.add(bd)
                    continue
            if col.required:
                near = difflib.get_close_matches(source_name, list(cols), n=1)
                failures.append({
                    "table": spec.name, "column": source_name, "reason": "missing_column",
                    "count": n,
                    "examples": [f"did you mean '{near[0]}'?"] if near else
                                [f"columns present: {', '.join(list(cols)[:12])}"],
                })
                ok = False
            elif col.name == "claim_id":
                pass  # duplicates then judged on all values
            else:
                select.append(f"NULL::{ {'date': 'DATE', 'float': 'DOUBLE'}.get(col.kind, 'VARCHAR') } "
                              f"AS {_q(col.name)}")
            continue
        roles_present.add(source_name)
        dtype = cols[source_name].upper()
        ref = _q(source_name)
        if col.kind == "date":
            if dtype == "DATE":
                expr = ref
            elif dtype.startswith("TIMESTAMP"):
                expr = f"CAST({ref} AS DATE)"
            else:
                text = f"CAST({ref} AS VARCHAR)"
                expr = (f"CAST(TRY_STRPTIME({text}, {_lit(date_format)}) AS DATE)" if date_format
                        else f"TRY_CAST({text} AS DATE)")
        elif col.kind in ("float", "int"):
            target = "DOUBLE" if col.kind == "float" else "BIGINT"
            expr = f"TRY_CAST({ref} AS {target})"
        else:
            expr = ref
        if expr != ref:
            bad_sql = (f"SELECT count(*), list(DISTINCT CAST({ref} AS VARCHAR))[1:5] FROM {src} "
                       f"WHERE {ref} IS NOT NULL AND ({expr}) IS NULL")
            nbad, examples = con.execute(bad_sql).fetchall()[0]
            if nbad:
                what = "unparseable_date" if col.kind == "date" else "wrong_type"
                hint = (" (set data.date_format, e.g. '%m/%d/%Y')" if col.kind == "date"
                        else f" (expected numbers, column type is {dtype})")
                failures.append({"table": spec.name, "column": source_name, "reason": what,
                                 "count": int(nbad), "examples": list(examples or []),
                                 "hint": hint})
                ok = False
        select.append(f"{expr} AS {_q(col.name)}")
    extras = [c for c in cols if c not in roles_present and c not in spec.names]
    select += [_q(c) for c in extras]
    return ", ".join(select) if ok else None


def _format_failures(failures: list[dict]) -> str:
    lines = [f"the input data break the data contract ({len(failures)} problem(s)):"]
    for f in failures:
        where = f["table"] + (f".{f['column']}" if f.get("column") else "")
        ex = f"; examples: {', '.join(map(str, f['examples']))}" if f.get("examples") else ""
        lines.append(f"  {where}: {f['reason']} ({f['count']} rows){f.get('hint', '')}{ex}")
    lines.append("See docs/data-contract.md for what each table needs.")
    return "\n".join(lines)


def check_claims_tables(con: duckdb.DuckDBPyConnection, sources: dict[str, str],
                        columns: dict[str, dict[str, str]] | None = None,
                        date_format: str | None = None) -> dict[str, str]:
    """Check the four claims tables' structure: each is there and not empty, has every
    required column (under its mapped name), and every date or number column can be read
    as one. Rows are not judged here (that is :func:`load_claims`' quarantine).

    Parameters
    ----------
    con : DuckDB connection in which ``sources`` can be read.
    sources, columns, date_format : as for :func:`load_claims`.

    Returns
    -------
    dict
        Table name -> the SELECT list that reads it with contract names and types.

    Raises
    ------
    DataValidationError
        With every structural problem found, across all tables.
    """
    columns = columns or {}
    failures: list[dict] = []
    typed: dict[str, str] = {}
    for name, spec in CLAIMS_TABLES.items():
        if name not in sources:
            failures.append({"table": name, "column": None, "reason": "missing_table",
                             "count": 0, "examples": []})
            continue
        sel = _structural_checks(con, spec, sources[name], columns.get(name, {}),
                                 date_format, failures)
        if sel is not None:
            typed[name] = sel
    if failures:
        raise DataValidationError(_format_failures(failures), failures)
    return typed


def load_claims(con: duckdb.DuckDBPyConnection, sources: dict[str, str],
                columns: dict[str, dict[str, str]] | None = None,
                category_map: dict[str, str] | None = None,
                group_map: dict[str, str] | None = None,
                date_format: str | None = None,
                max_line_amount: float = 10_000_000) -> LoadReport:
    """Load the four contract tables into ``con``, check them, quarantine bad rows.

    Parameters
    ----------
    con : DuckDB connection that receives the tables ``members``, ``enrollment``,
        ``encounters``, ``exposure`` (accepted rows) and ``quarantine``.
    sources : table name -> DuckDB table expression (see :func:`scan_sql`) or table name.
    columns : per table, contract role -> the user's column name.
    category_map : the user's category code -> contract category.
    group_map : the user's group label -> ``self_help`` or ``control``.
    date_format : strptime format for dates stored as text (ISO dates need none).
    max_line_amount : claim lines with an allowed or paid amount above this are
        quarantined as ``absurd_amount``.

    Returns
    -------
    LoadReport
        Row counts in / accepted / quarantined per table and quarantine counts by reason.

    Raises
    ------
    DataValidationError
        With every structural problem found, across all tables.
    """
    typed = check_claims_tables(con, sources, columns, date_format)
    id_type = "BIGINT" if all(_integer_ids(con, f"(SELECT {typed[n]} FROM {sources[n]})")
                              for n in CLAIMS_TABLES) else "VARCHAR"

    for name in CLAIMS_TABLES:
        con.execute(f"CREATE OR REPLACE TEMP TABLE raw_{name} AS "
                    f"SELECT row_number() OVER () AS _row, * REPLACE "
                    f"(CAST(member_id AS {id_type}) AS member_id) "
                    f"FROM (SELECT {typed[name]} FROM {sources[name]})")

    con.execute("CREATE OR REPLACE TABLE load_counts AS " + " UNION ALL ".join(
        f"SELECT {_lit(name)} AS \"table\", count(*) AS rows_in FROM raw_{name}"
        for name in CLAIMS_TABLES))

    cmap = {c: c for c in CATEGORIES} | dict(category_map or {})
    gmap = {a: a for a in ARMS} | dict(group_map or {})
    values = lambda m: ", ".join(f"({_lit(k)}, {_lit(v)})" for k, v in m.items())  # noqa: E731
    con.execute(f"CREATE OR REPLACE TEMP TABLE _category_map AS "
                f"SELECT * FROM (VALUES {values(cmap)}) t(code, category)")
    con.execute(f"CREATE OR REPLACE TEMP TABLE _group_map AS "
                f"SELECT * FROM (VALUES {values(gmap)}) t(code, arm)")

    # members: first row per member_id is kept
    con.execute("""
        CREATE OR REPLACE TEMP TABLE chk_members AS
        SELECT *, CASE
            WHEN member_id IS NULL THEN 'missing_value'
            WHEN row_number() OVER (PARTITION BY member_id ORDER BY _row) > 1 THEN 'duplicate_member'
          END AS _reason
        FROM raw_members""")
    con.execute("CREATE OR REPLACE TEMP TABLE ok_members AS "
                "SELECT member_id FROM chk_members WHERE _reason IS NULL")

    con.execute("""
        CREATE OR REPLACE TEMP TABLE chk_enrollment AS
        WITH e AS (
          SELECT r.*, (m.member_id IS NOT NULL) AS _known,
                 max(r.end_date) OVER (PARTITION BY r.member_id ORDER BY r.start_date, r._row
                     ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS _prev_end
          FROM raw_enrollment r LEFT JOIN ok_members m USING (member_id)
        )
        SELECT * EXCLUDE (_known, _prev_end), CASE
            WHEN member_id IS NULL OR start_date IS NULL OR end_date IS NULL THEN 'missing_value'
            WHEN end_date < start_date THEN 'end_before_start'
            WHEN NOT _known THEN 'unknown_member'
            WHEN _prev_end >= start_date THEN 'overlapping_spell'
          END AS _reason
        FROM e""")
    # an overlap judged against a spell that is itself bad would be unfair: re-judge on
    # the good spells only (spells with end < start never count as coverage)
    con.execute("""
        CREATE OR REPLACE TEMP TABLE ok_spells AS
        SELECT member_id, start_date, end_date FROM chk_enrollment WHERE _reason IS NULL""")

    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE chk_encounters AS
        WITH e AS (
          SELECT r.*, cm.category AS _mapped,
                 (m.member_id IS NOT NULL) AS _known,
                 EXISTS (SELECT 1 FROM ok_spells s WHERE s.member_id = r.member_id
                         AND r.service_date BETWEEN s.start_date AND s.end_date) AS _enrolled
          FROM raw_encounters r
          LEFT JOIN _category_map cm ON cm.code = CAST(r.category AS VARCHAR)
          LEFT JOIN ok_members m USING (member_id)
        )
        SELECT * EXCLUDE (_known, _enrolled), CASE
            WHEN member_id IS NULL OR service_date IS NULL OR category IS NULL
                 OR allowed_amount IS NULL THEN 'missing_value'
            WHEN _mapped IS NULL THEN 'unknown_category'
            WHEN allowed_amount < 0 OR coalesce(paid_amount, 0) < 0 THEN 'negative_amount'
            WHEN allowed_amount > {float(max_line_amount)!r}
                 OR coalesce(paid_amount, 0) > {float(max_line_amount)!r} THEN 'absurd_amount'
            WHEN service_date < DATE '1900-01-01' OR service_date > DATE '2100-12-31'
                 OR end_date > DATE '2100-12-31' THEN 'implausible_date'
            WHEN end_date < service_date THEN 'end_before_start'
            WHEN NOT _known THEN 'unknown_member'
            WHEN row_number() OVER (PARTITION BY {_dup_key(con)} ORDER BY _row) > 1 THEN 'duplicate_line'
            WHEN NOT _enrolled THEN 'service_outside_enrollment'
          END AS _reason
        FROM e""")

    con.execute("""
        CREATE OR REPLACE TEMP TABLE chk_exposure AS
        WITH e AS (
          SELECT r.*, g.arm AS _mapped, (m.member_id IS NOT NULL) AS _known
          FROM raw_exposure r
          LEFT JOIN _group_map g ON g.code = CAST(r."group" AS VARCHAR)
          LEFT JOIN ok_members m USING (member_id)
        )
        SELECT * EXCLUDE (_known), CASE
            WHEN member_id IS NULL OR index_date IS NULL OR "group" IS NULL THEN 'missing_value'
            WHEN _mapped IS NULL THEN 'unknown_group'
            WHEN NOT _known THEN 'unknown_member'
            WHEN row_number() OVER (PARTITION BY member_id ORDER BY _row) > 1 THEN 'duplicate_member'
          END AS _reason
        FROM e""")

    mapped = {"encounters": "category", "exposure": "group"}
    parts = []
    for name in CLAIMS_TABLES:
        keep = "* EXCLUDE (_row, _reason)"
        if name in mapped:
            keep = f'* EXCLUDE (_row, _reason, _mapped) REPLACE (_mapped AS "{mapped[name]}")'
        con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT {keep} "
                    f"FROM chk_{name} WHERE _reason IS NULL ORDER BY _row")
        parts.append(f"SELECT {_lit(name)} AS \"table\", _row AS source_row, _reason AS reason, "
                     f"CAST(to_json(t) AS VARCHAR) AS record "
                     f"FROM (SELECT * EXCLUDE (_reason{', _mapped' if name in mapped else ''}) FROM chk_{name}) t "
                     f"JOIN (SELECT _row, _reason FROM chk_{name} WHERE _reason IS NOT NULL) USING (_row)")
    con.execute("CREATE OR REPLACE TABLE quarantine AS " + " UNION ALL ".join(parts)
                + " ORDER BY \"table\", source_row")
    for name in CLAIMS_TABLES:
        con.execute(f"DROP TABLE IF EXISTS chk_{name}")
        con.execute(f"DROP TABLE IF EXISTS raw_{name}")
    return load_report(con)


def _integer_ids(con, relation: str) -> bool:
    """True when member ids are integers, or text that is exactly an integer ('17', not '017')."""
    dtype = _columns(con, relation)["member_id"].upper()
    if dtype in ("BIGINT", "INTEGER", "SMALLINT", "TINYINT", "UINTEGER", "USMALLINT", "UTINYINT"):
        return True
    if dtype != "VARCHAR":
        return False
    bad = con.execute(f"SELECT count(*) FROM {relation} WHERE member_id IS NOT NULL AND "
                      f"coalesce(CAST(TRY_CAST(member_id AS BIGINT) AS VARCHAR) <> member_id, true)"
                      ).fetchall()[0][0]
    return bad == 0


def _dup_key(con) -> str:
    cols = _columns(con, "raw_encounters")
    if "claim_id" in cols:
        return "claim_id"
    return ", ".join(_q(c) for c in cols if c != "_row")


def load_report(con: duckdb.DuckDBPyConnection) -> LoadReport:
    """Counts per table (rows in = accepted + quarantined) and quarantine reasons."""
    q = con.execute("""
        SELECT "table", reason, count(*) AS rows,
               list(source_row ORDER BY source_row)[1:5] AS example_rows
        FROM quarantine GROUP BY ALL""").df()
    order = {(t, r): i for t, rs in REASONS.items() for i, r in enumerate(rs)}
    q["description"] = q["reason"].map(REASON_TEXT)
    q = q.assign(_o=[order.get((t, r), 99) for t, r in zip(q["table"], q["reason"])])
    q = q.assign(_t=q["table"].map({t: i for i, t in enumerate(REASONS)}))
    q = q.sort_values(["_t", "_o"]).drop(columns=["_o", "_t"]).reset_index(drop=True)
    q = q[["table", "reason", "description", "rows", "example_rows"]]
    rows = []
    for name, rows_in in con.execute('SELECT "table", rows_in FROM load_counts').fetchall():
        stored = "persons" if name == "person" else name
        accepted = con.execute(f"SELECT count(*) FROM {stored}").fetchall()[0][0]
        quarantined = int(q.loc[q["table"] == name, "rows"].sum())
        rows.append({"table": name, "rows_in": int(rows_in),
                     "accepted": int(accepted), "quarantined": quarantined})
    return LoadReport(pd.DataFrame(rows), q)
