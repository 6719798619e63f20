"""The cohort-balance workbook run end to end by the runner, with the costs workbook
reading the design it stores (a real papermill run in a Jupyter kernel)."""
import json
import re

import nbformat
import pytest
import yaml

from evalkit import runner
from evalkit.analysis.study import Study


# ------------------------------------------------------------------ the workbook
@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cb_run")
    f = tmp / "small.yaml"
    # a balance threshold no design meets: the failing path, end to end (the passing one
    # runs in test_runner's default run and in test_nhefs)
    f.write_text(yaml.safe_dump({"title": "cohort balance", "data": {"members": 1500},
                                 "models": {"bootstrap_replicates": 0},
                                 "design": {"max_smd": 0.01},
                                 "workbooks": ["costs", "cohort_balance"]}))
    result = runner.run(f, out=tmp / "out", quiet=True)
    return result.output_dir, json.loads(result.results_path.read_text())


def test_workbook_runs_end_to_end(small_run):
    out, res = small_run
    assert res["run"]["status"] == "ok"
    # catalogue order: the design is made before the costs workbook reads it
    assert [w["workbook"] for w in res["run"]["workbooks"]] == ["cohort_balance", "costs"]
    cb = [e for e in res["estimates"] if e["workbook"] == "cohort_balance"]
    assert {(e["outcome"], e["scale"]) for e in cb} == {
        ("er_visits", "rate_ratio"), ("outpatient_mh_visits", "rate_ratio"),
        ("inpatient_days", "rate_ratio"), ("total_cost", "cost_difference"),
        ("total_cost", "ratio")}
    for e in cb:
        assert e["estimand"] == "ATT" and e["method"].startswith("propensity-score matching")
        assert e["diagnostics_passed"] is False       # reported, marked, not hidden
    assert any(e.get("calibrated_ci_low") is not None for e in cb)
    for t in ("design_diagnostics", "balance", "propensity_model", "negative_controls",
              "empirical_null", "evalues"):
        assert f"cohort_balance.{t}" in res["tables"], t
    assert (out / "work" / "design.parquet").is_file()
    # the diagnostics (PASS/FAIL) are shown before the first effect
    nb = nbformat.read(out / "02_cohort_balance.ipynb", as_version=4)
    text = [(c.source, "".join(str(o.get("data", {}).get("text/markdown", "")) for o in c.get("outputs", [])))
            for c in nb.cells if c.cell_type == "code"]
    verdict_at = next(i for i, (_, o) in enumerate(text) if "**FAIL" in o)
    effects_at = next(i for i, (s, _) in enumerate(text) if "cohort.effects(" in s)
    assert verdict_at < effects_at
    # no member-level rows in the executed notebook
    html = (out / "02_cohort_balance.html").read_text()
    assert "member_id" not in html


def test_costs_workbook_adds_the_design_adjusted_estimate(small_run):
    out, res = small_run
    nb = nbformat.read(out / "04_costs.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "study.design_effects" in c.source)
    shown = "".join(o.get("data", {}).get("text/plain", "") for o in cell.outputs)
    assert "cost difference per member" in shown and "No cohort-balance design" not in shown
    # the design's verdict travels along (shown in words: diagnostics passed "no")
    assert "diagnostics passed" in shown and re.search(r"\bno$", shown, re.M)
    cmp_cell = next(c for c in nb.cells if "design-adjusted (cohort balance)" in c.source
                    and "methods_table" in c.source)
    assert "design-adjusted (cohort balance)" in "".join(
        o.get("data", {}).get("text/plain", "") for o in cmp_cell.outputs)
    # the same number as the cohort-balance workbook recorded
    st = Study(out / "params.json")
    again = st.design_effects(["total_cost"])
    st.close()
    rec = next(e for e in res["estimates"] if e["workbook"] == "cohort_balance"
               and e["scale"] == "cost_difference")
    row = again[again["scale"] == "cost_difference"].iloc[0]
    assert row["estimate"] == pytest.approx(rec["estimate"], rel=1e-10)
    assert row["std_error"] == pytest.approx(rec["std_error"], rel=1e-10)
