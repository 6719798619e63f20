"""Member ids matched across the contract tables whatever type each table stores them in.

Plans export the same id in different ways: an integer column in one table, text in a
CSV file ("123"), a double in another (123.0). These are one member. :func:`member_id_sql`
reads each table's ids, decides how they can be matched and returns, per table, the SQL
that turns its ids into the one type all tables share:

* every table holds whole numbers (integer columns, doubles without a fraction, text
  such as ``"123"`` or ``"123.0"``): ids are matched as BIGINT;
* some table holds ids that are not numbers (``"A123"``): ids are matched as text, the
  numbers written in their plain form (123 -> ``"123"``);
* a table holds numbers written another way as text (``"000123"``, ``"+123"``) while
  another holds plain numbers: they cannot be matched safely (is ``"000123"`` member
  123?), and that is an error naming both tables, their types and an example of each.

:func:`member_id_sql` also catches the remaining case (ids of two kinds that share no
member at all, e.g. 1, 2, 3 against ``"M001"``) before every row would be quarantined
as ``unknown_member``.

Errors describe an id by its form ("text of 6 characters with leading zeros", "a whole
number") and its source row, never by its value: they reach the console and
``results.json``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import duckdb

from ..errors import DataValidationError

#: plain whole numbers written as text: no sign but minus, no leading zeros, at most
#: 18 digits (so they fit a BIGINT), optionally with a zero fraction ("123.0")
PLAIN_INTEGER = r"^-?(0|[1-9][0-9]{0,17})(\.0+)?$"
#: a plain whole number with a zero fraction, the number captured
_ZERO_FRACTION = r"^(-?(?:0|[1-9][0-9]{0,17}))\.0+$"
_INTEGER_TYPES = ("BIGINT", "INTEGER", "SMALLINT", "TINYINT", "UINTEGER", "USMALLINT",
                  "UTINYINT", "HUGEINT", "UBIGINT")
_NUMBER_TYPES = ("DOUBLE", "FLOAT", "REAL")
#: 2**63: doubles from here on do not fit a BIGINT
_BIGINT_END = "9223372036854775808.0"


def form(value) -> str:
    """How an id is written, without the id: ``"a whole number"``, ``"text of 6
    characters with leading zeros"``, ...

    Examples
    --------
    >>> form("000123"), form(12), form("M1")
    ('text of 6 characters with leading zeros', 'a whole number', 'text of 2 characters starting with a letter')
    """
    if isinstance(value, bool) or not isinstance(value, str):
        whole = isinstance(value, int) or float(value).is_integer()
        return "a whole number" if whole else "a number with a fraction"
    n = f"text of {len(value)} character{'s' if len(value) != 1 else ''}"
    if re.fullmatch(r"0[0-9]+(\.[0-9]*)?", value):
        return n + " with leading zeros"
    if value[:1] in "+-":
        return n + " with a sign"
    if value.isdigit():
        return n + ", digits only"
    if value[:1].isalpha():
        return n + " starting with a letter"
    return n


@dataclass(frozen=True)
class _Ids:
    """How one table stores its member ids."""

    table: str
    column: str          # the user's column name
    dtype: str           # the stored type
    whole: bool          # every id is a whole number (matchable as BIGINT)
    example: object      # an id of the table (the first that is not plain, if any)
    other_form: bool     # some id is a number written another way as text ("000123")

    def describe(self) -> str:
        what = ("whole numbers" if self.whole else
                "numbers written as text with leading zeros or a sign" if self.other_form else
                "text")
        return f"{self.table}.{self.column} holds {what} ({self.dtype}, e.g. {form(self.example)})"


def _inspect(con: duckdb.DuckDBPyConnection, table: str, column: str, relation: str) -> _Ids:
    dtype = con.execute(f"DESCRIBE SELECT member_id FROM {relation}").fetchall()[0][1].upper()
    base = dtype.split("(")[0]

    def first(where: str, ids: str = relation):
        """The smallest id of ``ids`` meeting ``where`` (None when no id does)."""
        return con.execute(f"SELECT min(member_id) FROM {ids} WHERE {where}").fetchall()[0][0]

    if base in _INTEGER_TYPES:
        return _Ids(table, column, dtype, True, first("true"), False)
    if base in _NUMBER_TYPES or base == "DECIMAL":
        for where, what in (("NOT isfinite(member_id) OR member_id <> round(member_id)",
                             "a number with a fraction (or not finite)"),
                            (f"abs(member_id) >= {_BIGINT_END}",
                             "a number of 2^63 or more, too large for a whole-number id")):
            row = con.execute(f"SELECT min(n) FROM (SELECT row_number() OVER () AS n, member_id "
                              f"FROM {relation}) WHERE {where}").fetchall()[0][0]
            if row is not None:
                raise DataValidationError(
                    f"member ids must be whole numbers or text: {table}.{column} ({dtype}) "
                    f"holds {what} at source row {row}",
                    [{"table": table, "column": column, "reason": "wrong_type", "count": 1,
                      "examples": [f"{what}, source row {row}"]}])
        return _Ids(table, column, dtype, True, first("true"), False)
    text = "CAST(member_id AS VARCHAR)"
    odd = f"NOT regexp_full_match({text}, '{PLAIN_INTEGER}')"
    # text is matched once per distinct id (a member has many claim lines)
    distinct = f"(SELECT DISTINCT member_id FROM {relation})"
    not_plain = first(odd, distinct)
    if not_plain is None:
        return _Ids(table, column, dtype, True, first("true"), False)
    padded = first(f"{odd} AND TRY_CAST({text} AS DOUBLE) IS NOT NULL", distinct)
    return _Ids(table, column, dtype, False, not_plain if padded is None else padded,
                padded is not None)


def member_id_sql(con: duckdb.DuckDBPyConnection, relations: dict[str, str],
                  columns: dict[str, str] | None = None) -> dict[str, str]:
    """Per table, the SQL expression of its ``member_id`` in the type shared by all tables.

    Parameters
    ----------
    con : DuckDB connection.
    relations : table name -> a relation whose ``member_id`` column holds the table's ids.
    columns : table name -> the user's name of the id column (for messages).

    Returns
    -------
    dict
        Table name -> SQL expression (BIGINT when every table holds whole numbers,
        VARCHAR otherwise).

    Raises
    ------
    DataValidationError
        When one table holds plain whole numbers and another numbers written another way
        as text (``"000123"`` against 123), or ids of two kinds without a member in
        common: naming both tables, their types and an example of each.
    """
    columns = columns or {}
    read = _read_once(con, relations)
    try:
        return _matched_sql(con, read, columns)
    finally:
        for t, r in read.items():
            if r != relations[t]:
                con.execute(f"DROP TABLE IF EXISTS {r}")


def _read_once(con: duckdb.DuckDBPyConnection, relations: dict[str, str]) -> dict[str, str]:
    """Relations to inspect: a CSV file is parsed again by every query on it, so the ids
    of a relation reading one are copied into a temporary table first (in file order, so
    source row numbers stay right); Parquet files and tables are read by column, cheaply,
    and inspected where they are."""
    out = {}
    for t, r in relations.items():
        if "read_csv" in r:
            out[t] = f"_member_ids_{t}"
            con.execute(f"CREATE OR REPLACE TEMP TABLE {out[t]} AS SELECT member_id FROM {r}")
        else:
            out[t] = r
    return out


def _matched_sql(con: duckdb.DuckDBPyConnection, relations: dict[str, str],
                 columns: dict[str, str]) -> dict[str, str]:
    """:func:`member_id_sql` on the relations to inspect."""
    ids = {t: _inspect(con, t, columns.get(t, "member_id"), r) for t, r in relations.items()}
    if all(i.whole for i in ids.values()):
        return {t: _bigint(i) for t, i in ids.items()}
    plain = [i for i in ids.values() if i.whole]
    padded = [i for i in ids.values() if i.other_form]
    if plain and padded:
        _mismatch(plain[0], padded[0])
    # text ids somewhere: compare as text, whole numbers in their plain form
    # ("123.0" in a text column is the member 123, as in a table of whole numbers)
    sql = {t: f"CAST({_bigint(i)} AS VARCHAR)" if i.whole else
           f"regexp_replace(CAST(member_id AS VARCHAR), '{_ZERO_FRACTION}', '\\1')"
           for t, i in ids.items()}
    if plain and "members" in ids:
        # ids of two kinds that share no member at all cannot be the same members
        m = ids["members"]
        for t, i in ids.items():
            if t == "members" or i.whole == m.whole or i.example is None:
                continue
            shared = con.execute(
                f"SELECT count(*) FROM (SELECT DISTINCT {sql[t]} AS id FROM {relations[t]}) a "
                f"JOIN (SELECT DISTINCT {sql['members']} AS id FROM {relations['members']}) b "
                f"USING (id)").fetchall()[0][0]
            if not shared:
                _mismatch(m, i)
    return sql


def _bigint(ids: _Ids) -> str:
    return ("TRY_CAST(member_id AS BIGINT)" if ids.dtype.startswith("VARCHAR")
            else "CAST(member_id AS BIGINT)")


def _mismatch(a: _Ids, b: _Ids):
    raise DataValidationError(
        f"member ids cannot be matched across tables: {a.describe()}, but {b.describe()}. "
        f"Is an id written as {form(b.example)} the member written as {form(a.example)} in "
        f"the other table? evalkit does not guess: write the ids the same way in every "
        f"table (the same type and padding).",
        [{"table": i.table, "column": i.column, "reason": "id_type_mismatch", "count": 0,
          "examples": [i.dtype, form(i.example)]} for i in (a, b)])
