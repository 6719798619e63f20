"""One claims plan written in the other forms evalkit reads: an OMOP CDM v5.4 database
and a Synthea CSV export.

The plan is a synthetic plan in the contract's form (``evalkit.data.synthetic.generate``,
Parquet files). The converters below are written from the OMOP CDM and Synthea layouts
(the table and column names of tests/test_omop.py and tests/test_synthea.py), not from
evalkit's readers, so a run on each form must give the contract run's member x window
table, value for value. Category -> source code:

=================  ==========================  ================================
contract           OMOP visit_concept_id       Synthea ENCOUNTERCLASS
=================  ==========================  ================================
er                 9203                        emergency
inpatient          9201                        inpatient
outpatient_mh      9202 + a condition 1001     ambulatory + REASONCODE 35489007
                   (Depressive disorder, a
                   descendant of 74732009)
outpatient_other   9202                        ambulatory
primary_care       581477 (Office Visit)       wellness
pharmacy           581458 (Pharmacy visit)     pharmacy (data.synthea.class_map)
other              38004193 (a made-up use)    home
=================  ==========================  ================================

OMOP needs ``visit_concepts={581477: primary_care, 581458: pharmacy, 38004193: other}``;
Synthea needs ``class_map={"pharmacy": "pharmacy"}``.
"""
from pathlib import Path

import duckdb

from evalkit.data.synthetic import MEMBER_ID_PREFIX, member_id

from test_omop import DDL, DEPRESSION, MENTAL, _ins
from test_synthea import ENCOUNTERS, PATIENTS, PAYERS, TRANSITIONS_DATES

OMOP_VISITS = {"er": 9203, "inpatient": 9201, "outpatient_mh": 9202, "outpatient_other": 9202,
               "primary_care": 581477, "pharmacy": 581458, "other": 38004193}
OMOP_EXTRA = {581477: "primary_care", 581458: "pharmacy", 38004193: "other"}
SYNTHEA_CLASSES = {"er": "emergency", "inpatient": "inpatient", "outpatient_mh": "ambulatory",
                   "outpatient_other": "ambulatory", "primary_care": "wellness",
                   "pharmacy": "pharmacy", "other": "home"}
SYNTHEA_EXTRA = {"pharmacy": "pharmacy"}
PAYER = "d47b3510-2895-3b70-9897-342d681c769d"


def _case(mapping: dict, column: str = "category") -> str:
    whens = " ".join(f"WHEN '{k}' THEN {v!r}" if isinstance(v, str) else f"WHEN '{k}' THEN {v}"
                     for k, v in mapping.items())
    return f"CASE {column} {whens} END"


#: A synthetic member id as an OMOP person id (its number)
PERSON = f"CAST(substr(member_id, {len(MEMBER_ID_PREFIX) + 1}) AS BIGINT)"


def omop_member_id(person_id) -> str:
    """The synthetic member id of an OMOP person id written by :func:`to_omop`."""
    return member_id(person_id)


def to_omop(plan: Path, path: Path) -> Path:
    """Write the plan as an OMOP CDM database (DuckDB file); exposure as cohorts 11
    (self_help) and 12 (control). OMOP's person ids are integers: a synthetic member id
    ``M000000123`` becomes person 123 (:func:`omop_member_id` turns it back)."""
    pq = lambda t: f"read_parquet('{plan / (t + '.parquet')}')"  # noqa: E731
    con = duckdb.connect(str(path))
    con.execute(DDL)
    con.execute(f"""INSERT INTO person (person_id, gender_concept_id, year_of_birth,
                    gender_source_value)
        SELECT {PERSON}, CASE sex WHEN 'F' THEN 8532 WHEN 'M' THEN 8507 ELSE 0 END,
               birth_year, sex FROM {pq('members')}""")
    con.execute(f"""INSERT INTO observation_period (observation_period_id, person_id,
                    observation_period_start_date, observation_period_end_date,
                    period_type_concept_id)
        SELECT row_number() OVER (), {PERSON}, start_date, end_date, 32817
        FROM {pq('enrollment')}""")
    con.execute(f"""INSERT INTO visit_occurrence (visit_occurrence_id, person_id,
                    visit_concept_id, visit_start_date, visit_end_date, visit_type_concept_id)
        SELECT claim_id, {PERSON}, {_case(OMOP_VISITS)}, service_date, end_date, 32810
        FROM {pq('encounters')}""")
    con.execute(f"""INSERT INTO condition_occurrence (condition_occurrence_id, person_id,
                    condition_concept_id, condition_start_date, visit_occurrence_id)
        SELECT row_number() OVER (), {PERSON}, {DEPRESSION}, service_date, claim_id
        FROM {pq('encounters')} WHERE category = 'outpatient_mh'""")
    con.execute(f"""INSERT INTO cost (cost_id, cost_event_id, cost_domain_id, amount_allowed,
                    total_paid)
        SELECT claim_id, claim_id, 'Visit', allowed_amount, paid_amount
        FROM {pq('encounters')}""")
    _ins(con, "concept", [
        {"concept_id": MENTAL, "concept_name": "Mental disorder", "domain_id": "Condition",
         "vocabulary_id": "SNOMED", "concept_code": "74732009", "standard_concept": "S"},
        {"concept_id": DEPRESSION, "concept_name": "Depressive disorder",
         "domain_id": "Condition", "vocabulary_id": "SNOMED", "concept_code": "35489007",
         "standard_concept": "S"}])
    _ins(con, "concept_ancestor", [{"ancestor_concept_id": MENTAL,
                                    "descendant_concept_id": DEPRESSION,
                                    "min_levels_of_separation": 1,
                                    "max_levels_of_separation": 1}])
    con.execute(f"""INSERT INTO cohort (cohort_definition_id, subject_id, cohort_start_date)
        SELECT CASE "group" WHEN 'self_help' THEN 11 ELSE 12 END, {PERSON}, index_date
        FROM {pq('exposure')}""")
    con.close()
    return path


def _csv(con, sql: str, header: list[str], path: Path) -> None:
    """COPY a query to CSV with exactly ``header`` (absent columns left empty)."""
    have = {d[0] for d in con.execute(f"DESCRIBE {sql}").fetchall()}
    cols = ", ".join(f'"{c}"' if c in have else f"NULL AS \"{c}\"" for c in header)
    con.execute(f"COPY (SELECT {cols} FROM ({sql})) TO '{path}' (HEADER, DELIMITER ',')")


def to_synthea(plan: Path, folder: Path) -> Path:
    """Write the plan as a Synthea CSV export (START_DATE/END_DATE payer transitions),
    with ``exposure.csv`` next to it."""
    folder.mkdir(parents=True, exist_ok=True)
    pq = lambda t: f"read_parquet('{plan / (t + '.parquet')}')"  # noqa: E731
    con = duckdb.connect()
    _csv(con, f"""SELECT CAST(member_id AS VARCHAR) AS "Id",
                         printf('%04d-07-01', birth_year) AS "BIRTHDATE", sex AS "GENDER"
                  FROM {pq('members')}""", PATIENTS, folder / "patients.csv")
    _csv(con, f"SELECT '{PAYER}' AS \"Id\", 'Aetna' AS \"NAME\"", PAYERS, folder / "payers.csv")
    _csv(con, f"""SELECT CAST(member_id AS VARCHAR) AS "PATIENT",
                         strftime(start_date, '%Y-%m-%dT00:00:00Z') AS "START_DATE",
                         strftime(end_date, '%Y-%m-%dT00:00:00Z') AS "END_DATE",
                         '{PAYER}' AS "PAYER"
                  FROM {pq('enrollment')}""", TRANSITIONS_DATES, folder / "payer_transitions.csv")
    _csv(con, f"""SELECT CAST(claim_id AS VARCHAR) AS "Id",
                         strftime(service_date, '%Y-%m-%dT08:00:00Z') AS "START",
                         strftime(coalesce(end_date, service_date), '%Y-%m-%dT12:00:00Z') AS "STOP",
                         CAST(member_id AS VARCHAR) AS "PATIENT", '{PAYER}' AS "PAYER",
                         {_case(SYNTHEA_CLASSES)} AS "ENCOUNTERCLASS", '185345009' AS "CODE",
                         CAST(allowed_amount AS VARCHAR) AS "TOTAL_CLAIM_COST",
                         CAST(allowed_amount AS VARCHAR) AS "BASE_ENCOUNTER_COST",
                         CAST(paid_amount AS VARCHAR) AS "PAYER_COVERAGE",
                         CASE WHEN category = 'outpatient_mh' THEN '35489007' END AS "REASONCODE"
                  FROM {pq('encounters')}""", ENCOUNTERS, folder / "encounters.csv")
    con.execute(f"""COPY (SELECT member_id, "group", index_date FROM {pq('exposure')})
                    TO '{folder / 'exposure.csv'}' (HEADER, DELIMITER ',')""")
    con.close()
    return folder
