"""Read an OMOP Common Data Model (v5.4) database as the claims contract's four tables.

The OMOP tables are not copied or cleaned here: this module only creates four DuckDB
views that *rename and recode* them into the contract's shape (``omop_members``,
``omop_enrollment``, ``omop_encounters``, ``omop_exposure``), and the ordinary loader
(:func:`evalkit.data.load.load_claims`) then applies every contract check to them, so a
visit with a bad date or an unmapped visit concept is quarantined and counted like any
claim line (rows in = accepted + quarantined, one view row per OMOP row).

Mapping (also in docs/data-contract.md):

* ``members`` <- ``person``: person_id, year_of_birth, and sex from gender_concept_id
  (8507 male -> ``M``, 8532 female -> ``F``, otherwise gender_source_value);
* ``enrollment`` <- ``observation_period`` (or ``payer_plan_period``, the insurance
  spells of claims-based CDMs): one row per period;
* ``encounters`` <- ``visit_occurrence``: one row per visit. The category comes from
  visit_concept_id (9201 inpatient, 9202 outpatient, 9203 emergency room, 262 emergency
  room and inpatient; more through ``visit_concepts``). An outpatient visit is an
  *outpatient mental-health* visit when a condition recorded at the visit is one of
  ``mh_condition_concepts`` or of the concepts of the SNOMED codes
  ``mh_condition_snomed`` (default 74732009 "Mental disorder"), or, when
  ``concept_ancestor`` is present, a descendant of one; or its provider's specialty is
  one of ``mh_specialty_concepts``. A visit whose concept is not mapped keeps the code
  ``visit_concept_<id>`` and is quarantined as ``unknown_category``, so unmapped visits
  are seen, never silently dropped (and counted per concept, in visits and dollars, in
  ``load_notes``). The mental-health concepts found (roots, descendants, specialties)
  are written to the table ``omop_mh_concepts`` so an analyst can check them. An
  inpatient visit without visit_end_date is quarantined as ``missing_end_date``.
  Amounts are the sums of the ``cost`` rows recorded against the visit
  (cost_domain_id ``Visit``): ``amount_allowed`` as allowed, ``total_paid`` as paid;
* ``exposure`` <- a cohort table (cohort_definition_id, subject_id, cohort_start_date:
  one cohort definition per arm, the start date is the index date) or a file with the
  contract's exposure columns.
"""
from __future__ import annotations

import warnings

import duckdb

from ..errors import DataDroppedWarning, DataValidationError
from .contract import CATEGORIES
from .load import _lit, _q, scan_sql

#: OMOP CDM visit concepts (standard, Visit domain) -> contract category.
VISIT_CONCEPTS = {
    9201: "inpatient",        # Inpatient Visit
    9202: "outpatient_other",  # Outpatient Visit (mental-health visits: see module docstring)
    9203: "er",               # Emergency Room Visit
    262: "inpatient",         # Emergency Room and Inpatient Visit (see er_inpatient)
}

#: Default mental-health conditions, as SNOMED CT codes looked up in the CDM's
#: ``concept`` table: 74732009 "Mental disorder"; with ``concept_ancestor`` every
#: descendant counts too (depression, anxiety, substance use disorders, ...).
MH_CONDITION_SNOMED = ("74732009",)

#: The CDM tables read, and the columns each needs (real CDM v5.4 names).
CDM_COLUMNS = {
    "person": ("person_id", "gender_concept_id", "year_of_birth", "gender_source_value"),
    "observation_period": ("person_id", "observation_period_start_date",
                           "observation_period_end_date"),
    "payer_plan_period": ("person_id", "payer_plan_period_start_date",
                          "payer_plan_period_end_date"),
    "visit_occurrence": ("visit_occurrence_id", "person_id", "visit_concept_id",
                         "visit_start_date", "visit_end_date", "provider_id"),
    "cost": ("cost_event_id", "cost_domain_id", "amount_allowed", "total_paid"),
    "condition_occurrence": ("visit_occurrence_id", "condition_concept_id"),
    "provider": ("provider_id", "specialty_concept_id"),
    "concept_ancestor": ("ancestor_concept_id", "descendant_concept_id"),
    "concept": ("concept_id", "vocabulary_id", "concept_code"),
    "cohort": ("cohort_definition_id", "subject_id", "cohort_start_date"),
}


def _tables(con: duckdb.DuckDBPyConnection, prefix: str) -> dict[str, set[str]]:
    """Tables (lower-case names) under ``prefix`` (``catalog`` or ``catalog.schema``)
    with their columns."""
    parts = prefix.split(".")
    cond = f"table_catalog = {_lit(parts[0])}" + (
        f" AND table_schema = {_lit(parts[1])}" if len(parts) > 1 else " AND table_schema = 'main'")
    out: dict[str, set[str]] = {}
    for t, c in con.execute(f"SELECT table_name, column_name FROM information_schema.columns "
                            f"WHERE {cond}").fetchall():
        out.setdefault(t.lower(), set()).add(c.lower())
    return out


def _record_mh_concepts(con, T, have: dict, roots: dict[int, str], specialties) -> None:
    """Write the table ``omop_mh_concepts``: the concepts that make an outpatient visit a
    mental-health visit, as resolved in this CDM, so an analyst can check the list.

    One row per concept: ``concept_id``, ``concept_code``, ``vocabulary_id``,
    ``concept_name`` (from ``concept`` when present), ``found_as`` (the SNOMED code or
    setting it comes from, ``descendant`` through ``concept_ancestor``, or ``provider
    specialty``) and ``visits``: the visits with a condition (or a provider) of that
    concept.
    """
    rows = [(c, how) for c, how in roots.items()] + [
        (int(c), "provider specialty") for c in specialties]
    values = ", ".join(f"({c}, {_lit(how)})" for c, how in rows) or "(NULL, NULL)"
    found = f"SELECT * FROM (VALUES {values}) t(concept_id, found_as) WHERE concept_id IS NOT NULL"
    if roots and "concept_ancestor" in have:
        ids = ", ".join(str(c) for c in roots)
        found += (f" UNION ALL SELECT DISTINCT descendant_concept_id, 'descendant' "
                  f"FROM {T('concept_ancestor')} WHERE ancestor_concept_id IN ({ids}) "
                  f"AND descendant_concept_id NOT IN ({ids})")
    name = (f"LEFT JOIN {T('concept')} c USING (concept_id)" if "concept" in have else
            "LEFT JOIN (SELECT NULL::INTEGER AS concept_id, NULL AS concept_code, "
            "NULL AS vocabulary_id, NULL AS concept_name) c USING (concept_id)")
    use = []
    if "condition_occurrence" in have:
        use.append(f"SELECT condition_concept_id AS concept_id, visit_occurrence_id "
                   f"FROM {T('condition_occurrence')} WHERE visit_occurrence_id IS NOT NULL")
    if "provider" in have and "provider_id" in have["visit_occurrence"]:
        use.append(f"SELECT p.specialty_concept_id, v.visit_occurrence_id "
                   f"FROM {T('visit_occurrence')} v JOIN {T('provider')} p USING (provider_id)")
    used = " UNION ALL ".join(use) or \
        "SELECT NULL::BIGINT AS concept_id, NULL::BIGINT AS visit_occurrence_id WHERE false"
    con.execute(f"""CREATE OR REPLACE TABLE omop_mh_concepts AS
        WITH f AS ({found}),
        u AS (SELECT concept_id, count(DISTINCT visit_occurrence_id) AS visits FROM ({used}) x
              WHERE concept_id IN (SELECT concept_id FROM f) GROUP BY 1)
        SELECT f.concept_id, CAST(c.concept_code AS VARCHAR) AS concept_code,
               CAST(c.vocabulary_id AS VARCHAR) AS vocabulary_id,
               CAST(c.concept_name AS VARCHAR) AS concept_name, f.found_as,
               coalesce(u.visits, 0) AS visits
        FROM f {name} LEFT JOIN u USING (concept_id)
        ORDER BY f.found_as = 'descendant', f.concept_id""")


def omop_sources(con: duckdb.DuckDBPyConnection, prefix: str = "src", *,
                 enrollment: str = "observation_period",
                 visit_concepts: dict | None = None,
                 er_inpatient: str = "inpatient",
                 mh_condition_concepts=(),
                 mh_condition_snomed=MH_CONDITION_SNOMED,
                 mh_specialty_concepts=(),
                 exposure_file: str | None = None,
                 exposure_cohort_table: str = "cohort",
                 exposure_cohorts: dict[str, int] | None = None,
                 encoding: str = "utf-8") -> dict[str, str]:
    """Create views that present an OMOP CDM as the contract's tables.

    Parameters
    ----------
    con : DuckDB connection in which the CDM is visible (e.g. attached read-only).
    prefix : where the CDM tables are: ``catalog`` or ``catalog.schema``.
    enrollment : ``observation_period`` or ``payer_plan_period``.
    visit_concepts : visit_concept_id -> contract category, added to (or replacing
        entries of) :data:`VISIT_CONCEPTS`.
    er_inpatient : category of concept 262 (an ER visit that led to an admission):
        ``inpatient`` (default: counted as the stay, as HEDIS counts ER visits) or ``er``.
    mh_condition_concepts, mh_specialty_concepts : concept ids that make an outpatient
        visit a mental-health visit (see the module docstring).
    mh_condition_snomed : SNOMED CT codes of mental-health conditions, turned into
        concept ids through the ``concept`` table (default :data:`MH_CONDITION_SNOMED`).
    exposure_file : CSV or Parquet with member_id, group, index_date (names mapped by
        the loader's ``columns``); or else
    exposure_cohort_table, exposure_cohorts : the cohort table (under ``prefix``) and
        arm -> cohort_definition_id, e.g. ``{"self_help": 11, "control": 12}``.
    encoding : text encoding of a CSV ``exposure_file`` (``data.encoding``).

    Returns
    -------
    dict
        Contract table name -> view name, for :func:`evalkit.data.load.load_claims`.

    Raises
    ------
    DataValidationError
        A required CDM table or column is missing (all such problems at once), or
        no exposure source is given.
    """
    have = _tables(con, prefix)
    needed = ["person", enrollment, "visit_occurrence"]
    if exposure_file is None:
        needed.append(exposure_cohort_table)
    failures = []
    for t in needed:
        want = CDM_COLUMNS.get(t if t != exposure_cohort_table else "cohort", ())
        if t not in have:
            failures.append({"table": t, "column": None, "reason": "missing_table", "count": 0,
                             "examples": [f"OMOP tables present: {', '.join(sorted(have)) or 'none'}"]})
            continue
        for c in want:
            if c not in have[t] and c not in ("gender_source_value", "provider_id"):
                failures.append({"table": t, "column": c, "reason": "missing_column",
                                 "count": 0, "examples": []})
    if exposure_file is None and not exposure_cohorts:
        failures.append({"table": "exposure", "column": None, "reason": "missing_table",
                         "count": 0, "examples": ["give data.omop.exposure_file or "
                                                  "data.omop.exposure_cohorts"]})
    if failures:
        lines = "\n".join(f"  {f['table']}{'.' + f['column'] if f['column'] else ''}: "
                          f"{f['reason']}{'; ' + f['examples'][0] if f['examples'] else ''}"
                          for f in failures)
        raise DataValidationError(f"the OMOP CDM at {prefix} cannot be read as claims:\n{lines}\n"
                                  "See docs/data-contract.md (OMOP CDM).", failures)

    T = lambda name: f"{prefix}.{_q(name)}"  # noqa: E731
    sex_src = "gender_source_value" if "gender_source_value" in have["person"] else "NULL"
    con.execute(f"""CREATE OR REPLACE TEMP VIEW omop_members AS
        SELECT person_id AS member_id, year_of_birth AS birth_year,
               CASE gender_concept_id WHEN 8507 THEN 'M' WHEN 8532 THEN 'F'
                    ELSE CAST({sex_src} AS VARCHAR) END AS sex
        FROM {T('person')}""")
    start, end = (f"{enrollment}_start_date", f"{enrollment}_end_date")
    con.execute(f"""CREATE OR REPLACE TEMP VIEW omop_enrollment AS
        SELECT person_id AS member_id, {start} AS start_date, {end} AS end_date
        FROM {T(enrollment)}""")

    cmap = {**VISIT_CONCEPTS, 262: er_inpatient,
            **{int(k): v for k, v in (visit_concepts or {}).items()}}
    bad = {k: v for k, v in cmap.items() if v not in CATEGORIES}
    if bad:
        raise DataValidationError(f"data.omop.visit_concepts maps onto unknown categories {bad}; "
                                  f"allowed: {', '.join(CATEGORIES)}")
    rows = ", ".join(f"({int(k)}, {_lit(v)})" for k, v in cmap.items())
    con.execute(f"CREATE OR REPLACE TEMP TABLE _omop_visit_map AS "
                f"SELECT * FROM (VALUES {rows}) t(concept_id, category)")

    mh_parts = []
    roots = {int(c): "data.omop.mh_condition_concepts" for c in mh_condition_concepts}
    if mh_condition_snomed and "concept" in have:
        codes = ", ".join(_lit(str(c)) for c in mh_condition_snomed)
        for cid, code in con.execute(
                f"SELECT concept_id, concept_code FROM {T('concept')} WHERE vocabulary_id = "
                f"'SNOMED' AND concept_code IN ({codes})").fetchall():
            roots.setdefault(int(cid), f"SNOMED code {code}")
    concepts = list(roots)
    conds = ", ".join(str(c) for c in sorted(set(concepts)))
    _record_mh_concepts(con, T, have, roots, mh_specialty_concepts)
    if not conds or "condition_occurrence" not in have:
        warnings.warn("OMOP: no mental-health condition concepts could be resolved (no "
                      "`concept` table or condition_occurrence, and no "
                      "data.omop.mh_condition_concepts): outpatient mental-health visits "
                      "are found only through mh_specialty_concepts", DataDroppedWarning,
                      stacklevel=2)
    if conds and "condition_occurrence" in have:
        concept_set = f"({conds})"
        if "concept_ancestor" in have:
            concept_set = (f"(SELECT descendant_concept_id FROM {T('concept_ancestor')} "
                           f"WHERE ancestor_concept_id IN ({conds}) UNION SELECT unnest([{conds}]))")
        mh_parts.append(f"SELECT visit_occurrence_id FROM {T('condition_occurrence')} "
                        f"WHERE visit_occurrence_id IS NOT NULL AND condition_concept_id IN {concept_set}")
    specs = ", ".join(str(int(c)) for c in mh_specialty_concepts)
    if specs and "provider" in have and "provider_id" in have["visit_occurrence"]:
        mh_parts.append(f"SELECT v.visit_occurrence_id FROM {T('visit_occurrence')} v "
                        f"JOIN {T('provider')} p USING (provider_id) "
                        f"WHERE p.specialty_concept_id IN ({specs})")
    mh_sql = " UNION ".join(mh_parts) or "SELECT NULL::BIGINT AS visit_occurrence_id WHERE false"

    has_cost = "cost" in have and {"cost_event_id", "cost_domain_id"} <= have["cost"]
    if has_cost:
        allowed = "amount_allowed" if "amount_allowed" in have["cost"] else "NULL"
        paid = "total_paid" if "total_paid" in have["cost"] else "NULL"
        cost_sql = (f"SELECT cost_event_id, sum({allowed}) AS allowed, sum({paid}) AS paid "
                    f"FROM {T('cost')} WHERE cost_domain_id = 'Visit' GROUP BY cost_event_id")
    else:
        cost_sql = "SELECT NULL::BIGINT AS cost_event_id, NULL::DOUBLE AS allowed, NULL::DOUBLE AS paid WHERE false"
    con.execute(f"""CREATE OR REPLACE TEMP VIEW omop_encounters AS
        WITH mh AS (SELECT DISTINCT visit_occurrence_id FROM ({mh_sql})),
             cost AS ({cost_sql})
        SELECT v.visit_occurrence_id AS claim_id, v.person_id AS member_id,
               v.visit_start_date AS service_date, v.visit_end_date AS end_date,
               CASE WHEN m.category = 'outpatient_other' AND mh.visit_occurrence_id IS NOT NULL
                    THEN 'outpatient_mh'
                    ELSE coalesce(m.category, 'visit_concept_' || CAST(v.visit_concept_id AS VARCHAR))
               END AS category,
               coalesce(c.allowed, 0.0) AS allowed_amount, c.paid AS paid_amount,
               v.visit_concept_id, (c.allowed IS NOT NULL) AS cost_recorded
        FROM {T('visit_occurrence')} v
        LEFT JOIN _omop_visit_map m ON m.concept_id = v.visit_concept_id
        LEFT JOIN mh ON mh.visit_occurrence_id = v.visit_occurrence_id
        LEFT JOIN cost c ON c.cost_event_id = v.visit_occurrence_id""")
    n_visits, no_cost = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE NOT cost_recorded) "
        "FROM omop_encounters").fetchall()[0]
    if no_cost:
        where = ("there is no cost table" if not has_cost else
                 "no cost row of domain Visit with an amount_allowed names them")
        warnings.warn(f"OMOP: {no_cost:,} of {n_visits:,} visits have no recorded cost "
                      f"({where}); their allowed amount is taken as $0, so costs are "
                      "understated", DataDroppedWarning, stacklevel=2)

    if exposure_file is not None:
        con.execute(f"CREATE OR REPLACE TEMP VIEW omop_exposure AS "
                    f"SELECT * FROM {scan_sql(exposure_file, 'exposure', encoding)}")
    else:
        arms = " ".join(f"WHEN {int(i)} THEN {_lit(arm)}" for arm, i in exposure_cohorts.items())
        ids = ", ".join(str(int(i)) for i in exposure_cohorts.values())
        con.execute(f"""CREATE OR REPLACE TEMP VIEW omop_exposure AS
            SELECT subject_id AS member_id, CASE cohort_definition_id {arms} END AS "group",
                   cohort_start_date AS index_date
            FROM {T(exposure_cohort_table)} WHERE cohort_definition_id IN ({ids})""")
    return {t: f"omop_{t}" for t in ("members", "enrollment", "encounters", "exposure")}


__all__ = ["omop_sources", "VISIT_CONCEPTS", "MH_CONDITION_SNOMED", "CDM_COLUMNS"]
