"""Person-level mode: one row per member with outcomes already computed.

Many research data sets arrive this way. The params map the user's columns onto roles
(id, treatment, outcomes, exposure, covariates); structural problems stop the load with
every problem listed; row-level problems (an empty or NaN value in a used column, an
infinite number, a negative outcome, person-time that is not positive) are quarantined
with a reason, so that every count (rows loaded, members per arm, rows a model uses)
rests on the same rows.

Arms are compared by value, not by their text: ``1``, ``1.0``, ``"1"`` and ``True`` are
the same arm (see :func:`arm_sql`).
"""
from __future__ import annotations

import difflib

import duckdb

from ..errors import DataValidationError
from .load import _columns, _format_failures, _lit, _q


NUMERIC_TYPES = ("BIGINT", "INTEGER", "DOUBLE", "FLOAT", "SMALLINT", "TINYINT", "HUGEINT",
                 "UBIGINT", "UINTEGER", "USMALLINT", "UTINYINT")


def _is_numeric(type_: str) -> bool:
    return type_.upper() in NUMERIC_TYPES or type_.upper().startswith("DECIMAL")


def _value_sql(column: str, type_: str) -> str:
    """The column's value with blank text (``''``, spaces) read as empty (NULL)."""
    q = _q(column)
    return f"NULLIF(trim({q}), '')" if type_.upper().startswith("VARCHAR") else q


def _number_sql(column: str, type_: str) -> str:
    """The column as a DOUBLE; NULL when empty, NaN or infinity kept as such."""
    return f"TRY_CAST({_value_sql(column, type_)} AS DOUBLE)"


def arm_sql(value: str) -> str:
    """SQL: the canonical text of an arm value, so that arms compare by value.

    ``value`` is an SQL expression of type VARCHAR. Numbers are written as the shortest
    number they are (``1``, ``1.0``, ``"1"``, ``" 1 "`` all become ``'1'``; ``0.5`` stays
    ``'0.5'``), ``true``/``false`` (any case; a BOOLEAN column cast to text) become
    ``'1'``/``'0'``, other text is kept as given (trimmed: ``'Yes'`` and ``'yes'`` stay two
    values). Empty text and NaN become NULL (a missing arm).
    """
    v = f"NULLIF(trim({value}), '')"
    x = f"TRY_CAST({v} AS DOUBLE)"
    return (f"CASE WHEN {v} IS NULL OR isnan({x}) THEN NULL "
            f"WHEN isfinite({x}) AND {x} = round({x}) AND abs({x}) < 9007199254740992 "
            f"THEN CAST(CAST({x} AS BIGINT) AS VARCHAR) "
            f"WHEN {x} IS NOT NULL THEN CAST({x} AS VARCHAR) "
            f"WHEN lower({v}) = 'true' THEN '1' WHEN lower({v}) = 'false' THEN '0' "
            f"ELSE {v} END")


def _arm_failure(con, source: str, treatment: str, treated: str) -> dict | None:
    """A structural failure when the treatment column does not hold exactly two values,
    one of them the treated value (an arm without members is named)."""
    arm = arm_sql(f"CAST({_q(treatment)} AS VARCHAR)")
    values = [r[0] for r in con.execute(
        f"SELECT DISTINCT {arm} AS a FROM {source} WHERE a IS NOT NULL ORDER BY a").fetchall()]
    if len(values) > 2:
        return {"table": "person", "column": treatment, "reason": "unclear_arms",
                "count": len(values), "examples": [repr(v) for v in values[:8]],
                "hint": f" (more than two values after reading 1, 1.0, '1' and true as one "
                        f"value; the self-help arm is {treated!r}: recode the column to two "
                        f"values)"}
    if treated not in values:
        return {"table": "person", "column": treatment, "reason": "unclear_arms",
                "count": len(values), "examples": [repr(v) for v in values],
                "hint": f" (data.person.treated_value {treated!r} is not one of the column's "
                        f"values: the self_help arm has no members)"}
    if len(values) < 2:
        return {"table": "person", "column": treatment, "reason": "unclear_arms",
                "count": len(values), "examples": [repr(v) for v in values],
                "hint": f" (every row holds data.person.treated_value {treated!r}: the "
                        f"control arm has no members; the column must hold exactly two "
                        f"values)"}
    return None


def _covariate_sql(con, source: str, column: str, type_: str) -> tuple[str, bool]:
    """A covariate as stored, and whether it is a number. Text (CSV files are read as
    text) whose every value is a whole number becomes BIGINT, and whose every value is a
    number DOUBLE, so that models use it rather than leave it out (and ``C(x)`` levels
    read ``1``, not ``1.0``); text with any other value stays text (a categorical
    covariate). Blank text is empty; NaN and infinite values do not decide the type
    (their rows are quarantined)."""
    q = _q(column)
    if type_.upper().startswith("VARCHAR"):
        v = _value_sql(column, type_)
        x = f"TRY_CAST({v} AS DOUBLE)"     # (a cast of '2.5' to BIGINT would round it)
        not_num, not_int = con.execute(
            f"SELECT count(*) FILTER (WHERE {x} IS NULL), "
            f"count(*) FILTER (WHERE {x} IS NULL OR (isfinite({x}) AND {x} <> floor({x}))) "
            f"FROM {source} WHERE {v} IS NOT NULL").fetchall()[0]
        if not not_int:
            return f"CASE WHEN isfinite({x}) THEN CAST({x} AS BIGINT) END AS {q}", True
        if not not_num:
            return f"{x} AS {q}", True
        return f"{v} AS {q}", False
    return q, _is_numeric(type_)


def load_person(con: duckdb.DuckDBPyConnection, source: str, treatment: str | None, treated_value,
                outcomes: list[str], exposure: str | None = None, covariates: list[str] = (),
                id: str | None = None, *, duration: str | None = None, event: str | None = None,
                groups: str | None = None, signed: list[str] = ()) -> None:
    """Load a person-level table into ``persons`` (accepted) and ``quarantine``.

    ``persons`` has: member_id (the id column, or the row number), group (``self_help``
    where treatment equals ``treated_value`` by value (:func:`arm_sql`), ``control`` where
    it holds the other value; absent when ``treatment`` is None; a third value is a
    structural error, ``unclear_arms``), the outcome and covariate columns under their
    own names, and
    ``member_months`` when ``exposure`` is given. Time-to-event data keep ``duration``
    (a number >= 0) and ``event`` (0 or 1) under their own names; a k-level grouping
    column ``groups`` is kept under its own name as text.

    Rows with an empty value, blank text or NaN in any role used are quarantined as
    ``missing_value``; with an infinite number as ``non_finite``; rows whose ``duration``
    or an outcome not listed in ``signed`` is negative as ``negative_value``; rows whose
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
    numbers = list(dict.fromkeys([*outcomes, *timing, *([exposure] if exposure else [])]))
    for c in numbers:
        if c in cols and not _is_numeric(cols[c]):
            v = _value_sql(c, cols[c])
            bad, ex = con.execute(
                f"SELECT count(*), list(DISTINCT CAST({v} AS VARCHAR))[1:5] FROM {source} "
                f"WHERE {v} IS NOT NULL AND TRY_CAST({v} AS DOUBLE) IS NULL").fetchall()[0]
            if bad:
                failures.append({"table": "person", "column": c, "reason": "wrong_type",
                                 "count": int(bad), "examples": list(ex),
                                 "hint": f" (expected numbers, column type is {cols[c]})"})
    treated = None
    if treatment and treatment in cols and n:
        treated = con.execute(f"SELECT {arm_sql(_lit(treated_value))}").fetchall()[0][0]
        arms = _arm_failure(con, source, treatment, treated)
        if arms:
            failures.append(arms)
    if failures:
        raise DataValidationError(_format_failures(failures), failures)

    covs = [c for c in covariates if c not in outcomes and c not in timing and c != groups]
    covariate_sql = {c: _covariate_sql(con, source, c, cols[c]) for c in covs}
    # every numeric role is read as DOUBLE from the source: NaN counts as empty, +-inf is
    # quarantined as non_finite; the other roles are empty when NULL or blank text
    numeric = [*numbers, *[c for c in covs if covariate_sql[c][1]]]
    arm = arm_sql(f"CAST({_q(treatment)} AS VARCHAR)") if treatment else None
    empty = ([f"{arm} IS NULL"] if treatment else []) + \
            [f"{_value_sql(c, cols[c])} IS NULL" for c in dict.fromkeys(
                [*([id] if id else []), *([groups] if groups else []), *covs])
             if c not in numeric] + \
            [f"coalesce(isnan({_number_sql(c, cols[c])}), true)" for c in numeric]
    infinite = [f"isinf({_number_sql(c, cols[c])})" for c in numeric]

    idexpr = _value_sql(id, cols[id]) if id else "row_number() OVER ()"
    sel = [f"{idexpr} AS member_id"]
    if treatment:
        sel.append(f"CASE WHEN {arm} IS NULL THEN NULL WHEN {arm} = {_lit(treated)} "
                   f"THEN 'self_help' ELSE 'control' END AS \"group\"")
    if groups:
        sel.append(f"CAST({_value_sql(groups, cols[groups])} AS VARCHAR) AS {_q(groups)}")
    sel += [f"{_number_sql(c, cols[c])} AS {_q(c)}" for c in dict.fromkeys([*outcomes, *timing])]
    if exposure:
        sel.append(f"{_number_sql(exposure, cols[exposure])} AS member_months")
    sel += [covariate_sql[c][0] for c in covs]
    sel.append(f"({' OR '.join(empty) or 'false'}) AS _empty")
    sel.append(f"coalesce({' OR '.join(infinite) or 'false'}, false) AS _infinite")
    con.execute(f"CREATE OR REPLACE TEMP TABLE raw_person AS SELECT row_number() OVER () AS _row, "
                f"{', '.join(sel)} FROM {source}")
    # outcomes in `signed` (e.g. a change in weight) may be negative
    negative = " OR ".join(f"{_q(c)} < 0" for c in [*outcomes, *([duration] if duration else [])]
                           if c not in signed) \
        or "false"
    bad_event = f"{_q(event)} NOT IN (0, 1)" if event else "false"
    nonpos = "member_months <= 0" if exposure else "false"
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE chk_person AS
        SELECT * EXCLUDE (_empty, _infinite), CASE
            WHEN _empty THEN 'missing_value'
            WHEN _infinite THEN 'non_finite'
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
    con.execute("CREATE OR REPLACE TABLE load_counts AS SELECT 'person' AS \"table\", "
                "count(*) AS rows_in FROM raw_person")
    con.execute("DROP TABLE chk_person")
    con.execute("DROP TABLE raw_person")
