"""Survival by arm on person-level data shaped like Spiegel et al. (Lancet 1989).

Published figures used here (as docs/published-figures.md gives them; copied here):
Spiegel et al., Lancet 1989: women with metastatic breast cancer randomized to weekly
support groups (n = 50) vs control (n = 36); mean survival 36.6 vs 18.9 months.
"""
import json
from pathlib import Path

import duckdb
import nbformat
import numpy as np
import pandas as pd
import pytest
from scipy import integrate

from evalkit import params as P, runner
from evalkit.data import synthetic_person as sp
from evalkit.data.load import load_report, scan_sql
from evalkit.data.person import load_person
from evalkit.errors import DataValidationError, ParamsError
from evalkit.survival import restricted_mean
from conftest import assert_structured_records

# Spiegel et al., Lancet 1989 (docs/published-figures.md: "Survival with a supportive-expressive group")
N_SUPPORT, N_CONTROL = 50, 36
MEAN_SUPPORT, MEAN_CONTROL = 36.6, 18.9

PARAMS_FILE = Path(__file__).resolve().parents[1] / "params" / "support_group_survival.yaml"


# ----------------------------------------------------------------------------- generator
def test_generator_is_seeded_and_deterministic():
    a = sp.support_group_survival(seed=7)
    b = sp.support_group_survival(seed=7)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert a.truth == b.truth
    c = sp.support_group_survival(seed=8)
    assert not np.allclose(a.frame["survival_months"], c.frame["survival_months"])
    # one stream per quantity: more loss to follow-up leaves the survival times alone
    d = sp.support_group_survival(seed=7, loss_rate=0.02)
    np.testing.assert_array_equal(a.latent["survival_time"], d.latent["survival_time"])
    assert d.frame["died"].sum() < a.frame["died"].sum()


def test_generator_sizes_columns_and_censoring():
    d = sp.support_group_survival(seed=1)
    f = d.frame
    assert list(f.columns) == ["patient_id", "arm", "survival_months", "died", "age",
                               "visceral_mets"]
    assert (f["arm"] == "support_group").sum() == N_SUPPORT
    assert (f["arm"] == "control").sum() == N_CONTROL
    assert f["patient_id"].is_unique
    # administrative end of follow-up at ten years; died = 1 exactly when death came first
    assert f["survival_months"].max() <= 120
    lat = d.latent
    died = lat["survival_time"] <= lat["censor_time"]
    np.testing.assert_array_equal(f["died"].to_numpy(), died.astype(int).to_numpy())
    np.testing.assert_allclose(f["survival_months"],
                               np.minimum(lat["survival_time"], lat["censor_time"]))


def test_population_truth_is_the_published_means():
    t = sp.support_group_survival().truth
    assert t["arms"]["support_group"]["mean_months"] == MEAN_SUPPORT
    assert t["arms"]["control"]["mean_months"] == MEAN_CONTROL
    assert t["options"]["n_treated"] == N_SUPPORT and t["options"]["n_control"] == N_CONTROL
    # the closed-form restricted mean agrees with numerical integration of the mixture
    # survival curve (an independent check of the incomplete-gamma formula)
    o = t["options"]
    k, p, r = o["weibull_shape"], o["mets_share"], o["mets_time_ratio"]
    from scipy.special import gamma
    for arm, mean in (("support_group", MEAN_SUPPORT), ("control", MEAN_CONTROL)):
        scales = [mean * x / (1 - p + p * r) / gamma(1 + 1 / k) for x in (1.0, r)]

        def surv(u):
            return (1 - p) * np.exp(-(u / scales[0]) ** k) + p * np.exp(-(u / scales[1]) ** k)
        num, _ = integrate.quad(surv, 0, 120, limit=200)
        assert t["arms"][arm]["restricted_mean_months"] == pytest.approx(num, rel=1e-9)
        full, _ = integrate.quad(surv, 0, np.inf, limit=200)
        assert full == pytest.approx(mean, rel=1e-7)          # the unrestricted mean
        assert surv(t["arms"][arm]["median_months"]) == pytest.approx(0.5, abs=1e-9)
        assert sp.true_restricted_mean(t, arm, 60.0) == pytest.approx(
            integrate.quad(surv, 0, 60)[0], rel=1e-9)
    assert t["hazard_ratio"] == pytest.approx((MEAN_CONTROL / MEAN_SUPPORT) ** k)


def test_means_hold_in_expectation_over_seeds():
    """The average of the sample means over 200 seeds is within 4 standard errors of the
    published means (SE from the generator's population SD: sd_factor * mean / sqrt(n * 200))."""
    t = sp.support_group_survival().truth
    reps = 200
    means = np.array([[d.latent["survival_time"][d.frame["arm"] == arm].mean()
                       for arm in ("support_group", "control")]
                      for d in (sp.support_group_survival(seed=s) for s in range(reps))])
    for j, (mean, n) in enumerate(((MEAN_SUPPORT, N_SUPPORT), (MEAN_CONTROL, N_CONTROL))):
        se = t["survival_sd_factor"] * mean / np.sqrt(n * reps)
        assert abs(means[:, j].mean() - mean) < 4 * se


# ----------------------------------------------------------------------------- RMST
def test_restricted_mean_hand_worked_example():
    """times 2, 3+, 4, 6+, 7 (+ = censored), tau = 6. KM: S = 1 on [0,2), 0.8 on [2,4),
    8/15 on [4,6]. RMST = 2 + 2(0.8) + 2(8/15) = 14/3. A(2) = 1.6 + 16/15 = 8/3,
    A(4) = 16/15; Var = (8/3)^2 * 1/(5*4) + (16/15)^2 * 1/(3*2) = 368/675."""
    df = pd.DataFrame({"t": [2, 3, 4, 6, 7], "e": [1, 0, 1, 0, 1]})
    r = restricted_mean(df, "t", "e", tau=6)
    row = r.table.iloc[0]
    assert row["estimate"] == pytest.approx(14 / 3, rel=1e-12)
    assert row["std_error"] == pytest.approx(np.sqrt(368 / 675), rel=1e-12)
    assert row["ci_low"] == pytest.approx(14 / 3 - 1.959963984540054 * np.sqrt(368 / 675))
    # the default horizon is the last follow-up (the curve ends with a death here)
    assert restricted_mean(df, "t", "e").tau == 7


def test_restricted_mean_without_censoring_is_the_sample_mean():
    rng = np.random.default_rng(3)
    x = rng.exponential(10, 40)
    df = pd.DataFrame({"t": x, "e": 1, "g": np.repeat(["a", "b"], 20)})
    r = restricted_mean(df, "t", "e", group="g")
    for g, row in r.table.set_index("group").iterrows():
        xs = x[df["g"] == g]
        assert row["estimate"] == pytest.approx(xs.mean(), rel=1e-12)
        assert row["std_error"] == pytest.approx(np.sqrt(((xs - xs.mean()) ** 2).sum()) / xs.size,
                                                 rel=1e-10)
    d = r.effect().table.iloc[0]
    assert d["contrast"] == "b vs a"
    assert d["estimate"] == pytest.approx(x[20:].mean() - x[:20].mean(), rel=1e-12)


def test_restricted_mean_refuses_a_horizon_past_censored_follow_up():
    df = pd.DataFrame({"t": [1, 2, 5, 3, 4], "e": [1, 1, 0, 1, 1], "g": list("aaabb")})
    assert restricted_mean(df, "t", "e", group="g").tau == 5   # b's curve reaches 0 at 4
    with pytest.raises(DataValidationError, match="beyond the last follow-up"):
        restricted_mean(df, "t", "e", group="g", tau=6)


# ----------------------------------------------------------------------------- params
SURV = {"mode": "person", "data": {"source": "synthetic", "scenario": "support_group_survival",
                                   "person": {"treatment": "arm", "treated_value": "support_group",
                                              "duration": "survival_months", "event": "died"}},
        "workbooks": ["survival"]}


def _with(**person):
    raw = json.loads(json.dumps(SURV))
    raw["data"]["person"].update(person)
    return raw


def test_person_params_for_survival():
    p = P.validate(SURV)
    assert p.data.person.path is None and p.data.person.duration == "survival_months"
    assert P.load(PARAMS_FILE).data.person.event == "died"
    with pytest.raises(ParamsError, match="duration` and `event` together"):
        P.validate(_with(event=None))
    with pytest.raises(ParamsError, match="two sources"):
        P.validate(_with(path="cohort.csv"))
    with pytest.raises(ParamsError, match="needs data.person.duration"):
        P.validate(_with(duration=None, event=None, outcomes=["visits"]))
    with pytest.raises(ParamsError, match="need data.person.outcomes"):
        P.validate({**SURV, "workbooks": ["utilization"]})
    with pytest.raises(ParamsError, match="data.members does not apply"):
        P.validate({**SURV, "data": {**SURV["data"], "members": 100}})
    with pytest.raises(ParamsError, match="person-level data: set mode: person"):
        P.validate({"data": {"scenario": "support_group_survival"}})
    # a file-based person study still needs its path
    with pytest.raises(ParamsError, match="needs data.person.path"):
        P.validate({**SURV, "data": {"person": SURV["data"]["person"]}})
    with pytest.raises(ParamsError, match="unknown option"):
        sp.generate("support_group_survival", 1, n_treatd=5)


def test_load_person_quarantines_bad_durations_and_events(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("id,arm,months,died,age\n1,1,12.5,1,50\n2,0,3,0,60\n3,1,-2,1,55\n"
                 "4,0,8,2,40\n5,1,,1,45\n")
    con = duckdb.connect()
    load_person(con, scan_sql(str(f)), "arm", 1, [], None, ["age"], "id",
                duration="months", event="died")
    rep = load_report(con)
    got = {r.reason: r.rows for r in rep.quarantine.itertuples()}
    assert got == {"negative_value": 1, "invalid_event": 1, "missing_value": 1}
    rows = con.execute('SELECT CAST(member_id AS VARCHAR), "group", months, died FROM persons '
                       'ORDER BY 1').fetchall()
    assert rows == [("1", "self_help", 12.5, 1.0), ("2", "control", 3.0, 0.0)]
    with pytest.raises(DataValidationError) as e:
        load_person(con, scan_sql(str(f)), "arm", 1, [], None, [], "id", duration="monthz",
                    event="died")
    assert {x["column"] for x in e.value.failures} == {"monthz"}


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The shipped params file, with only the survival workbook (data_quality, also in
    the file, is covered by the runner tests; leaving it out keeps this file fast), run
    as a public release: every output is scanned for small counts of people."""
    out = tmp_path_factory.mktemp("sgs") / "out"
    return runner.run(PARAMS_FILE, out=out, quiet=True,
                       overrides={"workbooks": ["survival"], "report.public": True})


def test_params_file_end_to_end(run):
    out = run.output_dir
    res = json.loads(run.results_path.read_text())
    assert res["run"]["status"] == "ok" and res["run"]["privacy"]["ok"]
    assert [w["workbook"] for w in res["run"]["workbooks"]] == ["survival"]
    assert_structured_records(res)
    for name in ("11_survival.ipynb", "11_survival.html", "results.json"):
        assert (out / name).is_file(), name
    done = nbformat.read(out / "11_survival.ipynb", as_version=4)
    assert not any(o.get("output_type") == "error" for c in done.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))
    # the exact sizes of the published study
    summary = {r["arm"]: r for r in res["tables"]["survival.summary"]}
    assert summary["support group"]["n"] == N_SUPPORT and summary["control"]["n"] == N_CONTROL
    est = [e for e in res["estimates"] if e["workbook"] == "survival"]
    hr = next(e for e in est if e["scale"] == "hazard_ratio" and e["estimand"] == "HR (unadjusted)")
    assert (hr["n_treated"], hr["n_control"]) == (N_SUPPORT, N_CONTROL)
    assert hr["estimate"] < 1 and hr["ci_low"] < hr["estimate"] < hr["ci_high"]
    assert hr["ci_high"] < 1            # a 2:1 difference in means is clear with 86 people
    assert hr["std_error"] > 0 and hr["p_value"] < 0.05
    diff = next(e for e in est if e["scale"] == "difference")
    assert diff["estimate"] > 0 and diff["ci_low"] < diff["estimate"] < diff["ci_high"]


def test_end_to_end_estimates_against_the_published_means(run):
    """The sample's restricted means sit near the published means. Tolerance: a sample of
    50 (36) people varies; the population SD of survival is sd_factor x mean, so the SE of
    an arm's mean is about sd_factor * mean / sqrt(n) (4.9 and 3.0 months); we allow 3 SEs.
    The population truth is checked exactly above; here each 95% interval of the
    restricted mean must also hold the population's restricted mean at the same horizon."""
    res = json.loads(run.results_path.read_text())
    truth = json.loads((run.output_dir / "work" / "synthetic_person" / "truth.json").read_text())
    rows = {r["arm"]: r for r in res["tables"]["survival.against_truth"]}
    for arm, mean, n in (("support group", MEAN_SUPPORT, N_SUPPORT),
                         ("control", MEAN_CONTROL, N_CONTROL)):
        r = rows[arm]
        assert r["true_mean"] == mean
        se = truth["survival_sd_factor"] * mean / np.sqrt(n)
        assert abs(r["estimated_restricted_mean"] - mean) < 3 * se
        assert r["rmst_ci_low"] < r["true_restricted_mean"] < r["rmst_ci_high"]
    # and the true hazard ratio lies in the adjusted model's interval (conditional HR)
    adj = next(e for e in res["estimates"] if e["workbook"] == "survival"
               and e["estimand"] == "conditional HR")
    assert adj["ci_low"] < truth["hazard_ratio"] < adj["ci_high"]


def test_published_tables_hide_small_counts(run):
    res = json.loads(run.results_path.read_text())
    for r in res["tables"]["survival.survival_at"]:
        assert "n_event" not in r
        if r["n_risk"] == "*":
            assert r["survival"] == "*"
        elif r["n_risk"] is not None:
            assert r["n_risk"] == 0 or r["n_risk"] >= 11
