"""A Synthea CSV export read as claims: mapping, quarantine, windows, prepare().

Synthea itself is a Java program that is not available here, so the test writes small
CSV files in Synthea's CSV export layout (the column names and order of patients.csv,
encounters.csv, payers.csv and both layouts of payer_transitions.csv: START_YEAR/END_YEAR
in Synthea 3.0, START_DATE/END_DATE in later versions). Every expected value is worked
out by hand below.
"""
import csv
import warnings

import duckdb
import pytest

from evalkit import params as P
from evalkit.cohort import DAYS_PER_MONTH, build_cohort
from evalkit.data.load import load_claims
from evalkit.data.synthea import synthea_sources
from evalkit.errors import DataValidationError
from evalkit.utilization import build_member_windows

PATIENTS = ["Id", "BIRTHDATE", "DEATHDATE", "SSN", "DRIVERS", "PASSPORT", "PREFIX", "FIRST",
            "LAST", "SUFFIX", "MAIDEN", "MARITAL", "RACE", "ETHNICITY", "GENDER", "BIRTHPLACE",
            "ADDRESS", "CITY", "STATE", "COUNTY", "FIPS", "ZIP", "LAT", "LON",
            "HEALTHCARE_EXPENSES", "HEALTHCARE_COVERAGE", "INCOME"]
ENCOUNTERS = ["Id", "START", "STOP", "PATIENT", "ORGANIZATION", "PROVIDER", "PAYER",
              "ENCOUNTERCLASS", "CODE", "DESCRIPTION", "BASE_ENCOUNTER_COST",
              "TOTAL_CLAIM_COST", "PAYER_COVERAGE", "REASONCODE", "REASONDESCRIPTION"]
TRANSITIONS_YEARS = ["PATIENT", "MEMBERID", "START_YEAR", "END_YEAR", "PAYER",
                     "SECONDARY_PAYER", "OWNERSHIP", "OWNERNAME"]
TRANSITIONS_DATES = ["PATIENT", "MEMBERID", "START_DATE", "END_DATE", "PAYER",
                     "SECONDARY_PAYER", "PLAN_OWNERSHIP", "OWNER_NAME"]
PAYERS = ["Id", "NAME", "ADDRESS", "CITY", "STATE_HEADQUARTERED", "ZIP", "PHONE",
          "AMOUNT_COVERED", "AMOUNT_UNCOVERED", "REVENUE", "COVERED_ENCOUNTERS",
          "UNCOVERED_ENCOUNTERS", "COVERED_MEDICATIONS", "UNCOVERED_MEDICATIONS",
          "COVERED_PROCEDURES", "UNCOVERED_PROCEDURES", "COVERED_IMMUNIZATIONS",
          "UNCOVERED_IMMUNIZATIONS", "UNIQUE_CUSTOMERS", "QOLS_AVG", "MEMBER_MONTHS"]

A = "b0a1c6a2-6c1e-4b5e-9a43-3f2d1e0c9b11"   # self-help arm
B = "5d7e9f10-2b3c-4d5e-8f60-718293a4b5c6"   # control arm, coverage gap in follow-up
C = "e1f2a3b4-c5d6-4e7f-8091-a2b3c4d5e6f7"   # no exposure row
P1, P2 = "d47b3510-2895-3b70-9897-342d681c769d", "6e2f1a2d-27bd-3701-8d08-dae202c58632"
NONE = "b1c428d6-4f07-31e0-90f0-68ffa6ff8c76"   # the NO_INSURANCE payer


def _write(path, header, rows):
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=header)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in header})


def _enc(i, patient, cls, start, stop, cost, code="185345009", reason=""):
    return {"Id": f"0000000{i:02d}-0000-4000-8000-000000000000", "START": start, "STOP": stop,
            "PATIENT": patient, "PAYER": P1, "ENCOUNTERCLASS": cls, "CODE": code,
            "DESCRIPTION": "Encounter for symptom", "BASE_ENCOUNTER_COST": "85.55",
            "TOTAL_CLAIM_COST": cost, "PAYER_COVERAGE": "0.0", "REASONCODE": reason}


def make_export(folder, layout="years"):
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder / "patients.csv", PATIENTS, [
        {"Id": A, "BIRTHDATE": "1970-02-03", "GENDER": "F", "RACE": "white", "ETHNICITY": "nonhispanic"},
        {"Id": B, "BIRTHDATE": "1980-11-30", "GENDER": "M", "RACE": "black", "ETHNICITY": "nonhispanic"},
        {"Id": C, "BIRTHDATE": "1990-06-15", "GENDER": "F", "RACE": "asian", "ETHNICITY": "nonhispanic"},
    ])
    _write(folder / "payers.csv", PAYERS, [{"Id": P1, "NAME": "Aetna"}, {"Id": P2, "NAME": "Medicaid"},
                                           {"Id": NONE, "NAME": "NO_INSURANCE"}])
    if layout == "years":
        _write(folder / "payer_transitions.csv", TRANSITIONS_YEARS, [
            # A: two periods sharing 2022 -> one spell 2020-01-01..2024-12-31
            {"PATIENT": A, "START_YEAR": "2020", "END_YEAR": "2022", "PAYER": P1, "OWNERSHIP": "Self"},
            {"PATIENT": A, "START_YEAR": "2022", "END_YEAR": "2024", "PAYER": P1, "OWNERSHIP": "Self"},
            # B: covered to the end of 2023, uninsured in 2024, covered again in 2025
            {"PATIENT": B, "START_YEAR": "2021", "END_YEAR": "2023", "PAYER": P2, "OWNERSHIP": "Self"},
            {"PATIENT": B, "START_YEAR": "2024", "END_YEAR": "2024", "PAYER": NONE},
            {"PATIENT": B, "START_YEAR": "2025", "END_YEAR": "2025", "PAYER": P2, "OWNERSHIP": "Self"},
            {"PATIENT": C, "START_YEAR": "2023", "END_YEAR": "2023", "PAYER": P1, "OWNERSHIP": "Self"},
        ])
    else:
        _write(folder / "payer_transitions.csv", TRANSITIONS_DATES, [
            # A: back-to-back periods -> one spell
            {"PATIENT": A, "START_DATE": "2020-01-01T00:00:00Z", "END_DATE": "2023-06-30T00:00:00Z", "PAYER": P1},
            {"PATIENT": A, "START_DATE": "2023-07-01T00:00:00Z", "END_DATE": "2024-12-31T00:00:00Z", "PAYER": P1},
            # B: uninsured September to December 2023
            {"PATIENT": B, "START_DATE": "2021-01-01T00:00:00Z", "END_DATE": "2023-08-31T00:00:00Z", "PAYER": P2},
            {"PATIENT": B, "START_DATE": "2023-09-01T00:00:00Z", "END_DATE": "2023-12-31T00:00:00Z", "PAYER": NONE},
            {"PATIENT": B, "START_DATE": "2024-01-01T00:00:00Z", "END_DATE": "2025-12-31T00:00:00Z", "PAYER": P2},
            {"PATIENT": C, "START_DATE": "2023-01-01T00:00:00Z", "END_DATE": "2023-12-31T00:00:00Z", "PAYER": P1},
        ])
    _write(folder / "encounters.csv", ENCOUNTERS, [
        _enc(1, A, "emergency", "2023-03-01T10:00:00Z", "2023-03-01T11:00:00Z", "150.25"),
        _enc(2, A, "emergency", "2023-03-01T18:00:00Z", "2023-03-01T19:00:00Z", "50.00"),  # same day
        _enc(3, A, "inpatient", "2023-04-01T08:00:00Z", "2023-04-05T12:00:00Z", "5000.00"),
        _enc(4, A, "ambulatory", "2023-07-10T09:00:00Z", "2023-07-10T09:30:00Z", "80.00",
             reason="35489007"),                                             # depression
        _enc(5, A, "ambulatory", "2023-08-10T09:00:00Z", "2023-08-10T09:30:00Z", "60.00"),
        _enc(6, A, "wellness", "2023-09-01T09:00:00Z", "2023-09-01T09:30:00Z", "100.00",
             code="410620009"),
        _enc(7, A, "urgentcare", "2023-10-01T09:00:00Z", "2023-10-01T10:00:00Z", "120.00"),
        _enc(8, A, "ambulance", "2023-10-02T09:00:00Z", "2023-10-02T10:00:00Z", "70.00"),  # not a class
        _enc(9, A, "emergency", "2023-10-03T09:00:00Z", "2023-10-03T10:00:00Z", "-5.00"),
        _enc(10, B, "emergency", "2023-10-01T09:00:00Z", "2023-10-01T10:00:00Z", "300.00"),
        _enc(11, B, "ambulatory", "2024-02-01T09:00:00Z", "2024-02-01T09:30:00Z", "40.00"),  # uninsured
        _enc(12, C, "emergency", "2023-05-05T09:00:00Z", "2023-05-05T10:00:00Z", "90.00"),
    ])
    (folder / "exposure.csv").write_text(f"member_id,group,index_date\n{A},self_help,2023-06-01\n"
                                         f"{B},control,2023-06-01\n")
    return folder


def _load(folder, **kw):
    con = duckdb.connect()
    report = load_claims(con, synthea_sources(con, folder, folder / "exposure.csv", **kw))
    return con, report


def _windows(con):
    build_cohort(con)
    build_member_windows(con)
    return con.execute("SELECT * FROM member_windows ORDER BY member_id, period").df().set_index(["member_id", "period"])


def test_mapping_quarantine_and_windows_by_hand(tmp_path):
    con, report = _load(make_export(tmp_path / "csv"))
    assert report.balanced()
    # enrollment: A's two periods merged, B's two insured periods, C's one
    assert report.counts.set_index("table").rows_in.to_dict() == {
        "members": 3, "enrollment": 4, "encounters": 12, "exposure": 2}
    got = {(r.table, r.reason): r.rows for r in report.quarantine.itertuples()}
    assert got == {("encounters", "unknown_category"): 1,            # class 'ambulance'
                   ("encounters", "negative_amount"): 1,             # -5.00
                   ("encounters", "service_outside_enrollment"): 1}  # B uninsured in 2024
    spells = con.execute("SELECT member_id, start_date, end_date FROM enrollment "
                         "ORDER BY member_id, start_date").fetchall()
    assert {(m, str(s), str(e)) for m, s, e in spells if m in (A, B)} == {
        (A, "2020-01-01", "2024-12-31"), (B, "2021-01-01", "2023-12-31"),
        (B, "2025-01-01", "2025-12-31")}
    assert dict(con.execute("SELECT member_id, birth_year FROM members").fetchall())[B] == 1980
    mw = _windows(con)
    b, f = mw.loc[(A, "baseline")], mw.loc[(A, "followup")]
    # two ER encounters on 2023-03-01 are one visit; the stay 04-01 -> 04-05 is 4 nights
    assert (b.er_visits, b.cost_er, b.inpatient_days, b.cost_inpatient) == (1, 200.25, 4, 5000.0)
    assert (f.outpatient_mh_visits, f.outpatient_other_visits, f.primary_care_visits) == (1, 2, 1)
    assert (f.cost_outpatient_mh, f.cost_outpatient_other, f.cost_primary_care) == (80.0, 180.0, 100.0)
    fb = mw.loc[(B, "followup")]
    # follow-up [2023-06-01, 2024-05-31), covered to 2023-12-31: 214 days
    assert (fb.er_visits, fb.cost_er) == (1, 300.0)
    assert fb.member_months == pytest.approx(214 / DAYS_PER_MONTH, abs=1e-12)
    assert C not in mw.index.get_level_values(0)


def test_dated_payer_transitions_and_options(tmp_path):
    folder = make_export(tmp_path / "csv", layout="dates")
    con, report = _load(folder, amount="BASE_ENCOUNTER_COST", class_map={"ambulance": "other"})
    assert report.balanced()
    spells = con.execute("SELECT member_id, start_date, end_date FROM enrollment "
                         "WHERE member_id = ? ORDER BY start_date", [B]).fetchall()
    assert [(str(s), str(e)) for _, s, e in spells] == [("2021-01-01", "2023-08-31"),
                                                         ("2024-01-01", "2025-12-31")]
    mw = _windows(con)
    # B's follow-up coverage: 2023-06-01..08-31 (92 days) + 2024-01-01..05-30 (151 days)
    assert mw.loc[(B, "followup")].member_months == pytest.approx(243 / DAYS_PER_MONTH, abs=1e-12)
    f = mw.loc[(A, "followup")]
    assert f.other_visits == 1                                  # 'ambulance' mapped to other
    assert f.cost_primary_care == 85.55                        # BASE_ENCOUNTER_COST
    # coverage from the encounters instead: A's first to last encounter
    con2, _ = _load(folder, enrollment="encounters")
    spans = dict((m, (str(s), str(e))) for m, s, e in con2.execute(
        "SELECT member_id, start_date, end_date FROM enrollment").fetchall())
    assert spans[A] == ("2023-03-01", "2023-10-03")


def test_missing_files_and_columns_are_named(tmp_path):
    folder = make_export(tmp_path / "csv")
    (folder / "payer_transitions.csv").unlink()
    (folder / "patients.csv").write_text("Id,BIRTHDATE\nx,1970-01-01\n")
    with pytest.raises(DataValidationError) as err:
        synthea_sources(duckdb.connect(), folder, folder / "exposure.csv")
    msg = str(err.value)
    assert "payer_transitions.csv: missing_table" in msg and "patients.csv.GENDER: missing_column" in msg


def test_prepare_reads_synthea(tmp_path):
    from evalkit.prepare import prepare
    folder = make_export(tmp_path / "csv")
    p = P.validate({"data": {"source": "synthea", "synthea": {
        "folder": str(folder), "exposure_file": str(folder / "exposure.csv")}},
        "workbooks": ["data_quality"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prep = prepare(p, tmp_path / "run")
    assert prep.report.balanced()
    with duckdb.connect(str(prep.database), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM member_windows").fetchall()[0][0] == 4
    with pytest.raises(Exception, match="needs data.synthea"):
        P.validate({"data": {"source": "synthea"}})
