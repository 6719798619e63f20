"""Negative controls: the synthetic plan's untouched conditions, counting them from claims,
and calibrating a confounded design's estimates with the empirical null they give."""
import json
import math
import warnings

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from matplotlib.colors import to_hex

from evalkit.analysis import design as D
from evalkit.causal import Null
from evalkit.data.synthetic import generate, scenario
from evalkit.errors import DataValidationError, ParamsError
from evalkit.analysis.study import Study
from evalkit.style import FAIL_COLOR, PASS_COLOR, RATIO_TICKS


# --------------------------------------------------------------------- the generator
def test_labels_change_nothing_else(tmp_path):
    a = generate(tmp_path / "with", members=1200, seed=5)
    b = generate(tmp_path / "without", members=1200, seed=5, negative_controls={})
    for t in ("members", "enrollment", "exposure"):
        assert pq.read_table(a.paths[t]).equals(pq.read_table(b.paths[t])), t
    ea, eb = pq.read_table(a.paths["encounters"]), pq.read_table(b.paths["encounters"])
    assert ea.drop(["condition"]).equals(eb.drop(["condition"]))
    assert eb["condition"].null_count == eb.num_rows
    cond = ea.to_pandas()
    labelled = cond.dropna(subset=["condition"])
    spec = a.truth["negative_controls"]
    assert set(labelled["condition"]) == set(spec)
    assert all(v["effect"] == 1.0 for v in spec.values())
    # every line of a labelled visit carries the code, and each code stays in its category
    assert (labelled.groupby("condition")["category"].nunique() == 1).all()
    for code, s in spec.items():
        assert set(labelled.loc[labelled["condition"] == code, "category"]) == {s["category"]}
    visit = cond.groupby(["member_id", "category", "service_date"])["condition"].nunique(dropna=False)
    assert visit.max() == 1


def test_negative_control_visits_have_no_effect(tmp_path):
    """No confounding, nearly no frailty, and a strong effect on the other categories
    (rate ratio 0.5): the conditions' visits still have rate ratio 1, while the rest of
    their category falls to (0.5 - P) / (1 - P), P the category's summed shares."""
    sc = scenario("demo", confounding=0.0, frailty_shape=50.0, category_shape=0.0,
                  effects={"cost": 0.6154}, lines_scale=2.0)
    plan = generate(tmp_path / "plan", scenario=sc, members=5000, seed=11)
    ratio = plan.truth["effects"]["other_categories"]
    assert ratio == pytest.approx(0.5, abs=0.01)
    enc = pq.read_table(plan.paths["encounters"], columns=[
        "member_id", "service_date", "category", "condition"]).to_pandas()
    x = pq.read_table(plan.paths["exposure"]).to_pandas()
    e = enc.merge(x[["member_id", "group", "index_date"]], on="member_id")
    days = (pd.to_datetime(e["service_date"]) - pd.to_datetime(e["index_date"])).dt.days
    e = e.assign(window=np.where(days >= 0, "followup", "baseline"))
    e = e[(days >= -365) & (days < 365)].drop_duplicates(["member_id", "category", "service_date"])
    fu = e[e["window"] == "followup"]

    def rr(rows):
        """Follow-up rate ratio over the baseline one (the same members before the index
        date, when no one is affected): chance differences between the arms cancel."""
        n = rows.groupby(["window", "group"]).size()
        return (n["followup", "self_help"] / n["followup", "control"]) / \
            (n["baseline", "self_help"] / n["baseline", "control"])

    nc = e[e["condition"].notna()]
    assert abs(math.log(rr(nc))) < 0.05                      # true ratio 1
    assert len(nc[nc["window"] == "followup"]) > 10_000
    pc = e[e["category"] == "primary_care"]
    shares = sum(s["share"] for s in plan.truth["negative_controls"].values()
                 if s["category"] == "primary_care")
    assert rr(pc) == pytest.approx(ratio, rel=0.06)          # the category as a whole
    rest = pc[pc["condition"].isna()]
    assert rr(rest) == pytest.approx((ratio - shares) / (1 - shares), rel=0.06)


@pytest.mark.parametrize("nc,fragment", [
    ({"x": {"category": "dental", "share": 0.1}}, "must be one of"),
    ({"x": {"category": "other", "share": 1.5}}, "must be in (0, 1)"),
    ({"x": {"category": "other"}}, "must be {'category'"),
    ({"a": {"category": "other", "share": 0.5}, "b": {"category": "other", "share": 0.49}},
     "sum to 0.99, more than the category's rate ratio"),
])
def test_scenario_negative_controls_are_checked(nc, fragment):
    with pytest.raises(ParamsError) as err:
        scenario("demo", negative_controls=nc)
    assert fragment in str(err.value)


# ------------------------------------------------------------- a confounded plan
@pytest.fixture(scope="module")
def study(confounded):
    """The 4,000-member demo plan of tests/shared_runs.py (shared with
    tests/test_cohort_balance.py): study, design, negative controls, calibrated effects."""
    st, des, nc, main, *_ = confounded
    return st, des, nc, main


def test_condition_counts_follow_the_visit_rule(study):
    st, *_ = study
    counts = st.negative_control_outcomes()
    assert list(counts.columns) == ["member_id", *[D.nc_column(c) for c in st.truth["negative_controls"]]]
    assert len(counts) == len(st.treated_frame())
    # the same counts straight from the encounters: distinct (member, category, day) in
    # the follow-up window with a line carrying the code
    direct = st.sql("""
        SELECT e.member_id, count(DISTINCT (e.category, e.service_date)) AS n
        FROM encounters e JOIN cohort c USING (member_id)
        WHERE e.condition = 'dental_caries' AND e.service_date >= c.fu_start
          AND e.service_date < c.fu_end GROUP BY 1""")
    got = counts.set_index("member_id")["nc_dental_caries"]
    assert int(got.sum()) == int(direct["n"].sum()) > 100
    assert (got.loc[direct["member_id"]].to_numpy() == direct["n"].to_numpy()).all()
    with pytest.raises(DataValidationError, match="no column 'dx'"):
        D.condition_counts(st.con, ["warts"], "dx")
    with pytest.raises(DataValidationError, match=r"\['no_such_code'\] never occur"):
        D.condition_counts(st.con, ["warts", "no_such_code"])


def test_negative_controls_show_the_residual_bias(study):
    st, des, nc, main = study
    c = nc.controls
    assert len(c) == 11 and c["error"].isna().all()
    # the generator confounds through a latent frailty the covariates only partly
    # capture: the controls' estimates sit above 1 on average, and the null says so
    assert nc.null.mu > 0.05
    assert (c["estimate"] > 1).sum() >= 8
    assert nc.null.n == 11
    # calibration keeps (about) alpha of the controls significant
    assert (c["calibrated_p_value"] < 0.05).sum() <= (c["p_value"] < 0.05).sum()
    assert (c["calibrated_p_value"] < 0.05).sum() <= 1


def test_calibration_moves_the_estimates_toward_the_truth(study):
    st, des, nc, main = study
    truth = st.true_effects(["er_visits", "outpatient_mh_visits", "total_cost"])
    r = main[main["scale"].isin(["rate_ratio", "ratio"])].set_index("outcome")
    for o, t in truth.items():
        lo, hi = r.loc[o, "calibrated_ci_low"], r.loc[o, "calibrated_ci_high"]
        mid = math.sqrt(lo * hi)
        assert abs(math.log(mid / t)) < abs(math.log(r.loc[o, "estimate"] / t)), o
        # the calibrated interval is at least as wide as the plain one
        assert math.log(hi / lo) >= math.log(r.loc[o, "ci_high"] / r.loc[o, "ci_low"]) - 1e-9
    # seed 1: the plain interval for outpatient MH visits misses the true 0.75; the
    # calibrated one contains it
    mh = r.loc["outpatient_mh_visits"]
    assert not (mh["ci_low"] <= 0.75 <= mh["ci_high"])
    assert mh["calibrated_ci_low"] <= 0.75 <= mh["calibrated_ci_high"]
    # cost differences are not on the controls' scale and stay uncalibrated
    cost = main[main["scale"] == "cost_difference"].iloc[0]
    assert np.isnan(cost["calibrated_ci_low"])
    assert D.diagnostics(des, nc.null).iloc[-1]["value"] == pytest.approx(D.ease(nc.null))


def test_params_choose_the_negative_controls(study, tmp_path):
    st, des, *_ = study
    raw = {**st.params.to_dict()}
    raw["design"] = {**raw["design"], "negative_controls": {
        "codes": ["warts", "dental_caries", "refractive_error"],
        "outcomes": ["pharmacy_fills"]}}
    (tmp_path / "work").symlink_to(st.output_dir / "work")
    (tmp_path / "params.json").write_text(json.dumps(raw))
    other = Study(tmp_path / "params.json")
    cols = list(other.negative_control_outcomes().columns)
    assert cols == ["member_id", "nc_warts", "nc_dental_caries", "nc_refractive_error",
                    "pharmacy_fills"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = other.negative_controls(des)
    assert list(res.controls["outcome"]) == cols[1:] and res.null is not None
    raw["design"]["negative_controls"] = {"codes": [], "outcomes": []}
    (tmp_path / "params.json").write_text(json.dumps(raw))
    assert Study(tmp_path / "params.json").negative_controls(des) is None
    raw["design"]["negative_controls"] = {"outcomes": ["dental_visits"]}
    (tmp_path / "params.json").write_text(json.dumps(raw))
    with pytest.raises(DataValidationError, match="not member x window columns"):
        Study(tmp_path / "params.json").negative_control_outcomes()


def test_ease_is_the_folded_normal_mean():
    rng = np.random.default_rng(0)
    for mu, sigma in ((0.0, 0.2), (0.1, 0.05), (-0.3, 0.4)):
        mc = np.abs(rng.normal(mu, sigma, 400_000)).mean()
        assert D.ease(Null(mu=mu, sigma=sigma)) == pytest.approx(mc, rel=5e-3)
    assert D.ease(Null(mu=0.0, sigma=0.2)) == pytest.approx(0.2 * math.sqrt(2 / math.pi))
    assert D.ease(Null(mu=-0.12, sigma=0.0)) == pytest.approx(0.12)


def test_forest_plot_takes_evalkits_look():
    """Intervals that miss the truth in the theme's vermilion, the others in its blue, on a
    log axis with the ratio ticks the other charts use (evalkit.style)."""
    log = np.log([0.7, 0.95, 1.05, 1.6])
    se = np.array([0.05, 0.05, 0.05, 0.05])
    controls = pd.DataFrame({"outcome": [f"{D.NC_PREFIX}{k}" for k in "abcd"],
                             "log_estimate": log, "std_error": se,
                             "ci_low": log - 1.96 * se, "ci_high": log + 1.96 * se})
    ax = D.forest_plot(controls)
    colours = [to_hex(c) for c in ax.collections[-1].get_facecolors()]
    assert colours == [FAIL_COLOR, PASS_COLOR, PASS_COLOR, FAIL_COLOR]
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert 1.0 in ticks and set(ticks) <= {t for level in RATIO_TICKS for t in level}
