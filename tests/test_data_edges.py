"""Data at their edges, in claims (CSV contract), OMOP CDM and Synthea form.

One small plan is written in each form from the rows below. It holds: an inpatient stay
without a discharge date, an inpatient stay discharged before admission, an ER visit
whose end date is before its start, a mental-health visit with an end date in 2101, a
person with claims and no coverage at all, two unmapped category codes, and a stay whose
discharge date is on one of its two lines. Every expected value is counted by hand in
the comments. Synthea carries an end date (STOP) into the contract only for inpatient
stays, so the two kept visits with an unused bad end date are noted in the other forms only.
"""
import datetime as dt
import warnings

import duckdb
import pandas as pd
import pytest

from evalkit.cohort import build_cohort
from evalkit.data.load import load_claims, scan_sql
from evalkit.data.omop import omop_sources
from evalkit.data.synthea import synthea_sources
from evalkit.utilization import build_member_windows
from test_omop import DDL, DEPRESSION, MENTAL, _ins
from test_synthea import ENCOUNTERS, PATIENTS, PAYERS, TRANSITIONS_DATES, _write

D = dt.date
# claim/visit id, member, category, start, end, allowed amount
ROWS = [
    (1, 1, "inpatient", D(2023, 3, 1), None, 12345.67),          # 5-night stay, no discharge
    (2, 1, "inpatient", D(2023, 7, 1), D(2023, 7, 6), 1000.0),   # 5 nights, follow-up
    (3, 1, "er", D(2023, 8, 1), D(2023, 7, 30), 200.0),          # ER, end before start: kept
    (4, 2, "inpatient", D(2023, 4, 10), D(2023, 4, 2), 12345.67),  # discharged 8 days early
    (5, 2, "inpatient", D(2023, 9, 1), D(2023, 9, 4), 3000.0),   # one stay, two lines: the
    (6, 2, "inpatient", D(2023, 9, 1), None, 500.0),             # discharge is on the first
    (7, 4, "er", D(2023, 7, 1), None, 300.0),                    # member 4 has no coverage:
    (8, 4, "er", D(2023, 7, 1), None, 50.0),                     # 2 visits (7+8 one visit),
    (9, 4, "outpatient_other", D(2023, 8, 1), None, 75.0),       # 3 lines, $425
    (10, 3, "XX", D(2023, 7, 1), None, 40.0),                    # unmapped XX: 1 visit,
    (11, 3, "XX", D(2023, 7, 1), None, 60.0),                    # 2 lines, $100
    (12, 3, "YY", D(2023, 8, 1), None, 15.0),                    # unmapped YY: $15
    (13, 3, "outpatient_mh", D(2023, 10, 1), D(2101, 1, 1), 80.0),  # end date unused: kept
]
COVERED = (1, 2, 3)            # 2022-01-01 .. 2024-12-31; member 4 has no coverage at all
GROUPS = {1: "self_help", 2: "control", 3: "control", 4: "self_help"}
INDEX = D(2023, 6, 1)
OMOP_CODES = {"er": 9203, "inpatient": 9201, "outpatient_mh": 9202, "outpatient_other": 9202,
              "XX": 0, "YY": 581477}
SYNTHEA_CLASSES = {"er": "emergency", "inpatient": "inpatient", "outpatient_mh": "ambulatory",
                   "outpatient_other": "ambulatory", "XX": "ambulance", "YY": "telemedicine"}
UNMAPPED = {"csv": ("XX", "YY"), "omop": ("visit_concept_0", "visit_concept_581477"),
            "synthea": ("encounterclass_ambulance", "encounterclass_telemedicine")}


def _csv(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "members.csv").write_text("member_id,birth_year,sex\n" + "".join(
        f"{m},1970,F\n" for m in GROUPS))
    (folder / "enrollment.csv").write_text("member_id,start_date,end_date\n" + "".join(
        f"{m},2022-01-01,2024-12-31\n" for m in COVERED))
    (folder / "exposure.csv").write_text("member_id,group,index_date\n" + "".join(
        f"{m},{g},{INDEX}\n" for m, g in GROUPS.items()))
    (folder / "encounters.csv").write_text(
        "claim_id,member_id,service_date,end_date,category,allowed_amount\n" + "".join(
            f"{i},{m},{s},{e or ''},{c},{a}\n" for i, m, c, s, e, a in ROWS))
    con = duckdb.connect()
    return con, load_claims(con, {t: scan_sql(str(folder / f"{t}.csv"), t) for t in
                                  ("members", "enrollment", "encounters", "exposure")})


def _omop(folder):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cdm.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(DDL)
        _ins(con, "person", [{"person_id": m, "gender_concept_id": 8532, "year_of_birth": 1970}
                             for m in GROUPS])
        _ins(con, "observation_period", [
            {"observation_period_id": m, "person_id": m,
             "observation_period_start_date": D(2022, 1, 1),
             "observation_period_end_date": D(2024, 12, 31)} for m in COVERED])
        _ins(con, "visit_occurrence", [
            {"visit_occurrence_id": i, "person_id": m, "visit_concept_id": OMOP_CODES[c],
             "visit_start_date": s, "visit_end_date": e} for i, m, c, s, e, _ in ROWS])
        _ins(con, "cost", [{"cost_id": i, "cost_event_id": i, "cost_domain_id": "Visit",
                            "amount_allowed": a} for i, *_, a in ROWS])
        _ins(con, "condition_occurrence", [
            {"condition_occurrence_id": i, "person_id": m, "condition_concept_id": DEPRESSION,
             "visit_occurrence_id": i} for i, m, c, *_ in ROWS if c == "outpatient_mh"])
        _ins(con, "concept", [
            {"concept_id": MENTAL, "concept_name": "Mental disorder", "vocabulary_id": "SNOMED",
             "concept_code": "74732009"},
            {"concept_id": DEPRESSION, "concept_name": "Depressive disorder",
             "vocabulary_id": "SNOMED", "concept_code": "35489007"}])
        _ins(con, "concept_ancestor", [{"ancestor_concept_id": MENTAL,
                                        "descendant_concept_id": DEPRESSION}])
        _ins(con, "cohort", [{"cohort_definition_id": 11 if g == "self_help" else 12,
                              "subject_id": m, "cohort_start_date": INDEX}
                             for m, g in GROUPS.items()])
    con = duckdb.connect()
    con.execute(f"ATTACH '{path}' AS src (READ_ONLY)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sources = omop_sources(con, "src", exposure_cohorts={"self_help": 11, "control": 12})
    return con, load_claims(con, sources)


def _synthea(folder):
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder / "patients.csv", PATIENTS, [{"Id": m, "BIRTHDATE": "1970-01-01",
                                                "GENDER": "F"} for m in GROUPS])
    _write(folder / "payers.csv", PAYERS, [{"Id": "P1", "NAME": "Aetna"}])
    _write(folder / "payer_transitions.csv", TRANSITIONS_DATES, [
        {"PATIENT": m, "START_DATE": "2022-01-01T00:00:00Z", "END_DATE": "2024-12-31T00:00:00Z",
         "PAYER": "P1"} for m in COVERED])
    _write(folder / "encounters.csv", ENCOUNTERS, [
        {"Id": i, "PATIENT": m, "START": f"{s}T08:00:00Z", "STOP": f"{e}T12:00:00Z" if e else "",
         "ENCOUNTERCLASS": SYNTHEA_CLASSES[c], "CODE": "185345009", "TOTAL_CLAIM_COST": a,
         "PAYER_COVERAGE": 0, "REASONCODE": "35489007" if c == "outpatient_mh" else ""}
        for i, m, c, s, e, a in ROWS])
    (folder / "exposure.csv").write_text("member_id,group,index_date\n" + "".join(
        f"{m},{g},{INDEX}\n" for m, g in GROUPS.items()))
    con = duckdb.connect()
    return con, load_claims(con, synthea_sources(con, folder, folder / "exposure.csv"))


FORMS = {"csv": _csv, "omop": _omop, "synthea": _synthea}


@pytest.mark.parametrize("form", list(FORMS))
def test_edges_are_quarantined_or_kept_as_documented(form, tmp_path):
    con, report = FORMS[form](tmp_path / form)
    assert report.balanced()
    got = {(r.table, r.reason): r.rows for r in report.quarantine.itertuples()}
    assert got == {("encounters", "unknown_category"): 3,            # lines 10, 11, 12
                   ("encounters", "end_before_start"): 1,            # line 4 (inpatient)
                   ("encounters", "missing_end_date"): 1,            # line 1; not line 6
                   ("encounters", "service_outside_enrollment"): 3}  # lines 7, 8, 9
    kept = dict(con.execute("SELECT claim_id, end_date FROM encounters").fetchall())
    assert sorted(int(k) for k in kept) == [2, 3, 5, 6, 13]
    assert all(kept[k] is None for k in kept if int(k) in (3, 13))  # unused end dates cleared

    notes = {(r.note, None if pd.isna(r.code) else r.code): (r.persons, r.lines, r.visits, r.amount)
             for r in report.notes.itertuples()}
    xx, yy = UNMAPPED[form]
    want = {("no_coverage", None): (1, 3, 2, 425.0),
            ("unmapped_category", xx): (1, 2, 1, 100.0),
            ("unmapped_category", yy): (1, 1, 1, 15.0),
            ("missing_end_date", None): (1, 1, 1, 12345.67),
            ("inpatient_end_before_start", None): (1, 1, 1, 12345.67)}
    if form != "synthea":                     # Synthea has no end date for these classes
        want |= {("end_date_not_used", "er"): (1, 1, 1, 200.0),
                 ("end_date_not_used", "outpatient_mh"): (1, 1, 1, 80.0)}
    assert notes == want
    nights = report.notes.set_index("note").loc["inpatient_end_before_start", "nights"]
    assert nights == 8                                                # 2023-04-02 .. 04-10
    text = " ".join(report.note_sentences())
    assert "1 person with claims has no coverage period at all: 2 visits (3 lines, $425.00)" in text
    assert f"unmapped category code '{xx}': 1 visit (2 lines, $100.00)" in text
    assert "1 inpatient stay (1 line, $12,345.67) without a discharge date" in text
    assert "1 inpatient stay (1 line) discharged before admission: 8 nights and $12,345.67" in text

    build_cohort(con)
    build_member_windows(con)
    mw = {(int(m), p): r for m, p, *r in con.execute(
        "SELECT member_id, period, inpatient_days, cost_inpatient, er_visits, cost_er, "
        "outpatient_mh_visits FROM member_windows").fetchall()}
    assert mw[(1, "baseline")][:2] == [0, 0.0]      # the stay without discharge: set aside,
    assert mw[(1, "followup")] == [5, 1000.0, 1, 200.0, 0]  # never counted as one night
    assert mw[(2, "baseline")][:2] == [0, 0.0]      # discharged before admission: set aside
    assert mw[(2, "followup")][:2] == [3, 3500.0]   # 09-01 .. 09-04, both lines' cost
    assert mw[(3, "followup")][4] == 1              # the visit with an unused 2101 end date
    assert 4 not in {m for m, _ in mw}              # no coverage: not enrolled at the index


def test_the_workbook_reads_the_notes_and_hides_few_persons_in_public_runs(tmp_path):
    from evalkit.params import validate
    from evalkit.study import prepare_study
    _csv(tmp_path / "csv")
    tables = {t: str(tmp_path / "csv" / f"{t}.csv")
              for t in ("members", "enrollment", "encounters", "exposure")}
    seen = {}
    for public in (False, True):
        p = validate({"data": {"source": "files", "tables": tables},
                      "report": {"public": public}, "workbooks": ["data_quality"]})
        study = prepare_study(p, tmp_path / f"run_{public}")
        seen[public] = study.set_aside().set_index(["note", "code"], drop=False)
        assert study.mental_health_concepts() is None            # not an OMOP source
        row = study.describe_run().set_index("item").loc["data source", "value"]
        assert row.startswith("the plan's claims files (encounters: encounters.csv")
    assert seen[False]["persons"].tolist() == [1] * 7
    assert seen[True]["persons"].tolist() == ["*"] * 7          # 1 person < min_cell 11
    assert seen[True]["amount"].tolist() == seen[False]["amount"].tolist()
