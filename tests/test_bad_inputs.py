"""The catalogue of bad inputs (docs/bad-inputs.md), tried as a new user would: each gives
the documented outcome, an error that says what and where, or a quarantine count.

Entries already covered elsewhere are listed in the catalogue with their tests; this file
holds the cases that concern the cohort and the outcomes as a whole.
"""
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml

import evalkit
from evalkit import runner
from evalkit.data import synthetic
from evalkit.errors import ConvergenceError, DataValidationError, EvalkitError, WorkbookError
from evalkit.outcomes import choose_count_family

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
        evalkit.run(f, out=tmp_path / "out", quiet=True)
    assert "enrolled on the index date: 0 self_help / 0 control" in str(err.value)
    status = runner.read_status(tmp_path / "out")
    assert status["status"] == "failed" and status["failed_step"] == "prepare"
    assert status["workbooks"] == []


def test_arm_without_members_stops_before_the_workbooks(tmp_path, base_plan):
    f = _variant(tmp_path, base_plan,
                 exposure="SELECT * REPLACE ('self_help' AS \"group\") FROM {t}")
    with pytest.raises(DataValidationError, match="has no control members .* needs both arms"):
        evalkit.run(f, out=tmp_path / "out", quiet=True)


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
        evalkit.run(f, out=tmp_path / "out", quiet=True)
    status = runner.read_status(tmp_path / "out")
    assert [w["status"] for w in status["workbooks"]] == ["ok", "failed"]


def test_output_folder_that_cannot_be_written(tmp_path, base_plan):
    (tmp_path / "afile").write_text("x")
    f = _variant(tmp_path, base_plan)
    with pytest.raises(EvalkitError, match="cannot write to output folder"):
        evalkit.run(f, out=tmp_path / "afile" / "run", quiet=True)
