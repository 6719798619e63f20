"""Tests of the seeded synthetic health plan (evalkit.data.synthetic).

The calibration targets come from the literature, not from evalkit: the Humphreys &
Moos (2001) one-year follow-up means per patient (outpatient continuing-care visits
13.1 vs 22.5, inpatient days 10.5 vs 17.0, annual cost about $2,883 vs $4,729; 887
patients per arm, 5 programs per arm) and the Healthwise handbook's 18% fall in
emergency-room use. Sample statistics are computed here with pandas/pyarrow straight
from the Parquet files and compared with those targets within 3 standard errors.
"""
from __future__ import annotations

import hashlib
import json
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import evalkit.data.synthetic as syn
from evalkit.data.contract import ARMS, CATEGORIES, CLAIMS_TABLES
from evalkit.data.synthetic import (SCENARIOS, Scenario, SyntheticPlan, expected_lines, generate,
                                    lines_scale_for, scenario)
from evalkit.errors import ParamsError

TABLES = ("members", "enrollment", "encounters", "exposure")
DAY = pd.Timedelta(days=1)


def read(plan: SyntheticPlan, table: str, **kw) -> pd.DataFrame:
    """A table as pandas with dates as datetime64 (not Python objects)."""
    return pq.read_table(plan.paths[table], **kw).to_pandas(date_as_object=False)


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> SyntheticPlan:
    return generate(tmp_path_factory.mktemp("demo"), members=4000)


@pytest.fixture(scope="module")
def hm(tmp_path_factory) -> SyntheticPlan:
    return generate(tmp_path_factory.mktemp("hm"), scenario="humphreys_moos")


@pytest.fixture(scope="module")
def hw(tmp_path_factory) -> SyntheticPlan:
    return generate(tmp_path_factory.mktemp("hw"), scenario="healthwise_er")


def follow_up_outcomes(plan: SyntheticPlan, lo: int = 0, hi: int = 365) -> pd.DataFrame:
    """Per member: distinct outpatient MH / ER visit days, inpatient nights and allowed
    cost with date of service in [index + lo, index + hi)."""
    x = read(plan, "exposure")
    e = read(plan, "encounters").merge(x[["member_id", "index_date"]], on="member_id")
    rel = (e["service_date"] - e["index_date"]).dt.days
    e = e[(rel >= lo) & (rel < hi)]
    visits = (e[e["category"].isin(["outpatient_mh", "er"])]
              .drop_duplicates(["member_id", "category", "service_date"])
              .pivot_table(index="member_id", columns="category", values="service_date",
                           aggfunc="count"))
    stays = e[e["category"] == "inpatient"].drop_duplicates(["member_id", "service_date"])
    nights = ((stays["end_date"] - stays["service_date"]).dt.days
              .groupby(stays["member_id"]).sum())
    out = x.set_index("member_id")[["group"]].copy()
    out["mh"] = visits.get("outpatient_mh", pd.Series(dtype=float)).reindex(out.index).fillna(0)
    out["er"] = visits.get("er", pd.Series(dtype=float)).reindex(out.index).fillna(0)
    out["ip_days"] = nights.reindex(out.index).fillna(0)
    out["cost"] = e.groupby("member_id")["allowed_amount"].sum().reindex(out.index).fillna(0)
    return out


# ----------------------------------------------------------------------------- schema
EXPECTED_SCHEMA = {
    "members": [("member_id", pa.string()), ("birth_year", pa.int32()), ("sex", pa.string()),
                ("comorbidity", pa.int32())],
    "enrollment": [("member_id", pa.string()), ("start_date", pa.date32()),
                   ("end_date", pa.date32())],
    "encounters": [("claim_id", pa.int64()), ("member_id", pa.string()),
                   ("service_date", pa.date32()), ("end_date", pa.date32()),
                   ("category", pa.string()), ("allowed_amount", pa.float64()),
                   ("paid_amount", pa.float64()), ("condition", pa.string())],
    "exposure": [("member_id", pa.string()), ("group", pa.string()),
                 ("index_date", pa.date32()), ("dose", pa.float64())],
}


@pytest.mark.parametrize("name,extra", [
    ("demo", []),
    ("humphreys_moos", [("program", pa.string())]),
    ("healthwise_er", [("community", pa.string())]),
])
def test_schema_exact(name, extra, request):
    plan = request.getfixturevalue({"demo": "demo", "humphreys_moos": "hm",
                                    "healthwise_er": "hw"}[name])
    for t in TABLES:
        schema = pq.read_schema(plan.paths[t])
        want = EXPECTED_SCHEMA[t] + (extra if t == "members" else [])
        assert [(f.name, f.type) for f in schema] == want, t
        assert set(CLAIMS_TABLES[t].required) <= set(schema.names)
        assert pq.ParquetFile(plan.paths[t]).metadata.num_rows == plan.rows[t]


def test_values_follow_the_contract(demo):
    m, s, e, x = (read(demo, t) for t in TABLES)
    assert m["member_id"].is_unique and len(m) == 4000
    assert set(m["sex"]) == {"F", "M"}
    assert m["comorbidity"].between(0, 12).all()
    assert m["birth_year"].between(1930, 2010).all()
    assert set(e["category"]) == set(CATEGORIES)
    assert e["claim_id"].is_unique
    assert (e["claim_id"].to_numpy() == np.arange(1, len(e) + 1)).all()
    # members are M and nine digits: M000000001 ... M000004000
    assert m["member_id"].tolist() == [syn.member_id(k) for k in range(1, 4001)]
    # sorted by member, then date of service
    number = e["member_id"].str[1:].astype(np.int64).to_numpy()
    key = number * 100_000 + (e["service_date"] - pd.Timestamp(0)).dt.days
    assert (np.diff(key.to_numpy()) >= 0).all()
    assert (e["allowed_amount"] > 0).all()
    assert np.allclose(e["allowed_amount"] * 100, np.rint(e["allowed_amount"] * 100))
    assert ((e["paid_amount"] >= 0) & (e["paid_amount"] <= e["allowed_amount"])).all()
    inpatient = e["category"] == "inpatient"
    assert e.loc[inpatient, "end_date"].notna().all()
    assert e.loc[~inpatient, "end_date"].isna().all()
    assert (e.loc[inpatient, "end_date"] > e.loc[inpatient, "service_date"]).all()
    assert set(e["member_id"]) <= set(m["member_id"])
    assert x["member_id"].is_unique and set(x["member_id"]) == set(m["member_id"])
    assert set(x["group"]) == set(ARMS)
    assert (x.loc[x["group"] == "control", "dose"] == 0).all()
    assert (x.loc[x["group"] == "self_help", "dose"] >= 0).all()
    assert x.loc[x["group"] == "self_help", "dose"].mean() > 5
    # several claim lines per visit, as in real claims extracts
    assert len(e) > len(e.drop_duplicates(["member_id", "category", "service_date"]))


def test_truth_json_matches_plan(demo):
    truth = json.loads(demo.paths["truth"].read_text())
    assert truth == demo.truth
    assert truth["seed"] == 20240611 and truth["scenario"] == "demo"
    assert truth["members"] == 4000 and truth["rows"] == demo.rows
    assert truth["effects"]["er"] == 0.85 and truth["effects"]["cost"] == 0.85
    assert 0 < truth["effects"]["other_categories"] < 1
    assert truth["params"]["data_start"] == "2021-01-01"
    # nothing half-written is left behind
    assert sorted(p.name for p in demo.out_dir.iterdir()) == sorted(
        [f"{t}.parquet" for t in TABLES] + ["truth.json"])


# ----------------------------------------------------------------------------- enrollment
def test_every_encounter_inside_one_enrollment_spell(demo):
    s, e, x = read(demo, "enrollment"), read(demo, "encounters"), read(demo, "exposure")
    e = e.assign(last=e["end_date"].fillna(e["service_date"]), row=np.arange(len(e)))
    j = e.merge(s, on="member_id", suffixes=("", "_spell"))
    inside = (j["service_date"] >= j["start_date"]) & (j["last"] <= j["end_date_spell"])
    assert inside.groupby(j["row"]).any().reindex(e["row"]).fillna(False).all()
    # inpatient stays neither overlap nor cross the index date
    stays = e[e["category"] == "inpatient"].drop_duplicates(["member_id", "service_date"])
    stays = stays.sort_values(["member_id", "service_date"])
    prev_end = stays.groupby("member_id")["end_date"].shift()
    assert not (prev_end > stays["service_date"]).any()
    stays = stays.merge(x, on="member_id")
    crosses = ((stays["service_date"] < stays["index_date"])
               & (stays["end_date"] > stays["index_date"]))
    assert not crosses.any()
    # at most one visit per member, category and day: lines of a visit share all of these
    per_visit = e.groupby(["member_id", "category", "service_date"])["end_date"].nunique()
    assert (per_visit <= 1).all()


def test_enrollment_gaps_partial_coverage_and_windows(demo):
    s, x = read(demo, "enrollment"), read(demo, "exposure")
    sc = SCENARIOS["demo"]
    n_spells = s.groupby("member_id").size()
    assert set(n_spells) == {1, 2}
    assert 0.03 < (n_spells == 2).mean() < 0.15
    first = s.groupby("member_id")["start_date"].min()
    last = s.groupby("member_id")["end_date"].max()
    assert (first > pd.Timestamp(sc.data_start)).mean() > 0.05          # late starts
    assert (last < pd.Timestamp(sc.data_end)).mean() > 0.05             # early ends
    assert (first >= pd.Timestamp(sc.data_start)).all()
    assert (last <= pd.Timestamp(sc.data_end)).all()
    # spells are whole months, ordered, separated by a gap, and cover the index date
    assert (s["start_date"].dt.day == 1).all()
    assert ((s["end_date"] + DAY).dt.day == 1).all()
    two = s[s["member_id"].isin(n_spells.index[n_spells == 2])]
    two = two.sort_values(["member_id", "start_date"])
    gap_days = (two.groupby("member_id")["start_date"].last()
                - two.groupby("member_id")["end_date"].first()).dt.days
    assert (gap_days > 1).all()
    j = s.merge(x, on="member_id")
    covered = (j["start_date"] <= j["index_date"]) & (j["index_date"] <= j["end_date"])
    assert covered.groupby(j["member_id"]).any().all()
    # the data period holds the baseline and follow-up windows of every member
    assert (x["index_date"] - 365 * DAY >= pd.Timestamp(sc.data_start)).all()
    assert (x["index_date"] + 364 * DAY <= pd.Timestamp(sc.data_end)).all()


# ----------------------------------------------------------------------------- determinism
def test_byte_identical_whatever_the_chunk_size(tmp_path, monkeypatch):
    # small row groups, so that chunks straddle row-group boundaries
    monkeypatch.setattr(syn, "ROW_GROUP_ROWS", 10_000)
    digests = []
    for chunk in (1000, 2500, 50_000):
        plan = generate(tmp_path / str(chunk), members=2600, chunk_members=chunk, seed=11)
        digests.append({t: digest(plan.paths[t]) for t in [*TABLES, "truth"]})
    assert digests[0] == digests[1] == digests[2]
    assert pq.ParquetFile(tmp_path / "1000" / "encounters.parquet").metadata.num_row_groups > 5
    other = generate(tmp_path / "other", members=2600, seed=12)
    assert digest(other.paths["encounters"]) != digests[0]["encounters"]


def test_member_ids_are_member_id_of_each_number():
    # the reference is member_id(), one number at a time; numbers beyond the id width
    # (and negative ones) take the general path and are written as Arrow pads them
    numbers = np.array([1, 9, 10, 123, 999_999_999, 0, 40_000_000])
    assert syn.member_ids(numbers).to_pylist() == [syn.member_id(x) for x in numbers]
    assert syn.member_ids(np.zeros(0, np.int64)).to_pylist() == []
    assert syn.member_ids(np.array([10 ** 9, 5])).to_pylist() == ["M1000000000", "M000000005"]


def test_first_members_do_not_depend_on_the_total(tmp_path):
    small = generate(tmp_path / "small", members=1500, seed=3)
    large = generate(tmp_path / "large", members=2300, seed=3)
    for t in ("members", "exposure", "enrollment"):
        a, b = read(small, t), read(large, t)
        pd.testing.assert_frame_equal(a, b[b["member_id"] <= syn.member_id(1500)].reset_index(drop=True))
    a, b = read(small, "encounters"), read(large, "encounters")
    pd.testing.assert_frame_equal(a, b[b["member_id"] <= syn.member_id(1500)].reset_index(drop=True))


def test_failed_run_leaves_no_files(tmp_path, monkeypatch):
    real = syn._simulate_block

    def failing(cfg, block, keep):
        if block == 2:
            raise RuntimeError("disk full")
        return real(cfg, block, keep)

    monkeypatch.setattr(syn, "_simulate_block", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        generate(tmp_path, members=3000, chunk_members=1000)
    assert list(tmp_path.iterdir()) == []


def test_progress_bar_and_chunks_smaller_than_a_block(tmp_path, capsys):
    plan = generate(tmp_path, members=1200, chunk_members=10, progress=True)
    assert plan.rows["members"] == 1200
    assert "synthetic demo" in capsys.readouterr().err


# ----------------------------------------------------------------------------- scenarios
def test_scenario_overrides_copy_and_merge():
    s = scenario("demo", lines_scale=0.5, effects={"er": 0.9}, data_start="2020-12-01",
                 base_rates={"pharmacy": 3}, members=100)
    assert isinstance(s, Scenario)
    assert s.lines_scale == 0.5 and s.members == 100
    assert s.effects == {**SCENARIOS["demo"].effects, "er": 0.9}
    assert s.base_rates["pharmacy"] == 3.0
    assert s.base_rates["er"] == SCENARIOS["demo"].base_rates["er"]
    assert s.data_start == date(2020, 12, 1)
    # the built-in scenario is untouched
    assert SCENARIOS["demo"].effects["er"] == 0.85 and SCENARIOS["demo"].lines_scale == 1.0
    assert scenario(s, trend=0.0).lines_scale == 0.5
    assert set(SCENARIOS) == {"demo", "humphreys_moos", "healthwise_er"}


@pytest.mark.parametrize("overrides,match", [
    ({"lines_scal": 2.0}, r"'lines_scal'.*allowed: name, description, design"),
    ({"effects": {"ER": 0.8}}, r"'ER' in override effects; allowed: er, outpatient_mh"),
    ({"base_rates": {"dental": 1.0}}, r"'dental' in override base_rates"),
    ({"lines_scale": "big"}, r"lines_scale must be a number"),
    ({"members": 2.5}, r"members must be an integer"),
    ({"data_start": "January"}, r"data_start must be a date"),
    ({"lines_scale": -1.0}, r"lines_scale must be a positive number"),
    ({"p_gap": 1.5}, r"p_gap must be a probability"),
    ({"effects": {"er": 0.0}}, r"effects\['er'\] must be a positive rate ratio"),
    ({"index_start": "2021-03-01"}, r"index_start must be at least 365 days after data_start"),
    ({"design": "trial"}, r"design must be one of"),
    ({"effects": {"cost": 0.05}}, r"effects\['cost'\] = 0.05 is not reachable"),
])
def test_bad_overrides_raise_params_error(overrides, match):
    with pytest.raises(ParamsError, match=match):
        scenario("demo", **overrides)


def test_bad_arguments_of_generate(tmp_path):
    with pytest.raises(ParamsError, match="unknown synthetic scenario 'nope'; choose one of demo"):
        generate(tmp_path, scenario="nope")
    with pytest.raises(ParamsError, match="members must be a positive integer"):
        generate(tmp_path, members=0)
    with pytest.raises(ParamsError, match="chunk_members"):
        generate(tmp_path, members=10, chunk_members=0)
    with pytest.raises(ParamsError, match="'colour'"):
        generate(tmp_path, members=10, colour="red")
    assert list(tmp_path.iterdir()) == []


def test_cost_effect_none_records_the_implied_ratio(tmp_path):
    plan = generate(tmp_path, members=300, effects={"cost": None})
    eff = plan.truth["effects"]
    assert eff["other_categories"] == 1.0
    assert 0.7 < eff["cost"] < 1.0 and plan.truth["params"]["effects"]["cost"] is None


def test_lines_scale_sizes_the_encounters_table(tmp_path):
    full = generate(tmp_path / "a", members=2000)
    half = generate(tmp_path / "b", members=2000, lines_scale=0.5)
    ratio = half.rows["encounters"] / full.rows["encounters"]
    assert 0.45 < ratio < 0.55
    assert half.rows["members"] == full.rows["members"] == 2000
    # about 50 lines per member in the demo at lines_scale=1
    assert 45 < full.rows["encounters"] / 2000 < 56
    assert expected_lines(2000) == pytest.approx(full.rows["encounters"], rel=0.03)
    assert lines_scale_for(10_000_000, 1_000_000) == pytest.approx(0.2, rel=0.05)


# ----------------------------------------------------------------------------- realism
def test_demo_is_confounded_against_self_help(demo):
    x = read(demo, "exposure")
    share = (x["group"] == "self_help").mean()
    assert 0.25 <= share <= 0.35
    m = read(demo, "members").merge(x, on="member_id")
    assert m.groupby("group")["comorbidity"].mean()["self_help"] > \
        m.groupby("group")["comorbidity"].mean()["control"] + 0.2
    base = follow_up_outcomes(demo, -365, 0).groupby("group").mean()
    for col in ("er", "mh", "cost"):
        assert base.loc["self_help", col] > 1.2 * base.loc["control", col], col
    # crude follow-up comparison is biased against self-help: above the true ratio
    fu = follow_up_outcomes(demo).groupby("group").mean()
    crude = fu.loc["self_help", "cost"] / fu.loc["control", "cost"]
    assert crude > demo.truth["effects"]["cost"] + 0.2
    # overdispersed, zero-heavy counts
    er = follow_up_outcomes(demo)["er"]
    assert er.var() > 1.3 * er.mean() and (er == 0).mean() > 0.7


def test_demo_seasonality_er_peaks_in_winter(demo):
    e = read(demo, "encounters", filters=[("category", "==", "er")])
    v = e.drop_duplicates(["member_id", "service_date"])["service_date"].dt.month
    winter, summer = v.isin([12, 1, 2]).sum(), v.isin([6, 7, 8]).sum()
    assert winter > 1.2 * summer


def test_inpatient_cost_scales_with_length_of_stay(demo):
    e = read(demo, "encounters", filters=[("category", "==", "inpatient")])
    stays = e.groupby(["member_id", "service_date"]).agg(
        end=("end_date", "max"), cost=("allowed_amount", "sum")).reset_index()
    los = (stays["end"] - stays["service_date"]).dt.days
    assert np.corrcoef(los, np.log(stays["cost"]))[0, 1] > 0.4
    assert stays["cost"].median() > 5000
    other = read(demo, "encounters", filters=[("category", "==", "pharmacy")])["allowed_amount"]
    assert other.mean() > 1.3 * other.median()       # long right tail


def test_humphreys_moos_reproduces_published_follow_up_means(hm):
    """Follow-up means per patient (1 year from the index date) against Humphreys & Moos
    (2001): 12-step (self_help) 13.1 outpatient visits, 10.5 inpatient days, $2,883;
    cognitive-behavioral (control) 22.5, 17.0, $4,729. Each sample mean (887 per arm)
    must be within 3 standard errors of its target."""
    x, m = read(hm, "exposure"), read(hm, "members")
    assert x["group"].value_counts().to_dict() == {"self_help": 887, "control": 887}
    assert (m["sex"] == "M").all()
    progs = m.merge(x, on="member_id").groupby("group")["program"].nunique()
    assert progs.to_dict() == {"control": 5, "self_help": 5}
    s = read(hm, "enrollment")
    assert len(s) == 1774          # one full spell each: full baseline and follow-up
    targets = {"self_help": {"mh": 13.1, "ip_days": 10.5, "cost": 2883.0},
               "control": {"mh": 22.5, "ip_days": 17.0, "cost": 4729.0}}
    fu = follow_up_outcomes(hm)
    for arm, want in targets.items():
        d = fu[fu["group"] == arm]
        for col, target in want.items():
            se = d[col].std() / np.sqrt(len(d))
            assert abs(d[col].mean() - target) < 3 * se, (arm, col, d[col].mean(), se)
    # matched on pre-intake cost: baseline cost similar by arm
    base = follow_up_outcomes(hm, -365, 0)
    a, b = (base.loc[base["group"] == g, "cost"] for g in ("self_help", "control"))
    assert abs(a.mean() - b.mean()) < 3 * np.sqrt(a.var() / len(a) + b.var() / len(b))
    assert hm.truth["expected_annual_per_member"]["self_help"]["total_cost"] == pytest.approx(2883)


def test_healthwise_er_drop_in_raw_monthly_rates(hw):
    """ER use in the intervention community falls 18% after the handbook date (rate ratio
    0.82, the Healthwise community comparison); the difference-in-differences of raw
    monthly ER rates (24 months before, 12 after) is within 3 SE of 0.82."""
    m, x, s = read(hw, "members"), read(hw, "exposure"), read(hw, "enrollment")
    assert x["index_date"].nunique() == 1
    index = x["index_date"].iloc[0]
    community = m.set_index("member_id")["community"]
    assert community.value_counts().to_dict() == {"intervention": 10_000, "comparison": 10_000}
    assert (x.set_index("member_id")["group"].map({"self_help": "intervention",
                                                   "control": "comparison"})
            == community.reindex(x["member_id"]).to_numpy()).all()
    months = pd.period_range(hw.truth["params"]["data_start"], hw.truth["params"]["data_end"],
                             freq="M")
    before = months < index.to_period("M")
    assert before.sum() >= 24 and (~before).sum() >= 12

    # member-months per community and calendar month (spells are whole months)
    def month_no(d):
        return (d.dt.year * 12 + d.dt.month - 1).to_numpy()

    first, last = month_no(s["start_date"]), month_no(s["end_date"])
    n_months = last - first + 1
    within = np.arange(n_months.sum()) - np.repeat(np.cumsum(n_months) - n_months, n_months)
    spell_months = pd.DataFrame({
        "community": np.repeat(community.reindex(s["member_id"]).to_numpy(), n_months),
        "month": np.repeat(first, n_months) + within})
    mm = spell_months.groupby(["community", "month"]).size()
    e = read(hw, "encounters", filters=[("category", "==", "er")],
             columns=["member_id", "service_date"]).drop_duplicates()
    e["community"] = community.reindex(e["member_id"]).to_numpy()
    e["month"] = month_no(e["service_date"])
    visits = e.groupby(["community", "month"]).size().reindex(mm.index, fill_value=0)
    rate = (visits / mm).unstack("month")                    # ER visits per member-month
    assert rate.shape == (2, len(months))
    pre = rate.columns < index.year * 12 + index.month - 1
    post_pre = rate.loc[:, ~pre].mean(axis=1) / rate.loc[:, pre].mean(axis=1)
    did = post_pre["intervention"] / post_pre["comparison"]

    # SE of log DiD from member-level linearisation of the pooled pre/post rate ratios
    rel = (e["service_date"] >= index).map({True: "post", False: "pre"})
    y = e.groupby(["member_id", rel]).size().unstack(fill_value=0).reindex(community.index,
                                                                           fill_value=0)
    sd, ed = s["start_date"], s["end_date"] + DAY
    t_pre = (np.minimum(ed, index) - sd).dt.days.clip(lower=0)
    t_post = (ed - np.maximum(sd, index)).dt.days.clip(lower=0)
    t = pd.DataFrame({"pre": t_pre.groupby(s["member_id"]).sum(),
                      "post": t_post.groupby(s["member_id"]).sum()}).reindex(community.index)
    var = 0.0
    for c in ("intervention", "comparison"):
        yi, ti = y[community == c], t[community == c]
        u = (yi["post"] / yi["post"].sum() - ti["post"] / ti["post"].sum()
             - yi["pre"] / yi["pre"].sum() + ti["pre"] / ti["pre"].sum())
        var += len(u) / (len(u) - 1) * (u ** 2).sum()
    se = np.sqrt(var)
    assert 0.02 < se < 0.08
    assert abs(np.log(did) - np.log(0.82)) < 3 * se, (did, se)
    assert hw.truth["effects"]["er"] == 0.82
    # shared seasonality: both communities peak in winter
    winter = rate.loc[:, [m_ % 12 in (11, 0, 1) for m_ in rate.columns]].mean(axis=1)
    summer = rate.loc[:, [m_ % 12 in (5, 6, 7) for m_ in rate.columns]].mean(axis=1)
    assert (winter > 1.2 * summer).all()
