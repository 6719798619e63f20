"""Time from discharge of the first follow-up stay to readmission (Study.readmission_times,
evalkit.analysis.readmission) and its section of the time-to-event workbook."""
import json
import textwrap
import warnings

import numpy as np
import pandas as pd
import pytest

from evalkit import params as P, runner
from evalkit.errors import DataDroppedWarning
from evalkit.analysis.readmission import readmission_effects
from evalkit.results import write_json_atomic
from evalkit.analysis.study import Study
from evalkit.prepare import prepare

# Every member: index date 2023-01-01, 365-day windows, so the follow-up window is
# [2023-01-01, 2024-01-01). Expected durations are worked out by hand below.
MEMBERS = """member_id,birth_year,sex
1,1960,F
2,1970,M
3,1980,F
4,1950,M
5,1965,F
6,1975,M
7,1985,F
8,1955,M
"""
EXPOSURE = """member_id,group,index_date
1,self_help,2023-01-01
2,self_help,2023-01-01
3,control,2023-01-01
4,control,2023-01-01
5,control,2023-01-01
6,self_help,2023-01-01
7,control,2023-01-01
8,self_help,2023-01-01
"""
ENROLLMENT = """member_id,start_date,end_date
1,2022-01-01,2024-12-31
2,2022-01-01,2024-12-31
3,2022-01-01,2023-08-31
3,2023-10-01,2024-12-31
4,2022-01-01,2024-12-31
5,2022-01-01,2024-12-31
6,2022-01-01,2024-12-31
7,2022-01-01,2024-12-31
8,2022-01-01,2024-12-31
"""
ENCOUNTERS = """claim_id,member_id,service_date,end_date,category,allowed_amount
1,1,2022-12-20,2022-12-25,inpatient,1000
2,1,2023-02-01,2023-02-04,inpatient,1000
3,1,2023-02-01,2023-02-05,inpatient,500
4,1,2023-02-15,2023-02-18,inpatient,1000
5,2,2023-03-01,2023-03-04,inpatient,1000
6,2,2023-03-04,2023-03-10,inpatient,1000
7,2,2023-04-09,2023-04-12,inpatient,1000
8,3,2023-05-01,2023-05-03,inpatient,1000
9,3,2023-11-01,2023-11-02,inpatient,1000
10,4,2023-12-20,2023-12-28,inpatient,1000
11,5,2023-12-28,2024-01-03,inpatient,1000
12,6,2023-05-05,,er,300
13,7,2023-06-01,2023-06-01,inpatient,800
14,7,2023-06-02,2023-06-03,inpatient,800
15,8,2023-07-01,2023-07-05,inpatient,1000
16,8,2024-01-05,2024-01-08,inpatient,1000
"""
# member: (days, event, why)
EXPECTED = {
    1: (10, 1, "baseline stay ignored; index stay's two lines merged, discharge 02-05; "
               "readmitted 02-15"),
    2: (30, 1, "admission on the discharge day (03-04) is a transfer: one episode to 03-10; "
               "readmitted 04-09"),
    3: (121, 0, "coverage ends 08-31: censored on 09-01 (05-03 + 121 days); the 11-01 "
                "admission comes after a gap"),
    4: (4, 0, "no readmission: censored at the window end 2024-01-01"),
    7: (1, 1, "same-day stay discharged 06-01; readmitted 06-02"),
    8: (180, 0, "next admission 2024-01-05 is after the window: censored at 2024-01-01"),
}
# member 5: stay runs past the window end (no time at risk, left out with a warning);
# member 6: no inpatient stay.


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("readm")
    tables = {}
    for name, text in (("members", MEMBERS), ("exposure", EXPOSURE),
                       ("enrollment", ENROLLMENT), ("encounters", ENCOUNTERS)):
        f = tmp / f"{name}.csv"
        f.write_text(textwrap.dedent(text))
        tables[name] = str(f)
    p = P.validate({"data": {"source": "files", "tables": tables}})
    prepare(p, tmp)
    write_json_atomic(tmp / "params.json", p.to_dict())
    s = Study(tmp / "params.json")
    yield s
    s.close()


def test_readmission_durations_by_hand(hand):
    assert hand.sql("SELECT count(*) AS n FROM quarantine")["n"][0] == 0
    with pytest.warns(DataDroppedWarning, match="1 member"):
        t = hand.readmission_times()
    got = {int(r.member_id): (int(r.days), int(r.event)) for r in t.itertuples()}
    assert got == {m: v[:2] for m, v in EXPECTED.items()}
    assert t.attrs["no_time_at_risk"] == 1
    assert {"treated", "group", "age_at_index", "female"} <= set(t.columns)
    assert t.set_index("member_id").loc[[1, 2, 8], "treated"].tolist() == [1, 1, 1]


def test_time_to_first_unchanged_by_shared_durations(hand):
    """The ER clock still starts at the index date (member 6: ER visit on 2023-05-05)."""
    t = hand.time_to_first("er").set_index("member_id")
    assert (int(t.loc[6, "days"]), int(t.loc[6, "event"])) == (124, 1)
    # member 3 had no ER visit: censored when the spell holding the index date ends
    assert (int(t.loc[3, "days"]), int(t.loc[3, "event"])) == (243, 0)


def test_too_few_index_stays_says_so_and_estimates_nothing(hand):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataDroppedWarning)
        res = hand.time_to_readmission()
    assert not res.available
    assert "fewer than 11 members in the self_help arm had an inpatient stay" in res.reason
    assert res.effects.empty and res.tte is None
    assert res.summary() == res.reason
    # counts below 11 are not shown
    assert res.members["members_with_index_stay"].isna().all()


def _frame(n_per_arm, events_per_arm, seed=1):
    rng = np.random.default_rng(seed)
    rows = []
    for arm, treated in (("self_help", 1), ("control", 0)):
        ev = np.zeros(n_per_arm, dtype=int)
        ev[:events_per_arm] = 1
        rows.append(pd.DataFrame({"group": arm, "treated": treated, "event": ev,
                                  "days": rng.integers(1, 200, n_per_arm),
                                  "age_at_index": rng.normal(50, 10, n_per_arm)}))
    return pd.concat(rows, ignore_index=True)


def test_too_few_readmissions_says_so():
    res = readmission_effects(_frame(40, 8), ["age_at_index"])
    assert not res.available and "fewer than 11 members of the self_help arm were readmitted" \
        in res.reason
    assert res.members["members_with_index_stay"].tolist() == [40, 40]
    assert res.members["readmissions"].isna().all()


def test_readmission_probability_is_one_minus_km():
    f = _frame(60, 25)
    res = readmission_effects(f, ["age_at_index"], times=(30, 90))
    assert res.available
    at = res.tte.at.set_index(["group", "time"])
    for r in res.risk.itertuples():
        s = at.loc[(r.group, r.days)]
        assert r.probability == pytest.approx(1 - s["survival"])
        assert (r.ci_low, r.ci_high) == pytest.approx((1 - s["ci_high"], 1 - s["ci_low"]))
    # hand check at 30 days for one arm: product-limit estimate from the data
    sh = f[f["group"] == "self_help"]
    surv = 1.0
    for t in np.sort(sh.loc[sh["event"] == 1, "days"].unique()):
        if t > 30:
            break
        surv *= 1 - ((sh["days"] == t) & (sh["event"] == 1)).sum() / (sh["days"] >= t).sum()
    row = res.risk[(res.risk["group"] == "self_help") & (res.risk["days"] == 30)].iloc[0]
    assert row["probability"] == pytest.approx(1 - surv)
    e = res.effects
    assert e.loc[e["scale"] == "hazard_ratio", "outcome"].tolist() == ["inpatient_readmission"]
    assert sorted(e.loc[e["scale"] == "proportion", "outcome"].unique()) == [
        "inpatient_readmission_within_30_days", "inpatient_readmission_within_90_days"]


def test_workbook_section_end_to_end(tmp_path):
    """A small plan with frequent stays (so the section has enough readmissions), and the
    default small plan (too few: the section says so and records nothing)."""
    base = {"title": "readmission", "seed": 11, "workbooks": ["time_to_event"]}
    import yaml
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({**base, "data": {
        "scenario": "demo", "members": 1500,
        "scenario_options": {"base_rates": {"inpatient": 1.2}}}}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = runner.run(f, out=tmp_path / "many", quiet=True)
    res = json.loads(run.results_path.read_text())
    assert res["run"]["status"] == "ok"
    rd = [e for e in res["estimates"] if e["outcome"].startswith("inpatient_readmission")]
    hr = [e for e in rd if e["scale"] == "hazard_ratio"]
    assert len(hr) == 1 and 0 < hr[0]["ci_low"] < hr[0]["estimate"] < hr[0]["ci_high"]
    assert {e["outcome"] for e in rd if e["scale"] == "proportion"} == {
        "inpatient_readmission_within_30_days", "inpatient_readmission_within_90_days"}
    assert "time_to_event.readmission_risk" in res["tables"]

    f.write_text(yaml.safe_dump({**base, "data": {"scenario": "demo", "members": 300}}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = runner.run(f, out=tmp_path / "few", quiet=True)
    res = json.loads(run.results_path.read_text())
    assert res["run"]["status"] == "ok"
    assert not [e for e in res["estimates"] if e["outcome"].startswith("inpatient_readmission")]
    assert any(e["scale"] == "hazard_ratio" for e in res["estimates"])      # the ER part still ran
    nb = (run.output_dir / "06_time_to_event.ipynb").read_text()
    assert "Time to readmission was not analysed" in nb
