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
from evalkit.errors import DataValidationError
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
    assert "1 person with claims has no accepted coverage spell: 2 visits (3 lines, $425.00)" in text
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
    from evalkit.analysis.study import prepare_study
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
    assert 12345.67 in seen[False]["amount"].tolist()
    # 1 person < min_cell 11: persons and every other figure of the row are hidden, and
    # the two unmapped codes (one person each) are one row
    pub = seen[True]
    assert len(pub) == 6
    assert pub.loc[pub["note"] == "unmapped_category", "code"].tolist() == ["2 other codes"]
    for col in ("persons", "lines", "visits", "nights", "amount"):
        assert pub[col].tolist() == ["*"] * 6, col


def test_public_sentences_hide_small_cells_and_the_console_names_ten_codes():
    """In a public run the sentences say "fewer than 11 persons" and give no figures;
    with 13 unmapped codes the console names the 10 with the most visits and sums the
    other 3 (the table keeps every code)."""
    from evalkit.data.notes import note_sentences, public_notes
    rows = [{"table": "encounters", "note": "no_coverage", "code": None, "persons": 1,
             "lines": 3, "visits": 2, "nights": float("nan"), "amount": 425.0}]
    rows += [{"table": "encounters", "note": "unmapped_category", "code": f"C{k:02d}",
              "persons": 12, "lines": k + 1, "visits": k + 1, "nights": float("nan"),
              "amount": 10.0 * (k + 1)} for k in range(13)]
    notes = pd.DataFrame(rows)
    text = note_sentences(notes)
    assert len(text) == 1 + 10 + 1
    assert "unmapped category code 'C12': 13 visits (13 lines, $130.00)" in text[1]
    assert text[-1] == ("3 other unmapped category codes: 6 visits (6 lines, $60.00) set "
                        "aside as unknown_category.")                 # C00..C02: 1+2+3
    public = note_sentences(public_notes(notes, 11), 11)
    assert public[0].startswith("persons with claims and no accepted coverage spell")
    assert "fewer than 11 persons" in public[0]
    assert "$" not in public[0] and "visit" not in public[0]
    assert len(public) == 12                  # 12 persons each: the codes stay visible


def _claims(folder, rows, **load):
    """The ROWS plan's members, coverage and exposure with the claim lines ``rows``
    (claim id, member, category, start, end, allowed amount as written in the CSV);
    ``load`` goes to :func:`load_claims`."""
    _csv(folder)
    (folder / "encounters.csv").write_text(
        "claim_id,member_id,service_date,end_date,category,allowed_amount\n" + "".join(
            f"{i},{m},{s},{e or ''},{c},{a}\n" for i, m, c, s, e, a in rows))
    con = duckdb.connect()
    return con, load_claims(con, {t: scan_sql(str(folder / f"{t}.csv"), t) for t in
                                  ("members", "enrollment", "encounters", "exposure")}, **load)


@pytest.mark.parametrize("bad", ["-5", ""])       # negative_amount, missing_value
def test_a_stay_takes_its_discharge_date_from_accepted_lines_only(bad, tmp_path):
    """Line 1 holds the stay's discharge date but is set aside (negative or missing
    amount): line 2, without a discharge date, must not be kept as a one-night stay."""
    con, rep = _claims(tmp_path, [(1, 1, "inpatient", "2023-07-01", "2023-07-06", bad),
                                  (2, 1, "inpatient", "2023-07-01", None, "5000")])
    got = dict(con.execute("SELECT source_row, reason FROM quarantine").fetchall())
    assert got == {1: "negative_amount" if bad else "missing_value", 2: "missing_end_date"}
    assert rep.balanced()
    notes = rep.notes.set_index("note")
    assert notes.loc["missing_end_date", "amount"] == 5000.0


def test_an_unreadable_end_date_costs_only_inpatient_lines(tmp_path):
    """An ER line with the end date 2023-02-30 is kept (end date cleared and noted); an
    inpatient line with one is invalid_date. The 6 unreadable ER end dates among 7 lines
    do not count toward data.max_invalid_dates (1%): only the inpatient line's does,
    and one unreadable inpatient end date among one is above it."""
    rows = [(i, 1, "er", "2023-07-01", "2023-02-30", 10 * i) for i in range(1, 7)]
    rows.append((7, 1, "inpatient", "2023-08-01", "2023-08-05", 1000))
    con, rep = _claims(tmp_path, rows)
    assert rep.quarantine.empty and rep.balanced()
    assert con.execute("SELECT count(*) FROM encounters WHERE category = 'er' "
                       "AND end_date IS NULL").fetchall()[0][0] == 6
    notes = rep.notes.set_index(["note", "code"])
    assert notes.loc[("end_date_not_used", "er"), "lines"] == 6
    rows.append((8, 1, "inpatient", "2023-09-01", "2023-02-30", 500))
    with pytest.raises(DataValidationError, match="unparseable_date"):
        _claims(tmp_path, rows)                      # 1 of 2 inpatient end dates: 50%
    con, rep = _claims(tmp_path, rows, max_invalid_dates=0.5)
    assert dict(con.execute("SELECT source_row, reason FROM quarantine").fetchall()) == {
        8: "invalid_date"}


def test_nan_and_infinite_amounts_have_their_own_reasons(tmp_path):
    """NaN is a missing value, +-inf non_finite (not absurd_amount: NaN sorts above numbers)."""
    con, rep = _claims(tmp_path, [(1, 1, "er", "2023-07-01", None, "NaN"),
                                  (2, 1, "er", "2023-07-02", None, "inf"),
                                  (3, 1, "er", "2023-07-03", None, "-inf"),
                                  (4, 1, "er", "2023-07-04", None, "20")])
    got = dict(con.execute("SELECT source_row, reason FROM quarantine").fetchall())
    assert got == {1: "missing_value", 2: "non_finite", 3: "non_finite"}
    assert rep.balanced()


def test_a_later_copy_of_a_line_with_an_unreadable_date_is_kept(tmp_path):
    """The first copy of claim 1 has an impossible date of service (invalid_date); the
    corrected copy is the only readable one and is kept, not called a duplicate."""
    rows = [(1, 1, "er", "2023-02-30", None, "20"), (1, 1, "er", "2023-03-02", None, "20")]
    rows += [(i, 1, "er", f"2023-05-{i:02d}", None, "20") for i in range(2, 28)]
    # 1 unreadable date among 28 is above 1%: the threshold is raised for this test
    con, rep = _claims(tmp_path, rows[:1] + rows[2:] + rows[1:2], max_invalid_dates=0.05)
    got = dict(con.execute("SELECT source_row, reason FROM quarantine").fetchall())
    assert got == {1: "invalid_date"}
    assert rep.balanced()


def test_data_encoding_reaches_every_synthea_csv(tmp_path):
    """A latin-1 Synthea export (a name with 'é'): read with encoding='latin-1' it loads as
    the utf-8 one does; read as utf-8 it is an evalkit error naming the file."""
    folder = tmp_path / "synthea"
    _synthea(folder)
    pat = folder / "patients.csv"
    lines = pat.read_bytes().split(b"\n")
    header = lines[0].split(b",")
    cells = lines[1].split(b",")
    cells[header.index(b"FIRST")] = "Ren\u00e9".encode("latin-1")
    lines[1] = b",".join(cells)
    pat.write_bytes(b"\n".join(lines))
    from evalkit.data.synthea import synthea_sources
    with pytest.raises(DataValidationError, match="patients.csv"):
        synthea_sources(duckdb.connect(), folder, folder / "exposure.csv")
    con = duckdb.connect()
    rep = load_claims(con, synthea_sources(con, folder, folder / "exposure.csv",
                                           encoding="latin-1"))
    assert rep.balanced() and rep.counts.set_index("table").loc["members", "accepted"] == 4


def test_the_console_sentences_of_a_public_run_give_no_small_figures(tmp_path):
    """What the runner prints when the data are loaded (LoadReport.note_sentences with
    report.public and report.min_cell): every note of the plan concerns one person, so
    no sentence has a count of visits or a dollar amount, and the two unmapped codes are
    one sentence."""
    _, report = _csv(tmp_path / "csv")
    private = report.note_sentences()
    assert "1 person with claims has no accepted coverage spell: 2 visits (3 lines, $425.00)" \
        in " ".join(private)
    public = report.note_sentences(public=True, min_cell=11)
    assert len(public) == len(private) - 1
    assert all("fewer than 11 persons" in s and "$" not in s and " visit " not in s
               for s in public)
    assert any("unmapped category code '2 other codes'" in s for s in public)
