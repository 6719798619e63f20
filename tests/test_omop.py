"""An OMOP CDM v5.4 database read as claims: mapping, quarantine, windows, prepare().

The database is built here with the CDM 5.4 table and column names (the subset of
tables evalkit reads, every column of each). Concept ids of conditions and specialties
are made up for the test and described in its own ``concept`` table, which is how a real
vocabulary resolves the SNOMED codes. Every expected value is worked out by hand below.
"""
import datetime as dt
import warnings

import duckdb
import pytest

from evalkit import params as P
from evalkit.cohort import DAYS_PER_MONTH, build_cohort
from evalkit.data.load import load_claims
from evalkit.data.omop import omop_sources
from evalkit.errors import DataDroppedWarning, DataValidationError
from evalkit.utilization import build_member_windows

DDL = """
CREATE TABLE person (person_id BIGINT, gender_concept_id INTEGER, year_of_birth INTEGER,
  month_of_birth INTEGER, day_of_birth INTEGER, birth_datetime TIMESTAMP,
  race_concept_id INTEGER, ethnicity_concept_id INTEGER, location_id BIGINT,
  provider_id BIGINT, care_site_id BIGINT, person_source_value VARCHAR,
  gender_source_value VARCHAR, gender_source_concept_id INTEGER, race_source_value VARCHAR,
  race_source_concept_id INTEGER, ethnicity_source_value VARCHAR,
  ethnicity_source_concept_id INTEGER);
CREATE TABLE observation_period (observation_period_id BIGINT, person_id BIGINT,
  observation_period_start_date DATE, observation_period_end_date DATE,
  period_type_concept_id INTEGER);
CREATE TABLE payer_plan_period (payer_plan_period_id BIGINT, person_id BIGINT,
  payer_plan_period_start_date DATE, payer_plan_period_end_date DATE,
  payer_concept_id INTEGER, payer_source_value VARCHAR, payer_source_concept_id INTEGER,
  plan_concept_id INTEGER, plan_source_value VARCHAR, plan_source_concept_id INTEGER,
  sponsor_concept_id INTEGER, sponsor_source_value VARCHAR, sponsor_source_concept_id INTEGER,
  family_source_value VARCHAR, stop_reason_concept_id INTEGER, stop_reason_source_value VARCHAR,
  stop_reason_source_concept_id INTEGER);
CREATE TABLE visit_occurrence (visit_occurrence_id BIGINT, person_id BIGINT,
  visit_concept_id INTEGER, visit_start_date DATE, visit_start_datetime TIMESTAMP,
  visit_end_date DATE, visit_end_datetime TIMESTAMP, visit_type_concept_id INTEGER,
  provider_id BIGINT, care_site_id BIGINT, visit_source_value VARCHAR,
  visit_source_concept_id INTEGER, admitted_from_concept_id INTEGER,
  admitted_from_source_value VARCHAR, discharged_to_concept_id INTEGER,
  discharged_to_source_value VARCHAR, preceding_visit_occurrence_id BIGINT);
CREATE TABLE condition_occurrence (condition_occurrence_id BIGINT, person_id BIGINT,
  condition_concept_id INTEGER, condition_start_date DATE, condition_start_datetime TIMESTAMP,
  condition_end_date DATE, condition_end_datetime TIMESTAMP, condition_type_concept_id INTEGER,
  condition_status_concept_id INTEGER, stop_reason VARCHAR, provider_id BIGINT,
  visit_occurrence_id BIGINT, visit_detail_id BIGINT, condition_source_value VARCHAR,
  condition_source_concept_id INTEGER, condition_status_source_value VARCHAR);
CREATE TABLE provider (provider_id BIGINT, provider_name VARCHAR, npi VARCHAR, dea VARCHAR,
  specialty_concept_id INTEGER, care_site_id BIGINT, year_of_birth INTEGER,
  gender_concept_id INTEGER, provider_source_value VARCHAR, specialty_source_value VARCHAR,
  specialty_source_concept_id INTEGER, gender_source_value VARCHAR,
  gender_source_concept_id INTEGER);
CREATE TABLE cost (cost_id BIGINT, cost_event_id BIGINT, cost_domain_id VARCHAR,
  cost_type_concept_id INTEGER, currency_concept_id INTEGER, total_charge DOUBLE,
  total_cost DOUBLE, total_paid DOUBLE, paid_by_payer DOUBLE, paid_by_patient DOUBLE,
  paid_patient_copay DOUBLE, paid_patient_coinsurance DOUBLE, paid_patient_deductible DOUBLE,
  paid_by_primary DOUBLE, paid_ingredient_cost DOUBLE, paid_dispensing_fee DOUBLE,
  payer_plan_period_id BIGINT, amount_allowed DOUBLE, revenue_code_concept_id INTEGER,
  revenue_code_source_value VARCHAR, drg_concept_id INTEGER, drg_source_value VARCHAR);
CREATE TABLE concept (concept_id INTEGER, concept_name VARCHAR, domain_id VARCHAR,
  vocabulary_id VARCHAR, concept_class_id VARCHAR, standard_concept VARCHAR,
  concept_code VARCHAR, valid_start_date DATE, valid_end_date DATE, invalid_reason VARCHAR);
CREATE TABLE concept_ancestor (ancestor_concept_id INTEGER, descendant_concept_id INTEGER,
  min_levels_of_separation INTEGER, max_levels_of_separation INTEGER);
CREATE TABLE cohort (cohort_definition_id BIGINT, subject_id BIGINT, cohort_start_date DATE,
  cohort_end_date DATE);
"""

MENTAL, DEPRESSION, HYPERTENSION, PSYCHIATRY = 1000, 1001, 1002, 2000


def _ins(con, table, rows):
    cols = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
    for row in rows:
        names = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        con.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", list(row.values()))
    assert set().union(*rows) <= set(cols)


def make_cdm(path):
    D = dt.date
    con = duckdb.connect(str(path))
    con.execute(DDL)
    _ins(con, "person", [
        {"person_id": 1, "gender_concept_id": 8532, "year_of_birth": 1970, "gender_source_value": "F"},
        {"person_id": 2, "gender_concept_id": 8507, "year_of_birth": 1980, "gender_source_value": "M"},
        {"person_id": 3, "gender_concept_id": 0, "year_of_birth": 1990, "gender_source_value": "X"},
    ])
    _ins(con, "observation_period", [
        {"observation_period_id": 1, "person_id": 1, "observation_period_start_date": D(2022, 1, 1),
         "observation_period_end_date": D(2024, 12, 31), "period_type_concept_id": 32817},
        # person 2: a gap in July and August 2023
        {"observation_period_id": 2, "person_id": 2, "observation_period_start_date": D(2022, 1, 1),
         "observation_period_end_date": D(2023, 6, 30), "period_type_concept_id": 32817},
        {"observation_period_id": 3, "person_id": 2, "observation_period_start_date": D(2023, 9, 1),
         "observation_period_end_date": D(2024, 12, 31), "period_type_concept_id": 32817},
    ])
    _ins(con, "payer_plan_period", [
        {"payer_plan_period_id": p, "person_id": p, "payer_plan_period_start_date": D(2022, 1, 1),
         "payer_plan_period_end_date": D(2024, 12, 31)} for p in (1, 2)])
    visits = [  # id, person, concept, start, end, provider
        (101, 1, 9203, D(2023, 3, 1), D(2023, 3, 1), None),    # ER, baseline
        (102, 1, 262, D(2023, 4, 1), D(2023, 4, 5), None),     # ER -> admitted: 4 nights
        (103, 1, 9202, D(2023, 7, 10), D(2023, 7, 10), None),  # outpatient, depression
        (104, 1, 9202, D(2023, 8, 10), D(2023, 8, 10), None),  # outpatient, hypertension
        (105, 1, 9202, D(2023, 9, 1), D(2023, 9, 1), 7),       # outpatient, psychiatrist
        (106, 1, 581477, D(2023, 9, 2), D(2023, 9, 2), None),  # unmapped concept
        (107, 1, 9203, D(2023, 11, 1), D(2023, 11, 1), None),  # ER without a cost row
        (201, 2, 9203, D(2023, 10, 1), D(2023, 10, 1), None),  # ER, two cost rows
        (202, 2, 9201, D(2023, 7, 15), D(2023, 7, 18), None),  # inpatient inside the gap
        (301, 3, 9203, D(2023, 5, 5), D(2023, 5, 5), None),    # person without exposure
    ]
    _ins(con, "visit_occurrence", [
        {"visit_occurrence_id": v, "person_id": p, "visit_concept_id": c, "visit_start_date": s,
         "visit_end_date": e, "provider_id": prov, "visit_type_concept_id": 32810}
        for v, p, c, s, e, prov in visits])
    _ins(con, "provider", [{"provider_id": 7, "specialty_concept_id": PSYCHIATRY},
                           {"provider_id": 8, "specialty_concept_id": 38004446}])
    _ins(con, "condition_occurrence", [
        {"condition_occurrence_id": 1, "person_id": 1, "condition_concept_id": DEPRESSION,
         "condition_start_date": D(2023, 7, 10), "visit_occurrence_id": 103},
        {"condition_occurrence_id": 2, "person_id": 1, "condition_concept_id": HYPERTENSION,
         "condition_start_date": D(2023, 8, 10), "visit_occurrence_id": 104},
    ])
    _ins(con, "concept", [
        {"concept_id": MENTAL, "concept_name": "Mental disorder", "domain_id": "Condition",
         "vocabulary_id": "SNOMED", "concept_code": "74732009", "standard_concept": "S"},
        {"concept_id": DEPRESSION, "concept_name": "Depressive disorder", "domain_id": "Condition",
         "vocabulary_id": "SNOMED", "concept_code": "35489007", "standard_concept": "S"},
        {"concept_id": HYPERTENSION, "concept_name": "Essential hypertension",
         "domain_id": "Condition", "vocabulary_id": "SNOMED", "concept_code": "59621000",
         "standard_concept": "S"},
    ])
    _ins(con, "concept_ancestor", [
        {"ancestor_concept_id": MENTAL, "descendant_concept_id": DEPRESSION,
         "min_levels_of_separation": 1, "max_levels_of_separation": 1}])
    costs = [(101, 150.25), (102, 5000.0), (103, 80.0), (104, 60.0), (105, 95.5),
             (201, 200.0), (201, 100.0), (202, 900.0), (301, 10.0)]
    _ins(con, "cost", [
        {"cost_id": i, "cost_event_id": v, "cost_domain_id": "Visit", "amount_allowed": a,
         "total_paid": round(a * 0.8, 2)} for i, (v, a) in enumerate(costs)]
        + [{"cost_id": 99, "cost_event_id": 101, "cost_domain_id": "Drug", "amount_allowed": 7.0}])
    _ins(con, "cohort", [
        {"cohort_definition_id": 11, "subject_id": 1, "cohort_start_date": D(2023, 6, 1)},
        {"cohort_definition_id": 12, "subject_id": 2, "cohort_start_date": D(2023, 6, 1)},
        {"cohort_definition_id": 12, "subject_id": 99, "cohort_start_date": D(2023, 6, 1)},
        {"cohort_definition_id": 13, "subject_id": 3, "cohort_start_date": D(2023, 6, 1)},
    ])
    con.close()
    return path


@pytest.fixture(scope="module")
def cdm(tmp_path_factory):
    return make_cdm(tmp_path_factory.mktemp("omop") / "cdm.duckdb")


def _load(cdm_path, **kw):
    con = duckdb.connect()
    con.execute(f"ATTACH '{cdm_path}' AS src (READ_ONLY)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sources = omop_sources(con, "src", exposure_cohorts={"self_help": 11, "control": 12},
                               mh_specialty_concepts=[PSYCHIATRY], **kw)
    report = load_claims(con, sources)
    return con, report, caught


def _windows(con):
    build_cohort(con)
    build_member_windows(con)
    return con.execute("SELECT * FROM member_windows ORDER BY member_id, period").df().set_index(["member_id", "period"])


def test_mapping_and_quarantine_by_hand(cdm):
    con, report, caught = _load(cdm)
    assert report.balanced()
    counts = report.counts.set_index("table")
    # one contract row per CDM row: 3 persons, 3 periods, 10 visits, 3 cohort rows of
    # the two arms' definitions (definition 13 is neither arm)
    assert counts.rows_in.to_dict() == {"members": 3, "enrollment": 3, "encounters": 10,
                                        "exposure": 3}
    got = {(r.table, r.reason): r.rows for r in report.quarantine.itertuples()}
    assert got == {("encounters", "unknown_category"): 1,            # visit 106, concept 581477
                   # visit 202 lies in person 2's gap; person 3 has no observation period
                   ("encounters", "service_outside_enrollment"): 2,
                   ("exposure", "unknown_member"): 1}                # subject 99
    record = con.execute("SELECT record FROM quarantine WHERE reason = 'unknown_category'").fetchall()[0][0]
    assert "visit_concept_581477" in record
    cats = dict(con.execute("SELECT claim_id, category FROM encounters").fetchall())
    assert cats == {101: "er", 102: "inpatient", 103: "outpatient_mh", 104: "outpatient_other",
                    105: "outpatient_mh", 107: "er", 201: "er"}
    sexes = dict(con.execute("SELECT member_id, sex FROM members").fetchall())
    assert sexes == {1: "F", 2: "M", 3: "X"}
    # visits 106 and 107 have no Visit-domain cost row (the Drug row of 101 is not a
    # visit cost): said out loud
    msgs = [str(w.message) for w in caught if issubclass(w.category, DataDroppedWarning)]
    assert any("2 of 10 visits have no recorded cost" in m for m in msgs)


def test_member_windows_from_omop(cdm):
    con, _, _ = _load(cdm)
    mw = _windows(con)
    b1, f1 = mw.loc[(1, "baseline")], mw.loc[(1, "followup")]
    assert (b1.er_visits, b1.inpatient_admissions, b1.inpatient_days) == (1, 1, 4)
    assert (b1.cost_er, b1.cost_inpatient) == (150.25, 5000.0)
    assert (f1.outpatient_mh_visits, f1.outpatient_other_visits, f1.er_visits) == (2, 1, 1)
    assert (f1.cost_outpatient_mh, f1.cost_er, f1.total_cost) == (175.5, 0.0, 235.5)
    f2 = mw.loc[(2, "followup")]
    assert (f2.er_visits, f2.cost_er) == (1, 300.0)                  # 200 + 100
    # follow-up [2023-06-01, 2024-05-31): June (30 days) + 2023-09-01..2024-05-30 (273)
    assert f2.member_months == pytest.approx(303 / DAYS_PER_MONTH, abs=1e-12)
    assert 3 not in mw.index.get_level_values(0)                     # no exposure


def test_options_change_the_mapping_as_documented(cdm):
    con, _, _ = _load(cdm, er_inpatient="er", enrollment="payer_plan_period",
                      visit_concepts={581477: "primary_care"})
    mw = _windows(con)
    b1 = mw.loc[(1, "baseline")]
    assert (b1.er_visits, b1.inpatient_days, b1.cost_er) == (2, 0, 5150.25)
    assert mw.loc[(1, "followup")].primary_care_visits == 1          # visit 106 now mapped
    f2 = mw.loc[(2, "followup")]                                      # no gap in the plan's periods
    assert f2.member_months == pytest.approx(12.0) and f2.inpatient_admissions == 1
    # without the SNOMED lookup or specialty list no outpatient visit is mental-health
    con2 = duckdb.connect()
    con2.execute(f"ATTACH '{cdm}' AS src (READ_ONLY)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        omop_sources(con2, "src", exposure_cohorts={"self_help": 11, "control": 12},
                     mh_condition_snomed=())
    assert any("no mental-health condition concepts" in str(w.message) for w in caught)
    assert con2.execute("SELECT count(*) FROM omop_encounters "
                        "WHERE category = 'outpatient_mh'").fetchall()[0][0] == 0


def test_exposure_from_a_file(cdm, tmp_path):
    f = tmp_path / "referrals.csv"
    f.write_text("member_id,group,index_date\n1,self_help,2023-06-01\n2,control,2023-06-01\n")
    con = duckdb.connect()
    con.execute(f"ATTACH '{cdm}' AS src (READ_ONLY)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataDroppedWarning)
        report = load_claims(con, omop_sources(con, "src", exposure_file=str(f)))
    assert report.counts.set_index("table").loc["exposure"].tolist() == [2, 2, 0]


def test_missing_cdm_tables_are_named(tmp_path):
    path = tmp_path / "bad.duckdb"
    with duckdb.connect(str(path)) as c:
        c.execute("CREATE TABLE person (person_id BIGINT, year_of_birth INTEGER)")
    con = duckdb.connect()
    con.execute(f"ATTACH '{path}' AS src (READ_ONLY)")
    with pytest.raises(DataValidationError) as err:
        omop_sources(con, "src")
    msg = str(err.value)
    for part in ("person.gender_concept_id: missing_column", "observation_period: missing_table",
                 "visit_occurrence: missing_table", "exposure_cohorts"):
        assert part in msg


def test_prepare_reads_omop(cdm, tmp_path):
    from evalkit.prepare import prepare
    p = P.validate({"data": {"source": "omop", "database": str(cdm),
                             "omop": {"exposure_cohorts": {"self_help": 11, "control": 12},
                                      "mh_specialty_concepts": [PSYCHIATRY]}},
                    "workbooks": ["data_quality"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataDroppedWarning)
        prep = prepare(p, tmp_path)
    assert prep.report.balanced()
    with duckdb.connect(str(prep.database), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM member_windows").fetchall()[0][0] == 4
    with pytest.raises(Exception, match="exposure_file or data.omop.exposure_cohorts"):
        P.validate({"data": {"source": "omop", "database": str(cdm)}})
    with pytest.raises(Exception, match="unknown categories"):
        P.validate({"data": {"source": "omop", "database": str(cdm),
                             "omop": {"exposure_file": "x.csv", "visit_concepts": {5: "clinic"}}}})
