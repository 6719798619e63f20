"""The data contract at the door: structural errors and row-level quarantine.

Expected counts are worked out by hand from tests/fixtures/tiny/*.csv (see the comments).
"""
import re
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from evalkit.data.load import load_claims, scan_sql
from evalkit.data.person import load_person
from evalkit.errors import DataValidationError

TINY = Path(__file__).parent / "fixtures" / "tiny"
TABLES = ("members", "enrollment", "encounters", "exposure")
MAPS = dict(category_map={"ED": "er", "IP": "inpatient"}, group_map={"T": "self_help", "C": "control"})


def sources(folder, suffix=".csv"):
    return {t: scan_sql(str(Path(folder) / f"{t}{suffix}"), t) for t in TABLES}


def load_tiny(con=None, folder=TINY, **kw):
    con = con or duckdb.connect()
    return con, load_claims(con, sources(folder), **{**MAPS, **kw})


def test_quarantine_reasons_by_hand():
    con, rep = load_tiny()
    got = {(r.table, r.reason): r.rows for r in rep.quarantine.itertuples()}
    assert got == {
        ("members", "duplicate_member"): 1,          # member 3 listed twice
        ("enrollment", "end_before_start"): 1,       # member 3: 2023-01-01 .. 2022-01-01
        ("enrollment", "unknown_member"): 1,         # member 9 has no members row
        ("enrollment", "overlapping_spell"): 1,      # member 2: second spell starts before first ends
        ("encounters", "unknown_category"): 1,       # code XX
        ("encounters", "negative_amount"): 1,        # -5
        ("encounters", "end_before_start"): 1,       # discharge before admission
        ("encounters", "unknown_member"): 1,         # member 9
        ("encounters", "duplicate_line"): 1,         # claim 11 repeated
        ("encounters", "service_outside_enrollment"): 2,  # member 3 has no valid spell; 2025 date
        ("exposure", "unknown_member"): 1,           # member 4
    }
    assert rep.balanced()
    c = rep.counts.set_index("table")
    assert c.loc["encounters", "rows_in"] == 10 and c.loc["encounters", "accepted"] == 3
    assert "accounted for" in rep.check()
    # the quarantine keeps the source row and the original values
    rec = con.execute("SELECT record FROM quarantine WHERE reason = 'unknown_category'").fetchall()[0][0]
    assert '"XX"' in rec
    # accepted rows carry contract categories and arms
    assert set(con.execute("SELECT DISTINCT category FROM encounters").df().category) == {"er", "inpatient"}
    assert set(con.execute('SELECT DISTINCT "group" FROM exposure').df().group) == {"self_help", "control"}


def test_unmapped_codes_are_quarantined_not_dropped():
    con, rep = load_tiny(category_map={"ED": "er"})  # IP no longer mapped
    q = rep.quarantine.set_index(["table", "reason"])
    assert q.loc[("encounters", "unknown_category"), "rows"] == 3
    assert rep.balanced()


def _copy_tiny(tmp_path):
    for f in TINY.glob("*.csv"):
        shutil.copy(f, tmp_path / f.name)
    return tmp_path


def test_structural_problems_are_all_reported(tmp_path):
    d = _copy_tiny(tmp_path)
    enc = pd.read_csv(d / "encounters.csv", dtype=str)
    enc = enc.rename(columns={"service_date": "svc_date"})
    enc.loc[0, "allowed_amount"] = "a lot"
    enc.to_csv(d / "encounters.csv", index=False)
    exp = pd.read_csv(d / "exposure.csv", dtype=str)
    exp.loc[0, "index_date"] = "31/12/2023"
    exp.to_csv(d / "exposure.csv", index=False)
    (d / "members.csv").write_text("member_id,birth_year,sex\n")
    with pytest.raises(DataValidationError) as e:
        load_tiny(folder=d)
    reasons = {(f["table"], f["column"], f["reason"]) for f in e.value.failures}
    assert reasons == {
        ("members", None, "empty_table"),
        ("encounters", "service_date", "missing_column"),
        ("encounters", "allowed_amount", "wrong_type"),
        ("exposure", "index_date", "unparseable_date"),
    }
    msg = str(e.value)
    assert "did you mean 'svc_date'" in msg and "a lot" in msg
    # a date is shown by its pattern and source row, not its value
    assert "pattern 99/99/9999" in msg and "source row 1" in msg and "31/12/2023" not in msg


def test_column_mapping_and_date_format(tmp_path):
    d = _copy_tiny(tmp_path)
    enc = pd.read_csv(d / "encounters.csv", dtype=str)
    enc = enc.rename(columns={"member_id": "MBR", "service_date": "SVC_DT", "allowed_amount": "ALLOWED"})
    enc["SVC_DT"] = pd.to_datetime(enc["SVC_DT"]).dt.strftime("%m/%d/%Y")
    enc["end_date"] = pd.to_datetime(enc["end_date"]).dt.strftime("%m/%d/%Y")
    enc.to_csv(d / "encounters.csv", index=False)
    for t in ("members", "enrollment", "exposure"):
        df = pd.read_csv(d / f"{t}.csv", dtype=str)
        for c in ("start_date", "end_date", "index_date"):
            if c in df:
                df[c] = pd.to_datetime(df[c]).dt.strftime("%m/%d/%Y")
        df.to_csv(d / f"{t}.csv", index=False)
    con, rep = load_tiny(folder=d, date_format="%m/%d/%Y", columns={
        "encounters": {"member_id": "MBR", "service_date": "SVC_DT", "allowed_amount": "ALLOWED"}})
    base_con, base = load_tiny()
    pd.testing.assert_frame_equal(rep.counts, base.counts)
    a = con.execute("SELECT * FROM encounters ORDER BY claim_id").df()
    b = base_con.execute("SELECT * FROM encounters ORDER BY claim_id").df()
    pd.testing.assert_frame_equal(a, b)


def test_parquet_and_duckdb_sources_agree(tmp_path):
    base_con, base = load_tiny()
    raw = duckdb.connect(str(tmp_path / "plan.duckdb"))
    for t in TABLES:
        raw.execute(f"CREATE TABLE {t} AS SELECT * FROM {scan_sql(str(TINY / (t + '.csv')), t)}")
        raw.execute(f"COPY {t} TO '{tmp_path / (t + '.parquet')}' (FORMAT parquet)")
    raw.close()
    pq_con = duckdb.connect()
    pq = load_claims(pq_con, sources(tmp_path, ".parquet"), **MAPS)
    db_con = duckdb.connect()
    db_con.execute(f"ATTACH '{tmp_path / 'plan.duckdb'}' AS src (READ_ONLY)")
    db = load_claims(db_con, {t: f"src.{t}" for t in TABLES}, **MAPS)
    for r in (pq, db):
        pd.testing.assert_frame_equal(r.counts, base.counts)
        pd.testing.assert_frame_equal(r.quarantine, base.quarantine)


def test_missing_file_is_clear():
    with pytest.raises(DataValidationError, match="not found"):
        scan_sql("/nonexistent/members.csv", "members")
    with pytest.raises(DataValidationError, match="cannot tell the format"):
        scan_sql(str(TINY / "README.md"), "members")


def test_person_mode_quarantine_and_errors(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("id,arm,visits,cost,months,age\n1,1,3,100,12,40\n2,0,0,0,12,50\n3,1,,5,12,41\n"
                 "4,0,-1,5,12,33\n5,0,2,5,0,30\n5,1,2,5,12,30\n")
    con = duckdb.connect()
    load_person(con, scan_sql(str(f)), "arm", 1, ["visits", "cost"], "months", ["age"], "id")
    from evalkit.data.load import load_report
    rep = load_report(con)
    got = {r.reason: r.rows for r in rep.quarantine.itertuples()}
    # row 3: empty visits; row 4: negative; row 5: zero months; row 6: id 5 again
    assert got == {"missing_value": 1, "negative_value": 1, "nonpositive_exposure": 1,
                   "duplicate_member": 1}
    assert rep.balanced() and rep.counts.accepted.iloc[0] == 2
    with pytest.raises(DataValidationError) as e:
        load_person(con, scan_sql(str(f)), "treat", 1, ["visitz"], None, [], "id")
    assert {x["column"] for x in e.value.failures} == {"treat", "visitz"}


def test_absurd_amounts_and_placeholder_dates_are_quarantined(tmp_path):
    d = _copy_tiny(tmp_path)
    with open(d / "encounters.csv", "a") as f:
        f.write("20,1,2023-05-01,,ED,99999999.99,0\n"      # placeholder amount
                "21,1,2023-05-02,,ED,10,12000000\n"        # paid amount in cents?
                "22,1,9999-12-31,,ED,10,5\n"                # placeholder date
                "23,1,2023-05-03,,ED,10000000,0\n")         # at the limit: kept
    con, rep = load_tiny(folder=d)
    got = {(r.table, r.reason): r.rows for r in rep.quarantine.itertuples()}
    assert got[("encounters", "absurd_amount")] == 2
    assert got[("encounters", "implausible_date")] == 1
    assert rep.balanced()
    assert con.execute("SELECT count(*) FROM encounters WHERE claim_id = 23").fetchall()[0][0] == 1
    con, rep = load_tiny(folder=d, max_line_amount=1e9)      # the limit is a param
    assert ("encounters", "absurd_amount") not in {(r.table, r.reason)
                                                   for r in rep.quarantine.itertuples()}


def test_many_unreadable_dates_stay_a_structural_error(tmp_path):
    """One impossible date among the 10 lines of the tiny fixture is 10% of the column,
    above data.max_invalid_dates (1%): a structural error that suggests data.date_format."""
    d = _copy_tiny(tmp_path)
    enc = pd.read_csv(d / "encounters.csv", dtype=str)
    enc.loc[0, "service_date"] = "2023-02-30"
    enc.to_csv(d / "encounters.csv", index=False)
    with pytest.raises(DataValidationError, match="pattern 9999-99-99, source row 1") as e:
        load_tiny(folder=d)
    assert "2023-02-30" not in str(e.value)
    assert {(f["table"], f["column"], f["reason"]) for f in e.value.failures} == {
        ("encounters", "service_date", "unparseable_date")}
    assert "10.0% of the 10 dates cannot be read" in str(e.value)
    assert "data.date_format" in str(e.value) and "data.max_invalid_dates" in str(e.value)
    # with a higher threshold the line is quarantined instead, with the text kept
    con, rep = load_tiny(folder=d, max_invalid_dates=0.1)
    got = {(r.table, r.reason): r.rows for r in rep.quarantine.itertuples()}
    assert got[("encounters", "invalid_date")] == 1 and rep.balanced()
    rec = con.execute("SELECT record FROM quarantine WHERE reason = 'invalid_date'").fetchall()[0][0]
    assert "service_date=2023-02-30" in rec


def _claims_csv(tmp_path, members=300):
    """A synthetic plan written as CSV files (dates as text), with its clean load."""
    from evalkit.data import synthetic
    plan = synthetic.generate(tmp_path / "plan", members=members, seed=11)
    con = duckdb.connect()
    for t in TABLES:
        con.execute(f"COPY (SELECT * FROM read_parquet('{plan.paths[t]}')) "
                    f"TO '{tmp_path / t}.csv' (HEADER, DELIMITER ',')")
    return tmp_path


def test_a_few_impossible_dates_are_quarantined_and_the_load_goes_on(tmp_path):
    """Two impossible calendar dates among thousands of good claim lines (and one in
    the coverage spells) are quarantined as invalid_date; every other planted problem
    keeps its own reason; no row is lost."""
    d = _claims_csv(tmp_path)
    base_con = duckdb.connect()
    base = load_claims(base_con, sources(d))
    assert base.quarantine.empty
    enc = pd.read_csv(d / "encounters.csv", dtype=str, keep_default_na=False)
    n_enc = len(enc)
    planted = enc.iloc[:6].copy()
    planted["claim_id"] = [str(10**9 + i) for i in range(6)]
    planted.iloc[0, planted.columns.get_loc("service_date")] = "2023-02-30"
    planted.iloc[1, planted.columns.get_loc("service_date")] = "2022-04-31"
    planted.iloc[2, planted.columns.get_loc("allowed_amount")] = "-12.5"
    planted.iloc[3, planted.columns.get_loc("member_id")] = "99999999"
    planted.iloc[4, planted.columns.get_loc("allowed_amount")] = ""
    planted.iloc[5, planted.columns.get_loc("claim_id")] = enc.iloc[7]["claim_id"]
    pd.concat([enc, planted]).to_csv(d / "encounters.csv", index=False)
    enr = pd.read_csv(d / "enrollment.csv", dtype=str, keep_default_na=False)
    extra = enr.iloc[:1].copy()
    extra["member_id"] = "88888888"
    extra["end_date"] = "2021-13-01"                # unknown member too: the date goes first
    pd.concat([enr, extra]).to_csv(d / "enrollment.csv", index=False)

    con = duckdb.connect()
    rep = load_claims(con, sources(d))
    got = dict(con.execute("SELECT \"table\" || ':' || source_row, reason FROM quarantine").fetchall())
    assert got == {f"encounters:{n_enc + 1}": "invalid_date", f"encounters:{n_enc + 2}": "invalid_date",
                   f"encounters:{n_enc + 3}": "negative_amount",
                   f"encounters:{n_enc + 4}": "unknown_member",
                   f"encounters:{n_enc + 5}": "missing_value",
                   f"encounters:{n_enc + 6}": "duplicate_line",
                   f"enrollment:{len(enr) + 1}": "invalid_date"}
    assert rep.balanced()
    c, b = rep.counts.set_index("table"), base.counts.set_index("table")
    assert c.loc["encounters", "rows_in"] == n_enc + 6
    assert (c.accepted == b.accepted).all()          # the good rows are all still there
    records = con.execute("SELECT list(record) FROM quarantine WHERE reason = 'invalid_date'"
                          ).fetchall()[0][0]
    assert any("service_date=2023-02-30" in r for r in records)
    assert any("end_date=2021-13-01" in r for r in records)
    # the threshold is a share of the column: 0 makes any unreadable date an error
    with pytest.raises(DataValidationError, match="unparseable_date"):
        load_claims(duckdb.connect(), sources(d), max_invalid_dates=0)


# --------------------------------------------------------------- member ids of different types
def test_member_ids_match_across_integer_text_and_double_columns(tmp_path):
    """Integer ids in members, text in a CSV ('123'), doubles (123.0) in exposure: one
    member each, the same load as with integers everywhere."""
    base_con, base = load_tiny()
    raw = duckdb.connect()
    raw.execute(f"COPY (SELECT * REPLACE (CAST(member_id AS BIGINT) AS member_id) FROM "
                f"{scan_sql(str(TINY / 'members.csv'))}) TO '{tmp_path}/members.parquet' (FORMAT parquet)")
    raw.execute(f"COPY (SELECT * REPLACE (CAST(member_id AS DOUBLE) AS member_id) FROM "
                f"{scan_sql(str(TINY / 'exposure.csv'))}) TO '{tmp_path}/exposure.parquet' (FORMAT parquet)")
    enr = pd.read_csv(TINY / "enrollment.csv", dtype=str)
    enr["member_id"] = enr["member_id"] + ".0"         # a float written as text
    enr.to_csv(tmp_path / "enrollment.csv", index=False)
    src = {"members": scan_sql(str(tmp_path / "members.parquet")),
           "enrollment": scan_sql(str(tmp_path / "enrollment.csv")),
           "encounters": scan_sql(str(TINY / "encounters.csv")),
           "exposure": scan_sql(str(tmp_path / "exposure.parquet"))}
    con = duckdb.connect()
    rep = load_claims(con, src, **MAPS)
    pd.testing.assert_frame_equal(rep.counts, base.counts)
    pd.testing.assert_frame_equal(rep.quarantine, base.quarantine)
    assert con.execute("SELECT typeof(member_id) FROM encounters LIMIT 1").fetchall()[0][0] == "BIGINT"


def test_member_ids_that_cannot_be_matched_name_both_types(tmp_path):
    d = _copy_tiny(tmp_path)
    enc = pd.read_csv(d / "encounters.csv", dtype=str)
    enc["member_id"] = enc["member_id"].str.zfill(6)          # '000001'
    enc.to_csv(d / "encounters.csv", index=False)
    with pytest.raises(DataValidationError) as e:
        load_tiny(folder=d)
    msg = str(e.value)
    assert "member ids cannot be matched across tables" in msg
    assert ("members.member_id holds whole numbers (VARCHAR, e.g. text of 1 character, "
            "digits only)") in msg
    assert "encounters.member_id holds numbers written as text with leading zeros" in msg
    assert "text of 6 characters with leading zeros" in msg
    assert "'000001'" not in msg and "'1'" not in msg         # the form, never the id
    # text ids that share no member with integer ids: the same error, not an empty cohort
    raw = duckdb.connect()
    raw.execute(f"COPY (SELECT * REPLACE (CAST(member_id AS INTEGER) AS member_id) FROM "
                f"{scan_sql(str(TINY / 'members.csv'))}) TO '{tmp_path}/m.parquet' (FORMAT parquet)")
    exp = pd.read_csv(TINY / "exposure.csv", dtype=str)
    exp["member_id"] = "M" + exp["member_id"]
    exp.to_csv(d / "exposure.csv", index=False)
    src = {**sources(TINY), "members": scan_sql(str(tmp_path / "m.parquet")),
           "exposure": scan_sql(str(d / "exposure.csv"))}
    with pytest.raises(DataValidationError, match=r"members.member_id holds whole numbers "
                       r"\(INTEGER, e.g. a whole number\), but exposure.member_id holds text "
                       r"\(VARCHAR, e.g. text of 2 characters starting with a letter\)"):
        load_claims(duckdb.connect(), src, **MAPS)


# ------------------------------------------------------------------------------- CSV faults
@pytest.mark.parametrize("table, append, line, cause", [
    ("exposure", b"5,C\xe9,2023-06-01\n", 5, "bytes that are not utf-8 text: set data.encoding"),
    ("encounters", b",,,\n", 12, "a line of separators only"),
    ("members", b"   \n", 6, "a blank line (spaces only)"),
    ("members", b"7,1970,F,1,extra\n", 6, "5 values where the header has 4"),
    ("enrollment", b"7,2022-01-01\n", 7, "2 values where the header has 3"),
])
def test_csv_faults_name_the_file_the_line_and_the_cause(tmp_path, table, append, line, cause):
    """Each fault is an evalkit error naming the file, the line and the likely cause;
    before, DuckDB's own error (or, when the sniffer read the file as one column, every
    column 'missing') surfaced instead."""
    d = _copy_tiny(tmp_path)
    f = d / f"{table}.csv"
    f.write_bytes(f.read_bytes() + append)
    with pytest.raises(DataValidationError) as e:
        load_tiny(folder=d)
    msg = str(e.value)
    assert f"{table}: {f} cannot be read as a table" in msg
    assert f"line {line}: {cause}" in msg
    assert "missing_column" not in msg and "Original Line" not in msg
    assert e.value.failures[0]["reason"] == "unreadable_csv"


def test_a_full_row_of_separators_is_quarantined_not_lost(tmp_path):
    """',,,,,,' under a 7-column header is a row of 7 empty values: read, then set aside as
    missing_value and counted (rows in = accepted + quarantined)."""
    d = _copy_tiny(tmp_path)
    with open(d / "encounters.csv", "a") as fh:
        fh.write(",,,,,,\n")
    con, rep = load_tiny(folder=d)
    assert con.execute("SELECT source_row, reason FROM quarantine WHERE \"table\" = 'encounters' "
                       "AND reason = 'missing_value'").fetchall() == [(11, "missing_value")]
    assert rep.balanced() and rep.counts.set_index("table").loc["encounters", "rows_in"] == 11


def test_latin1_file_reads_with_data_encoding(tmp_path):
    d = _copy_tiny(tmp_path)
    mem = (d / "members.csv").read_text().replace("sex,comorbidity", "sex,comorbidity,town")
    lines = mem.splitlines()
    lines = [lines[0]] + [ln + ",K\u00f6ln" for ln in lines[1:]]
    (d / "members.csv").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    with pytest.raises(DataValidationError, match="lines 2, 3, 4, 5: bytes that are not utf-8"):
        scan_sql(str(d / "members.csv"), "members")
    con = duckdb.connect()
    src = {**sources(TINY), "members": scan_sql(str(d / "members.csv"), "members", "latin-1")}
    rep = load_claims(con, src, **MAPS)
    assert con.execute("SELECT DISTINCT town FROM members").fetchall() == [("K\u00f6ln",)]
    assert rep.balanced()


def test_person_mode_numeric_covariates_from_csv_are_numbers(tmp_path):
    """CSV files are read as text; covariates whose values are all numbers are stored as
    numbers (a model would otherwise leave them out), other text stays text."""
    f = tmp_path / "people.csv"
    f.write_text("id,t,y,age,sex,site\n1,1,3,40.5,1,A\n2,0,1,,0,B\n3,1,0,61,1,A\n")
    # (age: one value is not whole, so all of it is DOUBLE, 40.5 kept, not rounded)
    con = duckdb.connect()
    load_person(con, scan_sql(str(f), "person"), "t", 1, ["y"],
                covariates=["age", "sex", "site"], id="id")
    types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns "
                             "WHERE table_name = 'persons'").fetchall())
    assert (types["age"], types["sex"], types["site"]) == ("DOUBLE", "BIGINT", "VARCHAR")
    assert con.execute("SELECT age FROM persons WHERE member_id = 1").fetchall()[0][0] == 40.5
    assert con.execute("SELECT count(*) FROM quarantine WHERE reason = 'missing_value'"
                       ).fetchall()[0][0] == 1


# ------------------------------------------------------------ person mode: non-finite values
def _person_load(con, source, **kw):
    from evalkit.data.load import load_report
    args = dict(treatment="arm", treated_value=1, outcomes=["visits"], exposure="months",
                covariates=["age", "site"], id="id")
    load_person(con, source, **{**args, **kw})
    return load_report(con)


def test_person_mode_nan_inf_and_empty_values_are_quarantined(tmp_path):
    """NaN and empty values are missing (missing_value), +-inf is non_finite, in outcomes,
    exposure and covariates alike; the loaded, per-arm and model counts then agree."""
    f = tmp_path / "p.csv"
    f.write_text("id,arm,visits,months,age,site\n"
                 "1,1,3,12,40,A\n2,0,0,12,50,B\n"
                 "3,1,NaN,12,41,A\n"        # NaN outcome
                 "4,0,2,inf,33,B\n"         # infinite exposure: not 'exposure <= 0'
                 "5,1,1,12,-Infinity,A\n"   # infinite covariate
                 "6,0,1,12,nan,B\n"         # NaN covariate
                 "7,1,1,12,44,  \n"         # blank text covariate
                 "8,0,inf,12,45,A\n"        # infinite outcome
                 "9,1,2,,46,B\n"            # empty exposure
                 "10,0,1,0,47,A\n")         # zero person-time
    con = duckdb.connect()
    rep = _person_load(con, scan_sql(str(f), "person"))
    reasons = dict(con.execute("SELECT source_row, reason FROM quarantine").fetchall())
    assert reasons == {3: "missing_value", 4: "non_finite", 5: "non_finite", 6: "missing_value",
                       7: "missing_value", 8: "non_finite", 9: "missing_value",
                       10: "nonpositive_exposure"}
    assert rep.balanced()
    c = rep.counts.iloc[0]
    assert (c.rows_in, c.accepted, c.quarantined) == (10, 2, 8)
    persons = con.execute('SELECT * FROM persons').df()
    assert persons.groupby("group").size().to_dict() == {"control": 1, "self_help": 1}
    assert np.isfinite(persons[["visits", "member_months", "age"]].to_numpy(float)).all()
    assert str(persons["age"].dtype) == "int64"      # whole numbers stay whole numbers


def test_person_mode_non_finite_numbers_in_a_parquet_file(tmp_path):
    """Stored as doubles (NaN and inf are values, not text): the same reasons."""
    nan, inf = float("nan"), float("inf")
    frame = pd.DataFrame({"id": range(1, 9), "arm": [1.0, 0.0] * 4,
                          "visits": [1, 2, nan, 1, inf, 0, 1, None],
                          "months": [12, 12, 12, -inf, 12, 12, 12, 12],
                          "age": [30.5, 40, 50, 60, 70, inf, nan, 30], "site": list("ABABABAB")})
    frame.to_parquet(tmp_path / "p.parquet")
    con = duckdb.connect()
    rep = _person_load(con, scan_sql(str(tmp_path / "p.parquet")))
    reasons = dict(con.execute("SELECT source_row, reason FROM quarantine").fetchall())
    assert reasons == {3: "missing_value", 4: "non_finite", 5: "non_finite", 6: "non_finite",
                       7: "missing_value", 8: "missing_value"}
    assert rep.balanced() and rep.counts.accepted.iloc[0] == 2
    # the reason's description says what happened
    q = rep.quarantine.set_index("reason")
    assert q.loc["non_finite", "description"] == "a number is infinite"


@pytest.mark.parametrize("values, treated_value", [
    (["1", "1.0", " 1", "0", "0.0", "1"], 1),
    (["1", "1.0", "true", "0", "FALSE", "1.00"], True),
    (["1", "1.0", "1", "0", "0", "1"], "1.0"),
])
def test_person_mode_arms_are_compared_by_value(tmp_path, values, treated_value):
    """1, 1.0, '1' and true are one arm: no 1.0 row silently becomes a control."""
    f = tmp_path / "p.csv"
    f.write_text("id,arm,visits\n" + "".join(f"{i},{v},1\n" for i, v in enumerate(values, 1)))
    con = duckdb.connect()
    load_person(con, scan_sql(str(f)), "arm", treated_value, ["visits"], id="id")
    arms = dict(con.execute('SELECT member_id, "group" FROM persons').fetchall())
    assert arms == {"1": "self_help", "2": "self_help", "3": "self_help", "4": "control",
                    "5": "control", "6": "self_help"}


def test_person_mode_arms_of_a_double_and_a_boolean_column(tmp_path):
    frame = pd.DataFrame({"id": [1, 2, 3, 4], "dbl": [1.0, 0.0, 1.0, 0.0],
                          "flag": [True, False, True, False], "visits": [1, 2, 3, 4]})
    frame.to_parquet(tmp_path / "p.parquet")
    for column, treated in (("dbl", 1), ("dbl", "1"), ("flag", 1), ("flag", True)):
        con = duckdb.connect()
        load_person(con, scan_sql(str(tmp_path / "p.parquet")), column, treated, ["visits"], id="id")
        got = con.execute('SELECT list("group" ORDER BY member_id) FROM persons').fetchall()[0][0]
        assert got == ["self_help", "control", "self_help", "control"], (column, treated)


def test_person_mode_unclear_arms_are_an_error_listing_them(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("id,arm,visits\n1,yes,1\n2,Yes,1\n3,no,2\n4,1,0\n")
    with pytest.raises(DataValidationError) as e:
        load_person(duckdb.connect(), scan_sql(str(f)), "arm", "yes", ["visits"], id="id")
    msg = str(e.value)
    assert "person.arm: unclear_arms" in msg and "'Yes'" in msg and "'yes'" in msg and "'1'" in msg
    f.write_text("id,arm,visits\n1,A,1\n2,B,1\n")
    with pytest.raises(DataValidationError, match="treated_value '1' is not one of") as e:
        load_person(duckdb.connect(), scan_sql(str(f)), "arm", 1, ["visits"], id="id")
    assert "'A'" in str(e.value) and "'B'" in str(e.value)
    # only the treated value: the control arm has no members, and the error says so
    f.write_text("id,arm,visits\n1,1,1\n2,1.0,1\n")
    with pytest.raises(DataValidationError, match="the control arm has no members"):
        load_person(duckdb.connect(), scan_sql(str(f)), "arm", 1, ["visits"], id="id")


def test_person_mode_unclear_arms_are_listed_with_the_other_structural_problems(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("id,arm,visits\n1,1,1\n2,2,1\n3,0,2\n")
    with pytest.raises(DataValidationError) as e:
        load_person(duckdb.connect(), scan_sql(str(f)), "arm", 1, ["visitz"], id="id")
    assert {(x["column"], x["reason"]) for x in e.value.failures} == {
        ("visitz", "missing_column"), ("arm", "unclear_arms")}
    assert "'0', '1', '2'" in str(e.value)


def test_text_ids_with_a_zero_fraction_match_in_text_mode(tmp_path):
    """Text ids ("M9" in members makes the load compare ids as text): "1.0" in exposure
    is the member 1, as when every table holds whole numbers."""
    d = _copy_tiny(tmp_path)
    base_con, base = load_tiny()
    for t in ("members", "exposure"):
        f = pd.read_csv(d / f"{t}.csv", dtype=str)
        if t == "exposure":
            f["member_id"] = f["member_id"] + ".0"
        else:
            f = pd.concat([f, f.iloc[:1].assign(member_id="M9")])
        f.to_csv(d / f"{t}.csv", index=False)
    con, rep = load_tiny(folder=d)
    assert con.execute("SELECT typeof(member_id) FROM exposure LIMIT 1").fetchall()[0][0] == "VARCHAR"
    assert sorted(con.execute("SELECT member_id FROM exposure").fetchall()) == sorted(
        (str(m),) for (m,) in base_con.execute("SELECT member_id FROM exposure").fetchall())
    assert rep.counts.set_index("table").loc["exposure", "accepted"] == \
        base.counts.set_index("table").loc["exposure", "accepted"]


@pytest.mark.parametrize("value, what", [(1.5, "a number with a fraction"),
                                         (2.0 ** 63, "2^63 or more")])
def test_double_ids_that_are_not_whole_numbers_name_the_row_not_the_id(tmp_path, value, what):
    raw = duckdb.connect()
    raw.execute(f"COPY (SELECT * REPLACE (CASE WHEN row_number() OVER () = 2 THEN {value!r} "
                f"ELSE CAST(member_id AS DOUBLE) END AS member_id) FROM "
                f"{scan_sql(str(TINY / 'exposure.csv'))}) TO '{tmp_path}/e.parquet' (FORMAT parquet)")
    src = {**sources(TINY), "exposure": scan_sql(str(tmp_path / "e.parquet"))}
    with pytest.raises(DataValidationError, match=f"{re.escape(what)}.* at source row 2") as e:
        load_claims(duckdb.connect(), src, **MAPS)
    assert repr(value) not in str(e.value) and "Conversion Error" not in str(e.value)


def test_a_missing_category_column_is_reported_with_unreadable_end_dates(tmp_path):
    """End dates are judged by the category of the line: without a category column the
    load reports the missing column (not a database error)."""
    d = _copy_tiny(tmp_path)
    enc = pd.read_csv(d / "encounters.csv", dtype=str)
    enc = enc.rename(columns={"category": "kind"})
    enc.loc[0, "end_date"] = "2023-02-30"
    enc.to_csv(d / "encounters.csv", index=False)
    with pytest.raises(DataValidationError) as e:
        load_tiny(folder=d)
    assert ("encounters", "category", "missing_column") in {
        (f["table"], f["column"], f["reason"]) for f in e.value.failures}


@pytest.mark.parametrize("claim_ids", [True, False])
def test_accepted_lines_keep_source_order_and_the_first_of_repeated_lines(tmp_path, claim_ids):
    """Many row groups, lines in no particular order, bad lines and repeats scattered
    through the file (a repeat can come long before or after its first line): the
    accepted lines come out in source order, and of repeated lines the first by source
    row is kept. Expected values are worked out in pandas from the rules of REASONS."""
    rng = np.random.default_rng(7)
    n_members, n = 400, 60_000
    members = pd.DataFrame({"member_id": np.arange(1, n_members + 1), "birth_year": 1970,
                            "sex": "F"})
    enrollment = pd.DataFrame({"member_id": np.arange(1, n_members + 1),
                               "start_date": pd.Timestamp("2021-01-01"),
                               "end_date": pd.Timestamp("2023-12-31")})
    exposure = pd.DataFrame({"member_id": np.arange(1, n_members + 1),
                             "group": np.where(np.arange(n_members) % 2, "T", "C"),
                             "index_date": pd.Timestamp("2022-06-01")})
    enc = pd.DataFrame({
        "claim_id": rng.permutation(n) + 1,
        "member_id": rng.integers(1, n_members + 1, n),
        "service_date": pd.Timestamp("2021-01-01") + pd.to_timedelta(rng.integers(0, 1095, n), "D"),
        "category": rng.choice(["ED", "outpatient_mh", "primary_care"], n),
        "allowed_amount": np.round(rng.uniform(1, 500, n), 2),
    })
    rows = rng.choice(n, 600, replace=False)
    enc.loc[rows[:150], "member_id"] = n_members + 7                          # unknown member
    enc.loc[rows[150:300], "service_date"] = pd.Timestamp("2025-03-01")     # outside coverage
    enc.loc[rows[300:450], "allowed_amount"] = -1.0                          # negative amount
    repeats = enc.iloc[rows[450:]].copy()                                    # repeated lines,
    enc = pd.concat([repeats.iloc[:75], enc, repeats.iloc[75:]], ignore_index=True)  # both ends
    if not claim_ids:
        enc = enc.drop(columns="claim_id")
    for name, frame in (("members", members), ("enrollment", enrollment),
                        ("encounters", enc), ("exposure", exposure)):
        frame.to_parquet(tmp_path / f"{name}.parquet", row_group_size=2_000)
    con = duckdb.connect()
    con.execute("SET threads = 2")
    rep = load_claims(con, sources(tmp_path, ".parquet"), **MAPS)
    assert rep.balanced()

    src = enc.assign(source_row=np.arange(1, len(enc) + 1))
    bad_first = (~src.member_id.between(1, n_members)) | (src.allowed_amount < 0)
    key = "claim_id" if claim_ids else list(enc.columns)
    repeat = src[~bad_first].duplicated(key, keep="first").reindex(src.index, fill_value=False)
    outside = src.service_date > pd.Timestamp("2023-12-31")
    accepted = src[~bad_first & ~repeat & ~outside]
    q = con.execute("SELECT source_row, reason FROM quarantine WHERE \"table\" = 'encounters' "
                    "ORDER BY source_row").df()
    assert q.source_row.tolist() == src[bad_first | repeat | outside].source_row.tolist()
    assert (q.reason == "duplicate_line").sum() == repeat.sum() >= 150
    got = con.execute("SELECT * FROM encounters").df()        # no ORDER BY: stored order
    assert got.member_id.tolist() == accepted.member_id.tolist()
    assert got.allowed_amount.tolist() == accepted.allowed_amount.tolist()
    if claim_ids:
        assert got.claim_id.tolist() == accepted.claim_id.tolist()
