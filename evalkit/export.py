"""The run's tables as files: ``tables/<name>.csv`` and one ``tables.xlsx``.

Every named table of ``results.json`` (``tables``, e.g. ``utilization.rates``) is written
to ``tables/utilization.rates.csv`` and to a sheet of ``tables.xlsx``. The files are made
from the records of ``results.json``, so they hold exactly what it holds: in a public run
the small cells it suppressed are suppressed here too, and the privacy scan reads these
files with the other outputs. A ``contents`` sheet, first in the workbook, lists each
sheet's table and CSV file (sheet names are cut to Excel's 31 characters).

Values are written as they are in ``results.json``: numbers as numbers (every digit in the
CSV files; 16 significant digits in the workbook, of which Excel keeps 15), ``null`` as an
empty cell, lists and mappings as JSON text. Text is always text in the
workbook (a value starting with ``=`` is never read as a formula).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pandas as pd
from openpyxl import Workbook, load_workbook
from openpyxl.cell import WriteOnlyCell

from .results import _umask, write_text_atomic

#: Folder (in the run folder) of the CSV files, and the workbook's name.
TABLES_DIR = "tables"
XLSX_NAME = "tables.xlsx"
#: The first sheet of the workbook: which table each sheet holds.
CONTENTS_SHEET = "contents"
_MAX_SHEET = 31                          # Excel's limit on sheet names
_NOT_IN_SHEET = re.compile(r"[\[\]:*?/\\]")
_NOT_IN_FILE = re.compile(r"[^A-Za-z0-9._-]+")


def table_frame(rows: list[dict]) -> pd.DataFrame:
    """One table's records as a DataFrame: columns in order of first appearance, lists
    and mappings as JSON text, ``null`` as missing."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    return pd.DataFrame([{c: _cell(r.get(c)) for c in columns} for r in rows], columns=columns)


def _cell(value):
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def csv_name(table: str) -> str:
    """File name of a table's CSV: the table's name with characters other than letters,
    digits, ``.``, ``_`` and ``-`` replaced by ``_``."""
    return (_NOT_IN_FILE.sub("_", table).strip("._") or "table") + ".csv"


def sheet_names(tables: list[str]) -> dict[str, str]:
    """A unique sheet name of at most 31 characters for each table (Excel's rules: no
    ``[]:*?/\\``, not ``contents``, unique without regard to case). A name too long keeps
    its start and a number; :data:`CONTENTS_SHEET` maps them back."""
    used, out = {CONTENTS_SHEET}, {}
    for t in tables:
        base = _NOT_IN_SHEET.sub("_", t).strip("'") or "table"
        name, i = base[:_MAX_SHEET], 1
        while name.lower() in used:
            i += 1
            suffix = f"~{i}"
            name = base[:_MAX_SHEET - len(suffix)] + suffix
        used.add(name.lower())
        out[t] = name
    return out


def write_csvs(out_dir: Path, tables: dict[str, list[dict]]) -> dict[str, str]:
    """Write each table to ``tables/<name>.csv`` (replacing the folder's earlier files);
    returns table name -> path relative to ``out_dir``."""
    folder = Path(out_dir) / TABLES_DIR
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    written, seen = {}, set()
    for name, rows in tables.items():
        file = csv_name(name)
        stem, i = file[:-4], 1
        while file.lower() in seen:                      # two names cleaned alike
            i += 1
            file = f"{stem}~{i}.csv"
        seen.add(file.lower())
        write_text_atomic(folder / file, table_frame(rows).to_csv(index=False))
        written[name] = f"{TABLES_DIR}/{file}"
    return written


def write_xlsx(path: Path, tables: dict[str, list[dict]], csvs: dict[str, str] | None = None
               ) -> dict[str, str]:
    """Write every table as a sheet of one Excel workbook at ``path`` (atomically), after
    a ``contents`` sheet; returns table name -> sheet name.
    """
    sheets = sheet_names(list(tables))
    wb = Workbook(write_only=True)

    def write(ws, frame: pd.DataFrame) -> None:
        ws.append(list(map(str, frame.columns)))
        for row in frame.itertuples(index=False, name=None):
            cells = []
            for v in row:
                cell = WriteOnlyCell(ws, value=None if _missing(v) else v)
                if isinstance(v, str):
                    cell.data_type = "s"                 # text, never a formula
                cells.append(cell)
            ws.append(cells)

    contents = pd.DataFrame({"sheet": [sheets[t] for t in tables], "table": list(tables),
                             "rows": [len(r) for r in tables.values()],
                             "csv": [(csvs or {}).get(t) for t in tables]})
    write(wb.create_sheet(CONTENTS_SHEET), contents)
    for name, rows in tables.items():
        write(wb.create_sheet(sheets[name]), table_frame(rows))
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        wb.save(tmp)
        os.chmod(tmp, 0o666 & ~_umask())            # an ordinary new file's permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return sheets


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def export_tables(out_dir: Path, tables: dict[str, list[dict]]) -> dict:
    """Write the CSV files and the workbook of a run's tables (see the module docstring).

    Returns what the ``run`` block of ``results.json`` records under ``tables``:
    ``count``, ``csv`` (the folder) and ``xlsx`` (the workbook's name).
    """
    out_dir = Path(out_dir)
    (out_dir / XLSX_NAME).unlink(missing_ok=True)
    csvs = write_csvs(out_dir, tables)
    info = {"count": len(tables), "csv": f"{TABLES_DIR}/", "xlsx": XLSX_NAME}
    write_xlsx(out_dir / XLSX_NAME, tables, csvs)
    return info


def read_xlsx(path: Path) -> dict[str, list[list]]:
    """Every sheet of a workbook as rows of cell values (the header first), by sheet name;
    what the privacy scan and the tests read."""
    wb = load_workbook(path, read_only=True, data_only=False)
    try:
        sheets = {ws.title: [list(r) for r in ws.iter_rows(values_only=True)]
                  for ws in wb.worksheets}
    finally:
        wb.close()
    for rows in sheets.values():             # empty cells at a row's end are not stored
        width = max(map(len, rows), default=0)
        for r in rows:
            r.extend([None] * (width - len(r)))
    return sheets
