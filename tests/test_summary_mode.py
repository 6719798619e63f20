"""Summary mode: params validation, evalkit.analysis.summary against hand calculations and metafor,
the projection's determinism, small-cell suppression, summary-mode guards, and the parent
survey params file end to end.

Reference values:
* tests/reference/expected/meta_bcg.json from tests/reference/r/meta_bcg.R (R 4.2.2,
  metafor 3.8-1) on tests/reference/data/bcg.csv: escalc(measure = "RR", ...) and
  rma(yi, vi, method = "DL" / "REML" / "FE"); REML is compared with the `REML_tight` block
  (threshold = 1e-12), as in tests/test_synthesis.py.
* Ratio of means: metafor's escalc documentation, measure "ROM":
  yi = log(m1i/m2i), vi = sd1i^2/(n1i m1i^2) + sd2i^2/(n2i m2i^2) (computed by hand here).
* Chesler & Barbarin (1984), as summarized in the self-help/conflict paper (docs/published-figures.md):
  44 of 74 parents (60%) reported some problem with the staff; 39% reported 3 or more;
  87% of college graduates vs 42% of parents with high school or less; 90% of 63
  professionals had heard self-help groups could be "dangerous".
"""
import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
from conftest import reference_data, reference_json
from scipy import stats

from evalkit import params as P
from evalkit.analysis import spec as SPEC, summary as S
from evalkit.errors import DataValidationError, ParamsError
from evalkit.synthesis import compare_proportions, effect_size, proportion_ci
from conftest import assert_structured_records

HM = {"name": "HM", "outcome": "outpatient_mh_visits", "measure": "ROM", "sd_assumed": True,
      "treated": {"n": 887, "mean": 13.1, "sd": 13.1},
      "control": {"n": 887, "mean": 22.5, "sd": 22.5}}


def _summary(**kw):
    return {"mode": "summary", "summary": kw}


def _err(raw) -> str:
    with pytest.raises(ParamsError) as e:
        P.validate(raw)
    return str(e.value)


# ----------------------------------------------------------------------------- params
def test_summary_mode_needs_a_summary_section():
    assert "needs a summary section" in _err({"mode": "summary"})
    assert "only in summary mode" in _err({"summary": {"studies": [HM]}})


@pytest.mark.parametrize("change,message", [
    ({"treated": {"n": 887, "mean": 13.1, "sd": -1.0}}, "summary.studies.0.treated.sd"),
    ({"control": None}, "control arm is missing"),
    ({"treated": None, "control": None}, "treated and control arm is missing"),
    ({"treated": {"n": 887, "mean": 13.1}}, "treated lacks sd"),
    ({"measure": "RR"}, "treated lacks events (or percent)"),
    ({"measure": "IRR"}, "IRR needs events, person_time"),
    ({"treated": {"n": 887, "mean": -2.0, "sd": 1.0}}, "needs positive means"),
    ({"treated": {"n": 887, "mean": 13.1, "sdd": 13.1}}, "did you mean 'sd'"),
    ({"measure": "HR"}, "summary.studies.0.measure"),
])
def test_study_figures_are_checked(change, message):
    assert message in _err(_summary(studies=[{**HM, **change}]))


def test_events_and_reported_effects_are_checked():
    rr = {"name": "A", "outcome": "abstinence", "measure": "RR",
          "treated": {"n": 50, "events": 60}, "control": {"n": 50, "events": 20}}
    assert "exceed n" in _err(_summary(studies=[rr]))
    rep = {"name": "B", "outcome": "er_visits", "measure": "IRR", "reported": {"estimate": 0.82}}
    assert "either ci_low and ci_high or std_error" in _err(_summary(studies=[rep]))
    rep["reported"] = {"estimate": 0.82, "ci_low": 0.9, "ci_high": 1.1}
    assert "ci_low < estimate < ci_high" in _err(_summary(studies=[rep]))
    rep["reported"] = {"estimate": 0.82, "std_error": 0.08}
    both = {**rep, "treated": {"n": 10, "events": 1, "person_time": 10}}
    assert "not both" in _err(_summary(studies=[both]))
    mixed = [HM, {**HM, "name": "C", "measure": "MD"}]
    assert "one measure" in _err(_summary(studies=mixed))
    assert "one entry per study and outcome" in _err(_summary(studies=[HM, HM]))


def test_proportions_and_comparisons_are_checked():
    assert "x (80) is larger than n (74)" in _err(_summary(proportions=[
        {"label": "a", "x": 80, "n": 74}]))
    assert "give x (a count) or percent" in _err(_summary(proportions=[{"label": "a", "n": 74}]))
    items = [{"label": "a", "x": 4, "n": 74}, {"label": "b", "x": 5, "n": 70}]
    assert "['c'] not among" in _err(_summary(proportions=items, comparisons=[
        {"label": "x", "first": "a", "second": "c"}]))
    assert "needs summary.studies" in _err({**_summary(proportions=items),
                                            "workbooks": ["synthesis"]})
    # the defaults follow the figures given
    assert P.validate(_summary(proportions=items)).workbooks == ["proportions"]
    assert P.validate(_summary(studies=[HM])).workbooks == ["synthesis"]


def test_projection_is_checked():
    proj = {"members": 50000, "uptake": 0.02, "outcomes": [
        {"outcome": "er_visits", "baseline_per_member_year": 0.35}]}
    assert "has no study" in _err(_summary(studies=[HM], projection=proj))
    md = {**HM, "measure": "MD", "outcome": "er_visits"}
    assert "needs a ratio" in _err(_summary(studies=[md], projection=proj))
    proj["outcomes"][0]["outcome"] = "outpatient_mh_visits"
    assert "uptake_sd" in _err(_summary(studies=[HM], projection={**proj, "uptake_sd": 0.2}))
    ok = P.validate(_summary(studies=[HM], projection=proj))
    assert ok.summary.projection.members == 50000


# ----------------------------------------------------------------------------- effects
def test_ratio_of_means_matches_the_escalc_formula():
    """escalc(measure = "ROM"): yi = log(m1/m2), vi = sd1^2/(n1 m1^2) + sd2^2/(n2 m2^2)."""
    m1, s1, n1, m2, s2, n2 = 13.1, 9.0, 887, 22.5, 30.0, 880
    es = effect_size("ROM", m1i=[m1], sd1i=[s1], n1i=[n1], m2i=[m2], sd2i=[s2], n2i=[n2])
    np.testing.assert_allclose(es["yi"], [math.log(m1 / m2)], rtol=1e-14)
    np.testing.assert_allclose(es["vi"], [s1 ** 2 / (n1 * m1 ** 2) + s2 ** 2 / (n2 * m2 ** 2)],
                               rtol=1e-14)
    with pytest.raises(DataValidationError, match="means > 0"):
        effect_size("ROM", m1i=[0.0], sd1i=[1], n1i=[5], m2i=[1.0], sd2i=[1], n2i=[5])


def test_study_effects_by_hand():
    """Per-arm figures, percentages and a reported ratio, each worked out by hand."""
    studies = [HM,
               {"name": "HM07", "outcome": "abstinence", "measure": "RR",
                "treated": {"n": 887, "percent": 49.5}, "control": {"n": 887, "percent": 37.0}},
               {"name": "HW", "outcome": "er_visits", "measure": "IRR",
                "reported": {"estimate": 0.82, "ci_low": 0.70, "ci_high": 0.96, "assumed": "CI"}},
               {"name": "R", "outcome": "er_visits2", "measure": "IRR",
                "treated": {"events": 30, "person_time": 100.0},
                "control": {"events": 50, "person_time": 120.0}}]
    p = P.validate(_summary(studies=studies))
    e = S.study_effects(p.summary).set_index("study")
    z = stats.norm.ppf(0.975)
    # SD = mean in both arms: vi = 1/887 + 1/887
    assert e.loc["HM", "yi"] == pytest.approx(math.log(13.1 / 22.5), rel=1e-14)
    assert e.loc["HM", "vi"] == pytest.approx(2 / 887, rel=1e-12)
    assert e.loc["HM", "ci_low"] == pytest.approx(13.1 / 22.5 * math.exp(-z * math.sqrt(2 / 887)))
    # 49.5% and 37.0% of 887 = 439.07 and 328.19 -> 439 and 328
    assert (e.loc["HM07", "events_treated"], e.loc["HM07", "events_control"]) == (439, 328)
    assert e.loc["HM07", "vi"] == pytest.approx(1 / 439 - 1 / 887 + 1 / 328 - 1 / 887, rel=1e-12)
    assert e.loc["HM07", "estimate"] == pytest.approx(439 / 328, rel=1e-12)
    # reported ratio: SE from the 95% interval on the log scale
    se = (math.log(0.96) - math.log(0.70)) / (2 * z)
    assert e.loc["HW", "std_error"] == pytest.approx(se, rel=1e-12)
    assert e.loc["HW", "estimate"] == pytest.approx(0.82)
    assert e.loc["HW", "assumed"] == "CI"
    assert e.loc["HW", "p_value"] == pytest.approx(2 * stats.norm.sf(abs(math.log(0.82)) / se))
    # IRR: log((30/100)/(50/120)), vi = 1/30 + 1/50
    assert e.loc["R", "yi"] == pytest.approx(math.log(0.3 / (50 / 120)), rel=1e-12)
    assert e.loc["R", "vi"] == pytest.approx(1 / 30 + 1 / 50, rel=1e-12)
    assert list(e["scale"]) == ["ratio", "ratio", "rate_ratio", "rate_ratio"]


@pytest.fixture(scope="module")
def bcg_summary():
    bcg = reference_data("bcg")
    studies = [{"name": r.author + f" {r.year}", "outcome": "tuberculosis", "measure": "RR",
                "treated": {"n": int(r.tpos + r.tneg), "events": int(r.tpos)},
                "control": {"n": int(r.cpos + r.cneg), "events": int(r.cpos)}}
               for r in bcg.itertuples()]
    return P.validate(_summary(studies=studies)).summary


@pytest.mark.parametrize("method,block", [("REML", "REML_tight"), ("DL", "DL"), ("FE", "FE")])
def test_bcg_through_the_summary_path_matches_rma(bcg_summary, method, block):
    """Summary params -> synthesize -> pooled table and records equal rma() on BCG."""
    ref = reference_json("meta_bcg")
    syn = S.synthesize(bcg_summary)
    np.testing.assert_allclose(syn.effects["yi"], ref["yi"], rtol=1e-12)
    np.testing.assert_allclose(syn.effects["vi"], ref["vi"], rtol=1e-12)
    row = syn.pooled_table().set_index("method").loc[method]
    r = ref[block]
    assert row["k"] == 13 and row["q_df"] == 12
    np.testing.assert_allclose(row["estimate"], r["risk_ratio"], rtol=1e-9)
    np.testing.assert_allclose([row["ci_low"], row["ci_high"]], [r["rr_ci_lb"], r["rr_ci_ub"]],
                               rtol=1e-9)
    np.testing.assert_allclose([row["std_error"], row["p_value"], row["tau2"], row["i2"], row["q"]],
                               [r["se"], r["pval"], r["tau2"], r["I2"], r["Q"]],
                               rtol=1e-9, atol=1e-300)
    rec = syn.estimates()
    pooled = rec[(rec["level"] == "pooled") & rec["method"].str.contains(
        {"REML": "REML", "DL": "DerSimonian", "FE": "fixed"}[method])].iloc[0]
    np.testing.assert_allclose(pooled["estimate"], r["risk_ratio"], rtol=1e-9)
    assert pooled["scale"] == "ratio" and pooled["chosen"] == (method == "REML")
    assert syn.pooled_table()["method"].iloc[0] == "REML"     # the headline comes first


def test_bcg_forest_figure(bcg_summary):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    syn = S.synthesize(bcg_summary)
    fig = S.forest_figure(syn)
    assert fig is not None and len(fig.axes[0].get_yticklabels()) == 14
    plt.close("all")
    assert "Pooled" in S.pooling_note(syn)


def test_one_study_is_not_pooled_and_says_so():
    syn = S.synthesize(P.validate(_summary(studies=[HM])).summary)
    t = syn.pooled_table()
    assert len(t) == 1 and t["method"].iloc[0] == "single study (not pooled)"
    assert not syn.outcomes["outpatient_mh_visits"].fits
    assert S.forest_figure(syn) is None
    assert "one study only" in syn.findings()[0] and "not pooled" in S.pooling_note(syn)
    with pytest.raises(DataValidationError, match="one study"):
        syn.outcomes["outpatient_mh_visits"].forest()
    assert set(syn.estimates()["level"]) == {"study"}


def test_sd_sensitivity_scales_the_interval_not_the_estimate():
    """ROM: vi is proportional to the SD squared, so SE(f) = f x SE(1) for one study."""
    s = P.validate(_summary(studies=[HM, {**HM, "name": "unassumed", "sd_assumed": False,
                                           "outcome": "inpatient_days"}])).summary
    t = S.sd_sensitivity(s)
    assert set(t["outcome"]) == {"outpatient_mh_visits"}       # only assumed SDs are varied
    assert list(t["sd_factor"]) == [0.5, 1.0, 1.5, 2.0]
    assert np.allclose(t["estimate"], 13.1 / 22.5)
    half_width = np.log(t["ci_high"].to_numpy()) - np.log(t["estimate"].to_numpy())
    np.testing.assert_allclose(half_width / half_width[1], t["sd_factor"], rtol=1e-12)



@pytest.mark.parametrize("study,uses", [
    ({"name": "A", "outcome": "abstinence", "measure": "RR", "sd_assumed": True,
      "treated": {"n": 50, "events": 20}, "control": {"n": 50, "events": 10}},
     "RR (n, events) uses no SD"),
    ({"name": "B", "outcome": "er_visits", "measure": "IRR", "sd_assumed": True,
      "treated": {"events": 40, "person_time": 100}, "control": {"events": 50, "person_time": 90}},
     "IRR (events, person_time) uses no SD"),
    ({"name": "C", "outcome": "er_visits", "measure": "MD", "sd_assumed": True,
      "reported": {"estimate": -0.4, "ci_low": -0.8, "ci_high": 0.0}},
     "a reported effect uses no SD"),
])
def test_an_sd_assumption_is_refused_where_no_sd_enters_the_effect(study, uses):
    """An assumed SD only enters MD, SMD and ROM computed from per-arm figures; flagging
    another study would put a false "SDs are assumed" sentence (and a flat sensitivity
    row) in the synthesis workbook, and with no SD to quote it used to crash
    ``assumptions``. The params refuse it, naming the study and what to do."""
    message = _err(_summary(studies=[study]))
    assert f"study '{study['name']}'" in message and uses in message
    assert "sd_assumed applies only to MD, SMD, ROM" in message
    ok = P.validate(_summary(studies=[{**study, "sd_assumed": False}])).summary
    assert not any("SDs" in line for line in S.assumptions(ok))
    assert S.sd_sensitivity(ok).empty
    hm = P.validate(_summary(studies=[HM])).summary
    assert S.assumptions(hm) == [
        ("HM, professional outpatient visits: SDs are not published; the values used "
         "(13.1 and 22.5) are assumptions. The sensitivity table shows how much this matters.")]

# ----------------------------------------------------------------------------- projection
PROJ = {"plan": "Plan X", "members": 50000, "uptake": 0.02, "uptake_sd": 0.005, "draws": 4000,
        "outcomes": [{"outcome": "outpatient_mh_visits", "baseline_per_member_year": 12.0},
                     {"outcome": "total_cost", "baseline_per_member_year": 4000.0,
                      "unit": "dollars"}]}
COST = {**HM, "outcome": "total_cost", "treated": {"n": 887, "mean": 2883, "sd": 5766},
        "control": {"n": 887, "mean": 4729, "sd": 9458}}


def _projection(seed, **change):
    p = P.validate({**_summary(studies=[HM, COST], projection={**PROJ, **change}), "seed": seed})
    return S.project_plan(p, S.synthesize(p.summary))


def test_projection_by_hand_and_deterministic():
    a, b = _projection(7), _projection(7)
    pd.testing.assert_frame_equal(a.table, b.table)
    pd.testing.assert_frame_equal(a.psa.draws, b.psa.draws)
    c = _projection(8)
    assert not np.allclose(a.table["ci_low"], c.table["ci_low"])
    t = a.table.set_index("outcome")
    # members x uptake x baseline x (ratio - 1)
    assert t.loc["outpatient_mh_visits", "expected_change"] == pytest.approx(
        50000 * 0.02 * 12.0 * (13.1 / 22.5 - 1), rel=1e-12)
    assert t.loc["total_cost", "expected_change"] == pytest.approx(
        50000 * 0.02 * 4000 * (2883 / 4729 - 1), rel=1e-12)
    assert t.loc["total_cost", "per_1000_members"] == pytest.approx(
        1000 * 0.02 * 4000 * (2883 / 4729 - 1), rel=1e-12)
    assert (t["ci_low"] < t["expected_change"]).all() and (t["expected_change"] < t["ci_high"]).all()
    rec = a.estimates()
    assert set(rec["scale"]) == {"difference", "probability_cost_saving"}
    assert rec.loc[rec["scale"] == "probability_cost_saving", "estimate"].iloc[0] == 1.0
    assert any("fewer" in f for f in a.findings())


def test_projection_interval_with_fixed_uptake_is_the_transformed_effect_interval():
    """With uptake fixed the change is a monotone function of log R ~ N(yi, se), so its
    quantiles are the function of the normal quantiles (up to Monte Carlo error)."""
    proj = _projection(11, uptake_sd=0.0, draws=200_000)
    t = proj.table.set_index("outcome").loc["outpatient_mh_visits"]
    z = stats.norm.ppf(0.975)
    yi, se = math.log(13.1 / 22.5), math.sqrt(2 / 887)
    lo = 1000 * 12.0 * (math.exp(yi - z * se) - 1)
    hi = 1000 * 12.0 * (math.exp(yi + z * se) - 1)
    assert t["ci_low"] == pytest.approx(lo, rel=0.01)
    assert t["ci_high"] == pytest.approx(hi, rel=0.01)


# ----------------------------------------------------------------------------- surveys and public tables
def test_public_tables_hide_small_cells_and_what_reveals_them():
    s = P.validate(_summary(proportions=[
        {"label": "big", "x": 44, "n": 74}, {"label": "six without", "x": 57, "n": 63},
        {"label": "small", "x": 4, "n": 40}])).summary
    props = S.survey_proportions(s)
    assert S.public_table(props, False) is props
    pub = S.public_table(props, True, 11, kind="proportions").set_index("label")
    assert pub.loc["big", "x"] == 44 and pub.loc["big", "proportion"] == pytest.approx(44 / 74)
    # 57 of 63: the 6 without would follow from 63 - 57, so 57 is hidden with its share
    assert pub.loc["six without", "x"] == "*" and pub.loc["six without", "ci_low"] == "*"
    assert pub.loc["six without", "n"] == 63
    assert pub.loc["small", "x"] == "*" and pub.loc["small", "proportion"] == "*"
    rec = S.survey_estimates(pub.reset_index(), S.survey_comparisons(s))
    assert rec["estimate"].isna().sum() == 2
    assert "not shown" in S.survey_findings(pub.reset_index(), S.survey_comparisons(s))[1]


def test_public_effects_table_hides_small_arms():
    studies = [{"name": "tiny", "outcome": "a", "measure": "RR",
                "treated": {"n": 30, "events": 3}, "control": {"n": 30, "events": 12}}, HM]
    eff = S.study_effects(P.validate(_summary(studies=studies)).summary)
    pub = S.public_table(eff, True, 11).set_index("study")
    assert pub.loc["tiny", "events_treated"] == "*" and pub.loc["tiny", "estimate"] == "*"
    assert pub.loc["HM", "estimate"] == pytest.approx(13.1 / 22.5)


def test_outcome_names_come_from_the_spec_table(monkeypatch):
    """Summary mode names outcomes from the spec's one outcome table: the name for
    published figures where one is given (Humphreys & Moos counted outpatient
    continuing-care visits, docs/published-figures.md, not claims' mental-health visits),
    else the claims label, else the name spaced; editing the table changes the tables."""
    studies = [HM, {**HM, "name": "ER", "outcome": "er_visits"},
               {**HM, "name": "abst", "outcome": "abstinence"}]
    eff = S.study_effects(P.validate(_summary(studies=studies)).summary)
    names = dict(zip(eff["study"], S.readable_effects(eff)["outcome"]))
    assert names == {"HM": "professional outpatient visits", "ER": "ER visits",
                     "abst": "abstinence"}
    assert SPEC.CLAIMS_OUTCOMES["er_visits"].published is None
    monkeypatch.setitem(SPEC.CLAIMS_OUTCOMES, "er_visits",
                        dataclasses.replace(SPEC.CLAIMS_OUTCOMES["er_visits"], published="ED use"))
    assert list(S.readable_effects(eff)["outcome"]) == [
        "professional outpatient visits", "ED use", "abstinence"]


def test_summary_spec_lists_the_studies_outcomes_and_params_labels_rename_them():
    """spec.json in summary mode lists the studies' outcomes (first mention first), named
    as published figures are by default; ``study.outcomes.<name>.label`` renames one in
    the spec and so in every table and sentence that names it."""
    abst = {"name": "abst", "outcome": "abstinence", "measure": "RR",
            "treated": {"n": 74, "events": 44}, "control": {"n": 80, "events": 30}}
    studies = [HM, {**HM, "name": "HM2"}, abst]
    spec = SPEC.resolve(P.validate(_summary(studies=studies)))
    assert list(spec.outcomes) == ["outpatient_mh_visits", "abstinence"]
    hm, abst = spec.outcomes["outpatient_mh_visits"], spec.outcomes["abstinence"]
    assert (hm.label, hm.kind, hm.unit) == ("professional outpatient visits", "count", "visits")
    assert (abst.label, abst.kind, abst.primary) == ("abstinence", "binary", "synthesis")
    assert SPEC.AnalysisSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec

    raw = {**_summary(studies=studies),
           "study": {"outcomes": {"outpatient_mh_visits": {"label": "continuing-care visits"}}}}
    params = P.validate(raw)
    spec = SPEC.resolve(params)
    assert spec.label("outpatient_mh_visits") == "continuing-care visits"
    assert spec.outcomes["outpatient_mh_visits"].plain == "continuing-care visits"
    syn = S.synthesize(params.summary, spec)
    assert syn.outcomes["outpatient_mh_visits"].name == "continuing-care visits"
    assert syn.findings()[0].startswith("Continuing-care visits: ")
    assert "continuing-care visits" in S.pooling_note(syn)
    assert set(S.readable_effects(syn.effects, spec)["outcome"]) == {"continuing-care visits",
                                                                      "abstinence"}
    assert "continuing-care visits" in set(S.readable_pooled(syn.pooled_table(), spec)["outcome"])
    assert S.assumptions(params.summary, spec)[0].startswith("HM, continuing-care visits: SDs")
    # without the spec the published wording stays
    assert S.synthesize(params.summary).outcomes["outpatient_mh_visits"].name == \
        "professional outpatient visits"
    with pytest.raises(ParamsError, match="not outcomes of this study"):
        SPEC.resolve(P.validate({**raw, "study": {"outcomes": {"er_visits": {"label": "x"}}}}))


# ----------------------------------------------------------------------------- guards
def test_study_in_summary_mode_refuses_member_level_methods(tmp_path):
    from evalkit import prepare
    from evalkit.analysis.study import prepare_study
    study = prepare_study(P.validate(_summary(studies=[HM])), tmp_path)
    try:
        for method in ("analysis_frame", "member_windows", "attrition", "covariates",
                       "table1", "rates", "treated_frame", "has_exposure",
                       "negative_control_outcomes", "true_effects"):
            with pytest.raises(DataValidationError, match="summary mode"):
                getattr(study, method)()
        assert study.describe_run().set_index("item").loc["scenario", "value"] == "-"
    finally:
        study.close()
    assert prepare.scan_targets(tmp_path) == {"member_ids": [], "context_ids": [],
                                              "dates_of_service": []}


# ----------------------------------------------------------------------------- parent survey
@pytest.fixture(scope="module")
def parent_run(shared_runs):
    """The session's run of the params file as shipped (tests/shared_runs.py)."""
    return shared_runs.params_file("parent_survey")


def test_parent_survey_end_to_end(parent_run):
    """params/parent_survey.yaml against Chesler & Barbarin (1984), as
    docs/published-figures.md gives it."""
    res = json.loads(parent_run.results_path.read_text())
    assert res["run"]["status"] == "ok"
    assert [w["workbook"] for w in res["run"]["workbooks"]] == ["proportions"]
    assert_structured_records(res)
    props = {r["label"]: r for r in res["tables"]["proportions.proportions"]}
    some = props["Parents reporting some problem with the staff"]
    assert (some["x"], some["n"]) == (44, 74)                 # 44 of 74 ...
    assert round(100 * some["proportion"]) in (59, 60)        # ... "(60%)": 59.5% rounded
    three = props["Parents reporting 3 or more problems"]
    assert three["n"] == 74 and round(100 * three["proportion"]) == 39     # 39%
    college = props["College graduates reporting problems"]
    school = props["High school or less reporting problems"]
    assert round(100 * college["proportion"]) == 87 and round(100 * school["proportion"]) == 42
    assert "assumed" in college["assumed"] and "assumed" in school["assumed"]
    pros = props["Professionals who had heard self-help groups could be 'dangerous'"]
    assert pros["n"] == 63 and round(100 * pros["proportion"]) == 90   # 90% of 63
    # Wilson intervals (summary.ci_method) as proportion_ci gives them
    ci = proportion_ci([44, 57], [74, 63], method="wilson")
    np.testing.assert_allclose([some["ci_low"], some["ci_high"], pros["ci_low"], pros["ci_high"]],
                               [ci["ci_low"][0], ci["ci_high"][0], ci["ci_low"][1], ci["ci_high"][1]],
                               rtol=1e-12)
    (comp,) = res["tables"]["proportions.comparisons"]
    ref = compare_proportions(20, 23, 13, 31)
    assert comp["difference"] == pytest.approx(0.87 - 0.42, abs=0.01)
    np.testing.assert_allclose([comp["ci_low"], comp["ci_high"], comp["chi2"]],
                               [ref.ci_low, ref.ci_high, ref.chi2], rtol=1e-12)
    assert comp["ci_low"] > 0                                  # the education gap is not chance
    est = pd.DataFrame(res["estimates"])
    assert set(est["scale"]) == {"proportion", "risk_difference"}
    nb = (parent_run.output_dir / "10_proportions.ipynb").read_text()
    assert "group size assumed" in nb and "image/png" in nb
