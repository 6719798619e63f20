"""A public run whose cohort steps exclude a few members: the attrition table is
suppressed (with the counts that would give the small ones back), not refused.

The plan is a small synthetic one with four members' index dates moved to a day
without coverage, so the step "enrolled on the index date" excludes exactly four; the
numbers checked are read from the internal (not public) attrition of the same data.
"""
import json
import math

import duckdb
import pandas as pd
import yaml

from evalkit import runner
from evalkit.analysis.study import ATTRITION_COUNTS, public_attrition
from evalkit.data import synthetic
from evalkit.privacy import scan_outputs

TABLES = ("members", "enrollment", "encounters", "exposure")


def _plan(tmp_path, moved: int = 4) -> dict:
    base = synthetic.generate(tmp_path / "base", members=1200, seed=5).paths
    con = duckdb.connect()
    out = tmp_path / "plan"
    out.mkdir()
    for t in TABLES:
        src = f"read_parquet('{base[t]}')"
        q = (f"SELECT * REPLACE (CASE WHEN member_id IN (SELECT member_id FROM {src} "
             f"ORDER BY member_id LIMIT {moved}) THEN DATE '1990-01-01' ELSE index_date END "
             f"AS index_date) FROM {src}") if t == "exposure" else f"SELECT * FROM {src}"
        con.execute(f"COPY ({q}) TO '{out / t}.parquet' (FORMAT parquet)")
    return {t: str(out / f"{t}.parquet") for t in TABLES}


def _hidden(rows: list) -> set:
    return {(i, c) for i, r in enumerate(rows) for c in ATTRITION_COUNTS
            if r.get(c) is None or (isinstance(r[c], float) and math.isnan(r[c]))}


def test_public_run_suppresses_a_small_exclusion_step(tmp_path):
    tables = _plan(tmp_path)
    out = {}
    for public in (False, True):
        f = tmp_path / f"p{public}.yaml"
        f.write_text(yaml.safe_dump({"title": "attrition", "workbooks": ["data_quality"],
                                     "report": {"public": public},
                                     "data": {"source": "files", "tables": tables}}))
        result = runner.run(f, out=tmp_path / f"out{public}", quiet=True)
        res = json.loads(result.results_path.read_text())
        assert res["run"]["status"] == "ok"
        out[public] = res["tables"]["data_quality.attrition"]
    shown = out[False]
    small = [i for i, r in enumerate(shown) if 0 < r["excluded_members"] < 11]
    assert small and shown[small[0]]["excluded_members"] == 4       # the planted step
    hidden = _hidden(out[True])
    assert (small[0], "excluded_members") in hidden
    # the totals around the step cannot both be shown (their difference is the 4)
    assert {(small[0], "total_members"), (small[0] - 1, "total_members")} & hidden
    # what is shown is the internal table's value
    for i, r in enumerate(out[True]):
        for c in ATTRITION_COUNTS:
            if (i, c) not in hidden:
                assert r[c] == shown[i][c]
    # the public run's files hold no small count
    assert scan_outputs(tmp_path / "outTrue", min_cell=11).ok


def test_an_arms_exclusion_is_protected_though_the_table_does_not_show_it():
    """Three of one arm and twenty of the other excluded: the total excluded (23) may
    be shown, but the self-help arm's count before and after the step may not both be."""
    t = pd.DataFrame({"step": ["a", "b"], "self_help_members": [500, 497],
                      "control_members": [900, 880], "total_members": [1400, 1377],
                      "excluded_members": [0, 23]})
    p = public_attrition(t, 11)
    assert p["self_help_members"].isna().any()
    assert p.loc[1, "excluded_members"] == 23 or math.isnan(p.loc[1, "excluded_members"])
    # a table without small exclusions is published as it is
    big = t.assign(self_help_members=[500, 480], total_members=[1400, 1360],
                   excluded_members=[0, 40])
    pd.testing.assert_frame_equal(public_attrition(big, 11),
                                  big.astype({c: float for c in ATTRITION_COUNTS}))
