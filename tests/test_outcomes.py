"""The workbook-level effect functions: family choice, adjusted effects, pre/post
difference-in-differences and cost effects, on data whose truth is known."""
import numpy as np
import pandas as pd
import pytest

from evalkit.analysis import outcomes as O
from evalkit import params as P
from evalkit.errors import DataValidationError, StatisticalWarning
from evalkit.results import write_json_atomic
from evalkit.analysis.study import Study
from evalkit.analysis.spec import with_treatment
from evalkit.prepare import prepare


def test_family_choice_prefers_negbin_for_overdispersed_counts():
    rng = np.random.default_rng(5)
    n = 3000
    df = pd.DataFrame({"treated": rng.integers(0, 2, n), "x": rng.normal(size=n),
                       "member_months": rng.uniform(6, 12, n)})
    mu = df.member_months / 12 * np.exp(0.2 + 0.3 * df.x - 0.2 * df.treated)
    df["visits"] = rng.poisson(mu * rng.gamma(0.5, 2.0, n))      # NB2 with theta 0.5
    choice = O.choose_count_family(df, "visits", ["x"], families=("poisson", "negbin"))
    assert choice.chosen == "negbin"
    t = choice.comparison.set_index("family")
    assert t.loc["poisson", "delta_aic"] > 100 and t.loc["negbin", "note"].startswith("chosen")


def test_with_treatment_needs_both_arms():
    with pytest.raises(DataValidationError, match="both arms"):
        with_treatment(pd.DataFrame({"group": ["self_help"] * 3}))


def test_unusable_covariates_are_left_out_with_the_reason():
    from evalkit.analysis.spec import model_frame
    df = pd.DataFrame({"treated": [0, 1, 0, 1], "copy": [0, 1, 0, 1], "const": [1, 1, 1, 1],
                       "site": list("abab"), "age": [30, 40, 50, 60]})
    with pytest.warns(StatisticalWarning, match=r"left out of the model, which is not adjusted "
                      r"for them: copy \(identical to the treatment\); const \(constant"):
        mf = model_frame(df, ["copy", "const", "age"], "treated")
    assert mf.names == ["age"]
    assert [r["term"] for r in mf.left_out] == ["copy", "const"]
    with pytest.raises(DataValidationError, match="C\\(site\\)"):
        model_frame(df, ["site"])                   # text enters only as C(site), when asked
    with pytest.raises(DataValidationError, match="missing"):
        model_frame(df, ["missing"])


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    p = P.validate({"data": {"members": 6000}, "seed": 11})
    prepare(p, tmp)
    write_json_atomic(tmp / "params.json", p.to_dict())
    return Study(tmp / "params.json")


def test_prepost_recovers_true_effects_where_crude_fails(demo):
    truth = demo.true_effects()
    with pytest.warns(Warning):                      # members with no baseline time are reported
        pre = demo.prepost()
    rr = pre[pre.scale == "rate_ratio"].set_index("outcome")
    _, crude = demo.rates()
    crude_fu = crude[(crude.period == "followup") & (crude.scale == "rate_ratio")].set_index("outcome")
    for outcome in ("er_visits", "outpatient_mh_visits"):
        true = truth[outcome]
        assert rr.loc[outcome, "ci_low"] <= true <= rr.loc[outcome, "ci_high"], outcome
        assert crude_fu.loc[outcome, "ci_low"] > true     # the crude comparison is confounded
    assert set(pre.estimand) == {"ATT"}


def test_prepost_reads_only_the_columns_it_models(demo):
    """The pre/post models read the member x window table's identifiers, exposure and
    outcomes only: the same estimates, bit for bit, as from the whole table."""
    outs = ["er_visits", "total_cost"]
    with pytest.warns(Warning):
        whole = O.prepost_effects(demo.member_windows(), outs, alpha=demo.spec.alpha,
                                  kinds={o: demo.spec.kind(o) for o in outs})
    with pytest.warns(Warning):
        picked = demo.prepost(outs)
    pd.testing.assert_frame_equal(picked, whole, check_exact=True)
    few = demo.member_windows(["member_id", "period", "er_visits", "er_visits"])
    assert list(few.columns) == ["member_id", "period", "er_visits"]
    assert few["member_id"].tolist() == demo.member_windows()["member_id"].tolist()


def test_cost_effect_records_and_bootstrap(demo):
    ce = demo.cost_effect(n_boot=200)
    scales = ce.effects.scale.tolist()
    assert scales.count("cost_difference") == 2 and "pmpm_difference" in scales
    d = ce.effects[ce.effects.scale == "cost_difference"].iloc[0]
    pmpm = ce.effects[ce.effects.scale == "pmpm_difference"].iloc[0]
    assert pmpm.estimate == pytest.approx(d.estimate / 12)
    ratio = ce.effects[ce.effects.scale == "ratio"].iloc[0]
    # ratio SEs are on the log scale, as docs/results.md says
    z = 1.959963984540054
    assert ratio.std_error == pytest.approx((np.log(ratio.ci_high) - np.log(ratio.ci_low)) / (2 * z))
    assert ce.bootstrap.n_boot == 200
    # records that rest on the bootstrap say how many replicates, and how many failed
    boot_rows = ce.effects[ce.effects.method.str.contains("bootstrap")]
    assert len(boot_rows) == 2
    assert (boot_rows.n_replicates == 200).all()
    assert (boot_rows.n_failed == ce.bootstrap.n_failed).all()
    assert ce.effects.loc[~ce.effects.method.str.contains("bootstrap"), "n_replicates"].isna().all()
    assert "of 200 replicates computed" in ce.bootstrap_sentence()


def test_time_to_first_er_is_consistent_with_visit_counts(demo):
    t = demo.time_to_first("er")
    fu = demo.member_windows().query("period == 'followup'").set_index("member_id")
    t = t.set_index("member_id")
    assert t["days"].between(0, 365).all()
    # a first visit means at least one follow-up ER visit; no visit means no event
    assert (fu.loc[t.index[t.event == 1], "er_visits"] > 0).all()
    assert (t.loc[fu.index[fu.er_visits == 0], "event"] == 0).all()
    tte = demo.time_to_event("er")
    hr = tte.effects[tte.effects.scale == "hazard_ratio"].iloc[0]
    assert hr.ci_low < hr.estimate < hr.ci_high
    with pytest.raises(DataValidationError, match="unknown category"):
        demo.time_to_first("dental")
