"""CSV files checked before they are read, so that a damaged file is a clear error.

A CSV file exported by hand often carries a fault the reader cannot make a table of: a
file saved in another encoding (Latin-1 from an older spreadsheet program), a line of
separators only (``,,,``) or of spaces, ragged lines (more or fewer values than the
header). Left to itself, DuckDB's dialect sniffer may then read the whole file as one
column (the contract check would report every column missing), or the read stops with
DuckDB's own message. :func:`csv_sql` first reads the file once with DuckDB's rejects
table (``store_rejects``), which lists each line that cannot be read and why, and turns
what it finds into one :class:`~evalkit.errors.DataValidationError` naming the file,
the lines and the likely cause. Lines are named by number only: their content (member
data) is never echoed.
"""
from __future__ import annotations

import re

import duckdb

from ..errors import DataValidationError

#: how many faulty lines a message lists per cause
MAX_LINES = 5
_ENCODING_HINT = ("set data.encoding to the file's encoding (latin-1 for many files saved by "
                  "older spreadsheet programs, utf-16 for some exports), or save it as UTF-8")


def _lit(value) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _cause(error_type: str, message: str, line: str, delim: str, encoding: str) -> str:
    """The likely cause of one rejected line, in the reader's words."""
    found = re.search(r"Expected Number of Columns: (\d+) Found: (\d+)", message or "")
    text = line or ""
    if error_type == "INVALID ENCODING":
        return f"bytes that are not {encoding} text: {_ENCODING_HINT}"
    if error_type in ("MISSING COLUMNS", "TOO MANY COLUMNS"):
        if not text.strip():
            return "a blank line (spaces only): delete it"
        if not text.replace(delim, "").strip():
            return (f"a line of separators only ({delim * 3!r}, as spreadsheet programs leave "
                    f"after the last row): delete it")
        if found:
            expected, got = found.groups()
            return (f"{got} values where the header has {expected}: a line cut short, or a "
                    f"separator inside a value that is not quoted")
    if error_type == "UNQUOTED VALUE":
        return "a quote inside a value that is not quoted"
    if error_type == "LINE SIZE OVER MAXIMUM":
        return "a line longer than the reader accepts: a quote that is never closed?"
    return error_type.lower()


def _error(path: str, table: str | None, problems: list[tuple[int, str]]):
    """Raise one error for the rejected lines, grouped by cause (up to five line numbers each)."""
    by_cause: dict[str, list[int]] = {}
    for n, cause in problems:
        by_cause.setdefault(cause, []).append(n)
    where = f"{table}: " if table else ""
    lines = [f"{where}{path} cannot be read as a table: {len(problems)} line(s) cannot be read"]
    examples = []
    for cause, numbers in by_cause.items():
        shown = ", ".join(map(str, numbers[:MAX_LINES]))
        more = f" and {len(numbers) - MAX_LINES} more" if len(numbers) > MAX_LINES else ""
        examples.append(f"line{'s' if len(numbers) > 1 else ''} {shown}{more}: {cause}")
    lines += [f"  {e}" for e in examples]
    lines.append("Fix the file (or set data.encoding) and run again; see docs/bad-inputs.md.")
    raise DataValidationError("\n".join(lines), [
        {"table": table or "input", "column": None, "reason": "unreadable_csv",
         "count": len(problems), "examples": examples}])


def csv_sql(path: str, table: str | None = None, encoding: str = "utf-8") -> str:
    """Check a CSV file and return the DuckDB table expression that reads it as text.

    Parameters
    ----------
    path : the file (``.csv``, ``.csv.gz``, ``.tsv``, ``.txt``).
    table : the contract table it holds, for messages.
    encoding : ``utf-8``, ``utf-16`` or ``latin-1`` (``data.encoding``).

    Returns
    -------
    str
        ``read_csv(...)`` with the header, the separator found by DuckDB's sniffer and every
        column read as text (types and dates are checked by the contract checks, never
        guessed: a sniffer may read 03/05/2023 as 3 May).

    Raises
    ------
    DataValidationError
        When any line cannot be read: the file, each line's number (up to five) and its
        likely cause (encoding, a blank line, a line of separators, a ragged line).
    """
    con = duckdb.connect()
    try:
        try:
            delim = con.execute(
                f"SELECT Delimiter FROM sniff_csv({_lit(path)}, ignore_errors=true, "
                f"encoding={_lit(encoding)})").fetchall()[0][0]
            options = (f"header=true, all_varchar=true, delim={_lit(delim)}, "
                       f"encoding={_lit(encoding)}")
            # count(COLUMNS(*)) makes the reader parse every value of every line
            con.execute(f"SELECT count(COLUMNS(*)) FROM read_csv({_lit(path)}, {options}, "
                        f"store_rejects=true)").fetchall()
            rejects = con.execute(
                "SELECT line, first(error_type ORDER BY column_idx), "
                "first(error_message ORDER BY column_idx), first(csv_line) "
                "FROM reject_errors GROUP BY line ORDER BY line").fetchall()
        except duckdb.Error as err:
            first = str(err).splitlines()[0]
            hint = f" ({_ENCODING_HINT})" if "unicode" in str(err).lower() else ""
            raise DataValidationError(
                f"{table + ': ' if table else ''}{path} cannot be read as a CSV file: "
                f"{first}{hint}",
                [{"table": table or "input", "column": None, "reason": "unreadable_csv",
                  "count": 0, "examples": [first]}]) from None
    finally:
        con.close()
    if rejects:
        problems = [(int(n), _cause(kind, msg, text, delim, encoding))
                    for n, kind, msg, text in rejects]
        _error(path, table, problems)
    return f"read_csv({_lit(path)}, {options})"
