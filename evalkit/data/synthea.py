"""Read a Synthea CSV export as the claims contract's four tables.

`Synthea <https://synthetichealth.github.io/synthea/>`_ (a Java program, not run by
evalkit) writes synthetic patient records as CSV files. This module creates four DuckDB
views over ``patients.csv``, ``encounters.csv`` and ``payer_transitions.csv`` (plus
``payers.csv`` when present) that rename and recode them into the contract's shape;
the ordinary loader (:func:`evalkit.data.load.load_claims`) then applies every contract
check, so bad rows are quarantined and counted, never dropped. Values are handed over
as text and converted by the loader, so an unreadable date is *reported*.

Mapping (also in docs/data-contract.md):

* ``members`` <- ``patients.csv``: Id, BIRTHDATE (birth year), GENDER;
* ``enrollment`` <- ``payer_transitions.csv``: coverage periods by any payer except
  the ``NO_INSURANCE`` payer (or only the payers listed in ``payers``), with overlapping
  or back-to-back periods of a patient merged into one spell. Both layouts are read:
  START_YEAR/END_YEAR (whole calendar years) and START_DATE/END_DATE. With
  ``enrollment="encounters"`` a patient's spell runs from their first to their last
  encounter instead;
* ``encounters`` <- ``encounters.csv``: one row per encounter (Id is the claim id);
  the date of service is the UTC date of START, the discharge date of an inpatient stay
  that of STOP (an inpatient encounter without STOP is quarantined as
  ``missing_end_date``); the category comes from ENCOUNTERCLASS (:data:`CLASS_MAP`), and an
  outpatient encounter whose CODE or REASONCODE is a mental-health SNOMED code
  (:data:`MH_CODES`) is an outpatient mental-health visit; the allowed amount is
  TOTAL_CLAIM_COST (or BASE_ENCOUNTER_COST), the paid amount PAYER_COVERAGE;
* ``exposure`` <- a file of the contract's exposure columns (member_id is the Synthea
  patient Id), since Synthea has no notion of a referral.
"""
from __future__ import annotations

from pathlib import Path

import duckdb

from ..errors import DataValidationError
from .contract import CATEGORIES
from .csvfile import csv_sql
from .load import _lit, scan_sql

#: ENCOUNTERCLASS -> contract category. Urgent care is not an emergency-room visit.
CLASS_MAP = {
    "emergency": "er",
    "inpatient": "inpatient",
    "ambulatory": "outpatient_other",
    "outpatient": "outpatient_other",
    "urgentcare": "outpatient_other",
    "virtual": "outpatient_other",
    "wellness": "primary_care",
    "home": "other",
    "hospice": "other",
    "snf": "other",
}

#: SNOMED CT codes that make an outpatient encounter a mental-health visit (as its CODE
#: or REASONCODE): mental disorder, depressive disorders, anxiety, PTSD, schizophrenia,
#: bipolar disorder, alcohol dependence. Extend with ``data.synthea.mh_codes``.
MH_CODES = ("74732009", "35489007", "370143000", "36923009", "197480006", "47505003",
            "58214004", "13746004", "66590003", "7200002")

FILES = {
    "patients": ("Id", "BIRTHDATE", "GENDER"),
    "encounters": ("Id", "START", "STOP", "PATIENT", "ENCOUNTERCLASS", "CODE",
                   "TOTAL_CLAIM_COST", "BASE_ENCOUNTER_COST", "PAYER_COVERAGE"),
    "payer_transitions": ("PATIENT", "PAYER"),
}


class _Files:
    """The export's CSV files, each checked line by line once (:func:`csv_sql`) and read
    as text in ``encoding``."""

    def __init__(self, folder: Path, encoding: str):
        self.folder, self.encoding, self.read = folder, encoding, {}

    def __call__(self, name: str) -> str:
        if name not in self.read:
            self.read[name] = csv_sql(str(self.folder / f"{name}.csv"), f"{name}.csv",
                                      self.encoding)
        return self.read[name]


def _columns(con, relation: str) -> set[str]:
    return {r[0].upper() for r in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()}


def synthea_sources(con: duckdb.DuckDBPyConnection, folder: str | Path, exposure_file: str, *,
                    enrollment: str = "payer_transitions", payers: list[str] | None = None,
                    class_map: dict[str, str] | None = None, mh_codes=MH_CODES,
                    amount: str = "TOTAL_CLAIM_COST",
                    encoding: str = "utf-8") -> dict[str, str]:
    """Create views that present a Synthea CSV export as the contract's tables.

    Parameters
    ----------
    con : DuckDB connection that receives the views ``synthea_members``,
        ``synthea_enrollment``, ``synthea_encounters`` and ``synthea_exposure``.
    folder : the export's ``csv`` folder.
    exposure_file : CSV or Parquet with member_id (patient Id), group, index_date
        (other names mapped by the loader's ``columns``).
    enrollment : ``payer_transitions`` or ``encounters`` (see the module docstring).
    payers : payer Ids whose coverage counts (default: every payer but NO_INSURANCE).
    class_map : ENCOUNTERCLASS -> category, added to (or replacing entries of)
        :data:`CLASS_MAP`; an unmapped class is quarantined as ``unknown_category``.
    mh_codes : SNOMED codes of mental-health encounters (CODE or REASONCODE).
    amount : ``TOTAL_CLAIM_COST`` (the encounter with all its line items, default) or
        ``BASE_ENCOUNTER_COST``.
    encoding : text encoding of the CSV files (``data.encoding``).

    Returns
    -------
    dict
        Contract table name -> view name, for :func:`evalkit.data.load.load_claims`.
    """
    folder = Path(folder)
    _csv = _Files(folder, encoding)
    need = ["patients", "encounters"] + (["payer_transitions"] if enrollment == "payer_transitions" else [])
    failures = []
    cols: dict[str, set[str]] = {}
    for name in need:
        if not (folder / f"{name}.csv").is_file():
            failures.append({"table": f"{name}.csv", "column": None, "reason": "missing_table",
                             "count": 0, "examples": [str(folder)]})
            continue
        cols[name] = _columns(con, _csv(name))
        for c in FILES[name]:
            if c.upper() not in cols[name] and not (name == "encounters" and c != amount and c.endswith("_COST")):
                failures.append({"table": f"{name}.csv", "column": c, "reason": "missing_column",
                                 "count": 0, "examples": []})
    if "payer_transitions" in cols and not ({"START_YEAR", "END_YEAR"} <= cols["payer_transitions"]
                                            or {"START_DATE", "END_DATE"} <= cols["payer_transitions"]):
        failures.append({"table": "payer_transitions.csv", "column": "START_DATE/END_DATE",
                         "reason": "missing_column", "count": 0,
                         "examples": ["expected START_YEAR, END_YEAR or START_DATE, END_DATE"]})
    if failures:
        lines = "\n".join(f"  {f['table']}{'.' + f['column'] if f['column'] else ''}: {f['reason']}"
                          for f in failures)
        raise DataValidationError(f"the Synthea export in {folder} cannot be read as claims:\n"
                                  f"{lines}\nSee docs/data-contract.md (Synthea).", failures)

    con.execute(f"""CREATE OR REPLACE TEMP VIEW synthea_members AS
        SELECT Id AS member_id, left(BIRTHDATE, 10) AS birth_date, GENDER AS sex
        FROM {_csv('patients')}""")

    day = lambda col: f"TRY_CAST(left({col}, 10) AS DATE)"  # noqa: E731
    if enrollment == "payer_transitions":
        pt = cols["payer_transitions"]
        if {"START_DATE", "END_DATE"} <= pt:
            start, end = day("START_DATE"), day("END_DATE")
        else:   # whole calendar years, both inclusive
            start = "make_date(TRY_CAST(START_YEAR AS INTEGER), 1, 1)"
            end = "make_date(TRY_CAST(END_YEAR AS INTEGER), 12, 31)"
        if payers:
            keep = f"PAYER IN ({', '.join(_lit(p) for p in payers)})"
        elif (folder / "payers.csv").is_file():
            keep = (f"PAYER NOT IN (SELECT Id FROM {_csv('payers')} "
                    f"WHERE upper(NAME) = 'NO_INSURANCE')")
        else:
            keep = "true"
        # overlapping or back-to-back periods (one row per year in older exports) are
        # one coverage spell: merged here (gaps and islands), so the loader's overlap
        # check judges spells, not Synthea's yearly rows
        con.execute(f"""CREATE OR REPLACE TEMP VIEW synthea_enrollment AS
            WITH p AS (SELECT PATIENT AS member_id, {start} AS s, {end} AS e
                       FROM {_csv('payer_transitions')} WHERE {keep}),
            o AS (SELECT *, max(e) OVER (PARTITION BY member_id ORDER BY s, e ROWS BETWEEN
                                         UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_e
                  FROM p WHERE s IS NOT NULL AND e IS NOT NULL AND e >= s),
            g AS (SELECT *, sum(CASE WHEN prev_e IS NULL OR s > prev_e + 1 THEN 1 ELSE 0 END)
                              OVER (PARTITION BY member_id ORDER BY s, e ROWS UNBOUNDED PRECEDING) AS island
                  FROM o)
            SELECT member_id, CAST(min(s) AS VARCHAR) AS start_date,
                   CAST(max(e) AS VARCHAR) AS end_date
            FROM g GROUP BY member_id, island
            UNION ALL   -- periods that cannot be read go to the loader as they are
            SELECT member_id, CAST(s AS VARCHAR), CAST(e AS VARCHAR) FROM p
            WHERE s IS NULL OR e IS NULL OR e < s""")
    elif enrollment == "encounters":
        con.execute(f"""CREATE OR REPLACE TEMP VIEW synthea_enrollment AS
            SELECT PATIENT AS member_id, CAST(min({day('START')}) AS VARCHAR) AS start_date,
                   CAST(max(greatest({day('START')}, coalesce({day('STOP')}, {day('START')})))
                        AS VARCHAR) AS end_date
            FROM {_csv('encounters')} GROUP BY PATIENT""")
    else:
        raise DataValidationError(f"data.synthea.enrollment: {enrollment!r} is not "
                                  "payer_transitions or encounters")

    cmap = {**CLASS_MAP, **{k.lower(): v for k, v in (class_map or {}).items()}}
    bad = {k: v for k, v in cmap.items() if v not in CATEGORIES}
    if bad:
        raise DataValidationError(f"data.synthea.class_map maps onto unknown categories {bad}; "
                                  f"allowed: {', '.join(CATEGORIES)}")
    cases = " ".join(f"WHEN {_lit(k)} THEN {_lit(v)}" for k, v in cmap.items())
    codes = ", ".join(_lit(str(c)) for c in mh_codes) or "NULL"
    reason = "REASONCODE" if "REASONCODE" in cols["encounters"] else "NULL"
    con.execute(f"""CREATE OR REPLACE TEMP VIEW synthea_encounters AS
        WITH e AS (SELECT *, CASE lower(ENCOUNTERCLASS) {cases} END AS _category
                   FROM {_csv('encounters')})
        SELECT Id AS claim_id, PATIENT AS member_id, left(START, 10) AS service_date,
               CASE WHEN _category = 'inpatient' THEN left(STOP, 10) END AS end_date,
               CASE WHEN _category = 'outpatient_other'
                         AND (CODE IN ({codes}) OR {reason} IN ({codes})) THEN 'outpatient_mh'
                    ELSE coalesce(_category, 'encounterclass_' || coalesce(ENCOUNTERCLASS, ''))
               END AS category,
               {amount} AS allowed_amount, PAYER_COVERAGE AS paid_amount,
               ENCOUNTERCLASS AS encounter_class, CODE AS encounter_code
        FROM e""")
    con.execute(f"CREATE OR REPLACE TEMP VIEW synthea_exposure AS "
                f"SELECT * FROM {scan_sql(str(exposure_file), 'exposure', encoding)}")
    return {t: f"synthea_{t}" for t in ("members", "enrollment", "encounters", "exposure")}


__all__ = ["synthea_sources", "CLASS_MAP", "MH_CODES", "FILES"]
