"""Monthly series per arm and the interrupted time series fitted to them
(evalkit.analysis.time_series, Study.monthly_rates / interrupted_time_series, workbook 07)."""
import json

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats

from evalkit import params as P
from evalkit.analysis import time_series as ts
from evalkit.cohort import DAYS_PER_MONTH
from evalkit.errors import DataDroppedWarning, DataValidationError, ParamsError
from evalkit.models.its import its
from evalkit.results import write_json_atomic
from evalkit.analysis.study import Study
from evalkit.prepare import prepare
from conftest import assert_structured_records


def _study(tmp_path, **raw):
    p = P.validate(raw)
    prepare(p, tmp_path)
    write_json_atomic(tmp_path / "params.json", p.to_dict())
    return Study(tmp_path / "params.json")


@pytest.fixture(scope="module")
def demo_small(tmp_path_factory):
    """Staggered index dates over a year, late starts, early ends and gaps in coverage."""
    s = _study(tmp_path_factory.mktemp("demo"), seed=7, data={"scenario": "demo", "members": 600})
    yield s
    s.close()


def _month_of(day: pd.Series, index: pd.Series) -> np.ndarray:
    """Whole months from ``index`` to ``day``: k with index + k months <= day < index +
    (k + 1) months, month arithmetic clamping to the month's last day (31 Jan + 1 month
    = 28 Feb). Worked out from year/month/day numbers, not by adding intervals."""
    k0 = (day.dt.year - index.dt.year) * 12 + (day.dt.month - index.dt.month)
    anchor_day = np.minimum(index.dt.day, day.dt.days_in_month)   # index + k0 months, in day's month
    return (k0 - (day.dt.day < anchor_day).astype(int)).to_numpy()


def _monthly_pandas(study) -> pd.DataFrame:
    """The monthly ER series computed independently, one row per member x enrolled day."""
    cohort = study.sql("SELECT member_id, \"group\", index_date, bl_start, fu_end FROM cohort")
    enr = study.sql("SELECT member_id, start_date, end_date FROM enrollment")
    enc = study.sql("SELECT member_id, service_date FROM encounters WHERE category = 'er'")
    for f, cols in ((cohort, ["index_date", "bl_start", "fu_end"]),
                    (enr, ["start_date", "end_date"]), (enc, ["service_date"])):
        for c in cols:
            f[c] = pd.to_datetime(f[c])
    sp = enr.merge(cohort, on="member_id")
    lo = sp[["start_date", "bl_start"]].max(axis=1)
    hi = sp[["end_date"]].assign(w=sp["fu_end"] - pd.Timedelta(days=1)).min(axis=1)
    sp = sp.assign(lo=lo, hi=hi)[lo <= hi]
    n = ((sp["hi"] - sp["lo"]).dt.days + 1).to_numpy()
    rows = np.repeat(np.arange(len(sp)), n)
    offs = np.concatenate([np.arange(k) for k in n])
    days = pd.DataFrame({"member_id": sp["member_id"].to_numpy()[rows],
                         "group": sp["group"].to_numpy()[rows],
                         "index_date": sp["index_date"].to_numpy()[rows],
                         "day": sp["lo"].to_numpy()[rows] + offs.astype("timedelta64[D]")})
    days = days.drop_duplicates(["member_id", "day"])       # overlapping spells count once
    days["month"] = _month_of(days["day"], days["index_date"])
    expo = days.groupby(["group", "month"]).agg(members=("member_id", "nunique"),
                                                days=("day", "size"))
    v = enc.merge(cohort, on="member_id")
    v = v[(v["service_date"] >= v["bl_start"]) & (v["service_date"] < v["fu_end"])]
    v = v.drop_duplicates(["member_id", "service_date"])
    v["month"] = _month_of(v["service_date"], v["index_date"])
    visits = v.groupby(["group", "month"]).size().rename("er_visits")
    out = expo.join(visits, how="outer").fillna(0).reset_index()
    out["member_months"] = out["days"] / DAYS_PER_MONTH
    return out


def test_monthly_rates_match_independent_pandas(demo_small):
    sql = demo_small.monthly_rates()
    ref = _monthly_pandas(demo_small)
    assert demo_small.sql("SELECT count(DISTINCT index_date) AS n FROM cohort")["n"][0] > 50
    m = sql.merge(ref, on=["group", "month"], how="outer", suffixes=("", "_ref"),
                  indicator=True)
    assert (m["_merge"] == "both").all(), m[m["_merge"] != "both"]
    np.testing.assert_array_equal(m["members"], m["members_ref"].astype(int))
    np.testing.assert_array_equal(m["er_visits"], m["er_visits_ref"].astype(int))
    np.testing.assert_allclose(m["member_months"], m["member_months_ref"], rtol=1e-12)
    np.testing.assert_allclose(m["rate_per_1000_mm"],
                               1000 * m["er_visits_ref"] / m["member_months_ref"], rtol=1e-12)


def test_months_add_up_to_the_windows(demo_small):
    """Baseline months (< 0) and follow-up months (>= 0) add up to member_windows."""
    sql = demo_small.monthly_rates()
    mw = demo_small.member_windows()
    for period, side in (("baseline", sql["month"] < 0), ("followup", sql["month"] >= 0)):
        got = sql[side].groupby("group")[["er_visits", "member_months"]].sum()
        want = mw[mw["period"] == period].groupby("group")[["er_visits", "member_months"]].sum()
        np.testing.assert_array_equal(got["er_visits"], want.loc[got.index, "er_visits"])
        np.testing.assert_allclose(got["member_months"], want.loc[got.index, "member_months"],
                                   rtol=1e-12)


@pytest.fixture(scope="module")
def healthwise(tmp_path_factory):
    """The healthwise_er scenario at its default size (20,000 members), with the seed of
    params/healthwise_er.yaml."""
    s = _study(tmp_path_factory.mktemp("hw"), seed=19930301,
               data={"scenario": "healthwise_er", "members": 20000})
    yield s
    s.close()


def test_its_recovers_the_true_er_ratio(healthwise):
    truth = healthwise.true_effects(["er_visits"])["er_visits"]      # 0.82 (docs/published-figures.md: -18%)
    assert truth == pytest.approx(0.82)
    res = healthwise.interrupted_time_series("er")
    assert res.seasonal                         # one distribution date: calendar season fitted
    assert res.horizon == 11                    # the 12th month of a 365-day follow-up
    h = ts.headline(res)
    assert h["design"] == "controlled"
    assert h["ci_low"] < truth < h["ci_high"], h
    assert h["estimate"] < 1 and h["ci_high"] - h["ci_low"] < 0.5
    e = res.effects
    assert set(e["design"]) == {"controlled", "single"}
    assert set(e["scale"]) == {"rate_ratio", "ratio"}
    assert (e["outcome"] == "er_visits").all()
    assert e["method"].str.startswith("interrupted time series").all()
    assert (e["ci_low"] < e["estimate"]).all() and (e["estimate"] < e["ci_high"]).all()
    # both series, 24 months each, no small cells
    assert len(res.series) == 48 and res.left_out.empty
    assert len(ts.findings(res)) == 2 and "%" in ts.findings(res)[0]


def test_linear_fit_reports_rate_differences(healthwise):
    """The classic segmented linear regression of the rate: level and slope changes in
    visits per 1,000 member-months; the level change is about -18% of the pre-intervention
    January rate of the intervention community (truth: ratio 0.82)."""
    monthly = healthwise.monthly_rates()
    res = ts.fit_its(monthly, family="gaussian", seasonal=True)
    e = res.effects.set_index(["design", "scale"])
    lvl = e.loc[("controlled", "rate_difference_per_1000_mm")].iloc[0]
    assert lvl["quantity"].startswith("difference in level change")
    assert lvl["ci_low"] < lvl["estimate"] < lvl["ci_high"] < 0
    jan = monthly[(monthly["group"] == "self_help") & (monthly["month"] == 0)]
    assert -0.5 < lvl["estimate"] / jan["rate_per_1000_mm"].iloc[0] < 0
    ratio = res.effects[(res.effects["design"] == "controlled")
                        & res.effects["quantity"].str.startswith("ratio")].iloc[0]
    # log-scale SE: the interval is exp(log(ratio) +/- t * se) (t with n - k df)
    q = stats.t.ppf(0.975, res.controlled.extra["df_residual"])
    assert np.log(ratio["ci_high"] / ratio["ci_low"]) / 2 == pytest.approx(
        q * ratio["std_error"], rel=1e-9)


def test_too_few_months_is_a_clear_error(healthwise):
    monthly = healthwise.monthly_rates()
    with pytest.raises(DataValidationError, match=r"3 month\(s\) before the index date.*at "
                                                  r"least 6 on each side"):
        ts.fit_its(monthly[monthly["month"] >= -3])
    with pytest.raises(DataValidationError, match="at least 6 on each side"):
        ts.fit_its(monthly[monthly["month"] < 4])
    with pytest.raises(DataValidationError, match="lacks column"):
        ts.fit_its(monthly.drop(columns="members"))
    with pytest.raises(DataValidationError, match="no intervention"):
        ts.fit_its(monthly[monthly["group"] == "control"])


def test_small_months_are_left_out_with_a_warning(healthwise):
    monthly = healthwise.monthly_rates()
    small = monthly.copy()
    small.loc[(small["group"] == "control") & (small["month"] == -12), "members"] = 10
    with pytest.warns(DataDroppedWarning, match=r"fewer than 11 members \(months \[-12\]\)"):
        res = ts.fit_its(small, seasonal=True)
    assert len(res.series) == 47
    assert res.left_out.to_dict("records") == [
        {"group": "control", "month": -12, "reason": "fewer than 11 members"}]


def test_dummy_seasons_cannot_fit_one_year_each_side_but_harmonics_can(healthwise):
    """With 12 months before and after a January intervention the trend equals
    month-of-year plus 12 x level change, so month dummies alias it; sine/cosine terms do
    not. The harmonic fit equals a statsmodels formula GLM with the same terms."""
    m = healthwise.monthly_rates()
    one = m[m["group"] == "self_help"].reset_index(drop=True)
    with pytest.raises(DataValidationError, match="time"):
        its(one, "er_visits", "month", 0, exposure="member_months", family="poisson",
            seasonal=True)
    with pytest.raises(ParamsError, match="harmonics"):
        its(one, "er_visits", "month", 0, exposure="member_months", family="poisson",
            seasonal=True, harmonics=6)
    res = its(one, "er_visits", "month", 0, exposure="member_months", family="poisson",
              seasonal=True, harmonics=1)
    d = one.assign(t=one["month"] + 12, post=(one["month"] >= 0).astype(float))
    d = d.assign(after=d["month"] * d["post"], s=np.sin(2 * np.pi * (d["month"] % 12) / 12),
                 c=np.cos(2 * np.pi * (d["month"] % 12) / 12))
    ref = sm.GLM.from_formula("er_visits ~ t + post + after + s + c", d,
                              family=sm.families.Poisson(),
                              offset=np.log(d["member_months"])).fit()
    np.testing.assert_allclose(res.table["estimate"].to_numpy(), ref.params.to_numpy(),
                               rtol=1e-7, atol=1e-9)


def test_workbook_runs_end_to_end(shared_runs):
    """params/healthwise_er.yaml on 3,000 members (the session's run of it, every
    workbook: tests/shared_runs.py)."""
    run = shared_runs.params_file("healthwise_er")
    res = json.loads(run.results_path.read_text())
    assert res["run"]["status"] == "ok"
    est = [e for e in res["estimates"] if e["workbook"] == "time_series"]
    assert {e["design"] for e in est} == {"controlled", "single"}
    assert all(e["outcome"] == "er_visits" for e in est)
    assert all(e["analysis"] == "its" for e in est)
    assert_structured_records(res)
    ratio = [e for e in est if e["scale"] == "ratio" and e["quantity"].startswith("ratio")]
    assert len(ratio) == 2 and all(0 < e["ci_low"] < e["estimate"] < e["ci_high"] for e in ratio)
    series = res["tables"]["time_series.monthly_rates"]
    assert len(series) == 48 and min(r["members"] for r in series) >= 11
    assert (run.output_dir / "07_time_series.html").is_file()
