"""What the claim-line checks set aside or noted, in persons, visits, nights and dollars.

The quarantine table says *which rows* were set aside and why; this module says what
that costs the analysis, in the units an analyst reasons in, for the problems that the
reason codes alone leave to be inferred:

``no_coverage``
    persons with claim lines but no accepted coverage spell at all (no enrollment row,
    no OMOP observation period, no insured Synthea period): every line of theirs is
    quarantined as ``service_outside_enrollment``;
``unmapped_category``
    per category code (in public runs, :func:`public_notes` merges the codes of fewer
    than ``min_cell`` persons into one row; the console names the 10 codes with the most
    visits and sums the others) that is not a contract category and not mapped (an OMOP visit
    concept such as ``visit_concept_0``, a Synthea class such as
    ``encounterclass_ambulance``, or the plan's own code): the lines quarantined as
    ``unknown_category``;
``missing_end_date``
    inpatient stays without a discharge date on any of their accepted lines
    (quarantined: their nights cannot be counted);
``inpatient_end_before_start``
    inpatient stays whose discharge date is before the admission date (quarantined);
    ``nights`` is the number of days between the two dates;
``end_date_not_used``
    per category, visits of a category that does not read the end date (every category
    but inpatient) whose end date is before the date of service, after 2100 or
    unreadable: the visit is *kept* with its cost and its end date is cleared.

A *visit* is a distinct (member, category, date of service), as in
:mod:`evalkit.utilization`; for inpatient lines it is the stay (same admission date).
Dollars are allowed amounts summed in whole cents. The table ``load_notes`` holds
counts only, never a member id.
"""
from __future__ import annotations

import duckdb
import pandas as pd

from ..privacy import suppress

#: Note -> what it counts (the order is the order of display).
NOTE_TEXT = {
    "no_coverage": "persons with claim lines but no accepted coverage spell (none given, "
                   "or all quarantined; lines quarantined as service_outside_enrollment)",
    "unmapped_category": "visits whose category code is not mapped to a contract category "
                         "(quarantined as unknown_category)",
    "missing_end_date": "inpatient stays with no discharge date (quarantined as "
                        "missing_end_date)",
    "inpatient_end_before_start": "inpatient stays discharged before admission (quarantined "
                                  "as end_before_start); nights: days between the two dates",
    "end_date_not_used": "visits of a category that does not use the end date, with an end "
                         "date before the date of service, after 2100 or unreadable (kept; end "
                         "date cleared)",
}
COLUMNS = ["table", "note", "code", "persons", "lines", "visits", "nights", "amount"]

_WHERE = {
    "no_coverage": "_reason = 'service_outside_enrollment' AND NOT EXISTS "
                   "(SELECT 1 FROM ok_spells s WHERE s.member_id = e.member_id)",
    "unmapped_category": "_reason = 'unknown_category'",
    "missing_end_date": "_reason = 'missing_end_date'",
    "inpatient_end_before_start": "_reason = 'end_before_start' AND _mapped = 'inpatient'",
    "end_date_not_used": "_reason IS NULL AND _end_unused",
}
_CODE = {"unmapped_category": "CAST(category AS VARCHAR)", "end_date_not_used": "_mapped"}


def record_notes(con: duckdb.DuckDBPyConnection) -> None:
    """Create the table ``load_notes`` from the loader's checked encounter lines.

    Reads ``chk_encounters`` (every source line with its ``_reason``, ``_mapped`` category
    and ``_end_unused`` flag) and ``ok_spells`` (the accepted coverage spells), as left
    by :func:`evalkit.data.load.load_claims` before it drops them.
    """
    tagged = " UNION ALL ".join(
        f"SELECT {i} AS o, '{note}' AS note, {_CODE.get(note, 'NULL')} AS code, member_id, "
        f"coalesce(_mapped, CAST(category AS VARCHAR)) AS cat, service_date, end_date, "
        f"allowed_amount FROM chk_encounters e WHERE {where}"
        for i, (note, where) in enumerate(_WHERE.items()))
    con.execute(f"""
        CREATE OR REPLACE TABLE load_notes AS
        WITH v AS (
          SELECT o, note, code, member_id, count(*) AS lines,
                 sum(round(allowed_amount * 100)) AS cents,
                 max(date_diff('day', end_date, service_date)) AS back_nights
          FROM ({tagged}) GROUP BY o, note, code, member_id, cat, service_date
        )
        SELECT 'encounters' AS "table", note, code, count(DISTINCT member_id) AS persons,
               CAST(sum(lines) AS BIGINT) AS lines, count(*) AS visits,
               CASE WHEN note = 'inpatient_end_before_start'
                    THEN CAST(sum(back_nights) AS BIGINT) END AS nights,
               coalesce(sum(cents), 0) / 100.0 AS amount
        FROM v GROUP BY o, note, code ORDER BY o, code""")


def read_notes(con: duckdb.DuckDBPyConnection | None) -> pd.DataFrame:
    """The ``load_notes`` table (empty, with its columns, when there is none: person and
    summary mode, or no connection)."""
    if con is not None and con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'load_notes' "
            "AND NOT temporary").fetchall()[0][0]:
        return con.execute(f"SELECT {', '.join(chr(34) + c + chr(34) for c in COLUMNS)} "
                           "FROM load_notes").df()
    return pd.DataFrame({c: pd.Series(dtype="object" if c in ("table", "note", "code")
                                      else "float64") for c in COLUMNS})


def _n(k, one: str) -> str:
    k = int(k)
    return f"{k:,} {one if k == 1 else one + 's'}"


#: Note -> its console sentence (counts and dollars only).
SENTENCES = {
    "no_coverage": "{persons} with claims {has} no accepted coverage spell: {visits} ({lines}, "
                   "{dollars}) set aside as service_outside_enrollment.",
    "unmapped_category": "unmapped category code '{code}': {visits} ({lines}, {dollars}) set "
                         "aside as unknown_category.",
    "missing_end_date": "{stays} ({lines}, {dollars}) without a discharge date: set aside as "
                        "missing_end_date.",
    "inpatient_end_before_start": "{stays} ({lines}) discharged before admission: {nights} and "
                                  "{dollars} set aside as end_before_start.",
    "end_date_not_used": "{code_visits} ({lines}, {dollars}) with an end date before the date "
                         "of service, after 2100 or unreadable: kept (this category does not "
                         "use the end date).",
}


#: Note -> what its sentence is about, when a public run hides its figures.
HIDDEN = {
    "no_coverage": "persons with claims and no accepted coverage spell (lines set aside as "
                   "service_outside_enrollment)",
    "unmapped_category": "unmapped category code '{code}' (set aside as unknown_category)",
    "missing_end_date": "inpatient stays without a discharge date (set aside as "
                        "missing_end_date)",
    "inpatient_end_before_start": "inpatient stays discharged before admission (set aside "
                                  "as end_before_start)",
    "end_date_not_used": "{code} visits with an unusable end date (kept)",
}
#: The figures of a notes row, hidden with its count of persons in public runs.
FIGURES = ["lines", "visits", "nights", "amount"]
#: Unmapped category codes named one by one on the console (the most visits first).
TOP_CODES = 10


def public_notes(notes: pd.DataFrame, min_cell: int = 11) -> pd.DataFrame:
    """The notes as a public run shows them.

    Unmapped category codes of fewer than ``min_cell`` persons are merged into one row
    (code ``"k other codes"``; its persons are not known without double counting, so it
    is hidden); then every row with fewer than ``min_cell`` persons has its persons and
    its figures (lines, visits, nights, dollars) replaced by ``"*"``
    (:func:`evalkit.privacy.suppress`).
    """
    if notes.empty:
        return notes
    small = (notes["note"] == "unmapped_category") & (notes["persons"] < min_cell)
    if small.sum() > 1:
        grouped = notes[small]
        merged = {"table": "encounters", "note": "unmapped_category",
                  "code": f"{int(small.sum())} other codes",
                  "persons": grouped["persons"].max(), "nights": float("nan"),
                  **{c: grouped[c].sum() for c in ("lines", "visits", "amount")}}
        first = int(small.to_numpy().nonzero()[0][0])
        notes = pd.concat([notes[~small].iloc[:first], pd.DataFrame([merged]),
                           notes[~small].iloc[first:]], ignore_index=True)
    return suppress(notes.reset_index(drop=True), ["persons"], min_cell=min_cell,
                    derived={c: "persons" for c in FIGURES}, protect_rows=False).table


def _hidden(value) -> bool:
    return isinstance(value, str)


def _sentence(r, min_cell: int) -> str:
    if _hidden(r.persons) or _hidden(r.visits):
        return (f"{HIDDEN[r.note].format(code=r.code)}: fewer than {min_cell} persons "
                f"(figures hidden in a public run).")
    nights = 0 if pd.isna(r.nights) else r.nights
    return SENTENCES[r.note].format(
        persons=_n(r.persons, "person"), has="has" if int(r.persons) == 1 else "have",
        visits=_n(r.visits, "visit"), stays=_n(r.visits, "inpatient stay"),
        code_visits=_n(r.visits, f"{r.code} visit"), lines=_n(r.lines, "line"),
        nights=_n(nights, "night"), dollars=f"${r.amount:,.2f}", code=r.code)


def note_sentences(notes: pd.DataFrame, min_cell: int = 11) -> list[str]:
    """One sentence per note (counts and dollars only), in :data:`NOTE_TEXT` order.

    Unmapped category codes: the :data:`TOP_CODES` codes with the most visits, then one
    sentence for the other codes. A row whose persons are hidden (``"*"``, from
    :func:`public_notes`) says "fewer than ``min_cell`` persons" and no figures.
    """
    if notes.empty:
        return []
    unmapped = notes[notes["note"] == "unmapped_category"]
    numeric = unmapped[~unmapped["visits"].map(_hidden)]
    order = list(numeric.sort_values("visits", ascending=False, kind="stable").index)
    rest = order[TOP_CODES:]
    hidden = [i for i in unmapped.index if i not in set(order)]
    out = []
    for i, r in notes.iterrows():
        if r.note == "unmapped_category":
            if i == unmapped.index[0]:      # all codes here: most visits first, then the rest
                out += [_sentence(notes.loc[j], min_cell) for j in order[:TOP_CODES] + hidden]
                if rest:
                    rows = notes.loc[rest]
                    out.append(f"{len(rest):,} other unmapped category codes: "
                               f"{_n(rows['visits'].sum(), 'visit')} "
                               f"({_n(rows['lines'].sum(), 'line')}, "
                               f"${float(rows['amount'].sum()):,.2f}) set aside as "
                               f"unknown_category.")
            continue
        out.append(_sentence(r, min_cell))
    return out


__all__ = ["record_notes", "read_notes", "note_sentences", "public_notes", "NOTE_TEXT", "COLUMNS"]
