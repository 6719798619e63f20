"""Person-level mode: one row per member with outcomes already computed.

Many research data sets arrive this way. The params map the user's columns onto roles
(id, treatment, outcomes, exposure, covariates); structural problems stop the load with
every problem listed; row-level problems (an empty value in a used column, a negative
outcome, person-time that is not positive) are quarantined with a reason.
"""
from __future__ import annotations

import difflib

import duckdb

from ..errors import DataValidationError
from .load import _columns, _lit, _q


def _covariate_sql(con, source: str, column: str, type_: str) -> str:
    """A covariate as stored. Text (CSV files are read as text) whose every value is a
    whole number becomes BIGINT, and whose every value is a number DOUBLE, so that models
    use it rather than leave it out (and ``C(x)`` levels read ``1``, not ``1.0``); text
    with any other value stays text (a categorical covariate)."""
    q = _q(column)
    if type_.upper().startswith("VARCHAR"):
        x = f"TRY_CAST({q} AS DOUBLE)"     # (a cast of '2.5' to BIGINT would round it)
        not_num, not_int = con.execute(
            f"SELECT count(*) FILTER (WHERE {x} IS NULL), "
            f"count(*) FILTER (WHERE {x} IS NULL OR {x} <> floor({x})) "
            f"FROM {source} WHERE {q} IS NOT NULL").fetchall()[0]
        if not not_int:
            return f"CAST({x} AS BIGINT) AS {q}"
        if not not_num:
            return f"TRY_CAST({q} AS DOUBLE) AS {q}"
    return q


def load_person(con: duckdb.DuckDBPyConnection, source: str, treatment: str | None, treated_value,
                outcomes: list[str], exposure: str | None = None, covariates: list[str] = (),
                id: str | None = None, *, duration: str | None = None, event: str | None = None,
                groups: str | None = None, signed: list[str] = ()) -> None:
    """Load a person-level table into ``persons`` (accepted) and ``quarantine``.

    ``persons`` has: member_id (the id column, or the row number), group (``self_help``
    where treatment equals ``treated_value``, else ``control``; absent when ``treatment``
    is None), the outcome and covariate columns under their own names, and
    ``member_months`` when ``exposure`` is given. Time-to-event data keep ``duration``
    (a number >= 0) and ``event`` (0 or 1) under their own names; a k-level grouping
    column ``groups`` is kept under its own name as text.

    Rows whose ``duration`` or an outcome not listed in ``signed`` is negative are
    quarantined as ``negative_value``; rows whose
    ``event`` is not 0 or 1 as ``invalid_event``.
    """
    if treatment is None and groups is None:
        raise DataValidationError("person-level data need a treatment (two arms) or a groups "
                                  "column (k groups)")
    timing = [c for c in (duration, event) if c]
    cols = _columns(con, source)
    used = [c for c in [*([treatment] if treatment else []), *([groups] if groups else []),
                        *outcomes, *timing, *( [exposure] if exposure else []), *covariates,
                        *([id] if id else [])]]
    failures = []
    n = con.execute(f"SELECT count(*) FROM {source}").fetchall()[0][0]
    if n == 0:
        failures.append({"table": "person", "column": None, "reason": "empty_table", "count": 0,
                         "examples": []})
    for c in dict.fromkeys(used):
        if c not in cols:
            near = difflib.get_close_matches(c, list(cols), n=1)
            failures.append({"table": "person", "column": c, "reason": "missing_column",
                             "count": n, "examples": [f"did you mean '{near[0]}'?"] if near else
                             [f"columns present: {', '.join(list(cols)[:12])}"]})
    for c in dict.fromkeys([*outcomes, *timing, *([exposure] if exposure else [])]):
        if c in cols and cols[c].upper() not in ("BIGINT", "INTEGER", "DOUBLE", "FLOAT", "SMALLINT",
                                                 "TINYINT", "HUGEINT", "UBIGINT", "UINTEGER") \
                and not cols[c].upper().startswith("DECIMAL"):
            bad, ex = con.execute(
                f"SELECT count(*), list(DISTINCT CAST({_q(c)} AS VARCHAR))[1:5] FROM {source} "
                f"WHERE {_q(c)} IS NOT NULL AND TRY_CAST({_q(c)} AS DOUBLE) IS NULL").fetchall()[0]
            if bad:
                failures.append({"table": "person", "column": c, "reason": "wrong_type",
                                 "count": int(bad), "examples": list(ex),
                                 "hint": f" (expected numbers, column type is {cols[c]})"})
    if failures:
        from .load import _format_failures
        raise DataValidationError(_format_failures(failures), failures)

    idexpr = _q(id) if id else "row_number() OVER ()"
    num = lambda c: f"TRY_CAST({_q(c)} AS DOUBLE)"  # noqa: E731
    sel = [f"{idexpr} AS member_id"]
    if treatment:
        sel.append(f"CASE WHEN {_q(treatment)} IS NULL THEN NULL "
                   f"WHEN CAST({_q(treatment)} AS VARCHAR) = {_lit(treated_value)} THEN 'self_help' "
                   f"ELSE 'control' END AS \"group\"")
    if groups:
        sel.append(f"CAST({_q(groups)} AS VARCHAR) AS {_q(groups)}")
    sel += [f"{num(c)} AS {_q(c)}" for c in dict.fromkeys([*outcomes, *timing])]
    if exposure:
        sel.append(f"{num(exposure)} AS member_months")
    sel += [_covariate_sql(con, source, c, cols[c])
            for c in covariates if c not in outcomes and c not in timing and c != groups]
    con.execute(f"CREATE OR REPLACE TEMP TABLE raw_person AS SELECT row_number() OVER () AS _row, "
                f"{', '.join(sel)} FROM {source}")
    needed = ["member_id", *(['"group"'] if treatment else []), *([_q(groups)] if groups else []),
              *[_q(c) for c in outcomes], *[_q(c) for c in timing],
              *(["member_months"] if exposure else []), *[_q(c) for c in covariates]]
    missing = " OR ".join(f"{c} IS NULL" for c in needed)
    # outcomes in `signed` (e.g. a change in weight) may be negative
    negative = " OR ".join(f"{_q(c)} < 0" for c in [*outcomes, *([duration] if duration else [])]
                           if c not in signed) \
        or "false"
    bad_event = f"{_q(event)} NOT IN (0, 1)" if event else "false"
    nonpos = "member_months <= 0" if exposure else "false"
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE chk_person AS
        SELECT *, CASE
            WHEN {missing} THEN 'missing_value'
            WHEN {negative} THEN 'negative_value'
            WHEN {nonpos} THEN 'nonpositive_exposure'
            WHEN {bad_event} THEN 'invalid_event'
            WHEN row_number() OVER (PARTITION BY member_id ORDER BY _row) > 1 THEN 'duplicate_member'
          END AS _reason
        FROM raw_person""")
    con.execute("CREATE OR REPLACE TABLE persons AS SELECT * EXCLUDE (_row, _reason) "
                "FROM chk_person WHERE _reason IS NULL ORDER BY _row")
    con.execute("""CREATE OR REPLACE TABLE quarantine AS
        SELECT 'person' AS "table", _row AS source_row, _reason AS reason,
               CAST(to_json(t) AS VARCHAR) AS record
        FROM (SELECT * EXCLUDE (_reason) FROM chk_person) t
        JOIN (SELECT _row, _reason FROM chk_person WHERE _reason IS NOT NULL) USING (_row)
        ORDER BY source_row""")
    con.execute(f"CREATE OR REPLACE TABLE load_counts AS SELECT 'person' AS \"table\", "
                f"count(*) AS rows_in FROM raw_person")
    con.execute("DROP TABLE chk_person")
    con.execute("DROP TABLE raw_person")
