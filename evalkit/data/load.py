"""Load the contract tables into DuckDB, enforcing the data contract at the door.

Two kinds of problem are told apart:

* **structural** problems (a missing column, a column of the wrong type, unparseable
  dates, an empty table) stop the load with one :class:`DataValidationError` that lists
  *every* such problem with its table, column, count and example values;
* **row-level** problems (negative amount, service outside enrollment, end before start,
  unknown member, duplicate line, ...) set the row aside in the ``quarantine`` table with
  a reason code. Each source row is either accepted or quarantined (with its first
  failing reason), so rows in = rows accepted + rows quarantined, always. What the
  quarantine costs in persons, visits, nights and dollars (persons without any coverage,
  unmapped category codes, inpatient stays without a usable discharge date) is written to
  the table ``load_notes`` (:mod:`evalkit.data.notes`).

Only inpatient stays read a claim line's end date (the discharge date): a stay with no
discharge date on any of its accepted lines is quarantined as ``missing_end_date``, one
discharged before admission as ``end_before_start``. On any other line an impossible or
unreadable end date costs nothing: the visit is kept, the end date cleared, and the line
counted in ``load_notes``.

Everything runs inside DuckDB: claim lines are never pulled into pandas.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from ..errors import DataValidationError
from .contract import ARMS, CATEGORIES, CLAIMS_TABLES, TableSpec
from .csvfile import _lit, csv_sql
from .ids import member_id_sql
from .notes import note_sentences, public_notes, read_notes, record_notes

#: Dates after this are placeholders (implausible_date).
_LAST_DATE = "DATE '2100-12-31'"

#: Row-level reason codes, per table, in the order they are tried.
REASONS = {
    "members": ("missing_value", "duplicate_member"),
    "enrollment": ("invalid_date", "missing_value", "end_before_start", "unknown_member",
                   "overlapping_spell"),
    "encounters": ("invalid_date", "missing_value", "non_finite", "unknown_category",
                   "negative_amount", "absurd_amount", "implausible_date", "end_before_start", "unknown_member",
                   "duplicate_line", "service_outside_enrollment", "missing_end_date"),
    "exposure": ("invalid_date", "missing_value", "unknown_group", "unknown_member",
                 "duplicate_member"),
}

REASON_TEXT = {
    "missing_value": "a required value is empty (or NaN)",
    "invalid_date": "a date cannot be read (an impossible calendar date such as 2023-02-30, "
                    "or another format); at most data.max_invalid_dates of the column (claim "
                    "lines: the end date only on inpatient lines)",
    "non_finite": "a number is infinite",
    "invalid_event": "the event indicator is neither 0 nor 1",
    "duplicate_member": "the member appears more than once (the first row is kept)",
    "end_before_start": "the end date is before the start date (for claim lines: inpatient "
                        "stays only; other categories do not use the end date)",
    "missing_end_date": "an inpatient stay has no discharge date on any of its accepted "
                        "lines, so its nights cannot be counted",
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
REASONS["person"] = ("missing_value", "non_finite", "negative_value", "nonpositive_exposure",
                     "invalid_event", "duplicate_member")


#: Per contract column kind, the source types whose every value reads as that kind: their
#: columns need no check for unreadable values.
_ALWAYS_READ = {
    "float": ("DOUBLE", "FLOAT", "REAL", "DECIMAL", "HUGEINT", "UHUGEINT", "BIGINT", "UBIGINT",
              "INTEGER", "UINTEGER", "SMALLINT", "USMALLINT", "TINYINT", "UTINYINT"),
    "int": ("BIGINT", "INTEGER", "UINTEGER", "SMALLINT", "USMALLINT", "TINYINT", "UTINYINT"),
}


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def scan_sql(path: str, table: str | None = None, encoding: str = "utf-8") -> str:
    """A DuckDB table expression that reads ``path`` (CSV, Parquet, or a DuckDB table).

    A CSV file is checked line by line first (:func:`evalkit.data.csvfile.csv_sql`):
    a line that cannot be read is an error naming the file, the line and the likely
    cause. ``encoding`` is the text encoding of CSV files (``data.encoding``).
    """
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
        return csv_sql(str(p), table, encoding)
    raise DataValidationError(
        f"{table or 'input'}: cannot tell the format of {path}; use .csv, .parquet "
        "or a folder of Parquet files (or data.source: duckdb for a database file)")


@dataclass(frozen=True)
class LoadReport:
    """What happened at the door: rows in, accepted and quarantined, per table and reason."""

    counts: pd.DataFrame       # table, rows_in, accepted, quarantined
    quarantine: pd.DataFrame   # table, reason, description, rows, example_rows
    #: what was set aside or noted, in persons, lines, visits, nights and dollars
    #: (:mod:`evalkit.data.notes`); empty in person and summary mode
    notes: pd.DataFrame = field(default_factory=lambda: read_notes(None))

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

    def note_sentences(self, public: bool = False, min_cell: int = 11) -> list[str]:
        """The coverage gaps, unmapped codes and end-date problems as sentences (counts
        and dollars only, no member ids), for the console and the data-quality workbook.
        ``public``: from the figures a public run shows (:func:`public_notes`): rows of
        fewer than ``min_cell`` persons say so, without their figures."""
        if public:
            return note_sentences(public_notes(self.notes, min_cell), min_cell)
        return note_sentences(self.notes, min_cell)


def _columns(con: duckdb.DuckDBPyConnection, relation: str) -> dict[str, str]:
    rows = con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()
    return {r[0]: r[1] for r in rows}


def _structural_checks(con, spec: TableSpec, src: str, mapping: dict[str, str],
                       date_format: str | None, failures: list[dict],
                       max_invalid_dates: float = 0.01,
                       scoped: dict[str, str] | None = None) -> str | None:
    """Check one raw table; return a SELECT that yields contract-typed columns, or None.

    A date column of which at most ``max_invalid_dates`` of the values cannot be read
    passes; the SELECT then has ``_invalid_date`` (the column and the text that could
    not be read) on those rows, which are quarantined as ``invalid_date``. It is NULL
    on every other row.

    ``scoped`` maps a date column to an SQL condition on the source row: only rows that
    meet it are judged (and counted toward the threshold). On the other rows an
    unreadable value is read as NULL and flagged in the boolean column
    ``_unread_<column>`` (the end date of claim lines is read for inpatient lines only).
    """
    scoped = scoped or {}
    cols = _columns(con, src)
    n = con.execute(f"SELECT count(*) FROM {src}").fetchall()[0][0]
    if n == 0:
        failures.append({"table": spec.name, "column": None, "reason": "empty_table",
                         "count": 0, "examples": []})
        return None
    select, ok = [], True
    invalid_dates = []     # SQL: 'column=text' where a date could not be read, else NULL
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
        if expr != ref and dtype.split("(")[0] not in _ALWAYS_READ.get(col.kind, ()):
            unread = f"{ref} IS NOT NULL AND ({expr}) IS NULL"
            if col.name in scoped:
                select.append(f"coalesce(NOT ({scoped[col.name]}) AND {unread}, false) "
                              f"AS {_q('_unread_' + col.name)}")
                unread = f"coalesce({scoped[col.name]}, false) AND {unread}"
            # a date is described by its pattern (digits as 9, letters as a) and its
            # source rows, never its value: the message reaches the console and results.json
            shown = (f"regexp_replace(regexp_replace(CAST({ref} AS VARCHAR), '[0-9]', '9', 'g'), "
                     f"'[A-Za-z]', 'a', 'g')" if col.kind == "date" else f"CAST({ref} AS VARCHAR)")
            nbad, given = con.execute(f"SELECT count(*) FILTER (WHERE {unread}), count({ref}) "
                                      f"FROM {src}").fetchall()[0]
            if nbad:        # examples and source rows of the values that cannot be read
                examples, rows = con.execute(
                    f"SELECT list(DISTINCT {shown} ORDER BY {shown})[1:5], "
                    f"list(_source_row ORDER BY _source_row)[1:5] "
                    f"FROM (SELECT row_number() OVER () AS _source_row, * FROM {src}) "
                    f"WHERE {unread}").fetchall()[0]
            if nbad and col.kind == "date":
                examples = [f"pattern {e}" for e in examples or []] + [
                    f"source row{'s' if len(rows) > 1 else ''} "
                    f"{', '.join(map(str, rows))}{' ...' if nbad > len(rows) else ''}"]
            if nbad and col.kind == "date" and nbad <= max_invalid_dates * given:
                invalid_dates.append(f"CASE WHEN {unread} THEN {_lit(col.name + '=')} || "
                                     f"CAST({ref} AS VARCHAR) END")
            elif nbad:
                what = "unparseable_date" if col.kind == "date" else "wrong_type"
                hint = (f" ({nbad / given:.1%} of the {given:,} dates cannot be read, more "
                        f"than data.max_invalid_dates ({max_invalid_dates:.1%}): if the dates "
                        f"are written another way, set data.date_format, e.g. '%m/%d/%Y')"
                        if col.kind == "date"
                        else f" (expected numbers, column type is {dtype})")
                failures.append({"table": spec.name, "column": source_name, "reason": what,
                                 "count": int(nbad), "examples": list(examples or []),
                                 "hint": hint})
                ok = False
        select.append(f"{expr} AS {_q(col.name)}")
    for name in scoped:
        if not any(s.endswith(_q("_unread_" + name)) for s in select):
            select.append(f"false AS {_q('_unread_' + name)}")
    extras = [c for c in cols if c not in roles_present and c not in spec.names]
    select += [_q(c) for c in extras]
    select.append(f"NULLIF(concat_ws('; ', {', '.join(invalid_dates)}), '') AS _invalid_date"
                  if invalid_dates else "NULL::VARCHAR AS _invalid_date")
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
                        date_format: str | None = None,
                        max_invalid_dates: float = 0.01,
                        category_map: dict[str, str] | None = None) -> dict[str, str]:
    """Check the four claims tables' structure: each is there and not empty, has every
    required column (under its mapped name), and every date or number column can be read
    as one. Rows are not judged here (that is :func:`load_claims`' quarantine).

    Parameters
    ----------
    con : DuckDB connection in which ``sources`` can be read.
    sources, columns, date_format, max_invalid_dates, category_map : as for
        :func:`load_claims` (the category map says which lines are inpatient: only their
        end dates, the discharge dates, are judged).

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
    cmap = {c: c for c in CATEGORIES} | dict(category_map or {})
    inpatient = ", ".join(_lit(k) for k, v in cmap.items() if v == "inpatient")
    category = columns.get("encounters", {}).get("category", "category")
    # only inpatient lines read the end date (the discharge date); without a category
    # column the load stops anyway (missing_column)
    scope = {"encounters": {"end_date": f"CAST({_q(category)} AS VARCHAR) IN ({inpatient})"}
             if "encounters" in sources and category in _columns(con, sources["encounters"])
             else {}}
    for name, spec in CLAIMS_TABLES.items():
        if name not in sources:
            failures.append({"table": name, "column": None, "reason": "missing_table",
                             "count": 0, "examples": []})
            continue
        sel = _structural_checks(con, spec, sources[name], columns.get(name, {}),
                                 date_format, failures, max_invalid_dates, scope.get(name))
        if sel is not None:
            typed[name] = sel
    if failures:
        raise DataValidationError(_format_failures(failures), failures)
    return typed


#: The checked claim lines with their source rows (``_row``, from 1): ``chk_encounters``
#: holds the lines in source order (:func:`_check_encounters`).
ENCOUNTER_ROWS = "(SELECT rowid + 1 AS _row, * FROM chk_encounters)"


def _check_encounters(con: duckdb.DuckDBPyConnection, raw: str, max_line_amount: float,
                      category_map: dict[str, str]) -> None:
    """Judge every claim line of the relation ``raw`` (the source lines, in source order)
    into the table ``chk_encounters``: the line, its mapped category, its quarantine
    reason or NULL, and whether its end date goes unused; needs ``ok_members`` and
    ``ok_spells``. ``category_map``: every category code -> contract category.

    ``chk_encounters`` keeps the lines in source order (it is made from ``raw`` alone,
    with DuckDB's insertion order kept, then updated in place), so the accepted lines can
    be copied out without a sort, and the lines are copied once. A line's source row is
    its ``rowid`` plus one (:data:`ENCOUNTER_ROWS` reads it as ``_row``): numbering the
    lines with ``row_number() OVER ()`` runs on one thread (15.6 s against 5.6 s for
    50.6M lines read into a table in parallel). Each reason is set on the lines that
    have none yet, in the order of ``REASONS``: a line gets its first failing reason."""
    amounts = ("allowed_amount", "paid_amount")
    nan = " OR ".join(f"coalesce(isnan({c}), false)" for c in amounts)
    inf = " OR ".join(f"coalesce(isinf({c}), false)" for c in amounts)
    limit = f"{float(max_line_amount)!r}"
    mapped = ("CASE CAST(category AS VARCHAR) "
              + " ".join(f"WHEN {_lit(k)} THEN {_lit(v)}" for k, v in category_map.items())
              + " END")
    keep = con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0][0]
    con.execute("SET preserve_insertion_order = true")     # the rowid is the source row
    try:
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE chk_encounters AS
            SELECT * EXCLUDE (_unread_end_date), CASE
                WHEN _invalid_date IS NOT NULL THEN 'invalid_date'
                WHEN member_id IS NULL OR service_date IS NULL OR category IS NULL
                     OR allowed_amount IS NULL OR {nan} THEN 'missing_value'
                WHEN {inf} THEN 'non_finite'
                WHEN _mapped IS NULL THEN 'unknown_category'
                WHEN allowed_amount < 0 OR coalesce(paid_amount, 0) < 0 THEN 'negative_amount'
                WHEN allowed_amount > {limit} OR coalesce(paid_amount, 0) > {limit}
                     THEN 'absurd_amount'
                WHEN service_date < DATE '1900-01-01' OR service_date > {_LAST_DATE}
                     OR (_mapped = 'inpatient' AND end_date > {_LAST_DATE}) THEN 'implausible_date'
                WHEN _mapped = 'inpatient' AND end_date < service_date THEN 'end_before_start'
              END AS _reason,
              -- only inpatient stays read the end date: an impossible or unreadable one on
              -- another line is noted (load_notes) and cleared, and the visit is kept
              coalesce(_mapped <> 'inpatient'
                       AND (end_date < service_date OR end_date > {_LAST_DATE}
                            OR _unread_end_date), false) AS _end_unused
            FROM (SELECT *, {mapped} AS _mapped FROM {raw})""")
    finally:
        con.execute(f"SET preserve_insertion_order = {str(bool(keep)).lower()}")

    def flag(reason: str, rows: str) -> None:
        con.execute(f"UPDATE chk_encounters SET _reason = {_lit(reason)} "
                    f"WHERE _reason IS NULL AND rowid IN ({rows})")

    flag("unknown_member", """
        SELECT c.rowid FROM chk_encounters c LEFT JOIN ok_members m ON m.member_id = c.member_id
        WHERE c._reason IS NULL AND m.member_id IS NULL""")
    # every line of a key after its first (by source row); a grouping finds the keys that
    # repeat (few), so the lines need no sort
    key = _dup_key(con)
    same = " AND ".join(f"c.{k} IS NOT DISTINCT FROM d.{k}" for k in key)
    flag("duplicate_line", f"""
        SELECT c.rowid FROM chk_encounters c
        JOIN (SELECT {", ".join(key)}, min(rowid) AS _first_row FROM chk_encounters
              WHERE _reason IS NULL GROUP BY ALL HAVING count(*) > 1) d ON {same}
        WHERE c._reason IS NULL AND c.rowid > d._first_row""")
    # accepted spells never overlap (a spell that starts before an earlier one ends is
    # quarantined as overlapping_spell): a line lies in one of them at most
    flag("service_outside_enrollment", """
        SELECT c.rowid FROM chk_encounters c
        LEFT JOIN ok_spells s ON s.member_id = c.member_id
                              AND c.service_date BETWEEN s.start_date AND s.end_date
        WHERE c._reason IS NULL AND s.member_id IS NULL""")
    # a stay's discharge date is read from its accepted lines only: an undated line is
    # set aside when no accepted line of the same stay has a discharge date
    con.execute("""
        UPDATE chk_encounters c SET _reason = 'missing_end_date'
        WHERE _reason IS NULL AND _mapped = 'inpatient' AND end_date IS NULL
          AND NOT EXISTS (SELECT 1 FROM chk_encounters d
                          WHERE d._reason IS NULL AND d._mapped = 'inpatient'
                            AND d.member_id = c.member_id AND d.service_date = c.service_date
                            AND d.end_date IS NOT NULL)""")


def _split_accepted(con: duckdb.DuckDBPyConnection) -> None:
    """Write the accepted rows of every ``chk_`` table to the contract table of its name
    (mapped categories and groups in place of the user's codes) and the rest, with
    their reason and the whole record, to ``quarantine``."""
    mapped = {"encounters": "category", "exposure": "group"}
    parts = []
    for name in CLAIMS_TABLES:
        rel = ENCOUNTER_ROWS if name == "encounters" else f"chk_{name}"
        keep = "* EXCLUDE (_row, _reason, _invalid_date)"
        if name == "encounters":
            keep = ('* EXCLUDE (_row, _reason, _mapped, _end_unused, _invalid_date) '
                    'REPLACE (_mapped AS "category", '
                    'CASE WHEN _end_unused THEN NULL ELSE end_date END AS end_date)')
        elif name in mapped:
            keep = (f'* EXCLUDE (_row, _reason, _mapped, _invalid_date) '
                    f'REPLACE (_mapped AS "{mapped[name]}")')
        # chk_encounters is in source order already (_check_encounters), and a filter of
        # one table keeps its order: only the other (small) tables are sorted
        order = "" if name == "encounters" else " ORDER BY _row"
        con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT {keep} "
                    f"FROM {rel} WHERE _reason IS NULL{order}")
        # the whole record but the check's own columns, as to_json of the row would give
        hidden = {"_reason", *(["_mapped"] if name in mapped else []),
                  *(["_end_unused"] if name == "encounters" else [])}
        record = ", ".join(f"{_q(c)} := {_q(c)}" for c in _columns(con, rel) if c not in hidden)
        parts.append(f"SELECT {_lit(name)} AS \"table\", _row AS source_row, _reason AS reason, "
                     f"CAST(to_json(struct_pack({record})) AS VARCHAR) AS record "
                     f"FROM {rel} WHERE _reason IS NOT NULL")
    con.execute("CREATE OR REPLACE TABLE quarantine AS " + " UNION ALL ".join(parts)
                + " ORDER BY \"table\", source_row")


def load_claims(con: duckdb.DuckDBPyConnection, sources: dict[str, str],
                columns: dict[str, dict[str, str]] | None = None,
                category_map: dict[str, str] | None = None,
                group_map: dict[str, str] | None = None,
                date_format: str | None = None,
                max_line_amount: float = 10_000_000,
                max_invalid_dates: float = 0.01) -> LoadReport:
    """Load the four contract tables into ``con``, check them, quarantine bad rows.

    Parameters
    ----------
    con : DuckDB connection that receives the tables ``members``, ``enrollment``,
        ``encounters``, ``exposure`` (accepted rows), ``quarantine`` and ``load_notes``.
    sources : table name -> DuckDB table expression (see :func:`scan_sql`) or table name.
    columns : per table, contract role -> the user's column name.
    category_map : the user's category code -> contract category.
    group_map : the user's group label -> ``self_help`` or ``control``.
    date_format : strptime format for dates stored as text (ISO dates need none).
    max_line_amount : claim lines with an allowed or paid amount above this are
        quarantined as ``absurd_amount``.
    max_invalid_dates : share of a date column's values that may be unreadable (an
        impossible date such as 2023-02-30): up to it, those rows are quarantined as
        ``invalid_date``; above it, the column is a structural error (``unparseable_date``,
        most likely a date format that needs ``date_format``).

    Returns
    -------
    LoadReport
        Row counts in / accepted / quarantined per table and quarantine counts by reason.

    Raises
    ------
    DataValidationError
        With every structural problem found, across all tables.
    """
    columns = columns or {}
    typed = check_claims_tables(con, sources, columns, date_format, max_invalid_dates,
                                category_map)
    ids = member_id_sql(con, {n: f"(SELECT {typed[n]} FROM {sources[n]})" for n in CLAIMS_TABLES},
                        {n: columns.get(n, {}).get("member_id", "member_id") for n in CLAIMS_TABLES})

    # the source rows numbered in source order; the claim lines are read straight into
    # their check table (_check_encounters), which numbers them by its rowid, the other
    # tables into raw_<name>
    raw = {name: f"(SELECT {'' if name == 'encounters' else 'row_number() OVER () AS _row, '}"
                 f"* REPLACE ({ids[name]} AS member_id) "
                 f"FROM (SELECT {typed[name]} FROM {sources[name]}))" for name in CLAIMS_TABLES}
    for name in CLAIMS_TABLES:
        if name != "encounters":
            con.execute(f"CREATE OR REPLACE TEMP TABLE raw_{name} AS SELECT * FROM {raw[name]}")

    cmap = {c: c for c in CATEGORIES} | dict(category_map or {})
    gmap = {a: a for a in ARMS} | dict(group_map or {})
    values = lambda m: ", ".join(f"({_lit(k)}, {_lit(v)})" for k, v in m.items())  # noqa: E731
    con.execute(f"CREATE OR REPLACE TEMP TABLE _group_map AS "
                f"SELECT * FROM (VALUES {values(gmap)}) t(code, arm)")

    # members: first row per member_id is kept
    con.execute("""
        CREATE OR REPLACE TEMP TABLE chk_members AS
        SELECT *, CASE
            WHEN _invalid_date IS NOT NULL THEN 'invalid_date'
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
            WHEN _invalid_date IS NOT NULL THEN 'invalid_date'
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

    _check_encounters(con, raw["encounters"], max_line_amount, cmap)
    con.execute("CREATE OR REPLACE TABLE load_counts AS " + " UNION ALL ".join(
        f"SELECT {_lit(name)} AS \"table\", count(*) AS rows_in FROM "
        f"{'chk' if name == 'encounters' else 'raw'}_{name}" for name in CLAIMS_TABLES))

    con.execute("""
        CREATE OR REPLACE TEMP TABLE chk_exposure AS
        WITH e AS (
          SELECT r.*, g.arm AS _mapped, (m.member_id IS NOT NULL) AS _known
          FROM raw_exposure r
          LEFT JOIN _group_map g ON g.code = CAST(r."group" AS VARCHAR)
          LEFT JOIN ok_members m USING (member_id)
        ), f AS (
          SELECT *, CASE
            WHEN _invalid_date IS NOT NULL THEN 'invalid_date'
            WHEN member_id IS NULL OR index_date IS NULL OR "group" IS NULL THEN 'missing_value'
            WHEN _mapped IS NULL THEN 'unknown_group'
            WHEN NOT _known THEN 'unknown_member'
          END AS _first
          FROM e
        )
        SELECT * EXCLUDE (_known, _first), CASE
            WHEN _first IS NOT NULL THEN _first
            WHEN row_number() OVER (PARTITION BY _first IS NULL, member_id ORDER BY _row) > 1
                 THEN 'duplicate_member'
          END AS _reason
        FROM f""")

    _split_accepted(con)
    record_notes(con)
    for name in CLAIMS_TABLES:
        con.execute(f"DROP TABLE IF EXISTS chk_{name}")
        con.execute(f"DROP TABLE IF EXISTS raw_{name}")
    return load_report(con)


def _dup_key(con) -> list[str]:
    """The columns of ``chk_encounters`` that make two claim lines the same line: the
    claim id, or without one every column of the source."""
    cols = _columns(con, "chk_encounters")
    if "claim_id" in cols:
        return ["claim_id"]
    return [_q(c) for c in cols
            if c not in ("_row", "_invalid_date", "_mapped", "_reason", "_end_unused")]


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
    return LoadReport(pd.DataFrame(rows), q, read_notes(con))
