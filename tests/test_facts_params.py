"""params/clearinghouse_brief.yaml end to end (summary mode, public output), with its key
numbers checked against the published figures.

Published figures (as docs/published-figures.md gives them; copied here):
* Humphreys & Moos, Alcohol Clin Exp Res 25(5):711-716 (2001), one-year follow-up of 887
  12-step-oriented vs 887 cognitive-behavioral patients: outpatient continuing-care visits
  per patient 13.1 vs 22.5; inpatient days 10.5 vs 17.0; annual health-care cost about
  $2,883 vs $4,729 (64% higher); abstinence at 2 years (31(1):64, 2007) 49.5% vs 37.0%.
* Healthwise self-care handbook (Idaho): emergency-room use fell by 18% on average.
The projection is checked by hand: members x uptake x baseline x (ratio - 1).
"""
import json

import numpy as np
import pandas as pd
import pytest

from conftest import assert_structured_records

N_ARM = 887                                   # patients per cohort (Humphreys & Moos 2001)
OUTPATIENT = (13.1, 22.5)                     # visits per patient
INPATIENT = (10.5, 17.0)                      # days per patient
COST = (2883.0, 4729.0)                       # dollars per patient per year
ABSTINENT = (0.495, 0.370)                    # share abstinent at 2 years (2007)
ER_RATIO = 0.82                               # Healthwise: ER use 18% lower


@pytest.fixture(scope="module")
def brief(shared_runs):
    """The session's run of the params file as shipped (tests/shared_runs.py)."""
    run = shared_runs.params_file("clearinghouse_brief")
    return run, json.loads(run.results_path.read_text())


def _study(res, outcome):
    (row,) = [e for e in res["estimates"] if e["workbook"] == "synthesis"
              and e.get("level") == "study" and e["outcome"] == outcome]
    return row


def test_run_is_public_and_safe(brief):
    run, res = brief
    assert res["run"]["status"] == "ok"
    assert [w["workbook"] for w in res["run"]["workbooks"]] == ["synthesis", "proportions"]
    assert res["run"]["params"]["report"]["public"] is True
    assert res["run"]["params"]["report"]["audience"] == "clearinghouse"
    privacy = res["run"]["privacy"]
    assert privacy["ok"] and privacy["findings"] == []
    assert privacy["member_ids_checked"] is None          # summary mode: no member ids
    assert (run.output_dir / "brief.html").is_file()
    assert not any(e["workbook"] not in ("synthesis", "proportions") for e in res["estimates"])
    assert_structured_records(res)


def test_effects_reproduce_the_published_figures(brief):
    _, res = brief
    out = _study(res, "outpatient_mh_visits")
    assert out["estimate"] == pytest.approx(OUTPATIENT[0] / OUTPATIENT[1], rel=1e-12)
    assert (out["n_treated"], out["n_control"]) == (N_ARM, N_ARM)
    assert out["scale"] == "ratio" and out["ci_high"] < 1
    assert _study(res, "inpatient_days")["estimate"] == pytest.approx(INPATIENT[0] / INPATIENT[1])
    cost = _study(res, "total_cost")
    assert cost["estimate"] == pytest.approx(COST[0] / COST[1], rel=1e-12)
    assert 1 / cost["estimate"] - 1 == pytest.approx(0.64, abs=0.005)       # "64% higher"
    ab = _study(res, "abstinence")
    assert ab["estimate"] == pytest.approx(round(ABSTINENT[0] * N_ARM) / round(ABSTINENT[1] * N_ARM))
    er = _study(res, "er_visits")
    assert er["estimate"] == pytest.approx(ER_RATIO) and er["scale"] == "rate_ratio"
    assert "assumed" in er["assumed"]                    # its interval had to be assumed
    # no outcome has two studies: nothing is pooled, and the tables say so
    pooled = pd.DataFrame(res["tables"]["synthesis.pooled"])
    assert (pooled["method"] == "single study (not pooled)").all() and len(pooled) == 5
    assert not any(e.get("level") == "pooled" for e in res["estimates"])


def test_assumed_sds_are_varied(brief):
    run, res = brief
    sens = pd.DataFrame(res["tables"]["synthesis.sd_sensitivity"])
    assert set(sens["outcome"]) == {"outpatient_mh_visits", "inpatient_days", "total_cost"}
    cost = sens[sens["outcome"] == "total_cost"].set_index("sd_factor")
    width = np.log(cost["ci_high"]) - np.log(cost["ci_low"])
    assert width[2.0] == pytest.approx(4 * width[0.5])
    np.testing.assert_allclose(cost["estimate"], COST[0] / COST[1], rtol=1e-12)
    nb = (run.output_dir / "09_synthesis.ipynb").read_text()
    assert "SDs are not published" in nb and "not pooled" in nb


def test_projection_for_the_target_plan(brief):
    _, res = brief
    proj = {e["outcome"]: e for e in res["estimates"] if e.get("level") == "projection"
            and e["scale"] == "difference"}
    participants = 50_000 * 0.02
    er = proj["er_visits"]
    assert er["estimate"] == pytest.approx(participants * 0.35 * (ER_RATIO - 1))      # -63
    assert er["ci_low"] < er["estimate"] < er["ci_high"] < 0
    visits = proj["outpatient_mh_visits"]
    assert visits["estimate"] == pytest.approx(participants * 12 * (OUTPATIENT[0] / OUTPATIENT[1] - 1))
    cost = proj["total_cost"]
    assert cost["estimate"] == pytest.approx(participants * 4000 * (COST[0] / COST[1] - 1))
    assert cost["unit"] == "dollars per year" and cost["ci_high"] < 0
    table = pd.DataFrame(res["tables"]["synthesis.projection"])
    assert list(table["outcome"]) == ["er_visits", "outpatient_mh_visits", "total_cost"]


def test_abstinence_proportions(brief):
    _, res = brief
    props = pd.DataFrame(res["tables"]["proportions.proportions"])
    assert list(props["n"]) == [N_ARM, N_ARM]
    np.testing.assert_allclose(props["proportion"], ABSTINENT, atol=0.0006)
    (comp,) = res["tables"]["proportions.comparisons"]
    assert comp["difference"] == pytest.approx(0.125, abs=0.001) and comp["ci_low"] > 0


def test_projection_in_results_is_the_seeded_projection(brief):
    """The workbook's projection equals evalkit.analysis.summary.project with the params' seed,
    number for number (same params and seed, same draws)."""
    from evalkit import params as P
    from evalkit.analysis import summary as S
    _, res = brief
    p = P.load("params/clearinghouse_brief.yaml")
    proj = S.project_plan(p, S.synthesize(p.summary))
    table = pd.DataFrame(res["tables"]["synthesis.projection"])
    for col in ("expected_change", "ci_low", "ci_high"):
        assert table[col].tolist() == proj.table[col].tolist()


def test_budget_impact_for_the_target_plan(brief):
    """Year-1 budget impact worked by hand: the 1,000 expected participants are referred,
    each costing the default econ program cost ($120 coordination + $30 materials) plus
    the $25,000 start-up; each saves 4,000 x (1 - 2883/4729) dollars."""
    _, res = brief
    rows = [e for e in res["estimates"] if e["workbook"] == "synthesis"
            and str(e["method"]).startswith("budget impact")]
    net = [e for e in rows if e["scale"] == "cost_difference"]
    assert len(net) == 1 and net[0]["period"] == "year 1"
    participants = 50_000 * 0.02
    saving = 4000 * (1 - COST[0] / COST[1])
    assert net[0]["estimate"] == pytest.approx(participants * 150 + 25_000 - participants * saving)
    summary = pd.DataFrame(res["tables"]["synthesis.budget_summary"]).set_index("scenario")
    assert summary.loc["low", "total_net_budget_impact"] > summary.loc["base", "total_net_budget_impact"] \
        > summary.loc["high", "total_net_budget_impact"]
