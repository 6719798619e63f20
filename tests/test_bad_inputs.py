"""The catalogue of bad inputs (docs/bad-inputs.md), tried as a new user would: each gives
the documented outcome, an error that says what and where, or a quarantine count.

Entries already covered elsewhere are listed in the catalogue with their tests; this file
holds the cases that concern the cohort and the outcomes as a whole.
"""
import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml

from evalkit import runner
from evalkit.data import synthetic
from evalkit.errors import ConvergenceError, DataValidationError, EvalkitError, WorkbookError
from evalkit.analysis.outcomes import choose_count_family

TABLES = ("members", "enrollment", "encounters", "exposure")


@pytest.fixture(scope="module")
def base_plan(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plan")
    return synthetic.generate(tmp / "base", members=1200, seed=5).paths


def _variant(tmp_path: Path, base: dict, workbooks=("data_quality",), **queries) -> Path:
    """Copy the plan with some tables replaced by a query over the original
    (``{t}`` in a query is the original table), and write a params file for it."""
    con = duckdb.connect()
    out = tmp_path / "plan"
    out.mkdir()
    for t in TABLES:
        q = queries.get(t, "SELECT * FROM {t}").format(t=f"read_parquet('{base[t]}')")
        con.execute(f"COPY ({q}) TO '{out / t}.parquet' (FORMAT parquet)")
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({"title": "bad input", "workbooks": list(workbooks),
                                 "data": {"source": "files",
                                          "tables": {t: str(out / f"{t}.parquet") for t in TABLES}}}))
    return f


def test_empty_cohort_stops_before_the_workbooks(tmp_path, base_plan):
    f = _variant(tmp_path, base_plan,
                 exposure="SELECT * REPLACE (DATE '1990-01-01' AS index_date) FROM {t}")
    with pytest.raises(DataValidationError, match="the analysis cohort is empty") as err:
        runner.run(f, out=tmp_path / "out", quiet=True)
    assert "enrolled on the index date: 0 self_help / 0 control" in str(err.value)
    status = runner.read_status(tmp_path / "out")
    assert status["status"] == "failed" and status["failed_step"] == "prepare"
    assert status["workbooks"] == []


def test_arm_without_members_stops_before_the_workbooks(tmp_path, base_plan):
    f = _variant(tmp_path, base_plan,
                 exposure="SELECT * REPLACE ('self_help' AS \"group\") FROM {t}")
    with pytest.raises(DataValidationError, match="has no control members .* needs both arms"):
        runner.run(f, out=tmp_path / "out", quiet=True)


def _frame(er_treated, er_control):
    rng = np.random.default_rng(3)
    n = len(er_treated) + len(er_control)
    return pd.DataFrame({"treated": [1] * len(er_treated) + [0] * len(er_control),
                         "er_visits": list(er_treated) + list(er_control),
                         "age": rng.normal(50, 10, n), "member_months": 12.0})


def test_all_zero_outcome_is_one_clear_reason():
    frame = _frame([0] * 50, [0] * 60)
    with pytest.raises(ConvergenceError) as err:
        choose_count_family(frame, "er_visits", ["age"])
    msg = str(err.value)
    assert "er_visits: no count model could be fitted (poisson, negbin, zinb, hurdle_negbin)" in msg
    assert msg.count("every 'er_visits' is 0") == 1          # said once, not per family


def test_arm_without_events_names_the_arm():
    rng = np.random.default_rng(4)
    frame = _frame([0] * 50, rng.poisson(0.8, 60))
    with pytest.raises(ConvergenceError, match=r"no er_visits > 0 among the 50 rows with "
                                               r"treated = 1.*separation"):
        choose_count_family(frame, "er_visits", ["age"])


def test_arm_without_events_through_a_run(tmp_path, base_plan):
    """No self-help member has an ER visit: the utilization workbook stops with the reason,
    the run is marked failed, and the data-quality workbook's output is kept."""
    f = _variant(tmp_path, base_plan, workbooks=("data_quality", "utilization"), encounters=(
        "SELECT * FROM {t} WHERE NOT (category = 'er' AND member_id IN (SELECT member_id FROM "
        f"read_parquet('{base_plan['exposure']}') WHERE \"group\" = 'self_help'))"))
    with pytest.raises(WorkbookError, match="utilization.*er_visits: no count model could be "
                                            "fitted.*separation"):
        runner.run(f, out=tmp_path / "out", quiet=True)
    status = runner.read_status(tmp_path / "out")
    assert [w["status"] for w in status["workbooks"]] == ["ok", "failed"]


def test_output_folder_that_cannot_be_written(tmp_path, base_plan):
    (tmp_path / "afile").write_text("x")
    f = _variant(tmp_path, base_plan)
    with pytest.raises(EvalkitError, match="cannot write to output folder"):
        runner.run(f, out=tmp_path / "afile" / "run", quiet=True)


# ------------------------------------------------------------------ bad rows and bad files
def test_impossible_dates_are_quarantined_and_the_run_goes_on(tmp_path, base_plan):
    """A claims extract (CSV, dates as text) with planted problems, two of them impossible
    calendar dates among thousands of good lines: every planted row is quarantined with
    its reason, none is lost, and the run finishes."""
    con = duckdb.connect()
    plan = tmp_path / "plan"
    plan.mkdir()
    for t in TABLES:
        con.execute(f"COPY (SELECT * FROM read_parquet('{base_plan[t]}')) TO '{plan / t}.csv' (HEADER)")
    enc = pd.read_csv(plan / "encounters.csv", dtype=str, keep_default_na=False)
    planted = enc.iloc[[3, 4, 5, 6]].copy()
    planted["claim_id"] = [str(10**9 + i) for i in range(4)]
    planted.iloc[0, planted.columns.get_loc("service_date")] = "2023-02-30"
    planted.iloc[1, planted.columns.get_loc("service_date")] = "2023-11-31"
    planted.iloc[2, planted.columns.get_loc("allowed_amount")] = "-40"
    planted.iloc[3, planted.columns.get_loc("member_id")] = "99999999"
    pd.concat([enc, planted]).to_csv(plan / "encounters.csv", index=False)
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({"title": "impossible dates", "workbooks": ["data_quality"],
                                 "data": {"source": "files",
                                          "tables": {t: str(plan / f"{t}.csv") for t in TABLES}}}))
    result = runner.run(f, out=tmp_path / "out", quiet=True)
    assert runner.read_status(tmp_path / "out")["status"] == "ok"
    db = duckdb.connect(str(result.output_dir / "work" / "analysis.duckdb"), read_only=True)
    got = db.execute("SELECT source_row, reason FROM quarantine ORDER BY source_row").fetchall()
    n = len(enc)
    assert got == [(n + 1, "invalid_date"), (n + 2, "invalid_date"), (n + 3, "negative_amount"),
                   (n + 4, "unknown_member")]
    counts = dict(db.execute('SELECT "table", rows_in FROM load_counts').fetchall())
    accepted = db.execute("SELECT count(*) FROM encounters").fetchall()[0][0]
    assert counts["encounters"] == n + 4 == accepted + 4


@pytest.mark.xdist_group("bad-inputs-runs")
def test_csv_fault_is_exit_2_without_a_traceback(tmp_path):
    """A Latin-1 file through the command line: the contract's voice, exit status 2."""
    import subprocess
    import sys
    tiny = Path(__file__).parent / "fixtures" / "tiny"
    plan = tmp_path / "plan"
    plan.mkdir()
    for t in TABLES:
        (plan / f"{t}.csv").write_bytes((tiny / f"{t}.csv").read_bytes())
    with open(plan / "exposure.csv", "ab") as fh:
        fh.write(b"5,C\xe9,2023-06-01\n")
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({"title": "latin-1", "workbooks": ["data_quality"],
                                 "data": {"source": "files",
                                          "tables": {t: str(plan / f"{t}.csv") for t in TABLES},
                                          "group_map": {"T": "self_help", "C": "control"}}}))
    proc = subprocess.run([sys.executable, "-m", "evalkit.cli", "run", str(f), "--quiet",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"exposure: {plan / 'exposure.csv'} cannot be read as a table" in proc.stderr
    assert "line 5: bytes that are not utf-8 text: set data.encoding" in proc.stderr


@pytest.mark.xdist_group("bad-inputs-runs")
def test_person_mode_counts_agree_with_nan_and_inf_planted(tmp_path):
    """NaN, inf and empty values and arms written 1 / 1.0: the rows loaded, the members per
    arm and the rows the count model used are the same numbers."""
    rng = np.random.default_rng(13)
    n = 600
    arm = rng.integers(0, 2, n)
    frame = pd.DataFrame({"id": np.arange(1, n + 1), "arm": arm.astype(str),
                          "er_visits": rng.poisson(np.where(arm == 1, 0.5, 0.8)).astype(float),
                          "months": 12.0, "age": rng.normal(50, 10, n).round(1)})
    frame.loc[frame.index[:40][frame["arm"][:40] == "1"], "arm"] = "1.0"   # same arm, as text
    planted = {5: ("er_visits", np.nan), 6: ("er_visits", np.inf), 7: ("months", np.inf),
               8: ("age", -np.inf), 9: ("age", np.nan), 10: ("months", np.nan)}
    for row, (col, value) in planted.items():
        frame.loc[row, col] = value
    frame.to_csv(tmp_path / "people.csv", index=False)       # NaN -> '', inf -> 'inf'
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({
        "title": "person mode, bad values", "mode": "person", "workbooks": ["utilization"],
        "models": {"bootstrap_replicates": 0},
        "data": {"person": {"path": str(tmp_path / "people.csv"), "id": "id", "treatment": "arm",
                            "treated_value": 1, "outcomes": ["er_visits"], "exposure": "months",
                            "covariates": ["age"]}}}))
    result = runner.run(f, out=tmp_path / "out", quiet=True)
    db = duckdb.connect(str(result.output_dir / "work" / "analysis.duckdb"), read_only=True)
    reasons = dict(db.execute("SELECT source_row, reason FROM quarantine").fetchall())
    assert reasons == {6: "missing_value", 7: "non_finite", 8: "non_finite", 9: "non_finite",
                       10: "missing_value", 11: "missing_value"}
    arms = dict(db.execute('SELECT "group", count(*) FROM persons GROUP BY 1').fetchall())
    assert sum(arms.values()) == n - 6
    assert arms["self_help"] == int((arm == 1).sum()) - sum(arm[r] == 1 for r in planted)
    res = json.loads((result.output_dir / "results.json").read_text())
    recs = [r for r in res["estimates"] if r.get("n_treated") is not None]
    assert recs
    for r in recs:
        assert (r["n_treated"], r["n_control"]) == (arms["self_help"], arms["control"]), r
